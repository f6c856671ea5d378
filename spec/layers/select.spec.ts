import { selectCotangents, selectTangents, selectionLocal } from '../../lib/layers/select.js';
import { Rng } from '../../lib/rng.js';
import { randomNormal, zeros } from '../../lib/tensor.js';
import { expect } from '../helpers/setup.js';

describe('layers/select: the selection primitive of the max poolings', () => {
  // Two samples of 5 inputs, 3 outputs each; winners 1 and 3 of sample 0 are shared, as overlapping windows share them.
  const winner = Int32Array.from([1, 1, 3, 5 + 0, 5 + 4, 5 + 2]);

  it('gathers tangents, scatter-adds cotangents, and the two are adjoint: ⟨u, S v⟩ = ⟨Sᵀu, v⟩', () => {
    const rng = new Rng(1);
    const v = randomNormal([2, 5, 1], rng);
    const u = randomNormal([2, 3], rng);
    const Sv = zeros([2, 3, 1]);
    selectTangents(winner, v, 1, Sv);
    expect(Array.from(Sv.data)).to.deep.equal(Array.from(winner, (w) => v.data[w]));
    const Stu = zeros([2, 5]);
    selectCotangents(winner, u, Stu);
    // The shared winner gets both cotangents.
    expect(Stu.data[1]).to.equal(u.data[0] + u.data[1]);
    const flat = (t: typeof v) => Array.from(t.data);
    const inner = (a: number[], b: number[]) => a.reduce((s, x, i) => s + x * b[i], 0);
    expect(inner(flat(u), flat(Sv))).to.be.closeTo(inner(flat(Stu), flat(v)), 1e-14);
  });

  it('its local Jacobian is a 1 at each winner, indexed within the sample', () => {
    const L = selectionLocal(winner, 5, 3);
    const idx = new Int32Array(1);
    const coef = new Float64Array(1);
    const rows = [0, 1].flatMap((b) => [0, 1, 2].map((o) => (L.row(b, o, idx, coef), [idx[0], coef[0]])));
    expect(rows).to.deep.equal([[1, 1], [1, 1], [3, 1], [0, 1], [4, 1], [2, 1]]);
    expect([L.single, L.maxRowNnz, L.rows, L.cols]).to.deep.equal([true, 1, 3, 5]);
  });
});

import { MemoryBudgetError } from '../../lib/errors.js';
import { upstreamGradientLossOut, upstreamGradientLossWeights } from '../../lib/helpers.js';
import { Rng } from '../../lib/rng.js';
import { CsrMatrix, SparseJacobian } from '../../lib/sparse/csr.js';
import { randomNormal, tensor, zeros } from '../../lib/tensor.js';
import { expect } from '../helpers/setup.js';

/** A random sparse dense buffer: about `density` of the entries non-zero. */
function sparseDense(rows: number, cols: number, density: number, rng: Rng): Float64Array {
  const d = new Float64Array(rows * cols);
  for (let i = 0; i < d.length; i++) if (rng.uniform() < density) d[i] = rng.normal();
  return d;
}

describe('sparse/csr', () => {
  it('CsrMatrix.fromDense stores exactly the non-zeros, sorted, and scatters back to the same dense values', () => {
    const rng = new Rng(1);
    const d = sparseDense(7, 11, 0.3, rng);
    const m = CsrMatrix.fromDense(d, 0, 7, 11);
    expect(m.nnz).to.equal(d.filter((v) => v !== 0).length);
    expect(m.isSorted()).to.equal(true);
    const back = new Float64Array(77);
    m.scatterInto(back, 0);
    expect(Array.from(back)).to.deep.equal(Array.from(d));
    expect(m.bytes).to.equal(4 * 8 + m.nnz * 12);
    for (let r = 0; r < 7; r++) for (let c = 0; c < 11; c++) expect(m.get(r, c)).to.equal(d[r * 11 + c]);
  });

  it('sortRows sorts each row by column and keeps the values with their columns', () => {
    const m = new CsrMatrix(2, 5, Int32Array.from([0, 3, 5]), Int32Array.from([4, 0, 2, 3, 1]), Float64Array.from([40, 0.5, 20, 30, 10]));
    expect(m.isSorted()).to.equal(false);
    m.sortRows();
    expect(Array.from(m.colIdx)).to.deep.equal([0, 2, 4, 1, 3]);
    expect(Array.from(m.values)).to.deep.equal([0.5, 20, 40, 10, 30]);
    expect(m.isSorted()).to.equal(true);
  });

  it('SparseJacobian has the dense shape, toDense, nnz, bytes; vjp and jvp agree with the dense contractions', () => {
    const rng = new Rng(2);
    const B = 3;
    const out = [2, 3];
    const inn = [4, 2];
    const dense = zeros([B, ...out, ...inn]);
    const samples = [];
    for (let b = 0; b < B; b++) {
      const d = sparseDense(6, 8, 0.4, rng);
      dense.data.set(d, b * 48);
      samples.push(CsrMatrix.fromDense(d, 0, 6, 8));
    }
    const J = new SparseJacobian(samples, out, inn, 'input');
    expect(J.shape).to.deep.equal([3, 2, 3, 4, 2]);
    expect(J.format).to.equal('sparse');
    expect(J.toDense()).to.be.allclose(dense, { rtol: 0, atol: 0 });
    expect(J.nnz).to.equal(dense.data.filter((v) => v !== 0).length);
    expect(J.bytes).to.equal(samples.reduce((s, m) => s + m.bytes, 0));
    expect(J.denseBytes).to.equal(B * 48 * 8);
    const g = randomNormal([B, ...out], rng);
    // The seed's helpers dispatch on format: the sparse contraction equals the dense one.
    expect(upstreamGradientLossOut(J, g)).to.be.allclose(upstreamGradientLossOut(dense, g), { rtol: 1e-14, atol: 1e-15 });
    expect(upstreamGradientLossWeights(J, g)).to.be.allclose(upstreamGradientLossWeights(dense, g), { rtol: 1e-14, atol: 1e-15 });
    const v = randomNormal([B, ...inn], rng);
    const Jv = J.jvp(v);
    for (let b = 0; b < B; b++) {
      for (let r = 0; r < 6; r++) {
        let s = 0;
        for (let c = 0; c < 8; c++) s += dense.data[b * 48 + r * 8 + c] * v.data[b * 8 + c];
        expect(Jv.data[b * 6 + r]).to.be.closeTo(s, 1e-14);
      }
    }
  });

  it('a parameter Jacobian contracts over the batch too, and its jvp takes one shared direction', () => {
    const rng = new Rng(3);
    const samples = [0, 1].map(() => CsrMatrix.fromDense(sparseDense(3, 4, 0.5, rng), 0, 3, 4));
    const J = new SparseJacobian(samples, [3], [4], 'param');
    const g = randomNormal([2, 3], rng);
    const dense = J.toDense();
    expect(J.vjp(g)).to.be.allclose(upstreamGradientLossWeights(dense, g), { rtol: 1e-14, atol: 1e-15 });
    expect(J.vjp(g).shape).to.deep.equal([4]);
    const v = randomNormal([4], rng);
    expect(J.jvp(v).shape).to.deep.equal([2, 3]);
    expect(() => J.jvp(randomNormal([2, 4], rng))).to.throw(/expected shape \[4\].*received \[2, 4\]/);
  });

  it('refuses a dense form over the memory budget before allocating, and mismatched shapes, quoting them', () => {
    const m = new CsrMatrix(1000, 1000, new Int32Array(1001), new Int32Array(0), new Float64Array(0));
    const J = new SparseJacobian([m, m], [1000], [1000], 'input');
    expect(() => J.toDense({ memoryBudget: 1e6 })).to.throw(MemoryBudgetError, /dense form of a sparse Jacobian \[2, 1000, 1000\].*keep it sparse/);
    expect(() => new SparseJacobian([m], [10, 10], [999], 'input')).to.throw(/expected sample 0 to be 100 × 999.*received 1000 × 1000/);
    expect(() => J.vjp(tensor([1, 2], [2, 1]))).to.throw(/expected shape \[2, 1000\].*received \[2, 1\]/);
    expect(() => new CsrMatrix(2, 2, Int32Array.from([0, 1]), new Int32Array(1), new Float64Array(1))).to.throw(/rowPtr of length rows \+ 1 = 3, received 2/);
  });
});

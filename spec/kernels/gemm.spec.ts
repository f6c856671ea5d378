import fc from 'fast-check';
import { gemm, gemmJs } from '../../lib/kernels/gemm.js';
import { expect } from '../helpers/setup.js';

/** `C (+)= A B` by the definition, one dot product at a time in `t` order: what every block and edge of the JS kernel must equal bit for bit. */
function naive(n: number, m: number, k: number, a: ArrayLike<number>, ai: number, at: number, b: ArrayLike<number>, bt: number, bj: number, c: Float64Array | Float32Array, c0: number, ci: number, accumulate: boolean): void {
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < m; j++) {
      let s = 0;
      for (let t = 0; t < k; t++) s += a[i * ai + t * at] * b[t * bt + j * bj];
      c[c0 + i * ci + j] = accumulate ? c[c0 + i * ci + j] + s : s;
    }
  }
}

describe('kernels/gemm', () => {
  const shapes = fc.record({ n: fc.integer({ min: 0, max: 11 }), m: fc.integer({ min: 0, max: 11 }), k: fc.integer({ min: 0, max: 9 }), ta: fc.boolean(), tb: fc.boolean(), accumulate: fc.boolean(), f32: fc.boolean(), pad: fc.integer({ min: 0, max: 3 }), seed: fc.integer({ min: 1, max: 1000 }) });

  it('the JS kernel equals the definition bit for bit, for every transpose, edge (n, m not multiples of 4), offset, dtype and accumulate flag; the dispatcher too for float64, within float32 rounding for float32', () => {
    fc.assert(
      fc.property(shapes, ({ n, m, k, ta, tb, accumulate, f32, pad, seed }) => {
        const Arr = (f32 ? Float32Array : Float64Array) as Float64ArrayConstructor;
        let s = seed;
        const rand = () => ((s = (s * 16807) % 2147483647) / 2147483647) * 2 - 1;
        const a = Arr.from({ length: n * k }, rand);
        const b = Arr.from({ length: k * m }, rand);
        const ci = m + pad;
        const c0 = pad;
        const start = Arr.from({ length: c0 + n * ci + pad }, rand);
        const got = start.slice();
        const want = start.slice();
        // A row-major [n, k] or stored transposed [k, n]; B row-major [k, m] or transposed [m, k].
        const [ai, at] = ta ? [1, n] : [k, 1];
        const [bt, bj] = tb ? [1, k] : [m, 1];
        const dispatched = start.slice();
        gemmJs({ n, m, k, a, a0: 0, ai, at, b, b0: 0, bt, bj, c: got, c0, ci }, accumulate);
        gemm({ n, m, k, a, a0: 0, ai, at, b, b0: 0, bt, bj, c: dispatched, c0, ci }, accumulate);
        naive(n, m, k, a, ai, at, b, bt, bj, want, c0, ci, accumulate);
        expect(Array.from(got)).to.deep.equal(Array.from(want));
        if (!f32) expect(Array.from(dispatched)).to.deep.equal(Array.from(want));
        else want.forEach((v, i) => expect(Math.abs(dispatched[i] - v)).to.be.at.most(1e-6 * (k + 1)));
      }),
      { numRuns: 300 },
    );
  });

  it('reads A and B from their offsets and leaves C outside its rows untouched', () => {
    const a = Float64Array.from([9, 9, 1, 2, 3, 4]); // A = [[1, 2], [3, 4]] at offset 2
    const b = Float64Array.from([7, 5, 6, 7, 8]); // B = [[5, 6], [7, 8]] at offset 1
    const c = new Float64Array(7).fill(-1); // C rows at 1 and 4 (ci = 3)
    gemm({ n: 2, m: 2, k: 2, a, a0: 2, ai: 2, at: 1, b, b0: 1, bt: 2, bj: 1, c, c0: 1, ci: 3 }, false);
    expect(Array.from(c)).to.deep.equal([-1, 19, 22, -1, 43, 50, -1]);
  });
});

import ndarray from 'ndarray';
import { jacobianWrtInput, jacobianWrtInputByVjp, jacobianWrtWeights, jacobianWrtWeightsByVjp } from '../../lib/jacobian.js';
import { Activation } from '../../lib/layers/activation.js';
import { Conv2D } from '../../lib/layers/conv2d.js';
import { Dense } from '../../lib/layers/dense.js';
import { Dropout } from '../../lib/layers/dropout.js';
import { Flatten } from '../../lib/layers/flatten.js';
import type { Differentiable } from '../../lib/layers/layer.js';
import { MaxPooling2D } from '../../lib/layers/max-pooling2d.js';
import { TangentPool, deliverTangent, rowBlock } from '../../lib/layers/out.js';
import { ReLU } from '../../lib/layers/relu.js';
import { Rng } from '../../lib/rng.js';
import { Sequential } from '../../lib/sequential.js';
import { type Tensor, contiguous, randomNormal, sizeOf, stridesOf } from '../../lib/tensor.js';
import { expect } from '../helpers/setup.js';

/** A layer (or stage) on a small input, with the forward options its pass takes. */
const LAYERS: { name: string; f: () => Differentiable; input: number[]; training?: boolean }[] = [
  { name: 'ReLU', f: () => new ReLU({ negative_slope: 0.1 }).build([5, 3]), input: [2, 5, 3] },
  { name: 'Activation relu', f: () => new Activation({ activation: 'relu' }).build([12]), input: [3, 12] },
  { name: 'Activation tanh', f: () => new Activation({ activation: 'tanh' }).build([4, 3]), input: [2, 4, 3] },
  { name: 'Activation softmax (couples a row)', f: () => new Activation({ activation: 'softmax' }).build([6]), input: [2, 6] },
  { name: 'Dropout in training', f: () => new Dropout({ rate: 0.5, seed: 3 }).build([10]), input: [3, 10], training: true },
  { name: 'Dropout at inference', f: () => new Dropout({ rate: 0.5 }).build([10]), input: [3, 10] },
  { name: 'Flatten', f: () => new Flatten().build([3, 2, 2]), input: [2, 3, 2, 2] },
  { name: 'MaxPooling2D', f: () => new MaxPooling2D({ pool_size: [2, 2] }).build([4, 4, 2]), input: [2, 4, 4, 2] },
  { name: 'Conv2D relu', f: () => new Conv2D({ filters: 3, kernel_size: [2, 2], activation: 'relu' }).build([4, 4, 2]), input: [2, 4, 4, 2] },
  { name: 'Dense tanh', f: () => new Dense({ units: 4, activation: 'tanh' }).build([6]), input: [3, 6] },
  {
    name: 'a CNN stage (Conv2D, Activation, MaxPooling2D, Flatten, Dense, Dropout)',
    f: () => new Sequential([new Conv2D({ filters: 3, kernel_size: [3, 3] }), new Activation({ activation: 'relu' }), new MaxPooling2D({ pool_size: [2, 2] }), new Flatten(), new Dense({ units: 5 }), new Dropout({ rate: 0.3, seed: 1 })], { inputShape: [6, 6, 2] }),
    input: [2, 6, 6, 2],
    training: true,
  },
];

/** Columns `c0..c0+T` of a buffer of `rows` rows of `cols` filled with a sentinel: the strided `[...lead, T]` view the builder hands a `jvp`. */
function sentinelBlock(lead: readonly number[], cols: number, c0: number, T: number): { view: Tensor; buf: Float64Array } {
  const rows = sizeOf(lead);
  const buf = new Float64Array(rows * cols).fill(7);
  for (let r = 0; r < rows; r++) buf.fill(0, r * cols + c0, r * cols + c0 + T);
  return { view: ndarray(buf, [...lead, T], [...stridesOf(lead).map((s) => s * cols), 1], c0) as Tensor, buf };
}

describe('jvp into out (lib/layers/out.ts)', () => {
  describe('every layer writes the same tangents into a strided column block as it returns alone, and nothing outside it', () => {
    for (const c of LAYERS) {
      it(c.name, () => {
        const f = c.f();
        const x = randomNormal(c.input, new Rng(5));
        const { saved } = f.forward(x, { training: c.training, rng: new Rng(4) });
        const nIn = sizeOf(f.inputShape);
        const B = c.input[0];
        const T = 3;
        const lead = [B, ...f.outputShape];
        for (const lo of [0, nIn - T]) {
          // Basis tangents e_lo..e_{lo+T} in every sample, with the caller's row hint: what the builder pushes.
          const seed = randomNormal([...c.input, T], new Rng(1));
          seed.data.fill(0);
          for (let b = 0; b < B; b++) for (let t = 0; t < T; t++) seed.data[(b * nIn + lo + t) * T + t] = 1;
          const alone = contiguous(f.jvp(saved, { xDot: seed, paramDots: null, T }));
          const { view, buf } = sentinelBlock(lead, T + 4, 2, T);
          const got = f.jvp(saved, { xDot: seed, paramDots: null, T, rows: { lo, hi: lo + T }, pool: new TangentPool() }, view);
          if (got !== view) deliverTangent(view, got);
          for (let r = 0; r < sizeOf(lead); r++) {
            for (let k = 0; k < T + 4; k++) {
              const v = buf[r * (T + 4) + k];
              if (k < 2 || k >= 2 + T) expect(v, `row ${r}, column ${k} outside the block`).to.equal(7);
              else expect(v, `row ${r}, tangent ${k - 2} (seed at ${lo})`).to.equal(alone.data[r * T + k - 2]);
            }
          }
        }
      });
    }
  });

  describe('the forward builders (out, pool, a narrower last block) agree with stacked VJPs', () => {
    for (const c of LAYERS) {
      it(c.name, () => {
        const f = c.f();
        const x = randomNormal(c.input, new Rng(9));
        // A fresh generator for every pass: each draws the same Dropout mask.
        const o = () => ({ training: c.training, rng: new Rng(4) });
        for (const tangents of [1, 5, 1000]) {
          expect(jacobianWrtInput(f, x, { ...o(), tangents }), `input, T = ${tangents}`).to.be.allclose(jacobianWrtInputByVjp(f, x, o()), { rtol: 1e-12, atol: 1e-14 });
          const rev = jacobianWrtWeightsByVjp(f, x, o());
          jacobianWrtWeights(f, x, { ...o(), tangents }).forEach((J, k) => expect(J, `weights ${k}, T = ${tangents}`).to.be.allclose(rev[k], { rtol: 1e-12, atol: 1e-14 }));
        }
      });
    }
  });

  it('rowBlock reads a column block of J and a contiguous block as rows, and refuses other strides', () => {
    const { view } = sentinelBlock([2, 3], 10, 4, 3);
    expect(rowBlock(view)).to.deep.include({ offset: 4, stride: 10 });
    expect(rowBlock(ndarray(new Float64Array(24), [2, 4, 3]) as Tensor)).to.deep.include({ offset: 0, stride: 3 });
    // A transposed view: rows are not a uniform stride apart.
    expect(rowBlock(ndarray(new Float64Array(24), [4, 2, 3], [3, 12, 1]) as Tensor)).to.equal(null);
    expect(rowBlock(ndarray(new Float64Array(24), [2, 12], [1, 2]) as Tensor)).to.equal(null);
  });

  it('deliverTangent copies into any view and refuses a wrong shape', () => {
    const src = ndarray(Float64Array.from({ length: 6 }, (_, i) => i + 1), [2, 3]) as Tensor;
    const t = ndarray(new Float64Array(6), [2, 3], [1, 2]) as Tensor;
    deliverTangent(t, src);
    expect(Array.from(t.data)).to.deep.equal([1, 4, 2, 5, 3, 6]);
    expect(() => deliverTangent(ndarray(new Float64Array(6), [3, 2]) as Tensor, src)).to.throw(/expected \[2, 3\], received \[3, 2\]/);
  });

  it('TangentPool hands a released buffer back cleared, by size and dtype', () => {
    const pool = new TangentPool();
    const a = pool.acquire([2, 3], 'float64');
    a.data.fill(5);
    pool.release(a);
    const b = pool.acquire([3, 2], 'float64');
    expect(b.data).to.equal(a.data);
    expect(Array.from(b.data)).to.deep.equal([0, 0, 0, 0, 0, 0]);
    expect(b.shape).to.deep.equal([3, 2]);
    expect(pool.acquire([6], 'float32').data).to.be.instanceOf(Float32Array);
    expect(pool.acquire([6], 'float64').data).to.not.equal(a.data);
  });
});

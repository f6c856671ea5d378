import fc from 'fast-check';
import { MemoryBudgetError, ShapeError } from '../../lib/errors.js';
import { upstreamGradientLossOut, upstreamGradientLossWeights } from '../../lib/helpers.js';
import { jacobianWrtInput, jacobianWrtWeights } from '../../lib/jacobian.js';
import { Conv2D } from '../../lib/layers/conv2d.js';
import { Dense } from '../../lib/layers/dense.js';
import type { Layer } from '../../lib/layers/layer.js';
import { MaxPooling2D } from '../../lib/layers/max-pooling2d.js';
import { Activation } from '../../lib/layers/activation.js';
import { Flatten } from '../../lib/layers/flatten.js';
import { Rng } from '../../lib/rng.js';
import { Sequential } from '../../lib/sequential.js';
import { CsrMatrix, SparseJacobian } from '../../lib/sparse/csr.js';
import { FactoredJacobian } from '../../lib/sparse/factored.js';
import { type Tensor, asType, maxAbs, randomNormal, sizeOf, zeros } from '../../lib/tensor.js';
import { expect } from '../helpers/setup.js';
import { expectSameJacobian, randomStage, randomTensor } from './util.js';

const LAYERS: [string, () => Layer, number[]][] = [
  ['Conv2D 3×3 relu', () => new Conv2D({ filters: 4, kernel_size: 3, activation: 'relu' }), [6, 7, 3]],
  ['Conv2D 2×3 stride 2 same tanh, no bias', () => new Conv2D({ filters: 3, kernel_size: [2, 3], strides: 2, padding: 'same', activation: 'tanh', use_bias: false }), [5, 7, 2]],
  ['Conv2D 3×3 dilated 2 same linear', () => new Conv2D({ filters: 2, kernel_size: 3, dilation_rate: 2, padding: 'same' }), [7, 6, 2]],
  ['Conv2D softmax', () => new Conv2D({ filters: 3, kernel_size: 2, activation: 'softmax' }), [4, 4, 2]],
  ['Dense sigmoid', () => new Dense({ units: 4, activation: 'sigmoid' }), [6]],
  ['Dense softmax', () => new Dense({ units: 3, activation: 'softmax' }), [5]],
  ['Dense pointwise on [3, 4, 5], relu', () => new Dense({ units: 2, activation: 'relu' }), [3, 4, 5]],
];

/** The upstream gradient `[B, ...out]`, normal entries. */
function upstream(f: { outputShape: readonly number[] }, B: number, rng: Rng): Tensor {
  return randomNormal([B, ...f.outputShape], rng);
}

/** Max |a − b| / max |b|. */
function relDiff(a: Tensor, b: Tensor): number {
  let d = 0;
  for (let i = 0; i < b.size; i++) d = Math.max(d, Math.abs(a.data[i] - b.data[i]));
  return d / Math.max(maxAbs(b), 1e-300);
}

describe('sparse/factored', () => {
  for (const [name, make, shape] of LAYERS) {
    it(`${name}: every weight Jacobian is factored, densifies to the dense Jacobian and to its own CSR form exactly, and contracts as the CSR Jacobian does`, () => {
      const rng = new Rng(31);
      const layer = make().build(shape, { rng });
      const x = randomTensor([3, ...shape], rng);
      const dense = jacobianWrtWeights(layer, x);
      const csr = jacobianWrtWeights(layer, x, { format: 'sparse' });
      const fac = jacobianWrtWeights(layer, x, { format: 'factored' });
      const g = upstream(layer, 3, rng);
      fac.forEach((J, k) => {
        expect(J, layer.params[k].name).to.be.instanceOf(FactoredJacobian);
        expect(J.format).to.equal('factored');
        expect(J.shape).to.deep.equal(dense[k].shape);
        expectSameJacobian(J.toDense(), dense[k], `${layer.params[k].name} toDense`);
        const S = (J as FactoredJacobian).toSparse();
        expect(Array.from(S.toDense().data)).to.deep.equal(Array.from(J.toDense().data));
        expect(S.samples.every((m) => m.isSorted())).to.equal(true);
        expect(relDiff(upstreamGradientLossWeights(J, g), upstreamGradientLossWeights(csr[k], g))).to.be.at.most(1e-12);
        expect(relDiff(upstreamGradientLossOut(J, g), upstreamGradientLossOut(csr[k], g))).to.be.at.most(1e-12);
        const v = randomNormal(layer.params[k].value.shape, rng);
        expect(relDiff((J as FactoredJacobian).jvp(v), csr[k].jvp(v))).to.be.at.most(1e-12);
        const Dk = dense[k].toDense();
        const nr = sizeOf(layer.outputShape);
        const nc = layer.params[k].value.size;
        for (const [b, r, c] of [[0, 0, 0], [1, nr - 1, nc - 1], [2, nr >> 1, nc >> 1]]) expect((J as FactoredJacobian).get(b, r, c)).to.be.closeTo(Dk.data[(b * nr + r) * nc + c], 1e-12 * maxAbs(Dk));
      });
      // The kernel and its bias share the stage's Jacobian w.r.t. the layer's linear output.
      if (fac.length === 2) expect((fac[0] as FactoredJacobian).left).to.equal((fac[1] as FactoredJacobian).left);
    });
  }

  it('random stages: each weight Jacobian factored equals the dense one, and its contraction the CSR one to 1e-12', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 1_000_000 }), (seed) => {
        const { model, x, describe, training } = randomStage(seed);
        const fo = () => ({ training, seed: 17 });
        const dense = jacobianWrtWeights(model, x, fo());
        const csr = jacobianWrtWeights(model, x, { ...fo(), format: 'sparse' });
        const fac = jacobianWrtWeights(model, x, { ...fo(), format: 'factored' });
        const g = upstream(model, x.shape[0], new Rng(seed));
        fac.forEach((J, k) => {
          const what = `parameter ${k} (${model.params[k].name}), ${describe}`;
          expect(J.format, what).to.equal('factored');
          expectSameJacobian(J.toDense(), dense[k], what);
          expect(relDiff(upstreamGradientLossWeights(J, g), upstreamGradientLossWeights(csr[k], g)), what).to.be.at.most(1e-12);
        });
      }),
      { numRuns: 40, seed: 20261202 },
    );
  });

  it('holds the bytes its structural bound says when no value is zero (a linear convolution on a normal input), and a Dense kernel its input rows once', () => {
    const rng = new Rng(4);
    const conv = new Conv2D({ filters: 5, kernel_size: 3 }).build([6, 6, 2], { rng });
    const x = randomNormal([2, 6, 6, 2], rng);
    const [K, b] = jacobianWrtWeights(conv, x, { format: 'factored' }) as FactoredJacobian[];
    // A is the identity on z (16 positions × 5 units per sample); the patches are [2 · 16, 18].
    const rows = 16 * 5;
    const left = 2 * (4 * (rows + 1) + rows * 12);
    expect(K.bytes).to.equal(left + 2 * 16 * 18 * 8);
    expect(b.bytes, 'the bias shares A').to.equal(0);
    expect(b.sharedBytes).to.equal(left);
    expect(K.sharedBytes).to.equal(0);
    expect(K.plan!.estimatedBytes).to.equal(K.bytes);
    expect(b.plan!.estimatedBytes).to.equal(b.bytes);
    expect(K.bytes * 5).to.be.below(jacobianWrtWeights(conv, x, { format: 'sparse' })[0].bytes * 1.6);
    const dense = new Dense({ units: 7 }).build([9], { rng });
    const [Kd] = jacobianWrtWeights(dense, randomNormal([3, 9], rng), { format: 'factored' }) as FactoredJacobian[];
    expect(Kd.bytes).to.equal(3 * (4 * 8 + 7 * 12) + 3 * 9 * 8);
    expect(Kd.plan!.estimatedBytes).to.equal(Kd.bytes);
  });

  it('a stage: conv, relu, pool, conv, flatten, dense: every weight Jacobian factored equals the dense one, within its bound, and the second convolution’s kernel (after 32 channels) is several times smaller than its CSR form', () => {
    const rng = new Rng(6);
    const model = new Sequential([new Conv2D({ filters: 32, kernel_size: 3 }), new Activation({ activation: 'relu' }), new MaxPooling2D({ pool_size: 2 }), new Conv2D({ filters: 8, kernel_size: 3 }), new Flatten(), new Dense({ units: 3 })], { inputShape: [12, 12, 3], rng });
    const x = randomNormal([2, 12, 12, 3], rng);
    const csr = jacobianWrtWeights(model, x, { format: 'sparse' });
    const fac = jacobianWrtWeights(model, x, { format: 'factored' }) as FactoredJacobian[];
    const D = jacobianWrtWeights(model, x);
    fac.forEach((J, k) => expectSameJacobian(J, D[k], model.params[k].name));
    expect(fac[2].bytes).to.be.below(csr[2].bytes / 3);
    expect(fac.every((J) => J.bytes <= J.plan!.estimatedBytes)).to.equal(true);
    expect(fac[0].plan!.reason).to.match(/^factored: the stage's Jacobian w\.r\.t\. Conv2D "conv2d(_\d+)?"'s linear output/);
  });

  it('float32 in, float32 factors, equal to the dense float32 Jacobian to float32 precision', () => {
    const rng = new Rng(8);
    const model = new Sequential([new Conv2D({ filters: 3, kernel_size: 2, activation: 'relu' }), new MaxPooling2D({ pool_size: 2 }), new Flatten(), new Dense({ units: 2 })], { inputShape: [5, 5, 2], rng, dtype: 'float32' });
    const x = asType(randomTensor([2, 5, 5, 2], rng), 'float32');
    const fac = jacobianWrtWeights(model, x, { format: 'factored' }) as FactoredJacobian[];
    const D = jacobianWrtWeights(model, x);
    fac.forEach((J, k) => {
      expect(J.dtype).to.equal('float32');
      expect(J.left[0].values).to.be.instanceOf(Float32Array);
      expect(J.toDense().data).to.be.instanceOf(Float32Array);
      expect(J).to.be.allclose(D[k], { rtol: 1e-5, atol: 1e-6 });
    });
  });

  it('w.r.t. the input a factored request is CSR: a SparseJacobian', () => {
    const rng = new Rng(2);
    const conv = new Conv2D({ filters: 2, kernel_size: 2 }).build([4, 4, 1], { rng });
    const x = randomNormal([1, 4, 4, 1], rng);
    const J = jacobianWrtInput(conv, x, { format: 'factored' });
    expect(J).to.be.instanceOf(SparseJacobian);
    expectSameJacobian(J, jacobianWrtInput(conv, x), 'input');
  });

  it('refuses factors that do not fit, an upstream gradient of the wrong shape, and a dense form over the budget, quoting what it received', () => {
    const id = new CsrMatrix(4, 4, Int32Array.from([0, 1, 2, 3, 4]), Int32Array.from([0, 1, 2, 3]), Float64Array.from([1, 1, 1, 1]));
    const factor = { positions: 2, units: 2, width: 3, patches: new Float64Array(6) };
    expect(() => new FactoredJacobian([id], factor, [4], [3, 3])).to.throw(ShapeError, /width · units = 3 · 2 = 6 entries, received shape \[3, 3\] \(9\)/);
    expect(() => new FactoredJacobian([id], { ...factor, positions: 3, patches: new Float64Array(9) }, [4], [3, 2])).to.throw(ShapeError, /left factor to be 4 × 6 .* received 4 × 4/);
    expect(() => new FactoredJacobian([id], { ...factor, patches: new Float64Array(5) }, [4], [3, 2])).to.throw(ShapeError, /patches of B · positions · width = 1 · 2 · 3 values, received 5/);
    const J = new FactoredJacobian([id], factor, [4], [3, 2]);
    expect(() => J.vjp(zeros([1, 5]), true)).to.throw(ShapeError, /\[1, 5\]/);
    expect(() => J.toDense({ memoryBudget: 8 })).to.throw(MemoryBudgetError, /keep it factored/);
  });
});

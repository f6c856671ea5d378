import fc from 'fast-check';
import { ConfigError } from '../../lib/errors.js';
import { upstreamGradientLossOut } from '../../lib/helpers.js';
import { jacobianWrtInput, jacobianWrtWeights } from '../../lib/jacobian.js';
import { Activation } from '../../lib/layers/activation.js';
import { Conv2D } from '../../lib/layers/conv2d.js';
import { Dense } from '../../lib/layers/dense.js';
import { Dropout } from '../../lib/layers/dropout.js';
import { Flatten } from '../../lib/layers/flatten.js';
import type { Layer } from '../../lib/layers/layer.js';
import { MaxPooling2D } from '../../lib/layers/max-pooling2d.js';
import { catsVsDogsCnn, splitAfterLastPooling } from '../../lib/models.js';
import { Rng } from '../../lib/rng.js';
import { Sequential } from '../../lib/sequential.js';
import { kronColumnColouring, kronRowColouring } from '../../lib/sparse/colouring.js';
import { compressedForward, compressedReverse } from '../../lib/sparse/compressed.js';
import { leavesOf } from '../../lib/layers/layer.js';
import { stageKron } from '../../lib/sparse/pattern.js';
import { canPropagate, propagateJacobian } from '../../lib/sparse/propagate.js';
import { asType, randomUniform } from '../../lib/tensor.js';
import { expect } from '../helpers/setup.js';
import { expectSameJacobian, randomStage, randomTensor } from './util.js';

const LAYERS: [string, () => Layer, number[]][] = [
  ['Conv2D 3×3 relu', () => new Conv2D({ filters: 4, kernel_size: 3, activation: 'relu' }), [6, 7, 3]],
  ['Conv2D 2×3 stride 2 same tanh, no bias', () => new Conv2D({ filters: 3, kernel_size: [2, 3], strides: 2, padding: 'same', activation: 'tanh', use_bias: false }), [5, 7, 2]],
  ['Conv2D softmax', () => new Conv2D({ filters: 3, kernel_size: 2, activation: 'softmax' }), [4, 4, 2]],
  ['Dense sigmoid', () => new Dense({ units: 4, activation: 'sigmoid' }), [6]],
  ['Dense softmax', () => new Dense({ units: 3, activation: 'softmax' }), [5]],
  ['Dense relu', () => new Dense({ units: 5, activation: 'relu' }), [4]],
  ['Activation tanh', () => new Activation({ activation: 'tanh' }), [3, 4, 2]],
  ['Activation softmax', () => new Activation({ activation: 'softmax' }), [3, 2, 5]],
  ['MaxPooling2D 2×2', () => new MaxPooling2D({ pool_size: 2 }), [6, 7, 3]],
  ['MaxPooling2D 3×3 stride 2 same (shared winners)', () => new MaxPooling2D({ pool_size: 3, strides: 2, padding: 'same' }), [7, 8, 2]],
  ['Flatten', () => new Flatten(), [3, 4, 2]],
  ['Dropout (training)', () => new Dropout({ rate: 0.5 }), [4, 5]],
];

describe('sparse/propagate', () => {
  for (const [name, make, shape] of LAYERS) {
    it(`${name}: sparse tangents equal the dense Jacobians, w.r.t. the input and each parameter`, () => {
      const rng = new Rng(21);
      const layer = make().build(shape, { rng });
      const x = randomTensor([3, ...shape], rng);
      const fo = () => ({ training: true, rng: new Rng(5) });
      expectSameJacobian(propagateJacobian(layer, x, fo()), jacobianWrtInput(layer, x, fo()), 'input');
      const Jw = jacobianWrtWeights(layer, x, fo());
      layer.params.forEach((p, k) => expectSameJacobian(propagateJacobian(layer, x, { ...fo(), wrt: k }), Jw[k], p.name));
    });
  }

  it('random stages: every engine equals the dense Jacobians (input and every parameter), Dropout masks and all', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 1_000_000 }), (seed) => {
        const { model, x, describe, training } = randomStage(seed);
        const fo = () => ({ training, seed: 17 });
        const dense = jacobianWrtInput(model, x, fo());
        const what = (s: string) => `${s} (${describe})`;
        expectSameJacobian(propagateJacobian(model, x, fo()), dense, what('propagate, input'));
        const k = stageKron(leavesOf(model));
        if (k.nnz <= 200_000) {
          const P = k.expand();
          expectSameJacobian(compressedForward(model, x, { ...fo(), pattern: P, colouring: kronColumnColouring(k) }), dense, what('compressed forward, input'));
          expectSameJacobian(compressedReverse(model, x, { ...fo(), pattern: P, colouring: kronRowColouring(k) }), dense, what('compressed reverse, input'));
        }
        const Jw = jacobianWrtWeights(model, x, fo());
        model.params.forEach((p, i) => expectSameJacobian(propagateJacobian(model, x, { ...fo(), wrt: i }), Jw[i], what(`propagate, parameter ${i} (${p.name})`)));
      }),
      { numRuns: 40, seed: 20241126 },
    );
  });

  it('only non-zeros are stored: the conv stage\'s value-dependent entries are fewer than the structural ones, and equal the dense Jacobian\'s non-zeros', () => {
    const cnn = catsVsDogsCnn({ side: 32 });
    const [model_0] = cnn.split(splitAfterLastPooling(cnn));
    const x = randomUniform([1, 32, 32, 3], new Rng(1));
    const J = propagateJacobian(model_0, x);
    const D = jacobianWrtInput(model_0, x).toDense();
    expectSameJacobian(J, D, 'model_0 at 32');
    const nonzeros = D.data.filter((v) => v !== 0).length;
    expect(J.nnz).to.equal(nonzeros);
    expect(J.nnz).to.be.below(stageKron(leavesOf(model_0)).nnz);
    expect(J.samples[0].isSorted()).to.equal(true);
  });

  it('a result that fills its row writer takes the writer over, and the next sample gets its own: model_0 at 96², batch 2, each sample\'s rows equal its own VJP', () => {
    // At 96² the result level outgrows the writer's first capacity, so the result keeps the writer's arrays; a reused writer would overwrite sample 0 with sample 1.
    const model = catsVsDogsCnn({ side: 96, channels: 3, seed: 2 });
    const [stage] = model.split(splitAfterLastPooling(model));
    const x = randomUniform([2, 96, 96, 3], new Rng(5));
    const J = propagateJacobian(stage, x, { wrt: 'input' });
    const g = randomUniform([2, ...stage.outputShape], new Rng(6), -1, 1);
    const { saved } = stage.forward(x);
    const want = stage.vjp(saved, g).dx;
    const got = upstreamGradientLossOut(J, g);
    expect(got).to.be.allclose(want, { rtol: 1e-12, atol: 1e-15 });
  });

  it('float32 in, float32 out, equal to the dense float32 Jacobian to float32 precision', () => {
    const rng = new Rng(8);
    const model = new Sequential([new Conv2D({ filters: 3, kernel_size: 2, activation: 'relu' }), new MaxPooling2D({ pool_size: 2 }), new Flatten(), new Dense({ units: 2 })], { inputShape: [5, 5, 2], rng, dtype: 'float32' });
    const x = asType(randomTensor([2, 5, 5, 2], rng), 'float32');
    const J = propagateJacobian(model, x);
    expect(J.dtype).to.equal('float32');
    expect(J.samples[0].values).to.be.instanceOf(Float32Array);
    expect(J).to.be.allclose(jacobianWrtInput(model, x), { rtol: 1e-5, atol: 1e-6 });
  });

  it('propagates through a Differentiable without structure hooks (its own jvp), and refuses a parameter index it does not have', () => {
    const rng = new Rng(9);
    const dense = new Dense({ units: 2 }).build([3], { rng });
    const opaque = { inputShape: dense.inputShape, outputShape: dense.outputShape, params: dense.params, forward: dense.forward.bind(dense), jvp: dense.jvp.bind(dense), vjp: dense.vjp.bind(dense) };
    expect(canPropagate(opaque)).to.equal(true);
    const x = randomTensor([2, 3], rng);
    expectSameJacobian(propagateJacobian(opaque, x), jacobianWrtInput(dense, x), 'opaque, w.r.t. the input');
    expectSameJacobian(propagateJacobian(opaque, x, { wrt: 0 }), jacobianWrtWeights(dense, x)[0], 'opaque, w.r.t. the kernel');
    expect(() => propagateJacobian(dense, randomTensor([1, 3], rng), { wrt: 7 })).to.throw(/parameter index in 0\.\.1, received 7/);
  });
});

import { ShapeError } from '../../lib/errors.js';
import { jacobianWrtInput, jacobianWrtWeights } from '../../lib/jacobian.js';
import { Activation } from '../../lib/layers/activation.js';
import { Conv2D } from '../../lib/layers/conv2d.js';
import { Dense } from '../../lib/layers/dense.js';
import { Dropout } from '../../lib/layers/dropout.js';
import { Flatten } from '../../lib/layers/flatten.js';
import type { Differentiable, Layer, Tangents } from '../../lib/layers/layer.js';
import { MaxPooling2D } from '../../lib/layers/max-pooling2d.js';
import { Rng } from '../../lib/rng.js';
import { kronColumnColouring, kronRowColouring, trivialColouring } from '../../lib/sparse/colouring.js';
import { compressedForward, compressedReverse } from '../../lib/sparse/compressed.js';
import { layerInputKron, paramKron } from '../../lib/sparse/pattern.js';
import { SparsityPattern } from '../../lib/structure.js';
import { expect } from '../helpers/setup.js';
import { expectSameJacobian, randomTensor } from './util.js';

const LAYERS: [string, () => Layer, number[]][] = [
  ['Conv2D 3×3 relu', () => new Conv2D({ filters: 4, kernel_size: 3, activation: 'relu' }), [6, 7, 3]],
  ['Conv2D 2×3 stride 2 same sigmoid', () => new Conv2D({ filters: 3, kernel_size: [2, 3], strides: 2, padding: 'same', activation: 'sigmoid' }), [5, 7, 2]],
  ['Conv2D softmax', () => new Conv2D({ filters: 3, kernel_size: 2, activation: 'softmax' }), [4, 4, 2]],
  ['Dense tanh', () => new Dense({ units: 4, activation: 'tanh' }), [6]],
  ['Dense softmax', () => new Dense({ units: 3, activation: 'softmax' }), [5]],
  ['Activation relu', () => new Activation({ activation: 'relu' }), [3, 4, 2]],
  ['Activation softmax', () => new Activation({ activation: 'softmax' }), [3, 2, 5]],
  ['MaxPooling2D 2×2', () => new MaxPooling2D({ pool_size: 2 }), [6, 7, 3]],
  ['MaxPooling2D 3×3 stride 2 same', () => new MaxPooling2D({ pool_size: 3, strides: 2, padding: 'same' }), [7, 8, 2]],
  ['Flatten', () => new Flatten(), [3, 4, 2]],
  ['Dropout (training)', () => new Dropout({ rate: 0.5 }), [4, 5]],
];

/** Counts the tangents pushed through jvp (and the cotangents pulled through vjp). */
function counting<S>(f: Differentiable<S>): Differentiable<S> & { tangents: number; passes: number; vjps: number } {
  const c = {
    inputShape: f.inputShape,
    outputShape: f.outputShape,
    params: f.params,
    tangents: 0,
    passes: 0,
    vjps: 0,
    forward: (x: never, o?: never) => f.forward(x, o),
    jvp(s: S, t: Tangents) {
      c.tangents += t.T;
      c.passes++;
      return f.jvp(s, t);
    },
    vjp(s: S, dy: never) {
      c.vjps++;
      return f.vjp(s, dy);
    },
  };
  return c;
}

describe('sparse/compressed', () => {
  for (const [name, make, shape] of LAYERS) {
    it(`${name}: compressed forward and reverse (closed-form colourings) equal the dense Jacobians, w.r.t. the input and each parameter`, () => {
      const rng = new Rng(11);
      const layer = make().build(shape, { rng });
      const L = layer as unknown as Layer;
      const x = randomTensor([2, ...shape], rng);
      const training = layer.className === 'Dropout';
      const fo = () => ({ training, rng: new Rng(3) });
      const kron = layerInputKron(L);
      const P = kron.expand();
      const dense = jacobianWrtInput(layer, x, fo());
      expectSameJacobian(compressedForward(layer, x, { ...fo(), pattern: P, colouring: kronColumnColouring(kron) }), dense, 'forward, input');
      expectSameJacobian(compressedReverse(layer, x, { ...fo(), pattern: P, colouring: kronRowColouring(kron) }), dense, 'reverse, input');
      // Greedy colourings (the default with a pattern), and one tangent per pass through the cursor decompression.
      expectSameJacobian(compressedForward(layer, x, { ...fo(), pattern: P, tangents: 1, memoryBudget: 1 }), dense, 'forward, greedy, T = 1, blockwise decompression');
      const denseW = jacobianWrtWeights(layer, x, fo());
      layer.params.forEach((p, k) => {
        const kp = paramKron(L, k);
        expectSameJacobian(compressedForward(layer, x, { ...fo(), wrt: k, pattern: kp.expand(), colouring: kronColumnColouring(kp) }), denseW[k], `forward, ${p.name}`);
        expectSameJacobian(compressedReverse(layer, x, { ...fo(), wrt: k, pattern: kp.expand() }), denseW[k], `reverse, ${p.name}`);
      });
    });
  }

  it('a stride-1 3×3 convolution on 3 channels pushes 27 tangents, not H·W·3 = 192, in passes sized to the block budget', () => {
    const rng = new Rng(2);
    const conv = new Conv2D({ filters: 5, kernel_size: 3 }).build([8, 8, 3], { rng });
    const x = randomTensor([1, 8, 8, 3], rng);
    const kron = layerInputKron(conv as unknown as Layer);
    const f = counting(conv);
    const J = compressedForward(f, x, { pattern: kron.expand(), colouring: kronColumnColouring(kron) });
    expect(f.tangents).to.equal(27);
    expect(f.passes).to.equal(1);
    expectSameJacobian(J, jacobianWrtInput(conv, x), 'conv');
    // A block budget of 10 tangents' bytes: ceil(27 / 10) = 3 passes.
    const g = counting(conv);
    const perTangent = (8 * 8 * 3 + 6 * 6 * 5) * 8;
    compressedForward(g, x, { pattern: kron.expand(), colouring: kronColumnColouring(kron), blockBytes: 10 * perTangent });
    expect([g.tangents, g.passes]).to.deep.equal([27, 3]);
  });

  it('reverse mode on a wide Jacobian: Dense(1) needs one cotangent per sample batch; without a pattern both modes are the dense builders', () => {
    const rng = new Rng(4);
    const dense = new Dense({ units: 1, activation: 'sigmoid' }).build([40], { rng });
    const x = randomTensor([3, 40], rng);
    const f = counting(dense);
    const J = compressedReverse(f, x, { pattern: SparsityPattern.full(1, 40) });
    expect(f.vjps).to.equal(1);
    expectSameJacobian(J, jacobianWrtInput(dense, x), 'reverse Dense(1)');
    const g = counting(dense);
    expectSameJacobian(compressedForward(g, x), jacobianWrtInput(dense, x), 'forward without a pattern');
    expect(g.tangents).to.equal(40);
    expectSameJacobian(compressedReverse(dense, x, { colouring: trivialColouring(1) }), jacobianWrtInput(dense, x), 'reverse without a pattern');
  });

  it('per-sample patterns: value-dependent zeros are dropped, a colouring valid for their union recovers every sample', () => {
    const rng = new Rng(6);
    const relu = new Activation({ activation: 'relu' }).build([10], { rng });
    const x = randomTensor([3, 10], rng);
    const J = compressedForward(relu, x, { pattern: SparsityPattern.identity(10) });
    let positives = 0;
    for (let i = 0; i < x.size; i++) if (x.data[i] > 0) positives++;
    expect(J.nnz).to.equal(positives);
    expectSameJacobian(J, jacobianWrtInput(relu, x), 'relu');
    const kept = compressedForward(relu, x, { pattern: SparsityPattern.identity(10), dropZeros: false });
    expect(kept.nnz).to.equal(30);
  });

  it('rejects a pattern or colouring of the wrong size, and a bad wrt, quoting them', () => {
    const rng = new Rng(7);
    const dense = new Dense({ units: 2 }).build([3], { rng });
    const x = randomTensor([2, 3], rng);
    expect(() => compressedForward(dense, x, { pattern: SparsityPattern.full(3, 3) })).to.throw(ShapeError, /expected patterns of 2 × 3 \(outputs × columns\), received 3 × 3/);
    expect(() => compressedForward(dense, x, { pattern: [SparsityPattern.full(2, 3)] })).to.throw(ShapeError, /expected 2 per-sample patterns \(one per sample\), received 1/);
    expect(() => compressedForward(dense, x, { colouring: trivialColouring(4) })).to.throw(ShapeError, /expected a colouring of 3 columns, received 4/);
    expect(() => compressedForward(dense, x, { wrt: 5 })).to.throw(ShapeError, /parameter index in 0\.\.1, received 5/);
    expect(() => compressedReverse(dense, x, { wrt: 2 })).to.throw(ShapeError, /parameter index in 0\.\.1, received 2/);
    expect(() => compressedForward(dense, randomTensor([2, 4], rng))).to.throw(ShapeError, /compressedForward x: expected shape \[B, 3\]/);
  });
});

import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { jacobianChain, referenceGradients, vjpChain } from '../../lib/chain.js';
import { ConfigError } from '../../lib/errors.js';
import { jacobianWrtInput } from '../../lib/jacobian.js';
import { Conv2D } from '../../lib/layers/conv2d.js';
import { Dense } from '../../lib/layers/dense.js';
import { Flatten } from '../../lib/layers/flatten.js';
import { GlobalMaxPooling2D } from '../../lib/layers/global-max-pooling2d.js';
import { layerFromConfig } from '../../lib/model-io.js';
import { estimateMemory, measureMemory } from '../../lib/memory-report.js';
import { Rng } from '../../lib/rng.js';
import { Sequential } from '../../lib/sequential.js';
import { contiguous, randomNormal, randomUniform, tensor } from '../../lib/tensor.js';
import { checkDerivatives } from '../helpers/check-derivatives.js';
import { expectSame } from '../helpers/memory.js';
import { expect } from '../helpers/setup.js';
import { expectLikeTfjs } from '../helpers/tfjs.js';

createRequire(import.meta.url)('@tensorflow/tfjs-core/dist/register_all_gradients.js');

const GEOMETRIES: { name: string; input: [number, number, number]; keepdims: boolean }[] = [
  { name: '3x4x2 to [2]', input: [3, 4, 2], keepdims: false },
  { name: '2x5x3 keepdims to [1, 1, 3]', input: [2, 5, 3], keepdims: true },
  { name: '1x1x2 (a single cell: the identity)', input: [1, 1, 2], keepdims: false },
];

describe('GlobalMaxPooling2D', () => {
  describe('derivatives, four ways, and every structured engine', () => {
    for (const geo of GEOMETRIES) {
      it(geo.name, () => {
        const layer = new GlobalMaxPooling2D({ keepdims: geo.keepdims }).build(geo.input);
        const x = randomNormal([2, ...geo.input], new Rng(51));
        checkDerivatives(layer, x, {
          // Exact case: row (b, c) is a single 1, at the largest x[b, ·, ·, c], found here by a scan of its own.
          exact: (Jx) => {
            const J = contiguous(Jx!.toDense());
            const [H, W, C] = geo.input;
            const n = H * W * C;
            for (let b = 0; b < 2; b++) for (let c = 0; c < C; c++) {
              let best = -Infinity;
              let at = -1;
              for (let p = 0; p < H * W; p++) if (x.data[b * n + p * C + c] > best) [best, at] = [x.data[b * n + p * C + c], p * C + c];
              const row = Array.from(J.data.subarray((b * C + c) * n, (b * C + c + 1) * n));
              expect(row.map((v, i) => (v !== 0 ? i : -1)).filter((i) => i >= 0), `row b${b} c${c}`).to.deep.equal([at]);
              expect(row[at]).to.equal(1);
            }
          },
        });
      });
    }
  });

  it('exact forward by hand; ties go to the first maximum in row-major order', () => {
    const layer = new GlobalMaxPooling2D().build([2, 2, 2]);
    // Channel 0: 1, 7, 7, 3 (a tie at cells 1 and 2); channel 1: -4, -2, -9, -2 (a tie at 1 and 3).
    const x = tensor([1, -4, 7, -2, 7, -9, 3, -2], [1, 2, 2, 2]);
    const { y, saved } = layer.forward(x);
    expect(y).to.be.allclose([[7, -2]], { rtol: 0, atol: 0 });
    expect(Array.from(layer.vjp(saved, tensor([10, 20], [1, 2])).dx.data)).to.deep.equal([0, 0, 10, 20, 0, 0, 0, 0]);
    const J = jacobianWrtInput(layer, x).toDense();
    expect(J.get(0, 0, 0, 1, 0)).to.equal(1);
    expect(J.get(0, 0, 1, 0, 0)).to.equal(0);
    // The documented difference: tfjs-core's max gradient gives the whole cotangent to every tied maximum.
    const tdx = tf.grad((u: tf.Tensor) => tf.max(u, [1, 2]))(tf.tensor(Float32Array.from(x.data), x.shape), tf.tensor([10, 20], [1, 2]));
    expect(Array.from(tdx.dataSync())).to.deep.equal([0, 0, 10, 20, 10, 0, 0, 20]);
  });

  it('a NaN in a channel makes its output NaN, as tfjs-core max does; the other channels are untouched', () => {
    const layer = new GlobalMaxPooling2D().build([1, 3, 2]);
    const x = tensor([1, 5, NaN, 2, 3, 4], [1, 1, 3, 2]);
    const y = layer.forward(x).y;
    const ty = tf.max(tf.tensor(Float32Array.from(x.data), x.shape), [1, 2]).dataSync();
    expect(Number.isNaN(y.data[0]) && Number.isNaN(ty[0])).to.equal(true);
    expect([y.data[1], ty[1]]).to.deep.equal([5, 5]);
  });

  it('refuses a bad config, quoting what it received', () => {
    expect(() => new GlobalMaxPooling2D({ keepdims: 1 as unknown as boolean })).to.throw(ConfigError, /keepdims.*received 1/);
    expect(() => new GlobalMaxPooling2D({ data_format: 'channels_first' as unknown as 'channels_last' })).to.throw(ConfigError, /received "channels_first"/);
  });

  // tfjs-core's max gradient gives the whole cotangent to every tied maximum (TensorFlow splits it
  // among them); ours gives it to the first. The inputs here are continuous draws: no ties.
  it('agrees with tfjs-core: max over axes [1, 2] and its gradient, to float32 precision', () => {
    for (const geo of GEOMETRIES) {
      const rng = new Rng(52);
      const layer = new GlobalMaxPooling2D({ keepdims: geo.keepdims }).build(geo.input);
      const x = randomNormal([2, ...geo.input], rng);
      const f = (t: tf.Tensor) => tf.max(t, [1, 2], geo.keepdims);
      expectLikeTfjs(layer, x, f, geo.name, rng);
    }
  });

  it('loads from its Keras config, and a model with it trains both ways: the chains equal one tape, dense and sparse; the estimate equals the measurement', async () => {
    const rng = new Rng(53);
    const layer = layerFromConfig({ class_name: 'GlobalMaxPool2D', config: { data_format: null, keepdims: true, name: 'gmp' } });
    expect(layer.getConfig()).to.deep.equal({ data_format: 'channels_last', keepdims: true });
    const model = new Sequential([new Conv2D({ filters: 3, kernel_size: 2, activation: 'tanh' }), layer, new Flatten(), new Dense({ units: 2, activation: 'softmax' })], { inputShape: [5, 4, 2], rng });
    expect(model.layers[1].outputShape).to.deep.equal([1, 1, 3]);
    const stages = model.split([2]);
    const x = randomUniform([3, 5, 4, 2], rng);
    const yTrue = tensor([1, 0, 0, 1, 1, 0], [3, 2]);
    const ref = referenceGradients(stages, x, yTrue, 'categorical_crossentropy');
    const runs = [jacobianChain(stages, x, yTrue, 'categorical_crossentropy'), jacobianChain(stages, x, yTrue, 'categorical_crossentropy', { jacobian: { format: 'sparse', mode: 'auto' } }), await vjpChain(stages, x, yTrue, 'categorical_crossentropy')];
    for (const r of runs) r.dLoss_dWeights.forEach((layerGrads, i) => layerGrads.forEach((g, k) => expect(g, `${r.method} layer ${i} param ${k}`).to.be.allclose(ref.dLoss_dWeights[i][k], { rtol: 1e-10, atol: 1e-12 })));
    expectSame(estimateMemory(stages, 3), measureMemory(stages, x));
  });
});

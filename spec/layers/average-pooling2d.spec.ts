import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { jacobianChain, referenceGradients, vjpChain } from '../../lib/chain.js';
import { jacobianWrtInput } from '../../lib/jacobian.js';
import { AveragePooling2D, type AveragePooling2DConfig } from '../../lib/layers/average-pooling2d.js';
import { Conv2D } from '../../lib/layers/conv2d.js';
import { Dense } from '../../lib/layers/dense.js';
import { Flatten } from '../../lib/layers/flatten.js';
import { layerFromConfig } from '../../lib/model-io.js';
import { estimateMemory, measureMemory } from '../../lib/memory-report.js';
import { Rng } from '../../lib/rng.js';
import { Sequential } from '../../lib/sequential.js';
import { contiguous, randomNormal, randomUniform, tensor } from '../../lib/tensor.js';
import { checkDerivatives } from '../helpers/check-derivatives.js';
import { expectSame } from '../helpers/memory.js';
import { expect } from '../helpers/setup.js';

createRequire(import.meta.url)('@tensorflow/tfjs-core/dist/register_all_gradients.js');

/** Geometries: the default 2x2, odd sizes, overlapping windows, non-square pools, 'same' with clipped windows. */
const GEOMETRIES: { name: string; input: [number, number, number]; config: AveragePooling2DConfig }[] = [
  { name: 'default 2x2 on 6x6', input: [6, 6, 2], config: {} },
  { name: '2x2 same on 7x5 (clipped windows at the end)', input: [7, 5, 2], config: { pool_size: 2, padding: 'same' } },
  { name: '3x3 same s2 on 7x5 (overlapping, clipped on both sides)', input: [7, 5, 3], config: { pool_size: 3, strides: 2, padding: 'same' } },
  { name: '[3,2] valid strides [1,2] on 7x5', input: [7, 5, 2], config: { pool_size: [3, 2], strides: [1, 2] } },
  { name: '4x4 same s1 on 3x3 (pool wider than input)', input: [3, 3, 2], config: { pool_size: 4, strides: 1, padding: 'same' } },
];

describe('AveragePooling2D', () => {
  describe('derivatives, four ways, and every structured engine', () => {
    for (const geo of GEOMETRIES) {
      it(geo.name, () => {
        const rng = new Rng(31);
        const layer = new AveragePooling2D(geo.config).build(geo.input);
        checkDerivatives(layer, randomNormal([2, ...geo.input], rng), {
          // Exact case: each row holds its window's in-bounds cells, 1/count each, and sums to 1.
          exact: (Jx) => {
            const J = Jx!.toDense();
            const nIn = geo.input[0] * geo.input[1] * geo.input[2];
            for (let r = 0; r < J.size / nIn; r++) {
              const row = Array.from(J.data.subarray(r * nIn, (r + 1) * nIn)).filter((v) => v !== 0);
              expect(row.every((v) => v === row[0]), `row ${r} has equal weights`).to.equal(true);
              expect(row[0] * row.length, `row ${r} sums to 1`).to.be.closeTo(1, 1e-15);
            }
          },
        });
      });
    }
  });

  it("exact case by hand: 'same' leaves the padded cells out of the count (TensorFlow's rule)", () => {
    const pool = new AveragePooling2D({ pool_size: 2, padding: 'same' }).build([3, 3, 1]);
    const { y } = pool.forward(tensor([1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 3, 3, 1]));
    // Windows: {1,2,4,5}, {3,6}, {7,8}, {9}: the pad after (TensorFlow: the larger half after) is not counted.
    expect(y).to.be.allclose([[[[3], [4.5]], [[7.5], [9]]]], { rtol: 0, atol: 0 });
    const J = jacobianWrtInput(pool, tensor([1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 3, 3, 1])).toDense();
    expect(J.get(0, 0, 1, 0, 0, 2, 0)).to.equal(0.5);
    expect(J.get(0, 1, 1, 0, 2, 2, 0)).to.equal(1);
  });

  // tfjs-core 4.22's avgPool gradient under 'same' divides every cell by the full window size, not
  // by the in-bounds count its own forward divides by, so it is not the derivative of its forward
  // (on a 3×3 input with 2×2 'same' pools it gives 0.5 where finite differences give 1). Ours is
  // checked against finite differences above; the peer's gradient is compared where padding is 'valid'.
  it("agrees with tfjs-core: avgPool always, its gradient with 'valid' padding, to float32 precision", () => {
    for (const geo of GEOMETRIES) {
      const rng = new Rng(32);
      const layer = new AveragePooling2D(geo.config).build(geo.input);
      const x = randomNormal([2, ...geo.input], rng);
      const { y, saved } = layer.forward(x);
      const dy = randomNormal(y.shape, rng);
      const pool = layer.poolSize;
      const f = (t: tf.Tensor) => tf.avgPool(t as tf.Tensor4D, pool, layer.strides, layer.padding);
      const tx = tf.tensor4d(Float32Array.from(contiguous(x).data), x.shape as [number, number, number, number]);
      const ty = f(tx);
      expect(ty.shape, geo.name).to.deep.equal(y.shape);
      expect(Array.from(contiguous(y).data), geo.name).to.be.allclose(Array.from(ty.dataSync()), { rtol: 1e-5, atol: 1e-6 });
      if (layer.padding === 'same') continue;
      const tdx = tf.grad(f)(tx, tf.tensor4d(Float32Array.from(contiguous(dy).data), ty.shape as [number, number, number, number]));
      expect(Array.from(contiguous(layer.vjp(saved, dy).dx).data), `${geo.name} dx`).to.be.allclose(Array.from(tdx.dataSync()), { rtol: 1e-5, atol: 1e-6 });
    }
  });

  it('loads from its Keras config, and a model with it trains both ways: the chains equal one tape, dense and sparse; the estimate equals the measurement', async () => {
    const rng = new Rng(33);
    const layer = layerFromConfig({ class_name: 'AveragePooling2D', config: { pool_size: [2, 2], strides: null, padding: 'same', data_format: 'channels_last', name: 'avg', trainable: true } });
    expect(layer.getConfig()).to.deep.equal({ pool_size: [2, 2], strides: [2, 2], padding: 'same' });
    const model = new Sequential([new Conv2D({ filters: 3, kernel_size: 2, activation: 'relu' }), layer, new Flatten(), new Dense({ units: 2, activation: 'softmax' })], { inputShape: [7, 7, 1], rng });
    const stages = model.split([2]);
    const x = randomUniform([3, 7, 7, 1], rng);
    const yTrue = tensor([1, 0, 0, 1, 1, 0], [3, 2]);
    const ref = referenceGradients(stages, x, yTrue, 'categorical_crossentropy');
    const runs = [jacobianChain(stages, x, yTrue, 'categorical_crossentropy'), jacobianChain(stages, x, yTrue, 'categorical_crossentropy', { jacobian: { format: 'sparse', mode: 'auto' } }), await vjpChain(stages, x, yTrue, 'categorical_crossentropy')];
    for (const r of runs) r.dLoss_dWeights.forEach((layerGrads, i) => layerGrads.forEach((g, k) => expect(g, `${r.method} layer ${i} param ${k}`).to.be.allclose(ref.dLoss_dWeights[i][k], { rtol: 1e-10, atol: 1e-12 })));
    expectSame(estimateMemory(stages, 3), measureMemory(stages, x));
  });
});

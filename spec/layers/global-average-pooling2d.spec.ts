import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { jacobianChain, referenceGradients, vjpChain } from '../../lib/chain.js';
import { ConfigError, ShapeError } from '../../lib/errors.js';
import { Conv2D } from '../../lib/layers/conv2d.js';
import { Dense } from '../../lib/layers/dense.js';
import { GlobalAveragePooling2D } from '../../lib/layers/global-average-pooling2d.js';
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
  { name: '5x2x3 keepdims to [1, 1, 3]', input: [5, 2, 3], keepdims: true },
  { name: '1x1x4 (a single cell: the identity)', input: [1, 1, 4], keepdims: false },
];

describe('GlobalAveragePooling2D', () => {
  describe('derivatives, four ways, and every structured engine', () => {
    for (const geo of GEOMETRIES) {
      it(geo.name, () => {
        const layer = new GlobalAveragePooling2D({ keepdims: geo.keepdims }).build(geo.input);
        checkDerivatives(layer, randomNormal([2, ...geo.input], new Rng(41)), {
          // Exact case: ∂y[b, c]/∂x[b, h, w, c'] = [c = c'] / (H·W), whatever the input.
          exact: (Jx) => {
            const J = contiguous(Jx!.toDense());
            const [H, W, C] = geo.input;
            let k = 0;
            for (let b = 0; b < 2; b++) for (let c = 0; c < C; c++) for (let h = 0; h < H; h++) for (let w = 0; w < W; w++) for (let c2 = 0; c2 < C; c2++) {
              expect(J.data[k++], `b${b} c${c} <- h${h} w${w} c${c2}`).to.equal(c === c2 ? 1 / (H * W) : 0);
            }
            expect(k).to.equal(J.size);
          },
        });
      });
    }
  });

  it('exact forward by hand: the mean of each channel, and keepdims keeps [1, 1, C]', () => {
    const x = tensor([1, 10, 2, 20, 3, 30, 6, 60], [1, 2, 2, 2]);
    expect(new GlobalAveragePooling2D().build([2, 2, 2]).forward(x).y).to.be.allclose([[3, 30]], { rtol: 0, atol: 0 });
    const keep = new GlobalAveragePooling2D({ keepdims: true }).build([2, 2, 2]);
    expect(keep.outputShape).to.deep.equal([1, 1, 2]);
    expect(keep.forward(x).y).to.be.allclose([[[[3, 30]]]], { rtol: 0, atol: 0 });
  });

  it('refuses a bad config or input, quoting what it received', () => {
    expect(() => new GlobalAveragePooling2D({ keepdims: 'yes' as unknown as boolean })).to.throw(ConfigError, /keepdims.*received "yes"/);
    expect(() => new GlobalAveragePooling2D({ data_format: 'channels_first' as unknown as 'channels_last' })).to.throw(ConfigError, /data_format.*received "channels_first"/);
    expect(() => new GlobalAveragePooling2D({ pool_size: 2 } as never)).to.throw(ConfigError, /unknown option "pool_size"/);
    expect(() => new GlobalAveragePooling2D().build([4, 3])).to.throw(ShapeError, /rank 3.*received \[4, 3\]/);
  });

  it('agrees with tfjs-core: mean over axes [1, 2] and its gradient, to float32 precision', () => {
    for (const geo of GEOMETRIES) {
      const rng = new Rng(42);
      const layer = new GlobalAveragePooling2D({ keepdims: geo.keepdims }).build(geo.input);
      const x = randomNormal([2, ...geo.input], rng);
      const f = (t: tf.Tensor) => tf.mean(t, [1, 2], geo.keepdims);
      expectLikeTfjs(layer, x, f, geo.name, rng);
    }
  });

  it('loads from its Keras config, and a model with it trains both ways: the chains equal one tape, dense and sparse; the estimate equals the measurement', async () => {
    const rng = new Rng(43);
    const layer = layerFromConfig({ class_name: 'GlobalAvgPool2D', config: { data_format: 'channels_last', keepdims: false, name: 'gap', trainable: true } });
    expect(layer.className).to.equal('GlobalAveragePooling2D');
    expect(layer.getConfig()).to.deep.equal({ data_format: 'channels_last', keepdims: false });
    const model = new Sequential([new Conv2D({ filters: 3, kernel_size: 2, activation: 'relu' }), layer, new Dense({ units: 2, activation: 'softmax' })], { inputShape: [5, 4, 2], rng });
    const stages = model.split([2]);
    const x = randomUniform([3, 5, 4, 2], rng);
    const yTrue = tensor([1, 0, 0, 1, 1, 0], [3, 2]);
    const ref = referenceGradients(stages, x, yTrue, 'categorical_crossentropy');
    const runs = [jacobianChain(stages, x, yTrue, 'categorical_crossentropy'), jacobianChain(stages, x, yTrue, 'categorical_crossentropy', { jacobian: { format: 'sparse', mode: 'auto' } }), await vjpChain(stages, x, yTrue, 'categorical_crossentropy')];
    for (const r of runs) r.dLoss_dWeights.forEach((layerGrads, i) => layerGrads.forEach((g, k) => expect(g, `${r.method} layer ${i} param ${k}`).to.be.allclose(ref.dLoss_dWeights[i][k], { rtol: 1e-10, atol: 1e-12 })));
    expectSame(estimateMemory(stages, 3), measureMemory(stages, x));
  });
});

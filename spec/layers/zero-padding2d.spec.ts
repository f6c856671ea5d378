import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { jacobianChain, referenceGradients, vjpChain } from '../../lib/chain.js';
import { ConfigError } from '../../lib/errors.js';
import { Conv2D } from '../../lib/layers/conv2d.js';
import { Dense } from '../../lib/layers/dense.js';
import { Flatten } from '../../lib/layers/flatten.js';
import { type Margins, ZeroPadding2D } from '../../lib/layers/zero-padding2d.js';
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

/** Geometries: every form of the option, an asymmetric frame, and none at all. */
const GEOMETRIES: { name: string; input: [number, number, number]; padding: Margins; sides: [number, number, number, number] }[] = [
  { name: '1 on 3x4x2', input: [3, 4, 2], padding: 1, sides: [1, 1, 1, 1] },
  { name: '[2, 0] on 2x3x1 (rows only)', input: [2, 3, 1], padding: [2, 0], sides: [2, 2, 0, 0] },
  { name: '[[2, 0], [1, 3]] on 3x2x2', input: [3, 2, 2], padding: [[2, 0], [1, 3]], sides: [2, 0, 1, 3] },
  { name: '0 on 2x2x3 (the identity)', input: [2, 2, 3], padding: 0, sides: [0, 0, 0, 0] },
];

describe('ZeroPadding2D', () => {
  describe('derivatives, four ways, and every structured engine', () => {
    for (const geo of GEOMETRIES) {
      it(geo.name, () => {
        const layer = new ZeroPadding2D({ padding: geo.padding }).build(geo.input);
        const [t, b, l, r] = geo.sides;
        const [H, W, C] = geo.input;
        expect(layer.outputShape).to.deep.equal([t + H + b, l + W + r, C]);
        checkDerivatives(layer, randomNormal([2, ...geo.input], new Rng(61)), {
          // Exact case: ∂y[oh, ow, c]/∂x[h, w, c'] = 1 iff oh = h + top, ow = w + left, c = c'.
          exact: (Jx) => {
            const J = contiguous(Jx!.toDense());
            const [Ho, Wo] = [t + H + b, l + W + r];
            let k = 0;
            for (let s = 0; s < 2; s++) for (let oh = 0; oh < Ho; oh++) for (let ow = 0; ow < Wo; ow++) for (let c = 0; c < C; c++) for (let h = 0; h < H; h++) for (let w = 0; w < W; w++) for (let c2 = 0; c2 < C; c2++) {
              expect(J.data[k++]).to.equal(oh === h + t && ow === w + l && c === c2 ? 1 : 0);
            }
            expect(k).to.equal(J.size);
          },
        });
      });
    }
  });

  it('exact forward by hand: a frame of zeros, top and left as given', () => {
    const pad = new ZeroPadding2D({ padding: [[1, 0], [0, 1]] }).build([1, 2, 1]);
    expect(pad.forward(tensor([5, 6], [1, 1, 2, 1])).y).to.be.allclose([[[[0], [0], [0]], [[5], [6], [0]]]], { rtol: 0, atol: 0 });
  });

  it('refuses negative, fractional or misshapen padding, quoting what it received', () => {
    expect(() => new ZeroPadding2D({ padding: -1 })).to.throw(ConfigError, /padding.*non-negative.*received -1/);
    expect(() => new ZeroPadding2D({ padding: [1, 1.5] })).to.throw(ConfigError, /received \[1, 1.5\]/);
    expect(() => new ZeroPadding2D({ padding: [[1, -2], [0, 0]] })).to.throw(ConfigError, /received \[\[1, -2\], \[0, 0\]\]/);
    expect(() => new ZeroPadding2D({ padding: [1, 2, 3] as unknown as Margins })).to.throw(ConfigError, /received \[1, 2, 3\]/);
    expect(() => new ZeroPadding2D({ padding: 'same' as unknown as Margins })).to.throw(ConfigError, /received "same"/);
    expect(() => new ZeroPadding2D({ padding: 1e300 })).to.throw(ConfigError, /received 1e\+300/);
  });

  it('agrees with tfjs-core: pad and its gradient, to float32 precision', () => {
    for (const geo of GEOMETRIES) {
      const rng = new Rng(62);
      const layer = new ZeroPadding2D({ padding: geo.padding }).build(geo.input);
      const x = randomNormal([2, ...geo.input], rng);
      const [t, b, l, r] = geo.sides;
      const f = (u: tf.Tensor) => tf.pad(u, [[0, 0], [t, b], [l, r], [0, 0]]);
      expectLikeTfjs(layer, x, f, geo.name, rng);
    }
  });

  it('loads from its Keras config, and a model with it trains both ways: the chains equal one tape, dense and sparse; the estimate equals the measurement', async () => {
    const rng = new Rng(63);
    const layer = layerFromConfig({ class_name: 'ZeroPadding2D', config: { padding: [[2, 0], [1, 1]], data_format: 'channels_last', name: 'pad', trainable: true } });
    expect(layer.getConfig()).to.deep.equal({ padding: [[2, 0], [1, 1]], data_format: 'channels_last' });
    const model = new Sequential([layer, new Conv2D({ filters: 2, kernel_size: 2, activation: 'tanh' }), new Flatten(), new Dense({ units: 2, activation: 'softmax' })], { inputShape: [4, 3, 2], rng });
    const stages = model.split([2]);
    const x = randomUniform([3, 4, 3, 2], rng);
    const yTrue = tensor([1, 0, 0, 1, 1, 0], [3, 2]);
    const ref = referenceGradients(stages, x, yTrue, 'categorical_crossentropy');
    const runs = [jacobianChain(stages, x, yTrue, 'categorical_crossentropy'), jacobianChain(stages, x, yTrue, 'categorical_crossentropy', { jacobian: { format: 'sparse', mode: 'auto' } }), await vjpChain(stages, x, yTrue, 'categorical_crossentropy')];
    for (const r of runs) r.dLoss_dWeights.forEach((layerGrads, i) => layerGrads.forEach((g, k) => expect(g, `${r.method} layer ${i} param ${k}`).to.be.allclose(ref.dLoss_dWeights[i][k], { rtol: 1e-10, atol: 1e-12 })));
    expectSame(estimateMemory(stages, 3), measureMemory(stages, x));
  });
});

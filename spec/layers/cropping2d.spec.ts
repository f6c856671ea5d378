import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { jacobianChain, referenceGradients, vjpChain } from '../../lib/chain.js';
import { ConfigError, ShapeError } from '../../lib/errors.js';
import { Conv2D } from '../../lib/layers/conv2d.js';
import { Cropping2D } from '../../lib/layers/cropping2d.js';
import { Dense } from '../../lib/layers/dense.js';
import { Flatten } from '../../lib/layers/flatten.js';
import type { Margins } from '../../lib/layers/zero-padding2d.js';
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

/** Geometries: every form of the option, an asymmetric crop, one that leaves a single cell, and none. */
const GEOMETRIES: { name: string; input: [number, number, number]; cropping: Margins; sides: [number, number, number, number] }[] = [
  { name: '1 on 4x5x2', input: [4, 5, 2], cropping: 1, sides: [1, 1, 1, 1] },
  { name: '[0, 2] on 3x5x1 (columns only)', input: [3, 5, 1], cropping: [0, 2], sides: [0, 0, 2, 2] },
  { name: '[[2, 0], [1, 3]] on 4x6x2', input: [4, 6, 2], cropping: [[2, 0], [1, 3]], sides: [2, 0, 1, 3] },
  { name: '[[1, 1], [0, 2]] on 3x3x2 (a single cell left)', input: [3, 3, 2], cropping: [[1, 1], [0, 2]], sides: [1, 1, 0, 2] },
  { name: '0 on 2x2x3 (the identity)', input: [2, 2, 3], cropping: 0, sides: [0, 0, 0, 0] },
];

describe('Cropping2D', () => {
  describe('derivatives, four ways, and every structured engine', () => {
    for (const geo of GEOMETRIES) {
      it(geo.name, () => {
        const layer = new Cropping2D({ cropping: geo.cropping }).build(geo.input);
        const [t, b, l, r] = geo.sides;
        const [H, W, C] = geo.input;
        const [Ho, Wo] = [H - t - b, W - l - r];
        expect(layer.outputShape).to.deep.equal([Ho, Wo, C]);
        checkDerivatives(layer, randomNormal([2, ...geo.input], new Rng(71)), {
          // Exact case: ∂y[oh, ow, c]/∂x[h, w, c'] = 1 iff h = oh + top, w = ow + left, c = c'.
          exact: (Jx) => {
            const J = contiguous(Jx!.toDense());
            let k = 0;
            for (let s = 0; s < 2; s++) for (let oh = 0; oh < Ho; oh++) for (let ow = 0; ow < Wo; ow++) for (let c = 0; c < C; c++) for (let h = 0; h < H; h++) for (let w = 0; w < W; w++) for (let c2 = 0; c2 < C; c2++) {
              expect(J.data[k++]).to.equal(h === oh + t && w === ow + l && c === c2 ? 1 : 0);
            }
            expect(k).to.equal(J.size);
          },
        });
      });
    }
  });

  it('exact forward by hand: the kept cells, top and left as given', () => {
    const crop = new Cropping2D({ cropping: [[1, 0], [0, 1]] }).build([2, 3, 1]);
    expect(crop.forward(tensor([1, 2, 3, 4, 5, 6], [1, 2, 3, 1])).y).to.be.allclose([[[[4], [5]]]], { rtol: 0, atol: 0 });
  });

  it('refuses negative, misshapen or too-large cropping, quoting what it received', () => {
    expect(() => new Cropping2D({ cropping: -1 })).to.throw(ConfigError, /cropping.*non-negative.*received -1/);
    expect(() => new Cropping2D({ cropping: [[0, 1], [2, -1]] })).to.throw(ConfigError, /received \[\[0, 1\], \[2, -1\]\]/);
    expect(() => new Cropping2D({ cropping: [1] as unknown as Margins })).to.throw(ConfigError, /received \[1\]/);
    expect(() => new Cropping2D({ cropping: [[2, 1], [0, 0]] }).build([3, 4, 1])).to.throw(ShapeError, /leave at least one row.*\[3, 4\].*received cropping \[\[2, 1\], \[0, 0\]\] \(3 rows and 0 columns cut\)/);
    expect(() => new Cropping2D({ cropping: [0, 2] }).build([3, 4, 1])).to.throw(ShapeError, /\(0 rows and 4 columns cut\)/);
  });

  it('agrees with tfjs-core: slice and its gradient, to float32 precision', () => {
    for (const geo of GEOMETRIES) {
      const rng = new Rng(72);
      const layer = new Cropping2D({ cropping: geo.cropping }).build(geo.input);
      const x = randomNormal([2, ...geo.input], rng);
      const [t, b, l, r] = geo.sides;
      const [H, W, C] = geo.input;
      const f = (u: tf.Tensor) => tf.slice(u, [0, t, l, 0], [2, H - t - b, W - l - r, C]);
      expectLikeTfjs(layer, x, f, geo.name, rng);
    }
  });

  it('loads from its Keras config, and a model with it trains both ways: the chains equal one tape, dense and sparse; the estimate equals the measurement', async () => {
    const rng = new Rng(73);
    const layer = layerFromConfig({ class_name: 'Cropping2D', config: { cropping: [1, 0], data_format: 'channels_last', name: 'crop' } });
    expect(layer.getConfig()).to.deep.equal({ cropping: [[1, 1], [0, 0]], data_format: 'channels_last' });
    const model = new Sequential([new Conv2D({ filters: 2, kernel_size: 2, activation: 'relu' }), layer, new Flatten(), new Dense({ units: 2, activation: 'softmax' })], { inputShape: [6, 4, 1], rng });
    const stages = model.split([2]);
    const x = randomUniform([3, 6, 4, 1], rng);
    const yTrue = tensor([1, 0, 0, 1, 1, 0], [3, 2]);
    const ref = referenceGradients(stages, x, yTrue, 'categorical_crossentropy');
    const runs = [jacobianChain(stages, x, yTrue, 'categorical_crossentropy'), jacobianChain(stages, x, yTrue, 'categorical_crossentropy', { jacobian: { format: 'sparse', mode: 'auto' } }), await vjpChain(stages, x, yTrue, 'categorical_crossentropy')];
    for (const r of runs) r.dLoss_dWeights.forEach((layerGrads, i) => layerGrads.forEach((g, k) => expect(g, `${r.method} layer ${i} param ${k}`).to.be.allclose(ref.dLoss_dWeights[i][k], { rtol: 1e-10, atol: 1e-12 })));
    expectSame(estimateMemory(stages, 3), measureMemory(stages, x));
  });
});

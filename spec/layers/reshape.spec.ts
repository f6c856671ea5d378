import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { jacobianChain, referenceGradients, vjpChain } from '../../lib/chain.js';
import { ConfigError, ShapeError } from '../../lib/errors.js';
import { Conv2D } from '../../lib/layers/conv2d.js';
import { Dense } from '../../lib/layers/dense.js';
import { Flatten } from '../../lib/layers/flatten.js';
import { MaxPooling2D } from '../../lib/layers/max-pooling2d.js';
import { Reshape } from '../../lib/layers/reshape.js';
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

const GEOMETRIES: { name: string; input: number[]; target: number[]; out: number[] }[] = [
  { name: '[2, 3, 2] to [3, 4]', input: [2, 3, 2], target: [3, 4], out: [3, 4] },
  { name: '[2, 3, 2] to [-1, 2] (inferred)', input: [2, 3, 2], target: [-1, 2], out: [6, 2] },
  { name: '[12] to [2, 1, -1] (a rank-1 input)', input: [12], target: [2, 1, -1], out: [2, 1, 6] },
  { name: '[4, 1, 3] to [-1] (as Flatten)', input: [4, 1, 3], target: [-1], out: [12] },
];

describe('Reshape', () => {
  describe('derivatives, four ways, and every structured engine', () => {
    for (const geo of GEOMETRIES) {
      it(geo.name, () => {
        const layer = new Reshape({ target_shape: geo.target }).build(geo.input);
        expect(layer.outputShape).to.deep.equal(geo.out);
        checkDerivatives(layer, randomNormal([2, ...geo.input], new Rng(81)), {
          // Exact case: per sample the identity on the row-major order, zero across samples.
          exact: (Jx) => {
            const J = contiguous(Jx!.toDense());
            const n = geo.input.reduce((a, d) => a * d, 1);
            let k = 0;
            for (let b = 0; b < 2; b++) for (let o = 0; o < n; o++) for (let i = 0; i < n; i++) expect(J.data[k++]).to.equal(o === i ? 1 : 0);
            expect(k).to.equal(J.size);
          },
        });
      });
    }
  });

  it('exact forward by hand: row-major, y[b, i, j] = x[b, flat index i·4 + j]', () => {
    const layer = new Reshape({ target_shape: [2, 2] }).build([4]);
    expect(layer.forward(tensor([1, 2, 3, 4, 5, 6, 7, 8], [2, 4])).y).to.be.allclose([[[1, 2], [3, 4]], [[5, 6], [7, 8]]], { rtol: 0, atol: 0 });
  });

  it('forward, jvp and vjp are views sharing the buffer, as the residuals say', () => {
    const layer = new Reshape({ target_shape: [3, -1] }).build([2, 3]);
    expect(layer.residuals()).to.deep.equal({ saves: [], outputIsView: true, jvpIsView: true, vjpIsView: true });
    const x = randomNormal([2, 2, 3], new Rng(82));
    const { y, saved } = layer.forward(x);
    expect(y.shape).to.deep.equal([2, 3, 2]);
    expect(y.data).to.equal(x.data);
    const dx = randomNormal([2, 2, 3, 5], new Rng(83));
    const dy = layer.jvp(saved, { xDot: dx, paramDots: null, T: 5 });
    expect(dy.shape).to.deep.equal([2, 3, 2, 5]);
    expect(dy.data).to.equal(dx.data);
    const ct = randomNormal([2, 3, 2], new Rng(84));
    const back = layer.vjp(saved, ct);
    expect(back.dx.shape).to.deep.equal([2, 2, 3]);
    expect(back.dx.data).to.equal(ct.data);
  });

  it('refuses a target whose size does not match, or a malformed one, quoting what it received', () => {
    expect(() => new Reshape({ target_shape: [5, 2] }).build([3, 4])).to.throw(ShapeError, /target_shape \[5, 2\] to hold the 12 values of an input \[3, 4\], received a target of 10 values/);
    expect(() => new Reshape({ target_shape: [5, -1] }).build([3, 4])).to.throw(ShapeError, /target_shape \[5, -1\] to hold the 12 values.*5 values, which does not divide 12/);
    expect(() => new Reshape({ target_shape: [-1, -1] })).to.throw(ConfigError, /at most one -1, received \[-1, -1\]/);
    expect(() => new Reshape({ target_shape: [0, 3] })).to.throw(ConfigError, /received \[0, 3\]/);
    expect(() => new Reshape({ target_shape: [2.5] })).to.throw(ConfigError, /received \[2.5\]/);
    expect(() => new Reshape({} as never)).to.throw(ConfigError, /target_shape.*received undefined/);
  });

  it('agrees with tfjs-core: reshape and its gradient', () => {
    for (const geo of GEOMETRIES) {
      const rng = new Rng(85);
      const layer = new Reshape({ target_shape: geo.target }).build(geo.input);
      const x = randomNormal([2, ...geo.input], rng);
      const f = (u: tf.Tensor) => tf.reshape(u, [2, ...geo.target]);
      expectLikeTfjs(layer, x, f, geo.name, rng, { rtol: 1e-6, atol: 1e-7 });
    }
  });

  it('loads from its Keras config, and a model with it trains both ways: the chains equal one tape, dense and sparse; the estimate equals the measurement', async () => {
    const rng = new Rng(86);
    const layer = layerFromConfig({ class_name: 'Reshape', config: { target_shape: [6, -1, 1], name: 'reshape', trainable: true } });
    expect(layer.getConfig()).to.deep.equal({ target_shape: [6, -1, 1] });
    // Dense [12] → Reshape [6, 2, 1] → a convolution and a pooling on the reshaped image.
    const model = new Sequential([new Dense({ units: 12, activation: 'tanh' }), layer, new Conv2D({ filters: 2, kernel_size: [2, 1], activation: 'relu' }), new MaxPooling2D({ pool_size: [2, 1] }), new Flatten(), new Dense({ units: 2, activation: 'softmax' })], { inputShape: [3], rng });
    const stages = model.split([3]);
    const x = randomUniform([3, 3], rng, -1, 1);
    const yTrue = tensor([1, 0, 0, 1, 1, 0], [3, 2]);
    const ref = referenceGradients(stages, x, yTrue, 'categorical_crossentropy');
    const runs = [jacobianChain(stages, x, yTrue, 'categorical_crossentropy'), jacobianChain(stages, x, yTrue, 'categorical_crossentropy', { jacobian: { format: 'sparse', mode: 'auto' } }), await vjpChain(stages, x, yTrue, 'categorical_crossentropy')];
    for (const r of runs) r.dLoss_dWeights.forEach((layerGrads, i) => layerGrads.forEach((g, k) => expect(g, `${r.method} layer ${i} param ${k}`).to.be.allclose(ref.dLoss_dWeights[i][k], { rtol: 1e-10, atol: 1e-12 })));
    expectSame(estimateMemory(stages, 3), measureMemory(stages, x));
  });
});

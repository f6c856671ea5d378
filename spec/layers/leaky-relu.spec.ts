import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { jacobianChain, referenceGradients, vjpChain } from '../../lib/chain.js';
import { ConfigError } from '../../lib/errors.js';
import { jacobianWrtInput } from '../../lib/jacobian.js';
import { Dense } from '../../lib/layers/dense.js';
import { LeakyReLU } from '../../lib/layers/leaky-relu.js';
import { layerFromConfig } from '../../lib/model-io.js';
import { estimateMemory, measureMemory } from '../../lib/memory-report.js';
import { Rng } from '../../lib/rng.js';
import { Sequential } from '../../lib/sequential.js';
import { contiguous, randomNormal, randomUniform, tensor } from '../../lib/tensor.js';
import { checkDerivatives } from '../helpers/check-derivatives.js';
import { expectSame } from '../helpers/memory.js';
import { expect } from '../helpers/setup.js';

createRequire(import.meta.url)('@tensorflow/tfjs-core/dist/register_all_gradients.js');

const CASES: { name: string; input: number[]; slope: number | undefined }[] = [
  { name: 'default slope 0.3 on [3, 4]', input: [3, 4], slope: undefined },
  { name: 'slope 0.1 on [2, 2, 3]', input: [2, 2, 3], slope: 0.1 },
  { name: 'slope 0 (a plain ReLU) on [5]', input: [5], slope: 0 },
  { name: 'slope 1.5 on [1, 3]', input: [1, 3], slope: 1.5 },
];

describe('LeakyReLU', () => {
  describe('derivatives, four ways, and every structured engine', () => {
    for (const c of CASES) {
      it(c.name, () => {
        const layer = new LeakyReLU(c.slope === undefined ? {} : { negative_slope: c.slope }).build(c.input);
        const x = randomNormal([2, ...c.input], new Rng(101));
        const a = c.slope ?? 0.3;
        checkDerivatives(layer, x, {
          // Exact case: diagonal, 1 where x > 0, the slope where x < 0.
          exact: (Jx) => {
            const J = contiguous(Jx!.toDense());
            const n = x.size / 2;
            for (let b = 0; b < 2; b++) for (let o = 0; o < n; o++) for (let i = 0; i < n; i++) {
              const v = x.data[b * n + o];
              expect(J.data[(b * n + o) * n + i], `sample ${b} row ${o} col ${i} (x = ${v})`).to.equal(o !== i ? 0 : v > 0 ? 1 : a);
            }
          },
        });
      });
    }
  });

  it('exact case by hand: slope 0.3 by default, f(0) = 0 with slope 0.3 there (TensorFlow\'s LeakyReluGrad), NaN propagates', () => {
    const layer = new LeakyReLU().build([4]);
    const { y, saved } = layer.forward(tensor([-2, 0, 3, NaN], [1, 4]));
    expect(Array.from(y.data).slice(0, 3)).to.be.allclose([-0.6, 0, 3], { rtol: 1e-15, atol: 0 });
    expect(Number.isNaN(y.data[3])).to.equal(true);
    expect(Array.from(layer.vjp(saved, tensor([1, 1, 1, 1], [1, 4])).dx.data).slice(0, 3)).to.deep.equal([0.3, 0.3, 1]);
    const J = jacobianWrtInput(new LeakyReLU().build([3]), tensor([-2, 0, 3], [1, 3])).toDense();
    expect([J.get(0, 0, 0), J.get(0, 1, 1), J.get(0, 2, 2), J.get(0, 0, 1)]).to.deep.equal([0.3, 0.3, 1, 0]);
  });

  it("takes Keras 2's alpha as negative_slope; refuses both at once, or a negative slope, quoting what it received", () => {
    expect(new LeakyReLU({ alpha: 0.05 }).negativeSlope).to.equal(0.05);
    expect(layerFromConfig({ class_name: 'LeakyReLU', config: { alpha: 0.2, name: 'leaky' } }).getConfig()).to.deep.equal({ negative_slope: 0.2 });
    expect(() => new LeakyReLU({ negative_slope: 0.1, alpha: 0.2 })).to.throw(ConfigError, /one of negative_slope or alpha.*received both: negative_slope 0.1, alpha 0.2/);
    expect(() => new LeakyReLU({ negative_slope: -0.1 })).to.throw(ConfigError, /negative_slope to be a non-negative number, received -0.1/);
    expect(() => new LeakyReLU({ alpha: 'big' as unknown as number })).to.throw(ConfigError, /alpha to be a non-negative number, received "big"/);
    expect(() => new LeakyReLU({ threshold: 1 } as never)).to.throw(ConfigError, /unknown option "threshold"/);
  });

  it('agrees with tfjs-core leakyRelu and its gradient, the kink at 0 and a NaN included, to float32 precision', () => {
    const rng = new Rng(102);
    for (const a of [0.3, 0.1, 0]) {
      const layer = new LeakyReLU({ negative_slope: a }).build([3, 4]);
      const x = randomNormal([2, 3, 4], rng);
      x.data[0] = 0;
      x.data[1] = NaN;
      const { y, saved } = layer.forward(x);
      const dy = randomNormal(y.shape, rng);
      const f = (u: tf.Tensor) => tf.leakyRelu(u, a);
      const tx = tf.tensor(Float32Array.from(x.data), x.shape);
      const ty = f(tx).dataSync();
      expect(Number.isNaN(ty[1]), `slope ${a}: tfjs NaN`).to.equal(true);
      expect(Array.from(y.data).filter((_, i) => i !== 1), `slope ${a}`).to.be.allclose(Array.from(ty).filter((_, i) => i !== 1), { rtol: 1e-5, atol: 1e-6 });
      const tdx = tf.grad(f)(tx, tf.tensor(Float32Array.from(dy.data), y.shape)).dataSync();
      expect(Array.from(layer.vjp(saved, dy).dx.data), `slope ${a} dx`).to.be.allclose(Array.from(tdx), { rtol: 1e-5, atol: 1e-6 });
    }
  });

  it('loads from its Keras config, and a model with it trains both ways: the chains equal one tape, dense and sparse; the estimate equals the measurement', async () => {
    const rng = new Rng(103);
    const layer = layerFromConfig({ class_name: 'LeakyReLU', config: { negative_slope: 0.1, name: 'leaky_re_lu', trainable: true } });
    const model = new Sequential([new Dense({ units: 5 }), layer, new Dense({ units: 2, activation: 'softmax' })], { inputShape: [3], rng });
    const stages = model.split([2]);
    const x = randomUniform([4, 3], rng, -2, 2);
    const yTrue = tensor([1, 0, 0, 1, 1, 0, 0, 1], [4, 2]);
    const ref = referenceGradients(stages, x, yTrue, 'categorical_crossentropy');
    const runs = [jacobianChain(stages, x, yTrue, 'categorical_crossentropy'), jacobianChain(stages, x, yTrue, 'categorical_crossentropy', { jacobian: { format: 'sparse', mode: 'auto' } }), await vjpChain(stages, x, yTrue, 'categorical_crossentropy')];
    for (const r of runs) r.dLoss_dWeights.forEach((layerGrads, i) => layerGrads.forEach((g, k) => expect(g, `${r.method} layer ${i} param ${k}`).to.be.allclose(ref.dLoss_dWeights[i][k], { rtol: 1e-10, atol: 1e-12 })));
    expectSame(estimateMemory(stages, 4), measureMemory(stages, x));
  });
});

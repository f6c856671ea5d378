import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { jacobianChain, referenceGradients, vjpChain } from '../../lib/chain.js';
import { ConfigError } from '../../lib/errors.js';
import { jacobianWrtInput } from '../../lib/jacobian.js';
import { Dense } from '../../lib/layers/dense.js';
import { ReLU, type ReLUConfig } from '../../lib/layers/relu.js';
import { layerFromConfig } from '../../lib/model-io.js';
import { estimateMemory, measureMemory } from '../../lib/memory-report.js';
import { Rng } from '../../lib/rng.js';
import { Sequential } from '../../lib/sequential.js';
import { contiguous, randomNormal, randomUniform, tensor } from '../../lib/tensor.js';
import { checkDerivatives } from '../helpers/check-derivatives.js';
import { expectSame } from '../helpers/memory.js';
import { expect } from '../helpers/setup.js';

createRequire(import.meta.url)('@tensorflow/tfjs-core/dist/register_all_gradients.js');

/** Configurations on inputs of N(0, 3²): each region of every one is hit, its kinks (almost surely) not. */
const CASES: { name: string; input: number[]; config: ReLUConfig }[] = [
  { name: 'defaults on [3, 4]', input: [3, 4], config: {} },
  { name: 'max_value 6 on [2, 3, 2]', input: [2, 3, 2], config: { max_value: 6 } },
  { name: 'max_value 2, negative_slope 0.1, threshold 0.5 on [7]', input: [7], config: { max_value: 2, negative_slope: 0.1, threshold: 0.5 } },
  { name: 'negative_slope 0.2, max_value null on [2, 2, 1]', input: [2, 2, 1], config: { negative_slope: 0.2, max_value: null } },
];

describe('ReLU', () => {
  describe('derivatives, four ways, and every structured engine', () => {
    for (const c of CASES) {
      it(c.name, () => {
        const layer = new ReLU(c.config).build(c.input);
        const x = randomNormal([2, ...c.input], new Rng(91));
        x.data.forEach((v, i) => (x.data[i] = 3 * v));
        const m = c.config.max_value ?? Infinity;
        const a = c.config.negative_slope ?? 0;
        const t = c.config.threshold ?? 0;
        checkDerivatives(layer, x, {
          // Exact case: diagonal, 0 above max_value, 1 between threshold and max_value, negative_slope below.
          exact: (Jx) => {
            const J = contiguous(Jx!.toDense());
            const n = x.size / 2;
            for (let b = 0; b < 2; b++) for (let o = 0; o < n; o++) for (let i = 0; i < n; i++) {
              const v = x.data[b * n + o];
              expect(v !== t && v !== m, 'no draw on a kink').to.equal(true);
              const want = o !== i ? 0 : v > m ? 0 : v > t ? 1 : a;
              expect(J.data[(b * n + o) * n + i], `sample ${b} row ${o} col ${i} (x = ${v})`).to.equal(want);
            }
          },
        });
      });
    }
  });

  it("exact case by hand, kinks included: Keras 3's formula, TensorFlow's slopes at the kinks, NaN propagates", () => {
    const layer = new ReLU({ max_value: 6, negative_slope: 0.1, threshold: 1 }).build([8]);
    const x = tensor([-1, 0, 0.5, 1, 3, 6, 8, NaN], [1, 8]);
    const { y, saved } = layer.forward(x);
    // f: 0.1·(x − 1) below 1; x on [1, 6); 6 from 6 up.
    const want = [-0.2, -0.1, -0.05, 1, 3, 6, 6];
    want.forEach((v, i) => expect(y.data[i], `f(${x.data[i]})`).to.be.closeTo(v, 1e-16));
    expect(Number.isNaN(y.data[7])).to.equal(true);
    // f': the slope below the threshold and at it (LeakyReluGrad), 1 strictly inside, 0 at max_value and above (Relu6Grad).
    const slopes = [0.1, 0.1, 0.1, 0.1, 1, 0, 0, 0.1];
    expect(Array.from(layer.vjp(saved, tensor(new Array(8).fill(1), [1, 8])).dx.data)).to.deep.equal(slopes);
    // The Jacobian builders refuse non-finite inputs, so the Jacobian is taken without the NaN.
    const J = jacobianWrtInput(new ReLU({ max_value: 6, negative_slope: 0.1, threshold: 1 }).build([7]), tensor(Array.from(x.data).slice(0, 7), [1, 7])).toDense();
    slopes.slice(0, 7).forEach((s, i) => expect(J.get(0, i, i), `J[${i}, ${i}]`).to.equal(s));
  });

  it('refuses a bad option, quoting what it received', () => {
    expect(() => new ReLU({ max_value: -1 })).to.throw(ConfigError, /max_value.*non-negative.*received -1/);
    expect(() => new ReLU({ negative_slope: -0.1 })).to.throw(ConfigError, /negative_slope.*received -0.1/);
    expect(() => new ReLU({ threshold: '1' as unknown as number })).to.throw(ConfigError, /threshold.*received "1"/);
    expect(() => new ReLU({ threshold: NaN })).to.throw(ConfigError, /threshold.*received NaN/);
    expect(() => new ReLU({ alpha: 0.1 } as never)).to.throw(ConfigError, /unknown option "alpha"/);
  });

  // tfjs' relu6 gradient is `0 < x ≤ 6` (1 at x = 6), TensorFlow's Relu6Grad is `0 < x < 6` (0 at
  // x = 6); this layer follows TensorFlow, so the two differ there and only there.
  it('agrees with tfjs-core relu, relu6 and leakyRelu and their gradients, kinks included but at 6, to float32 precision', () => {
    const peers: { config: ReLUConfig; f: (u: tf.Tensor) => tf.Tensor }[] = [
      { config: {}, f: (u) => tf.relu(u) },
      { config: { max_value: 6 }, f: (u) => tf.relu6(u) },
      { config: { negative_slope: 0.2 }, f: (u) => tf.leakyRelu(u, 0.2) },
    ];
    const rng = new Rng(92);
    for (const { config, f } of peers) {
      const layer = new ReLU(config).build([4, 5]);
      const x = randomNormal([2, 4, 5], rng);
      x.data.forEach((v, i) => (x.data[i] = 4 * v));
      x.data[0] = 0;
      x.data[1] = NaN;
      const { y, saved } = layer.forward(x);
      const dy = randomNormal(y.shape, rng);
      const tx = tf.tensor(Float32Array.from(x.data), x.shape);
      const ty = f(tx).dataSync();
      expect(Number.isNaN(y.data[1]) && Number.isNaN(ty[1]), `${JSON.stringify(config)} NaN`).to.equal(true);
      expect(Array.from(y.data).filter((_, i) => i !== 1), JSON.stringify(config)).to.be.allclose(Array.from(ty).filter((_, i) => i !== 1), { rtol: 1e-5, atol: 1e-6 });
      const tdx = tf.grad(f)(tx, tf.tensor(Float32Array.from(dy.data), y.shape)).dataSync();
      // At the NaN, tfjs' step-based gradients give NaN; this layer gives its negative slope (TensorFlow's ReluGrad: 0).
      expect(Array.from(layer.vjp(saved, dy).dx.data).filter((_, i) => i !== 1), `${JSON.stringify(config)} dx`).to.be.allclose(Array.from(tdx).filter((_, i) => i !== 1), { rtol: 1e-5, atol: 1e-6 });
    }
    const six = new ReLU({ max_value: 6 }).build([1]);
    const { saved } = six.forward(tensor([6], [1, 1]));
    expect(six.vjp(saved, tensor([1], [1, 1])).dx.data[0]).to.equal(0);
    expect(tf.grad((u: tf.Tensor) => tf.relu6(u))(tf.tensor([6])).dataSync()[0]).to.equal(1);
  });

  it('loads from its Keras config, and a model with it trains both ways: the chains equal one tape, dense and sparse; the estimate equals the measurement', async () => {
    const rng = new Rng(93);
    const layer = layerFromConfig({ class_name: 'ReLU', config: { max_value: 1, negative_slope: 0.1, threshold: 0.2, name: 're_lu', trainable: true } });
    expect(layer.getConfig()).to.deep.equal({ max_value: 1, negative_slope: 0.1, threshold: 0.2 });
    expect(new ReLU().getConfig()).to.deep.equal({ max_value: null, negative_slope: 0, threshold: 0 });
    const model = new Sequential([new Dense({ units: 6 }), layer, new Dense({ units: 2, activation: 'softmax' })], { inputShape: [3], rng });
    const stages = model.split([2]);
    const x = randomUniform([4, 3], rng, -2, 2);
    const yTrue = tensor([1, 0, 0, 1, 1, 0, 0, 1], [4, 2]);
    const ref = referenceGradients(stages, x, yTrue, 'categorical_crossentropy');
    const runs = [jacobianChain(stages, x, yTrue, 'categorical_crossentropy'), jacobianChain(stages, x, yTrue, 'categorical_crossentropy', { jacobian: { format: 'sparse', mode: 'auto' } }), await vjpChain(stages, x, yTrue, 'categorical_crossentropy')];
    for (const r of runs) r.dLoss_dWeights.forEach((layerGrads, i) => layerGrads.forEach((g, k) => expect(g, `${r.method} layer ${i} param ${k}`).to.be.allclose(ref.dLoss_dWeights[i][k], { rtol: 1e-10, atol: 1e-12 })));
    expectSame(estimateMemory(stages, 4), measureMemory(stages, x));
  });
});

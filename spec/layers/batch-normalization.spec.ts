import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { type ChainResult, jacobianChain, referenceGradients, vjpChain } from '../../lib/chain.js';
import { fullJacobianWrtInput, jacobianWrtInput, jacobianWrtWeights } from '../../lib/jacobian.js';
import { activationName } from '../../lib/activations.js';
import { BatchNormalization } from '../../lib/layers/batch-normalization.js';
import { Conv2D } from '../../lib/layers/conv2d.js';
import { Dense } from '../../lib/layers/dense.js';
import { Flatten } from '../../lib/layers/flatten.js';
import { trainableParams } from '../../lib/layers/layer.js';
import { knownLayers } from '../../lib/layers/registry.js';
import { lossByName } from '../../lib/losses.js';
import { estimateMemory, measureMemory } from '../../lib/memory-report.js';
import { layerFromConfig } from '../../lib/model-io.js';
import { Adam, SGD } from '../../lib/optimizers.js';
import { Rng } from '../../lib/rng.js';
import { Sequential } from '../../lib/sequential.js';
import { GradientTape } from '../../lib/tape.js';
import { stepGradients } from '../../lib/train.js';
import { type Tensor, contiguous, fromJSON, randomNormal, randomUniform, tensor } from '../../lib/tensor.js';
import { checkDerivatives } from '../helpers/check-derivatives.js';
import { loadFixture } from '../helpers/fixtures.js';
import { expectSame } from '../helpers/memory.js';
import { expect } from '../helpers/setup.js';

createRequire(import.meta.url)('@tensorflow/tfjs-core/dist/register_all_gradients.js');

/** A built layer with random gamma, beta and moving statistics (variance positive), so that no case is the identity. */
function randomBn(input: number[], rng: Rng, config: Record<string, unknown> = {}): BatchNormalization {
  const bn = new BatchNormalization(config).build(input);
  for (const p of bn.params) {
    p.value = p.name === 'moving_variance' ? randomUniform(p.value.shape, rng, 0.3, 2) : randomNormal(p.value.shape, rng);
  }
  return bn;
}

const data = (t: Tensor): number[] => {
  const c = contiguous(t);
  return Array.from(c.data.subarray(c.offset, c.offset + c.size));
};
const valueOf = (l: BatchNormalization, name: string): number[] => data(l.params.find((p) => p.name === name)!.value);

const GEOMETRIES: { name: string; input: number[]; config?: Record<string, unknown> }[] = [
  { name: 'NHWC [5, 4, 3]', input: [5, 4, 3] },
  { name: 'rank 1 [6] (after a Dense)', input: [6] },
  { name: '[3, 2] without center and scale', input: [3, 2], config: { center: false, scale: false } },
  { name: '[4, 3, 2] with center only, momentum 0.5, epsilon 0.1', input: [4, 3, 2], config: { scale: false, momentum: 0.5, epsilon: 0.1 } },
];

describe('BatchNormalization', () => {
  describe('derivatives at inference (samples independent), four ways and every structured engine', () => {
    for (const geo of GEOMETRIES) {
      it(geo.name, () => {
        const rng = new Rng(41);
        const bn = randomBn(geo.input, rng, geo.config);
        const x = randomNormal([3, ...geo.input], rng);
        checkDerivatives(bn, x, {
          // Exact case: ∂y/∂x = diag(gamma / sqrt(moving_variance + eps)), per channel, zero off the diagonal.
          exact: (Jx) => {
            const J = Jx!.toDense();
            const n = geo.input.reduce((a, b) => a * b, 1);
            const C = geo.input[geo.input.length - 1];
            const gamma = bn.scale ? valueOf(bn, 'gamma') : new Array<number>(C).fill(1);
            const mv = valueOf(bn, 'moving_variance');
            for (let b = 0; b < 3; b++) {
              for (let o = 0; o < n; o++) {
                for (let i = 0; i < n; i++) {
                  const want = o === i ? gamma[o % C] / Math.sqrt(mv[o % C] + bn.epsilon) : 0;
                  expect(J.data[(b * n + o) * n + i], `J[${b}, ${o}, ${i}]`).to.be.closeTo(want, 1e-14);
                }
              }
            }
          },
        });
      });
    }
  });

  describe('derivatives in training (samples coupled): finite differences, adjoint, full Jacobian against stacked VJPs; the batch Jacobian refused', () => {
    for (const geo of GEOMETRIES) {
      it(geo.name, () => {
        const rng = new Rng(42);
        const bn = randomBn(geo.input, rng, geo.config);
        const x = randomNormal([3, ...geo.input], rng);
        const before = bn.params.map((p) => p.value);
        const { Jw } = checkDerivatives(bn, x, { forwardOptions: () => ({ training: true }), fdRtol: 1e-6 });
        expect(Jw.length, 'Jacobians only w.r.t. gamma and beta').to.equal((bn.scale ? 1 : 0) + (bn.center ? 1 : 0));
        // Every forward pass above (finite differences, the builders) left the moving statistics alone.
        bn.params.forEach((p, k) => expect(p.value, `${p.name} untouched by forward`).to.equal(before[k]));
      });
    }

    it('exact case: the full Jacobian of one channel is gamma·s·(I − 1/N − xhat xhatᵀ/N), and it sums to zero over the inputs', () => {
      const rng = new Rng(43);
      const bn = randomBn([1], rng, { epsilon: 1e-3 });
      const xs = [0.3, -1.2, 2.0, 0.7];
      const x = tensor(xs, [4, 1]);
      const J = fullJacobianWrtInput(bn, x, { training: true }).toDense();
      expect(J.shape).to.deep.equal([4, 1, 4, 1]);
      const N = 4;
      const mean = xs.reduce((a, b) => a + b, 0) / N;
      const variance = xs.reduce((a, b) => a + (b - mean) ** 2, 0) / N;
      const s = 1 / Math.sqrt(variance + 1e-3);
      const xhat = xs.map((v) => (v - mean) * s);
      const gamma = valueOf(bn, 'gamma')[0];
      for (let o = 0; o < N; o++) {
        let row = 0;
        for (let i = 0; i < N; i++) {
          const want = gamma * s * ((o === i ? 1 : 0) - 1 / N - (xhat[o] * xhat[i]) / N);
          expect(J.data[o * N + i], `J[${o}, ${i}]`).to.be.closeTo(want, 1e-13);
          row += J.data[o * N + i];
        }
        expect(row, `row ${o}: shifting every input shifts nothing`).to.be.closeTo(0, 1e-13);
      }
      expect(() => jacobianWrtInput(bn, x, { training: true })).to.throw(/BatchNormalization couples the samples of a batch in training mode/);
    });
  });

  it('agrees with tfjs-core batchNorm (and moments in training): forward and gradients w.r.t. x, gamma and beta, to float32 precision', () => {
    const rng = new Rng(44);
    const shape = [3, 4, 3, 2] as [number, number, number, number];
    for (const training of [false, true]) {
      const bn = randomBn(shape.slice(1), rng);
      const x = randomNormal(shape, rng);
      const { y, saved } = bn.forward(x, { training });
      const dy = randomNormal(y.shape, rng);
      const ct = bn.vjp(saved, dy);
      const t1 = (v: number[], s: number[] = [v.length]) => tf.tensor(Float32Array.from(v), s);
      const mm = t1(valueOf(bn, 'moving_mean'));
      const mv = t1(valueOf(bn, 'moving_variance'));
      const f = (tx: tf.Tensor, scale: tf.Tensor, offset: tf.Tensor) => {
        const { mean, variance } = training ? tf.moments(tx, [0, 1, 2]) : { mean: mm, variance: mv };
        return tf.batchNorm(tx as tf.Tensor4D, mean, variance, offset, scale, bn.epsilon);
      };
      const tx = t1(data(x), shape);
      const tg = t1(valueOf(bn, 'gamma'));
      const tb = t1(valueOf(bn, 'beta'));
      const what = training ? 'training' : 'inference';
      expect(data(y), `${what} y`).to.be.allclose(Array.from(f(tx, tg, tb).dataSync()), { rtol: 1e-4, atol: 1e-5 });
      const [gx, gg, gb] = tf.grads((a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => f(a, b, c))([tx, tg, tb], t1(data(dy), shape));
      expect(data(ct.dx), `${what} dx`).to.be.allclose(Array.from(gx.dataSync()), { rtol: 1e-3, atol: 1e-4 });
      expect(data(ct.dParams[0]), `${what} dgamma`).to.be.allclose(Array.from(gg.dataSync()), { rtol: 1e-3, atol: 1e-4 });
      expect(data(ct.dParams[1]), `${what} dbeta`).to.be.allclose(Array.from(gb.dataSync()), { rtol: 1e-3, atol: 1e-4 });
    }
  });

  describe('config', () => {
    it('loads from a Keras config: parameters gamma, beta, moving_mean, moving_variance (ones, zeros, zeros, ones), the moving ones non-trainable; initializers recorded', () => {
      const bn = layerFromConfig({
        class_name: 'BatchNormalization',
        config: { name: 'bn', trainable: true, axis: -1, momentum: 0.9, epsilon: 1e-5, center: true, scale: true, beta_initializer: { class_name: 'Zeros', config: {} }, gamma_initializer: 'ones', moving_mean_initializer: 'zeros', moving_variance_initializer: 'ones', beta_regularizer: null, gamma_regularizer: null, beta_constraint: null, gamma_constraint: null, synchronized: false },
      }) as BatchNormalization;
      bn.build([2, 2, 3]);
      expect(bn.params.map((p) => [p.name, p.trainable, data(p.value)])).to.deep.equal([
        ['gamma', true, [1, 1, 1]],
        ['beta', true, [0, 0, 0]],
        ['moving_mean', false, [0, 0, 0]],
        ['moving_variance', false, [1, 1, 1]],
      ]);
      expect(bn.getConfig()).to.include({ axis: -1, momentum: 0.9, epsilon: 1e-5, center: true, scale: true, gamma_initializer: 'ones' });
      expect(new BatchNormalization({}).getConfig()).to.include({ momentum: 0.99, epsilon: 1e-3 });
      expect(new BatchNormalization({ center: false }).build([3]).params.map((p) => p.name)).to.deep.equal(['gamma', 'moving_mean', 'moving_variance']);
      expect(new BatchNormalization({ axis: 3 }).build([2, 2, 3]).outputShape).to.deep.equal([2, 2, 3]);
    });

    it('refuses another axis, renorm, synchronized and unknown keys, quoting them', () => {
      expect(() => new BatchNormalization({ axis: 1 }).build([2, 2, 3])).to.throw(/only the last axis.*received axis 1/);
      expect(() => new BatchNormalization({ axis: [1, 2] })).to.throw(/only the last axis.*received axis \[1, ?2\]/);
      expect(() => new BatchNormalization({ renorm: true })).to.throw(/"renorm" must be false.*received true/);
      expect(() => new BatchNormalization({ synchronized: true })).to.throw(/"synchronized" must be false.*received true/);
      expect(() => new BatchNormalization({ momentun: 0.9 })).to.throw(/unknown option "momentun"/);
      expect(() => new BatchNormalization({ momentum: 2 })).to.throw(/momentum to be a number in \[0, 1\], received 2/);
    });

    it('a frozen layer (trainable false) runs on its moving statistics even in training, as Keras 3, and has no trainable parameter', () => {
      const rng = new Rng(45);
      const bn = randomBn([3], rng);
      bn.trainable = false;
      const x = randomNormal([4, 3], rng);
      expect(bn.samplesIndependent({ training: true })).to.equal(true);
      expect(bn.forward(x, { training: true }).y).to.be.allclose(bn.forward(x).y, { rtol: 0, atol: 0 });
      expect(trainableParams(bn)).to.deep.equal([]);
      bn.trainable = true;
      expect(trainableParams(bn).map((p) => p.name)).to.deep.equal(['gamma', 'beta']);
    });
  });

  describe('training: the moving statistics are state, committed once per recorded pass', () => {
    /** Conv2D(2, 2x2, relu) · BN(momentum 0.8) · Flatten · Dense(3, softmax), and a plain-loop float64 reference of its loss and of the moving statistics after one forward. */
    function setup(seed: number) {
      const rng = new Rng(seed);
      const model = new Sequential([new Conv2D({ filters: 2, kernel_size: 2, activation: 'relu' }), new BatchNormalization({ momentum: 0.8 }), new Flatten(), new Dense({ units: 3, activation: 'softmax' })], { inputShape: [4, 3, 2], rng });
      const bn = model.layers[1] as BatchNormalization;
      for (const p of bn.params) p.value = p.name === 'moving_variance' ? randomUniform([2], rng, 0.5, 1.5) : randomNormal([2], rng);
      const x = randomNormal([3, 4, 3, 2], rng);
      const yTrue = tensor([1, 0, 0, 0, 0, 1, 0, 1, 0], [3, 3]);
      return { model, bn, x, yTrue, stages: model.split([2]) };
    }

    function plainReference(model: Sequential, x: Tensor, yTrue: Tensor) {
      const [B, H, W, Ci] = x.shape;
      const w = model.layers.map((l) => l.params.map((p) => data(p.value)));
      const [K, kb] = w[0];
      const [gamma, beta, mm, mv] = w[1];
      const [D, db] = w[3];
      const xd = data(x);
      const Ho = H - 1;
      const Wo = W - 1;
      const Co = 2;
      const h: number[] = [];
      for (let b = 0; b < B; b++) for (let i = 0; i < Ho; i++) for (let j = 0; j < Wo; j++) for (let co = 0; co < Co; co++) {
        let s = kb[co];
        for (let di = 0; di < 2; di++) for (let dj = 0; dj < 2; dj++) for (let ci = 0; ci < Ci; ci++) s += xd[((b * H + i + di) * W + j + dj) * Ci + ci] * K[((di * 2 + dj) * Ci + ci) * Co + co];
        h.push(Math.max(0, s));
      }
      const N = B * Ho * Wo;
      const mean = [0, 1].map((c) => h.filter((_, k) => k % Co === c).reduce((a, v) => a + v, 0) / N);
      const variance = [0, 1].map((c) => h.filter((_, k) => k % Co === c).reduce((a, v) => a + (v - mean[c]) ** 2, 0) / N);
      const z = h.map((v, k) => gamma[k % Co] * (v - mean[k % Co]) / Math.sqrt(variance[k % Co] + 1e-3) + beta[k % Co]);
      const F = Ho * Wo * Co;
      let loss = 0;
      const yt = data(yTrue);
      for (let b = 0; b < B; b++) {
        const logits = [0, 1, 2].map((o) => db[o] + z.slice(b * F, (b + 1) * F).reduce((a, v, i) => a + v * D[i * 3 + o], 0));
        const m = Math.max(...logits);
        const e = logits.map((l) => Math.exp(l - m));
        const sum = e.reduce((a, v) => a + v, 0);
        loss -= [0, 1, 2].reduce((a, o) => a + yt[b * 3 + o] * Math.log(e[o] / sum), 0);
      }
      return {
        loss: loss / B,
        movingMean: [0, 1].map((c) => mm[c] * 0.8 + mean[c] * 0.2),
        movingVariance: [0, 1].map((c) => mv[c] * 0.8 + variance[c] * 0.2),
      };
    }

    it('forward and the Jacobian builders never mutate; a tape commits once; each chain (one training forward) updates once, matching a plain-loop reference', async () => {
      const { model, bn, x, yTrue, stages } = setup(46);
      const want = plainReference(model, x, yTrue);
      const mm0 = valueOf(bn, 'moving_mean');
      model.forward(x, { training: true });
      jacobianWrtWeights(stages[0], x, { training: true });
      fullJacobianWrtInput(stages[0], x, { training: true });
      expect(valueOf(bn, 'moving_mean'), 'no forward, builder or Jacobian commits').to.deep.equal(mm0);
      const snapshot = bn.params.map((p) => p.value);
      const restore = () => bn.params.forEach((p, k) => (p.value = snapshot[k]));
      const runs: [string, () => Promise<ChainResult> | ChainResult][] = [
        ['reference', () => referenceGradients(stages, x, yTrue, 'categorical_crossentropy', { training: true })],
        ['jacobian', () => jacobianChain(stages, x, yTrue, 'categorical_crossentropy', { training: true })],
        ['vjp', () => vjpChain(stages, x, yTrue, 'categorical_crossentropy', { training: true })],
      ];
      for (const [name, run] of runs) {
        restore();
        const r = await run();
        expect(r.loss, `${name} loss`).to.be.closeTo(want.loss, 1e-12);
        expect(valueOf(bn, 'moving_mean'), `${name} moving_mean after one training forward`).to.be.allclose(want.movingMean, { rtol: 1e-12, atol: 1e-14 });
        expect(valueOf(bn, 'moving_variance'), `${name} moving_variance after one training forward`).to.be.allclose(want.movingVariance, { rtol: 1e-12, atol: 1e-14 });
      }
      // Two recorded passes are two updates (the same batch statistics, so m → (m·0.8 + μ·0.2)·0.8 + μ·0.2): what "once" above rules out.
      restore();
      new GradientTape(stages[0]).forward(x, { training: true });
      new GradientTape(stages[0]).forward(x, { training: true });
      const batchMean = want.movingMean.map((m1, c) => (m1 - mm0[c] * 0.8) / 0.2);
      expect(valueOf(bn, 'moving_mean'), 'two passes, two updates').to.be.allclose(want.movingMean.map((m1, c) => m1 * 0.8 + batchMean[c] * 0.2), { rtol: 1e-12, atol: 1e-14 });
      // A tape asked to record without committing leaves the state alone.
      restore();
      new GradientTape(stages[0]).forward(x, { training: true, commit: false });
      expect(valueOf(bn, 'moving_mean')).to.deep.equal(mm0);
    });

    it('one training step (stepGradients, then SGD) updates the moving statistics exactly once and never steps them', async () => {
      const { model, bn, x, yTrue, stages } = setup(47);
      const want = plainReference(model, x, yTrue);
      const out = await stepGradients('jacobian', stages, x, yTrue, 'categorical_crossentropy', { training: true });
      if (!('dLoss_dWeights' in out)) throw new Error('unexpected non-finite step');
      // Indexed per model layer, as the chains: stage 0 is Conv2D then BatchNormalization.
      expect([...out.dLoss_dWeights[0], ...out.dLoss_dWeights[1]].map((g) => g === null)).to.deep.equal([false, false, false, false, true, true]);
      const sgd = new SGD({ learning_rate: 0.1 });
      stages.forEach((st) => st.layers.forEach((l, i) => sgd.step(l.params, out.dLoss_dWeights[st.layerOffset + i])));
      expect(valueOf(bn, 'moving_mean')).to.be.allclose(want.movingMean, { rtol: 1e-12, atol: 1e-14 });
      expect(valueOf(bn, 'moving_variance')).to.be.allclose(want.movingVariance, { rtol: 1e-12, atol: 1e-14 });
      expect(sgd.iterationsOf(bn.params[2])).to.equal(0);
      expect(sgd.iterationsOf(bn.params[0])).to.equal(1);
    });

    it('the three chains agree in training (the explicit chain through the full Jacobian of the coupled stage), gradients match central finite differences and tfjs-core; the memory report shows the full Jacobian', async () => {
      const { bn, x, yTrue, stages } = setup(48);
      const opts = { training: true };
      const snapshot = bn.params.map((p) => p.value);
      const ref = referenceGradients(stages, x, yTrue, 'categorical_crossentropy', opts);
      const jac = jacobianChain(stages, x, yTrue, 'categorical_crossentropy', opts);
      const sparse = jacobianChain(stages, x, yTrue, 'categorical_crossentropy', { ...opts, jacobian: { format: 'sparse', mode: 'auto' } });
      const vjp = await vjpChain(stages, x, yTrue, 'categorical_crossentropy', opts);
      for (const r of [jac, sparse, vjp]) {
        r.dLoss_dWeights.forEach((gs, i) => gs.forEach((g, k) => expect(g, `${r.method} layer ${i} param ${k}`).to.be.allclose(ref.dLoss_dWeights[i][k], { rtol: 1e-10, atol: 1e-12 })));
        r.dLoss_dOut.forEach((g, s) => expect(g, `${r.method} dLoss/dOut${s}`).to.be.allclose(ref.dLoss_dOut[s], { rtol: 1e-10, atol: 1e-12 }));
      }
      expect(ref.dLoss_dWeights[1].slice(2)).to.deep.equal([null, null]);
      // Stage 1 (Flatten · Dense) is independent; stage 0 holds the BN: its Jacobians are w.r.t. weights only (the first stage has no input Jacobian).
      // The coupled stage as a later stage: Conv2D | BN · Flatten · Dense.
      const model = Sequential.concat(stages);
      const later = model.split([1]);
      const j2 = jacobianChain(later, x, yTrue, 'categorical_crossentropy', opts);
      const r2 = referenceGradients(later, x, yTrue, 'categorical_crossentropy', opts);
      j2.dLoss_dWeights.forEach((gs, i) => gs.forEach((g, k) => expect(g, `coupled later stage: layer ${i} param ${k}`).to.be.allclose(r2.dLoss_dWeights[i][k], { rtol: 1e-10, atol: 1e-12 })));
      expect(j2.dLoss_dOut[0], 'dLoss/dOut0 through the full Jacobian').to.be.allclose(r2.dLoss_dOut[0], { rtol: 1e-10, atol: 1e-12 });
      const dIn = j2.memory[1].jacobians[0];
      // [B, ...out, B, ...in] for BN · Flatten · Dense(3) on [3, 2, 2]: B times the batch Jacobian's bytes.
      expect(dIn.shape).to.deep.equal([3, 3, 3, 3, 2, 2]);
      expect(dIn.bytes).to.equal(3 * 3 * 3 * 12 * 8);
      expect(estimateMemory(later, 3, { training: true }).explicit.jacobians.find((j) => j.wrt.startsWith('stage 1 input'))!.shape).to.deep.equal([3, 3, 3, 3, 2, 2]);
      expectSame(estimateMemory(later, 3, { training: true }), measureMemory(later, x, { training: true }));

      // Central finite differences of the loss (BN reads batch statistics, not the moving ones) along a random direction per trainable parameter.
      bn.params.forEach((p, k) => (p.value = snapshot[k]));
      const rng = new Rng(49);
      const lossAt = () => lossByName('categorical_crossentropy').value(yTrue, model.forward(x, opts).y);
      model.layers.forEach((l, i) => l.params.forEach((p, k) => {
        if (!p.trainable) return;
        const v = randomNormal(p.value.shape, rng);
        const w0 = p.value;
        const shifted = (s: number) => tensor(data(w0).map((w, n) => w + s * 1e-6 * v.data[n]), w0.shape);
        p.value = shifted(1);
        const lp = lossAt();
        p.value = shifted(-1);
        const lm = lossAt();
        p.value = w0;
        const g = ref.dLoss_dWeights[i][k]!;
        const directional = data(g).reduce((a, gv, n) => a + gv * v.data[n], 0);
        expect(directional, `layer ${i} ${p.name} vs finite differences`).to.be.closeTo((lp - lm) / 2e-6, 1e-6 * Math.max(1, Math.abs(directional)));
      }));

      // tfjs-core, the same model by its ops, gradients by its autodiff (float32).
      const t = (q: Tensor) => tf.tensor(Float32Array.from(data(q)), q.shape);
      const ws = model.layers.map((l) => l.params.map((p) => t(p.value)));
      const f = (K: tf.Tensor, kb: tf.Tensor, g: tf.Tensor, be: tf.Tensor, D: tf.Tensor, db: tf.Tensor) => {
        const h = tf.relu(tf.add(tf.conv2d(t(x) as tf.Tensor4D, K as tf.Tensor4D, 1, 'valid'), kb));
        const { mean, variance } = tf.moments(h, [0, 1, 2]);
        const z = tf.reshape(tf.batchNorm(h as tf.Tensor4D, mean, variance, be, g, 1e-3), [3, 12]);
        const p = tf.softmax(tf.add(tf.matMul(z, D as tf.Tensor2D), db));
        return tf.neg(tf.mean(tf.sum(tf.mul(t(yTrue), tf.log(p)), 1)));
      };
      const grads = tf.grads(f)([ws[0][0], ws[0][1], ws[1][0], ws[1][1], ws[3][0], ws[3][1]]);
      const ours = [ref.dLoss_dWeights[0][0], ref.dLoss_dWeights[0][1], ref.dLoss_dWeights[1][0], ref.dLoss_dWeights[1][1], ref.dLoss_dWeights[3][0], ref.dLoss_dWeights[3][1]];
      ours.forEach((g, n) => expect(data(g!), `tfjs gradient ${n}`).to.be.allclose(Array.from(grads[n].dataSync()), { rtol: 2e-3, atol: 2e-4 }));
    });
  });

  describe('a frozen Dense (trainable false)', () => {
    it('has no gradient (null in every chain), no Jacobian, no SGD or Adam update; the tape refuses it as a source', async () => {
      const rng = new Rng(50);
      const model = new Sequential([new Dense({ units: 4, activation: 'tanh' }), new Dense({ units: 2 })], { inputShape: [3], rng });
      const frozen = model.layers[0];
      frozen.trainable = false;
      const stages = model.split([1]);
      const x = randomNormal([5, 3], rng);
      const yTrue = randomNormal([5, 2], rng);
      const runs = [referenceGradients(stages, x, yTrue, 'mse'), jacobianChain(stages, x, yTrue, 'mse'), await vjpChain(stages, x, yTrue, 'mse')];
      for (const r of runs) {
        expect(r.dLoss_dWeights[0], `${r.method}: frozen layer`).to.deep.equal([null, null]);
        expect(r.dLoss_dWeights[1].every((g) => g !== null), `${r.method}: trainable layer`).to.equal(true);
        expect(r.memory[0].jacobians, `${r.method}: no Jacobian w.r.t. the frozen weights`).to.deep.equal([]);
      }
      expect(jacobianWrtWeights(frozen, x)).to.deep.equal([]);
      expect(jacobianWrtWeights(frozen, x, { format: 'sparse', mode: 'auto' })).to.deep.equal([]);
      const { tape } = GradientTape.record(model, x);
      expect(() => tape.jacobian(tape.output, frozen.params[0])).to.throw(/non-trainable parameter/);
      expect(() => tape.gradient(tape.output, [frozen.params[1]])).to.throw(/non-trainable parameter/);
      for (const opt of [new SGD({ learning_rate: 0.1 }), new Adam({ learning_rate: 0.1 })]) {
        const before = model.params.map((p) => p.value);
        const grads = [...runs[0].dLoss_dWeights[0], ...runs[0].dLoss_dWeights[1]];
        opt.step(model.params, grads);
        model.params.forEach((p, k) => {
          if (k < 2) expect(p.value, `${opt.name}: frozen ${p.name} unchanged`).to.equal(before[k]);
          else expect(p.value, `${opt.name}: ${p.name} stepped`).to.not.equal(before[k]);
        });
        expect(() => opt.step(model.params, [null, null, null, grads[3]])).to.throw(/received null/);
        model.params.forEach((p, k) => (p.value = before[k]));
      }
    });
  });

  describe('golden fixture keras_bn_training.json (Conv2D swish · BN training · GlobalAveragePooling2D · Dense softmax, sparse categorical cross-entropy)', () => {
    it("BN's part of it with the layers that exist: Conv2D then swish by plain loops, BN's training forward = stage output 0, its VJP of dLoss/dOut0 = the fixture's conv and BN gradients, its committed update = bnMovingAfterOneForward, at 1e-10", () => {
      const fx = JSON.parse(readFileSync(new URL('../fixtures/keras_bn_training.json', import.meta.url), 'utf8'));
      const w = fx.weights as { name: string; shape: number[]; data: number[] }[][];
      const conv = new Conv2D({ filters: 2, kernel_size: 2, padding: 'same' }).build([5, 4, 3]);
      conv.params.forEach((p, k) => (p.value = fromJSON(w[0][k])));
      const bn = new BatchNormalization(fx.modelTopology.config.layers[1].config).build([5, 4, 2]);
      expect(bn.params.map((p) => p.name)).to.deep.equal(w[1].map((p) => p.name));
      bn.params.forEach((p, k) => (p.value = fromJSON(w[1][k])));
      const x = fromJSON(fx.x);
      const c = conv.forward(x);
      const z = data(c.y);
      const sig = z.map((v) => 1 / (1 + Math.exp(-v)));
      const h = tensor(z.map((v, i) => v * sig[i]), c.y.shape);
      const tol = { rtol: 1e-10, atol: 1e-12 };
      const f = bn.forward(h, { training: true });
      expect(f.y, 'stage output 0').to.be.allclose(fromJSON(fx.expected.stageOutputs[0]), tol);
      const ct = bn.vjp(f.saved, fromJSON(fx.expected.dLoss_dStageOutput[0]));
      expect(ct.dParams[0], 'dLoss/dgamma').to.be.allclose(fromJSON(fx.expected.dLoss_dWeights[1][0]), tol);
      expect(ct.dParams[1], 'dLoss/dbeta').to.be.allclose(fromJSON(fx.expected.dLoss_dWeights[1][1]), tol);
      expect(fx.expected.dLoss_dWeights[1].slice(2), 'the fixture has no gradient for the moving statistics').to.deep.equal([null, null]);
      const ds = data(ct.dx);
      const dz = tensor(ds.map((g, i) => g * (sig[i] + z[i] * sig[i] * (1 - sig[i]))), c.y.shape);
      const cc = conv.vjp(c.saved, dz);
      expect(cc.dParams[0], 'dLoss/dkernel of the conv').to.be.allclose(fromJSON(fx.expected.dLoss_dWeights[0][0]), tol);
      expect(cc.dParams[1], 'dLoss/dbias of the conv').to.be.allclose(fromJSON(fx.expected.dLoss_dWeights[0][1]), tol);
      const [mean, variance] = fx.expected.bnMovingAfterOneForward[0];
      expect(valueOf(bn, 'moving_mean'), 'forward alone does not commit').to.deep.equal(w[1][2].data);
      bn.applyUpdates(f.saved);
      expect(valueOf(bn, 'moving_mean'), 'moving_mean after one forward').to.be.allclose(mean.data, tol);
      expect(valueOf(bn, 'moving_variance'), 'moving_variance after one forward').to.be.allclose(variance.data, tol);
    });

    it('every chain: loss, stage outputs, dLoss/dOut, dLoss/dWeights (null for the moving statistics) and the moving statistics after one forward, at 1e-10', async function () {
      const missing: string[] = [];
      if (!knownLayers().includes('GlobalAveragePooling2D')) missing.push('the GlobalAveragePooling2D layer');
      try {
        activationName('swish', 'fixture');
      } catch {
        missing.push('the swish activation');
      }
      try {
        lossByName('sparse_categorical_crossentropy');
      } catch {
        missing.push('the sparse_categorical_crossentropy loss');
      }
      expect(missing, 'every layer, activation and loss of the fixture exists').to.deep.equal([]);
      const runs: [string, (f: ReturnType<typeof loadFixture>) => Promise<ChainResult> | ChainResult][] = [
        ['reference', ({ stages, x, y, fx }) => referenceGradients(stages, x, y, fx.loss, { training: true })],
        ['jacobian', ({ stages, x, y, fx }) => jacobianChain(stages, x, y, fx.loss, { training: true })],
        ['vjp', ({ stages, x, y, fx }) => vjpChain(stages, x, y, fx.loss, { training: true })],
      ];
      for (const [name, run] of runs) {
        // A fresh model per chain: each chain is one training forward, which commits one update.
        const loaded = loadFixture('keras_bn_training.json');
        const { fx, model } = loaded;
        const expected = fx.expected as typeof fx.expected & { dLoss_dWeights: (null | { shape: number[]; data: number[] })[][]; bnMovingAfterOneForward: { shape: number[]; data: number[] }[][] };
        const r = await run(loaded);
        const tol = { rtol: 1e-10, atol: 1e-12 };
        expect(r.loss, `${name} loss`).to.be.closeTo(expected.loss, 1e-10 * Math.abs(expected.loss));
        r.stageOutputs.forEach((o, s) => expect(o, `${name} stage output ${s}`).to.be.allclose(fromJSON(expected.stageOutputs[s]), tol));
        r.dLoss_dOut.forEach((g, s) => expect(g, `${name} dLoss/dOut${s}`).to.be.allclose(fromJSON(expected.dLoss_dStageOutput[s]), tol));
        r.dLoss_dWeights.forEach((gs, i) => gs.forEach((g, k) => {
          const e = expected.dLoss_dWeights[i][k];
          expect(g, `${name} dLoss/dWeights[${i}][${k}]`).to.be.allclose(e === null ? null : fromJSON(e), tol);
        }));
        const bns = model.layers.filter((l) => l instanceof BatchNormalization);
        bns.forEach((bn, n) => {
          const [mean, variance] = expected.bnMovingAfterOneForward[n];
          expect(valueOf(bn, 'moving_mean'), `${name} moving_mean`).to.be.allclose(mean.data, tol);
          expect(valueOf(bn, 'moving_variance'), `${name} moving_variance`).to.be.allclose(variance.data, tol);
        });
      }
    });
  });
});

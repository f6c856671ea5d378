import { upstreamGradientLossOut } from '../lib/helpers.js';
import { jacobianWrtInputByVjp, jvpAlong } from '../lib/jacobian.js';
import { Dense } from '../lib/layers/dense.js';
import { Dropout } from '../lib/layers/dropout.js';
import { Rng } from '../lib/rng.js';
import { Sequential, type SequentialForwardOptions } from '../lib/sequential.js';
import { GradientTape, TapeError, bytesReachable, fingerprint } from '../lib/tape.js';
import { type Tensor, contiguous, copy, fromJSON, randomNormal, reshape, tensor } from '../lib/tensor.js';
import { loadFixture } from './helpers/fixtures.js';
import { expect } from './helpers/setup.js';

/** The golden fixtures (PyTorch autograd, cross-checked by JAX; see spec/fixtures/README.md). */
const FIXTURES = ['seed_reference.json', 'dense_mlp.json'] as const;
const TOL = { rtol: 1e-10, atol: 1e-14 };

/** Records each stage under its own tape, feeding each the previous output. */
function recordAll(stages: Sequential[], x: Tensor): GradientTape[] {
  let h = x;
  return stages.map((s) => {
    const tape = new GradientTape(s);
    h = tape.forward(h);
    return tape;
  });
}

describe('GradientTape', () => {
  for (const name of FIXTURES) {
    describe(`against the golden fixture ${name}`, () => {
      it('one tape per stage: outputs, batchJacobian(output, input) and jacobian(output, weights) per layer', () => {
        const { fx, stages, x } = loadFixture(name);
        recordAll(stages, x).forEach((tape, s) => {
          expect(tape.output, `stage ${s} output`).to.be.allclose(fx.expected.stageOutputs[s], TOL);
          expect(tape.batchJacobian(tape.output, tape.input), `stage ${s} batch Jacobian`).to.be.allclose(fx.expected.stageBatchJacobianWrtInput[s], TOL);
          stages[s].layers.forEach((layer, j) => {
            const Js = tape.jacobian(tape.output, layer.params);
            expect(Js).to.have.length(fx.expected.stageJacobianWrtWeights[s][j].length);
            Js.forEach((J, k) => expect(J, `stage ${s} layer ${j} ${layer.params[k].name}`).to.be.allclose(fx.expected.stageJacobianWrtWeights[s][j][k], TOL));
          });
        });
      });

      it('probes: Jv (from the batch Jacobian and by one dual-number pass) and uJ (the VJP, gradient with outputGradients)', () => {
        const { fx, stages, x } = loadFixture(name);
        recordAll(stages, x).forEach((tape, s) => {
          const { v, Jv, u, uJ } = fx.expected.stageProbes[s];
          const vT = fromJSON(v);
          const uT = fromJSON(u);
          expect(tape.gradient(tape.output, tape.input, { outputGradients: uT }), `stage ${s} uJ`).to.be.allclose(uJ, TOL);
          expect(jvpAlong(stages[s], tape.input, vT).jv, `stage ${s} Jv`).to.be.allclose(Jv, TOL);
          // Jv from the materialized Jacobian: Σ_in J[b, out, in] v[b, in], the helper with the roles of the axes swapped.
          const J = contiguous(tape.batchJacobian(tape.output, tape.input).toDense());
          const B = J.shape[0];
          const nOut = stages[s].sizes.out;
          const nIn = stages[s].sizes.in;
          const Jt = copy(reshape(J, [B, nOut, nIn]).transpose(0, 2, 1) as Tensor);
          const jv = upstreamGradientLossOut(Jt, reshape(contiguous(vT), [B, nIn]));
          expect(reshape(jv, [B, ...stages[s].outputShape]), `stage ${s} Jv from J`).to.be.allclose(Jv, TOL);
        });
      });

      it('one tape over the whole model: the loss, dLoss/dWeights of every layer, every layer\'s batch Jacobian', () => {
        const { fx, model, x, y } = loadFixture(name);
        const tape = new GradientTape(model);
        tape.forward(x);
        const loss = tape.loss(fx.loss, y);
        expect(loss.shape).to.deep.equal([]);
        expect(tape.lossValue).to.be.closeTo(fx.expected.loss, 1e-12 * fx.expected.loss);
        const grads = tape.gradient(loss, model.params);
        model.paramOwners.forEach(({ layer, param }, k) => expect(grads[k], `layer ${layer} param ${param}`).to.be.allclose(fx.expected.dLoss_dWeights[layer][param], TOL));
        const acts = tape.activations;
        model.layers.forEach((_, i) => expect(tape.batchJacobian(acts[i + 1], acts[i]), `layer ${i}`).to.be.allclose(fx.expected.layerBatchJacobianWrtInput[i], TOL));
      });
    });
  }

  it('gradient of a tensor target with no outputGradients uses ones (TensorFlow\'s default): the gradient of the sum', () => {
    const m = new Sequential([new Dense({ units: 3, activation: 'tanh' })], { inputShape: [2], rng: new Rng(1) });
    const tape = new GradientTape(m);
    const x = randomNormal([4, 2], new Rng(2));
    const y = tape.forward(x);
    const ones = tensor(new Array(12).fill(1), [4, 3]);
    expect(tape.gradient(y, x)).to.be.allclose(tape.gradient(y, x, { outputGradients: ones }), { rtol: 0, atol: 0 });
    // A single source gives a single tensor, a list gives a list in the same order.
    const [dW, dx] = tape.gradient(y, [m.params[0], x]);
    expect(dW.shape).to.deep.equal([2, 3]);
    expect(dx.shape).to.deep.equal([4, 2]);
    // A parameter may be named by its value tensor too.
    expect(tape.gradient(y, m.params[0].value)).to.be.allclose(dW, { rtol: 0, atol: 0 });
  });

  it('gradients w.r.t. intermediate activations, and zeros for sources the target does not depend on', () => {
    const m = new Sequential([new Dense({ units: 3, activation: 'relu' }), new Dense({ units: 2 })], { inputShape: [2], rng: new Rng(1) });
    const tape = new GradientTape(m);
    const x = randomNormal([2, 2], new Rng(3));
    tape.forward(x);
    const [, h, y] = tape.activations;
    const dy = randomNormal([2, 2], new Rng(4));
    const [dh, dx] = tape.gradient(y, [h, x], { outputGradients: dy });
    expect(tape.gradient(h, x, { outputGradients: dh })).to.be.allclose(dx, { rtol: 1e-15, atol: 0 });
    // h does not depend on the second layer's weights, nor on y.
    const [dW1, dyh] = tape.gradient(h, [m.params[2], y]);
    expect(Array.from(dW1.data).every((v) => v === 0) && dW1.shape.join() === '3,2').to.equal(true);
    expect(Array.from(dyh.data).every((v) => v === 0)).to.equal(true);
    const [Jk] = tape.jacobian(h, [m.params[2]]);
    expect(Jk.shape).to.deep.equal([2, 3, 3, 2]);
    expect(Array.from(Jk.toDense().data).every((v) => v === 0)).to.equal(true);
  });

  it('Dropout in training: every answer differentiates the recorded mask', () => {
    const m = new Sequential([new Dense({ units: 6 }), new Dropout({ rate: 0.5 })], { inputShape: [3], rng: new Rng(1) });
    const x = randomNormal([2, 3], new Rng(2));
    const { tape, y } = GradientTape.record(m, x, { training: true, seed: 5 });
    const h = tape.activations[1];
    const J = tape.batchJacobian(y, h).toDense();
    let dropped = 0;
    for (let b = 0; b < 2; b++)
      for (let o = 0; o < 6; o++)
        for (let i = 0; i < 6; i++) {
          const mask = y.get(b, o) / h.get(b, o); // 0 or 1/(1 − rate)
          expect(J.get(b, o, i)).to.equal(o === i ? (mask === 0 ? 0 : 2) : 0);
          if (o === i && mask === 0) dropped++;
        }
    expect(dropped).to.be.greaterThan(0);
    // Stacked VJPs of fresh passes with the same seed (so the same mask) agree with the recording's dual numbers.
    const sameMask: SequentialForwardOptions = { training: true, seed: 5 };
    expect(tape.batchJacobian(y, x)).to.be.allclose(jacobianWrtInputByVjp(m, x, sameMask), { rtol: 1e-15, atol: 0 });
  });

  it('residualBytes counts each saved buffer once', () => {
    const m = new Sequential([new Dense({ units: 4 })], { inputShape: [3], rng: new Rng(1) });
    const { tape } = GradientTape.record(m, randomNormal([2, 3], new Rng(2)));
    // Dense saves x [2, 3] and y [2, 4]: 14 float64s.
    expect(tape.residualBytes()).to.equal(112);
    const t = tensor([1, 2, 3, 4], [4]);
    expect(bytesReachable({ a: t, b: reshape(t, [2, 2]), c: [t.data] })).to.equal(32);
  });

  describe('misuse says so clearly', () => {
    const setup = () => {
      const m = new Sequential([new Dense({ units: 2, activation: 'tanh' })], { inputShape: [3], rng: new Rng(1) });
      const x = randomNormal([2, 3], new Rng(2));
      const { tape, y } = GradientTape.record(m, x);
      return { m, x, y, tape };
    };

    it('a tensor it did not record (even with equal values)', () => {
      const { tape, y, x } = setup();
      expect(() => tape.gradient(copy(y), x)).to.throw(TapeError, /gradient target: received a tensor of shape \[2, 2\], which this tape did not record \(tensors are matched by identity; it recorded input \[2, 3\], output of dense \[2, 2\], and the 2 parameters/);
      expect(() => tape.batchJacobian(y, copy(x))).to.throw(TapeError, /batchJacobian input: received a tensor of shape \[2, 3\], which this tape did not record/);
      expect(() => tape.jacobian(y, [tensor([1], [1])])).to.throw(TapeError, /jacobian weights\[0\]: received a tensor of shape \[1\], which this tape did not record/);
      expect(() => tape.batchJacobian(x, y)).to.throw(TapeError, /expected the output to be recorded after the input, received output = input and input = output of dense/);
    });

    it('the input changed in place after recording: refused, since its residuals describe the old input', () => {
      const { tape, y, x } = setup();
      const before = tape.gradient(y, x);
      x.data[4] += 1e-9;
      expect(() => tape.gradient(y, x)).to.throw(TapeError, /the input x \[2, 3\] was changed in place since the pass was recorded/);
      x.data[4] -= 1e-9;
      expect(tape.gradient(y, x)).to.be.allclose(before, { rtol: 0, atol: 0 });
    });

    it('weights replaced, or changed in place, after recording', () => {
      const { tape, m, y, x } = setup();
      expect(() => tape.gradient(y, x)).to.not.throw();
      const old = m.params[0].value;
      m.params[0].value = copy(old);
      expect(() => tape.gradient(y, x), 'a copy is a new value').to.throw(TapeError, /the weights changed since the pass was recorded \(Dense "dense" kernel \[3, 2\]\)/);
      m.params[0].value = old;
      expect(() => tape.gradient(y, x)).to.not.throw();
      old.data[3] *= 1 + Number.EPSILON; // about one ulp, in place
      expect(() => tape.batchJacobian(y, x)).to.throw(TapeError, /weights changed/);
      expect(() => tape.jacobian(y, m.params)).to.throw(TapeError, /record a new pass with a new tape/);
    });

    it('nothing recorded, a second recording, a scalar loss with outputGradients, outputGradients of the wrong shape', () => {
      const { tape, m, x, y } = setup();
      expect(() => new GradientTape(m).output).to.throw(TapeError, /nothing recorded yet; call tape.forward\(x\) first/);
      expect(() => new GradientTape(m).lossValue).to.throw(TapeError, /no loss recorded/);
      expect(() => tape.forward(x)).to.throw(TapeError, /already recorded a forward pass/);
      const loss = tape.loss('mse', tensor([0, 1, 1, 0], [2, 2]));
      expect(() => tape.gradient(loss, x, { outputGradients: y })).to.throw(TapeError, /outputGradients is for a tensor target/);
      expect(() => tape.gradient(y, x, { outputGradients: tensor([1, 2], [1, 2]) })).to.throw(/outputGradients: expected shape \[2, 2\] \(rank 2\), received \[1, 2\]/);
      expect(() => new GradientTape({} as never)).to.throw(TapeError, /expected a Sequential model/);
    });

    it('fingerprint sees a one-ulp change', () => {
      const t = tensor([1, 2, 3], [3]);
      const h = fingerprint(t);
      t.data[1] = 2 + 2 * Number.EPSILON;
      expect(fingerprint(t)).to.not.equal(h);
    });
  });
});

import fc from 'fast-check';
import type { Param } from '../lib/layers/layer.js';
import { ShapeError } from '../lib/errors.js';
import { Adam, SGD, optimizerFromConfig } from '../lib/optimizers.js';
import { type Tensor, tensor } from '../lib/tensor.js';
import { expect } from './helpers/setup.js';

const param = (data: number[], name = 'kernel'): Param => ({ name, value: tensor(data, [data.length]) });
const g = (data: number[]): Tensor => tensor(data, [data.length]);
const values = (p: Param): number[] => Array.from(p.value.data);

describe('optimizers', () => {
  describe('SGD, Keras semantics by hand-computed steps', () => {
    it('plain: w -= lr·g', () => {
      const p = param([1, -2]);
      const opt = new SGD({ learning_rate: 0.1 });
      opt.step([p], [g([0.5, 1])]);
      expect(values(p)).to.be.allclose([0.95, -2.1], { rtol: 1e-15, atol: 0 });
      opt.step([p], [g([1, 0])]);
      expect(values(p)).to.be.allclose([0.85, -2.1], { rtol: 1e-15, atol: 0 });
      expect(opt.iterationsOf(p)).to.equal(2);
    });

    it('momentum: v = momentum·v − lr·g; w += v', () => {
      const p = param([1, -2]);
      const opt = new SGD({ learning_rate: 0.1, momentum: 0.9 });
      opt.step([p], [g([0.5, 1])]); // v = [-0.05, -0.1]
      expect(values(p)).to.be.allclose([0.95, -2.1], { rtol: 1e-15, atol: 0 });
      opt.step([p], [g([1, 0])]); // v = [-0.1 - 0.045, 0 - 0.09] = [-0.145, -0.09]
      expect(values(p)).to.be.allclose([0.805, -2.19], { rtol: 1e-15, atol: 0 });
    });

    it('nesterov: w += momentum·v − lr·g with the updated v', () => {
      const p = param([1, -2]);
      const opt = new SGD({ learning_rate: 0.1, momentum: 0.9, nesterov: true });
      opt.step([p], [g([0.5, 1])]); // v = [-0.05, -0.1]; Δ = [-0.045 - 0.05, -0.09 - 0.1]
      expect(values(p)).to.be.allclose([0.905, -2.19], { rtol: 1e-15, atol: 0 });
      opt.step([p], [g([1, 0])]); // v = [-0.145, -0.09]; Δ = [-0.1305 - 0.1, -0.081]
      expect(values(p)).to.be.allclose([0.6745, -2.271], { rtol: 1e-14, atol: 0 });
    });
  });

  describe('Adam, Keras semantics by hand-computed steps', () => {
    it('two steps: m, v moving averages; α = lr·sqrt(1 − β2^t)/(1 − β1^t); w −= α·m/(sqrt(v) + ε)', () => {
      const p = param([1, -2]);
      const opt = new Adam({ learning_rate: 0.1 });
      // t = 1: m = 0.1 g = [0.05, 0.1], v = 0.001 g² = [0.00025, 0.001], α = 0.1·sqrt(0.001)/0.1;
      // w −= α·0.05/(sqrt(0.00025) + 1e-7) = 0.0999993675…: epsilon keeps the step just under lr.
      opt.step([p], [g([0.5, 1])]);
      expect(values(p)).to.be.allclose([0.9000006324515321, -2.099999683773234], { rtol: 1e-14, atol: 0 });
      // t = 2: m = [0.145, 0.09], v = [0.00124975, 0.000999], α = 0.1·sqrt(1 − 0.999²)/(1 − 0.9²).
      opt.step([p], [g([1, 0])]);
      expect(values(p)).to.be.allclose([0.8034827028905888, -2.1670052971905087], { rtol: 1e-14, atol: 0 });
    });

    it('Keras defaults: lr 0.001, β1 0.9, β2 0.999, ε 1e-7; SGD lr 0.01, no momentum', () => {
      expect(new Adam().getConfig()).to.deep.equal({ name: 'adam', learning_rate: 0.001, beta_1: 0.9, beta_2: 0.999, epsilon: 1e-7 });
      expect(new SGD().getConfig()).to.deep.equal({ name: 'sgd', learning_rate: 0.01, momentum: 0, nesterov: false });
    });
  });

  describe('properties', () => {
    const vec = fc.array(fc.double({ min: -10, max: 10, noNaN: true }), { minLength: 1, maxLength: 6 });

    it('SGD with momentum under a constant gradient: w_k = w_0 − lr·g·Σ_{j≤k} (1 − m^j)/(1 − m) ; Nesterov steps by m·v_j − lr·g', () => {
      fc.assert(
        fc.property(vec, fc.double({ min: 1e-4, max: 1, noNaN: true }), fc.double({ min: 0.01, max: 0.99, noNaN: true }), fc.boolean(), fc.integer({ min: 1, max: 8 }), (grad, lr, m, nesterov, k) => {
          const w0 = grad.map((_, i) => i - 1);
          const p = param(w0);
          const opt = new SGD({ learning_rate: lr, momentum: m, nesterov });
          for (let s = 0; s < k; s++) opt.step([p], [g(grad)]);
          // v_j = −lr·g·(1 − m^j)/(1 − m); Nesterov steps by m·v_j − lr·g.
          let factor = 0;
          for (let j = 1; j <= k; j++) factor += nesterov ? (m * (1 - m ** j)) / (1 - m) + 1 : (1 - m ** j) / (1 - m);
          const expected = w0.map((w, i) => w - lr * grad[i] * factor);
          expect(values(p)).to.be.allclose(expected, { rtol: 1e-12, atol: 1e-12 });
        }),
        { numRuns: 100 },
      );
    });

    it('Adam with ε = 0: the first step moves every weight by exactly lr against the sign of its gradient', () => {
      // |g| ≥ 1e-100 so that g² stays a normal number (a subnormal square is not Adam's concern).
      const nonzero = fc.array(fc.double({ min: 1e-100, max: 10, noNaN: true }).chain((a) => fc.constantFrom(a, -a)), { minLength: 1, maxLength: 6 });
      fc.assert(
        fc.property(nonzero, fc.double({ min: 1e-4, max: 1, noNaN: true }), (grad, lr) => {
          const w0 = grad.map((_, i) => i * 0.5);
          const p = param(w0);
          new Adam({ learning_rate: lr, epsilon: 0 }).step([p], [g(grad)]);
          values(p).forEach((w, i) => expect(w).to.be.closeTo(w0[i] - lr * Math.sign(grad[i]), 1e-12 * (1 + Math.abs(w0[i]))));
        }),
        { numRuns: 100 },
      );
    });

    it('Adam with ε = 0 is invariant to scaling the gradients by c > 0', () => {
      fc.assert(
        fc.property(fc.array(vec.filter((v) => v.every((x) => Math.abs(x) > 1e-3)), { minLength: 3, maxLength: 3 }), fc.double({ min: 1e-3, max: 1e3, noNaN: true }), (grads, c) => {
          const n = Math.min(...grads.map((v) => v.length));
          const a = param(new Array(n).fill(1));
          const b = param(new Array(n).fill(1));
          const oa = new Adam({ learning_rate: 0.01, epsilon: 0 });
          const ob = new Adam({ learning_rate: 0.01, epsilon: 0 });
          for (const gr of grads) {
            oa.step([a], [g(gr.slice(0, n))]);
            ob.step([b], [g(gr.slice(0, n).map((x) => c * x))]);
          }
          expect(values(b)).to.be.allclose(values(a), { rtol: 1e-10, atol: 1e-12 });
        }),
        { numRuns: 50 },
      );
    });

    it('one optimizer shared by two stages steps exactly like one optimizer per stage (state lives with each param)', () => {
      fc.assert(
        fc.property(fc.array(fc.tuple(vec, vec), { minLength: 1, maxLength: 4 }), fc.constantFrom('sgd', 'adam'), (steps, name) => {
          const n0 = Math.min(...steps.map(([a]) => a.length));
          const n1 = Math.min(...steps.map(([, b]) => b.length));
          const make = () => optimizerFromConfig(name === 'sgd' ? { name, learning_rate: 0.05, momentum: 0.8, nesterov: true } : { name, learning_rate: 0.05 });
          const [s0, s1] = [param(new Array(n0).fill(0.3)), param(new Array(n1).fill(-0.7))];
          const [t0, t1] = [param(new Array(n0).fill(0.3)), param(new Array(n1).fill(-0.7))];
          const shared = make();
          const own = [make(), make()];
          for (const [a, b] of steps) {
            shared.step([s0], [g(a.slice(0, n0))]);
            shared.step([s1], [g(b.slice(0, n1))]);
            own[0].step([t0], [g(a.slice(0, n0))]);
            own[1].step([t1], [g(b.slice(0, n1))]);
          }
          expect(values(s0)).to.deep.equal(values(t0));
          expect(values(s1)).to.deep.equal(values(t1));
          expect(shared.iterationsOf(s0)).to.equal(steps.length);
        }),
        { numRuns: 50 },
      );
    });
  });

  it('keeps a float32 parameter float32 and never resizes it', () => {
    const p: Param = { name: 'bias', value: tensor([1, 2, 3, 4], [2, 2], 'float32') };
    new Adam({ learning_rate: 0.1 }).step([p], [tensor([1, 1, 1, 1], [2, 2], 'float32')]);
    expect(p.value.data).to.be.instanceOf(Float32Array);
    expect(p.value.shape).to.deep.equal([2, 2]);
  });

  describe('bad input, refused before any update', () => {
    it('a learning rate that is not a positive finite number', () => {
      for (const lr of [0, -0.1, Number.NaN, Number.POSITIVE_INFINITY, '0.1']) {
        expect(() => new SGD({ learning_rate: lr as number })).to.throw(/SGD: expected learning_rate to be a positive finite number, received/);
        expect(() => new Adam({ learning_rate: lr as number })).to.throw(/Adam: expected learning_rate to be a positive finite number, received/);
      }
      expect(() => new SGD({ learning_rate: -1 })).to.throw(/received -1/);
    });

    it('out-of-range momentum and betas, unknown keys and names', () => {
      expect(() => new SGD({ momentum: 1.5 })).to.throw(/momentum to be a number in \[0, 1\], received 1.5/);
      expect(() => new SGD({ nesterov: 'yes' as never })).to.throw(/nesterov to be a boolean, received "yes"/);
      expect(() => new Adam({ beta_1: 1 })).to.throw(/beta_1 to be a number in \[0, 1\), received 1/);
      expect(() => new Adam({ epsilon: -1 })).to.throw(/epsilon to be a non-negative finite number, received -1/);
      expect(() => new Adam({ lr: 0.1 } as never)).to.throw(/unknown option "lr"/);
      expect(() => optimizerFromConfig({ name: 'rmsprop' })).to.throw(/unknown name "rmsprop"; expected one of sgd, adam/);
      expect(optimizerFromConfig({ name: 'sgd', learning_rate: 0.5, steps: 5 }, ['steps']).getConfig()).to.deep.include({ learning_rate: 0.5 });
    });

    it('gradients of the wrong count or shape leave every parameter untouched', () => {
      const a = param([1, 2]);
      const b = param([3, 4, 5], 'bias');
      const opt = new SGD({ learning_rate: 0.1 });
      expect(() => opt.step([a, b], [g([1, 1])])).to.throw(/expected one gradient per parameter \(2\), received 1/);
      expect(() => opt.step([a, b], [g([1, 1]), g([1, 1])])).to.throw(/gradient 1 \(bias\): expected shape \[3\], received \[2\]/);
      expect(values(a)).to.deep.equal([1, 2]);
      expect(values(b)).to.deep.equal([3, 4, 5]);
      expect(opt.iterationsOf(a)).to.equal(0);
    });

    for (const make of [() => new SGD({ learning_rate: 0.1, momentum: 0.9 }), () => new Adam()]) {
      it(`${make().name}: a NaN or infinite gradient is refused, naming the parameter and the index, before any weight or state changes`, () => {
        const opt = make();
        const a = param([1, 2]);
        const b = param([3, 4, 5, 6], 'bias');
        b.value = tensor([3, 4, 5, 6], [2, 2]);
        opt.step([a, b], [g([0.5, 0.5]), tensor([1, 1, 1, 1], [2, 2])]);
        const before = [values(a), values(b)];
        for (const bad of [Number.NaN, Infinity, -Infinity]) {
          expect(() => opt.step([a, b], [g([0.5, 0.5]), tensor([1, 1, bad, 1], [2, 2])])).to.throw(
            ShapeError,
            `${opt.name}.step: gradient 1 (bias): expected finite values, received ${bad} at index [1, 0]`,
          );
        }
        expect(() => opt.step([a, b], [g([Number.NaN, 0]), tensor([1, 1, 1, 1], [2, 2])])).to.throw(ShapeError, 'gradient 0 (kernel): expected finite values, received NaN at index [0]');
        expect(() => opt.step([a, b], [g([1, 1]), undefined as never])).to.throw(ShapeError, 'gradient 1 (bias): expected a tensor, received undefined');
        expect([values(a), values(b)]).to.deep.equal(before);
        expect(opt.iterationsOf(a)).to.equal(1);
        // The state was not poisoned: the next good step is the step it would have been.
        const twin = make();
        const a2 = param([1, 2]);
        const b2 = param([3, 4, 5, 6], 'bias');
        b2.value = tensor([3, 4, 5, 6], [2, 2]);
        twin.step([a2, b2], [g([0.5, 0.5]), tensor([1, 1, 1, 1], [2, 2])]);
        opt.step([a, b], [g([0.25, -1]), tensor([2, 0, 1, 1], [2, 2])]);
        twin.step([a2, b2], [g([0.25, -1]), tensor([2, 0, 1, 1], [2, 2])]);
        expect([values(a), values(b)]).to.deep.equal([values(a2), values(b2)]);
      });
    }
  });
});

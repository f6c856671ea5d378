import { jacobianWrtInput } from '../lib/jacobian.js';
import { derivative as symbolicDerivative, parse } from 'mathjs';
import { type ActivationName, activationForward, activationJvp } from '../lib/activations.js';
import { Dual, derivative, valueAndDerivative } from '../lib/dual.js';
import { ConfigError } from '../lib/errors.js';
import { Dense } from '../lib/layers/dense.js';
import { Rng } from '../lib/rng.js';
import { tensor } from '../lib/tensor.js';
import { expect } from './helpers/setup.js';

/** A function written twice: with Dual operations, and as a formula for mathjs to differentiate. */
interface Case {
  name: string;
  f: (x: Dual) => Dual;
  formula: string;
  /** Where the formula is defined and smooth. */
  domain: [number, number];
}

const CASES: Case[] = [
  { name: 'add (dual + dual)', f: (x) => x.add(x.exp()), formula: 'x + exp(x)', domain: [-3, 3] },
  { name: 'add (dual + constant)', f: (x) => x.add(5), formula: 'x + 5', domain: [-3, 3] },
  { name: 'sub', f: (x) => x.sub(x.sigmoid()).sub(2), formula: 'x - 1 / (1 + exp(-x)) - 2', domain: [-3, 3] },
  { name: 'mul (product rule)', f: (x) => x.mul(x.exp()).mul(3), formula: '3 * x * exp(x)', domain: [-3, 3] },
  { name: 'div (quotient rule)', f: (x) => x.tanh().div(x.mul(x).add(1)), formula: 'tanh(x) / (x * x + 1)', domain: [-3, 3] },
  { name: 'div by a constant', f: (x) => x.div(4), formula: 'x / 4', domain: [-3, 3] },
  { name: 'neg', f: (x) => x.exp().neg(), formula: '-exp(x)', domain: [-3, 3] },
  { name: 'exp', f: (x) => x.mul(2).exp(), formula: 'exp(2 * x)', domain: [-3, 3] },
  { name: 'log', f: (x) => x.mul(x).add(1).log(), formula: 'log(x^2 + 1)', domain: [-3, 3] },
  { name: 'log (positive argument)', f: (x) => x.log(), formula: 'log(x)', domain: [0.1, 5] },
  { name: 'tanh', f: (x) => x.mul(1.5).tanh(), formula: 'tanh(1.5 * x)', domain: [-3, 3] },
  { name: 'sigmoid', f: (x) => x.sigmoid(), formula: '1 / (1 + exp(-x))', domain: [-8, 8] },
  { name: 'pow 3', f: (x) => x.pow(3), formula: 'x^3', domain: [-3, 3] },
  { name: 'pow -2', f: (x) => x.pow(-2), formula: 'x^(-2)', domain: [0.2, 3] },
  { name: 'pow 0.5', f: (x) => x.pow(0.5), formula: 'x^0.5', domain: [0.1, 4] },
  { name: 'pow 2.5', f: (x) => x.pow(2.5), formula: 'x^2.5', domain: [0.1, 4] },
  {
    name: 'a composition (the chain rule through every op)',
    f: (x) => x.pow(3).mul(x.neg().exp()).tanh().div(x.mul(2).sigmoid().add(1)).sub(x.mul(x).add(1).log()),
    formula: 'tanh(x^3 * exp(-x)) / (1 + 1 / (1 + exp(-2 * x))) - log(x^2 + 1)',
    domain: [-2, 2],
  },
];

describe('Dual', () => {
  for (const c of CASES) {
    it(`${c.name}: value and derivative match mathjs (symbolic) at random points`, () => {
      const node = parse(c.formula);
      const value = node.compile();
      const d = symbolicDerivative(node, 'x').compile();
      const rng = new Rng(61);
      for (let i = 0; i < 25; i++) {
        const x = rng.uniform(...c.domain);
        const y = valueAndDerivative(c.f, x);
        expect(y.primal, `value at x = ${x}`).to.be.allclose(value.evaluate({ x }) as number, { rtol: 1e-13, atol: 1e-15 });
        expect(y.tangent, `derivative at x = ${x}`).to.be.allclose(d.evaluate({ x }) as number, { rtol: 1e-12, atol: 1e-14 });
        expect(derivative(c.f, x)).to.equal(y.tangent);
      }
    });
  }

  it('relu: derivative 1 where x > 0 and 0 where x <= 0 (the engine\'s subgradient at the kink)', () => {
    for (const [x, v, d] of [[2.5, 2.5, 1], [-1, 0, 0], [0, 0, 0], [1e-300, 1e-300, 1]]) {
      const y = valueAndDerivative((t) => t.relu(), x);
      expect([y.primal, y.tangent]).to.deep.equal([v, d]);
    }
    expect(derivative((t) => t.mul(3).relu().mul(t), 2)).to.equal(12);
  });

  it('variable seeds tangent 1, constant 0; a function of constants only has derivative 0', () => {
    expect([Dual.variable(3).primal, Dual.variable(3).tangent]).to.deep.equal([3, 1]);
    expect([Dual.constant(3).primal, Dual.constant(3).tangent]).to.deep.equal([3, 0]);
    expect(derivative(() => Dual.constant(7).exp(), 1)).to.equal(0);
    expect(derivative(() => 4, 1)).to.equal(0);
    expect(derivative((x) => x.pow(0), 0)).to.equal(0);
    expect(derivative((x) => x.pow(3).sub(x.mul(2)), 2)).to.equal(10);
    expect(String(new Dual(1, 2))).to.equal('1 + 2ε');
  });

  it('rejects what is not a number, quoting it', () => {
    expect(() => Dual.variable(2).pow(Number.NaN)).to.throw(ConfigError, /expected a finite constant exponent, received NaN/);
    expect(() => Dual.variable(2).pow(Dual.variable(1) as never)).to.throw(ConfigError, /expected a finite constant exponent/);
    expect(() => new Dual('1' as never)).to.throw(ConfigError, /expected numbers \(primal, tangent\), received "1"/);
    expect(() => derivative((x) => x, '2' as never)).to.throw(ConfigError, /expected a number to differentiate at, received "2"/);
  });

  describe('matches the engine', () => {
    for (const name of ['linear', 'relu', 'sigmoid', 'tanh'] as const) {
      it(`${name}: activationForward and activationJvp give the Dual's primal and tangent`, () => {
        const rng = new Rng(71);
        const n = 64;
        const z = Float64Array.from({ length: n }, (_, i) => (i === 0 ? 0 : rng.uniform(-6, 6)));
        const y = new Float64Array(n);
        activationForward(name, z, y, n, n);
        // T = 1: one derivative part per scalar, seeded with 1, exactly a Dual's tangent.
        const dz = new Float64Array(n).fill(1);
        activationJvp(name, null, y, dz, n, 1, n);
        const op = (d: Dual): Dual => (name === 'linear' ? d : d[name]());
        for (let i = 0; i < n; i++) {
          const dual = op(Dual.variable(z[i]));
          expect(dual.primal, `${name}(${z[i]})`).to.be.allclose(y[i], { rtol: 1e-15, atol: 0 });
          expect(dual.tangent, `${name}'(${z[i]})`).to.be.allclose(dz[i], { rtol: 1e-15, atol: 0 });
        }
      });
    }

    it('softmax: T Duals seeded one input each give the T tangent columns of the engine\'s block', () => {
      const rng = new Rng(81);
      const L = 5;
      const z = Float64Array.from({ length: L }, () => rng.normal() * 2);
      const y = new Float64Array(L);
      activationForward('softmax' as ActivationName, z, y, L, L);
      // Tangent block [L, T] with T = L: the identity, every input direction at once.
      const block = new Float64Array(L * L);
      for (let k = 0; k < L; k++) block[k * L + k] = 1;
      activationJvp('softmax', null, y, block, L, L, L);
      const m = Math.max(...z);
      for (let j = 0; j < L; j++) {
        const zs = Array.from(z, (v, k) => (k === j ? Dual.variable(v) : Dual.constant(v)));
        const e = zs.map((d) => d.sub(m).exp());
        const s = e.reduce((a, b) => a.add(b));
        for (let k = 0; k < L; k++) {
          const yk = e[k].div(s);
          expect(yk.primal).to.be.allclose(y[k], { rtol: 1e-14, atol: 0 });
          expect(yk.tangent, `∂y${k}/∂z${j}`).to.be.allclose(block[k * L + j], { rtol: 1e-12, atol: 1e-16 });
        }
      }
    });

    it('Dense: a Dual seeded on input i reproduces column i of the dual-number batch Jacobian', () => {
      const rng = new Rng(91);
      const layer = new Dense({ units: 3, activation: 'tanh' }).build([4], { rng });
      const xs = [0.3, -1.2, 0.8, 2];
      const J = jacobianWrtInput(layer, tensor(xs, [1, 4])).toDense();
      const W = layer.params[0].value;
      for (let i = 0; i < 4; i++) {
        const x = xs.map((v, k) => (k === i ? Dual.variable(v) : Dual.constant(v)));
        for (let o = 0; o < 3; o++) {
          let acc = Dual.constant(layer.params[1].value.get(o));
          for (let k = 0; k < 4; k++) acc = acc.add(x[k].mul(W.get(k, o)));
          expect(acc.tanh().tangent).to.be.allclose(J.get(0, o, i), { rtol: 1e-14, atol: 1e-16 });
        }
      }
    });
  });
});

import { all, create, derivative as symbolicDerivative, erf as mathjsErf } from 'mathjs';
import { ACTIVATIONS, type ActivationName, activationForward, activationJvp, activationJvpInto, activationNeeds, activationName, activationVjp } from '../lib/activations.js';
import { Dual } from '../lib/dual.js';
import { erf, erfc } from '../lib/erf.js';
import { ConfigError, ShapeError } from '../lib/errors.js';
import { Activation } from '../lib/layers/activation.js';
import { Conv2D } from '../lib/layers/conv2d.js';
import { Dense } from '../lib/layers/dense.js';
import { Rng } from '../lib/rng.js';
import { randomNormal } from '../lib/tensor.js';
import { checkDerivatives } from './helpers/check-derivatives.js';
import { expect } from './helpers/setup.js';

type Elementwise = Exclude<ActivationName, 'softmax'>;
const ELEMENTWISE = ACTIVATIONS.filter((a): a is Elementwise => a !== 'softmax');

// Keras 3's constants, typed from keras/src/activations/activations.py (not imported from the code under test).
const KERAS_SELU_ALPHA = 1.67326324235437728481704299;
const KERAS_SELU_SCALE = 1.05070098735548049341933498;

/** Keras' definitions, written out independently of lib/activations.ts (gelu through mathjs's erf). */
const KERAS: Record<Elementwise, (x: number) => number> = {
  linear: (x) => x,
  relu: (x) => Math.max(x, 0),
  sigmoid: (x) => 1 / (1 + Math.exp(-x)),
  tanh: (x) => Math.tanh(x),
  elu: (x) => (x > 0 ? x : Math.exp(x) - 1),
  selu: (x) => KERAS_SELU_SCALE * (x > 0 ? x : KERAS_SELU_ALPHA * (Math.exp(x) - 1)),
  gelu: (x) => 0.5 * x * (1 + mathjsErf(x / Math.sqrt(2))),
  gelu_new: (x) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3))),
  softplus: (x) => Math.log(1 + Math.exp(x)),
  softsign: (x) => x / (Math.abs(x) + 1),
  swish: (x) => x / (1 + Math.exp(-x)),
  silu: (x) => x / (1 + Math.exp(-x)),
  hard_sigmoid: (x) => Math.min(Math.max(x + 3, 0), 6) / 6,
  relu6: (x) => Math.min(Math.max(x, 0), 6),
  leaky_relu: (x) => (x > 0 ? x : 0.2 * x),
  exponential: (x) => Math.exp(x),
};

/**
 * Each activation as mathjs formulas, one per smooth piece (open intervals, so no kink is
 * differentiated), for mathjs's symbolic `derivative()`. Exact gelu is the exception: mathjs
 * cannot differentiate erf, so its derivative is written from d/du erf(u) = 2/√π e^{−u²}.
 */
const PIECES: Record<Elementwise, { lo: number; hi: number; formula: string }[]> = {
  linear: [{ lo: -8, hi: 8, formula: 'x' }],
  relu: [
    { lo: -8, hi: 0, formula: '0 * x' },
    { lo: 0, hi: 8, formula: 'x' },
  ],
  sigmoid: [{ lo: -8, hi: 8, formula: '1 / (1 + exp(-x))' }],
  tanh: [{ lo: -8, hi: 8, formula: 'tanh(x)' }],
  elu: [
    { lo: -8, hi: 0, formula: 'exp(x) - 1' },
    { lo: 0, hi: 8, formula: 'x' },
  ],
  selu: [
    { lo: -8, hi: 0, formula: `${KERAS_SELU_SCALE} * ${KERAS_SELU_ALPHA} * (exp(x) - 1)` },
    { lo: 0, hi: 8, formula: `${KERAS_SELU_SCALE} * x` },
  ],
  gelu: [],
  // ½ x (1 + tanh u) = x / (1 + e^{−2u}): the same function, whose derivative mathjs evaluates without 1 + tanh cancelling.
  gelu_new: [{ lo: -8, hi: 8, formula: 'x / (1 + exp(-2 * sqrt(2 / pi) * (x + 0.044715 * x^3)))' }],
  softplus: [{ lo: -8, hi: 8, formula: 'log(1 + exp(x))' }],
  softsign: [
    { lo: -8, hi: 0, formula: 'x / (1 - x)' },
    { lo: 0, hi: 8, formula: 'x / (1 + x)' },
  ],
  swish: [{ lo: -8, hi: 8, formula: 'x / (1 + exp(-x))' }],
  silu: [{ lo: -8, hi: 8, formula: 'x / (1 + exp(-x))' }],
  hard_sigmoid: [
    { lo: -8, hi: -3, formula: '0 * x' },
    { lo: -3, hi: 3, formula: '(x + 3) / 6' },
    { lo: 3, hi: 8, formula: '1 + 0 * x' },
  ],
  relu6: [
    { lo: -8, hi: 0, formula: '0 * x' },
    { lo: 0, hi: 6, formula: 'x' },
    { lo: 6, hi: 8, formula: '6 + 0 * x' },
  ],
  leaky_relu: [
    { lo: -8, hi: 0, formula: '0.2 * x' },
    { lo: 0, hi: 8, formula: 'x' },
  ],
  exponential: [{ lo: -8, hi: 5, formula: 'exp(x)' }],
};

// A 100-digit oracle: the Taylor series of erf in mathjs BigNumbers, independent of Cody's rational functions.
const big = create(all, { number: 'BigNumber', precision: 100 });
function bigErf(x: number): unknown {
  const X = big.bignumber(x);
  const X2 = big.multiply(X, X);
  let term: unknown = X; // (−1)^n x^(2n+1) / n!
  let sum: unknown = big.bignumber(0);
  for (let n = 0; n < 2000; n++) {
    const add = big.divide(term as never, 2 * n + 1);
    sum = big.add(sum as never, add as never);
    if (big.smaller(big.abs(add as never), big.bignumber('1e-95'))) break;
    term = big.divide(big.multiply(term as never, big.unaryMinus(X2)) as never, n + 1);
  }
  return big.multiply(sum as never, big.divide(2, big.sqrt(big.pi as never)) as never);
}
const toNumber = (v: unknown) => big.number(v as never) as number;

/** `act'(x)` from mathjs: the symbolic derivative of the piece containing `x`. */
function oracleSlope(name: Elementwise, x: number): number {
  if (name === 'gelu') return 0.5 * (1 + mathjsErf(x / Math.SQRT2)) + (x * Math.exp(-0.5 * x * x)) / Math.sqrt(2 * Math.PI);
  const piece = PIECES[name].find((p) => x > p.lo && x < p.hi);
  if (!piece) throw new Error(`no smooth piece of ${name} holds ${x}`);
  return symbolicDerivative(piece.formula, 'x').evaluate({ x }) as number;
}

/** Points inside every piece, away from kinks and from the edges of the exponential's range. */
function samplePoints(name: Elementwise, rng: Rng, n: number): number[] {
  const pieces = name === 'gelu' ? [{ lo: -8, hi: 8 }] : PIECES[name];
  const xs: number[] = [];
  for (let i = 0; i < n; i++) {
    const p = pieces[i % pieces.length];
    xs.push(rng.uniform(p.lo + 1e-3, p.hi - 1e-3));
  }
  return xs;
}

/** The engine's primal, JVP slope (T = 1) and VJP slope at each point, saving what each rule needs. */
function engine(name: ActivationName, xs: readonly number[]) {
  const n = xs.length;
  const z = Float64Array.from(xs);
  const y = new Float64Array(n);
  activationForward(name, z, y, n, n);
  const needsZ = activationNeeds(name) === 'z';
  const jvp = new Float64Array(n).fill(1);
  activationJvp(name, needsZ ? z : null, needsZ ? null : y, jvp, n, 1, n);
  const vjp = new Float64Array(n);
  activationVjp(name, needsZ ? z : null, needsZ ? null : y, new Float64Array(n).fill(1), vjp, n, n);
  return { y, jvp, vjp };
}

describe('activations', () => {
  describe('every activation, four ways through the Activation layer', () => {
    for (const name of ACTIVATIONS) {
      it(`${name}: finite differences, adjoint identity, dual-number Jacobian = stacked VJPs`, () => {
        const rng = new Rng(17);
        const layer = new Activation({ activation: name }).build([2, 3]);
        checkDerivatives(layer, randomNormal([2, 2, 3], rng));
      });
    }
  });

  describe('fused in Dense and Conv2D (the layers save z for the activations whose rules read it)', () => {
    for (const name of ACTIVATIONS.filter((a) => activationNeeds(a) === 'z')) {
      it(`${name}: Dense and Conv2D derivatives, four ways`, () => {
        const rng = new Rng(5);
        checkDerivatives(new Dense({ units: 4, activation: name }).build([5], { rng }), randomNormal([3, 5], rng));
        checkDerivatives(new Conv2D({ filters: 2, kernel_size: 2, activation: name }).build([4, 4, 2], { rng }), randomNormal([2, 4, 4, 2], rng));
      });
    }

    it('Dense saves z only for those activations', () => {
      const rng = new Rng(6);
      const x = randomNormal([2, 3], rng);
      const withZ = new Dense({ units: 2, activation: 'gelu' }).build([3], { rng }).forward(x).saved;
      const withoutZ = new Dense({ units: 2, activation: 'elu' }).build([3], { rng }).forward(x).saved;
      expect(withZ.z, 'gelu saves z').to.not.equal(null);
      expect(withoutZ.z ?? null, 'elu derives its slope from y').to.equal(null);
    });
  });

  describe('exact case: derivatives against mathjs symbolic derivative()', () => {
    for (const name of ELEMENTWISE) {
      it(`${name}: JVP and VJP slopes equal the symbolic derivative at 40 points`, () => {
        const xs = samplePoints(name, new Rng(23), 40);
        const { jvp, vjp } = engine(name, xs);
        xs.forEach((x, i) => {
          const want = oracleSlope(name, x);
          expect(jvp[i], `jvp ${name}'(${x})`).to.be.allclose(want, { rtol: 1e-12, atol: 1e-15 });
          expect(vjp[i], `vjp ${name}'(${x})`).to.be.allclose(want, { rtol: 1e-12, atol: 1e-15 });
        });
      });

      it(`${name}: the Dual's primal and tangent equal Keras' formula and the symbolic derivative`, () => {
        const xs = samplePoints(name, new Rng(29), 40);
        for (const x of xs) {
          const d = Dual.variable(x).activation(name);
          expect(d.primal, `${name}(${x})`).to.be.allclose(KERAS[name](x), { rtol: 1e-12, atol: 1e-15 });
          expect(d.tangent, `${name}'(${x})`).to.be.allclose(oracleSlope(name, x), { rtol: 1e-12, atol: 1e-15 });
        }
      });
    }

    it('softmax: the JVP block equals the symbolic Jacobian of exp(z_k) / Σ exp(z_j)', () => {
      const L = 4;
      const z = [0.3, -1.1, 2.0, 0.5];
      const y = new Float64Array(L);
      activationForward('softmax', Float64Array.from(z), y, L, L);
      const block = new Float64Array(L * L);
      for (let k = 0; k < L; k++) block[k * L + k] = 1;
      activationJvp('softmax', null, y, block, L, L, L);
      const scope = Object.fromEntries(z.map((v, k) => [`z${k}`, v]));
      const S = z.map((_, k) => `exp(z${k})`).join(' + ');
      for (let k = 0; k < L; k++) {
        for (let j = 0; j < L; j++) {
          const want = symbolicDerivative(`exp(z${k}) / (${S})`, `z${j}`).evaluate(scope) as number;
          expect(block[k * L + j], `∂y${k}/∂z${j}`).to.be.allclose(want, { rtol: 1e-12, atol: 1e-15 });
        }
      }
    });
  });

  describe("values against Keras' definitions", () => {
    const POINTS = [-6, -3.5, -3, -1, -0.25, 0, 0.3, 1, 2.5, 3, 6, 7.5];
    for (const name of ELEMENTWISE) {
      it(`${name} at ${POINTS.length} points`, () => {
        const { y } = engine(name, POINTS);
        POINTS.forEach((x, i) => {
          // Exact gelu through 1 + erf cancels on the left, so the reference is only good to an absolute 1e-16.
          expect(y[i], `${name}(${x})`).to.be.allclose(KERAS[name](x), { rtol: 1e-14, atol: 1e-15 });
        });
      });
    }

    it('softmax of a row is exp(z) / Σ exp(z)', () => {
      const z = [1, 2, -3];
      const y = new Float64Array(3);
      activationForward('softmax', Float64Array.from(z), y, 3, 3);
      const s = z.reduce((a, v) => a + Math.exp(v), 0);
      z.forEach((v, k) => expect(y[k]).to.be.allclose(Math.exp(v) / s, { rtol: 1e-15, atol: 0 }));
    });

    it("keeps accuracy where Keras' naive formulas overflow or cancel", () => {
      const { y } = engine('softplus', [800, -800, -40]);
      expect(y[0]).to.equal(800);
      expect(y[1]).to.equal(0);
      expect(y[2]).to.be.allclose(Math.exp(-40), { rtol: 1e-15, atol: 0 });
      // gelu(−10) = −10 Φ(−10) = −5 erfc(10/√2): 1 + erf would give 0.
      const g = engine('gelu', [-10]).y[0];
      expect(g).to.be.allclose(-5 * toNumber(big.subtract(1, bigErf(10 / Math.SQRT2) as never)), { rtol: 1e-14, atol: 0 });
      expect(engine('swish', [40]).jvp[0], "swish'(40) = σ(40)(1 + 40 σ(−40))").to.be.allclose((1 / (1 + Math.exp(-40))) * (1 + 40 / (1 + Math.exp(40))), { rtol: 1e-15, atol: 0 });
    });
  });

  describe('NaN and infinities, as TensorFlow', () => {
    for (const name of ELEMENTWISE) {
      it(`${name}(NaN) is NaN (engine and Dual)`, () => {
        expect(engine(name, [Number.NaN]).y[0]).to.be.NaN;
        expect(Dual.variable(Number.NaN).activation(name).primal).to.be.NaN;
      });
    }

    it('softmax: a NaN poisons its own row only', () => {
      const y = new Float64Array(4);
      activationForward('softmax', Float64Array.from([Number.NaN, 1, 0, 1]), y, 4, 2);
      expect(y[0]).to.be.NaN;
      expect(y[1]).to.be.NaN;
      expect(y[2]).to.be.allclose(1 / (1 + Math.E), { rtol: 1e-15, atol: 0 });
    });

    it('relu and relu6 are max/min, so they keep NaN; the limits at ±∞ are the functions\' limits', () => {
      const cases: [Elementwise, number, number][] = [
        ['relu', Infinity, Infinity],
        ['relu', -Infinity, 0],
        ['relu6', Infinity, 6],
        ['relu6', -Infinity, 0],
        ['sigmoid', Infinity, 1],
        ['sigmoid', -Infinity, 0],
        ['tanh', -Infinity, -1],
        ['elu', -Infinity, -1],
        ['softplus', Infinity, Infinity],
        ['softplus', -Infinity, 0],
        ['hard_sigmoid', Infinity, 1],
        ['hard_sigmoid', -Infinity, 0],
        ['leaky_relu', -Infinity, -Infinity],
        ['exponential', -Infinity, 0],
        ['gelu', Infinity, Infinity],
        ['swish', Infinity, Infinity],
      ];
      for (const [name, x, want] of cases) {
        expect(engine(name, [x]).y[0], `${name}(${x})`).to.equal(want);
        expect(KERAS[name](x), `Keras' ${name}(${x})`).to.equal(want);
      }
    });

    it('the derivative rules take TF\'s side at the kinks', () => {
      const at = (name: Elementwise, x: number) => engine(name, [x]).jvp[0];
      expect(at('relu', 0)).to.equal(0);
      expect(at('relu6', 0)).to.equal(0);
      expect(at('relu6', 6)).to.equal(0);
      expect(at('hard_sigmoid', 3)).to.equal(0);
      expect(at('hard_sigmoid', -3)).to.equal(0);
      expect(at('leaky_relu', 0)).to.equal(0.2);
      expect(at('elu', 0)).to.equal(1);
      expect(at('selu', 0)).to.equal(KERAS_SELU_SCALE);
    });
  });

  it('relu\'s dual-number rule, in place and into a zero block, for a few and for many tangents: live rows kept, dead rows 0 even for a NaN tangent', () => {
    const y = Float64Array.from([2, 0, -0, 1e-300, Number.NaN, 3]); // 0, -0 and NaN are off, as the kink rule says
    const live = [true, false, false, true, false, true];
    for (const T of [3, 20]) {
      const src = randomNormal([6, T], new Rng(T)).data;
      src[T] = Number.NaN; // a dead unit's NaN tangent
      const inPlace = Float64Array.from(src);
      activationJvp('relu', null, y, inPlace, 6, T, 6);
      const into = new Float64Array(6 * T);
      activationJvpInto('relu', null, y, src, into, 6, T, 6);
      const want = Array.from(src, (v, i) => (live[Math.floor(i / T)] ? v : 0));
      expect(Array.from(inPlace), `in place, T=${T}`).to.deep.equal(want);
      expect(Array.from(into), `into, T=${T}`).to.deep.equal(want);
    }
  });

  describe('what the rules read', () => {
    it('an activation whose rules read z refuses to run without it, naming it', () => {
      for (const name of ACTIVATIONS.filter((a) => activationNeeds(a) === 'z')) {
        const y = new Float64Array(2);
        expect(() => activationJvp(name, null, y, new Float64Array(2), 2, 1, 2), name).to.throw(ShapeError, new RegExp(`activation ${name}: its derivative rule reads the saved pre-activation z of 2 elements, received none`));
        expect(() => activationVjp(name, null, y, y, new Float64Array(2), 2, 2), name).to.throw(ShapeError, /pre-activation z/);
      }
      expect(() => activationVjp('sigmoid', null, null, new Float64Array(2), new Float64Array(2), 2, 2)).to.throw(ShapeError, /reads the saved output y of 2 elements, received none/);
    });

    it('names: every Keras spelling accepted, unknown ones refused with the list', () => {
      for (const a of ACTIVATIONS) expect(activationName(a, 'Dense')).to.equal(a);
      expect(activationName(null, 'Dense')).to.equal('linear');
      expect(() => activationName('mish', 'Dense')).to.throw(ConfigError, /Dense: unknown activation "mish"; expected one of linear, relu, .*gelu_new/);
      expect(() => Dual.variable(1).activation('softmax')).to.throw(ConfigError, /softmax couples a whole row/);
    });

    it('gelu_new is the tanh approximation: close to gelu, not equal to it', () => {
      const xs = [-2, -1, 0.5, 1.5];
      const exact = engine('gelu', xs).y;
      const approx = engine('gelu_new', xs).y;
      xs.forEach((x, i) => {
        expect(Math.abs(exact[i] - approx[i]), `|gelu − gelu_new| at ${x}`).to.be.below(1e-3);
        expect(exact[i]).to.not.equal(approx[i]);
      });
    });

    it('a Dense with gelu from a Keras config keeps the name in its config', () => {
      expect(new Dense({ units: 2, activation: 'gelu_new' }).getConfig().activation).to.equal('gelu_new');
    });
  });

  describe('erf and erfc (W. J. Cody)', () => {
    it('erf to 1e-15 relative on [−6, 6], against the 100-digit series and mathjs\' erf', () => {
      const rng = new Rng(31);
      const xs = [0, 1e-300, 1e-10, 0.46875, 0.4687501, 4, 4.0000001, ...Array.from({ length: 60 }, () => rng.uniform(-6, 6))];
      for (const x of xs) {
        const want = toNumber(bigErf(x));
        expect(erf(x), `erf(${x})`).to.be.allclose(want, { rtol: 1e-15, atol: 0 });
        expect(erf(x), `erf(${x}) vs mathjs`).to.be.allclose(mathjsErf(x), { rtol: 2e-15, atol: 1e-300 });
      }
    });

    it('erfc to 1e-14 relative in the tails, where 1 − erf would have lost every digit', () => {
      const rng = new Rng(37);
      for (const x of [0.5, 1, 3.9, 4.1, 5.5, 8, ...Array.from({ length: 20 }, () => rng.uniform(0.47, 8))]) {
        const want = toNumber(big.subtract(1, bigErf(x) as never));
        expect(erfc(x), `erfc(${x})`).to.be.allclose(want, { rtol: 1e-14, atol: 0 });
        expect(erfc(-x), `erfc(${-x})`).to.be.allclose(2 - want, { rtol: 1e-15, atol: 0 });
      }
    });

    it('limits and NaN', () => {
      expect(erfc(30)).to.equal(0);
      expect(erfc(-30)).to.equal(2);
      expect(erf(Infinity)).to.equal(1);
      expect(erf(-Infinity)).to.equal(-1);
      expect(erf(Number.NaN)).to.be.NaN;
      expect(erfc(Number.NaN)).to.be.NaN;
      expect(erf(-0.7)).to.equal(-erf(0.7));
    });
  });
});

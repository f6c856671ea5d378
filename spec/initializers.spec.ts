import { erf as mathjsErf } from 'mathjs';
import { ConfigError, MemoryBudgetError, ShapeError } from '../lib/errors.js';
import { INITIALIZERS, type InitializerSpec, initialize, initializerFrom } from '../lib/initializers.js';
import { glorotUniform } from '../lib/layers/layer.js';
import { getMemoryBudget, setMemoryBudget } from '../lib/memory.js';
import { Rng } from '../lib/rng.js';
import type { Tensor } from '../lib/tensor.js';
import { expect } from './helpers/setup.js';

const N = 40000;
const FAN_IN = 50;
const FAN_OUT = 150;

/** Variance of a standard normal truncated to [−2, 2], from its density (not from the code's constant). */
const TRUNC2_VAR = 1 - (4 * Math.exp(-2)) / Math.sqrt(2 * Math.PI) / mathjsErf(Math.SQRT2);

function stats(t: Tensor) {
  const d = Array.from(t.data);
  const mean = d.reduce((a, b) => a + b, 0) / d.length;
  const variance = d.reduce((a, b) => a + (b - mean) ** 2, 0) / d.length;
  return { mean, variance, min: Math.min(...d), max: Math.max(...d) };
}

interface Expectation {
  spec: InitializerSpec;
  mean: number;
  variance: number;
  /** Every draw lies in [lo, hi] (uniform and truncated); for an untruncated normal, some draw lies beyond 2 sd. */
  bounds: [number, number] | 'untruncated';
}

// Keras' formulas written out for fan_in 50, fan_out 150 (fan_avg 100).
const EXPECTATIONS: Expectation[] = [
  { spec: 'glorot_uniform', mean: 0, variance: 2 / (FAN_IN + FAN_OUT), bounds: [-Math.sqrt(6 / 200), Math.sqrt(6 / 200)] },
  { spec: 'glorot_normal', mean: 0, variance: 1 / 100, bounds: [(-2 * 0.1) / Math.sqrt(TRUNC2_VAR), (2 * 0.1) / Math.sqrt(TRUNC2_VAR)] },
  { spec: 'he_uniform', mean: 0, variance: 2 / FAN_IN, bounds: [-Math.sqrt(6 / 50), Math.sqrt(6 / 50)] },
  { spec: 'he_normal', mean: 0, variance: 2 / FAN_IN, bounds: [(-2 * Math.sqrt(0.04)) / Math.sqrt(TRUNC2_VAR), (2 * Math.sqrt(0.04)) / Math.sqrt(TRUNC2_VAR)] },
  { spec: 'lecun_uniform', mean: 0, variance: 1 / FAN_IN, bounds: [-Math.sqrt(3 / 50), Math.sqrt(3 / 50)] },
  { spec: 'lecun_normal', mean: 0, variance: 1 / FAN_IN, bounds: [(-2 * Math.sqrt(0.02)) / Math.sqrt(TRUNC2_VAR), (2 * Math.sqrt(0.02)) / Math.sqrt(TRUNC2_VAR)] },
  { spec: { class_name: 'VarianceScaling', config: { scale: 3, mode: 'fan_out', distribution: 'untruncated_normal', seed: null } }, mean: 0, variance: 3 / FAN_OUT, bounds: 'untruncated' },
  { spec: { class_name: 'VarianceScaling', config: { scale: 0.5, mode: 'fan_avg', distribution: 'uniform' } }, mean: 0, variance: 0.5 / 100, bounds: [-Math.sqrt(1.5 / 100), Math.sqrt(1.5 / 100)] },
  { spec: { class_name: 'VarianceScaling', config: { scale: 2, mode: 'fan_in', distribution: 'truncated_normal' } }, mean: 0, variance: 2 / FAN_IN, bounds: [(-2 * 0.2) / Math.sqrt(TRUNC2_VAR), (2 * 0.2) / Math.sqrt(TRUNC2_VAR)] },
  { spec: { class_name: 'TruncatedNormal', config: { mean: 1, stddev: 0.5 } }, mean: 1, variance: 0.25 * TRUNC2_VAR, bounds: [0, 2] },
  { spec: { class_name: 'RandomUniform', config: { minval: -2, maxval: 1 } }, mean: -0.5, variance: 9 / 12, bounds: [-2, 1] },
  { spec: { class_name: 'RandomNormal', config: { mean: 0.5, stddev: 2 } }, mean: 0.5, variance: 4, bounds: 'untruncated' },
  { spec: 'random_uniform', mean: 0, variance: 0.1 ** 2 / 12, bounds: [-0.05, 0.05] },
];

describe('initializers', () => {
  describe("Keras' formulas, checked statistically on 40000 draws", () => {
    for (const e of EXPECTATIONS) {
      it(`${JSON.stringify(e.spec)}: mean ${e.mean}, variance ${e.variance.toPrecision(4)}`, () => {
        const t = initialize(e.spec, [200, 200], FAN_IN, FAN_OUT, new Rng(11));
        expect(t.shape).to.deep.equal([200, 200]);
        const s = stats(t);
        const sd = Math.sqrt(e.variance);
        // 5 standard errors of the mean; 4% on the variance (its standard error is ≤ √(2/N) ≈ 0.7%).
        expect(Math.abs(s.mean - e.mean), 'mean').to.be.below((5 * sd) / Math.sqrt(N));
        expect(s.variance, 'variance').to.be.allclose(e.variance, { rtol: 0.04, atol: 0 });
        if (e.bounds === 'untruncated') {
          expect(Math.max(e.mean - s.min, s.max - e.mean), 'an untruncated normal reaches past 2 sd').to.be.above(3 * sd);
        } else {
          expect(s.min, 'lower bound').to.be.at.least(e.bounds[0]);
          expect(s.max, 'upper bound').to.be.at.most(e.bounds[1]);
          // The draws fill the range: a narrower bound would fail this.
          expect(s.min - e.bounds[0], 'reaches the lower bound').to.be.below(0.02 * (e.bounds[1] - e.bounds[0]));
          expect(e.bounds[1] - s.max, 'reaches the upper bound').to.be.below(0.02 * (e.bounds[1] - e.bounds[0]));
        }
      });
    }

    it('zeros, ones and constant', () => {
      expect(Array.from(initialize('zeros', [3], 1, 1, new Rng(0)).data)).to.deep.equal([0, 0, 0]);
      expect(Array.from(initialize('Ones', [2], 1, 1, new Rng(0)).data)).to.deep.equal([1, 1]);
      expect(Array.from(initialize({ class_name: 'Constant', config: { value: 3.5 } }, [2], 1, 1, new Rng(0)).data)).to.deep.equal([3.5, 3.5]);
    });

    it('a fan below 1 is taken as 1 (Keras: max(1, fan))', () => {
      const t = initialize('he_uniform', [4000], 0, 0, new Rng(2));
      expect(stats(t).max).to.be.at.most(Math.sqrt(6)).and.above(Math.sqrt(6) * 0.98);
    });
  });

  describe('glorot_uniform draws exactly what layer.ts\' glorotUniform draws', () => {
    for (const dtype of ['float64', 'float32'] as const) {
      it(`same Rng seed → identical values (${dtype}), through every config form`, () => {
        const want = Array.from(glorotUniform([7, 13], 7, 13, new Rng(42), dtype).data);
        const forms: InitializerSpec[] = [
          'glorot_uniform',
          'GlorotUniform',
          { class_name: 'GlorotUniform', config: { seed: null } },
          { module: 'keras.initializers', class_name: 'GlorotUniform', config: { seed: null }, registered_name: null },
          { class_name: 'VarianceScaling', config: { scale: 1, mode: 'fan_avg', distribution: 'uniform', seed: null } },
          { name: 'glorot_uniform' },
        ];
        for (const f of forms) {
          const got = initialize(f, [7, 13], 7, 13, new Rng(42), dtype);
          expect(got.data, JSON.stringify(f)).to.be.instanceOf(dtype === 'float32' ? Float32Array : Float64Array);
          expect(Array.from(got.data), JSON.stringify(f)).to.deep.equal(want);
        }
      });
    }
  });

  describe('seeding', () => {
    it('the same Rng seed gives the same draws, another seed others', () => {
      for (const name of INITIALIZERS.filter((n) => !['zeros', 'ones', 'constant'].includes(n))) {
        const a = Array.from(initialize(name, [50], 10, 10, new Rng(5)).data);
        const b = Array.from(initialize(name, [50], 10, 10, new Rng(5)).data);
        const c = Array.from(initialize(name, [50], 10, 10, new Rng(6)).data);
        expect(a, name).to.deep.equal(b);
        expect(a, name).to.not.deep.equal(c);
      }
    });

    it("a seed in the config is honoured: every call draws the same values, whatever rng is passed", () => {
      const spec = { class_name: 'HeNormal', config: { seed: 7 } };
      const a = Array.from(initialize(spec, [30], 10, 10, new Rng(1)).data);
      const b = Array.from(initialize(spec, [30], 10, 10, new Rng(2)).data);
      expect(a).to.deep.equal(b);
      expect(a).to.deep.equal(Array.from(initialize('he_normal', [30], 10, 10, new Rng(7)).data));
      expect(a).to.not.deep.equal(Array.from(initialize({ class_name: 'HeNormal', config: { seed: 8 } }, [30], 10, 10, new Rng(1)).data));
      expect(initializerFrom(spec).config).to.deep.equal({ seed: 7 });
    });
  });

  describe('refusals, naming what was received', () => {
    it('unknown and unsupported initializers', () => {
      expect(() => initializerFrom('orthogonal')).to.throw(ConfigError, /initializer "orthogonal" is not supported/);
      expect(() => initializerFrom({ class_name: 'Orthogonal', config: { gain: 1 } })).to.throw(ConfigError, /initializer "Orthogonal" is not supported/);
      expect(() => initializerFrom('xavier')).to.throw(ConfigError, /unknown initializer "xavier"; expected one of glorot_uniform, glorot_normal/);
      expect(() => initializerFrom(3 as never)).to.throw(ConfigError, /initializer: expected a name .* received 3/);
    });

    it('unknown config keys and bad values', () => {
      expect(() => initializerFrom({ class_name: 'RandomUniform', config: { minval: 0, max: 1 } })).to.throw(ConfigError, /initializer random_uniform: unknown config key\(s\) "max"; expected minval, maxval, seed/);
      expect(() => initializerFrom({ class_name: 'GlorotUniform', config: { scale: 2 } })).to.throw(ConfigError, /unknown config key\(s\) "scale"; expected seed/);
      expect(() => initializerFrom({ class_name: 'VarianceScaling', config: { mode: 'fan_sum' } })).to.throw(ConfigError, /expected mode "fan_in", "fan_out" or "fan_avg", received "fan_sum"/);
      expect(() => initializerFrom({ class_name: 'VarianceScaling', config: { distribution: 'cauchy' } })).to.throw(ConfigError, /expected distribution .* received "cauchy"/);
      expect(() => initializerFrom({ class_name: 'VarianceScaling', config: { scale: -1 } })).to.throw(ConfigError, /expected scale to be a positive finite number, received -1/);
      expect(() => initializerFrom({ class_name: 'HeNormal', config: { seed: -3 } })).to.throw(ConfigError, /expected seed to be a non-negative integer or null, received -3/);
      expect(() => initializerFrom({ class_name: 'RandomUniform', config: { minval: 1, maxval: 0 } })).to.throw(ConfigError, /expected minval <= maxval, received minval 1 and maxval 0/);
      expect(() => initializerFrom({ class_name: 'Zeros', config: {}, extra: 1 } as never)).to.throw(ConfigError, /unknown key\(s\) "extra"/);
      expect(() => initialize('zeros', [2, -1], 1, 1, new Rng(0))).to.throw(ShapeError, /expected a shape of non-negative integers, received \[2, -1\]/);
      expect(() => initialize('he_uniform', [2], Number.NaN, 1, new Rng(0))).to.throw(ConfigError, /expected non-negative finite fans, received fanIn NaN/);
    });

    it('VarianceScaling reads distribution "normal" as the truncated normal, as Keras does', () => {
      const a = Array.from(initialize({ class_name: 'VarianceScaling', config: { distribution: 'normal' } }, [40], 5, 5, new Rng(3)).data);
      const b = Array.from(initialize({ class_name: 'VarianceScaling', config: { distribution: 'truncated_normal' } }, [40], 5, 5, new Rng(3)).data);
      expect(a).to.deep.equal(b);
    });
  });

  describe('the memory budget, checked before allocating', () => {
    it('a Dense kernel with 1e9 units is refused, not a crash', () => {
      expect(() => initialize('glorot_uniform', [128, 1e9], 128, 1e9, new Rng(0))).to.throw(MemoryBudgetError, /initializer glorot_uniform for a parameter of shape \[128, 1000000000\]: needs an estimated .* over the memory budget/);
    });

    it('follows setMemoryBudget, counting 4 bytes per float32 value', () => {
      const before = getMemoryBudget();
      try {
        setMemoryBudget(800);
        expect(() => initialize('ones', [101], 1, 1, new Rng(0))).to.throw(MemoryBudgetError, /808 bytes/);
        expect(initialize('ones', [100], 1, 1, new Rng(0)).size).to.equal(100);
        expect(initialize('ones', [200], 1, 1, new Rng(0), 'float32').size).to.equal(200);
      } finally {
        setMemoryBudget(before);
      }
    });
  });
});

/**
 * Weight initializers as Keras defines them, drawn from this package's seeded {@link Rng}: the
 * variance-scaling family (Glorot, He, LeCun; uniform, truncated and untruncated normal), fixed
 * distributions (`random_uniform`, `random_normal`, `truncated_normal`) and constants.
 *
 * An initializer is named as a Keras config names it: a string (`'glorot_uniform'` or the class
 * name `'GlorotUniform'`), Keras 2 / TF.js' `{ class_name: 'VarianceScaling', config: {...} }`,
 * Keras 3's `{ module: 'keras.initializers', class_name, config, registered_name }`, or
 * `{ name: 'variance_scaling', scale: 2 }` (this package's config form, as losses take it).
 *
 * The formulas are Keras 3's; the random streams are this package's (xoshiro128**, Box–Muller),
 * so the same seed gives the same numbers on every machine but not Keras' numbers. A `seed` in the
 * config is honoured as Keras 3 does: every call draws from a fresh `Rng(seed)`, so a seeded
 * initializer gives the same values each time; without one, values come from the `rng` passed in.
 * @module
 */
import { ConfigError, ShapeError, fmtShape, fmtValue } from './errors.js';
import { getMemoryBudget, guardBytes } from './memory.js';
import { Rng } from './rng.js';
import { allocData, type Data, type DType, type Tensor, tensor } from './tensor.js';

/** Keras' initializer names (snake_case), those this module draws. */
export const INITIALIZERS = [
  'glorot_uniform',
  'glorot_normal',
  'he_uniform',
  'he_normal',
  'lecun_uniform',
  'lecun_normal',
  'variance_scaling',
  'truncated_normal',
  'random_uniform',
  'random_normal',
  'zeros',
  'ones',
  'constant',
] as const;
/** One of {@link INITIALIZERS}. */
export type InitializerName = (typeof INITIALIZERS)[number];

/** Initializers Keras has that this module refuses (named in the error, so a model file says why it cannot load). */
export const REFUSED_INITIALIZERS = ['orthogonal', 'identity'] as const;

/**
 * The standard deviation of a standard normal truncated to `[−2, 2]`, as Keras' VarianceScaling
 * divides by it so that the truncated draws keep the intended variance.
 */
export const TRUNCATED_NORMAL_STDDEV = 0.87962566103423978;

const CLASS_NAMES: Record<string, InitializerName | (typeof REFUSED_INITIALIZERS)[number]> = {
  GlorotUniform: 'glorot_uniform',
  GlorotNormal: 'glorot_normal',
  HeUniform: 'he_uniform',
  HeNormal: 'he_normal',
  LecunUniform: 'lecun_uniform',
  LecunNormal: 'lecun_normal',
  VarianceScaling: 'variance_scaling',
  TruncatedNormal: 'truncated_normal',
  RandomUniform: 'random_uniform',
  RandomNormal: 'random_normal',
  Zeros: 'zeros',
  Ones: 'ones',
  Constant: 'constant',
  Orthogonal: 'orthogonal',
  Identity: 'identity',
};

/** Keras' short aliases. */
const ALIASES: Record<string, InitializerName> = { zero: 'zeros', one: 'ones', uniform: 'random_uniform', normal: 'random_normal' };

/** Keras' config keys of each initializer. */
const KEYS: Record<InitializerName, readonly string[]> = {
  glorot_uniform: ['seed'],
  glorot_normal: ['seed'],
  he_uniform: ['seed'],
  he_normal: ['seed'],
  lecun_uniform: ['seed'],
  lecun_normal: ['seed'],
  variance_scaling: ['scale', 'mode', 'distribution', 'seed'],
  truncated_normal: ['mean', 'stddev', 'seed'],
  random_uniform: ['minval', 'maxval', 'seed'],
  random_normal: ['mean', 'stddev', 'seed'],
  zeros: [],
  ones: [],
  constant: ['value'],
};

/** The fan a variance-scaling initializer divides by. */
export type FanMode = 'fan_in' | 'fan_out' | 'fan_avg';
/** The distribution a variance-scaling initializer draws from. */
export type VarianceDistribution = 'truncated_normal' | 'untruncated_normal' | 'uniform';

/** Keras' serialized initializer (Keras 2 / TF.js: `class_name` and `config`; Keras 3 adds `module` and `registered_name`). */
export interface KerasInitializerConfig {
  /** `GlorotUniform`, `VarianceScaling`, ... */
  class_name: string;
  /** The class's constructor arguments, snake_case. */
  config?: Record<string, unknown> | null;
  /** Keras 3's module, e.g. `keras.initializers`. */
  module?: string | null;
  /** Keras 3's registered name (null for built-ins). */
  registered_name?: string | null;
}

/** This package's config form: `{ name: 'random_uniform', minval: -1, maxval: 1 }`. */
export interface InitializerConfig {
  /** A name of {@link INITIALIZERS} (or a Keras class name). */
  name: string;
  /** That initializer's Keras options. */
  [option: string]: unknown;
}

/** Anything {@link initializerFrom} resolves. */
export type InitializerSpec = string | KerasInitializerConfig | InitializerConfig;

/** A resolved initializer: its name, its checked options, and how it fills a buffer. */
export interface Initializer {
  /** The snake_case name. */
  readonly name: InitializerName;
  /** The options in force, Keras' keys (defaults filled in). */
  readonly config: Readonly<Record<string, unknown>>;
  /** Writes `data.length` values for a parameter with these fans, drawing from `rng` (or from the config's seed). */
  fill(data: Data, fanIn: number, fanOut: number, rng: Rng): void;
}

/**
 * Resolves an initializer spec (string, Keras 2 / TF.js or Keras 3 serialized form, or
 * `{ name, ...options }`) into an {@link Initializer}, checking every option.
 * @throws ConfigError naming what was received: an unknown or refused initializer, an unknown
 * config key, or a bad value.
 * @example
 * initializerFrom({ class_name: 'VarianceScaling', config: { scale: 2, mode: 'fan_in', distribution: 'uniform' } });
 */
export function initializerFrom(spec: InitializerSpec): Initializer {
  let rawName: unknown;
  let options: Record<string, unknown>;
  if (typeof spec === 'string') {
    rawName = spec;
    options = {};
  } else if (spec !== null && typeof spec === 'object' && !Array.isArray(spec) && 'class_name' in spec) {
    const extra = Object.keys(spec).filter((k) => !['class_name', 'config', 'module', 'registered_name'].includes(k));
    if (extra.length) throw new ConfigError(`initializer ${fmtValue(spec.class_name)}: unknown key(s) ${extra.map((k) => fmtValue(k)).join(', ')}; expected class_name, config, module, registered_name`);
    rawName = spec.class_name;
    const c = spec.config ?? {};
    if (typeof c !== 'object' || Array.isArray(c)) throw new ConfigError(`initializer ${fmtValue(spec.class_name)}: expected config to be an object, received ${fmtValue(c)}`);
    options = c as Record<string, unknown>;
  } else if (spec !== null && typeof spec === 'object' && !Array.isArray(spec) && 'name' in spec) {
    const { name, ...rest } = spec as InitializerConfig;
    rawName = name;
    options = rest;
  } else {
    throw new ConfigError(`initializer: expected a name such as "glorot_uniform", Keras' { class_name, config } or { name, ...options }, received ${fmtValue(spec)}`);
  }
  const name = canonicalName(rawName);
  const allowed = KEYS[name];
  const unknown = Object.keys(options).filter((k) => !allowed.includes(k));
  if (unknown.length) throw new ConfigError(`initializer ${name}: unknown config key(s) ${unknown.map((k) => fmtValue(k)).join(', ')}; expected ${allowed.length ? allowed.join(', ') : 'none'}`);
  return build(name, options);
}

/** The snake_case name of a string Keras accepts, or a ConfigError. */
function canonicalName(v: unknown): InitializerName {
  if (typeof v === 'string') {
    const n = Object.hasOwn(CLASS_NAMES, v) ? CLASS_NAMES[v] : Object.hasOwn(ALIASES, v) ? ALIASES[v] : v;
    if ((REFUSED_INITIALIZERS as readonly string[]).includes(n)) {
      throw new ConfigError(`initializer ${fmtValue(v)} is not supported (it is not an element-wise draw); expected one of ${INITIALIZERS.join(', ')}`);
    }
    if ((INITIALIZERS as readonly string[]).includes(n)) return n as InitializerName;
  }
  throw new ConfigError(`unknown initializer ${fmtValue(v)}; expected one of ${INITIALIZERS.join(', ')} (or their Keras class names, e.g. GlorotUniform)`);
}

function num(options: Record<string, unknown>, key: string, dflt: number, name: string, check: (v: number) => boolean = () => true, expect = 'a finite number'): number {
  const v = options[key];
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isFinite(v) || !check(v)) throw new ConfigError(`initializer ${name}: expected ${key} to be ${expect}, received ${fmtNumber(v)}`);
  return v;
}

/** The seed of a config: null (draw from the caller's rng) or a non-negative integer. */
function seedOf(options: Record<string, unknown>, name: string): number | null {
  const s = options.seed;
  if (s === undefined || s === null) return null;
  if (typeof s !== 'number' || !Number.isInteger(s) || s < 0) throw new ConfigError(`initializer ${name}: expected seed to be a non-negative integer or null, received ${fmtValue(s)}`);
  return s;
}

/** Keras' variance-scaling presets. */
const PRESETS: Partial<Record<InitializerName, [number, FanMode, VarianceDistribution]>> = {
  glorot_uniform: [1, 'fan_avg', 'uniform'],
  glorot_normal: [1, 'fan_avg', 'truncated_normal'],
  he_uniform: [2, 'fan_in', 'uniform'],
  he_normal: [2, 'fan_in', 'truncated_normal'],
  lecun_uniform: [1, 'fan_in', 'uniform'],
  lecun_normal: [1, 'fan_in', 'truncated_normal'],
};

function build(name: InitializerName, options: Record<string, unknown>): Initializer {
  const seed = seedOf(options, name);
  const source = (rng: Rng): Rng => (seed === null ? rng : new Rng(seed));
  const withSeed = (c: Record<string, unknown>) => (KEYS[name].includes('seed') ? { ...c, seed } : c);
  const preset = PRESETS[name];
  if (preset || name === 'variance_scaling') {
    let [scale, mode, distribution] = preset ?? [1, 'fan_in' as FanMode, 'truncated_normal' as VarianceDistribution];
    if (!preset) {
      scale = num(options, 'scale', 1, name, (v) => v > 0, 'a positive finite number');
      const m = options.mode ?? 'fan_in';
      if (m !== 'fan_in' && m !== 'fan_out' && m !== 'fan_avg') throw new ConfigError(`initializer ${name}: expected mode "fan_in", "fan_out" or "fan_avg", received ${fmtValue(m)}`);
      mode = m;
      // Keras (and TF.js) read "normal" as the truncated normal.
      const d = options.distribution === 'normal' ? 'truncated_normal' : (options.distribution ?? 'truncated_normal');
      if (d !== 'truncated_normal' && d !== 'untruncated_normal' && d !== 'uniform') {
        throw new ConfigError(`initializer ${name}: expected distribution "truncated_normal", "untruncated_normal" or "uniform", received ${fmtValue(options.distribution)}`);
      }
      distribution = d;
    }
    const config = withSeed(preset ? {} : { scale, mode, distribution });
    return {
      name,
      config,
      fill(data, fanIn, fanOut, rng) {
        checkFans(name, fanIn, fanOut);
        const fan = Math.max(1, mode === 'fan_in' ? fanIn : mode === 'fan_out' ? fanOut : (fanIn + fanOut) / 2);
        const r = source(rng);
        if (distribution === 'uniform') {
          // (3·scale)/fan in one division: for Glorot that is the same rounding as √(6/(in + out)).
          const limit = Math.sqrt((3 * scale) / fan);
          for (let i = 0; i < data.length; i++) data[i] = r.uniform(-limit, limit);
        } else if (distribution === 'untruncated_normal') {
          const sd = Math.sqrt(scale / fan);
          for (let i = 0; i < data.length; i++) data[i] = sd * r.normal();
        } else {
          const sd = Math.sqrt(scale / fan) / TRUNCATED_NORMAL_STDDEV;
          for (let i = 0; i < data.length; i++) data[i] = sd * truncatedStandardNormal(r);
        }
      },
    };
  }
  switch (name) {
    case 'truncated_normal':
    case 'random_normal': {
      const mean = num(options, 'mean', 0, name);
      const stddev = num(options, 'stddev', 0.05, name, (v) => v >= 0, 'a non-negative finite number');
      const truncated = name === 'truncated_normal';
      return {
        name,
        config: withSeed({ mean, stddev }),
        fill(data, _fanIn, _fanOut, rng) {
          const r = source(rng);
          for (let i = 0; i < data.length; i++) data[i] = mean + stddev * (truncated ? truncatedStandardNormal(r) : r.normal());
        },
      };
    }
    case 'random_uniform': {
      const minval = num(options, 'minval', -0.05, name);
      const maxval = num(options, 'maxval', 0.05, name);
      if (!(minval <= maxval)) throw new ConfigError(`initializer ${name}: expected minval <= maxval, received minval ${minval} and maxval ${maxval}`);
      return {
        name,
        config: withSeed({ minval, maxval }),
        fill(data, _fanIn, _fanOut, rng) {
          const r = source(rng);
          for (let i = 0; i < data.length; i++) data[i] = r.uniform(minval, maxval);
        },
      };
    }
    case 'zeros':
    case 'ones':
    case 'constant': {
      const value = name === 'zeros' ? 0 : name === 'ones' ? 1 : num(options, 'value', 0, name);
      return { name, config: name === 'constant' ? { value } : {}, fill: (data) => void data.fill(value) };
    }
    default:
      throw new ConfigError(`unknown initializer ${fmtValue(name)}`);
  }
}

/** A standard normal draw redrawn until it lies within 2 standard deviations (TensorFlow's truncated normal). */
function truncatedStandardNormal(rng: Rng): number {
  for (;;) {
    const v = rng.normal();
    if (v >= -2 && v <= 2) return v;
  }
}

/** A number as an error quotes it (fmtValue would print NaN as JSON's null). */
function fmtNumber(v: unknown): string {
  return typeof v === 'number' ? String(v) : fmtValue(v);
}

function checkFans(name: string, fanIn: number, fanOut: number): void {
  if (!(fanIn >= 0) || !(fanOut >= 0) || !Number.isFinite(fanIn) || !Number.isFinite(fanOut)) {
    throw new ConfigError(`initializer ${name}: expected non-negative finite fans, received fanIn ${fmtNumber(fanIn)} and fanOut ${fmtNumber(fanOut)}`);
  }
}

/**
 * A parameter tensor of `shape` drawn by an initializer, for a parameter with these fans:
 * refuses a size over the memory budget before allocating, then fills a typed array directly.
 * `initialize('glorot_uniform', …)` draws exactly the numbers of `glorotUniform` in
 * `lib/layers/layer.ts` for the same `Rng` state.
 * @throws ConfigError for a bad spec; ShapeError for a bad shape; MemoryBudgetError when the
 * tensor would exceed the memory budget.
 * @example
 * const W = initialize('he_normal', [784, 128], 784, 128, new Rng(0)); // W: [784, 128]
 */
export function initialize(spec: InitializerSpec | Initializer, shape: readonly number[], fanIn: number, fanOut: number, rng: Rng, dtype: DType = 'float64'): Tensor {
  const init = isInitializer(spec) ? spec : initializerFrom(spec);
  if (!Array.isArray(shape) || shape.some((d) => !Number.isInteger(d) || d < 0)) throw new ShapeError(`initializer ${init.name}: expected a shape of non-negative integers, received ${Array.isArray(shape) ? fmtShape(shape) : fmtValue(shape)}`);
  if (dtype !== 'float64' && dtype !== 'float32') throw new ConfigError(`initializer ${init.name}: expected dtype "float64" or "float32", received ${fmtValue(dtype)}`);
  if (!(rng instanceof Rng)) throw new ConfigError(`initializer ${init.name}: expected an Rng to draw from, received ${fmtValue(rng)}`);
  let n = 1;
  for (const d of shape) n *= d;
  const bytes = n * (dtype === 'float32' ? 4 : 8);
  guardBytes(`initializer ${init.name} for a parameter of shape ${fmtShape(shape)}`, bytes, getMemoryBudget(), 'use fewer units or filters');
  const data = allocData(n, dtype, `initializer ${init.name} for a parameter of shape ${fmtShape(shape)}`);
  init.fill(data, fanIn, fanOut, rng);
  return tensor(data, shape, dtype);
}

function isInitializer(v: unknown): v is Initializer {
  return typeof v === 'object' && v !== null && typeof (v as Initializer).fill === 'function';
}

/**
 * Optimizers with Keras 3 semantics: SGD (plain, momentum, Nesterov) and Adam (bias correction
 * folded into the step size, epsilon outside the square root, as Keras writes it).
 *
 * State (velocity, moments, step count) is kept per {@link Param} object, so one optimizer may be
 * shared by every stage of a split model or each stage may own one: both give the same steps,
 * because a parameter's state and its step count travel with the parameter, not with the call.
 * @module
 */
import { ConfigError, ShapeError, fmtShape, fmtValue } from './errors.js';
import { type Param, isTrainable } from './layers/layer.js';
import { type Tensor, assertFinite, contiguous, dtypeOf, tensor } from './tensor.js';

/** Anything that turns gradients into parameter updates. */
export interface Optimizer {
  /** `sgd` or `adam`, as Keras names them. */
  readonly name: string;
  /** The step size. */
  readonly learningRate: number;
  /**
   * One update of `params` from `grads` (same order, same shapes): each trainable `param.value`
   * is replaced by its updated value; a non-trainable one is skipped (its gradient may be null).
   * Every gradient is checked (shape, finite values) before any weight changes, so a refused step
   * leaves the weights and the optimizer state as they were.
   */
  step(params: readonly Param[], grads: readonly (Tensor | null)[]): void;
  /** Steps applied so far to a parameter (0 for one never seen). */
  iterationsOf(param: Param): number;
  /** The Keras config (snake_case) that rebuilds this optimizer. */
  getConfig(): Record<string, unknown>;
  /** The state this optimizer holds for `params` (its slots, in order; null for a parameter never stepped), for a checkpoint. */
  saveState(params: readonly Param[]): (OptimizerSlots | null)[];
  /** Restores what {@link Optimizer.saveState} returned for the same `params` (shapes checked), replacing their slots. */
  loadState(params: readonly Param[], state: readonly (OptimizerSlots | null)[]): void;
}

/** What an optimizer holds for one parameter: its step count and slot buffers (copies). */
export interface OptimizerSlots {
  /** Steps taken by the parameter. */
  t: number;
  /** SGD velocity, or Adam's first moment, `[...param]` flattened. */
  a: Float64Array;
  /** Adam's second moment (empty for SGD). */
  b: Float64Array;
}

/** Keras config of {@link SGD}. */
export interface SGDConfig {
  /** Default 0.01, as Keras. */
  learning_rate?: number;
  /** In `[0, 1]`; default 0 (plain gradient descent). */
  momentum?: number;
  /** Nesterov momentum; default false. */
  nesterov?: boolean;
}

/** Keras config of {@link Adam}. */
export interface AdamConfig {
  /** Default 0.001, as Keras. */
  learning_rate?: number;
  /** In `[0, 1)`; default 0.9. */
  beta_1?: number;
  /** In `[0, 1)`; default 0.999. */
  beta_2?: number;
  /** Added to `sqrt(v)`; default 1e-7, as Keras. */
  epsilon?: number;
}

/** Any optimizer config with its name: `{"name": "sgd", "learning_rate": 0.5}` (the fixtures' `training.optimizer`). */
export type OptimizerConfig = ({
  /** Keras' name of {@link SGD}. */
  name: 'sgd'
} & SGDConfig) | ({
  /** Keras' name of {@link Adam}. */
  name: 'adam'
} & AdamConfig);

/**
 * Checks a learning rate by type and value: a finite number greater than zero, else a ConfigError
 * (a learning rate of 0, -1, NaN or "0.1" is a mistake, caught before any step).
 * @example
 * checkLearningRate(-1, 'SGD'); // ConfigError: SGD: expected learning_rate to be a positive finite number, received -1
 */
export function checkLearningRate(v: unknown, where: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
    throw new ConfigError(`${where}: expected learning_rate to be a positive finite number, received ${fmtValue(v)}`);
  }
  return v;
}

function checkUnit(v: unknown, key: string, where: string, closed: boolean): number {
  const ok = typeof v === 'number' && Number.isFinite(v) && v >= 0 && (closed ? v <= 1 : v < 1);
  if (!ok) throw new ConfigError(`${where}: expected ${key} to be a number in [0, 1${closed ? ']' : ')'}, received ${fmtValue(v)}`);
  return v as number;
}

function checkKeys(config: object, known: readonly string[], where: string): void {
  for (const k of Object.keys(config)) {
    if (!known.includes(k)) throw new ConfigError(`${where}: unknown option ${JSON.stringify(k)}; expected one of ${known.join(', ')}`);
  }
}

/** Per-parameter optimizer state: the slot buffers and how many steps the parameter has taken. */
interface Slots {
  /** Steps taken by this parameter (Keras' `iterations`, per parameter). */
  t: number;
  /** SGD velocity, or Adam's first moment `m`. */
  a: Float64Array;
  /** Adam's second moment `v` (empty for SGD). */
  b: Float64Array;
}

/** Shared bookkeeping: shape checks and the per-parameter slots. */
abstract class BaseOptimizer implements Optimizer {
  abstract readonly name: string;
  abstract readonly learningRate: number;
  private readonly slots = new Map<Param, Slots>();

  step(params: readonly Param[], grads: readonly (Tensor | null)[]): void {
    if (params.length !== grads.length) {
      throw new ShapeError(`${this.name}.step: expected one gradient per parameter (${params.length}), received ${grads.length}`);
    }
    // Check everything before touching anything, so a bad gradient cannot leave a half-applied step.
    params.forEach((p, k) => {
      const g = grads[k];
      // A non-trainable parameter (state, or a frozen layer's) is never updated: its gradient, null or not, is not read.
      if (!isTrainable(p)) return;
      if (g === null) throw new ShapeError(`${this.name}.step: gradient ${k} (${p.name}): expected a tensor of shape ${fmtShape(p.value.shape)} for a trainable parameter, received null`);
      if (!g || typeof g !== 'object' || !Array.isArray(g.shape) || !g.data) {
        throw new ShapeError(`${this.name}.step: gradient ${k} (${p.name}): expected a tensor, received ${fmtValue(g)}`);
      }
      if (g.shape.length !== p.value.shape.length || g.shape.some((d, i) => d !== p.value.shape[i])) {
        throw new ShapeError(`${this.name}.step: gradient ${k} (${p.name}): expected shape ${fmtShape(p.value.shape)}, received ${fmtShape(g.shape)}`);
      }
      // One NaN would spread through the moments into every later step: refused here, by index.
      assertFinite(g, `${this.name}.step: gradient ${k} (${p.name})`);
    });
    params.forEach((p, k) => {
      if (!isTrainable(p)) return;
      let s = this.slots.get(p);
      if (!s) {
        s = { t: 0, a: new Float64Array(p.value.size), b: new Float64Array(this.usesSecondMoment() ? p.value.size : 0) };
        this.slots.set(p, s);
      }
      s.t += 1;
      const w = contiguous(p.value);
      const out = Float64Array.from(w.data.subarray(w.offset, w.offset + w.size));
      const g = contiguous(grads[k]!);
      this.update(out, g.data.subarray(g.offset, g.offset + g.size), s);
      p.value = tensor(out, p.value.shape, dtypeOf(p.value));
    });
  }

  iterationsOf(param: Param): number {
    return this.slots.get(param)?.t ?? 0;
  }

  saveState(params: readonly Param[]): (OptimizerSlots | null)[] {
    return params.map((p) => {
      const s = this.slots.get(p);
      return s ? { t: s.t, a: s.a.slice(), b: s.b.slice() } : null;
    });
  }

  loadState(params: readonly Param[], state: readonly (OptimizerSlots | null)[]): void {
    if (!Array.isArray(state) || state.length !== params.length) throw new ShapeError(`${this.name}.loadState: expected one entry per parameter (${params.length}), received ${Array.isArray(state) ? state.length : fmtValue(state)}`);
    // Everything checked before any slot is replaced.
    state.forEach((s, k) => {
      if (s === null) return;
      const n = params[k].value.size;
      const nb = this.usesSecondMoment() ? n : 0;
      if (!Number.isSafeInteger(s.t) || s.t < 0 || !(s.a instanceof Float64Array) || s.a.length !== n || !(s.b instanceof Float64Array) || s.b.length !== nb) {
        throw new ShapeError(`${this.name}.loadState: parameter ${k} (${params[k].name}): expected {t, a: ${n} values, b: ${nb} values}, received {t: ${fmtValue(s.t)}, a: ${s.a?.length}, b: ${s.b?.length}}`);
      }
    });
    params.forEach((p, k) => {
      const s = state[k];
      if (s === null) this.slots.delete(p);
      else this.slots.set(p, { t: s.t, a: s.a.slice(), b: s.b.slice() });
    });
  }

  /** Whether the slots need a second buffer. */
  protected abstract usesSecondMoment(): boolean;
  /** Updates `w` in place from `g`, with the parameter's slots (`s.t` already counts this step). */
  protected abstract update(w: Float64Array, g: ArrayLike<number>, s: Slots): void;
  abstract getConfig(): Record<string, unknown>;
}

/**
 * Stochastic gradient descent as Keras: `w -= lr·g`; with momentum `v = momentum·v - lr·g`,
 * `w += v`; with Nesterov `w += momentum·v - lr·g` (using the updated `v`).
 * @example
 * const opt = new SGD({ learning_rate: 0.1, momentum: 0.9 });
 * opt.step(model.params, grads); // every param.value replaced by its update
 */
export class SGD extends BaseOptimizer {
  /** `sgd`, as Keras names it. */
  readonly name = 'sgd';
  /** The step size. */
  readonly learningRate: number;
  /** Momentum in `[0, 1]`; 0 for plain gradient descent. */
  readonly momentum: number;
  /** Whether the momentum is Nesterov's. */
  readonly nesterov: boolean;

  constructor(config: SGDConfig = {}) {
    super();
    checkKeys(config, ['learning_rate', 'momentum', 'nesterov', 'name'], 'SGD');
    this.learningRate = checkLearningRate(config.learning_rate ?? 0.01, 'SGD');
    this.momentum = checkUnit(config.momentum ?? 0, 'momentum', 'SGD', true);
    if (config.nesterov !== undefined && typeof config.nesterov !== 'boolean') {
      throw new ConfigError(`SGD: expected nesterov to be a boolean, received ${fmtValue(config.nesterov)}`);
    }
    this.nesterov = config.nesterov ?? false;
  }

  protected usesSecondMoment(): boolean {
    return false;
  }

  protected update(w: Float64Array, g: ArrayLike<number>, s: Slots): void {
    const lr = this.learningRate;
    const m = this.momentum;
    const v = s.a;
    if (m === 0) {
      for (let i = 0; i < w.length; i++) w[i] -= g[i] * lr;
      return;
    }
    // Same operation order as Keras' `m.assign(-g * lr + m * momentum)`, so rounding agrees too.
    for (let i = 0; i < w.length; i++) {
      v[i] = -g[i] * lr + v[i] * m;
      w[i] += this.nesterov ? -g[i] * lr + v[i] * m : v[i];
    }
  }

  /** The Keras config (`learning_rate`, `momentum`, `nesterov`) that rebuilds this optimizer. */
  getConfig(): Record<string, unknown> {
    return { name: this.name, learning_rate: this.learningRate, momentum: this.momentum, nesterov: this.nesterov };
  }
}

/**
 * Adam as Keras: `m += (g - m)(1 - β1)`, `v += (g² - v)(1 - β2)`,
 * `α = lr·sqrt(1 - β2^t)/(1 - β1^t)`, `w -= α·m/(sqrt(v) + ε)`.
 * @example
 * const opt = new Adam({ learning_rate: 1e-3 });
 * opt.step(stage.params, grads); // the first step moves each weight by about lr
 */
export class Adam extends BaseOptimizer {
  /** `adam`, as Keras names it. */
  readonly name = 'adam';
  /** The step size. */
  readonly learningRate: number;
  /** Decay of the first moment (Keras' `beta_1`). */
  readonly beta1: number;
  /** Decay of the second moment (Keras' `beta_2`). */
  readonly beta2: number;
  /** Added to `sqrt(v)` in the denominator. */
  readonly epsilon: number;

  constructor(config: AdamConfig = {}) {
    super();
    checkKeys(config, ['learning_rate', 'beta_1', 'beta_2', 'epsilon', 'name'], 'Adam');
    this.learningRate = checkLearningRate(config.learning_rate ?? 0.001, 'Adam');
    this.beta1 = checkUnit(config.beta_1 ?? 0.9, 'beta_1', 'Adam', false);
    this.beta2 = checkUnit(config.beta_2 ?? 0.999, 'beta_2', 'Adam', false);
    const eps = config.epsilon ?? 1e-7;
    if (typeof eps !== 'number' || !Number.isFinite(eps) || eps < 0) {
      throw new ConfigError(`Adam: expected epsilon to be a non-negative finite number, received ${fmtValue(eps)}`);
    }
    this.epsilon = eps;
  }

  protected usesSecondMoment(): boolean {
    return true;
  }

  protected update(w: Float64Array, g: ArrayLike<number>, s: Slots): void {
    const { beta1: b1, beta2: b2, epsilon: eps } = this;
    const alpha = (this.learningRate * Math.sqrt(1 - b2 ** s.t)) / (1 - b1 ** s.t);
    const m = s.a;
    const v = s.b;
    for (let i = 0; i < w.length; i++) {
      const gi = g[i];
      m[i] += (gi - m[i]) * (1 - b1);
      v[i] += (gi * gi - v[i]) * (1 - b2);
      w[i] -= (m[i] * alpha) / (Math.sqrt(v[i]) + eps);
    }
  }

  /** The Keras config (`learning_rate`, `beta_1`, `beta_2`, `epsilon`) that rebuilds this optimizer. */
  getConfig(): Record<string, unknown> {
    return { name: this.name, learning_rate: this.learningRate, beta_1: this.beta1, beta_2: this.beta2, epsilon: this.epsilon };
  }
}

/** Optimizer names {@link optimizerFromConfig} knows. */
export const OPTIMIZERS = ['sgd', 'adam'] as const;

/**
 * Builds an optimizer from a Keras-style config with a `name` (the fixtures' `training.optimizer`);
 * keys it does not know (like the fixtures' `steps`) can be dropped with `ignore`.
 * @example
 * const opt = optimizerFromConfig({ name: 'adam', learning_rate: 1e-3 });
 */
export function optimizerFromConfig(config: OptimizerConfig | ({ name: string } & Record<string, unknown>), ignore: readonly string[] = []): Optimizer {
  if (!config || typeof config !== 'object') throw new ConfigError(`optimizer: expected {"name": "sgd"|"adam", ...}, received ${fmtValue(config)}`);
  const rest: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(config)) if (k !== 'name' && !ignore.includes(k)) rest[k] = v;
  const name: unknown = config.name;
  switch (typeof name === 'string' ? name.toLowerCase() : name) {
    case 'sgd':
      return new SGD(rest as SGDConfig);
    case 'adam':
      return new Adam(rest as AdamConfig);
    default:
      throw new ConfigError(`optimizer: unknown name ${fmtValue(name)}; expected one of ${OPTIMIZERS.join(', ')}`);
  }
}

/**
 * Losses as Keras 3 computes them, with their exact gradients `dLoss/dyPred`: the cotangent that
 * starts every backward chain (the upstream gradient arriving at the last stage's output).
 *
 * Each loss reduces over the last axis (mean for mse, mae, huber and binary cross-entropy, sum for
 * the categorical cross-entropies and KL divergence), then takes the mean over every remaining
 * element (the batch: Keras' `sum_over_batch_size`). The probability losses clip `p` to
 * `[ε, 1 − ε]` with `ε = 1e-7` (KL divergence clips both `y` and `p` to `[ε, 1]`); their gradients
 * are the derivative of the clipped formula, so an element outside the clip range gets no gradient
 * through the clip (PyTorch autograd's convention, which the golden fixtures were computed with: the
 * bounds themselves pass). With `from_logits` the cross-entropies take logits and never clip.
 *
 * A loss is named by a string (`'mse'`, Keras' long names too), by a config object with options
 * (`{ name: 'huber', delta: 2 }`), by Keras' serialized form (`{ class_name: 'Huber', config: {...} }`)
 * or given as a {@link Loss}; {@link lossFrom} resolves all four.
 * @module
 */
import { ConfigError, ShapeError, fmtShape, fmtValue } from './errors.js';
import { type Tensor, assertFinite, contiguous, dtypeOf, zeros } from './tensor.js';

/** Keras' `epsilon()`: the clip margin of the probability losses. */
export const EPSILON = 1e-7;

/** Loss names, as Keras spells them in `compile(loss=...)` (long aliases in {@link lossByName}). */
export const LOSSES = ['mse', 'mae', 'binary_crossentropy', 'categorical_crossentropy', 'sparse_categorical_crossentropy', 'huber', 'kl_divergence'] as const;
/** One of {@link LOSSES}. */
export type LossName = (typeof LOSSES)[number];

/** A loss: its value on a batch and its gradient w.r.t. the prediction. */
export interface Loss {
  /** The Keras name. */
  readonly name: LossName;
  /** The options this loss was made with, in Keras' snake_case (`{ from_logits: true }`, `{ delta: 2 }`); absent or empty for the defaults. */
  readonly config?: Readonly<Record<string, unknown>>;
  /** The scalar loss of a batch: per-sample loss over the last axis, mean over the batch. */
  value(yTrue: Tensor, yPred: Tensor): number;
  /** `dLoss/dyPred`, shaped and typed like `yPred`. */
  gradient(yTrue: Tensor, yPred: Tensor): Tensor;
}

/** The flat, checked views both halves of a loss work on: `rows` samples of `cols` values. */
interface Batch {
  t: Tensor['data'];
  p: Tensor['data'];
  rows: number;
  cols: number;
}

/** Same shape, rank ≥ 1, finite values: or an error quoting what was received, before any work. */
function checkBatch(name: LossName, yTrue: Tensor, yPred: Tensor): Batch {
  if (yPred.shape.length === 0) throw new ShapeError(`${name}: expected yPred of rank >= 1 (the loss reduces its last axis), received shape ${fmtShape(yPred.shape)}`);
  if (yTrue.shape.length !== yPred.shape.length || yTrue.shape.some((d, i) => d !== yPred.shape[i])) {
    throw new ShapeError(`${name}: expected yTrue and yPred of the same shape, received yTrue ${fmtShape(yTrue.shape)} and yPred ${fmtShape(yPred.shape)}`);
  }
  if (yPred.size === 0) throw new ShapeError(`${name}: expected a non-empty batch, received shape ${fmtShape(yPred.shape)}`);
  assertFinite(yTrue, `${name} yTrue`);
  assertFinite(yPred, `${name} yPred`);
  const tc = contiguous(yTrue);
  const pc = contiguous(yPred);
  const cols = yPred.shape[yPred.shape.length - 1];
  return {
    t: tc.data.subarray(tc.offset, tc.offset + tc.size),
    p: pc.data.subarray(pc.offset, pc.offset + pc.size),
    rows: yPred.size / cols,
    cols,
  };
}

/** `clip(v, ε, 1 − ε)`. */
function clip(v: number): number {
  return v < EPSILON ? EPSILON : v > 1 - EPSILON ? 1 - EPSILON : v;
}

/** True where the clip passes its argument through (bounds included), false where it clamps. */
function clipPasses(v: number): boolean {
  return v >= EPSILON && v <= 1 - EPSILON;
}

/**
 * Mean squared error: `mean_b mean_k (y − p)²`; gradient `2 (p − y) / (rows · cols)`.
 * @example
 * mse.value(tensor([1, 0], [2, 1]), tensor([0.5, 0.5], [2, 1])); // 0.25
 */
export const mse: Loss = {
  name: 'mse',
  value(yTrue, yPred) {
    const { t, p, rows, cols } = checkBatch('mse', yTrue, yPred);
    let total = 0;
    for (let r = 0; r < rows; r++) {
      let s = 0;
      for (let k = r * cols; k < (r + 1) * cols; k++) s += (t[k] - p[k]) ** 2;
      total += s / cols;
    }
    return total / rows;
  },
  gradient(yTrue, yPred) {
    const { t, p, rows, cols } = checkBatch('mse', yTrue, yPred);
    const g = zeros(yPred.shape, dtypeOf(yPred));
    const c = 2 / (rows * cols);
    for (let k = 0; k < g.size; k++) g.data[k] = c * (p[k] - t[k]);
    return g;
  },
};

/**
 * Binary cross-entropy on probabilities: `mean_b mean_k −(y log q + (1 − y) log(1 − q))`,
 * `q = clip(p, ε, 1 − ε)`; gradient `(q − y) / (q (1 − q)) / (rows · cols)` where the clip passes, else 0.
 * @example
 * binary_crossentropy.value(tensor([1], [1, 1]), tensor([0.9], [1, 1])); // −log 0.9
 */
export const binary_crossentropy: Loss = {
  name: 'binary_crossentropy',
  value(yTrue, yPred) {
    const { t, p, rows, cols } = checkBatch('binary_crossentropy', yTrue, yPred);
    let total = 0;
    for (let r = 0; r < rows; r++) {
      let s = 0;
      for (let k = r * cols; k < (r + 1) * cols; k++) {
        const q = clip(p[k]);
        s -= t[k] * Math.log(q) + (1 - t[k]) * Math.log(1 - q);
      }
      total += s / cols;
    }
    return total / rows;
  },
  gradient(yTrue, yPred) {
    const { t, p, rows, cols } = checkBatch('binary_crossentropy', yTrue, yPred);
    const g = zeros(yPred.shape, dtypeOf(yPred));
    const n = rows * cols;
    for (let k = 0; k < g.size; k++) {
      const q = clip(p[k]);
      // d/dq of −(y log q + (1 − y) log(1 − q)), written as autograd sums it.
      g.data[k] = clipPasses(p[k]) ? (-t[k] / q + (1 - t[k]) / (1 - q)) / n : 0;
    }
    return g;
  },
};

/**
 * Categorical cross-entropy on probabilities: `mean_b −Σ_k y_k log q_k`, `q = clip(p / Σ_j p_j, ε, 1 − ε)`.
 * The gradient goes through the normalization too: with `g_k = −y_k / q_k` where the clip passes
 * (else 0), `dL/dp_j = (g_j − Σ_k g_k p_k / S) / (S · rows)`, `S = Σ_k p_k`. On a softmax output
 * (`S = 1`, no clipping) that is `(1 − y_j / p_j) / rows` for one-hot `y`.
 * @example
 * categorical_crossentropy.value(tensor([0, 1], [1, 2]), tensor([0.2, 0.8], [1, 2])); // −log 0.8
 */
export const categorical_crossentropy: Loss = {
  name: 'categorical_crossentropy',
  value(yTrue, yPred) {
    const { t, p, rows, cols } = checkBatch('categorical_crossentropy', yTrue, yPred);
    let total = 0;
    for (let r = 0; r < rows; r++) {
      const o = r * cols;
      const S = rowSum(p, o, cols);
      let s = 0;
      for (let k = o; k < o + cols; k++) s -= t[k] * Math.log(clip(p[k] / S));
      total += s;
    }
    return total / rows;
  },
  gradient(yTrue, yPred) {
    const { t, p, rows, cols } = checkBatch('categorical_crossentropy', yTrue, yPred);
    const g = zeros(yPred.shape, dtypeOf(yPred));
    const gq = new Float64Array(cols);
    for (let r = 0; r < rows; r++) {
      const o = r * cols;
      const S = rowSum(p, o, cols);
      let gp = 0;
      for (let k = 0; k < cols; k++) {
        const q = p[o + k] / S;
        gq[k] = clipPasses(q) ? -t[o + k] / q / rows : 0;
        gp += gq[k] * p[o + k];
      }
      for (let k = 0; k < cols; k++) g.data[o + k] = gq[k] / S - gp / (S * S);
    }
    return g;
  },
};

/** `Σ_k p_k` over one row; a zero sum would turn the normalization into NaN, so it is refused. */
function rowSum(p: Tensor['data'], o: number, cols: number): number {
  let S = 0;
  for (let k = o; k < o + cols; k++) S += p[k];
  if (S === 0) throw new ShapeError(`categorical_crossentropy yPred: expected each row to have a non-zero sum (it is normalized), received a zero sum in row ${o / cols}`);
  return S;
}

/**
 * A loss that is the mean over the last axis of `f(y, p)` per element, then the mean over the
 * batch: gradient `f'(y, p) / (rows · cols)` with `f'` its derivative in `p`.
 */
function meanOfElements(name: LossName, config: Record<string, unknown>, f: (t: number, p: number) => number, df: (t: number, p: number) => number): Loss {
  return {
    name,
    config,
    value(yTrue, yPred) {
      const { t, p, rows, cols } = checkBatch(name, yTrue, yPred);
      let total = 0;
      for (let r = 0; r < rows; r++) {
        let s = 0;
        for (let k = r * cols; k < (r + 1) * cols; k++) s += f(t[k], p[k]);
        total += s / cols;
      }
      return total / rows;
    },
    gradient(yTrue, yPred) {
      const { t, p, rows, cols } = checkBatch(name, yTrue, yPred);
      const g = zeros(yPred.shape, dtypeOf(yPred));
      const n = rows * cols;
      for (let k = 0; k < g.size; k++) g.data[k] = df(t[k], p[k]) / n;
      return g;
    },
  };
}

/**
 * Mean absolute error: `mean_b mean_k |y − p|`; gradient `sign(p − y) / (rows · cols)` (0 where
 * `p = y`, TensorFlow's `sign(0)`).
 * @example
 * mae.value(tensor([1, 0], [1, 2]), tensor([0.5, 0.5], [1, 2])); // 0.5
 */
export const mae: Loss = meanOfElements(
  'mae',
  {},
  (t, p) => Math.abs(t - p),
  (t, p) => Math.sign(p - t),
);

/**
 * Huber loss with threshold `delta` (Keras' default 1): per element `½ e²` for `|e| ≤ δ`, else
 * `δ (|e| − ½ δ)`, `e = p − y`; mean over the last axis and the batch. Its derivative in `p` is
 * `clip(e, −δ, δ)`, continuous at `|e| = δ`.
 * @throws ConfigError unless `delta` is a positive finite number.
 * @example
 * huberLoss(2).value(tensor([0], [1, 1]), tensor([3], [1, 1])); // 2·(3 − 1) = 4
 */
export function huberLoss(delta = 1): Loss {
  if (typeof delta !== 'number' || !(delta > 0) || !Number.isFinite(delta)) throw new ConfigError(`huber: expected delta to be a positive finite number, received ${fmtValue(delta)}`);
  return meanOfElements(
    'huber',
    delta === 1 ? {} : { delta },
    (t, p) => {
      const a = Math.abs(p - t);
      const q = Math.min(a, delta);
      return 0.5 * q * q + delta * (a - q);
    },
    (t, p) => Math.min(Math.max(p - t, -delta), delta),
  );
}

/** Huber loss with Keras' default `delta = 1`. */
export const huber: Loss = huberLoss(1);

/**
 * Binary cross-entropy on logits `z` (`from_logits`, TensorFlow's
 * `sigmoid_cross_entropy_with_logits`): per element `max(z, 0) − z y + log(1 + e^{−|z|})`, mean
 * over the last axis and the batch; gradient `(σ(z) − y) / (rows · cols)`. Never clips.
 */
export const binary_crossentropy_from_logits: Loss = meanOfElements(
  'binary_crossentropy',
  { from_logits: true },
  (t, z) => Math.max(z, 0) - z * t + Math.log1p(Math.exp(-Math.abs(z))),
  (t, z) => sigmoidOf(z) - t,
);

function sigmoidOf(v: number): number {
  if (v >= 0) return 1 / (1 + Math.exp(-v));
  const e = Math.exp(v);
  return e / (1 + e);
}

/**
 * Categorical cross-entropy on logits `z` (`from_logits`, TensorFlow's
 * `softmax_cross_entropy_with_logits`): `mean_b −Σ_k y_k log softmax(z)_k`; gradient
 * `(softmax(z)_j Σ_k y_k − y_j) / rows`. Never clips.
 */
export const categorical_crossentropy_from_logits: Loss = {
  name: 'categorical_crossentropy',
  config: { from_logits: true },
  value(yTrue, yPred) {
    const { t, p, rows, cols } = checkBatch('categorical_crossentropy', yTrue, yPred);
    let total = 0;
    for (let r = 0; r < rows; r++) {
      const o = r * cols;
      const lse = logSumExp(p, o, cols);
      for (let k = o; k < o + cols; k++) if (t[k] !== 0) total -= t[k] * (p[k] - lse);
    }
    return total / rows;
  },
  gradient(yTrue, yPred) {
    const { t, p, rows, cols } = checkBatch('categorical_crossentropy', yTrue, yPred);
    const g = zeros(yPred.shape, dtypeOf(yPred));
    for (let r = 0; r < rows; r++) {
      const o = r * cols;
      const lse = logSumExp(p, o, cols);
      let ts = 0;
      for (let k = o; k < o + cols; k++) ts += t[k];
      for (let k = o; k < o + cols; k++) g.data[k] = (Math.exp(p[k] - lse) * ts - t[k]) / rows;
    }
    return g;
  },
};

/** `log Σ_k e^{z_k}` over one row, shifted by the row maximum so that exp stays finite. */
function logSumExp(z: Tensor['data'], o: number, cols: number): number {
  let m = -Infinity;
  for (let k = o; k < o + cols; k++) m = Math.max(m, z[k]);
  let s = 0;
  for (let k = o; k < o + cols; k++) s += Math.exp(z[k] - m);
  return m + Math.log(s);
}

/**
 * KL divergence as Keras 3 computes it: `mean_b Σ_k t_k log(t_k / q_k)` with `t = clip(y, ε, 1)`
 * and `q = clip(p, ε, 1)`; gradient `−t_k / q_k / rows` where the clip of `p` passes, else 0.
 * @example
 * kl_divergence.value(tensor([0.5, 0.5], [1, 2]), tensor([0.5, 0.5], [1, 2])); // 0
 */
export const kl_divergence: Loss = {
  name: 'kl_divergence',
  config: {},
  value(yTrue, yPred) {
    const { t, p, rows, cols } = checkBatch('kl_divergence', yTrue, yPred);
    let total = 0;
    for (let k = 0; k < rows * cols; k++) {
      const tk = clipUnit(t[k]);
      total += tk * Math.log(tk / clipUnit(p[k]));
    }
    return total / rows;
  },
  gradient(yTrue, yPred) {
    const { t, p, rows } = checkBatch('kl_divergence', yTrue, yPred);
    const g = zeros(yPred.shape, dtypeOf(yPred));
    for (let k = 0; k < g.size; k++) g.data[k] = p[k] >= EPSILON && p[k] <= 1 ? -clipUnit(t[k]) / p[k] / rows : 0;
    return g;
  },
};

/** `clip(v, ε, 1)`, KL divergence's clip. */
function clipUnit(v: number): number {
  return v < EPSILON ? EPSILON : v > 1 ? 1 : v;
}

/**
 * Sparse labels as the one-hot rows they stand for: `yTrue` holds class indices, shaped like
 * `yPred` without its last axis (`[B]` against `[B, C]`), or with a last axis of 1 (`[B, 1]`).
 */
function oneHot(name: string, yTrue: Tensor, yPred: Tensor): Tensor {
  const ps = yPred.shape;
  if (ps.length < 2) throw new ShapeError(`${name}: expected yPred of rank >= 2 (samples, classes), received shape ${fmtShape(ps)}`);
  const lead = ps.slice(0, -1);
  const ts = yTrue.shape;
  const matches = (ts.length === lead.length && ts.every((d, i) => d === lead[i])) || (ts.length === ps.length && ts[ts.length - 1] === 1 && lead.every((d, i) => d === ts[i]));
  if (!matches) {
    throw new ShapeError(`${name}: expected yTrue of class indices shaped ${fmtShape(lead)} or ${fmtShape([...lead, 1])} for yPred ${fmtShape(ps)}, received yTrue ${fmtShape(ts)}`);
  }
  const C = ps[ps.length - 1];
  const tc = contiguous(yTrue);
  const labels = tc.data.subarray(tc.offset, tc.offset + tc.size);
  const hot = zeros(ps, dtypeOf(yPred));
  for (let r = 0; r < labels.length; r++) {
    const c = labels[r];
    if (!Number.isInteger(c) || c < 0 || c >= C) {
      throw new ShapeError(`${name} yTrue: expected integer class indices in [0, ${C - 1}] (yPred has ${C} classes), received ${fmtValue(c)} at sample ${r}`);
    }
    hot.data[r * C + c] = 1;
  }
  return hot;
}

/** The sparse form of a categorical loss: its labels are class indices, turned into one-hot rows first. */
function sparseOf(dense: Loss, config: Record<string, unknown>): Loss {
  const name = 'sparse_categorical_crossentropy';
  return {
    name,
    config,
    value: (yTrue, yPred) => dense.value(oneHot(name, yTrue, yPred), yPred),
    gradient: (yTrue, yPred) => dense.gradient(oneHot(name, yTrue, yPred), yPred),
  };
}

/**
 * Sparse categorical cross-entropy: labels are class indices (`yTrue` `[B]` or `[B, 1]` against
 * `yPred` `[B, C]`); otherwise categorical cross-entropy on the one-hot labels (the fixtures'
 * definition). Refuses non-integer or out-of-range labels.
 * @example
 * sparse_categorical_crossentropy.value(tensor([1], [1]), tensor([0.2, 0.8], [1, 2])); // −log 0.8
 */
export const sparse_categorical_crossentropy: Loss = sparseOf(categorical_crossentropy, {});

/** {@link sparse_categorical_crossentropy} on logits (`from_logits`): `mean_b −log softmax(z)_{label}`. */
export const sparse_categorical_crossentropy_from_logits: Loss = sparseOf(categorical_crossentropy_from_logits, { from_logits: true });

/** Keras' longer names (and its short ones) for the same losses. */
const ALIASES: Record<string, LossName> = {
  mean_squared_error: 'mse',
  mean_absolute_error: 'mae',
  kld: 'kl_divergence',
  kullback_leibler_divergence: 'kl_divergence',
  huber_loss: 'huber',
};

/** Keras' class names (`keras.losses.Huber`, ...), as a serialized config spells them. */
const CLASS_NAMES: Record<string, LossName> = {
  MeanSquaredError: 'mse',
  MeanAbsoluteError: 'mae',
  BinaryCrossentropy: 'binary_crossentropy',
  CategoricalCrossentropy: 'categorical_crossentropy',
  SparseCategoricalCrossentropy: 'sparse_categorical_crossentropy',
  Huber: 'huber',
  KLDivergence: 'kl_divergence',
};

const BY_NAME: Record<LossName, Loss> = { mse, mae, binary_crossentropy, categorical_crossentropy, sparse_categorical_crossentropy, huber, kl_divergence };

/**
 * The loss Keras names `name`, with its default options (`mean_squared_error` is accepted for
 * `mse`, `mean_absolute_error` for `mae`, `kld` for `kl_divergence`).
 * @throws ConfigError listing the known names, e.g. for `"hinge"`.
 * @example
 * const loss = lossByName('categorical_crossentropy');
 * const dy = loss.gradient(yTrue, yPred); // the cotangent of the last stage
 */
export function lossByName(name: string): Loss {
  const key = typeof name === 'string' && Object.hasOwn(ALIASES, name) ? ALIASES[name] : name;
  if (typeof key !== 'string' || !(LOSSES as readonly string[]).includes(key)) {
    throw new ConfigError(`unknown loss ${fmtValue(name)}; expected one of ${[...LOSSES, ...Object.keys(ALIASES)].join(', ')}`);
  }
  return BY_NAME[key as LossName];
}

/** A loss named with options: `{ name: 'huber', delta: 2 }`, `{ name: 'categorical_crossentropy', from_logits: true }`. */
export interface LossConfig {
  /** A name {@link lossByName} accepts. */
  name: string;
  /** Keras' options of that loss, snake_case (`from_logits`, `delta`, ...). */
  [option: string]: unknown;
}

/** Keras' serialized loss: `{ class_name: 'Huber', config: { delta: 2 } }` (Keras 3 adds `module` and `registered_name`). */
export interface KerasLossConfig {
  /** A Keras loss class (`Huber`, `CategoricalCrossentropy`, ...), or `function` with the function's name as `config`. */
  class_name: string;
  /** The class's constructor arguments, snake_case; for `class_name: 'function'`, the loss name. */
  config?: Record<string, unknown> | string | null;
  /** Keras 3's module, e.g. `keras.losses`. */
  module?: string | null;
  /** Keras 3's registered name (null for built-ins). */
  registered_name?: string | null;
}

/** Anything {@link lossFrom} resolves: a name, a config object, Keras' serialized form, or a loss itself. */
export type LossSpec = string | LossConfig | KerasLossConfig | Loss;

/** Options each loss accepts, beyond those every Keras loss has (`name`, `reduction`, `dtype`). */
const OPTIONS: Record<LossName, readonly string[]> = {
  mse: [],
  mae: [],
  binary_crossentropy: ['from_logits', 'label_smoothing', 'axis'],
  categorical_crossentropy: ['from_logits', 'label_smoothing', 'axis'],
  sparse_categorical_crossentropy: ['from_logits', 'ignore_class', 'axis'],
  huber: ['delta'],
  kl_divergence: [],
};

/**
 * The one resolver every caller uses: a name (`'mse'`, `'mean_squared_error'`), a config object
 * (`{ name: 'huber', delta: 2 }`), Keras' serialized form (`{ class_name: 'Huber', config: { delta: 2 } }`,
 * Keras 3's `module`/`registered_name` allowed, and `{ class_name: 'function', config: 'mse' }`)
 * or a {@link Loss} (returned as is).
 *
 * Options honoured: `from_logits` (the three cross-entropies) and `delta` (huber). Accepted only at
 * the value that changes nothing: `reduction` (`sum_over_batch_size`, `auto` or null: the mean over
 * the batch), `label_smoothing` 0, `axis` −1, `ignore_class` null; `name` and `dtype` are ignored.
 * @throws ConfigError naming what was received: an unknown loss, class or option, or an unsupported value.
 * @example
 * lossFrom({ class_name: 'CategoricalCrossentropy', config: { from_logits: true } }).gradient(yTrue, logits);
 */
export function lossFrom(spec: LossSpec): Loss {
  if (typeof spec === 'string') return lossByName(spec);
  if (spec === null || typeof spec !== 'object' || Array.isArray(spec)) {
    throw new ConfigError(`loss: expected a loss name, a config such as { name: "huber", delta: 2 }, Keras' { class_name, config } or a Loss, received ${fmtValue(spec)}`);
  }
  const o = spec as unknown as Record<string, unknown>;
  if (typeof o.value === 'function' && typeof o.gradient === 'function') return spec as Loss;
  if ('class_name' in o) {
    const extra = Object.keys(o).filter((k) => !['class_name', 'config', 'module', 'registered_name'].includes(k));
    if (extra.length) throw new ConfigError(`loss ${fmtValue(o.class_name)}: unknown key(s) ${extra.map((k) => fmtValue(k)).join(', ')} in a serialized loss; expected class_name, config, module, registered_name`);
    const cls = o.class_name;
    if (cls === 'function') {
      if (typeof o.config !== 'string') throw new ConfigError(`loss: expected a serialized loss function's config to be its name, received ${fmtValue(o.config)}`);
      return lossByName(o.config);
    }
    if (typeof cls !== 'string' || !Object.hasOwn(CLASS_NAMES, cls)) {
      throw new ConfigError(`unknown loss class ${fmtValue(cls)}; expected one of ${Object.keys(CLASS_NAMES).join(', ')} (or "function")`);
    }
    const config = o.config ?? {};
    if (typeof config !== 'object' || Array.isArray(config)) throw new ConfigError(`loss ${cls}: expected config to be an object, received ${fmtValue(config)}`);
    return withOptions(CLASS_NAMES[cls], config as Record<string, unknown>, cls, true);
  }
  if (typeof o.name !== 'string') throw new ConfigError(`loss: expected a config object to name its loss ({ name: "huber", ... }) or Keras' class_name, received ${fmtValue(spec)}`);
  const base = lossByName(o.name).name;
  const { name: _name, ...options } = o;
  return withOptions(base, options, o.name, false);
}

/** The loss `base` made with Keras' options, each checked. */
function withOptions(base: LossName, options: Record<string, unknown>, what: string, serialized: boolean): Loss {
  const allowed = [...OPTIONS[base], 'reduction', 'dtype', ...(serialized ? ['name'] : [])];
  const unknown = Object.keys(options).filter((k) => !allowed.includes(k));
  if (unknown.length) throw new ConfigError(`loss ${what}: unknown option(s) ${unknown.map((k) => fmtValue(k)).join(', ')}; expected ${allowed.join(', ')}`);
  const { reduction, label_smoothing, axis, ignore_class, from_logits, delta } = options;
  if (reduction !== undefined && reduction !== null && reduction !== 'sum_over_batch_size' && reduction !== 'auto') {
    throw new ConfigError(`loss ${what}: reduction ${fmtValue(reduction)} is not supported; expected "sum_over_batch_size" (the mean over the batch, Keras' default)`);
  }
  if (label_smoothing !== undefined && label_smoothing !== 0) throw new ConfigError(`loss ${what}: label_smoothing ${fmtValue(label_smoothing)} is not supported; expected 0`);
  if (axis !== undefined && axis !== -1) throw new ConfigError(`loss ${what}: axis ${fmtValue(axis)} is not supported; expected -1 (the last axis)`);
  if (ignore_class !== undefined && ignore_class !== null) throw new ConfigError(`loss ${what}: ignore_class ${fmtValue(ignore_class)} is not supported; expected null`);
  if (from_logits !== undefined && typeof from_logits !== 'boolean') throw new ConfigError(`loss ${what}: expected from_logits to be true or false, received ${fmtValue(from_logits)}`);
  switch (base) {
    case 'binary_crossentropy':
      return from_logits ? binary_crossentropy_from_logits : binary_crossentropy;
    case 'categorical_crossentropy':
      return from_logits ? categorical_crossentropy_from_logits : categorical_crossentropy;
    case 'sparse_categorical_crossentropy':
      return from_logits ? sparse_categorical_crossentropy_from_logits : sparse_categorical_crossentropy;
    case 'huber':
      return delta === undefined ? huber : huberLoss(delta as number);
    default:
      return BY_NAME[base];
  }
}

/**
 * Losses as Keras 3 computes them, with their exact gradients `dLoss/dyPred`: the cotangent that
 * starts every backward chain (the upstream gradient arriving at the last stage's output).
 *
 * Each loss reduces over the last axis (mean for mse and binary cross-entropy, sum for categorical
 * cross-entropy), then takes the mean over every remaining element (the batch). The probability
 * losses clip `p` to `[ε, 1 − ε]` with `ε = 1e-7`; their gradients are the derivative of the clipped
 * formula, so an element outside the clip range gets no gradient through the clip (PyTorch
 * autograd's convention, which the golden fixtures were computed with: the bounds themselves pass).
 * @module
 */
import { ConfigError, ShapeError, fmtShape, fmtValue } from './errors.js';
import { type Tensor, assertFinite, contiguous, dtypeOf, zeros } from './tensor.js';

/** Keras' `epsilon()`: the clip margin of the probability losses. */
export const EPSILON = 1e-7;

/** Loss names, as Keras spells them in `compile(loss=...)`. */
export const LOSSES = ['mse', 'binary_crossentropy', 'categorical_crossentropy'] as const;
/** One of {@link LOSSES}. */
export type LossName = (typeof LOSSES)[number];

/** A loss: its value on a batch and its gradient w.r.t. the prediction. */
export interface Loss {
  /** The Keras name. */
  readonly name: LossName;
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

/** Keras' longer names for the same losses. */
const ALIASES: Record<string, LossName> = { mean_squared_error: 'mse' };

const BY_NAME: Record<LossName, Loss> = { mse, binary_crossentropy, categorical_crossentropy };

/**
 * The loss Keras names `name` (`mean_squared_error` is accepted for `mse`).
 * @throws ConfigError listing the known names, e.g. for `"hinge"`.
 * @example
 * const loss = lossByName('categorical_crossentropy');
 * const dy = loss.gradient(yTrue, yPred); // the cotangent of the last stage
 */
export function lossByName(name: string): Loss {
  const key = typeof name === 'string' ? (ALIASES[name] ?? name) : name;
  if (typeof key !== 'string' || !(LOSSES as readonly string[]).includes(key)) {
    throw new ConfigError(`unknown loss ${fmtValue(name)}; expected one of ${[...LOSSES, ...Object.keys(ALIASES)].join(', ')}`);
  }
  return BY_NAME[key as LossName];
}

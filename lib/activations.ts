/**
 * The activation primitives: forward, dual-number (JVP) rule and VJP rule side by side.
 *
 * Each rule reads only what the forward pass saved, and each primitive declares what that is
 * ({@link activationNeeds}): the primal output `y` when `act'` is a function of `y` (relu's
 * `y > 0`, sigmoid's `y (1 − y)`, tanh's `1 − y²`, elu's `y + 1`, selu's `y + λα`, softplus's
 * `1 − e^{−y}`, exponential's `y`, softmax's `y` row), the pre-activation `z` when it is not
 * (gelu, swish/silu, softsign: `y` does not determine `z`, or determines it only through a
 * cancellation). So layers that fuse an activation save `y`, and `z` as well only where needed.
 *
 * Element-wise rules act on flat buffers: a tangent block is `[n, T]` (each element carries `T`
 * derivative parts), a cotangent is `[n]`. Softmax works over the last axis, `rowLength` elements
 * at a time. Every activation propagates NaN as TensorFlow does (`relu(NaN)` is NaN: TF's relu is
 * `max(x, 0)`); the derivative rules follow TF's gradient kernels at the kinks (relu, relu6 and
 * hard_sigmoid take 0 there; leaky_relu, elu and selu take the positive side's slope at 0).
 * @module
 */
import { erfc } from './erf.js';
import { ConfigError, ShapeError, fmtValue } from './errors.js';
import { relu, reluMask } from './kernels/elementwise.js';
import type { Data } from './tensor.js';

/**
 * Activation names, as Keras 3 spells them; `silu` and `swish` are the same function, and
 * `gelu_new` is TF.js' name for Keras' `gelu(x, approximate=True)` (the tanh approximation),
 * while `gelu` is the exact erf form (Keras' default).
 */
export const ACTIVATIONS = [
  'linear',
  'relu',
  'sigmoid',
  'tanh',
  'softmax',
  'elu',
  'selu',
  'gelu',
  'gelu_new',
  'softplus',
  'softsign',
  'swish',
  'silu',
  'hard_sigmoid',
  'relu6',
  'leaky_relu',
  'exponential',
] as const;
/** One of {@link ACTIVATIONS}. */
export type ActivationName = (typeof ACTIVATIONS)[number];

/** What an activation's derivative rules read: the primal output `y`, or the pre-activation `z`. */
export type ActivationNeeds = 'y' | 'z';

const NEEDS: Record<ActivationName, ActivationNeeds> = {
  linear: 'y',
  relu: 'y',
  sigmoid: 'y',
  tanh: 'y',
  softmax: 'y',
  elu: 'y',
  selu: 'y',
  gelu: 'z',
  gelu_new: 'z',
  softplus: 'y',
  // (1 − |y|)² equals 1/(1 + |z|)² but cancels catastrophically for large |z|, worst in float32.
  softsign: 'z',
  swish: 'z',
  silu: 'z',
  hard_sigmoid: 'y',
  relu6: 'y',
  leaky_relu: 'y',
  exponential: 'y',
};

/**
 * What the derivative rules of `name` read: `'y'` (the output; linear reads nothing) or `'z'` (the
 * pre-activation, which a layer computing in place must copy before `activationForward`).
 * @example
 * activationNeeds('gelu'); // 'z'
 */
export function activationNeeds(name: ActivationName): ActivationNeeds {
  return NEEDS[name];
}

/** Keras' selu constants (Klambauer et al. 2017), as `keras.activations.selu` writes them. */
export const SELU_ALPHA = 1.6732632423543772848170429916717;
/** See {@link SELU_ALPHA}. */
export const SELU_SCALE = 1.0507009873554804934193349852946;
/** The slope of the `leaky_relu` activation for `x < 0` (Keras' `negative_slope` default, 0.2). */
export const LEAKY_RELU_SLOPE = 0.2;
/** `√(2/π)`, gelu's tanh-approximation constant. */
const GELU_C = Math.sqrt(2 / Math.PI);
const GELU_K = 0.044715;
const INV_SQRT2 = Math.SQRT1_2;
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

/** Validates an activation name (Keras also allows `null` for linear). */
export function activationName(v: unknown, where: string): ActivationName {
  if (v === undefined || v === null) return 'linear';
  if (typeof v !== 'string' || !(ACTIVATIONS as readonly string[]).includes(v)) {
    throw new ConfigError(`${where}: unknown activation ${fmtValue(v)}; expected one of ${ACTIVATIONS.join(', ')}`);
  }
  return v as ActivationName;
}

/** `σ(v)`, by two branches that keep exp from overflowing for large `|v|`. */
export function sigmoid(v: number): number {
  if (v >= 0) return 1 / (1 + Math.exp(-v));
  const e = Math.exp(v);
  return e / (1 + e);
}

/**
 * `act(v)` for one element of an element-wise activation (softmax has no scalar form).
 * Comparisons are written so that NaN falls through to an arithmetic branch and stays NaN.
 */
export function activationScalar(name: Exclude<ActivationName, 'softmax'>, v: number): number {
  switch (name) {
    case 'linear':
      return v;
    case 'relu':
      return v <= 0 ? 0 : v;
    case 'sigmoid':
      return sigmoid(v);
    case 'tanh':
      return Math.tanh(v);
    case 'elu':
      return v > 0 ? v : Math.expm1(v);
    case 'selu':
      return v > 0 ? SELU_SCALE * v : SELU_SCALE * SELU_ALPHA * Math.expm1(v);
    case 'gelu':
      // 0.5 z (1 + erf(z/√2)) written with erfc, which keeps the left tail accurate.
      return 0.5 * v * erfc(-v * INV_SQRT2);
    case 'gelu_new':
      // ½ z (1 + tanh u) = z σ(2u): the same function without 1 + tanh cancelling on the left.
      return v * sigmoid(2 * GELU_C * (v + GELU_K * v * v * v));
    case 'softplus':
      // log(1 + e^v) = max(v, 0) + log1p(e^{−|v|}): never overflows, exact in both tails.
      return v > 0 ? v + Math.log1p(Math.exp(-v)) : Math.log1p(Math.exp(v));
    case 'softsign':
      return v / (1 + Math.abs(v));
    case 'swish':
    case 'silu':
      return v * sigmoid(v);
    case 'hard_sigmoid': {
      const u = v + 3;
      return u <= 0 ? 0 : u >= 6 ? 1 : u / 6;
    }
    case 'relu6':
      return v <= 0 ? 0 : v >= 6 ? 6 : v;
    case 'leaky_relu':
      return v > 0 ? v : LEAKY_RELU_SLOPE * v;
    case 'exponential':
      return Math.exp(v);
  }
}

/**
 * `act'` at one element of an element-wise activation, from the pre-activation `z` or the output
 * `y` (whichever {@link activationNeeds} names; the other may be NaN).
 */
export function activationSlope(name: Exclude<ActivationName, 'softmax'>, z: number, y: number): number {
  switch (name) {
    case 'linear':
      return 1;
    case 'relu':
      return y > 0 ? 1 : 0;
    case 'sigmoid':
      return y * (1 - y);
    case 'tanh':
      return 1 - y * y;
    case 'elu':
      // z ≤ 0: e^z = y + 1 (TF's EluGrad: activations < 0 select).
      return y < 0 ? y + 1 : 1;
    case 'selu':
      return y < 0 ? y + SELU_SCALE * SELU_ALPHA : SELU_SCALE;
    case 'gelu':
      // Φ(z) + z φ(z).
      return 0.5 * erfc(-z * INV_SQRT2) + z * INV_SQRT_2PI * Math.exp(-0.5 * z * z);
    case 'gelu_new': {
      // With s = σ(2u): ½(1 + tanh u) = s and ½(1 − tanh² u) = 2 s σ(−2u), free of cancellation.
      const u2 = 2 * GELU_C * (z + GELU_K * z * z * z);
      const s = sigmoid(u2);
      return s + 2 * z * s * sigmoid(-u2) * GELU_C * (1 + 3 * GELU_K * z * z);
    }
    case 'softplus':
      // σ(z) = 1 − e^{−softplus(z)}, exactly; −expm1 keeps the small values accurate.
      return -Math.expm1(-y);
    case 'softsign': {
      const d = 1 + Math.abs(z);
      return 1 / (d * d);
    }
    case 'swish':
    case 'silu':
      // σ(z) (1 + z σ(−z)); σ(−z) rather than 1 − σ(z), which cancels for large z.
      return sigmoid(z) * (1 + z * sigmoid(-z));
    case 'hard_sigmoid':
      return y > 0 && y < 1 ? 1 / 6 : 0;
    case 'relu6':
      return y > 0 && y < 6 ? 1 : 0;
    case 'leaky_relu':
      return y > 0 ? 1 : LEAKY_RELU_SLOPE;
    case 'exponential':
      return y;
  }
}

/** Primal: `y[i] = act(z[i])` for `n` elements (in place allowed: `y === z`). */
export function activationForward(name: ActivationName, z: Data, y: Data, n: number, rowLength: number): void {
  switch (name) {
    case 'linear':
      if (y !== z) for (let i = 0; i < n; i++) y[i] = z[i];
      return;
    case 'softmax':
      for (let r = 0; r < n; r += rowLength) {
        // Subtracting the row maximum keeps exp finite; softmax is invariant to it.
        let m = -Infinity;
        for (let k = 0; k < rowLength; k++) m = Math.max(m, z[r + k]);
        let s = 0;
        for (let k = 0; k < rowLength; k++) {
          const e = Math.exp(z[r + k] - m);
          y[r + k] = e;
          s += e;
        }
        for (let k = 0; k < rowLength; k++) y[r + k] /= s;
      }
      return;
    case 'relu':
      // The commonest activation by a kernel of its own (activationScalar's rule, NaN kept): branch-free SIMD where it runs.
      relu(z, y, n);
      return;
    default:
      for (let i = 0; i < n; i++) y[i] = activationScalar(name, z[i]);
  }
}

/** The saved buffer a rule needs, or an error naming it: a caller that did not save `z` is a bug, not a zero. */
function need(name: ActivationName, z: Data | null, y: Data | null, n: number): void {
  const what = NEEDS[name];
  const buf = what === 'z' ? z : y;
  if (name !== 'linear' && (!buf || buf.length < n)) {
    throw new ShapeError(`activation ${name}: its derivative rule reads the saved ${what === 'z' ? 'pre-activation z' : 'output y'} of ${n} elements, received ${buf ? `${buf.length} elements` : 'none'}`);
  }
}

/**
 * Dual-number rule, in place on the tangent block `dz` (`[n, T]`): `dy = act'(z) · dz`. Reads the
 * saved pre-activation `z` or output `y` (`[n]` each), whichever {@link activationNeeds} names;
 * the other may be null.
 */
export function activationJvp(name: ActivationName, z: Data | null, y: Data | null, dz: Data, n: number, T: number, rowLength: number): void {
  need(name, z, y, n);
  switch (name) {
    case 'linear':
      return;
    case 'relu':
      // Zeroed, not scaled: a NaN or infinite tangent where the unit is off still contributes 0 (a loop for a few tangents: a call to fill per row costs more).
      for (let i = 0; i < n; i++) {
        if (y![i] > 0) continue;
        if (T >= 16) dz.fill(0, i * T, i * T + T);
        else for (let o = i * T, e = o + T; o < e; o++) dz[o] = 0;
      }
      return;
    case 'softmax': {
      // dy_k = y_k (dz_k - Σ_j y_j dz_j), for each of the T tangents of a row.
      const yy = y!;
      const s = new Float64Array(T);
      for (let r = 0; r < n; r += rowLength) {
        s.fill(0);
        for (let k = 0; k < rowLength; k++) {
          const yk = yy[r + k];
          const o = (r + k) * T;
          for (let t = 0; t < T; t++) s[t] += yk * dz[o + t];
        }
        for (let k = 0; k < rowLength; k++) {
          const yk = yy[r + k];
          const o = (r + k) * T;
          for (let t = 0; t < T; t++) dz[o + t] = yk * (dz[o + t] - s[t]);
        }
      }
      return;
    }
    default:
      for (let i = 0; i < n; i++) scale(dz, i * T, T, activationSlope(name, z ? z[i] : Number.NaN, y ? y[i] : Number.NaN));
  }
}

/**
 * Dual-number rule from `src` into the zero block `dst` (both `[n, T]`): {@link activationJvp} on a
 * copy of `src`, except that relu copies only the rows of its live units (the rest stay zero).
 */
export function activationJvpInto(name: ActivationName, z: Data | null, y: Data | null, src: Data, dst: Data, n: number, T: number, rowLength: number): void {
  if (name !== 'relu') {
    dst.set(src.subarray(0, n * T));
    activationJvp(name, z, y, dst, n, T, rowLength);
    return;
  }
  need(name, z, y, n);
  for (let i = 0; i < n; i++) {
    if (!(y![i] > 0)) continue;
    for (let o = i * T, e = o + T; o < e; o++) dst[o] = src[o];
  }
}

/**
 * VJP rule: `dz = act'(z)ᵀ dy` for a cotangent `dy` of `n` elements, written into `dz` (may alias
 * `dy`). Reads the saved `z` or `y` as {@link activationJvp} does.
 */
export function activationVjp(name: ActivationName, z: Data | null, y: Data | null, dy: Data, dz: Data, n: number, rowLength: number): void {
  need(name, z, y, n);
  switch (name) {
    case 'linear':
      if (dz !== dy) for (let i = 0; i < n; i++) dz[i] = dy[i];
      return;
    case 'relu':
      reluMask(y!, dy, dz, n);
      return;
    case 'sigmoid':
      // Kept in this order ((dy·y)(1 − y)), as before the element-wise rules were shared: same bits.
      for (let i = 0; i < n; i++) dz[i] = dy[i] * y![i] * (1 - y![i]);
      return;
    case 'softmax': {
      // The Jacobian diag(y) - y yᵀ is symmetric, so the VJP has the JVP's form.
      const yy = y!;
      for (let r = 0; r < n; r += rowLength) {
        let s = 0;
        for (let k = 0; k < rowLength; k++) s += yy[r + k] * dy[r + k];
        for (let k = 0; k < rowLength; k++) dz[r + k] = yy[r + k] * (dy[r + k] - s);
      }
      return;
    }
    default:
      for (let i = 0; i < n; i++) dz[i] = dy[i] * activationSlope(name, z ? z[i] : Number.NaN, y ? y[i] : Number.NaN);
  }
}

function scale(a: Data, from: number, T: number, c: number): void {
  for (let t = 0; t < T; t++) a[from + t] *= c;
}

/**
 * Whether an activation couples the elements of a row of the last axis (softmax), so that its
 * Jacobian is block-diagonal with blocks of `rowLength`, not diagonal: what the structure hooks
 * of the layers that apply it ask.
 */
export function couplesRow(name: ActivationName): boolean {
  return name === 'softmax';
}

/**
 * The activation primitives: forward, dual-number (JVP) rule and VJP rule side by side.
 *
 * Each rule reads only the primal output `y` that the forward pass saved (relu's `y > 0`,
 * sigmoid's `y (1 - y)`, tanh's `1 - y²`, softmax's `y` row), so layers that fuse an activation
 * save `y` and nothing else for it. Element-wise rules act on flat buffers: a tangent block is
 * `[n, T]` (each element carries `T` derivative parts), a cotangent is `[n]`. Softmax works over
 * the last axis, `rowLength` elements at a time.
 * @module
 */
import { ConfigError, fmtValue } from './errors.js';
import type { Data } from './tensor.js';

/** Activation names, as Keras spells them. */
export const ACTIVATIONS = ['linear', 'relu', 'sigmoid', 'tanh', 'softmax'] as const;
/** One of {@link ACTIVATIONS}. */
export type ActivationName = (typeof ACTIVATIONS)[number];

/** Validates an activation name (Keras also allows `null` for linear). */
export function activationName(v: unknown, where: string): ActivationName {
  if (v === undefined || v === null) return 'linear';
  if (typeof v !== 'string' || !(ACTIVATIONS as readonly string[]).includes(v)) {
    throw new ConfigError(`${where}: unknown activation ${fmtValue(v)}; expected one of ${ACTIVATIONS.join(', ')}`);
  }
  return v as ActivationName;
}

/** Primal: `y[i] = act(z[i])` for `n` elements (in place allowed: `y === z`). */
export function activationForward(name: ActivationName, z: Data, y: Data, n: number, rowLength: number): void {
  switch (name) {
    case 'linear':
      if (y !== z) for (let i = 0; i < n; i++) y[i] = z[i];
      return;
    case 'relu':
      for (let i = 0; i < n; i++) y[i] = z[i] > 0 ? z[i] : 0;
      return;
    case 'sigmoid':
      for (let i = 0; i < n; i++) {
        // Two branches keep exp from overflowing for large |z|.
        const v = z[i];
        if (v >= 0) y[i] = 1 / (1 + Math.exp(-v));
        else {
          const e = Math.exp(v);
          y[i] = e / (1 + e);
        }
      }
      return;
    case 'tanh':
      for (let i = 0; i < n; i++) y[i] = Math.tanh(z[i]);
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
  }
}

/** Dual-number rule, in place on the tangent block `dz` (`[n, T]`): `dy = act'(z) · dz`. */
export function activationJvp(name: ActivationName, y: Data, dz: Data, n: number, T: number, rowLength: number): void {
  switch (name) {
    case 'linear':
      return;
    case 'relu':
      for (let i = 0; i < n; i++) if (!(y[i] > 0)) dz.fill(0, i * T, i * T + T);
      return;
    case 'sigmoid':
      for (let i = 0; i < n; i++) scale(dz, i * T, T, y[i] * (1 - y[i]));
      return;
    case 'tanh':
      for (let i = 0; i < n; i++) scale(dz, i * T, T, 1 - y[i] * y[i]);
      return;
    case 'softmax': {
      // dy_k = y_k (dz_k - Σ_j y_j dz_j), for each of the T tangents of a row.
      const s = new Float64Array(T);
      for (let r = 0; r < n; r += rowLength) {
        s.fill(0);
        for (let k = 0; k < rowLength; k++) {
          const yk = y[r + k];
          const o = (r + k) * T;
          for (let t = 0; t < T; t++) s[t] += yk * dz[o + t];
        }
        for (let k = 0; k < rowLength; k++) {
          const yk = y[r + k];
          const o = (r + k) * T;
          for (let t = 0; t < T; t++) dz[o + t] = yk * (dz[o + t] - s[t]);
        }
      }
      return;
    }
  }
}

/** VJP rule: `dz = act'(z)ᵀ dy` for a cotangent `dy` of `n` elements, written into `dz` (may alias `dy`). */
export function activationVjp(name: ActivationName, y: Data, dy: Data, dz: Data, n: number, rowLength: number): void {
  switch (name) {
    case 'linear':
      if (dz !== dy) for (let i = 0; i < n; i++) dz[i] = dy[i];
      return;
    case 'relu':
      for (let i = 0; i < n; i++) dz[i] = y[i] > 0 ? dy[i] : 0;
      return;
    case 'sigmoid':
      for (let i = 0; i < n; i++) dz[i] = dy[i] * y[i] * (1 - y[i]);
      return;
    case 'tanh':
      for (let i = 0; i < n; i++) dz[i] = dy[i] * (1 - y[i] * y[i]);
      return;
    case 'softmax':
      // The Jacobian diag(y) - y yᵀ is symmetric, so the VJP has the JVP's form.
      for (let r = 0; r < n; r += rowLength) {
        let s = 0;
        for (let k = 0; k < rowLength; k++) s += y[r + k] * dy[r + k];
        for (let k = 0; k < rowLength; k++) dz[r + k] = y[r + k] * (dy[r + k] - s);
      }
      return;
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

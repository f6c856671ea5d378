/**
 * Activation: applies one activation of `activations.ts` (element-wise; softmax over the last axis).
 * Its rules are the primitives of `activations.ts`; this file gives them a layer's shape.
 * @module
 */
import { ACTIVATIONS, type ActivationName, activationForward, activationJvp, activationJvpInto, activationName, activationNeeds, activationVjp, couplesRow } from '../activations.js';
import { ConfigError, fmtValue } from '../errors.js';
import { type Tensor, assertShape, contiguous, copy, dtypeOf, zeros } from '../tensor.js';
import type { AxisStructure } from '../structure.js';
import { type AbsorbableActivation, BASE_KEYS, type Cotangents, type Forward, Layer, type LayerPass, type LocalJacobian, type Residuals, type Tangents, checkKeys } from './layer.js';
import { elementwiseLocal } from './local.js';
import { finishTangent, rowBlock, tangentBuffer } from './out.js';

/** Keras config of {@link Activation}. */
export interface ActivationConfig {
  /** One of {@link ACTIVATIONS} (softmax over the last axis). */
  activation: ActivationName;
}

/** What Activation's forward pass saves: its output `y`, and its input `z` when the activation's rules need it ({@link activationNeeds}). */
export interface ActivationSaved {
  /** The output, `[B, ...shape]`, contiguous. */
  y: Tensor;
  /** A contiguous copy of the input, `[B, ...shape]`, for gelu, swish/silu and softsign; else null. */
  z: Tensor | null;
}

/**
 * An activation applied element-wise (softmax: over the last axis).
 * @example
 * const act = new Activation({ activation: 'sigmoid' }).build([1]);
 */
export class Activation extends Layer<ActivationSaved> {
  readonly className = 'Activation';
  /** `vjp` returns `dx` in a new buffer of its own. */
  override readonly freshCotangent = true;
  /** The activation applied. */
  readonly activation: ActivationName;

  constructor(config: ActivationConfig, name?: string) {
    super(name, config);
    // A missing activation is a mistake here, not a request for linear (as activationName reads
    // `undefined` for Dense and Conv2D): an Activation layer exists only to apply one.
    if (!config || typeof config !== 'object' || config.activation === undefined) {
      throw new ConfigError(`Activation: expected config.activation, one of ${ACTIVATIONS.join(', ')}, received ${fmtValue(config)}`);
    }
    checkKeys(config as unknown as Record<string, unknown>, ['activation', ...BASE_KEYS], 'Activation');
    this.activation = activationName(config.activation, 'Activation');
  }

  computeOutputShape(inputShape: readonly number[]): number[] {
    return inputShape.slice();
  }

  getConfig(): Record<string, unknown> {
    return { activation: this.activation };
  }

  private get rowLength(): number {
    return this.inputShape[this.inputShape.length - 1];
  }

  /**
   * Primal pass, `act(x)` written straight into a new `y` (no copy of `x` first). Saves `y` (its
   * own buffer, never the input's), and `z`, a copy of the input, when the activation's rules
   * read it (a copy: the caller may change `x` afterwards).
   */
  forward(x: Tensor): Forward<ActivationSaved> {
    this.checkInput(x);
    const xc = contiguous(x);
    const y = zeros(xc.shape, dtypeOf(xc));
    const z = activationNeeds(this.activation) === 'z' ? copy(xc) : null;
    activationForward(this.activation, xc.data, y.data, y.size, this.rowLength);
    return { y, saved: { y, z } };
  }

  /** Dual-number rule: `dy = act'(x) · dx` (softmax: `y ⊙ (dx − ⟨y, dx⟩)` per row). No parameters. */
  jvp({ y, z }: ActivationSaved, { xDot, T, rows, pool }: Tangents, out?: Tensor): Tensor {
    if (!xDot) return out ?? zeros([...y.shape, T], dtypeOf(y));
    assertShape(xDot, [...y.shape, T], `${this.describe()} jvp xDot`);
    const src = contiguous(xDot).data;
    const n = y.size / y.shape[0];
    const dst = out && !couplesRow(this.activation) ? rowBlock(out) : null;
    if (out && dst && dst.stride !== T) {
      // A column block of J: each row of T tangents is copied to its place and scaled there.
      const lo = rows ? Math.max(0, rows.lo) : 0;
      const hi = rows ? Math.min(n, rows.hi) : n;
      for (let b = 0; b < y.shape[0]; b++) {
        for (let i = b * n + lo; i < b * n + hi; i++) {
          const w = dst.offset + i * dst.stride;
          const row = dst.data.subarray(w, w + T);
          row.set(src.subarray(i * T, i * T + T));
          activationJvp(this.activation, z ? z.data.subarray(i) : null, y.data.subarray(i), row, 1, T, this.rowLength);
        }
      }
      return out;
    }
    const yDot = tangentBuffer(out, [...y.shape, T], dtypeOf(y), pool);
    // An element-wise activation keeps zero rows zero: with the caller's hint only rows [lo, hi) of each sample are copied and scaled (a row-coupling one, softmax, takes them all).
    const lo = rows && !couplesRow(this.activation) ? Math.max(0, rows.lo) : 0;
    const hi = rows && !couplesRow(this.activation) ? Math.min(n, rows.hi) : n;
    for (let b = 0; b < y.shape[0]; b++) {
      const r0 = b * n + lo;
      if (hi <= lo) continue;
      activationJvpInto(this.activation, z ? z.data.subarray(r0) : null, y.data.subarray(r0), src.subarray(r0 * T), yDot.data.subarray(r0 * T), hi - lo, T, this.rowLength);
    }
    return finishTangent(out, yDot, pool);
  }

  /** VJP rule: `dx = act'(x)ᵀ dy`. */
  vjp({ y, z }: ActivationSaved, dy: Tensor): Cotangents {
    this.checkCotangent(dy, y.shape[0]);
    const dx = zeros(y.shape, dtypeOf(y));
    activationVjp(this.activation, z?.data ?? null, y.data, contiguous(dy).data, dx.data, y.size, this.rowLength);
    return { dx, dParams: [] };
  }

  /** The layer before may apply this activation in its epilogue when the rules read only the output (saved as `{ y }`); one that reads its input (gelu, swish/silu, softsign) runs on its own. */
  override absorbable(): AbsorbableActivation | null {
    if (activationNeeds(this.activation) === 'z') return null;
    return { activation: this.activation, saved: (y: Tensor): ActivationSaved => ({ y, z: null }) };
  }

  // Structure hooks: what the sparse engines and the memory estimate know of an activation.

  /** Diagonal, or, for an activation that couples a row (softmax), full along the last axis. */
  inputStructure(): AxisStructure {
    const dims = this.inputShape.slice();
    const last = dims.length - 1;
    return { inDims: dims, maps: dims.map((d, i) => (i === last && couplesRow(this.activation) ? { kind: 'full', rows: d } : { kind: 'identity' })) };
  }

  /** Forward saves its output, and its input for an activation whose rules read it (see {@link ActivationSaved}). */
  residuals(): Residuals {
    return { saves: activationNeeds(this.activation) === 'z' ? ['y', { what: 'z', perSample: this.inputShape.slice(), dtype: this.dtype }] : ['y'] };
  }

  /** The local Jacobian at a recorded pass, read off the activation's own dual-number rule. */
  localJacobian(pass: LayerPass): LocalJacobian[] {
    const { y, z } = pass.saved as ActivationSaved;
    const n = y.size / y.shape[0];
    const block = couplesRow(this.activation) ? this.rowLength : 1;
    return [elementwiseLocal(y.shape[0], n, block, (dz, count, T) => activationJvp(this.activation, z?.data ?? null, y.data, dz, count, T, this.rowLength))];
  }
}

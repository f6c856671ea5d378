/**
 * Flatten: a row-major reshape of each sample, `[B, H, W, C] → [B, H·W·C]` (NHWC, as Keras).
 * Forward, JVP and VJP are ndarray views of their argument: nothing is copied or computed.
 * @module
 */
import { ConfigError, fmtValue } from '../errors.js';
import { type Tensor, assertShape, contiguous, reshape, sizeOf, zeros } from '../tensor.js';
import { deliverTangent, rowBlock } from './out.js';
import type { AxisStructure } from '../structure.js';
import { BASE_KEYS, type Cotangents, type Forward, Layer, type LocalJacobian, type Residuals, type Tangents, checkKeys } from './layer.js';
import { identityLocal } from './local.js';

/** Keras config of {@link Flatten}: only the (channels-last) data format Keras writes into model files. */
export interface FlattenConfig {
  /** Only `'channels_last'` (NHWC), Keras' default; null means the same. */
  data_format?: 'channels_last' | null;
}

/** What Flatten's forward pass saves: only the batch input shape, to unflatten the cotangent. */
export interface FlattenSaved {
  /** The input shape `[B, ...in]` of this pass. */
  inputShape: number[];
}

/**
 * Flattens each sample row-major; its Jacobian is the identity (rows in NHWC order).
 * @example
 * const flat = new Flatten().build([8, 8, 6]);
 * const x = zeros([2, 8, 8, 6]);
 * const { y } = flat.forward(x); // y: [2, 384], a view of x (y.data === x.data)
 */
export class Flatten extends Layer<FlattenSaved> {
  readonly className = 'Flatten';

  constructor(config: FlattenConfig = {}, name?: string) {
    super(name, config);
    checkKeys(config as unknown as Record<string, unknown>, ['data_format', ...BASE_KEYS], 'Flatten');
    // channels_first would permute axes before flattening; the engine is NHWC only.
    if (config.data_format !== undefined && config.data_format !== null && config.data_format !== 'channels_last') {
      throw new ConfigError(`Flatten: expected data_format "channels_last" (NHWC), received ${fmtValue(config.data_format)}`);
    }
  }

  computeOutputShape(inputShape: readonly number[]): number[] {
    return [sizeOf(inputShape)];
  }

  getConfig(): Record<string, unknown> {
    return { data_format: 'channels_last' };
  }

  /** Primal pass: `y = reshape(x, [B, n])`, a view. Saves the input shape. */
  forward(x: Tensor): Forward<FlattenSaved> {
    this.checkInput(x);
    const B = x.shape[0];
    return { y: reshape(x, [B, this.outputShape[0]]), saved: { inputShape: x.shape.slice() } };
  }

  /** Dual-number rule: the tangent block `[B, ...in, T]` reshaped to `[B, n, T]`, a view. No parameters. */
  jvp({ inputShape }: FlattenSaved, { xDot, T, rows }: Tangents, out?: Tensor): Tensor {
    const B = inputShape[0];
    const n = this.outputShape[0];
    if (!xDot) return out ?? zeros([B, n, T], this.dtype);
    assertShape(xDot, [...inputShape, T], `${this.describe()} jvp xDot`);
    const view = reshape(xDot, [B, n, T]);
    const dst = out ? rowBlock(out) : null;
    if (!out || !dst) return deliverTangent(out, view);
    // Into a zero out (a column block of J): only the rows the caller's hint allows are copied.
    const src = contiguous(view);
    const lo = rows ? Math.max(0, rows.lo) : 0;
    const hi = rows ? Math.min(n, rows.hi) : n;
    for (let b = 0; b < B; b++) {
      for (let i = b * n + lo; i < b * n + hi; i++) {
        const w = dst.offset + i * dst.stride;
        for (let t = 0, o = i * T; t < T; t++) dst.data[w + t] = src.data[o + t];
      }
    }
    return out;
  }

  /** VJP rule: the cotangent `[B, n]` reshaped back to `[B, ...in]`, a view (the Jacobian is orthogonal). */
  vjp({ inputShape }: FlattenSaved, dy: Tensor): Cotangents {
    this.checkCotangent(dy, inputShape[0]);
    return { dx: reshape(dy, inputShape), dParams: [] };
  }

  // Structure hooks: a row-major reshape is the identity.

  /** The identity on every axis (row-major order is kept). */
  inputStructure(): AxisStructure {
    return { inDims: this.inputShape.slice(), maps: this.inputShape.map(() => ({ kind: 'identity' })) };
  }

  /** Forward saves no buffer, and every result is a view. */
  residuals(): Residuals {
    return { saves: [], outputIsView: true, jvpIsView: true, vjpIsView: true };
  }

  /** The identity. */
  localJacobian(): LocalJacobian[] {
    return [identityLocal(this.outputShape[0])];
  }
}

/**
 * Reshape: each sample reshaped row-major to `target_shape` (one `-1` at most, inferred),
 * `[B, ...in] → [B, ...target]`. Forward, JVP and VJP are ndarray views of their argument
 * (for contiguous arguments): nothing is copied or computed, and the Jacobian is the identity.
 * @module
 */
import { ConfigError, ShapeError, fmtShape, fmtValue } from '../errors.js';
import type { AxisStructure } from '../structure.js';
import { type Tensor, assertShape, reshape, sizeOf, zeros } from '../tensor.js';
import { BASE_KEYS, type Cotangents, type Forward, Layer, type LocalJacobian, type Residuals, type Tangents, checkKeys } from './layer.js';
import { identityLocal } from './local.js';

/** Keras config of {@link Reshape}. */
export interface ReshapeConfig {
  /** The per-sample output shape: positive integers, with at most one `-1` (inferred from the size). */
  target_shape: number[];
}

/** What Reshape's forward pass saves: only the batch input shape, to reshape the cotangent back. */
export interface ReshapeSaved {
  /** The input shape `[B, ...in]` of this pass. */
  inputShape: number[];
}

/**
 * Row-major reshape of each sample; its Jacobian is the identity, and every result is a view.
 * @example
 * const r = new Reshape({ target_shape: [-1, 3] }).build([2, 3, 1]);
 * const { y } = r.forward(zeros([4, 2, 3, 1])); // y: [4, 2, 3], a view of x (y.data === x.data)
 */
export class Reshape extends Layer<ReshapeSaved> {
  readonly className = 'Reshape';
  /** The target shape as configured (with its `-1`, if any). */
  readonly targetShape: number[];

  constructor(config: ReshapeConfig, name?: string) {
    super(name, config);
    checkKeys(config, ['target_shape', ...BASE_KEYS], 'Reshape');
    const t = config.target_shape;
    if (!Array.isArray(t) || t.length === 0 || t.some((d) => !(Number.isSafeInteger(d) && (d > 0 || d === -1))) || t.filter((d) => d === -1).length > 1) {
      throw new ConfigError(`Reshape: expected target_shape to be a non-empty list of positive integers with at most one -1, received ${fmtValue(t)}`);
    }
    this.targetShape = t.slice();
  }

  /** The target with its `-1` resolved; a size that does not match the input's is refused, quoting both. */
  computeOutputShape(inputShape: readonly number[]): number[] {
    const n = sizeOf(inputShape);
    const free = this.targetShape.indexOf(-1);
    const known = sizeOf(this.targetShape.filter((d) => d !== -1));
    const out = this.targetShape.slice();
    if (free >= 0) out[free] = n / known;
    if (sizeOf(out) !== n || !Number.isInteger(out[free >= 0 ? free : 0])) {
      throw new ShapeError(`${this.describe()}: expected target_shape ${fmtShape(this.targetShape)} to hold the ${n} values of an input ${fmtShape(inputShape)}, received ${free >= 0 ? `a target whose other dimensions hold ${known} values, which does not divide ${n}` : `a target of ${known} values`}`);
    }
    return out;
  }

  getConfig(): Record<string, unknown> {
    return { target_shape: this.targetShape.slice() };
  }

  /** Primal pass: `y = reshape(x, [B, ...target])`, a view. Saves the input shape. */
  forward(x: Tensor): Forward<ReshapeSaved> {
    this.checkInput(x);
    return { y: reshape(x, [x.shape[0], ...this.outputShape]), saved: { inputShape: x.shape.slice() } };
  }

  /** Dual-number rule: the tangent block `[B, ...in, T]` reshaped to `[B, ...target, T]`, a view. No parameters. */
  jvp({ inputShape }: ReshapeSaved, { xDot, T }: Tangents): Tensor {
    const out = [inputShape[0], ...this.outputShape, T];
    if (!xDot) return zeros(out, this.dtype);
    assertShape(xDot, [...inputShape, T], `${this.describe()} jvp xDot`);
    return reshape(xDot, out);
  }

  /** VJP rule: the cotangent `[B, ...target]` reshaped back to `[B, ...in]`, a view (the Jacobian is the identity). */
  vjp({ inputShape }: ReshapeSaved, dy: Tensor): Cotangents {
    this.checkCotangent(dy, inputShape[0]);
    return { dx: reshape(dy, inputShape), dParams: [] };
  }

  // Structure hooks: a row-major reshape is the identity.

  /** The identity over the flattened sample: the axes of the input need not line up with the target's. */
  inputStructure(): AxisStructure {
    return { inDims: [sizeOf(this.inputShape)], maps: [{ kind: 'identity' }] };
  }

  /** Forward saves no buffer, and every result is a view. */
  residuals(): Residuals {
    return { saves: [], outputIsView: true, jvpIsView: true, vjpIsView: true };
  }

  /** The identity. */
  localJacobian(): LocalJacobian[] {
    return [identityLocal(sizeOf(this.outputShape))];
  }
}

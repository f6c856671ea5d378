/**
 * Dropout: the identity in inference; in training, inverted dropout `y = x ⊙ m` with a mask `m`
 * that keeps each element with probability `1 - rate` and scales it by `1 / (1 - rate)`.
 *
 * The mask is drawn once per forward pass and saved, so the pass's JVP and VJP differentiate the
 * very function that forward computed: `∂y/∂x = diag(m)`.
 * @module
 */
import { ConfigError, ShapeError, fmtShape, fmtValue } from '../errors.js';
import { Rng } from '../rng.js';
import { type Tensor, assertShape, contiguous, dtypeOf, sizeOf, stridesOf, zeros } from '../tensor.js';
import type { AxisStructure } from '../structure.js';
import { BASE_KEYS, type Cotangents, type Forward, type ForwardOptions, Layer, type LayerPass, type LocalJacobian, type Residuals, type Tangents, checkKeys } from './layer.js';
import { diagonalLocal, identityLocal } from './local.js';
import { deliverTangent, rowBlock } from './out.js';

/** Keras config of {@link Dropout}. */
export interface DropoutConfig {
  /** Fraction of elements dropped in training, in `[0, 1)`. */
  rate: number;
  /**
   * Shape of the mask, batch axis included (`null` entries take the input's extent); an extent of
   * 1 shares one mask value along that axis, as Keras' `noise_shape`. Default: the input's shape.
   */
  noise_shape?: (number | null)[] | null;
  /** Seed of the layer's own generator, used when a training pass is given no `rng`. */
  seed?: number | null;
}

/** What Dropout's forward pass saves: the mask of this pass (null in inference), and the input shape. */
export interface DropoutSaved {
  /** `[B, ...in]`: 0 or `1 / (1 - rate)` per element in training; null in inference (identity). */
  mask: Tensor | null;
  /** The input shape `[B, ...in]` of this pass, to shape a zero tangent. */
  inputShape: number[];
}

/**
 * Inverted dropout; an identity at inference.
 * @example
 * const drop = new Dropout({ rate: 0.5 }).build([4]);
 * const x = tensor([1, 2, 3, 4], [1, 4]);
 * drop.forward(x).y; // x itself (inference)
 * drop.forward(x, { training: true, rng: new Rng(7) }).y; // each element 0 or doubled
 */
export class Dropout extends Layer<DropoutSaved> {
  readonly className = 'Dropout';
  /** Draws a fresh mask in every training pass. */
  readonly stochastic = true;
  /** Honours `batchSlice`: a shard's mask is its rows of the whole batch's mask. */
  readonly batchSliced = true;
  /** Fraction of elements dropped in training. */
  readonly rate: number;
  /** Shape of the mask (Keras' `noise_shape`), or null for the input's shape. */
  readonly noiseShape: (number | null)[] | null;
  /** Seed of the layer's own generator, or null. */
  readonly seed: number | null;
  /** The fallback generator; advances with every training pass, so each pass draws a fresh mask. */
  private readonly rng: Rng;

  constructor(config: DropoutConfig, name?: string) {
    super(name, config);
    checkKeys(config as unknown as Record<string, unknown>, ['rate', 'noise_shape', 'seed', ...BASE_KEYS], 'Dropout');
    const { rate, noise_shape, seed } = config;
    if (typeof rate !== 'number' || !(rate >= 0 && rate < 1)) {
      throw new ConfigError(`Dropout: expected rate to be a number in [0, 1), received ${typeof rate === 'number' ? String(rate) : fmtValue(rate)}`);
    }
    if (noise_shape !== undefined && noise_shape !== null) {
      if (!Array.isArray(noise_shape) || noise_shape.some((d) => d !== null && !(Number.isInteger(d) && d > 0))) {
        throw new ConfigError(`Dropout: expected noise_shape to be an array of positive integers or nulls, received ${fmtValue(noise_shape)}`);
      }
    }
    if (seed !== undefined && seed !== null && !Number.isInteger(seed)) {
      throw new ConfigError(`Dropout: expected seed to be an integer, received ${fmtValue(seed)}`);
    }
    this.rate = rate;
    this.noiseShape = noise_shape ?? null;
    this.seed = seed ?? null;
    this.rng = new Rng(seed ?? 0);
  }

  computeOutputShape(inputShape: readonly number[]): number[] {
    // The batch extent is only known per pass: check the other axes now, all of them in forward.
    if (this.noiseShape) this.resolveNoiseShape([this.noiseShape[0] ?? 1, ...inputShape]);
    return inputShape.slice();
  }

  getConfig(): Record<string, unknown> {
    return { rate: this.rate, noise_shape: this.noiseShape, seed: this.seed };
  }

  /** The mask's shape for an input shape `[B, ...in]`: each extent the input's or 1 (broadcast). */
  private resolveNoiseShape(shape: readonly number[]): number[] {
    if (!this.noiseShape) return shape.slice();
    const ns = this.noiseShape;
    const resolved = ns.map((d, i) => d ?? shape[i]);
    if (ns.length !== shape.length || resolved.some((d, i) => d !== 1 && d !== shape[i])) {
      throw new ShapeError(
        `${this.describe()}: expected noise_shape of rank ${shape.length} (batch axis included) with each extent 1, null or the input's ${fmtShape(shape)}, received ${fmtValue(ns)}`,
      );
    }
    return resolved;
  }

  /**
   * Primal pass: `y = x` in inference; `y = x ⊙ m` in training, `m` drawn from `opts.rng` (else the
   * layer's own generator). Saves `m` (null in inference).
   */
  forward(x: Tensor, opts: ForwardOptions = {}): Forward<DropoutSaved> {
    this.checkInput(x);
    const inputShape = x.shape.slice();
    if (!opts.training) return { y: x, saved: { mask: null, inputShape } };
    const mask = this.sliceMask(inputShape, opts);
    const xc = contiguous(x);
    const y = zeros(inputShape, dtypeOf(x));
    for (let i = 0; i < y.size; i++) y.data[i] = xc.data[xc.offset + i] * mask.data[i];
    return { y, saved: { mask, inputShape } };
  }

  /** Dual-number rule: `dy = m ⊙ dx` for each of the `T` tangents (`dy = dx` in inference). No parameters. */
  jvp({ mask, inputShape }: DropoutSaved, { xDot, T, rows }: Tangents, out?: Tensor): Tensor {
    if (!xDot) return out ?? zeros([...inputShape, T], this.dtype);
    assertShape(xDot, [...inputShape, T], `${this.describe()} jvp xDot`);
    if (!mask && !out) return xDot;
    const dxc = contiguous(xDot);
    const yDot = out ?? zeros(xDot.shape, dtypeOf(xDot));
    const dst = rowBlock(yDot);
    if (!dst) return deliverTangent(out, this.jvp({ mask, inputShape }, { xDot, T, paramDots: null, rows }));
    // The output is zero on entry: only the rows the caller's hint allows, and only kept units, are written.
    const n = sizeOf(inputShape) / inputShape[0];
    const lo = rows ? Math.max(0, rows.lo) : 0;
    const hi = rows ? Math.min(n, rows.hi) : n;
    for (let b = 0; b < inputShape[0]; b++) {
      for (let i = b * n + lo; i < b * n + hi; i++) {
        const m = mask ? mask.data[i] : 1;
        if (m === 0) continue;
        const o = dxc.offset + i * T;
        const w = dst.offset + i * dst.stride;
        for (let t = 0; t < T; t++) dst.data[w + t] = m * dxc.data[o + t];
      }
    }
    return yDot;
  }

  /** VJP rule: `dx = m ⊙ dy` (`diag(m)` is symmetric); `dx = dy` in inference. */
  vjp({ mask, inputShape }: DropoutSaved, dy: Tensor): Cotangents {
    this.checkCotangent(dy, inputShape[0]);
    if (!mask) return { dx: dy, dParams: [] };
    const dyc = contiguous(dy);
    const dx = zeros(inputShape, dtypeOf(dy));
    for (let i = 0; i < dx.size; i++) dx.data[i] = mask.data[i] * dyc.data[dyc.offset + i];
    return { dx, dParams: [] };
  }

  // Structure hooks: dropout is diagonal, its mask the diagonal.

  /** The identity pattern on every axis (a dropped unit is a value-dependent zero). */
  inputStructure(): AxisStructure {
    return { inDims: this.inputShape.slice(), maps: this.inputShape.map(() => ({ kind: 'identity' })) };
  }

  /** In training, forward saves its mask (one value per element, in the layer's dtype); at inference nothing, and every result is a view. */
  residuals(opts: ForwardOptions): Residuals {
    if (!opts.training) return { saves: [], outputIsView: true, jvpIsView: true, vjpIsView: true };
    return { saves: [{ what: 'mask', perSample: this.inputShape.slice(), dtype: this.dtype }] };
  }

  /** `diag(m)` at a recorded pass (the identity at inference). */
  localJacobian(pass: LayerPass): LocalJacobian[] {
    const { mask } = pass.saved as DropoutSaved;
    const n = this.inputShape.reduce((a, b) => a * b, 1);
    return [mask ? diagonalLocal(contiguous(mask).data, n) : identityLocal(n)];
  }

  /**
   * The mask of this pass: drawn for the whole batch when the pass is a shard of one (a
   * data-parallel step), then its rows kept, so that every shard sees the same mask as one pass
   * over the batch, whatever the sharding.
   */
  private sliceMask(inputShape: number[], opts: ForwardOptions): Tensor {
    const rng = opts.rng ?? this.rng;
    const sl = opts.batchSlice;
    if (!sl) return this.drawMask(inputShape, rng);
    const B = inputShape[0];
    if (!Number.isInteger(sl.start) || !Number.isInteger(sl.total) || sl.start < 0 || sl.start + B > sl.total) {
      throw new ConfigError(`${this.describe()}: expected batchSlice rows [start, start + ${B}) within [0, total), received ${fmtValue(sl)}`);
    }
    if (sl.start === 0 && sl.total === B) return this.drawMask(inputShape, rng);
    const whole = this.drawMask([sl.total, ...inputShape.slice(1)], rng);
    const row = whole.size / sl.total;
    const mask = zeros(inputShape, this.dtype);
    mask.data.set(whole.data.subarray(sl.start * row, (sl.start + B) * row));
    return mask;
  }

  /** One mask for one pass: `1/(1-rate)` with probability `1 - rate`, else 0; broadcast over noise_shape's 1s. */
  private drawMask(shape: number[], rng: Rng): Tensor {
    const keep = 1 / (1 - this.rate);
    const mask = zeros(shape, this.dtype);
    const ns = this.resolveNoiseShape(shape);
    if (ns.every((d, i) => d === shape[i])) {
      for (let i = 0; i < mask.size; i++) mask.data[i] = rng.uniform() >= this.rate ? keep : 0;
      return mask;
    }
    const noise = new Float64Array(ns.reduce((a, b) => a * b, 1));
    for (let i = 0; i < noise.length; i++) noise[i] = rng.uniform() >= this.rate ? keep : 0;
    const nsStrides = stridesOf(ns);
    const idx = new Array<number>(shape.length).fill(0);
    for (let i = 0; i < mask.size; i++) {
      let j = 0;
      for (let a = 0; a < shape.length; a++) if (ns[a] !== 1) j += idx[a] * nsStrides[a];
      mask.data[i] = noise[j];
      for (let a = shape.length - 1; a >= 0; a--) {
        if (++idx[a] < shape[a]) break;
        idx[a] = 0;
      }
    }
    return mask;
  }
}

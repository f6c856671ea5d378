/**
 * ReLU: Keras 3's rectified linear unit with its three options, applied element-wise on any shape:
 * `f(x) = max_value` if `x ≥ max_value`; `x` if `threshold ≤ x < max_value`;
 * `negative_slope · (x − threshold)` otherwise.
 *
 * The map is piecewise linear, so its Jacobian is diagonal with entries `0`, `1` or
 * `negative_slope` read off the saved input. At the kinks this library takes TensorFlow's
 * gradients: ReluGrad (`x > 0`), LeakyReluGrad (`x > 0 ? 1 : alpha`) and Relu6Grad
 * (`0 < x < 6`) all give the inner slope `1` only strictly inside `(threshold, max_value)`, so
 * `f'(threshold) = negative_slope` and `f'(max_value) = 0`. A NaN input propagates to the output
 * (as in TensorFlow) and takes the slope `negative_slope` (TensorFlow's ReluGrad gives it 0, the
 * same for the default slope).
 *
 * The formula is Keras 3's documented one, followed exactly. Keras' own TensorFlow code differs
 * from it at one point: with a threshold `t ≠ 0` it computes `x · (x > t)`, so `f(t) = 0` there
 * where the formula (and this layer) gives `f(t) = t`.
 * @module
 */
import { ConfigError, fmtValue } from '../errors.js';
import { type Data, type Tensor, assertShape, contiguous, dtypeOf, zeros } from '../tensor.js';
import { deliverTangent, rowBlock } from './out.js';
import type { AxisStructure } from '../structure.js';
import { BASE_KEYS, type Cotangents, type Forward, Layer, type LayerPass, type LocalJacobian, type Residuals, type Tangents, checkKeys } from './layer.js';
import { diagonalLocal } from './local.js';

/** Keras config of {@link ReLU}. */
export interface ReLUConfig {
  /** Saturation value; null or absent: none. Non-negative. */
  max_value?: number | null;
  /** Slope below the threshold; default 0. Non-negative. */
  negative_slope?: number;
  /** Where the unit turns on; default 0. Non-negative. */
  threshold?: number;
}

/** What ReLU's (and LeakyReLU's) forward pass saves: only its input, whose position against the kinks is each element's slope. */
export interface ReLUSaved {
  /** The input `x`, `[B, ...shape]`, contiguous (the caller's tensor itself when it already is). */
  x: Tensor;
}

/**
 * The shared rules of the piecewise-linear units (ReLU, LeakyReLU): forward, the diagonal
 * dual-number rule, its transpose, and their structure hooks. Subclasses fix the three constants.
 */
export abstract class PiecewiseLinearUnit extends Layer<ReLUSaved> {
  /** Saturation value (`Infinity`: none). */
  abstract readonly maxValue: number;
  /** Slope below the threshold. */
  abstract readonly negativeSlope: number;
  /** Where the unit turns on. */
  abstract readonly threshold: number;

  computeOutputShape(inputShape: readonly number[]): number[] {
    return inputShape.slice();
  }

  /** Primal pass, Keras 3's formula element by element. Saves `x`. */
  forward(x: Tensor): Forward<ReLUSaved> {
    this.checkInput(x);
    const xc = contiguous(x);
    const y = zeros(xc.shape, dtypeOf(xc));
    const { maxValue: m, negativeSlope: a, threshold: t } = this;
    const xd = xc.data;
    const yd = y.data;
    // Comparisons with NaN are false, so a NaN reaches the last branch and stays NaN there.
    for (let i = 0; i < yd.length; i++) {
      const v = xd[i];
      yd[i] = v >= m ? m : v >= t ? v : a * (v - t);
    }
    return { y, saved: { x: xc } };
  }

  /** Dual-number rule: `dy[i, t] = f'(x[i]) · dx[i, t]`. No parameters. */
  jvp({ x }: ReLUSaved, { xDot, T, rows }: Tangents, out?: Tensor): Tensor {
    if (!xDot) return out ?? zeros([...x.shape, T], dtypeOf(x));
    assertShape(xDot, [...x.shape, T], `${this.describe()} jvp xDot`);
    const yDot = out ?? zeros([...x.shape, T], dtypeOf(x));
    const dst = rowBlock(yDot);
    if (!dst) return deliverTangent(out, this.jvp({ x }, { xDot, T, paramDots: null, rows }));
    const s0 = contiguous(xDot);
    const src = s0.data;
    const xd = x.data;
    // The output is zero on entry, so only rows the caller's hint says may be non-zero are visited.
    const n = x.size / x.shape[0];
    const lo = rows ? Math.max(0, rows.lo) : 0;
    const hi = rows ? Math.min(n, rows.hi) : n;
    for (let b = 0; b < x.shape[0]; b++) {
      for (let i = b * n + lo; i < b * n + hi; i++) {
        const s = this.slope(xd[i]);
        if (s === 0) continue;
        const o = i * T;
        const w = dst.offset + i * dst.stride;
        for (let k = 0; k < T; k++) dst.data[w + k] = s * src[o + k];
      }
    }
    return yDot;
  }

  /** VJP rule: `dx[i] = f'(x[i]) · dy[i]` (the Jacobian is diagonal, its own transpose). */
  vjp({ x }: ReLUSaved, dy: Tensor): Cotangents {
    this.checkCotangent(dy, x.shape[0]);
    const g = contiguous(dy).data;
    const dx = zeros(x.shape, dtypeOf(x));
    const xd = x.data;
    for (let i = 0; i < xd.length; i++) dx.data[i] = this.slope(xd[i]) * g[i];
    return { dx, dParams: [] };
  }

  // Structure hooks: element-wise, so diagonal.

  /** The identity on every axis: output `i` reads input `i` only. */
  inputStructure(): AxisStructure {
    return { inDims: this.inputShape.slice(), maps: this.inputShape.map(() => ({ kind: 'identity' })) };
  }

  /** Forward saves its input (see {@link ReLUSaved}). */
  residuals(): Residuals {
    return { saves: ['x'] };
  }

  /** The diagonal of slopes at a recorded pass; the zero slopes (ReLU's off units) are empty rows. */
  localJacobian(pass: LayerPass): LocalJacobian[] {
    const { x } = pass.saved as ReLUSaved;
    const d: Data = new Float64Array(x.size);
    for (let i = 0; i < d.length; i++) d[i] = this.slope(x.data[i]);
    return [diagonalLocal(d, x.size / x.shape[0])];
  }

  /** `f'(v)`, TensorFlow's choice at the kinks: 1 strictly inside `(threshold, max_value)`, 0 from `max_value` up, the negative slope at and below the threshold (and for NaN). */
  protected slope(v: number): number {
    return v >= this.maxValue ? 0 : v > this.threshold ? 1 : this.negativeSlope;
  }
}

/** Reads an optional non-negative finite number, as Keras validates its ReLU options. */
export function nonNegative(v: unknown, fallback: number, what: string, layer: string): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
    throw new ConfigError(`${layer}: expected ${what} to be a non-negative number, received ${typeof v === 'number' ? String(v) : fmtValue(v)}`);
  }
  return v;
}

/**
 * Keras 3's ReLU layer, element-wise: saturated at `max_value`, on from `threshold`, leaking with
 * `negative_slope` below it; diagonal Jacobian of slopes `0`, `1` or `negative_slope`.
 * @example
 * const relu = new ReLU({ max_value: 6, negative_slope: 0.1, threshold: 1 }).build([4]);
 * const { y } = relu.forward(tensor([-1, 0.5, 3, 8], [1, 4])); // [[-0.2, -0.05, 3, 6]]
 */
export class ReLU extends PiecewiseLinearUnit {
  readonly className = 'ReLU';
  readonly maxValue: number;
  readonly negativeSlope: number;
  readonly threshold: number;

  constructor(config: ReLUConfig = {}, name?: string) {
    super(name, config);
    checkKeys(config, ['max_value', 'negative_slope', 'threshold', ...BASE_KEYS], 'ReLU');
    this.maxValue = config.max_value === null ? Infinity : nonNegative(config.max_value, Infinity, 'max_value (or null)', 'ReLU');
    this.negativeSlope = nonNegative(config.negative_slope, 0, 'negative_slope', 'ReLU');
    this.threshold = nonNegative(config.threshold, 0, 'threshold', 'ReLU');
  }

  getConfig(): Record<string, unknown> {
    return { max_value: Number.isFinite(this.maxValue) ? this.maxValue : null, negative_slope: this.negativeSlope, threshold: this.threshold };
  }
}

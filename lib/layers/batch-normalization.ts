/**
 * BatchNormalization over the last axis (channels, NHWC): `y = gamma·(x − mean)/sqrt(var + eps) + beta`
 * per channel, with Keras 3's parameters `gamma, beta, moving_mean, moving_variance` (gamma absent
 * with `scale: false`, beta with `center: false`).
 *
 * - **Inference**: mean and var are the moving statistics; the layer is an affine map per
 *   channel, diagonal, samples independent.
 * - **Training**: mean and var are the batch's mean and biased variance over every axis but the
 *   last (`N = B·H·W` values per channel), so every output depends on every sample of its
 *   channel: the JVP and the VJP carry the derivative through the batch statistics, and the
 *   `samplesIndependent` hook says the samples are coupled (the batch Jacobian is refused; the
 *   full Jacobian `[B, ...out, B, ...in]` holds the cross-sample terms).
 *
 * The moving statistics are state, not weights: non-trainable parameters (no gradient, no
 * Jacobian, no optimizer step). A training forward pass computes their update
 * `moving·momentum + batch·(1 − momentum)` (Keras 3 uses the biased batch variance here too) into
 * its residuals and never applies it; {@link BatchNormalization.applyUpdates} does, once, when the
 * tape that records the pass commits it. So the Jacobian builders and finite-difference checks,
 * which call forward again, leave the statistics alone. As in Keras 3, a layer set
 * `trainable = false` runs in inference mode even in training.
 * @module
 */
import { ConfigError, ShapeError, fmtShape, fmtValue } from '../errors.js';
import type { AxisStructure } from '../structure.js';
import { type Tensor, assertShape, contiguous, dtypeOf, tensor, zeros } from '../tensor.js';
import { BASE_KEYS, type Cotangents, type Forward, type ForwardOptions, Layer, type Residuals, type Tangents, checkKeys } from './layer.js';

/** Keras config of {@link BatchNormalization}. */
export interface BatchNormalizationConfig {
  /** The normalized axis: only -1 (or the last axis' index), the channels. */
  axis?: number | number[];
  /** Weight of the old moving statistics in their update; default 0.99. */
  momentum?: number;
  /** Added to the variance before the square root; default 1e-3. */
  epsilon?: number;
  /** Learn a `beta` offset; default true. */
  center?: boolean;
  /** Learn a `gamma` scale; default true. */
  scale?: boolean;
  /** Keras' initializers, regularizers and constraints: recorded (weights come from files or the defaults). */
  [key: string]: unknown;
}

/**
 * What BatchNormalization's forward pass saves. Inference: the input `x` (the previous layer's
 * output, no new buffer) and `stats` = `[mean, invStd, gamma]` (3·C values: the moving mean, its
 * `1/sqrt(var + eps)`, and gamma, as at forward time). Training: the normalized input `xhat`
 * (`[B, ...in]`, a buffer of its own) and `stats` = `[invStd, gamma, newMovingMean, newMovingVariance]`
 * (4·C values): the batch's `1/sqrt(var + eps)`, gamma, and the moving statistics' update, applied
 * only by {@link BatchNormalization.applyUpdates}.
 */
export interface BatchNormalizationSaved {
  /** Whether the pass normalized by batch statistics. */
  training: boolean;
  /** Inference: the input `[B, ...in]`; training: the normalized input `xhat` `[B, ...in]`. */
  x: Tensor;
  /** Per-channel values, float64 (layout above). */
  stats: Float64Array;
}

/** Keras options this layer implements only at their default: refused otherwise, quoting the value. */
const REFUSED_UNLESS_DEFAULT: readonly [string, unknown][] = [
  ['synchronized', false],
  ['renorm', false],
  ['renorm_clipping', null],
  ['renorm_momentum', 0.99],
  ['fused', null],
  ['virtual_batch_size', null],
  ['adjustment', null],
];

/** Keras keys recorded as given (initial values come from the weights file, or ones and zeros). */
const RECORDED = [
  'beta_initializer', 'gamma_initializer', 'moving_mean_initializer', 'moving_variance_initializer',
  'beta_regularizer', 'gamma_regularizer', 'beta_constraint', 'gamma_constraint',
] as const;

/**
 * Batch normalization over the channels (the last axis) of any per-sample input shape.
 * @example
 * const bn = new BatchNormalization({ momentum: 0.8 }).build([5, 4, 2]);
 * const { y, saved } = bn.forward(x, { training: true }); // batch statistics; moving ones untouched
 * bn.applyUpdates(saved);                                  // moving = 0.8·moving + 0.2·batch
 */
export class BatchNormalization extends Layer<BatchNormalizationSaved> {
  readonly className = 'BatchNormalization';
  /** Weight of the old moving statistics in their update. */
  readonly momentum: number;
  /** Added to the variance before the square root. */
  readonly epsilon: number;
  /** Whether `beta` exists. */
  readonly center: boolean;
  /** Whether `gamma` exists. */
  readonly scale: boolean;
  /** The axis as configured (-1, or the last axis' index once built). */
  readonly axis: number;
  /** Keras' initializer, regularizer and constraint keys as given, returned by {@link BatchNormalization.getConfig}. */
  readonly recorded: Record<string, unknown>;

  constructor(config: BatchNormalizationConfig = {}, name?: string) {
    super(name, config);
    const known = ['axis', 'momentum', 'epsilon', 'center', 'scale', ...RECORDED, ...REFUSED_UNLESS_DEFAULT.map(([k]) => k), ...BASE_KEYS];
    checkKeys(config, known, 'BatchNormalization');
    const axis = Array.isArray(config.axis) && config.axis.length === 1 ? config.axis[0] : (config.axis ?? -1);
    if (!Number.isInteger(axis)) {
      throw new ConfigError(`BatchNormalization: only the last axis (axis -1, the channels) is implemented, received axis ${fmtValue(config.axis)}`);
    }
    this.axis = axis as number;
    this.momentum = number(config.momentum, 0.99, 'momentum', (v) => v >= 0 && v <= 1, 'in [0, 1]');
    this.epsilon = number(config.epsilon, 1e-3, 'epsilon', (v) => v > 0, 'positive');
    this.center = flag(config.center, 'center');
    this.scale = flag(config.scale, 'scale');
    for (const [k, dflt] of REFUSED_UNLESS_DEFAULT) {
      if (Object.hasOwn(config, k) && config[k] !== dflt && !(dflt === null && config[k] === undefined)) {
        throw new ConfigError(`BatchNormalization: option ${JSON.stringify(k)} must be ${fmtValue(dflt)} (the only one implemented), received ${fmtValue(config[k])}`);
      }
    }
    this.recorded = {};
    for (const k of RECORDED) if (Object.hasOwn(config, k)) this.recorded[k] = config[k];
    if (config.trainable === false) this.trainable = false;
  }

  computeOutputShape(inputShape: readonly number[]): number[] {
    if (inputShape.length < 1) throw new ShapeError(`${this.describe()}: expected a per-sample input of rank >= 1 (channels last), received ${fmtShape(inputShape)}`);
    // Keras counts the batch axis: the last axis is -1, or rank (per sample) counting it.
    if (this.axis !== -1 && this.axis !== inputShape.length) {
      throw new ConfigError(`${this.describe()}: only the last axis (axis -1, the channels) is implemented, received axis ${this.axis} for an input [B, ${inputShape.join(', ')}]`);
    }
    return inputShape.slice();
  }

  protected override paramShapes(inputShape: readonly number[]) {
    const C = inputShape[inputShape.length - 1];
    const names = [...(this.scale ? ['gamma'] : []), ...(this.center ? ['beta'] : []), 'moving_mean', 'moving_variance'];
    return names.map((name) => ({ name, shape: [C], fanIn: C, fanOut: C }));
  }

  protected override initialValue(name: string, shape: number[]): Tensor {
    const t = zeros(shape, this.dtype);
    if (name === 'gamma' || name === 'moving_variance') t.data.fill(1);
    return t;
  }

  /** The moving statistics are state: never trainable. */
  protected override paramTrainable(name: string): boolean {
    return name === 'gamma' || name === 'beta';
  }

  getConfig(): Record<string, unknown> {
    return { axis: this.axis, momentum: this.momentum, epsilon: this.epsilon, center: this.center, scale: this.scale, ...this.recorded };
  }

  /** Channels. */
  private get C(): number {
    return this.inputShape[this.inputShape.length - 1];
  }

  /** Whether a pass with these options normalizes by batch statistics (Keras 3: only a trainable layer in training). */
  private batchStatistics(opts: ForwardOptions): boolean {
    return (opts.training ?? false) && this.trainable;
  }

  /** The value of a named parameter as contiguous data, or null when absent. */
  private paramData(name: string): { data: Tensor['data']; offset: number } | null {
    const p = this.params.find((q) => q.name === name);
    if (!p) return null;
    const c = contiguous(p.value);
    return { data: c.data, offset: c.offset };
  }

  /** Index of a named parameter in `params`, or -1. */
  private indexOf(name: string): number {
    return this.params.findIndex((p) => p.name === name);
  }

  /**
   * Primal pass. Inference: by the moving statistics; saves `x` and `[mean, invStd, gamma]`.
   * Training: by the batch's mean and biased variance per channel; saves `xhat` and
   * `[invStd, gamma, newMovingMean, newMovingVariance]`. Never mutates the layer.
   */
  forward(x: Tensor, opts: ForwardOptions = {}): Forward<BatchNormalizationSaved> {
    this.checkInput(x);
    const xc = contiguous(x);
    const C = this.C;
    const N = xc.size / C;
    const xd = xc.data;
    const xo = xc.offset;
    const gamma = this.paramData('gamma');
    const beta = this.paramData('beta');
    const mm = this.paramData('moving_mean')!;
    const mv = this.paramData('moving_variance')!;
    const y = zeros(xc.shape, dtypeOf(x));
    const yd = y.data;
    const g = (c: number) => (gamma ? gamma.data[gamma.offset + c] : 1);
    const bt = (c: number) => (beta ? beta.data[beta.offset + c] : 0);
    if (!this.batchStatistics(opts)) {
      const stats = new Float64Array(3 * C);
      for (let c = 0; c < C; c++) {
        stats[c] = mm.data[mm.offset + c];
        stats[C + c] = 1 / Math.sqrt(mv.data[mv.offset + c] + this.epsilon);
        stats[2 * C + c] = g(c);
      }
      for (let n = 0; n < N; n++) {
        for (let c = 0; c < C; c++) {
          const i = n * C + c;
          yd[i] = stats[2 * C + c] * (xd[xo + i] - stats[c]) * stats[C + c] + bt(c);
        }
      }
      return { y, saved: { training: false, x: xc, stats } };
    }
    const mean = new Float64Array(C);
    const variance = new Float64Array(C);
    for (let n = 0; n < N; n++) for (let c = 0; c < C; c++) mean[c] += xd[xo + n * C + c];
    for (let c = 0; c < C; c++) mean[c] /= N;
    // Two passes: the variance as the mean of squared deviations, not E[x²] − mean², which cancels.
    for (let n = 0; n < N; n++) {
      for (let c = 0; c < C; c++) {
        const d = xd[xo + n * C + c] - mean[c];
        variance[c] += d * d;
      }
    }
    const stats = new Float64Array(4 * C);
    for (let c = 0; c < C; c++) {
      variance[c] /= N;
      stats[c] = 1 / Math.sqrt(variance[c] + this.epsilon);
      stats[C + c] = g(c);
      stats[2 * C + c] = mm.data[mm.offset + c] * this.momentum + mean[c] * (1 - this.momentum);
      stats[3 * C + c] = mv.data[mv.offset + c] * this.momentum + variance[c] * (1 - this.momentum);
    }
    const xhat = zeros(xc.shape, dtypeOf(x));
    const hd = xhat.data;
    for (let n = 0; n < N; n++) {
      for (let c = 0; c < C; c++) {
        const i = n * C + c;
        hd[i] = (xd[xo + i] - mean[c]) * stats[c];
        yd[i] = stats[C + c] * hd[i] + bt(c);
      }
    }
    return { y, saved: { training: true, x: xhat, stats } };
  }

  /**
   * Dual-number rule, per channel, for a block of `T` tangents. Inference:
   * `yDot = gamma·s·(xDot − dmean) − ½·gamma·xhat·s²·dvar + xhat·dgamma + dbeta` with `s = 1/sqrt(var + eps)`.
   * Training (the batch statistics move with the tangent; the moving ones do not enter):
   * `yDot = gamma·s·(xDot − mean(xDot) − xhat·mean(xhat·xDot)) + xhat·dgamma + dbeta`, means over the `N`
   * values of the channel in the batch.
   */
  jvp(saved: BatchNormalizationSaved, { xDot, paramDots, T }: Tangents): Tensor {
    const { x, stats, training } = saved;
    const C = this.C;
    const N = x.size / C;
    const xd = x.data;
    const xo = x.offset;
    const out = zeros([...x.shape, T], this.dtype);
    const od = out.data;
    const tangentOf = (name: string) => {
      const k = this.indexOf(name);
      const t = k < 0 || !paramDots ? null : paramDots[k];
      if (!t) return null;
      assertShape(t, [C, T], `${this.describe()} jvp ${name}Dot`);
      const tc = contiguous(t);
      return { data: tc.data, offset: tc.offset };
    };
    const dGamma = tangentOf('gamma');
    const dBeta = tangentOf('beta');
    const dMean = training ? null : tangentOf('moving_mean');
    const dVar = training ? null : tangentOf('moving_variance');
    const sOf = training ? 0 : C;
    const gOf = training ? C : 2 * C;
    const xhatAt = training ? (i: number) => xd[xo + i] : (i: number, c: number) => (xd[xo + i] - stats[c]) * stats[C + c];
    let dxd: Tensor['data'] | null = null;
    let dxo = 0;
    if (xDot) {
      assertShape(xDot, [...x.shape, T], `${this.describe()} jvp xDot`);
      const dc = contiguous(xDot);
      dxd = dc.data;
      dxo = dc.offset;
    }
    // Training: the per-channel means of xDot and xhat·xDot that the batch statistics contribute.
    let m1: Float64Array | null = null;
    let m2: Float64Array | null = null;
    if (training && dxd) {
      m1 = new Float64Array(C * T);
      m2 = new Float64Array(C * T);
      for (let n = 0; n < N; n++) {
        for (let c = 0; c < C; c++) {
          const i = n * C + c;
          const h = xd[xo + i];
          const src = dxo + i * T;
          for (let t = 0; t < T; t++) {
            m1[c * T + t] += dxd[src + t];
            m2[c * T + t] += h * dxd[src + t];
          }
        }
      }
      for (let j = 0; j < C * T; j++) {
        m1[j] /= N;
        m2[j] /= N;
      }
    }
    for (let n = 0; n < N; n++) {
      for (let c = 0; c < C; c++) {
        const i = n * C + c;
        const s = stats[sOf + c];
        const gs = stats[gOf + c] * s;
        const h = xhatAt(i, c);
        const dst = i * T;
        for (let t = 0; t < T; t++) {
          let v = 0;
          if (dxd) v += gs * (dxd[dxo + dst + t] - (m1 ? m1[c * T + t] + h * m2![c * T + t] : 0));
          if (dMean) v -= gs * dMean.data[dMean.offset + c * T + t];
          if (dVar) v -= 0.5 * gs * h * s * dVar.data[dVar.offset + c * T + t];
          if (dGamma) v += h * dGamma.data[dGamma.offset + c * T + t];
          if (dBeta) v += dBeta.data[dBeta.offset + c * T + t];
          od[dst + t] = v;
        }
      }
    }
    return out;
  }

  /**
   * VJP rule, per channel: `dbeta = Σ dy`, `dgamma = Σ dy·xhat`. Inference: `dx = gamma·s·dy`,
   * `dmoving_mean = −gamma·s·Σ dy`, `dmoving_variance = −½·gamma·s²·Σ dy·xhat`. Training:
   * `dx = gamma·s·(dy − mean(dy) − xhat·mean(dy·xhat))` (the same projection as the JVP: it is
   * self-adjoint), and zero for the moving statistics, which the output does not read.
   */
  vjp(saved: BatchNormalizationSaved, dy: Tensor): Cotangents {
    const { x, stats, training } = saved;
    this.checkCotangent(dy, x.shape[0]);
    const C = this.C;
    const N = x.size / C;
    const xd = x.data;
    const xo = x.offset;
    const gc = contiguous(dy);
    const gd = gc.data;
    const go = gc.offset;
    const sOf = training ? 0 : C;
    const gOf = training ? C : 2 * C;
    const sumG = new Float64Array(C);
    const sumGH = new Float64Array(C);
    const hat = (i: number, c: number) => (training ? xd[xo + i] : (xd[xo + i] - stats[c]) * stats[C + c]);
    for (let n = 0; n < N; n++) {
      for (let c = 0; c < C; c++) {
        const i = n * C + c;
        sumG[c] += gd[go + i];
        sumGH[c] += gd[go + i] * hat(i, c);
      }
    }
    const dx = zeros(x.shape, dtypeOf(dy));
    const dd = dx.data;
    for (let n = 0; n < N; n++) {
      for (let c = 0; c < C; c++) {
        const i = n * C + c;
        const gs = stats[gOf + c] * stats[sOf + c];
        dd[i] = training ? gs * (gd[go + i] - sumG[c] / N - hat(i, c) * (sumGH[c] / N)) : gs * gd[go + i];
      }
    }
    const dParams = this.params.map((p) => {
      const d = zeros([C], this.dtype);
      for (let c = 0; c < C; c++) {
        const s = stats[sOf + c];
        const gs = stats[gOf + c] * s;
        if (p.name === 'gamma') d.data[c] = sumGH[c];
        else if (p.name === 'beta') d.data[c] = sumG[c];
        else if (!training && p.name === 'moving_mean') d.data[c] = -gs * sumG[c];
        else if (!training && p.name === 'moving_variance') d.data[c] = -0.5 * gs * s * sumGH[c];
      }
      return d;
    });
    return { dx, dParams };
  }

  /**
   * Commits a training pass: replaces the moving statistics by the update its forward computed
   * (`moving·momentum + batch·(1 − momentum)`). Nothing for an inference pass.
   */
  applyUpdates(saved: BatchNormalizationSaved): void {
    if (!saved.training) return;
    const C = this.C;
    const mean = this.params[this.indexOf('moving_mean')];
    const variance = this.params[this.indexOf('moving_variance')];
    mean.value = tensor(Float64Array.from(saved.stats.subarray(2 * C, 3 * C)), [C], this.dtype);
    variance.value = tensor(Float64Array.from(saved.stats.subarray(3 * C, 4 * C)), [C], this.dtype);
  }

  /** Coupled across the batch when normalizing by batch statistics (training, trainable). */
  samplesIndependent(opts: ForwardOptions): boolean {
    return !this.batchStatistics(opts);
  }

  /**
   * Diagonal per sample: each output reads its own input element. That is the inference pattern;
   * in training the samples are coupled and every structured engine refuses the layer (see
   * `samplesIndependent`), so no per-sample pattern is read then.
   */
  inputStructure(): AxisStructure {
    return { inDims: this.inputShape.slice(), maps: this.inputShape.map(() => ({ kind: 'identity' })) };
  }

  /** Inference: `x` (the previous output) and 3·C statistics; training: `xhat` of its own and 4·C statistics. */
  residuals(opts: ForwardOptions): Residuals {
    const C = this.C;
    if (!this.batchStatistics(opts)) return { saves: ['x', { what: 'statistics', perSample: [3 * C], dtype: 'float64', shared: true }] };
    return { saves: [{ what: 'xhat', perSample: this.inputShape.slice(), dtype: this.dtype }, { what: 'statistics', perSample: [4 * C], dtype: 'float64', shared: true }] };
  }
}

function number(v: unknown, dflt: number, key: string, ok: (v: number) => boolean, expected: string): number {
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'number' || !Number.isFinite(v) || !ok(v)) throw new ConfigError(`BatchNormalization: expected ${key} to be a number ${expected}, received ${fmtValue(v)}`);
  return v;
}

function flag(v: unknown, key: string): boolean {
  if (v === undefined || v === null) return true;
  if (typeof v !== 'boolean') throw new ConfigError(`BatchNormalization: expected ${key} to be true or false, received ${fmtValue(v)}`);
  return v;
}

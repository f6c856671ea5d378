/**
 * GlobalAveragePooling2D: `y[b, c]` = the mean of `x[b, ·, ·, c]` over the whole image, on NHWC
 * images `[B, H, W, C]` → `[B, C]` (or `[B, 1, 1, C]` with `keepdims`).
 *
 * The mean is linear: its Jacobian is the constant `1 / (H·W)` on each channel's cells, its
 * dual-number rule averages the tangents as forward averages the primals, and its VJP spreads each
 * cotangent evenly over its channel (the transpose).
 * @module
 */
import { ConfigError, ShapeError, fmtShape, fmtValue } from '../errors.js';
import type { AxisStructure } from '../structure.js';
import { type Data, type Tensor, assertShape, contiguous, dtypeOf, zeros } from '../tensor.js';
import { BASE_KEYS, type Cotangents, type Forward, Layer, type Residuals, type Tangents, checkKeys } from './layer.js';

/** Keras config of {@link GlobalAveragePooling2D}. */
export interface GlobalAveragePooling2DConfig {
  /** Keep the pooled axes as extent 1 (`[B, 1, 1, C]`); default false (`[B, C]`). */
  keepdims?: boolean;
  /** Only `'channels_last'` (NHWC); null means the same. */
  data_format?: 'channels_last' | null;
}

/** What GlobalAveragePooling2D's forward pass saves: only the input's shape, since its Jacobian is constant. */
export interface GlobalAveragePooling2DSaved {
  /** The input's shape `[B, H, W, C]`. */
  xShape: number[];
}

/**
 * Mean over height and width per channel; constant Jacobian `1 / (H·W)` per channel.
 * @example
 * const gap = new GlobalAveragePooling2D().build([2, 2, 1]);
 * const { y } = gap.forward(tensor([1, 2, 3, 6], [1, 2, 2, 1])); // [[3]]
 */
export class GlobalAveragePooling2D extends Layer<GlobalAveragePooling2DSaved> {
  readonly className = 'GlobalAveragePooling2D';
  /** Whether the pooled axes stay, as extent 1. */
  readonly keepdims: boolean;

  constructor(config: GlobalAveragePooling2DConfig = {}, name?: string) {
    super(name, config);
    checkKeys(config, ['keepdims', ...BASE_KEYS], 'GlobalAveragePooling2D');
    this.keepdims = keepdimsOf(config.keepdims, 'GlobalAveragePooling2D');
  }

  computeOutputShape(inputShape: readonly number[]): number[] {
    return globalOutputShape(inputShape, this.keepdims, this.describe());
  }

  getConfig(): Record<string, unknown> {
    return { data_format: 'channels_last', keepdims: this.keepdims };
  }

  /** Primal pass: each channel's mean over the image. Saves the input's shape. */
  forward(x: Tensor): Forward<GlobalAveragePooling2DSaved> {
    this.checkInput(x);
    const xc = contiguous(x);
    const y = zeros([xc.shape[0], ...this.outputShape], dtypeOf(x));
    meanOverImage(xc.data, xc.shape, 1, y.data);
    return { y, saved: { xShape: xc.shape.slice() } };
  }

  /** Dual-number rule: the tangents averaged as the primals are (`dy[b, c, t]` = the mean of `dx[b, ·, ·, c, t]`). No parameters. */
  jvp({ xShape }: GlobalAveragePooling2DSaved, { xDot, T }: Tangents): Tensor {
    const yDot = zeros([xShape[0], ...this.outputShape, T], this.dtype);
    if (!xDot) return yDot;
    assertShape(xDot, [...xShape, T], `${this.describe()} jvp xDot`);
    meanOverImage(contiguous(xDot).data, xShape, T, yDot.data);
    return yDot;
  }

  /** VJP rule: `dx[b, h, w, c] = dy[b, c] / (H·W)`, the transpose of the mean. */
  vjp({ xShape }: GlobalAveragePooling2DSaved, dy: Tensor): Cotangents {
    this.checkCotangent(dy, xShape[0]);
    const g = contiguous(dy).data;
    const [B, H, W, C] = xShape;
    const dx = zeros(xShape, dtypeOf(dy));
    const d = dx.data;
    const n = H * W;
    for (let b = 0; b < B; b++) {
      for (let p = 0; p < n; p++) {
        const o = (b * n + p) * C;
        for (let c = 0; c < C; c++) d[o + c] = g[b * C + c] / n;
      }
    }
    return { dx, dParams: [] };
  }

  /** Each output reads every row and every column of its own channel. */
  inputStructure(): AxisStructure {
    return { inDims: this.inputShape.slice(), maps: [{ kind: 'full', rows: 1 }, { kind: 'full', rows: 1 }, { kind: 'identity' }] };
  }

  /** Forward saves no buffer: the Jacobian does not depend on the input. */
  residuals(): Residuals {
    return { saves: [] };
  }
}

/** Reads `keepdims` (absent: false). */
export function keepdimsOf(v: unknown, layer: string): boolean {
  if (v === undefined) return false;
  if (typeof v !== 'boolean') throw new ConfigError(`${layer}: expected keepdims to be true or false, received ${fmtValue(v)}`);
  return v;
}

/** `[C]` or `[1, 1, C]` from an NHWC sample `[H, W, C]`; any other rank is refused, quoting it. */
export function globalOutputShape(inputShape: readonly number[], keepdims: boolean, layer: string): number[] {
  if (inputShape.length !== 3) {
    throw new ShapeError(`${layer}: expected a per-sample input of rank 3 ([H, W, C], NHWC), received ${fmtShape(inputShape)} (rank ${inputShape.length})`);
  }
  return keepdims ? [1, 1, inputShape[2]] : [inputShape[2]];
}

/** Means over the image of `src` (`[B, H, W, C, T]`, `T = 1` for the primal) into `out` (`[B, C, T]`). */
function meanOverImage(src: Data, shape: readonly number[], T: number, out: Data): void {
  const [B, H, W, C] = shape;
  const n = H * W;
  const run = C * T;
  for (let b = 0; b < B; b++) {
    const dst = b * run;
    for (let p = 0; p < n; p++) {
      const s = (b * n + p) * run;
      for (let k = 0; k < run; k++) out[dst + k] += src[s + k];
    }
    for (let k = 0; k < run; k++) out[dst + k] /= n;
  }
}

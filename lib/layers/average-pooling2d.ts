/**
 * AveragePooling2D: `y[b, oh, ow, c]` = the mean of `x[b, ·, ·, c]` over a window, on NHWC images
 * `[B, H, W, C]`, with strides and TensorFlow's padding. Padding `'same'` leaves the padded cells
 * out of the count, as TensorFlow does: a window clipped to 2 of its 4 cells is the mean of those 2.
 *
 * Averaging is linear, so its Jacobian is the constant matrix of the window weights `1 / count`,
 * its dual-number rule averages the tangents as forward averages the primals, and its VJP spreads
 * each cotangent over its window with the same weights (the transpose).
 * @module
 */
import type { AxisStructure } from '../structure.js';
import { type Data, type Tensor, assertShape, contiguous, dtypeOf, zeros } from '../tensor.js';
import { BASE_KEYS, type Cotangents, type Forward, Layer, type Residuals, type Tangents, checkKeys } from './layer.js';
import { type Padding, PoolWindows, type WindowRanges } from './window.js';

/** Keras config of {@link AveragePooling2D}. */
export interface AveragePooling2DConfig {
  /** Window `[ph, pw]`, or one number for both; default 2. */
  pool_size?: number | [number, number];
  /** Steps; default (or null): the pool size. */
  strides?: number | [number, number] | null;
  /** `'valid'` (default) or `'same'` (padded cells left out of the count). */
  padding?: Padding;
}

/** What AveragePooling2D's forward pass saves: only the input's shape, since its Jacobian is constant. */
export interface AveragePooling2DSaved {
  /** The input's shape `[B, H, W, C]`. */
  xShape: number[];
}

/**
 * Average pooling over `pool_size` windows (default `[2, 2]`) taken every `strides` (default:
 * `pool_size`), per channel.
 * @example
 * const pool = new AveragePooling2D({ pool_size: 2, padding: 'same' }).build([3, 3, 1]);
 * const { y } = pool.forward(tensor([1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 3, 3, 1])); // [[3, 4.5], [7.5, 9]]
 */
export class AveragePooling2D extends Layer<AveragePooling2DSaved> {
  readonly className = 'AveragePooling2D';
  /** Window `[ph, pw]`. */
  readonly poolSize: [number, number];
  /** Steps `[sh, sw]`. */
  readonly strides: [number, number];
  /** `'valid'` or `'same'`. */
  readonly padding: Padding;
  /** The windows: geometry and structure, shared with the other 2-D pooling. */
  private readonly windows: PoolWindows;

  constructor(config: AveragePooling2DConfig = {}, name?: string) {
    super(name, config);
    checkKeys(config, ['pool_size', 'strides', 'padding', ...BASE_KEYS], 'AveragePooling2D');
    this.windows = new PoolWindows(config, 'AveragePooling2D');
    ({ poolSize: this.poolSize, strides: this.strides, padding: this.padding } = this.windows);
  }

  computeOutputShape(inputShape: readonly number[]): number[] {
    return this.windows.outputShape(inputShape, this.describe());
  }

  getConfig(): Record<string, unknown> {
    return this.windows.config();
  }

  /** Primal pass: each window's mean over its in-bounds cells. Saves the input's shape. */
  forward(x: Tensor): Forward<AveragePooling2DSaved> {
    this.checkInput(x);
    const xc = contiguous(x);
    const y = zeros([xc.shape[0], ...this.outputShape], dtypeOf(x));
    this.average(xc.data, xc.offset, xc.shape, 1, y.data);
    return { y, saved: { xShape: xc.shape.slice() } };
  }

  /** Dual-number rule: the tangents averaged as the primals are (`dy[o, t]` = the window mean of `dx[·, t]`). No parameters. */
  jvp({ xShape }: AveragePooling2DSaved, { xDot, T }: Tangents): Tensor {
    const yDot = zeros([xShape[0], ...this.outputShape, T], this.dtype);
    if (!xDot) return yDot;
    assertShape(xDot, [...xShape, T], `${this.describe()} jvp xDot`);
    const dxc = contiguous(xDot);
    this.average(dxc.data, dxc.offset, xShape, T, yDot.data);
    return yDot;
  }

  /** VJP rule: each output's cotangent spread over its window's in-bounds cells, `dy / count` each (the transpose of the average). */
  vjp({ xShape }: AveragePooling2DSaved, dy: Tensor): Cotangents {
    this.checkCotangent(dy, xShape[0]);
    const g = contiguous(dy);
    const dx = zeros(xShape, dtypeOf(dy));
    const [B, H, W, C] = xShape;
    const { rows, cols } = this.geometry(H, W);
    const d = dx.data;
    forEachWindow(B, rows, cols, C, (b, oh, ow, yo, count) => {
      for (let i = rows.lo[oh]; i < rows.hi[oh]; i++) {
        for (let j = cols.lo[ow]; j < cols.hi[ow]; j++) {
          const xo = ((b * H + rows.start[oh] + i) * W + cols.start[ow] + j) * C;
          for (let c = 0; c < C; c++) d[xo + c] += g.data[g.offset + yo + c] / count;
        }
      }
    });
    return { dx, dParams: [] };
  }

  /** Each output reads a window of rows and of columns, in its own channel. */
  inputStructure(): AxisStructure {
    return this.windows.structure(this.inputShape, this.describe());
  }

  /** Forward saves no buffer: the Jacobian does not depend on the input. */
  residuals(): Residuals {
    return { saves: [] };
  }

  /** Window means of `src` (`[B, H, W, C, T]` from `off`, `T = 1` for the primal) into `out` (`[B, Ho, Wo, C, T]`). */
  private average(src: Data, off: number, shape: readonly number[], T: number, out: Data): void {
    const [B, H, W, C] = shape;
    const { rows, cols } = this.geometry(H, W);
    const run = C * T;
    forEachWindow(B, rows, cols, C, (b, oh, ow, yo, count) => {
      const dst = yo * T;
      for (let i = rows.lo[oh]; i < rows.hi[oh]; i++) {
        for (let j = cols.lo[ow]; j < cols.hi[ow]; j++) {
          const s = off + ((b * H + rows.start[oh] + i) * W + cols.start[ow] + j) * run;
          for (let k = 0; k < run; k++) out[dst + k] += src[s + k];
        }
      }
      for (let k = 0; k < run; k++) out[dst + k] /= count;
    });
  }

  /** Window ranges; a 'valid' pool larger than the input is refused, quoting both. */
  private geometry(H: number, W: number): { rows: WindowRanges; cols: WindowRanges } {
    return this.windows.ranges(H, W, this.describe());
  }
}

/** Calls `f` for every window of the batch with its flat output offset (`[B, Ho, Wo, C]`) and its count of in-bounds cells. */
function forEachWindow(B: number, rows: WindowRanges, cols: WindowRanges, C: number, f: (b: number, oh: number, ow: number, yo: number, count: number) => void): void {
  for (let b = 0; b < B; b++) {
    for (let oh = 0; oh < rows.out; oh++) {
      for (let ow = 0; ow < cols.out; ow++) {
        const count = (rows.hi[oh] - rows.lo[oh]) * (cols.hi[ow] - cols.lo[ow]);
        f(b, oh, ow, ((b * rows.out + oh) * cols.out + ow) * C, count);
      }
    }
  }
}

/**
 * MaxPooling2D: `y[b, oh, ow, c] = max` of `x[b, ·, ·, c]` over a window, on NHWC images
 * `[B, H, W, C]`, with strides and TensorFlow's padding (padded positions are `-∞`, never chosen).
 * @module
 */
import { ConfigError, fmtValue } from '../errors.js';
import { type Data, type DType, type Tensor, assertShape, contiguous, dtypeOf, zeros } from '../tensor.js';
import { staging } from '../kernels/elementwise.js';
import { simdModule } from '../kernels/gemm.js';
import type { AxisStructure } from '../structure.js';
import { BASE_KEYS, type Cotangents, type Forward, Layer, type LayerPass, type LocalJacobian, type Residuals, type Tangents, type Wrt, checkKeys } from './layer.js';
import { deliverTangent, rowBlock } from './out.js';
import { selectCotangents, selectTangents, selectionLocal } from './select.js';
import { type Padding, PoolWindows, type WindowRanges, maxWindow, windowRun } from './window.js';

/** Keras config of {@link MaxPooling2D}. */
export interface MaxPooling2DConfig {
  /** Window `[ph, pw]`, or one number for both; default 2. */
  pool_size?: number | [number, number];
  /** Steps; default (or null): the pool size. */
  strides?: number | [number, number] | null;
  /** `'valid'` (default) or `'same'` (padded with −∞). */
  padding?: Padding;
}

/**
 * What MaxPooling2D's forward pass saves: the winner of every window. Max is piecewise linear, so
 * its derivative is a selection and the winners are all both rules need.
 */
export interface MaxPooling2DSaved {
  /** For each output element (row-major over `[B, Ho, Wo, C]`), the flat row-major index of its winner in the input `[B, H, W, C]`. */
  argmax: Int32Array;
  /** The input's shape `[B, H, W, C]`. */
  xShape: number[];
  /** The input's dtype, which the tangents and cotangents take. */
  dtype: DType;
}

/**
 * Max pooling over `pool_size` windows (default `[2, 2]`) taken every `strides` (default:
 * `pool_size`), per channel. Ties go to the first maximum in row-major window order (top row
 * first, left to right), so the derivative routes to exactly one input per output. A NaN in a
 * window makes its output NaN, wherever it sits (the first NaN is the winner), as GlobalMaxPooling2D
 * and tfjs' `max` do; tfjs' `maxPool` instead skips NaNs and returns the largest number.
 * @example
 * const pool = new MaxPooling2D({ pool_size: 2 }).build([8, 8, 6]);
 * const x = randomNormal([2, 8, 8, 6], new Rng(0));
 * const { y, saved } = pool.forward(x); // y: [2, 4, 4, 6]
 * const J = jacobianWrtInput(pool, x); // [2, 4, 4, 6, 8, 8, 6], one 1 per row
 * const { dx } = pool.vjp(saved, y); // dx: [2, 8, 8, 6], nonzero only at the winners
 */
export class MaxPooling2D extends Layer<MaxPooling2DSaved> {
  readonly className = 'MaxPooling2D';
  /** `vjp` returns `dx` in a new buffer of its own. */
  override readonly freshCotangent = true;
  /** Window `[ph, pw]`. */
  readonly poolSize: [number, number];
  /** Steps `[sh, sw]`. */
  readonly strides: [number, number];
  /** `'valid'` or `'same'`. */
  readonly padding: Padding;
  /** The windows: geometry and structure, shared with the other 2-D pooling. */
  private readonly windows: PoolWindows;

  constructor(config: MaxPooling2DConfig = {}, name?: string) {
    super(name, config);
    if (config === null || typeof config !== 'object') {
      throw new ConfigError(`MaxPooling2D: expected a config object, received ${fmtValue(config)}`);
    }
    checkKeys(config as unknown as Record<string, unknown>, ['pool_size', 'strides', 'padding', ...BASE_KEYS], 'MaxPooling2D');
    this.windows = new PoolWindows(config, 'MaxPooling2D');
    ({ poolSize: this.poolSize, strides: this.strides, padding: this.padding } = this.windows);
  }

  computeOutputShape(inputShape: readonly number[]): number[] {
    return this.windows.outputShape(inputShape, this.describe());
  }

  getConfig(): Record<string, unknown> {
    return this.windows.config();
  }

  /** Primal pass. Saves the winner of every window (`argmax`) and the input shape. */
  forward(x: Tensor): Forward<MaxPooling2DSaved> {
    this.checkInput(x);
    const xc = contiguous(x);
    const [B, H, W, C] = xc.shape;
    const { rows, cols } = this.geometry(H, W);
    const y = zeros([B, rows.out, cols.out, C], dtypeOf(x));
    const yd = y.data;
    const xd = xc.data;
    const argmax = new Int32Array(y.size);
    if (poolSimd(xd, yd, argmax, [B, H, W, C], rows, cols)) return { y, saved: { argmax, xShape: xc.shape.slice(), dtype: dtypeOf(x) } };
    for (let b = 0; b < B; b++) {
      for (let oh = 0; oh < rows.out; oh++) {
        const ih0 = rows.start[oh];
        const i0 = rows.lo[oh];
        for (let ow = 0; ow < cols.out; ow++) {
          const iw0 = cols.start[ow];
          const j0 = cols.lo[ow];
          const j1 = cols.hi[ow];
          const yo = ((b * rows.out + oh) * cols.out + ow) * C;
          // The window's first in-bounds element opens the contest: padding is -∞ and never wins, and strict `>` below keeps the first of equal maxima.
          const first = ((b * H + ih0 + i0) * W + iw0 + j0) * C;
          for (let c = 0; c < C; c++) {
            yd[yo + c] = xd[first + c];
            argmax[yo + c] = first + c;
          }
          for (let i = i0; i < rows.hi[oh]; i++) {
            const xRow = ((b * H + ih0 + i) * W + iw0) * C;
            for (let j = i === i0 ? j0 + 1 : j0; j < j1; j++) {
              const xo = xRow + j * C;
              for (let c = 0; c < C; c++) {
                const v = xd[xo + c];
                const cur = yd[yo + c];
                // A NaN wins over any number and keeps its place, wherever it sits in the window: the output says NaN, never a silent max of the rest.
                if (v > cur || (v !== v && cur === cur)) {
                  yd[yo + c] = v;
                  argmax[yo + c] = xo + c;
                }
              }
            }
          }
        }
      }
    }
    return { y, saved: { argmax, xShape: xc.shape.slice(), dtype: dtypeOf(x) } };
  }

  /** Dual-number rule: each output's `T` tangents are its winner's (`dy[o, t] = dx[argmax[o], t]`). No parameters. */
  jvp(saved: MaxPooling2DSaved, { xDot, T, rows }: Tangents, out?: Tensor): Tensor {
    const { argmax, xShape } = saved;
    const yDot = out && rowBlock(out) ? out : zeros([xShape[0], ...this.outputShape, T], saved.dtype);
    if (!xDot) return deliverTangent(out, yDot);
    assertShape(xDot, [...xShape, T], `${this.describe()} jvp xDot`);
    const nIn = xShape[1] * xShape[2] * xShape[3];
    selectTangents(argmax, xDot, T, yDot, rows ? { nIn, lo: rows.lo, hi: rows.hi } : undefined);
    return deliverTangent(out, yDot);
  }

  /** VJP rule: each output's cotangent is added to its winner (`dx[argmax[o]] += dy[o]`); overlapping windows may share a winner. */
  vjp(saved: MaxPooling2DSaved, dy: Tensor): Cotangents {
    const { argmax, xShape } = saved;
    this.checkCotangent(dy, xShape[0]);
    const dx = zeros(xShape, saved.dtype);
    selectCotangents(argmax, dy, dx);
    return { dx, dParams: [] };
  }

  // Structure hooks: what the sparse engines and the memory estimate know of max pooling.

  /** Each output reads a window of rows and of columns, in its own channel. */
  inputStructure(): AxisStructure {
    return this.windows.structure(this.inputShape, this.describe());
  }

  /** Forward saves one int32 winner per output (see {@link MaxPooling2DSaved}). */
  residuals(): Residuals {
    return { saves: [{ what: 'argmax', perSample: this.outputShape.slice(), dtype: 'int32' }] };
  }

  /** The largest in-bounds window, `wh · ww`: channels never share a row. */
  colourCount(_wrt: Wrt): number {
    const [H, W] = this.inputShape;
    return maxWindow(H, this.poolSize[0], this.strides[0], this.padding) * maxWindow(W, this.poolSize[1], this.strides[1], this.padding);
  }

  /** At a recorded pass each row holds its winner only. */
  localRowNnz(): number {
    return 1;
  }

  /** The selection at a recorded pass: row `o` is a 1 at its winner (`argmax`). */
  localJacobian(pass: LayerPass): LocalJacobian[] {
    const { argmax, xShape } = pass.saved as MaxPooling2DSaved;
    return [selectionLocal(argmax, xShape[1] * xShape[2] * xShape[3], argmax.length / xShape[0])];
  }


  /** Window ranges; a 'valid' pool larger than the input is refused, quoting both. */
  private geometry(H: number, W: number): { rows: WindowRanges; cols: WindowRanges } {
    return this.windows.ranges(H, W, this.describe());
  }
}

/**
 * {@link MaxPooling2D.forward}'s contest by the SIMD kernel (`pool64` / `pool32` of `gemm.wat`),
 * image by image staged through the module's memory: the same rule (row-major window order,
 * strict `>`, a NaN wins and keeps its place), so the same winners and values, without the JS
 * loop's branch per value that the data decides. False (nothing done) where it cannot run: no
 * SIMD, or channels that are not whole vectors.
 */
function poolSimd(xd: Data, yd: Data, argmax: Int32Array, [B, H, W, C]: number[], rows: WindowRanges, cols: WindowRanges): boolean {
  const mod = simdModule();
  const f64 = xd instanceof Float64Array;
  if (!mod || C % (f64 ? 2 : 4) !== 0) return false;
  const esz = f64 ? 8 : 4;
  const nIn = H * W * C;
  const nOut = rows.out * cols.out * C;
  const py = (nIn * esz + 15) & ~15;
  const pa = py + nOut * esz;
  const buf = staging(mod.memory, pa + nOut * 4);
  const View = f64 ? Float64Array : Float32Array;
  const xs = new View(buf, 0, nIn);
  const ys = new View(buf, py, nOut);
  const as = new Int32Array(buf, pa, nOut);
  const pool = f64 ? mod.pool64 : mod.pool32;
  for (let b = 0; b < B; b++) {
    xs.set(xd.subarray(b * nIn, (b + 1) * nIn));
    for (let oh = 0; oh < rows.out; oh++) {
      const i0 = rows.lo[oh];
      const ih = rows.start[oh] + i0;
      // A run of windows (see windowRun) goes to the kernel in one call.
      for (let ow = 0; ow < cols.out; ) {
        const j0 = cols.lo[ow];
        const { q, step } = windowRun(cols, ow, cols.out);
        const yo = (oh * cols.out + ow) * C;
        pool((ih * W + cols.start[ow] + j0) * C, W * C, rows.hi[oh] - i0, cols.hi[ow] - j0, C, py + yo * esz, pa + yo * 4, b * nIn, q, step * C);
        ow += q;
      }
    }
    yd.set(ys, b * nOut);
    argmax.set(as, b * nOut);
  }
  return true;
}

/**
 * Cropping2D: NHWC images `[B, H, W, C]` with `top`/`bottom` rows and `left`/`right` columns cut
 * off, → `[B, H − top − bottom, W − left − right, C]`.
 *
 * A crop is a constant selection: its dual-number rule crops the tangents as forward crops the
 * primals, and its VJP puts the cotangent back in place with zeros on the cut cells (the transpose).
 * @module
 */
import { ShapeError, fmtShape, fmtValue } from '../errors.js';
import type { AxisStructure } from '../structure.js';
import { type Data, type Tensor, assertShape, contiguous, dtypeOf, zeros } from '../tensor.js';
import { BASE_KEYS, type Cotangents, type Forward, Layer, type LocalJacobian, type Residuals, type Tangents, checkKeys } from './layer.js';
import { type Margins, margins, rank3, shiftLocal, shiftPattern } from './zero-padding2d.js';

/** Keras config of {@link Cropping2D}. */
export interface Cropping2DConfig {
  /** Rows and columns cut per side; default 0. */
  cropping?: Margins;
  /** Only `'channels_last'` (NHWC); null means the same. */
  data_format?: 'channels_last' | null;
}

/** What Cropping2D's forward pass saves: only the input's shape, since its Jacobian is constant. */
export interface Cropping2DSaved {
  /** The input's shape `[B, H, W, C]`. */
  xShape: number[];
}

/**
 * Cropping of the two spatial axes; constant selection Jacobian, one 1 per row.
 * @example
 * const crop = new Cropping2D({ cropping: [[1, 0], [0, 1]] }).build([2, 2, 1]);
 * const { y } = crop.forward(tensor([1, 2, 3, 4], [1, 2, 2, 1])); // [[[[3]]]]
 */
export class Cropping2D extends Layer<Cropping2DSaved> {
  readonly className = 'Cropping2D';
  /** `[[top, bottom], [left, right]]`. */
  readonly cropping: [[number, number], [number, number]];

  constructor(config: Cropping2DConfig = {}, name?: string) {
    super(name, config);
    checkKeys(config, ['cropping', ...BASE_KEYS], 'Cropping2D');
    this.cropping = margins(config.cropping ?? 0, 'cropping', 'Cropping2D');
  }

  /** The cropped extent; a crop that leaves no row or no column is refused, quoting both. */
  computeOutputShape(inputShape: readonly number[]): number[] {
    rank3(inputShape, this.describe());
    const [[t, b], [l, r]] = this.cropping;
    const [H, W, C] = inputShape;
    if (t + b >= H || l + r >= W) {
      throw new ShapeError(`${this.describe()}: expected cropping [[top, bottom], [left, right]] to leave at least one row and one column of the input's spatial extent ${fmtShape([H, W])}, received cropping ${fmtValue(this.cropping)} (${t + b} rows and ${l + r} columns cut)`);
    }
    return [H - t - b, W - l - r, C];
  }

  getConfig(): Record<string, unknown> {
    return { cropping: this.cropping.map((p) => p.slice()), data_format: 'channels_last' };
  }

  /** Primal pass: the kept cells copied out. Saves the input's shape. */
  forward(x: Tensor): Forward<Cropping2DSaved> {
    this.checkInput(x);
    const xc = contiguous(x);
    const y = zeros([xc.shape[0], ...this.outputShape], dtypeOf(x));
    this.place(xc.data, y.data, xc.shape, 1, 'crop');
    return { y, saved: { xShape: xc.shape.slice() } };
  }

  /** Dual-number rule: the tangents cropped as the primals are. No parameters. */
  jvp({ xShape }: Cropping2DSaved, { xDot, T }: Tangents): Tensor {
    const yDot = zeros([xShape[0], ...this.outputShape, T], this.dtype);
    if (!xDot) return yDot;
    assertShape(xDot, [...xShape, T], `${this.describe()} jvp xDot`);
    this.place(contiguous(xDot).data, yDot.data, xShape, T, 'crop');
    return yDot;
  }

  /** VJP rule: the cotangent put back at the kept cells, zero on the cut ones. */
  vjp({ xShape }: Cropping2DSaved, dy: Tensor): Cotangents {
    this.checkCotangent(dy, xShape[0]);
    const dx = zeros(xShape, dtypeOf(dy));
    this.place(contiguous(dy).data, dx.data, xShape, 1, 'uncrop');
    return { dx, dParams: [] };
  }

  /** Output row `i` reads input row `i + top`; likewise the columns. */
  inputStructure(): AxisStructure {
    const [H, W] = this.inputShape;
    const [Ho, Wo] = this.outputShape;
    const [[t], [l]] = this.cropping;
    return { inDims: this.inputShape.slice(), maps: [{ kind: 'matrix', pattern: shiftPattern(Ho, H, t) }, { kind: 'matrix', pattern: shiftPattern(Wo, W, l) }, { kind: 'identity' }] };
  }

  /** Forward saves no buffer: the Jacobian does not depend on the input. */
  residuals(): Residuals {
    return { saves: [] };
  }

  /** The constant selection, one 1 per row. */
  localJacobian(): LocalJacobian[] {
    const [[t], [l]] = this.cropping;
    return [shiftLocal(this.outputShape, this.inputShape, t, l)];
  }

  /** Copies the kept cells of `[B, H, W, C, T]` out (`'crop'`), or back in place (`'uncrop'`). */
  private place(src: Data, dst: Data, xShape: readonly number[], T: number, dir: 'crop' | 'uncrop'): void {
    const [B, H, W, C] = xShape;
    const [Ho, Wo] = this.outputShape;
    const [[t], [l]] = this.cropping;
    const run = Wo * C * T;
    for (let b = 0; b < B; b++) {
      for (let i = 0; i < Ho; i++) {
        const inner = (b * Ho + i) * run;
        const outer = ((b * H + i + t) * W + l) * C * T;
        if (dir === 'crop') dst.set(src.subarray(outer, outer + run), inner);
        else dst.set(src.subarray(inner, inner + run), outer);
      }
    }
  }
}

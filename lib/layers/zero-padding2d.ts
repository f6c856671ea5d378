/**
 * ZeroPadding2D: NHWC images `[B, H, W, C]` framed with zeros, `top`/`bottom` rows and
 * `left`/`right` columns, → `[B, top + H + bottom, left + W + right, C]`.
 *
 * The output copies each input cell to a shifted place and adds constants, so its Jacobian is a
 * constant selection (rows of the frame are empty), its dual-number rule pads the tangents as
 * forward pads the primals (with zeros: the frame does not move), and its VJP crops the cotangent.
 * @module
 */
import { ConfigError, ShapeError, fmtShape, fmtValue } from '../errors.js';
import { SparsityPattern, type AxisStructure } from '../structure.js';
import { type Data, type Tensor, assertShape, contiguous, dtypeOf, zeros } from '../tensor.js';
import { BASE_KEYS, type Cotangents, type Forward, Layer, type LocalJacobian, type Residuals, type Tangents, checkKeys } from './layer.js';

/** Amounts per side, as Keras accepts them: one for all four, `[h, w]` (symmetric), or `[[top, bottom], [left, right]]`. */
export type Margins = number | [number, number] | [[number, number], [number, number]];

/** Keras config of {@link ZeroPadding2D}. */
export interface ZeroPadding2DConfig {
  /** Rows and columns of zeros per side; default 1. */
  padding?: Margins;
  /** Only `'channels_last'` (NHWC); null means the same. */
  data_format?: 'channels_last' | null;
}

/** What ZeroPadding2D's forward pass saves: only the input's shape, since its Jacobian is constant. */
export interface ZeroPadding2DSaved {
  /** The input's shape `[B, H, W, C]`. */
  xShape: number[];
}

/**
 * Zero padding of the two spatial axes; constant selection Jacobian.
 * @example
 * const pad = new ZeroPadding2D({ padding: [[1, 0], [0, 1]] }).build([1, 2, 1]);
 * const { y } = pad.forward(tensor([5, 6], [1, 1, 2, 1])); // [[[[0], [0], [0]], [[5], [6], [0]]]]
 */
export class ZeroPadding2D extends Layer<ZeroPadding2DSaved> {
  readonly className = 'ZeroPadding2D';
  /** `[[top, bottom], [left, right]]`. */
  readonly padding: [[number, number], [number, number]];

  constructor(config: ZeroPadding2DConfig = {}, name?: string) {
    super(name, config);
    checkKeys(config, ['padding', ...BASE_KEYS], 'ZeroPadding2D');
    this.padding = margins(config.padding ?? 1, 'padding', 'ZeroPadding2D');
  }

  computeOutputShape(inputShape: readonly number[]): number[] {
    rank3(inputShape, this.describe());
    const [[t, b], [l, r]] = this.padding;
    return [t + inputShape[0] + b, l + inputShape[1] + r, inputShape[2]];
  }

  getConfig(): Record<string, unknown> {
    return { padding: this.padding.map((p) => p.slice()), data_format: 'channels_last' };
  }

  /** Primal pass: the input copied inside a frame of zeros. Saves the input's shape. */
  forward(x: Tensor): Forward<ZeroPadding2DSaved> {
    this.checkInput(x);
    const xc = contiguous(x);
    const y = zeros([xc.shape[0], ...this.outputShape], dtypeOf(x));
    this.place(xc.data, y.data, xc.shape, 1, 'pad');
    return { y, saved: { xShape: xc.shape.slice() } };
  }

  /** Dual-number rule: the tangents padded as the primals are, with zeros (the frame is constant). No parameters. */
  jvp({ xShape }: ZeroPadding2DSaved, { xDot, T }: Tangents): Tensor {
    const yDot = zeros([xShape[0], ...this.outputShape, T], this.dtype);
    if (!xDot) return yDot;
    assertShape(xDot, [...xShape, T], `${this.describe()} jvp xDot`);
    this.place(contiguous(xDot).data, yDot.data, xShape, T, 'pad');
    return yDot;
  }

  /** VJP rule: the cotangent cropped back to the input's cells (the frame's cotangent has nowhere to go). */
  vjp({ xShape }: ZeroPadding2DSaved, dy: Tensor): Cotangents {
    this.checkCotangent(dy, xShape[0]);
    const dx = zeros(xShape, dtypeOf(dy));
    this.place(contiguous(dy).data, dx.data, xShape, 1, 'crop');
    return { dx, dParams: [] };
  }

  /** Output row `i` reads input row `i − top` when there is one; likewise the columns. */
  inputStructure(): AxisStructure {
    const [H, W] = this.inputShape;
    const [[t, b], [l, r]] = this.padding;
    return { inDims: this.inputShape.slice(), maps: [{ kind: 'matrix', pattern: shiftPattern(t + H + b, H, -t) }, { kind: 'matrix', pattern: shiftPattern(l + W + r, W, -l) }, { kind: 'identity' }] };
  }

  /** Forward saves no buffer: the Jacobian does not depend on the input. */
  residuals(): Residuals {
    return { saves: [] };
  }

  /** The constant selection: one 1 per inner row, none in the frame. */
  localJacobian(): LocalJacobian[] {
    const [H, W, C] = this.inputShape;
    const [[t], [l]] = this.padding;
    return [shiftLocal(this.outputShape, [H, W, C], -t, -l)];
  }

  /** Copies each input cell (`[B, H, W, C, T]`) to its padded place (`'pad'`), or back (`'crop'`). */
  private place(src: Data, dst: Data, xShape: readonly number[], T: number, dir: 'pad' | 'crop'): void {
    const [B, H, W, C] = xShape;
    const [Ho, Wo] = this.outputShape;
    const [[t], [l]] = this.padding;
    const run = W * C * T;
    for (let b = 0; b < B; b++) {
      for (let i = 0; i < H; i++) {
        const inner = (b * H + i) * run;
        const outer = ((b * Ho + i + t) * Wo + l) * C * T;
        if (dir === 'pad') dst.set(src.subarray(inner, inner + run), outer);
        else dst.set(src.subarray(outer, outer + run), inner);
      }
    }
  }
}

/**
 * Reads padding or cropping as Keras accepts it: `n`, `[h, w]` (symmetric) or
 * `[[top, bottom], [left, right]]`, each a non-negative integer; anything else is refused, quoting it.
 */
export function margins(v: unknown, what: string, layer: string): [[number, number], [number, number]] {
  const ok = (d: unknown): d is number => Number.isSafeInteger(d) && (d as number) >= 0;
  const bad = (): never => {
    throw new ConfigError(`${layer}: expected ${what} to be a non-negative integer, a pair [h, w] of them or [[top, bottom], [left, right]], received ${fmtValue(v)}`);
  };
  if (ok(v)) return [[v, v], [v, v]];
  if (!Array.isArray(v) || v.length !== 2) return bad();
  if (ok(v[0]) && ok(v[1])) return [[v[0], v[0]], [v[1], v[1]]];
  if (v.every((p) => Array.isArray(p) && p.length === 2 && ok(p[0]) && ok(p[1]))) return [[v[0][0], v[0][1]], [v[1][0], v[1][1]]];
  return bad();
}

/** Refuses a per-sample input that is not NHWC `[H, W, C]`, quoting it. */
export function rank3(inputShape: readonly number[], layer: string): void {
  if (inputShape.length !== 3) {
    throw new ShapeError(`${layer}: expected a per-sample input of rank 3 ([H, W, C], NHWC), received ${fmtShape(inputShape)} (rank ${inputShape.length})`);
  }
}

/** The `rows × cols` pattern with output `o` reading input `o + shift` where that is in range. */
export function shiftPattern(rows: number, cols: number, shift: number): SparsityPattern {
  return SparsityPattern.fromRowArrays(Array.from({ length: rows }, (_, o) => (o + shift >= 0 && o + shift < cols ? [o + shift] : [])), cols);
}

/** The selection `y[h, w, c] = x[h + dh, w + dw, c]` (empty rows where that falls outside `x`), from output `[Ho, Wo, C]` to input `[H, W, C]`. */
export function shiftLocal(outShape: readonly number[], inShape: readonly number[], dh: number, dw: number): LocalJacobian {
  const [Ho, Wo, C] = outShape;
  const [H, W] = inShape;
  return {
    rows: Ho * Wo * C,
    cols: H * W * C,
    single: true,
    maxRowNnz: 1,
    row(_b, o, idx, coef) {
      const c = o % C;
      const w = ((o - c) / C) % Wo + dw;
      const h = Math.floor(o / (C * Wo)) + dh;
      if (h < 0 || h >= H || w < 0 || w >= W) return 0;
      idx[0] = (h * W + w) * C + c;
      coef[0] = 1;
      return 1;
    },
  };
}

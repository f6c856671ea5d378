/**
 * GlobalMaxPooling2D: `y[b, c]` = the max of `x[b, ·, ·, c]` over the whole image, on NHWC images
 * `[B, H, W, C]` → `[B, C]` (or `[B, 1, 1, C]` with `keepdims`).
 *
 * Max is piecewise linear, so its derivative is a selection: each output's tangent is its
 * winner's. Ties go to the first maximum in row-major order (top row first, left to right), so
 * exactly one input per output receives the cotangent (TensorFlow splits it among equal maxima,
 * tfjs gives each of them all of it). A NaN in a channel makes its output NaN, as TensorFlow's and
 * tfjs' `max`; the first NaN is then the winner (tfjs' gradient there is 0: NaN equals nothing).
 * @module
 */
import { type DType, type Tensor, assertShape, contiguous, dtypeOf, zeros } from '../tensor.js';
import type { AxisStructure } from '../structure.js';
import { BASE_KEYS, type Cotangents, type Forward, Layer, type LayerPass, type LocalJacobian, type Residuals, type Tangents, checkKeys } from './layer.js';
import { selectCotangents, selectTangents, selectionLocal } from './select.js';
import { globalOutputShape, keepdimsOf } from './global-average-pooling2d.js';

/** Keras config of {@link GlobalMaxPooling2D}. */
export interface GlobalMaxPooling2DConfig {
  /** Keep the pooled axes as extent 1 (`[B, 1, 1, C]`); default false (`[B, C]`). */
  keepdims?: boolean;
  /** Only `'channels_last'` (NHWC); null means the same. */
  data_format?: 'channels_last' | null;
}

/** What GlobalMaxPooling2D's forward pass saves: the winner of every channel, all both rules need. */
export interface GlobalMaxPooling2DSaved {
  /** For each output `[b, c]` (row-major over `[B, C]`), the flat row-major index of its winner in the input `[B, H, W, C]`. */
  argmax: Int32Array;
  /** The input's shape `[B, H, W, C]`. */
  xShape: number[];
  /** The input's dtype, which the tangents and cotangents take. */
  dtype: DType;
}

/**
 * Max over height and width per channel; its Jacobian holds one 1 per row, at the winner.
 * @example
 * const gmp = new GlobalMaxPooling2D({ keepdims: true }).build([2, 2, 1]);
 * const { y } = gmp.forward(tensor([1, 7, 7, 3], [1, 2, 2, 1])); // [[[[7]]]], winner: the first 7
 */
export class GlobalMaxPooling2D extends Layer<GlobalMaxPooling2DSaved> {
  readonly className = 'GlobalMaxPooling2D';
  /** Whether the pooled axes stay, as extent 1. */
  readonly keepdims: boolean;

  constructor(config: GlobalMaxPooling2DConfig = {}, name?: string) {
    super(name, config);
    checkKeys(config, ['keepdims', ...BASE_KEYS], 'GlobalMaxPooling2D');
    this.keepdims = keepdimsOf(config.keepdims, 'GlobalMaxPooling2D');
  }

  computeOutputShape(inputShape: readonly number[]): number[] {
    return globalOutputShape(inputShape, this.keepdims, this.describe());
  }

  getConfig(): Record<string, unknown> {
    return { data_format: 'channels_last', keepdims: this.keepdims };
  }

  /** Primal pass. Saves the winner of every channel (`argmax`) and the input shape. */
  forward(x: Tensor): Forward<GlobalMaxPooling2DSaved> {
    this.checkInput(x);
    const xc = contiguous(x);
    const [B, H, W, C] = xc.shape;
    const n = H * W;
    const y = zeros([B, ...this.outputShape], dtypeOf(x));
    const yd = y.data;
    const xd = xc.data;
    const argmax = new Int32Array(B * C);
    for (let b = 0; b < B; b++) {
      for (let c = 0; c < C; c++) {
        const o = b * C + c;
        let at = b * n * C + c;
        let m = xd[at];
        // Strict `>` keeps the first of equal maxima; once a NaN wins, nothing beats it (NaN propagates).
        for (let p = 1; p < n && !Number.isNaN(m); p++) {
          const i = (b * n + p) * C + c;
          const v = xd[i];
          if (v > m || Number.isNaN(v)) {
            m = v;
            at = i;
          }
        }
        yd[o] = m;
        argmax[o] = at;
      }
    }
    return { y, saved: { argmax, xShape: xc.shape.slice(), dtype: dtypeOf(x) } };
  }

  /** Dual-number rule: each output's `T` tangents are its winner's (`dy[o, t] = dx[argmax[o], t]`). No parameters. */
  jvp(saved: GlobalMaxPooling2DSaved, { xDot, T }: Tangents): Tensor {
    const { argmax, xShape } = saved;
    const yDot = zeros([xShape[0], ...this.outputShape, T], saved.dtype);
    if (!xDot) return yDot;
    assertShape(xDot, [...xShape, T], `${this.describe()} jvp xDot`);
    selectTangents(argmax, xDot, T, yDot);
    return yDot;
  }

  /** VJP rule: each output's cotangent goes to its winner (`dx[argmax[o]] = dy[o]`), zero elsewhere. */
  vjp(saved: GlobalMaxPooling2DSaved, dy: Tensor): Cotangents {
    const { argmax, xShape } = saved;
    this.checkCotangent(dy, xShape[0]);
    const dx = zeros(xShape, saved.dtype);
    selectCotangents(argmax, dy, dx);
    return { dx, dParams: [] };
  }

  // Structure hooks: what the sparse engines and the memory estimate know of global max pooling.

  /** Each output reads every row and every column of its own channel. */
  inputStructure(): AxisStructure {
    return { inDims: this.inputShape.slice(), maps: [{ kind: 'full', rows: 1 }, { kind: 'full', rows: 1 }, { kind: 'identity' }] };
  }

  /** Forward saves one int32 winner per output (see {@link GlobalMaxPooling2DSaved}). */
  residuals(): Residuals {
    return { saves: [{ what: 'argmax', perSample: [this.inputShape[2]], dtype: 'int32' }] };
  }

  /** At a recorded pass each row holds its winner only. */
  localRowNnz(): number {
    return 1;
  }

  /** The selection at a recorded pass: row `c` is a 1 at its winner (`argmax`). */
  localJacobian(pass: LayerPass): LocalJacobian[] {
    const { argmax, xShape } = pass.saved as GlobalMaxPooling2DSaved;
    return [selectionLocal(argmax, xShape[1] * xShape[2] * xShape[3], xShape[3])];
  }

}

/**
 * The seed's explicit step, streamed: each Jacobian of a stage (w.r.t. a weight, `[B, ...out,
 * ...param]`, or w.r.t. the input, `[B, ...out, ...in]`) is built block by block of `T` columns by
 * forward-mode dual numbers (the stage's `jvp` with basis seeds, as the dense builder does), each
 * block `[B, ...out, T]` is contracted with the upstream gradient `dLoss_dOut` at once by the seed's
 * helpers (`upstreamGradientLossWeights` / `upstreamGradientLossOut`: the block is a slice of the
 * Jacobian's columns, so the same contraction applies to it), and dropped. Only one block is alive
 * at a time, so the memory is bounded by one block (plus the residuals and the gradients) at any
 * image size; the time is the dense forward builder's, one tangent per column. Successive blocks
 * reuse one set of tangent buffers (a `TangentPool`, as the dense builders do): fresh ones would
 * cost a page fault per 4 KiB touched, which on a wide stage outweighs the arithmetic.
 * @module
 */
import { recycleBuffer } from './buffer-pool.js';
import { ShapeError, fmtShape } from './errors.js';
import { upstreamGradientLossOut, upstreamGradientLossWeights } from './helpers.js';
import { type Differentiable, type ForwardOptions, leavesOf, trainableIndices } from './layers/layer.js';
import { TangentPool } from './layers/out.js';
import { type DType, type Tensor, assertFinite, assertShape, bytesPerElement, contiguous, dtypeOf, sizeOf, zeros } from './tensor.js';

/** Default bytes of one streamed block's working set (the seed and every layer's tangent output): 64 MiB. */
export const DEFAULT_STREAMED_BLOCK_BYTES = 64 * 1024 ** 2;

/** Options of the streamed contractions. */
export interface StreamedOptions {
  /** Tangents per block (the block width `T`). Default: sized by {@link streamedBlockWidth}. */
  tangents?: number;
  /** Target bytes of one block's working set when `tangents` is not given. Default {@link DEFAULT_STREAMED_BLOCK_BYTES}. */
  blockBytes?: number;
  /** Called after each block with (columns done, columns in all). */
  onProgress?: (done: number, total: number) => void;
}

/** What one streamed Jacobian left behind: its contraction, and what it would have been. */
export interface StreamedContraction {
  /** The contraction with `dLoss_dOut`: `[...param]` for a weight, `[B, ...in]` for the input. */
  gradient: Tensor;
  /** Shape of the whole Jacobian that was streamed (never held): `[B, ...out, ...param]`, `[B, ...out, ...in]` or `[B, ...out, B, ...in]`. */
  shape: number[];
  /** Tangents per block. */
  tangents: number;
  /** Bytes of the largest block held (its seed and every layer's tangent output). */
  blockBytes: number;
}

/**
 * Bytes per tangent of a streamed block of `f`: the seed's column (`seedElements`) and, for each
 * batch sample, every layer's tangent output (counted even where a layer returns a view: an upper
 * bound, so the guard never under-counts).
 * @example
 * streamedBytesPerTangent(stage, sizeOf(stage.inputShape) * 8, 8, 'float64');
 */
export function streamedBytesPerTangent(f: Differentiable, seedElements: number, batch: number, dtype: DType): number {
  const outs = leavesOf(f).reduce((s, l) => s + sizeOf(l.outputShape), 0);
  return (seedElements + batch * outs) * bytesPerElement(dtype);
}

/**
 * The streamed block width: as many tangents as fit `blockBytes` (at least 1, at most 256 and the
 * column count), or the requested width.
 * @throws ShapeError for a requested width that is not a positive integer.
 * @example
 * streamedBlockWidth(28640, 22e6); // 3 tangents per block for the CNN's model_0 at 64², B=8
 */
export function streamedBlockWidth(columns: number, bytesPerTangent: number, requested?: number, blockBytes = DEFAULT_STREAMED_BLOCK_BYTES): number {
  if (requested !== undefined) {
    if (!Number.isInteger(requested) || requested <= 0) throw new ShapeError(`tangents: expected a positive integer block width, received ${requested}`);
    return Math.max(1, Math.min(requested, columns));
  }
  return Math.max(1, Math.min(columns, 256, Math.floor(blockBytes / Math.max(bytesPerTangent, 1))));
}

/** Columns `0..Tc` of a `[B, ...out, T]` tangent block: the Jacobian slice `[B, ...out, Tc]`, a view. */
function blockSlice(yDot: Tensor, Tc: number): Tensor {
  if (Tc === yDot.shape[yDot.shape.length - 1]) return yDot;
  return yDot.hi(...yDot.shape.slice(0, -1), Tc) as Tensor;
}

/**
 * dLoss/dWeights of `f` by streaming its Jacobian w.r.t. each trainable parameter, in `params`
 * order: per block of `T` columns, `J_blk = jvp(basis seeds)` (`[B, ...out, T]`), then
 * `upstreamGradientLossWeights(J_blk, dLoss_dOut)` fills those `T` entries of the gradient.
 * Equal to `upstreamGradientLossWeights(jacobianWrtWeights(f, x)[k], dLoss_dOut)` (the same sums
 * in the same order), holding one block instead of the Jacobian.
 * @param dLoss_dOut `[B, ...out]`.
 * @example
 * const [dKernel, dBias] = streamedWeightGradients(dense, x, dLoss_dY).map((c) => c.gradient);
 */
export function streamedWeightGradients<S>(f: Differentiable<S>, x: Tensor, dLoss_dOut: Tensor, opts: StreamedOptions & ForwardOptions = {}): StreamedContraction[] {
  assertShape(x, [null, ...f.inputShape], 'streamedWeightGradients x');
  assertFinite(x, 'streamedWeightGradients x');
  const B = x.shape[0];
  checkUpstream(dLoss_dOut, [B, ...f.outputShape], 'streamedWeightGradients');
  const dtype = dtypeOf(x);
  const wrt = trainableIndices(f);
  const fwd = f.forward(x, opts);
  const allCols = wrt.reduce((s, k) => s + f.params[k].value.size, 0);
  let done = 0;
  const pool = new TangentPool();
  const contractions = wrt.map((k) => {
    const p = f.params[k];
    const nP = p.value.size;
    const perTangent = streamedBytesPerTangent(f, nP, B, dtype);
    const T = streamedBlockWidth(nP, perTangent, opts.tangents, opts.blockBytes);
    const gradient = zeros(p.value.shape, dtype);
    const seed = zeros([...p.value.shape, T], dtype);
    const paramDots: (Tensor | null)[] = f.params.map((_, j) => (j === k ? seed : null));
    for (let c0 = 0; c0 < nP; c0 += T) {
      const Tc = Math.min(T, nP - c0);
      if (c0 > 0) for (let t = 0; t < T; t++) seed.data[(c0 - T + t) * T + t] = 0;
      for (let t = 0; t < Tc; t++) seed.data[(c0 + t) * T + t] = 1;
      const into = pool.acquire([B, ...f.outputShape, T], dtype);
      const yDot = contiguous(f.jvp(fwd.saved, { xDot: null, paramDots, T, rows: { lo: c0, hi: c0 + Tc }, pool }, into));
      const g = upstreamGradientLossWeights(blockSlice(yDot, Tc), dLoss_dOut); // [Tc]
      gradient.data.set(g.data, c0);
      pool.release(into);
      done += Tc;
      opts.onProgress?.(done, allCols);
    }
    recycleBuffer(seed.data);
    return { gradient, shape: [B, ...f.outputShape, ...p.value.shape], tangents: T, blockBytes: T * perTangent };
  });
  pool.drain();
  return contractions;
}

/**
 * dLoss/dIn of `f` by streaming its Jacobian w.r.t. the input. Samples independent: column `c` of
 * every sample is seeded at once, each block `[B, ...out, T]` is contracted per sample by
 * `upstreamGradientLossOut` into `[B, T]` (the batch Jacobian `[B, ...out, ...in]`'s contraction).
 * `samplesCoupled` (BatchNormalization in training): a column is one input element of one sample,
 * the whole batch is the column space, and each block is contracted over the batch and the outputs
 * by `upstreamGradientLossWeights` (the full Jacobian `[B, ...out, B, ...in]`'s contraction, exact).
 * @param dLoss_dOut `[B, ...out]`.
 * @returns the contraction, `gradient` `[B, ...in]`.
 * @example
 * const { gradient: dLoss_dIn } = streamedInputGradient(stage, h, dLoss_dOut);
 */
export function streamedInputGradient<S>(f: Differentiable<S>, x: Tensor, dLoss_dOut: Tensor, opts: StreamedOptions & ForwardOptions & {
  /** Whether the forward pass couples the samples: then the full Jacobian is streamed. */
  samplesCoupled?: boolean
} = {}): StreamedContraction {
  assertShape(x, [null, ...f.inputShape], 'streamedInputGradient x');
  assertFinite(x, 'streamedInputGradient x');
  const B = x.shape[0];
  checkUpstream(dLoss_dOut, [B, ...f.outputShape], 'streamedInputGradient');
  const coupled = opts.samplesCoupled ?? false;
  const dtype = dtypeOf(x);
  const nIn = sizeOf(f.inputShape);
  const cols = coupled ? B * nIn : nIn;
  const fwd = f.forward(x, opts);
  const perTangent = streamedBytesPerTangent(f, B * nIn, B, dtype);
  const T = streamedBlockWidth(cols, perTangent, opts.tangents, opts.blockBytes);
  const gradient = zeros([B, ...f.inputShape], dtype);
  const seed = zeros([B, ...f.inputShape, T], dtype);
  const pool = new TangentPool();
  for (let c0 = 0; c0 < cols; c0 += T) {
    const Tc = Math.min(T, cols - c0);
    const into = pool.acquire([B, ...f.outputShape, T], dtype);
    if (coupled) {
      if (c0 > 0) for (let t = 0; t < T; t++) seed.data[(c0 - T + t) * T + t] = 0;
      for (let t = 0; t < Tc; t++) seed.data[(c0 + t) * T + t] = 1;
      const yDot = contiguous(f.jvp(fwd.saved, { xDot: seed, paramDots: null, T, pool }, into));
      const g = upstreamGradientLossWeights(blockSlice(yDot, Tc), dLoss_dOut); // [Tc]: columns c0.. of the flattened batch
      gradient.data.set(g.data, c0);
    } else {
      if (c0 > 0) for (let b = 0; b < B; b++) for (let t = 0; t < T; t++) seed.data[(b * nIn + c0 - T + t) * T + t] = 0;
      for (let b = 0; b < B; b++) for (let t = 0; t < Tc; t++) seed.data[(b * nIn + c0 + t) * T + t] = 1;
      const yDot = contiguous(f.jvp(fwd.saved, { xDot: seed, paramDots: null, T, rows: { lo: c0, hi: c0 + Tc }, pool }, into));
      const g = upstreamGradientLossOut(blockSlice(yDot, Tc), dLoss_dOut); // [B, Tc]
      for (let b = 0; b < B; b++) gradient.data.set(g.data.subarray(b * Tc, (b + 1) * Tc), b * nIn + c0);
    }
    pool.release(into);
    opts.onProgress?.(c0 + Tc, cols);
  }
  recycleBuffer(seed.data);
  pool.drain();
  const shape = coupled ? [B, ...f.outputShape, B, ...f.inputShape] : [B, ...f.outputShape, ...f.inputShape];
  return { gradient, shape, tangents: T, blockBytes: T * perTangent };
}

/** The upstream gradient must be `[B, ...out]` of the stage, finite: checked before the first block. */
function checkUpstream(dLoss_dOut: Tensor, expected: number[], what: string): void {
  if (!dLoss_dOut || !Array.isArray(dLoss_dOut.shape)) throw new ShapeError(`${what}: expected dLoss_dOut to be a tensor ${fmtShape(expected)}, received ${String(dLoss_dOut)}`);
  assertShape(dLoss_dOut, expected, `${what} dLoss_dOut`);
  assertFinite(dLoss_dOut, `${what} dLoss_dOut`);
}

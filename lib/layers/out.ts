/**
 * Where a `jvp` writes its output tangent: the optional `out` argument of
 * {@link Differentiable.jvp}, and the buffer pool that hands a stage's intermediate tangent blocks
 * from one block of tangents to the next.
 *
 * An `out` is a view `[B, ...out, T]` whose elements are zero on entry: a column block of a
 * Jacobian `J` `[B, ...out, ...in]` being built (rows `nIn` apart, `T` contiguous columns), or a
 * pooled buffer. A layer writes its non-zero entries there and returns `out`; a layer that ignores
 * it returns a tensor of its own, which the caller copies ({@link deliverTangent}).
 * @module
 */
import { recycleBuffer } from '../buffer-pool.js';
import { ShapeError, fmtShape } from '../errors.js';
import { type DType, type Data, type Tensor, allocData, dtypeOf, isContiguous, sizeOf } from '../tensor.js';
import ndarray from 'ndarray';

/** An `out` `[B, ...out, T]` seen as `R` rows of `T` contiguous values, `stride` apart. */
export interface RowBlock {
  /** The buffer. */
  data: Data;
  /** Where row 0 starts. */
  offset: number;
  /** Elements from one row to the next (`T` when contiguous, `nIn` for a column block of J). */
  stride: number;
}

/**
 * `out` as rows of `T` contiguous values with a uniform row stride, or null when its strides do
 * not have that form (the caller then writes a buffer of its own and copies).
 * @example
 * const r = rowBlock(out); // { data, offset: c0, stride: nIn } for columns c0.. of J
 */
export function rowBlock(out: Tensor): RowBlock | null {
  const n = out.shape.length;
  if (n < 2 || (out.stride[n - 1] !== 1 && out.shape[n - 1] !== 1)) return null;
  const stride = out.stride[n - 2];
  // The leading axes must collapse onto one row axis: each stride the next one's times its extent.
  let acc = stride;
  for (let a = n - 2; a >= 0; a--) {
    if (out.shape[a] !== 1 && out.stride[a] !== acc) return null;
    acc *= out.shape[a];
  }
  return { data: out.data, offset: out.offset, stride };
}

/**
 * The buffer a layer accumulates its output tangent in, `[...shape]` zeros: `out` itself when it
 * is the whole of a contiguous buffer (a pooled block), else a new one, taken from `pool` when
 * there is an `out` to copy it into (a strided column block of J): {@link finishTangent} then
 * gives it back, and the next block reuses its pages instead of faulting in new ones.
 */
export function tangentBuffer(out: Tensor | undefined, shape: readonly number[], dtype: DType, pool?: TangentPool): Tensor {
  if (out && out.offset === 0 && out.data.length === sizeOf(shape) && isContiguous(out) && dtypeOf(out) === dtype && sameShape(out.shape, shape)) return out;
  if (out && pool) return pool.acquire(shape, dtype);
  return ndarray(allocData(sizeOf(shape), dtype, `tangent block ${fmtShape(shape)} (${dtype})`), shape.slice()) as Tensor;
}

/** {@link deliverTangent} for a buffer from {@link tangentBuffer}: once copied into `out`, a pooled scratch buffer goes back to `pool`. */
export function finishTangent(out: Tensor | undefined, yDot: Tensor, pool?: TangentPool): Tensor {
  const delivered = deliverTangent(out, yDot);
  if (out && pool && yDot !== out) pool.release(yDot);
  return delivered;
}

/** `yDot` as the caller asked for it: `out` (after copying `yDot` into it, unless it is `out`), or `yDot` itself without `out`. */
export function deliverTangent(out: Tensor | undefined, yDot: Tensor): Tensor {
  if (!out || yDot === out) return yDot;
  if (!sameShape(out.shape, yDot.shape)) throw new ShapeError(`jvp out: expected ${fmtShape(yDot.shape)}, received ${fmtShape(out.shape)}`);
  const T = yDot.shape[yDot.shape.length - 1];
  const r = rowBlock(out);
  const s = rowBlock(yDot);
  if (r && s) {
    const rows = T === 0 ? 0 : yDot.size / T;
    for (let i = 0, src = s.offset, dst = r.offset; i < rows; i++, src += s.stride, dst += r.stride) {
      for (let t = 0; t < T; t++) r.data[dst + t] = s.data[src + t];
    }
    return out;
  }
  // Any other strides: element by element, odometer order.
  const idx = new Array<number>(out.shape.length).fill(0);
  for (let i = 0; i < out.size; i++) {
    out.set(...idx, yDot.get(...idx));
    for (let a = idx.length - 1; a >= 0; a--) {
      if (++idx[a] < out.shape[a]) break;
      idx[a] = 0;
    }
  }
  return out;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/**
 * Tangent blocks kept by shape and dtype across the blocks of one Jacobian build, so that each
 * block reuses the intermediate buffers of the one before instead of touching fresh pages (about
 * 11.6 µs a 4 KiB page on a loaded machine). Only for intermediates no caller holds: a stage
 * takes a buffer for a layer's output and gives it back once the next layer has read it.
 * @example
 * const pool = new TangentPool();
 * const yDot = model.jvp(saved, { xDot: seed, paramDots: null, T, pool }, outView);
 */
export class TangentPool {
  private readonly free = new Map<string, Data[]>();
  /** A zero tensor `[...shape]` of `dtype`: a returned buffer cleared, or a new one. */
  acquire(shape: readonly number[], dtype: DType): Tensor {
    const n = sizeOf(shape);
    const list = this.free.get(`${dtype}:${n}`);
    const data = list?.pop();
    if (data) {
      data.fill(0);
      return ndarray(data, shape.slice()) as Tensor;
    }
    return ndarray(allocData(n, dtype, `tangent block ${fmtShape(shape)} (${dtype})`), shape.slice()) as Tensor;
  }
  /** Hands every buffer given back to the shared pool (`lib/buffer-pool.ts`) when the build is done: the next build then reuses their pages instead of faulting in new ones. */
  drain(): void {
    for (const list of this.free.values()) for (const data of list) recycleBuffer(data);
    this.free.clear();
  }
  /** Gives a buffer from {@link TangentPool.acquire} back; its holder must not read it again. */
  release(t: Tensor): void {
    const key = `${dtypeOf(t)}:${t.data.length}`;
    let list = this.free.get(key);
    if (!list) this.free.set(key, (list = []));
    if (!list.includes(t.data)) list.push(t.data);
  }
}

/**
 * Tensors: `ndarray` strided views over a `Float64Array` (the default) or a `Float32Array`.
 *
 * Every tensor the engine produces is row-major and contiguous; reshape, flatten, transpose and
 * windows are views that share the buffer (no copy). Kernels read `t.data` from `t.offset` when
 * {@link isContiguous} holds and fall back to {@link contiguous} (one copy) otherwise.
 * @module
 */
import ndarray from 'ndarray';
import type { NdArray } from 'ndarray';
import { MemoryBudgetError, ShapeError, fmtShape, fmtValue } from './errors.js';
import { fmtBytes, getMemoryBudget, guardBytes } from './memory.js';
import { takeBuffer } from './buffer-pool.js';
import type { Rng } from './rng.js';

/** Element types: float64 by default, float32 on request. */
export type DType = 'float64' | 'float32';
/** The buffers a tensor may sit on. */
export type Data = Float64Array | Float32Array;
/** A strided view over a float buffer. Shapes are `t.shape`, row-major. */
export type Tensor = NdArray<Data>;
/** A tensor in a JSON file: `{"shape": [...], "data": [...row-major...]}`. */
export interface TensorJSON {
  /** The shape, e.g. `[3, 10, 10, 1]`. */
  shape: number[];
  /** The values, row-major (`shape` product of them). */
  data: number[];
}

/** Bytes per element of a dtype. */
export function bytesPerElement(dtype: DType): number {
  return dtype === 'float32' ? 4 : 8;
}

/** The product of a shape's extents (1 for a scalar's empty shape). */
export function sizeOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Row-major strides of a shape. */
export function stridesOf(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

/** The dtype of a tensor's buffer. */
export function dtypeOf(t: Tensor): DType {
  return t.data instanceof Float32Array ? 'float32' : 'float64';
}

/**
 * Checks that `shape` is an array of non-negative safe integers and returns its size; `what` names
 * the caller. A string extent (`["2"]`), NaN, Infinity or a fraction is refused, quoted as received.
 * @throws ShapeError e.g. `zeros: expected a shape of non-negative integers (at most 2^53 - 1), received ["2"]`
 */
export function checkShape(shape: unknown, what: string): number {
  if (!Array.isArray(shape)) throw new ShapeError(`${what}: expected a shape (an array of non-negative integers), received ${fmtValue(shape)}`);
  for (const d of shape) {
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) throw new ShapeError(`${what}: expected a shape of non-negative integers (at most 2^53 - 1), received ${fmtShape(shape)}`);
  }
  return sizeOf(shape as number[]);
}

function checkDtype(dtype: unknown, what: string): DType {
  if (dtype !== 'float64' && dtype !== 'float32') throw new ShapeError(`${what}: expected dtype "float64" or "float32", received ${fmtValue(dtype)}`);
  return dtype;
}

/**
 * A new zero-filled buffer of `n` elements of `dtype`, refused before allocating when its bytes
 * exceed the memory budget ({@link getMemoryBudget}), so that a huge shape is a
 * {@link MemoryBudgetError} naming the bytes and the budget rather than a `RangeError` from the
 * typed-array constructor.
 */
export function allocData(n: number, dtype: DType = 'float64', what = `buffer of ${n} ${dtype} values`): Data {
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0) throw new ShapeError(`allocData: expected a non-negative integer element count, received ${fmtValue(n)}`);
  checkDtype(dtype, 'allocData');
  const bytes = n * bytesPerElement(dtype);
  guardBytes(what, bytes, getMemoryBudget(), 'use a smaller shape or batch');
  // A buffer a finished backward pass gave back (already touched: no page faults), zero-filled.
  const reused = takeBuffer(n, dtype);
  if (reused) return reused;
  try {
    return dtype === 'float32' ? new Float32Array(n) : new Float64Array(n);
  } catch (e) {
    // Within the budget but more than the process can get (a ulimit, a small machine): still a
    // refusal the caller can act on, not an engine failure.
    if (!(e instanceof RangeError)) throw e;
    throw new MemoryBudgetError(`${what}: allocating ${fmtBytes(bytes)} (${bytes} bytes) failed (${e.message}), although it is within the memory budget of ${fmtBytes(getMemoryBudget())}; use a smaller shape or batch, or lower the budget with setMemoryBudget()`, bytes, getMemoryBudget());
  }
}

/**
 * A tensor over `data` with a row-major `shape`: a `Float64Array` or `Float32Array` of the right
 * dtype is used as is (not copied), anything else is copied into a new buffer. The number of values
 * must be the shape's size exactly, and every value a number.
 * @throws ShapeError naming the expected and received counts (`tensor: expected 4 values for shape [2, 2], received 5`), or the first value that is not a number, quoted.
 * @example
 * const w = tensor([1, 2, 3, 4], [2, 2]); // [[1, 2], [3, 4]]
 */
export function tensor(data: Data | ArrayLike<number>, shape: readonly number[], dtype?: DType): Tensor {
  const n = checkShape(shape, 'tensor');
  if (dtype !== undefined) checkDtype(dtype, 'tensor');
  const isArrayLike = data !== null && typeof data === 'object' && typeof (data as ArrayLike<number>).length === 'number';
  if (!isArrayLike) throw new ShapeError(`tensor: expected data to be an array or typed array of numbers, received ${fmtValue(data)}`);
  if (data.length !== n) throw new ShapeError(`tensor: expected ${n} values for shape ${fmtShape(shape)}, received ${data.length}`);
  if ((data instanceof Float64Array && dtype !== 'float32') || (data instanceof Float32Array && dtype !== 'float64')) {
    return ndarray(data, shape.slice()) as Tensor;
  }
  if (data instanceof BigInt64Array || data instanceof BigUint64Array) throw new ShapeError(`tensor: expected data of numbers, received a ${data.constructor.name}`);
  if (!ArrayBuffer.isView(data)) {
    for (let i = 0; i < n; i++) {
      if (typeof data[i] !== 'number') throw new ShapeError(`tensor: expected numbers, received ${fmtValue(data[i])} at index ${i}`);
    }
  }
  const buf = allocData(n, dtype ?? 'float64', `tensor ${fmtShape(shape)}`);
  buf.set(data as ArrayLike<number>);
  return ndarray(buf, shape.slice()) as Tensor;
}

/** A zero tensor of `shape`, refused before allocating when over the memory budget. */
export function zeros(shape: readonly number[], dtype: DType = 'float64'): Tensor {
  const n = checkShape(shape, 'zeros');
  return ndarray(allocData(n, dtype, `tensor ${fmtShape(shape)} (${dtype})`), shape.slice()) as Tensor;
}

/** A zero tensor with the shape and dtype of `t`. */
export function zerosLike(t: Tensor): Tensor {
  return zeros(t.shape, dtypeOf(t));
}

/** Uniform random values in `[lo, hi)` from a seeded generator. */
export function randomUniform(shape: readonly number[], rng: Rng, lo = 0, hi = 1, dtype: DType = 'float64'): Tensor {
  const t = zeros(shape, dtype);
  for (let i = 0; i < t.data.length; i++) t.data[i] = rng.uniform(lo, hi);
  return t;
}

/** Standard normal values from a seeded generator. */
export function randomNormal(shape: readonly number[], rng: Rng, dtype: DType = 'float64'): Tensor {
  const t = zeros(shape, dtype);
  for (let i = 0; i < t.data.length; i++) t.data[i] = rng.normal();
  return t;
}

/** True when `t` is a row-major view whose elements are `t.data[t.offset .. t.offset + t.size)`. */
export function isContiguous(t: Tensor): boolean {
  let acc = 1;
  for (let i = t.shape.length - 1; i >= 0; i--) {
    if (t.shape[i] !== 1 && t.stride[i] !== acc) return false;
    acc *= t.shape[i];
  }
  return true;
}

/** `t` itself when it is contiguous from offset 0 over its whole buffer, else a row-major copy. */
export function contiguous(t: Tensor): Tensor {
  if (t.offset === 0 && t.data.length === t.size && isContiguous(t)) return t;
  return copy(t);
}

/** A row-major copy of any view. */
export function copy(t: Tensor): Tensor {
  const out = zeros(t.shape, dtypeOf(t));
  if (isContiguous(t)) {
    out.data.set(t.data.subarray(t.offset, t.offset + t.size));
    return out;
  }
  const shape = t.shape;
  const idx = new Array<number>(shape.length).fill(0);
  for (let i = 0; i < out.data.length; i++) {
    out.data[i] = t.get(...idx);
    for (let a = shape.length - 1; a >= 0; a--) {
      if (++idx[a] < shape[a]) break;
      idx[a] = 0;
    }
  }
  return out;
}

/**
 * A view of `t` with another shape of the same size (row-major): no copy when `t` is contiguous.
 * @example
 * const flat = reshape(images, [images.shape[0], -1]); // Flatten, as a view
 */
export function reshape(t: Tensor, shape: readonly number[]): Tensor {
  const s = shape.slice();
  const free = s.indexOf(-1);
  if (free >= 0) {
    const known = sizeOf(s.filter((_, i) => i !== free));
    s[free] = known === 0 ? 0 : t.size / known;
  }
  if (sizeOf(s) !== t.size || s.some((d) => !Number.isInteger(d) || d < 0)) {
    throw new ShapeError(`cannot reshape ${fmtShape(t.shape)} (${t.size} values) to ${fmtShape(shape)}`);
  }
  const src = isContiguous(t) ? t : copy(t);
  return ndarray(src.data, s, stridesOf(s), src.offset) as Tensor;
}

/** A nested JavaScript array of the values of `t` (for printing and JSON). */
export function toNested(t: Tensor): unknown {
  const c = contiguous(t);
  const rec = (axis: number, off: number): unknown => {
    if (axis === c.shape.length) return c.data[off];
    const out: unknown[] = [];
    const step = sizeOf(c.shape.slice(axis + 1));
    for (let i = 0; i < c.shape[axis]; i++) out.push(rec(axis + 1, off + i * step));
    return out;
  };
  return rec(0, 0);
}

/** Reads `{"shape", "data"}` into a tensor, checking the shape, that the sizes agree and that every value is a number. */
export function fromJSON(j: TensorJSON, dtype: DType = 'float64', what = 'tensor'): Tensor {
  if (!j || typeof j !== 'object' || !Array.isArray(j.shape) || !Array.isArray(j.data)) {
    throw new ShapeError(`${what}: expected {"shape": [...], "data": [...]}, received ${fmtValue(j)}`);
  }
  const n = checkShape(j.shape, what);
  if (n !== j.data.length) {
    throw new ShapeError(`${what}: shape ${fmtShape(j.shape)} needs ${n} values, received ${j.data.length}`);
  }
  const bad = j.data.findIndex((v) => typeof v !== 'number');
  if (bad >= 0) throw new ShapeError(`${what}: expected numbers in "data", received ${fmtValue(j.data[bad])} at index ${bad}`);
  return tensor(j.data, j.shape, dtype);
}

/** Writes a tensor as `{"shape", "data"}`. */
export function toJSON(t: Tensor): TensorJSON {
  return { shape: t.shape.slice(), data: Array.from(contiguous(t).data.subarray(0, t.size)) };
}

/** Converts to another dtype (a copy), or returns `t` when it already has it. */
export function asType(t: Tensor, dtype: DType): Tensor {
  if (dtypeOf(t) === dtype) return t;
  // Straight from buffer to buffer: an intermediate JS array would put 8 bytes a value on the heap, unguarded.
  const out = zeros(t.shape, dtype);
  const c = contiguous(t);
  out.data.set(c.data.subarray(c.offset, c.offset + c.size));
  return out;
}

/**
 * Checks rank and extents; `null` in `expected` accepts any extent on that axis.
 * @throws ShapeError quoting both shapes, e.g. `conv2d input: expected [B, 10, 10, 1], received [3, 10, 10]`.
 */
export function assertShape(t: { shape: readonly number[] }, expected: readonly (number | null)[], what: string): void {
  const s = t.shape;
  const ok = s.length === expected.length && expected.every((e, i) => e === null || e === s[i]);
  if (!ok) {
    const exp = `[${expected.map((e, i) => (e === null ? (i === 0 ? 'B' : '?') : String(e))).join(', ')}]`;
    throw new ShapeError(`${what}: expected shape ${exp} (rank ${expected.length}), received ${fmtShape(s)} (rank ${s.length})`);
  }
}

/**
 * Throws on the first NaN or infinity, naming its index, so that a poisoned value is caught at the
 * boundary where it entered instead of spreading through every derivative.
 */
export function assertFinite(t: Tensor, what: string): void {
  const c = contiguous(t);
  const n = c.size;
  const d = c.data;
  for (let i = 0; i < n; i++) {
    const v = d[i];
    if (v - v !== 0) {
      const idx: number[] = [];
      let r = i;
      for (const st of stridesOf(c.shape)) {
        idx.push(Math.floor(r / st));
        r %= st;
      }
      throw new ShapeError(`${what}: expected finite values, received ${v} at index [${idx.join(', ')}]`);
    }
  }
}

/** Same shapes, or a ShapeError quoting both. */
export function assertSameShape(a: { shape: readonly number[] }, b: { shape: readonly number[] }, what: string): void {
  if (a.shape.length !== b.shape.length || a.shape.some((d, i) => d !== b.shape[i])) {
    throw new ShapeError(`${what}: expected shape ${fmtShape(b.shape)}, received ${fmtShape(a.shape)}`);
  }
}

/** ⟨a, b⟩ over all elements (shapes must match). */
export function dot(a: Tensor, b: Tensor): number {
  assertSameShape(a, b, 'dot');
  const ca = contiguous(a);
  const cb = contiguous(b);
  let s = 0;
  for (let i = 0; i < ca.size; i++) s += ca.data[i] * cb.data[i];
  return s;
}

/** `out += alpha * x`, in place on `out` (contiguous, same shape). */
export function axpy(out: Tensor, alpha: number, x: Tensor): Tensor {
  assertSameShape(x, out, 'axpy');
  const cx = contiguous(x);
  for (let i = 0; i < cx.size; i++) out.data[out.offset + i] += alpha * cx.data[i];
  return out;
}

/** Largest absolute element. */
export function maxAbs(t: Tensor): number {
  const c = contiguous(t);
  let m = 0;
  for (let i = 0; i < c.size; i++) m = Math.max(m, Math.abs(c.data[i]));
  return m;
}

/** Bytes held by a tensor's elements. */
export function bytesOf(t: Tensor): number {
  return t.size * t.data.BYTES_PER_ELEMENT;
}

/**
 * A pool of large typed-array buffers, reused by size across training steps: touching freshly
 * allocated memory costs a page fault per 4 KiB page, which for a step's cotangents costs more
 * than the arithmetic on them. Only buffers given back by {@link recycleBuffer} are reused, and
 * only the tape gives back, and only cotangents that its layers declare their own
 * (`Differentiable.freshCotangent`) and that it does not return: nothing a user holds.
 * @module
 */

/** Buffers under this many elements are not pooled: allocating them costs little. */
const MIN_ELEMENTS = 8192;
/** At most this many bytes wait in the pool; beyond, a given-back buffer is left to the GC. */
const MAX_POOLED_BYTES = 128 * 1024 ** 2;

/** Each waiting buffer, and whether its giver promised it holds zeros (then it is not cleared again). */
const pool = new Map<string, { data: Float64Array | Float32Array; zeroed: boolean }[]>();
let pooledBytes = 0;

/**
 * A zero-filled buffer of `n` elements of `dtype` from the pool, or null when none waits (the
 * caller then allocates).
 * @example
 * const d = takeBuffer(1 << 16, 'float64') ?? new Float64Array(1 << 16);
 */
export function takeBuffer(n: number, dtype: 'float64' | 'float32'): Float64Array | Float32Array | null {
  if (n < MIN_ELEMENTS) return null;
  const list = pool.get(`${dtype}:${n}`);
  const entry = list?.pop();
  if (!entry) return null;
  pooledBytes -= entry.data.byteLength;
  if (!entry.zeroed) entry.data.fill(0);
  return entry.data;
}

/**
 * Gives a buffer back for reuse by the next {@link takeBuffer} of its size and type. The caller
 * promises that nothing reads or writes it any more (no tensor or view over it survives), and with
 * `zeroed` that every element is zero (a basis seed with its ones cleared): it is then handed out
 * without clearing it again.
 * @example
 * recycleBuffer(dx.data); // dx was consumed and is dropped
 */
export function recycleBuffer(data: Float64Array | Float32Array, zeroed = false): void {
  if (data.length < MIN_ELEMENTS || data.byteOffset !== 0 || data.length * data.BYTES_PER_ELEMENT !== data.buffer.byteLength) return;
  if (pooledBytes + data.byteLength > MAX_POOLED_BYTES) return;
  const key = `${data instanceof Float32Array ? 'float32' : 'float64'}:${data.length}`;
  let list = pool.get(key);
  if (!list) pool.set(key, (list = []));
  if (list.some((e) => e.data === data)) return;
  list.push({ data, zeroed });
  pooledBytes += data.byteLength;
}

/** Empties the pool (for memory measurements that must see every allocation). */
export function clearBufferPool(): void {
  pool.clear();
  pooledBytes = 0;
}

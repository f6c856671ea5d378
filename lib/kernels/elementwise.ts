/**
 * The element-wise kernels of the training step: relu's forward `max(z, 0)` and its VJP's mask
 * `y > 0 ? g : 0`, and the column sums of a bias's gradient. In JS the first two are a branch per
 * element that the data decides (about half the units are off), mispredicted half the time and
 * costing the same in float32 as in float64, and the sums a scalar add per element; the SIMD
 * kernels of `gemm.wat` do them branch-free, four float32 or two float64 values at a time, staged
 * through the module's memory in blocks that stay in cache. Both paths give the same bits (relu
 * and a mask are exact, and the sums keep the JS loop's order).
 * @module
 */
import type { Data } from '../tensor.js';
import { simdModule } from './gemm.js';

/** Bytes of one staged block (each operand): small enough to stay in L2 between the copy in, the kernel and the copy out. */
const BLOCK_BYTES = 1 << 17;
/** Below this many values the copies into the module cost more than the branches they save. */
const MIN_SIMD = 1024;

/**
 * `y[i] = relu(z[i])` for `i < n` (`z <= 0 ? 0 : z`: +0 for -0, NaN kept); in place allowed
 * (`y === z`). By the SIMD kernel where it runs and both are of one element type, else in JS.
 * @example
 * relu(z, z, z.length); // in place
 */
export function relu(z: Data, y: Data, n: number): void {
  const mod = n >= MIN_SIMD ? simdModule() : null;
  const f64 = z instanceof Float64Array;
  if (!mod || f64 !== y instanceof Float64Array) {
    for (let i = 0; i < n; i++) {
      const v = z[i];
      y[i] = v <= 0 ? 0 : v;
    }
    return;
  }
  const block = BLOCK_BYTES / z.BYTES_PER_ELEMENT;
  const buf = staging(mod.memory, BLOCK_BYTES);
  const View = f64 ? Float64Array : Float32Array;
  const run = f64 ? mod.relu64 : mod.relu32;
  for (let i = 0; i < n; i += block) {
    const len = Math.min(block, n - i);
    const v = new View(buf, 0, len);
    v.set(z.subarray(i, i + len));
    run(0, len);
    y.set(v, i);
  }
}

/**
 * `out[i] = y[i] > 0 ? g[i] : 0` for `i < n`: relu's VJP from its saved output `y` (`g`'s bits
 * kept or cleared, never computed on: a NaN or infinite cotangent where the unit is off gives 0);
 * `out` may alias `g`. By the SIMD kernel where it runs and all three are of one element type,
 * else in JS.
 * @example
 * reluMask(saved.y.data, dy.data, dz, n);
 */
export function reluMask(y: Data, g: Data, out: Data, n: number): void {
  const mod = n >= MIN_SIMD ? simdModule() : null;
  const f64 = y instanceof Float64Array;
  if (!mod || f64 !== g instanceof Float64Array || f64 !== out instanceof Float64Array) {
    for (let i = 0; i < n; i++) out[i] = y[i] > 0 ? g[i] : 0;
    return;
  }
  const block = BLOCK_BYTES / y.BYTES_PER_ELEMENT;
  const buf = staging(mod.memory, 2 * BLOCK_BYTES);
  const View = f64 ? Float64Array : Float32Array;
  const run = f64 ? mod.mask64 : mod.mask32;
  for (let i = 0; i < n; i += block) {
    const len = Math.min(block, n - i);
    const yv = new View(buf, 0, len);
    const gv = new View(buf, BLOCK_BYTES, len);
    yv.set(y.subarray(i, i + len));
    gv.set(g.subarray(i, i + len));
    run(0, BLOCK_BYTES, len);
    out.set(gv, i);
  }
}

/**
 * `acc[j] += Σ_i g[i·m + j]` over `n` rows of `m` columns, each column summed in float64 in row
 * order (the bits of the plain loop `for i, for j: acc[j] += g[i·m + j]`): a bias's gradient over
 * the pixels or rows of a batch. By the SIMD kernel where it runs and `m` is a multiple of 4.
 * @example
 * columnSums(dz, nPix, Cout, dbAcc);
 */
export function columnSums(g: Data, n: number, m: number, acc: Float64Array): void {
  const mod = n * m >= MIN_SIMD && m % 4 === 0 ? simdModule() : null;
  if (!mod) {
    for (let p = 0; p < n * m; p += m) for (let j = 0; j < m; j++) acc[j] += g[p + j];
    return;
  }
  const f64 = g instanceof Float64Array;
  const rows = Math.max(1, Math.floor(BLOCK_BYTES / (m * g.BYTES_PER_ELEMENT)));
  const pa = (rows * m * g.BYTES_PER_ELEMENT + 15) & ~15;
  const buf = staging(mod.memory, pa + m * 8);
  const View = f64 ? Float64Array : Float32Array;
  const sums = new Float64Array(buf, pa, m);
  sums.set(acc);
  const run = f64 ? mod.colsum64 : mod.colsum32;
  for (let i = 0; i < n; i += rows) {
    const r = Math.min(rows, n - i);
    new View(buf, 0, r * m).set(g.subarray(i * m, (i + r) * m));
    run(0, r, m, pa);
  }
  acc.set(sums);
}

/** The module's memory buffer, grown first to at least `bytes` (growing detaches the old buffer, so it is read after). */
export function staging(memory: WebAssembly.Memory, bytes: number): ArrayBuffer {
  const have = memory.buffer.byteLength;
  if (have < bytes) memory.grow(Math.ceil((bytes - have) / 65536));
  return memory.buffer;
}

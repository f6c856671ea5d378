/**
 * Shared GEMM-like micro-kernels of the layers whose passes are matrix products (Conv2D's three
 * convolution passes, Dense's three matmuls): one strided product, register-blocked.
 * @module
 */
import type { Data } from '../tensor.js';
import { GEMM_WASM } from './gemm-wasm.js';

/**
 * The operands of {@link gemm}: `A(i, t) = a[a0 + i·ai + t·at]`, `B(t, j) = b[b0 + t·bt + j·bj]`,
 * `C(i, j) = c[c0 + i·ci + j]` (rows of `C` contiguous). Any of the transposes is a choice of
 * strides: `A` row-major `[n, k]` is `ai = k, at = 1`; its transpose `ai = 1, at = n`.
 */
export interface GemmOperands {
  /** Rows of `C` (and of `A`). */
  n: number;
  /** Columns of `C` (and of `B`). */
  m: number;
  /** Length of every dot product (columns of `A`, rows of `B`). */
  k: number;
  /** `A`'s values. */
  a: Data;
  /** Offset of `A(0, 0)`. */
  a0: number;
  /** Step between rows of `A`. */
  ai: number;
  /** Step along a row of `A`. */
  at: number;
  /** `B`'s values. */
  b: Data;
  /** Offset of `B(0, 0)`. */
  b0: number;
  /** Step between rows of `B` (along the dot product). */
  bt: number;
  /** Step between columns of `B`. */
  bj: number;
  /** `C`'s values. */
  c: Data;
  /** Offset of `C(0, 0)`. */
  c0: number;
  /** Step between rows of `C`. */
  ci: number;
}

/**
 * `C (+)= A B` over strided operands (see {@link GemmOperands}), by a 4×4 register block: each
 * step along `k` loads four values of `A` and four of `B` for sixteen multiply-adds, where a
 * row-times-four-columns loop loads five for four. Each dot product is summed in `t` order from
 * 0 in a JS number (float64, also for float32 operands), then added to `C` when `accumulate`,
 * else stored: a block's result does not depend on how `C` is tiled, so the edges (rows or
 * columns past a multiple of 4) give the same bits as the blocks. An {@link Epilogue} adds a
 * bias and applies relu to the finished `C` while its values are still in cache, with the bits
 * of a bias filled in first and a relu pass after: a layer makes no pass of its own for either.
 * @example
 * // C [2, 3] = A [2, 4] · B [4, 3], all row-major:
 * gemm({ n: 2, m: 3, k: 4, a: A, a0: 0, ai: 4, at: 1, b: B, b0: 0, bt: 3, bj: 1, c: C, c0: 0, ci: 3 }, false);
 */
export function gemm(o: GemmOperands, accumulate: boolean, epilogue?: Epilogue): void {
  if (backend === 'wasm' && (o.bj === 1 ? gemmWasm(o, accumulate, epilogue) : o.bt === 1 && byColumns(o, accumulate, epilogue))) return;
  if (epilogue?.bias) fillBias(o, epilogue.bias);
  gemmJs(o, accumulate || !!epilogue?.bias);
  if (epilogue?.relu) reluRows(o, 0);
}

/**
 * {@link gemm} of a `B` stored by columns (`bt = 1`, e.g. Dense's `dz Wᵀ`) by the SIMD kernels:
 * `B` transposed into the module's memory, above where {@link gemmWasm} copies `A` and `C`, which
 * then reads it there. The values are only moved, so the results are {@link gemmWasm}'s. False
 * (nothing done) when the module does not run, the operands are not of one element type, `A` or
 * `C` lies in the module's memory, or the product has no whole SIMD block.
 */
function byColumns(o: GemmOperands, accumulate: boolean, epilogue?: Epilogue): boolean {
  const mod = wasm();
  const { n, m, k, a, b, b0, bj, c } = o;
  const f64 = a instanceof Float64Array;
  const Same = f64 ? Float64Array : Float32Array;
  if (!mod || n < 4 || m < (f64 ? 4 : 8) || !(a instanceof Same && b instanceof Same && c instanceof Same)) return false;
  // An A or C already in the module's memory could lie where the transpose goes.
  if (a.buffer === mod.memory.buffer || c.buffer === mod.memory.buffer) return false;
  const esz = f64 ? 8 : 4;
  const align = (v: number) => (v + 15) & ~15;
  const at = align(((n - 1) * o.ai + (k - 1) * o.at + 1) * esz) + align(((n - 1) * o.ci + m) * esz) + align(m * esz);
  const have = mod.memory.buffer.byteLength;
  if (at + k * m * esz > have) mod.memory.grow(Math.ceil((at + k * m * esz - have) / 65536));
  const t = new Same(mod.memory.buffer, at, k * m);
  for (let j = 0; j < m; j++) for (let q = 0, src = b0 + j * bj; q < k; q++) t[q * m + j] = b[src + q];
  return gemmWasm({ ...o, b: t, b0: 0, bt: m, bj: 1 }, accumulate, epilogue);
}

/** What {@link gemm} does to `C` once the product is in: a bias added to every row, then relu. */
export interface Epilogue {
  /** `C(i, j) = (A B)(i, j) + bias[j]`: the product stored, not accumulated (`accumulate` false), the bias added as if `C` held it before. */
  bias?: Data;
  /** `C = max(C, 0)`, relu's rule (`v <= 0 ? 0 : v`: +0 for -0, NaN kept). */
  relu?: boolean;
}

/** Rows `0..n` of `C` set to the bias: the product is then accumulated onto it (the epilogue's bias where the module does not add it). */
function fillBias(o: GemmOperands, bias: Data): void {
  const { n, m, c, c0, ci } = o;
  for (let i = 0; i < n; i++) for (let r = c0 + i * ci, j = 0; j < m; j++) c[r + j] = bias[j];
}

/** {@link Epilogue.relu} on rows `from..n` of `C`'s `m` columns, where the SIMD module did not apply it. */
function reluRows(o: GemmOperands, from: number): void {
  const { n, m, c, c0, ci } = o;
  for (let i = from; i < n; i++) {
    for (let r = c0 + i * ci, e = r + m; r < e; r++) {
      const v = c[r];
      c[r] = v <= 0 ? 0 : v;
    }
  }
}

/**
 * Which implementation {@link gemm} (and the element-wise kernels of `elementwise.ts`) runs:
 * `'wasm'` (the SIMD kernels of `gemm.wat` where the operands allow, the default when this JS
 * engine has WebAssembly SIMD) or `'js'` (the pure-JS loops, everywhere). Returns the one in
 * force before; asking for `'wasm'` without SIMD keeps `'js'`.
 * @example
 * const before = setGemmBackend('js'); // e.g. to compare both paths
 * setGemmBackend(before);
 */
export function setGemmBackend(which: 'wasm' | 'js'): 'wasm' | 'js' {
  const before = backend;
  backend = which === 'wasm' && wasm() ? 'wasm' : 'js';
  return before;
}

/** The pure-JS {@link gemm}: one dot product per accumulator, summed in a JS number. */
export function gemmJs(o: GemmOperands, accumulate: boolean): void {
  const { n, m, k, a, a0, ai, at, b, b0, bt, bj, c, c0, ci } = o;
  const n4 = n - (n % 4);
  const m4 = m - (m % 4);
  for (let i = 0; i < n4; i += 4) {
    for (let j = 0; j < m4; j += 4) {
      let c00 = 0, c01 = 0, c02 = 0, c03 = 0;
      let c10 = 0, c11 = 0, c12 = 0, c13 = 0;
      let c20 = 0, c21 = 0, c22 = 0, c23 = 0;
      let c30 = 0, c31 = 0, c32 = 0, c33 = 0;
      let pa = a0 + i * ai;
      let pb = b0 + j * bj;
      for (let t = 0; t < k; t++, pa += at, pb += bt) {
        const x0 = a[pa];
        const x1 = a[pa + ai];
        const x2 = a[pa + 2 * ai];
        const x3 = a[pa + 3 * ai];
        const y0 = b[pb];
        const y1 = b[pb + bj];
        const y2 = b[pb + 2 * bj];
        const y3 = b[pb + 3 * bj];
        c00 += x0 * y0; c01 += x0 * y1; c02 += x0 * y2; c03 += x0 * y3;
        c10 += x1 * y0; c11 += x1 * y1; c12 += x1 * y2; c13 += x1 * y3;
        c20 += x2 * y0; c21 += x2 * y1; c22 += x2 * y2; c23 += x2 * y3;
        c30 += x3 * y0; c31 += x3 * y1; c32 += x3 * y2; c33 += x3 * y3;
      }
      const r = c0 + i * ci + j;
      if (accumulate) {
        put4(c, r, c00, c01, c02, c03, true);
        put4(c, r + ci, c10, c11, c12, c13, true);
        put4(c, r + 2 * ci, c20, c21, c22, c23, true);
        put4(c, r + 3 * ci, c30, c31, c32, c33, true);
      } else {
        put4(c, r, c00, c01, c02, c03, false);
        put4(c, r + ci, c10, c11, c12, c13, false);
        put4(c, r + 2 * ci, c20, c21, c22, c23, false);
        put4(c, r + 3 * ci, c30, c31, c32, c33, false);
      }
    }
    if (m4 < m) edge(o, i, i + 4, m4, m, accumulate);
  }
  if (n4 < n) edge(o, n4, n, 0, m, accumulate);
}

function put4(c: Data, r: number, v0: number, v1: number, v2: number, v3: number, accumulate: boolean): void {
  if (accumulate) {
    c[r] += v0;
    c[r + 1] += v1;
    c[r + 2] += v2;
    c[r + 3] += v3;
  } else {
    c[r] = v0;
    c[r + 1] = v1;
    c[r + 2] = v2;
    c[r + 3] = v3;
  }
}

/** Rows `[i0, i1)` × columns `[j0, j1)` of {@link gemm}, one dot product at a time, in the same `t` order; a stored product takes `bias` (the sum of both rounded once, as when accumulated onto it). */
function edge(o: GemmOperands, i0: number, i1: number, j0: number, j1: number, accumulate: boolean, bias?: Data): void {
  const { k, a, a0, ai, at, b, b0, bt, bj, c, c0, ci } = o;
  for (let i = i0; i < i1; i++) {
    for (let j = j0; j < j1; j++) {
      let s = 0;
      for (let t = 0, pa = a0 + i * ai, pb = b0 + j * bj; t < k; t++, pa += at, pb += bt) s += a[pa] * b[pb];
      const r = c0 + i * ci + j;
      if (accumulate) c[r] += s;
      else c[r] = bias ? s + bias[j] : s;
    }
  }
}

/** The instantiated SIMD module of `gemm.wat`: its one memory, the GEMM blocks, and the element-wise relu kernels (byte offsets into the memory). */
export interface GemmModule {
  /** The memory every kernel reads and writes; operands are copied in and out. */
  memory: WebAssembly.Memory;
  /** The 4×4 float64 block (see `gemm.wat`). */
  gemm64: (n: number, m: number, k: number, pa: number, ai: number, at: number, pb: number, bt: number, pc: number, ci: number, acc: number) => void;
  /** The 4×8 float32 block, summed in float32 lanes. */
  gemm32: GemmModule['gemm64'];
  /** The {@link Epilogue} on `n` rows of `m` float64 values at byte `pc`: the bias (`m` values at byte `pb`) added when `bias`, relu when `relu`. */
  epi64: (pc: number, n: number, m: number, pb: number, bias: number, relu: number) => void;
  /** {@link GemmModule.epi64} on float32 values. */
  epi32: GemmModule['epi64'];
  /** `count` output pixels of max pooling over `C` float64 channels of the image staged at byte 0 (see `gemm.wat`), each window `step` elements after the last: the max to byte `py`, its element index plus `base` to byte `pa` (int32), `C` values on per pixel. */
  pool64: (first: number, rowStride: number, nr: number, nc: number, C: number, py: number, pa: number, base: number, count: number, step: number) => void;
  /** {@link GemmModule.pool64} on float32 values. */
  pool32: GemmModule['pool64'];
  /** `acc[j] += Σ_i g[i, j]` over `n` rows of `m` float64 values at byte `pg`, each column in row order; `acc` (float64) at byte `pa`. */
  colsum64: (pg: number, n: number, m: number, pa: number) => void;
  /** {@link GemmModule.colsum64} over float32 rows, summed in float64. */
  colsum32: GemmModule['colsum64'];
  /** `count` runs of three int32 at byte `pt` (destination byte, source byte, length): `dst[q] += src[q]` over float64 values, the runs in order. */
  addruns64: (pt: number, count: number) => void;
  /** {@link GemmModule.addruns64} on float32 values. */
  addruns32: GemmModule['addruns64'];
  /** `count` groups of six int32 at byte `pt` (destination byte, source byte, length in bytes, a multiple of 4; runs, destination step, source step): run `r` of a group copies the bytes from source `+ r·step` to destination `+ r·step`. */
  copyruns: GemmModule['addruns64'];
  /** `x = max(x, +0)` in place on `n` float64 values at byte `p`. */
  relu64: (p: number, n: number) => void;
  /** {@link GemmModule.relu64} on float32 values. */
  relu32: GemmModule['relu64'];
  /** `g = y > 0 ? g : +0` in place on `n` float64 values of `g` at byte `pg`, `y`'s at byte `py`. */
  mask64: (py: number, pg: number, n: number) => void;
  /** {@link GemmModule.mask64} on float32 values. */
  mask32: GemmModule['mask64'];
}

/** The SIMD module when the `'wasm'` backend is in force (see {@link setGemmBackend}), else null: the caller then runs its JS loop. */
export function simdModule(): GemmModule | null {
  return backend === 'wasm' ? wasm() : null;
}

let instance: GemmModule | null | undefined;
let backend: 'wasm' | 'js' = wasm() ? 'wasm' : 'js';

function wasm(): GemmModule | null {
  if (instance !== undefined) return instance;
  try {
    // Synchronous compile: the module is under the 4 KiB that browsers allow on the main thread.
    const inst = new WebAssembly.Instance(new WebAssembly.Module(GEMM_WASM as BufferSource), {});
    instance = inst.exports as unknown as GemmModule;
  } catch {
    instance = null;
  }
  return instance;
}

/**
 * {@link gemm} by the SIMD kernels: the spans of `A`, `B` (and `C`) copied into the module's one
 * memory (grown as needed), the 4-row blocks of whole vector pairs computed there, `C`'s span
 * copied back, the edge rows and columns then done in JS on the caller's arrays. An operand
 * that is already a view of the module's memory (a stage's, as Conv2D's gathered patch rows),
 * lying above the bytes the others are copied into, is read (`C` also written) where it lies.
 * The float64 kernel sums each dot product in the order of {@link gemmJs}, so its results are
 * the same bits; the float32 one sums in float32 lanes. False (nothing done) when the operands
 * are not all of one element type.
 */
export function gemmWasm(o: GemmOperands, accumulate: boolean, epilogue?: Epilogue): boolean {
  const mod = wasm();
  const { n, m, k, ai, at, bt, ci } = o;
  if (!mod || o.bj !== 1 || k === 0) return false;
  const f64 = o.a instanceof Float64Array;
  const bias = epilogue?.bias;
  const Same = f64 ? Float64Array : Float32Array;
  if (!(o.b instanceof Same && o.c instanceof Same && (f64 || o.a instanceof Float32Array) && (!bias || bias instanceof Same))) return false;
  const width = f64 ? 4 : 8;
  const n4 = n - (n % 4);
  const mw = m - (m % width);
  // The epilogue runs in the module when the kernel's rows are the whole of C's span; else the bias is filled in first (and the product accumulated onto it) and relu applied in JS after.
  const inModule = !!epilogue && ci === m && mw === m && n4 > 0;
  let acc = accumulate;
  if (bias && !inModule) {
    fillBias(o, bias);
    acc = true;
  }
  if (n4 === 0 || mw === 0) {
    gemmJs(o, acc);
    if (epilogue?.relu) reluRows(o, 0);
    return true;
  }
  const esz = f64 ? 8 : 4;
  const aLen = (n - 1) * ai + (k - 1) * at + 1;
  const bLen = (k - 1) * bt + m;
  const cLen = (n - 1) * ci + m;
  const align = (v: number) => (v + 15) & ~15;
  const byteAt = (d: Data, i: number) => (d.buffer === mod.memory.buffer ? d.byteOffset + i * esz : -1);
  let pa = byteAt(o.a, o.a0);
  let pb = byteAt(o.b, o.b0);
  let pc = byteAt(o.c, o.c0);
  // The copies from byte 0: A's span, B's, C's and the bias row, each of an operand not read where it lies.
  const copies = (copyA: boolean, copyB: boolean, copyC: boolean) => {
    const qb = copyA ? align(aLen * esz) : 0;
    const qc = qb + (copyB ? align(bLen * esz) : 0);
    return [0, qb, qc, qc + (copyC ? align(cLen * esz) : 0)];
  };
  const lowest = Math.min(...[pa, pb, pc].map((p) => (p < 0 ? Infinity : p)));
  // An operand in the module's memory below the copies' end would be overwritten by them (and one below a growth's end detached): every operand is then
  // copied from a snapshot, C written back to its own bytes at the end. Growth is thus only ever needed with no operand in the module's memory.
  let writeBack: { at: number; length: number } | null = null;
  if (lowest < copies(pa < 0, pb < 0, pc < 0)[3] + m * esz) {
    const mem = mod.memory.buffer;
    if (o.c.buffer === mem) writeBack = { at: o.c.byteOffset, length: o.c.length };
    o = { ...o, a: o.a.buffer === mem ? o.a.slice() : o.a, b: o.b.buffer === mem ? o.b.slice() : o.b, c: o.c.buffer === mem ? o.c.slice() : o.c };
    pa = pb = pc = -1;
  }
  const [qa, qb, qc, pbias] = copies(pa < 0, pb < 0, pc < 0);
  const need = pbias + m * esz;
  const have = mod.memory.buffer.byteLength;
  if (need > have) mod.memory.grow(Math.ceil((need - have) / 65536));
  const { a, a0, b, b0, c, c0 } = o;
  const buf = mod.memory.buffer;
  const View = f64 ? Float64Array : Float32Array;
  if (pa < 0) {
    pa = qa;
    new View(buf, pa, aLen).set(a.subarray(a0, a0 + aLen));
  }
  if (pb < 0) {
    pb = qb;
    new View(buf, pb, bLen).set(b.subarray(b0, b0 + bLen));
  }
  const inPlace = pc >= 0;
  if (!inPlace) pc = qc;
  const cView = new View(buf, pc, cLen);
  // With accumulate the kernel adds onto C's values; without, the gaps between rows (and the edge columns, done in JS below) must still come back unchanged; without either, the kernel's rows cover C's span but for the edge rows, which the JS edge below overwrites.
  if (!inPlace && (acc || ci !== m || mw !== m)) cView.set(c.subarray(c0, c0 + cLen));
  (f64 ? mod.gemm64 : mod.gemm32)(n4, mw, k, pa, ai * esz, at * esz, pb, bt * esz, pc, ci * esz, acc ? 1 : 0);
  if (inModule) {
    if (bias) new View(buf, pbias, m).set(bias.subarray(0, m));
    (f64 ? mod.epi64 : mod.epi32)(pc, n4, m, pbias, bias ? 1 : 0, epilogue.relu ? 1 : 0);
  }
  if (!inPlace) c.set(cView, c0);
  if (mw < m) edge(o, 0, n4, mw, m, acc);
  if (n4 < n) edge(o, n4, n, 0, m, acc, inModule ? bias : undefined);
  if (epilogue?.relu) reluRows(o, inModule ? n4 : 0);
  if (writeBack) new View(mod.memory.buffer, writeBack.at, writeBack.length).set(o.c);
  return true;
}

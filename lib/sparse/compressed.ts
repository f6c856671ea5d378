/**
 * Compressed Jacobians (Curtis–Powell–Reid): forward mode pushes one combined tangent per colour of
 * columns through the dual-number `jvp` (`T` colours per pass, in blocks sized to a byte budget) and
 * reads each entry back from the one row position its colour landed in; reverse mode pulls one
 * combined cotangent per colour of rows through the `vjp` (stacked VJPs) and reads entries back
 * from the input (or parameter) cotangent. Both work on any {@link Differentiable}, given a
 * sparsity pattern that contains the Jacobian's non-zeros and a colouring valid for it; with the
 * full pattern and one colour per column they are the dense builders of `lib/jacobian.ts`.
 * @module
 */
import { ShapeError, fmtShape } from '../errors.js';
import { getMemoryBudget } from '../memory.js';
import type { Differentiable, Forward, ForwardOptions } from '../layers/layer.js';
import { type DType, type Data, type Tensor, allocData, assertFinite, assertShape, bytesPerElement, contiguous, dtypeOf, sizeOf, zeros } from '../tensor.js';
import { type Colouring, greedyColumnColouring, greedyRowColouring, trivialColouring } from './colouring.js';
import { CsrMatrix, SparseJacobian } from './csr.js';
import { SparsityPattern } from '../structure.js';

/** Options of the compressed builders. */
export interface CompressedOptions<S = unknown> extends ForwardOptions {
  /** Differentiate w.r.t. the input (default) or parameter `k` of `f.params`. */
  wrt?: 'input' | number;
  /**
   * Where the Jacobian may be non-zero: one pattern per sample, or one for every sample. Default:
   * the full pattern (no compression).
   */
  pattern?: SparsityPattern | readonly SparsityPattern[];
  /** A colouring valid for every sample's pattern (of columns in forward mode, of rows in reverse). Default: greedy CPR on the union. */
  colouring?: Colouring;
  /** Tangents per `jvp` pass; default: as many colours as fit in `blockBytes`. */
  tangents?: number;
  /** Bytes one block of tangents may take (seed plus every layer's tangent output). Default 256 MiB. */
  blockBytes?: number;
  /** A forward pass of `f` on `x` already run: reused instead of running another. */
  forward?: Forward<S>;
  /** Drop entries that came out exactly zero (value-dependent zeros: ReLU, pooling losers). Default true. */
  dropZeros?: boolean;
  /** Budget for the compressed buffer (all colours of all rows, kept when it fits in a quarter of it). Default {@link getMemoryBudget}. */
  memoryBudget?: number;
  /** Called after each pass with (colours done, colours in all). */
  onProgress?: (done: number, total: number) => void;
}

/** Default byte budget of one block of tangents. */
export const DEFAULT_BLOCK_BYTES = 256 * 1024 ** 2;

/** Bytes one tangent takes through `f` for a batch of `B`: the seed, plus every layer's tangent output. */
export function bytesPerTangent(f: Differentiable, B: number, dtype: DType, wrt: 'input' | number): number {
  const outs = f.layers ? f.layers.reduce((s, l) => s + sizeOf(l.outputShape), 0) : sizeOf(f.outputShape);
  const seed = wrt === 'input' ? B * sizeOf(f.inputShape) : f.params[wrt].value.size;
  return (seed + B * outs) * bytesPerElement(dtype);
}

/** Tangents per pass: the colours that fit in `blockBytes`, at least 1, at most all of them. */
export function blockWidthFor(colours: number, perTangent: number, blockBytes = DEFAULT_BLOCK_BYTES, requested?: number): number {
  if (requested !== undefined) {
    if (!Number.isInteger(requested) || requested <= 0) throw new ShapeError(`tangents: expected a positive integer block width, received ${requested}`);
    return Math.min(requested, Math.max(colours, 1));
  }
  return Math.max(1, Math.min(colours, Math.floor(blockBytes / Math.max(perTangent, 1))));
}

/** The per-sample patterns, checked, one per sample. */
function patternsFor(opts: CompressedOptions, B: number, rows: number, cols: number): SparsityPattern[] {
  const p = opts.pattern ?? SparsityPattern.full(rows, cols);
  const list = p instanceof SparsityPattern ? new Array<SparsityPattern>(B).fill(p) : p.slice();
  if (list.length !== B) throw new ShapeError(`compressed Jacobian: expected ${B} per-sample patterns (one per sample), received ${list.length}`);
  for (const q of list) {
    if (q.rows !== rows || q.cols !== cols) throw new ShapeError(`compressed Jacobian: expected patterns of ${rows} × ${cols} (outputs × columns), received ${q.rows} × ${q.cols}`);
  }
  return list;
}

/** Distinct patterns among the samples' (by identity): a shared structural pattern is ordered once. */
function distinct(ps: SparsityPattern[]): SparsityPattern[] {
  return [...new Set(ps)];
}

/** A row's entries in increasing colour: lets each block read its entries with a cursor per row, O(nnz) in all. */
function colourOrder(p: SparsityPattern, colours: Int32Array): Int32Array {
  const order = new Int32Array(p.nnz);
  for (let k = 0; k < p.nnz; k++) order[k] = k;
  for (let r = 0; r < p.rows; r++) {
    const a = p.rowPtr[r];
    const b = p.rowPtr[r + 1];
    let sorted = true;
    for (let k = a + 1; k < b && sorted; k++) if (colours[p.colIdx[k]] < colours[p.colIdx[k - 1]]) sorted = false;
    if (sorted) continue;
    if (b - a <= 16) {
      // Insertion sort: rows of window patterns are short, and a comparator call per pair would dominate.
      for (let k = a + 1; k < b; k++) {
        const v = order[k];
        const cv = colours[p.colIdx[v]];
        let m = k - 1;
        while (m >= a && colours[p.colIdx[order[m]]] > cv) {
          order[m + 1] = order[m];
          m--;
        }
        order[m + 1] = v;
      }
    } else {
      order.subarray(a, b).sort((x, y) => colours[p.colIdx[x]] - colours[p.colIdx[y]]);
    }
  }
  return order;
}

/** Copies a block of `Tc` tangent columns (`[rows, T]`) into columns `c0..c0+Tc` of the compressed buffer (`[rows, C]`). */
function copyBlock(d: Data, off: number, T: number, comp: Float64Array, C: number, c0: number, Tc: number, rows: number): void {
  for (let r = 0; r < rows; r++) {
    const src = off + r * T;
    const dst = r * C + c0;
    for (let t = 0; t < Tc; t++) comp[dst + t] = d[src + t];
  }
}

/** Decompression: entry `(r, c)` is the compressed row `r` at `c`'s colour. */
function gatherEntries(p: SparsityPattern, comp: Float64Array, base: number, C: number, colours: Int32Array, out: Float64Array): void {
  const { rowPtr, colIdx } = p;
  for (let r = 0; r < p.rows; r++) {
    const o = base + r * C;
    for (let k = rowPtr[r]; k < rowPtr[r + 1]; k++) out[k] = comp[o + colours[colIdx[k]]];
  }
}

/** Checks what both compressed modes are given (a finite batch `x` of `f`'s input, a `wrt` that names the input or a parameter) and derives the sizes they use. */
function checkArgs<S>(name: string, f: Differentiable<S>, x: Tensor, wrt: 'input' | number): { B: number; dtype: DType; colShape: readonly number[]; nCols: number; nOut: number } {
  assertShape(x, [null, ...f.inputShape], `${name} x`);
  assertFinite(x, `${name} x`);
  if (wrt !== 'input' && !f.params[wrt]) throw new ShapeError(`${name}: expected wrt to be 'input' or a parameter index in 0..${f.params.length - 1}, received ${wrt}`);
  const colShape = wrt === 'input' ? f.inputShape : f.params[wrt].value.shape;
  return { B: x.shape[0], dtype: dtypeOf(x), colShape, nCols: sizeOf(colShape), nOut: sizeOf(f.outputShape) };
}

/** The indices a colouring colours, bucketed by colour (a counting sort): colour `c`'s are `byColour[start[c] .. start[c + 1])`, ascending. */
function bucketByColour(col: Colouring): { start: Int32Array; byColour: Int32Array } {
  const n = col.colours.length;
  const start = new Int32Array(col.count + 1);
  for (let j = 0; j < n; j++) start[col.colours[j] + 1]++;
  for (let c = 0; c < col.count; c++) start[c + 1] += start[c];
  const byColour = new Int32Array(n);
  const fill = start.slice(0, col.count);
  for (let j = 0; j < n; j++) byColour[fill[col.colours[j]]++] = j;
  return { start, byColour };
}

/** Builds the CSR of a pattern with values, dropping exact zeros when asked. */
function toCsr(p: SparsityPattern, vals: Float64Array, dtype: DType, dropZeros: boolean): CsrMatrix {
  if (!dropZeros) {
    const v = allocData(p.nnz, dtype);
    v.set(vals);
    return new CsrMatrix(p.rows, p.cols, p.rowPtr.slice(), p.colIdx.slice(), v);
  }
  let nnz = 0;
  for (let k = 0; k < p.nnz; k++) if (vals[k] !== 0) nnz++;
  const rowPtr = new Int32Array(p.rows + 1);
  const colIdx = new Int32Array(nnz);
  const values = allocData(nnz, dtype);
  let e = 0;
  for (let r = 0; r < p.rows; r++) {
    for (let k = p.rowPtr[r]; k < p.rowPtr[r + 1]; k++) {
      if (vals[k] === 0) continue;
      colIdx[e] = p.colIdx[k];
      values[e++] = vals[k];
    }
    rowPtr[r + 1] = e;
  }
  return new CsrMatrix(p.rows, p.cols, rowPtr, colIdx, values);
}

/**
 * Compressed forward mode: one tangent per colour of columns, `T` colours per `jvp` pass, then
 * decompression: entry `(r, c)` is row `r` of the tangent of `c`'s colour, since no other column
 * of that colour touches row `r`.
 * @example
 * const conv = new Conv2D({ filters: 32, kernel_size: 3 }).build([64, 64, 3]);
 * const P = layerInputPattern(conv);
 * const J = compressedForward(conv, x, { pattern: P, colouring: kronColumnColouring(layerInputKron(conv)) }); // 27 colours, not 12 288
 */
export function compressedForward<S>(f: Differentiable<S>, x: Tensor, opts: CompressedOptions<S> = {}): SparseJacobian {
  const wrt = opts.wrt ?? 'input';
  const { B, dtype, colShape, nCols, nOut } = checkArgs('compressedForward', f, x, wrt);
  const nIn = sizeOf(f.inputShape);
  const pats = patternsFor(opts, B, nOut, nCols);
  const col = opts.colouring ?? (opts.pattern ? greedyColumnColouring(SparsityPattern.union(distinct(pats))) : trivialColouring(nCols));
  if (col.colours.length !== nCols) throw new ShapeError(`compressedForward: expected a colouring of ${nCols} columns, received ${col.colours.length}`);
  const C = col.count;
  const fwd = opts.forward ?? f.forward(x, opts);
  const T = blockWidthFor(C, bytesPerTangent(f, B, dtype, wrt), opts.blockBytes, opts.tangents);
  // Columns bucketed by colour, so that seeding a block touches only its columns.
  const { start, byColour } = bucketByColour(col);

  // The compressed Jacobian (every colour of every row) is about the size of the pattern: keep it whole when it fits, and decompress each entry by one lookup;
  // otherwise decompress block by block with a cursor per row over the row's entries in colour order.
  const whole = B * nOut * C * 8 <= (opts.memoryBudget ?? getMemoryBudget()) / 4;
  const comp = whole ? new Float64Array(B * nOut * C) : null;
  const orders = whole ? null : new Map(distinct(pats).map((p) => [p, colourOrder(p, col.colours)]));
  const vals = whole ? [] : pats.map((p) => new Float64Array(p.nnz));
  const cursors = whole ? [] : pats.map((p) => p.rowPtr.slice(0, p.rows));
  const seedFor = (width: number) => zeros(wrt === 'input' ? [B, ...colShape, width] : [...colShape, width], dtype);
  let seed = seedFor(T);
  for (let c0 = 0; c0 < C; c0 += T) {
    const Tc = Math.min(T, C - c0);
    // The last block carries only the colours left: no pass pushes padding tangents.
    if (Tc !== seed.shape[seed.shape.length - 1]) seed = seedFor(Tc);
    else seed.data.fill(0);
    for (let c = c0; c < c0 + Tc; c++) {
      for (let q = start[c]; q < start[c + 1]; q++) {
        const j = byColour[q];
        if (wrt === 'input') for (let b = 0; b < B; b++) seed.data[(b * nIn + j) * Tc + (c - c0)] = 1;
        else seed.data[j * Tc + (c - c0)] = 1;
      }
    }
    const paramDots: (Tensor | null)[] | null = wrt === 'input' ? null : f.params.map((_, k) => (k === wrt ? seed : null));
    const yDot = contiguous(f.jvp(fwd.saved, { xDot: wrt === 'input' ? seed : null, paramDots, T: Tc }));
    assertShape(yDot, [B, ...f.outputShape, Tc], 'compressedForward jvp output');
    const d = yDot.data;
    const off = yDot.offset;
    if (comp) {
      copyBlock(d, off, Tc, comp, C, c0, Tc, B * nOut);
    } else {
      const cEnd = c0 + Tc;
      for (let b = 0; b < B; b++) {
        const p = pats[b];
        const order = orders!.get(p)!;
        const cur = cursors[b];
        const v = vals[b];
        const colours = col.colours;
        for (let r = 0; r < p.rows; r++) {
          const end = p.rowPtr[r + 1];
          const base = off + (b * nOut + r) * Tc - c0;
          let e = cur[r];
          while (e < end) {
            const k = order[e];
            const cc = colours[p.colIdx[k]];
            if (cc >= cEnd) break;
            v[k] = d[base + cc];
            e++;
          }
          cur[r] = e;
        }
      }
    }
    opts.onProgress?.(c0 + Tc, C);
  }
  if (comp) {
    for (let b = 0; b < B; b++) {
      const p = pats[b];
      const v = new Float64Array(p.nnz);
      gatherEntries(p, comp, b * nOut * C, C, col.colours, v);
      vals.push(v);
    }
  }
  const dropZeros = opts.dropZeros ?? true;
  const J = new SparseJacobian(
    pats.map((p, b) => toCsr(p, vals[b], dtype, dropZeros)),
    f.outputShape,
    colShape,
    wrt === 'input' ? 'input' : 'param',
    dtype,
    wrt === 'input' ? 'w.r.t. input' : `w.r.t. ${f.params[wrt].name}`,
  );
  return J;
}

/**
 * Compressed reverse mode (stacked VJPs with coloured cotangents): one cotangent per colour of
 * rows, each a `vjp`; entry `(r, c)` is read from the input (or parameter) cotangent at `c`, since
 * no other row of that colour touches column `c`. W.r.t. the input, a row colour is seeded in every
 * sample at once (samples are independent); w.r.t. a parameter, which the batch shares, the rows of
 * all samples are coloured together.
 * @example
 * const head = new Dense({ units: 1, activation: 'sigmoid' }).build([256]);
 * const J = compressedReverse(head, x, { pattern: SparsityPattern.full(1, 256) }); // one VJP, not 256 JVP columns
 */
export function compressedReverse<S>(f: Differentiable<S>, x: Tensor, opts: CompressedOptions<S> = {}): SparseJacobian {
  const wrt = opts.wrt ?? 'input';
  const { B, dtype, colShape, nCols, nOut } = checkArgs('compressedReverse', f, x, wrt);
  const pats = patternsFor(opts, B, nOut, nCols);
  // W.r.t. a parameter the cotangents of all samples sum into one gradient: colour the B·|out| rows together.
  const stackedRows = wrt === 'input' ? nOut : B * nOut;
  let col = opts.colouring;
  if (!col) {
    if (!opts.pattern) col = trivialColouring(stackedRows);
    else if (wrt === 'input') col = greedyRowColouring(SparsityPattern.union(distinct(pats)));
    else col = greedyRowColouring(stackPatterns(pats));
  }
  if (col.colours.length !== stackedRows) throw new ShapeError(`compressedReverse: expected a colouring of ${stackedRows} rows, received ${col.colours.length}`);
  const C = col.count;
  const fwd = opts.forward ?? f.forward(x, opts);
  const { start, byColour } = bucketByColour(col);
  const vals = pats.map((p) => new Float64Array(p.nnz));
  const dy = zeros([B, ...f.outputShape], dtype);
  for (let c = 0; c < C; c++) {
    dy.data.fill(0);
    for (let q = start[c]; q < start[c + 1]; q++) {
      const r = byColour[q];
      if (wrt === 'input') for (let b = 0; b < B; b++) dy.data[b * nOut + r] = 1;
      else dy.data[r] = 1;
    }
    const ct = f.vjp(fwd.saved, dy);
    const g = contiguous(wrt === 'input' ? ct.dx : ct.dParams[wrt]);
    const gd = g.data;
    for (let q = start[c]; q < start[c + 1]; q++) {
      const rr = byColour[q];
      const samples = wrt === 'input' ? B : 1;
      for (let s = 0; s < samples; s++) {
        const b = wrt === 'input' ? s : Math.floor(rr / nOut);
        const r = wrt === 'input' ? rr : rr - b * nOut;
        const p = pats[b];
        const base = g.offset + (wrt === 'input' ? b * nCols : 0);
        const v = vals[b];
        for (let k = p.rowPtr[r]; k < p.rowPtr[r + 1]; k++) v[k] = gd[base + p.colIdx[k]];
      }
    }
    opts.onProgress?.(c + 1, C);
  }
  const dropZeros = opts.dropZeros ?? true;
  return new SparseJacobian(
    pats.map((p, b) => toCsr(p, vals[b], dtype, dropZeros)),
    f.outputShape,
    colShape,
    wrt === 'input' ? 'input' : 'param',
    dtype,
    wrt === 'input' ? 'w.r.t. input (reverse)' : `w.r.t. ${f.params[wrt].name} (reverse)`,
  );
}

/** The samples' patterns stacked into one `B·rows × cols` pattern. */
export function stackPatterns(ps: readonly SparsityPattern[]): SparsityPattern {
  const rows = ps.reduce((s, p) => s + p.rows, 0);
  const nnz = ps.reduce((s, p) => s + p.nnz, 0);
  const rowPtr = new Int32Array(rows + 1);
  const colIdx = new Int32Array(nnz);
  let r0 = 0;
  let e0 = 0;
  for (const p of ps) {
    for (let r = 0; r < p.rows; r++) rowPtr[r0 + r + 1] = e0 + p.rowPtr[r + 1];
    colIdx.set(p.colIdx.subarray(0, p.nnz), e0);
    r0 += p.rows;
    e0 += p.nnz;
  }
  if (ps.length && ps.some((p) => p.cols !== ps[0].cols)) throw new ShapeError(`stack: expected patterns with one column count, received ${fmtShape(ps.map((p) => p.cols))}`);
  return new SparsityPattern(rows, ps[0]?.cols ?? 0, rowPtr, colIdx);
}

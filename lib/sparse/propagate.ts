/**
 * Sparse forward accumulation: the Jacobian of a stage as the chain rule over its layers,
 * `J = L_n ⋯ L_2 L_1`, where every activation carries only its non-zero derivative parts (a sparse
 * tangent row over the stage's input columns) instead of a dense block of `T` tangents. Nothing
 * structurally zero, and nothing value-dependently zero (a ReLU that is off, a pooling window's
 * losers, a dropped unit), is ever computed or stored.
 *
 * Each layer contributes its local Jacobian `L_k` by rows, as factors it states itself through its
 * `localJacobian` hook (Conv2D and Dense: their own matrix, then their activation's, read off the
 * activation's dual-number rule; MaxPooling2D: its winners), or, for a layer without the hook, by
 * compressed forward mode through its own `jvp` (`lib/sparse/hooks.ts`), decompressed and stripped
 * of exact zeros. No derivative rule is written here.
 *
 * Layers whose rows hold at most one entry (selections and diagonal scalings) are composed as an
 * index map with a scale, never materialized; a layer with fuller rows materializes its tangent
 * rows by sparse accumulation. Only rows that some later row needs are built: a backward sweep over
 * the local patterns marks them first (max pooling keeps one row in four, a dead ReLU none).
 *
 * Cost: `Σ_k Σ_{needed rows} (local entries × tangent entries of the rows they combine)`; memory:
 * the tangent rows of the widest materialized level plus the result. For the cats-vs-dogs conv
 * stage at 224×224×3 this is a few seconds and well under a gigabyte, where the dense Jacobian
 * would take 52.1 GB (48.5 GiB) at B = 1 in float64, and 417 GB at B = 8.
 * @module
 */
import { ConfigError, ShapeError } from '../errors.js';
import { type Differentiable, type Forward, type ForwardOptions, type LayerPass, type LocalJacobian, describeOf } from '../layers/layer.js';
import { type Data, type Tensor, allocData, assertFinite, assertShape, dtypeOf, sizeOf } from '../tensor.js';
import { CsrMatrix, SparseJacobian } from './csr.js';
import { localJacobianOf } from './hooks.js';
import { ownerOf } from './pattern.js';

/**
 * The leaf layers of a recorded pass of `f` (a layer, or a stage whose forward saved
 * `perLayer` residuals and `outputs`), with their residuals, inputs and outputs; null when a
 * stage's saved pass has not that form.
 */
export function layerPasses(f: Differentiable, x: Tensor, fwd: Forward<unknown>): LayerPass[] | null {
  if (!f.layers) return [{ layer: f, saved: fwd.saved, x, y: fwd.y }];
  const layers = f.layers;
  const saved = fwd.saved as { perLayer?: unknown[]; outputs?: Tensor[] } | null;
  if (!saved || !Array.isArray(saved.perLayer) || !Array.isArray(saved.outputs) || saved.perLayer.length !== layers.length) return null;
  const out: LayerPass[] = [];
  let h = x;
  for (let i = 0; i < layers.length; i++) {
    const inner = layerPasses(layers[i], h, { y: saved.outputs[i], saved: saved.perLayer[i] });
    if (!inner) return null;
    out.push(...inner);
    h = saved.outputs[i];
  }
  return out;
}

/** Row storage that grows by half when full. */
class RowWriter {
  colIdx: Int32Array;
  values: Float64Array;
  n = 0;
  /** True once a result took these arrays over ({@link RowWriter.finish}): the writer is not to be reused. */
  handedOver = false;
  readonly rowPtr: Int32Array;
  constructor(rows: number, capacity: number) {
    this.rowPtr = new Int32Array(rows + 1);
    this.colIdx = new Int32Array(Math.max(16, capacity));
    this.values = new Float64Array(Math.max(16, capacity));
  }
  /**
   * Room for `extra` more entries. When full, the new capacity is projected from the entries per
   * row so far (`done` of `total` rows), so that a level grows once or twice, not a dozen times:
   * each growth briefly holds the old and the new arrays.
   */
  ensure(extra: number, done: number, total: number): void {
    const need = this.n + extra;
    if (need <= this.colIdx.length) return;
    if (need > 2 ** 31 - 1) throw new ShapeError(`sparse propagation: a per-sample Jacobian of more than 2^31 - 1 entries cannot be indexed (needed ${need})`);
    const projected = done >= total / 100 ? Math.ceil((need / done) * total * 1.05) : 0;
    const cap = Math.min(2 ** 31 - 1, Math.max(need, projected > 0 ? Math.max(projected, Math.ceil(this.colIdx.length * 1.1)) : Math.ceil(this.colIdx.length * 1.5)));
    const c = new Int32Array(cap);
    c.set(this.colIdx.subarray(0, this.n));
    const v = new Float64Array(cap);
    v.set(this.values.subarray(0, this.n));
    this.colIdx = c;
    this.values = v;
  }
  /**
   * The finished matrix: with `own`, in arrays of its own of the exact size (a result, kept); else
   * views of the writer's arrays (a level read once by the next and overwritten by the next sample).
   */
  finish(rows: number, cols: number, dtype: 'float64' | 'float32', own: boolean): CsrMatrix {
    const n = this.n;
    if (!own) return new CsrMatrix(rows, cols, this.rowPtr, this.colIdx.subarray(0, n), this.values.subarray(0, n));
    // A result that fills most of the writer's arrays takes them over rather than a copy: copying would hold the largest matrix twice at the peak.
    if (dtype === 'float64' && n >= 0.75 * this.colIdx.length) {
      this.handedOver = true;
      return new CsrMatrix(rows, cols, this.rowPtr, this.colIdx.subarray(0, n), this.values.subarray(0, n));
    }
    const values: Data = dtype === 'float32' ? Float32Array.from(this.values.subarray(0, n)) : this.values.slice(0, n);
    return new CsrMatrix(rows, cols, this.rowPtr.slice(), this.colIdx.slice(0, n), values);
  }
}

/** Options of {@link propagateJacobian}. */
export interface PropagateOptions extends ForwardOptions {
  /** Differentiate w.r.t. the input (default) or `f.params[k]`. */
  wrt?: 'input' | number;
  /** A forward pass of `f` on `x` already run (reused). */
  forward?: Forward<unknown>;
  /** Sort each row's columns (default true). */
  sortRows?: boolean;
  /** Called after each layer of each sample with (steps done, steps in all). */
  onProgress?: (done: number, total: number) => void;
}

/** What the backward marking found, per sample: rows needed at each layer (for the planner and the report). */
export interface NeededRows {
  /** `counts[k]`: rows of layer `k`'s output that some later row needs. */
  counts: number[];
}

/**
 * The Jacobian of a known layer or a stack of them (`Sequential`) by sparse forward accumulation,
 * w.r.t. the input or one parameter. Same values as the dense builders (up to the order of
 * summation), stored as a {@link SparseJacobian}.
 * @throws ConfigError when `f`'s structure is not made of the known layers.
 * @example
 * const [model_0] = catsVsDogsCnn({ side: 224 }).split([9]);
 * const J = propagateJacobian(model_0, x); // [1, 26, 26, 64, 224, 224, 3], seconds, not 48.5 GiB
 */
export function propagateJacobian(f: Differentiable, x: Tensor, opts: PropagateOptions = {}): SparseJacobian {
  assertShape(x, [null, ...f.inputShape], 'propagateJacobian x');
  assertFinite(x, 'propagateJacobian x');
  const fwd = opts.forward ?? f.forward(x, opts);
  const passes = layerPasses(f, x, fwd);
  if (!passes) throw new ConfigError(`propagateJacobian: expected a layer or a stage whose forward pass saved perLayer residuals and outputs, received ${describeOf(f)}`);
  const wrt = opts.wrt ?? 'input';
  let start = 0;
  let colShape = f.inputShape;
  let owner: { layer: number; param: number } | null = null;
  if (wrt !== 'input') {
    const p = f.params[wrt];
    if (!p) throw new ShapeError(`propagateJacobian: expected wrt to be 'input' or a parameter index in 0..${f.params.length - 1}, received ${wrt}`);
    owner = ownerOf(passes.map((q) => q.layer), p);
    if (!owner) throw new ConfigError(`propagateJacobian: parameter ${wrt} (${p.name}) of ${describeOf(f)} belongs to none of its layers`);
    start = owner.layer;
    colShape = p.value.shape;
  }
  // The chain rule's factors, first to last, each layer's own (w.r.t. a parameter: the owner's rows w.r.t. it start the chain).
  const locals: LocalJacobian[] = passes.slice(start).flatMap((q, i) => localJacobianOf(q, i === 0 && owner ? owner.param : 'input'));
  const samples = chainLocals(locals, x.shape[0], sizeOf(colShape), dtypeOf(x), opts);
  const label = wrt === 'input' ? 'w.r.t. input' : `w.r.t. ${f.params[wrt].name}`;
  return new SparseJacobian(samples, f.outputShape, colShape, wrt === 'input' ? 'input' : 'param', dtypeOf(x), label);
}

/**
 * The product `L_n ⋯ L_1` of local Jacobians (first to last) per sample, by sparse forward
 * accumulation from the identity on `nCols` columns (the first factor's): one CSR matrix per
 * sample, `L_n.rows × nCols`. No factors at all is the identity.
 */
export function chainLocals(locals: readonly LocalJacobian[], B: number, nCols: number, dtype: 'float64' | 'float32', opts: Pick<PropagateOptions, 'sortRows' | 'onProgress'> = {}): CsrMatrix[] {
  if (locals.length === 0) return Array.from({ length: B }, () => identityCsr(nCols, dtype));
  const first = 0;
  const last = locals.length - 1;
  let lastMulti = -1;
  for (let i = first; i <= last; i++) if (!locals[i].single) lastMulti = i;
  const sort = opts.sortRows ?? true;
  const samples: CsrMatrix[] = [];
  const steps = B * (last - first + 1);
  const maxLocal = Math.max(1, ...locals.slice(first).map((l) => l.maxRowNnz));
  const idx = new Int32Array(maxLocal);
  const coef = new Float64Array(maxLocal);
  const writers: (RowWriter | undefined)[] = new Array(locals.length);
  for (let b = 0; b < B; b++) {
    // Backward sweep: which rows of each layer's output some later row needs.
    const needed: Uint8Array[] = new Array(locals.length);
    needed[last] = new Uint8Array(locals[last].rows).fill(1);
    for (let i = last; i > first; i--) {
      const L = locals[i];
      const mark = new Uint8Array(L.cols);
      const nd = needed[i];
      for (let o = 0; o < L.rows; o++) {
        if (!nd[o]) continue;
        const n = L.row(b, o, idx, coef);
        for (let e = 0; e < n; e++) mark[idx[e]] = 1;
      }
      needed[i - 1] = mark;
    }
    // Forward sweep: the level of materialized tangent rows, and an index map with scales on top of it.
    let M: CsrMatrix | null = null;
    let alias: Int32Array | null = null;
    let scale: Float64Array | null = null;
    let result: CsrMatrix | null = null;
    const mark = new Int32Array(nCols).fill(-1);
    const acc = new Float64Array(nCols);
    const touched = new Int32Array(nCols);
    let stamp = 0;
    for (let i = first; i <= last; i++) {
      const L = locals[i];
      const nd = needed[i];
      if (L.single) {
        const na = new Int32Array(L.rows).fill(-1);
        const ns = new Float64Array(L.rows);
        for (let o = 0; o < L.rows; o++) {
          if (!nd[o]) continue;
          const n = L.row(b, o, idx, coef);
          if (n === 0) continue;
          const src = idx[0];
          if (alias) {
            if (alias[src] < 0) continue;
            na[o] = alias[src];
            ns[o] = coef[0] * scale![src];
          } else {
            na[o] = src;
            ns[o] = coef[0];
          }
        }
        alias = na;
        scale = ns;
        opts.onProgress?.(b * (last - first + 1) + i - first + 1, steps);
        continue;
      }
      // Rows to build: this layer's needed rows, or, after the last full layer, directly the stage's output rows through the trailing selections.
      let targets: Int32Array;
      let tscale: Float64Array | null = null;
      if (i === lastMulti) {
        targets = new Int32Array(locals[last].rows);
        tscale = new Float64Array(locals[last].rows);
        for (let o = 0; o < targets.length; o++) {
          let r = o;
          let s = 1;
          for (let k = last; k > i && r >= 0; k--) {
            const n = locals[k].row(b, r, idx, coef);
            if (n === 0) r = -1;
            else {
              r = idx[0];
              s *= coef[0];
            }
          }
          targets[o] = r;
          tscale[o] = s;
        }
      } else {
        targets = new Int32Array(L.rows);
        for (let o = 0; o < L.rows; o++) targets[o] = nd[o] ? o : -1;
      }
      const avgIn: number = M ? M.nnz / Math.max(1, countRows(M)) : 1;
      // A row that combines at least as many entries as there are columns is accumulated densely:
      // no first-touch marks, no sort, one scan of the columns in order (the same sums, in the same order).
      const dense = M !== null && L.maxRowNnz * avgIn >= nCols;
      // Each level's writer serves every sample: its buffers are allocated (and grown) once.
      let w = writers[i];
      if (w && w.rowPtr.length === targets.length + 1) w.n = 0;
      else w = writers[i] = new RowWriter(targets.length, Math.min(1 << 22, Math.ceil(targets.length * Math.min(nCols, L.maxRowNnz * avgIn) * 0.5)));
      for (let t = 0; t < targets.length; t++) {
        const r = targets[t];
        if (r >= 0) {
          const n = L.row(b, r, idx, coef);
          stamp++;
          const cnt = M === null ? accumulateIdentity(n, idx, coef, tscale ? tscale[t] : 1, alias, scale, stamp, mark, acc, touched) : accumulateRows(n, idx, coef, tscale ? tscale[t] : 1, alias, scale, M.rowPtr, M.colIdx, M.values as Float64Array, stamp, mark, acc, touched, dense);
          if (dense) {
            w.ensure(nCols, t + 1, targets.length);
            w.n = writeDenseRow(nCols, acc, w.colIdx, w.values, w.n);
          } else {
            if (sort && cnt > 1) touched.subarray(0, cnt).sort();
            w.ensure(cnt, t + 1, targets.length);
            w.n = writeRow(cnt, touched, acc, w.colIdx, w.values, w.n);
          }
        }
        w.rowPtr[t + 1] = w.n;
      }
      const isResult = i === lastMulti;
      M = w.finish(targets.length, nCols, isResult ? dtype : 'float64', isResult);
      // Its arrays now belong to the result: the next sample gets a writer of its own.
      if (w.handedOver) writers[i] = undefined;
      // The last sample needs no level twice: each one read is let go, so that at most two are held, as when no writer was kept.
      if (b === B - 1) for (let k = first; k < i; k++) writers[k] = undefined;
      alias = null;
      scale = null;
      if (isResult) {
        result = M;
        opts.onProgress?.((b + 1) * (last - first + 1), steps);
        break;
      }
      opts.onProgress?.(b * (last - first + 1) + i - first + 1, steps);
    }
    if (!result) {
      // Only selections and scalings: each output row is one entry (or none).
      const rows = locals[last].rows;
      const rowPtr = new Int32Array(rows + 1);
      let nnz = 0;
      for (let o = 0; o < rows; o++) if (alias![o] >= 0 && scale![o] !== 0) nnz++;
      const colIdx = new Int32Array(nnz);
      const values = allocData(nnz, dtype);
      let e = 0;
      for (let o = 0; o < rows; o++) {
        if (alias![o] >= 0 && scale![o] !== 0) {
          colIdx[e] = alias![o];
          values[e++] = scale![o];
        }
        rowPtr[o + 1] = e;
      }
      result = new CsrMatrix(rows, nCols, rowPtr, colIdx, values);
    }
    samples.push(result);
  }
  return samples;
}

/** The `n × n` identity in CSR form. */
function identityCsr(n: number, dtype: 'float64' | 'float32'): CsrMatrix {
  const rowPtr = new Int32Array(n + 1);
  const colIdx = new Int32Array(n);
  for (let r = 0; r < n; r++) {
    rowPtr[r + 1] = r + 1;
    colIdx[r] = r;
  }
  const values = allocData(n, dtype);
  values.fill(1);
  return new CsrMatrix(n, n, rowPtr, colIdx, values);
}

/**
 * One tangent row as a combination of rows of the level below: `Σ_e coef[e] · ts · scale[src] · M[alias[src]]`,
 * accumulated densely in `acc` at the columns listed in `touched` (first touch marked by `stamp`),
 * or, with `dense`, into every column of `acc` (nothing listed).
 * A separate small function keeps the hot loop monomorphic for the JIT.
 */
function accumulateRows(n: number, idx: Int32Array, coef: Float64Array, ts: number, alias: Int32Array | null, scale: Float64Array | null, rowPtr: Int32Array, colIdx: Int32Array, vals: Float64Array, stamp: number, mark: Int32Array, acc: Float64Array, touched: Int32Array, dense: boolean): number {
  let cnt = 0;
  for (let e = 0; e < n; e++) {
    let src = idx[e];
    let c = coef[e] * ts;
    if (alias !== null) {
      const a = alias[src];
      if (a < 0) continue;
      c *= scale![src];
      src = a;
    }
    const qe = rowPtr[src + 1];
    if (dense) {
      // No first-touch test at all: the same products in the same order, every column scanned at the end.
      for (let q = rowPtr[src]; q < qe; q++) acc[colIdx[q]] += c * vals[q];
      continue;
    }
    for (let q = rowPtr[src]; q < qe; q++) {
      const j = colIdx[q];
      const a = acc[j];
      // The accumulator is zero between rows: only a zero partial sum (a first touch, or a rare exact cancellation) asks the marks.
      if (a === 0 && mark[j] !== stamp) {
        mark[j] = stamp;
        touched[cnt++] = j;
      }
      acc[j] = a + c * vals[q];
    }
  }
  return cnt;
}

/** Appends the non-zeros of a dense accumulator in column order, zeroing it for the next row; returns the new length. */
function writeDenseRow(nCols: number, acc: Float64Array, outC: Int32Array, outV: Float64Array, k: number): number {
  for (let j = 0; j < nCols; j++) {
    const v = acc[j];
    if (v === 0) continue;
    acc[j] = 0;
    outC[k] = j;
    outV[k++] = v;
  }
  return k;
}

/** {@link accumulateRows} over the identity (the first full layer w.r.t. the input): the local row itself, through the index map. */
function accumulateIdentity(n: number, idx: Int32Array, coef: Float64Array, ts: number, alias: Int32Array | null, scale: Float64Array | null, stamp: number, mark: Int32Array, acc: Float64Array, touched: Int32Array): number {
  let cnt = 0;
  for (let e = 0; e < n; e++) {
    let src = idx[e];
    let c = coef[e] * ts;
    if (alias !== null) {
      const a = alias[src];
      if (a < 0) continue;
      c *= scale![src];
      src = a;
    }
    if (mark[src] !== stamp) {
      mark[src] = stamp;
      acc[src] = c;
      touched[cnt++] = src;
    } else {
      acc[src] += c;
    }
  }
  return cnt;
}

/** Appends the non-zeros among the touched columns to the output arrays, zeroing the accumulator there for the next row; returns the new length. */
function writeRow(cnt: number, touched: Int32Array, acc: Float64Array, outC: Int32Array, outV: Float64Array, k: number): number {
  for (let e = 0; e < cnt; e++) {
    const j = touched[e];
    const v = acc[j];
    acc[j] = 0;
    if (v === 0) continue;
    outC[k] = j;
    outV[k++] = v;
  }
  return k;
}

function countRows(m: CsrMatrix): number {
  let n = 0;
  for (let r = 0; r < m.rows; r++) if (m.rowPtr[r + 1] > m.rowPtr[r]) n++;
  return n;
}

/** True when {@link propagateJacobian} can build Jacobians of `f`: any layer, and any stage of layers (a layer without structure hooks through its own `jvp`). */
export function canPropagate(f: Differentiable): boolean {
  return !f.layers || (f.layers.length > 0 && f.layers.every((l) => canPropagate(l)));
}

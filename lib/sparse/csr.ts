/**
 * Sparse Jacobians, stored per sample in compressed sparse row (CSR) form: for sample `b`, row `r`
 * (a flat output index) holds the columns `colIdx[rowPtr[r] .. rowPtr[r+1])` (flat input or
 * parameter indices) and their values.
 *
 * Why per-sample CSR and not one matrix for the batch: samples are independent, so the
 * cross-sample blocks of a batch Jacobian are zero and never stored (as in the dense layout
 * `[B, ...out, ...in]`); and the value-dependent sparsity (ReLU zeros, max-pooling winners,
 * Dropout masks) differs from sample to sample, so each sample keeps its own structure. Row-major
 * CSR is the natural layout for the chain helpers, which contract the rows (outputs) with the
 * upstream gradient `dLoss/dOut`: one pass over the stored entries, no transposition.
 *
 * Column indices are `int32` (a per-sample Jacobian with more than 2³¹ entries would be refused
 * by the memory budget long before), values take the Jacobian's dtype.
 * @module
 */
import { ShapeError, fmtShape } from '../errors.js';
import type { Jacobian } from '../dense-jacobian.js';
import { getMemoryBudget, guardBytes } from '../memory.js';
import { type DType, type Data, type Tensor, allocData, assertShape, bytesPerElement, contiguous, dtypeOf, sizeOf, zeros } from '../tensor.js';

/** One sample's Jacobian (or a pattern with values): `rows × cols` in CSR form. */
export class CsrMatrix {
  constructor(
    /** Rows: the per-sample output size. */
    readonly rows: number,
    /** Columns: the per-sample input size, or the parameter's size. */
    readonly cols: number,
    /** `rows + 1` offsets into `colIdx` / `values`. */
    readonly rowPtr: Int32Array,
    /** Column of every stored entry. */
    readonly colIdx: Int32Array,
    /** Value of every stored entry. */
    readonly values: Data,
  ) {
    if (rowPtr.length !== rows + 1) throw new ShapeError(`CsrMatrix: expected rowPtr of length rows + 1 = ${rows + 1}, received ${rowPtr.length}`);
    const nnz = rowPtr[rows];
    if (colIdx.length < nnz || values.length < nnz) {
      throw new ShapeError(`CsrMatrix: rowPtr ends at ${nnz} stored entries, received colIdx of ${colIdx.length} and values of ${values.length}`);
    }
  }

  /** Stored entries. */
  get nnz(): number {
    return this.rowPtr[this.rows];
  }

  /** Bytes of `rowPtr`, `colIdx` and `values` (the stored entries only). */
  get bytes(): number {
    return 4 * (this.rows + 1) + this.nnz * (4 + this.values.BYTES_PER_ELEMENT);
  }

  /** The entry at `(r, c)`, 0 when not stored. */
  get(r: number, c: number): number {
    let v = 0;
    for (let k = this.rowPtr[r]; k < this.rowPtr[r + 1]; k++) if (this.colIdx[k] === c) v += this.values[k];
    return v;
  }

  /** Largest number of entries in a row. */
  maxRowNnz(): number {
    let m = 0;
    for (let r = 0; r < this.rows; r++) m = Math.max(m, this.rowPtr[r + 1] - this.rowPtr[r]);
    return m;
  }

  /** True when the columns of every row are strictly increasing. */
  isSorted(): boolean {
    for (let r = 0; r < this.rows; r++) for (let k = this.rowPtr[r] + 1; k < this.rowPtr[r + 1]; k++) if (this.colIdx[k] <= this.colIdx[k - 1]) return false;
    return true;
  }

  /**
   * Sorts the columns of every row in place (values follow). Rows built by accumulation come out
   * in visiting order; a sorted copy is what structure comparisons ({@link CsrMatrix.isSorted}) and printing expect.
   */
  sortRows(): this {
    const ci = this.colIdx;
    const v = this.values;
    let perm = new Int32Array(0);
    let tmpC = new Int32Array(0);
    let tmpV = new Float64Array(0);
    for (let r = 0; r < this.rows; r++) {
      const a = this.rowPtr[r];
      const n = this.rowPtr[r + 1] - a;
      if (n < 2) continue;
      let sorted = true;
      for (let k = a + 1; k < a + n; k++) if (ci[k] < ci[k - 1]) sorted = false;
      if (sorted) continue;
      if (perm.length < n) {
        perm = new Int32Array(n);
        tmpC = new Int32Array(n);
        tmpV = new Float64Array(n);
      }
      for (let k = 0; k < n; k++) perm[k] = k;
      const p = perm.subarray(0, n);
      p.sort((x, y) => ci[a + x] - ci[a + y]);
      for (let k = 0; k < n; k++) {
        tmpC[k] = ci[a + p[k]];
        tmpV[k] = v[a + p[k]];
      }
      for (let k = 0; k < n; k++) {
        ci[a + k] = tmpC[k];
        v[a + k] = tmpV[k];
      }
    }
    return this;
  }

  /** The values written into a dense row-major `rows × cols` buffer at `offset` (duplicates add). */
  scatterInto(out: Data, offset: number): void {
    const { rowPtr, colIdx, values, cols } = this;
    for (let r = 0; r < this.rows; r++) {
      const o = offset + r * cols;
      for (let k = rowPtr[r]; k < rowPtr[r + 1]; k++) out[o + colIdx[k]] += values[k];
    }
  }

  /** `gᵀ J` for a row vector `g` (`rows` values from `gOff`), added into `out` (`cols` values from `outOff`). */
  addVecMat(g: Data, gOff: number, out: Float64Array, outOff: number): void {
    const { rowPtr, colIdx, values } = this;
    for (let r = 0; r < this.rows; r++) {
      const gr = g[gOff + r];
      if (gr === 0) continue;
      for (let k = rowPtr[r]; k < rowPtr[r + 1]; k++) out[outOff + colIdx[k]] += gr * values[k];
    }
  }

  /** `J v` for a column vector `v` (`cols` values from `vOff`), written into `out` (`rows` values from `outOff`). */
  matVec(v: Data, vOff: number, out: Float64Array, outOff: number): void {
    const { rowPtr, colIdx, values } = this;
    for (let r = 0; r < this.rows; r++) {
      let s = 0;
      for (let k = rowPtr[r]; k < rowPtr[r + 1]; k++) s += values[k] * v[vOff + colIdx[k]];
      out[outOff + r] = s;
    }
  }

  /** A CSR matrix from a dense row-major `rows × cols` buffer, storing its non-zeros. */
  static fromDense(d: Data, offset: number, rows: number, cols: number, dtype: DType = 'float64'): CsrMatrix {
    let nnz = 0;
    for (let k = 0; k < rows * cols; k++) if (d[offset + k] !== 0) nnz++;
    const rowPtr = new Int32Array(rows + 1);
    const colIdx = new Int32Array(nnz);
    const values = allocData(nnz, dtype);
    let e = 0;
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        const v = d[offset + r * cols + c];
        if (v !== 0) {
          colIdx[e] = c;
          values[e++] = v;
        }
      }
      rowPtr[r + 1] = e;
    }
    return new CsrMatrix(rows, cols, rowPtr, colIdx, values);
  }
}

/** What a Jacobian differentiates: the input (per sample) or a parameter (shared by the batch). */
export type WrtKind = 'input' | 'param';

/**
 * How a structured Jacobian was built, for the memory report: the mode and engine chosen, why,
 * and the estimates compared. Filled by the builders in `lib/sparse/auto.ts`.
 */
export interface JacobianPlan {
  /** `forward` (tangents pushed, columns recovered) or `reverse` (cotangents pulled, rows recovered). */
  mode: 'forward' | 'reverse';
  /**
   * `propagate`: sparse tangents carried layer by layer (each activation carries only its non-zero
   * derivative parts); `compressed`: coloured columns (or rows) through the dual-number `jvp` (or
   * the `vjp`), then decompressed; `dense`: one column (or row) per pass.
   */
  engine: 'propagate' | 'compressed' | 'dense';
  /** One sentence: why this engine won. */
  reason: string;
  /** Colours (passes' worth of tangents or cotangents) the compressed engines need; for `propagate`, 0. */
  colours: number;
  /** Tangents (or cotangents) per pass. */
  blockWidth: number;
  /** Passes through `jvp` (or `vjp`). */
  passes: number;
  /** Every candidate considered, with its estimated multiply-adds and bytes. */
  candidates: PlanCandidate[];
  /** Bytes of the structural upper bound on the sparse result. */
  estimatedBytes: number;
  /** The budget the result and the tangent blocks were sized to. */
  budgetBytes: number;
  /** Wall-clock milliseconds of the build (filled after it ran). */
  ms?: number;
}

/** One engine's estimate, as the planner compared them. */
export interface PlanCandidate {
  /** `forward` (columns, by tangents) or `reverse` (rows, by cotangents). */
  mode: 'forward' | 'reverse';
  /** `propagate` (sparse tangents layer by layer), `compressed` (coloured columns or rows) or `dense`. */
  engine: 'propagate' | 'compressed' | 'dense';
  /** Colours (0 for propagate). */
  colours: number;
  /** Estimated multiply-adds. */
  macs: number;
  /** Estimated peak bytes of its working set (tangent blocks, levels), besides the result. */
  workBytes: number;
  /** Why it is not available, if it is not. */
  unavailable?: string;
}

/**
 * A batch Jacobian stored sparsely, one {@link CsrMatrix} per sample; it has the shape and meaning
 * of the dense `[B, ...out, ...in]` (or `[B, ...out, ...param]`) Jacobian and converts to it with
 * {@link SparseJacobian.toDense}. The chain helpers contract it without densifying.
 * @example
 * const J = jacobianWrtInput(stage, x, { format: 'sparse' }); // [1, 2, 2, 64, 32, 32, 3]
 * J.nnz; J.bytes;                                             // stored entries, bytes
 * upstreamGradientLossOut(J, dLoss_dOut);                     // [1, 32, 32, 3], never dense
 */
export class SparseJacobian implements Jacobian {
  readonly format = 'sparse' as const;
  /** The build's plan (mode, engine, colours, why), when a builder made it. */
  plan: JacobianPlan | null = null;

  constructor(
    /** One CSR matrix per sample, `|out| × |in|` each. */
    readonly samples: readonly CsrMatrix[],
    readonly outShape: readonly number[],
    readonly inShape: readonly number[],
    /** `input`: columns belong to each sample's own input; `param`: to a parameter shared by the batch. */
    readonly wrt: WrtKind,
    /** Element type of the stored values. */
    readonly dtype: DType = 'float64',
    /** What it differentiates, for reports: `w.r.t. input`, `w.r.t. kernel`. */
    readonly label = '',
  ) {
    const rows = sizeOf(outShape);
    const cols = sizeOf(inShape);
    samples.forEach((m, b) => {
      if (m.rows !== rows || m.cols !== cols) {
        throw new ShapeError(`SparseJacobian ${label}: expected sample ${b} to be ${rows} × ${cols} (${fmtShape(outShape)} × ${fmtShape(inShape)}), received ${m.rows} × ${m.cols}`);
      }
    });
  }

  get batch(): number {
    return this.samples.length;
  }

  /** `[B, ...out, ...in]`, as the dense Jacobian's. */
  get shape(): readonly number[] {
    return [this.samples.length, ...this.outShape, ...this.inShape];
  }

  /** Stored entries over the batch. */
  get nnz(): number {
    let n = 0;
    for (const m of this.samples) n += m.nnz;
    return n;
  }

  /** Bytes of the stored entries, column indices and row offsets over the batch. */
  get bytes(): number {
    let n = 0;
    for (const m of this.samples) n += m.bytes;
    return n;
  }

  /** Bytes the dense form would take. */
  get denseBytes(): number {
    return sizeOf(this.shape) * bytesPerElement(this.dtype);
  }

  /** The entry `∂out[b, r] / ∂in[c]` with flat `r` and `c`. */
  get(b: number, r: number, c: number): number {
    return this.samples[b].get(r, c);
  }

  /**
   * The dense `[B, ...out, ...in]` tensor, refused (before allocating) when it would exceed the
   * memory budget.
   */
  toDense(opts: { memoryBudget?: number } = {}): Tensor {
    const shape = this.shape as number[];
    guardBytes(`dense form of a sparse Jacobian ${fmtShape(shape)}`, this.denseBytes, opts.memoryBudget ?? getMemoryBudget(), 'keep it sparse: the chain helpers contract a SparseJacobian directly');
    const out = zeros(shape, this.dtype);
    const per = sizeOf(this.outShape) * sizeOf(this.inShape);
    this.samples.forEach((m, b) => m.scatterInto(out.data, b * per));
    return out;
  }

  /**
   * `Σ_out g[b, out] · J[b, out, …in]` → `[B, ...in]` (input Jacobian; the seed's
   * `upstream_gradient_loss_out`), or summed over the batch too → `[...param]` for a parameter
   * Jacobian when `sumBatch` is true (the seed's `upstream_gradient_loss_weights`). One pass over
   * the stored entries; nothing dense larger than the result is made.
   */
  vjp(dy: Tensor, sumBatch: boolean = this.wrt === 'param'): Tensor {
    const g = dy;
    const B = this.batch;
    assertShape(g, [B, ...this.outShape], `SparseJacobian ${this.label} vjp upstream gradient`);
    const gc = contiguous(g);
    const rows = sizeOf(this.outShape);
    const cols = sizeOf(this.inShape);
    const acc = new Float64Array(sumBatch ? cols : B * cols);
    this.samples.forEach((m, b) => m.addVecMat(gc.data, gc.offset + b * rows, acc, sumBatch ? 0 : b * cols));
    const out = zeros(sumBatch ? [...this.inShape] : [B, ...this.inShape], dtypeOf(g));
    out.data.set(acc);
    return out;
  }

  /**
   * `J v`: for an input Jacobian `v` is `[B, ...in]`; for a parameter Jacobian `v` is `[...param]`
   * (one direction shared by the batch). Returns `[B, ...out]`.
   */
  jvp(v: Tensor): Tensor {
    const B = this.batch;
    const shared = this.wrt === 'param';
    assertShape(v, shared ? [...this.inShape] : [B, ...this.inShape], `SparseJacobian ${this.label} jvp direction`);
    const vc = contiguous(v);
    const rows = sizeOf(this.outShape);
    const cols = sizeOf(this.inShape);
    const acc = new Float64Array(B * rows);
    this.samples.forEach((m, b) => m.matVec(vc.data, vc.offset + (shared ? 0 : b * cols), acc, b * rows));
    const out = zeros([B, ...this.outShape], dtypeOf(v));
    out.data.set(acc);
    return out;
  }

  /** Fraction of the dense entries stored. */
  get density(): number {
    const total = this.batch * sizeOf(this.outShape) * sizeOf(this.inShape);
    return total === 0 ? 0 : this.nnz / total;
  }
}

/**
 * Sparsity structure, the data types every engine and every layer share: which entries of a
 * Jacobian can be non-zero.
 *
 * Two representations:
 * - {@link SparsityPattern}: an explicit boolean CSR matrix (rows = flat outputs, columns = flat
 *   inputs or parameters), the form colouring and decompression work on;
 * - {@link KronPattern}: a Kronecker product of small per-axis factors. A layer acts on each axis of
 *   an NHWC image separately (a convolution couples each output row only to a window of input
 *   rows, and all channels; pooling a window and one channel; an element-wise activation nothing),
 *   so its pattern is `A_H ⊗ A_W ⊗ A_C` with factors a few hundred wide at most. Composing two
 *   layers composes the factors, so a whole stage's pattern at 224×224×3 (150 528 columns, 62.8
 *   million structural non-zeros) is three matrices of at most 224 × 224: its non-zero count,
 *   largest row and an optimal colouring come in O(n) without ever listing the entries.
 *
 * A layer states its own structure through the hooks of its contract (`layers/layer.ts`) with an
 * {@link AxisStructure}: one {@link AxisMap} per input axis.
 * @module
 */
import { ShapeError } from './errors.js';
import { getMemoryBudget, guardBytes } from './memory.js';

/** A boolean sparse matrix in CSR form: row `r` may be non-zero at the columns `colIdx[rowPtr[r] .. rowPtr[r+1])` (strictly increasing). */
export class SparsityPattern {
  constructor(
    /** Number of rows (outputs). */
    readonly rows: number,
    /** Number of columns (inputs). */
    readonly cols: number,
    /** `rows + 1` offsets into `colIdx`: row `r` is `colIdx[rowPtr[r] .. rowPtr[r+1])`. */
    readonly rowPtr: Int32Array,
    /** Column of each possibly non-zero entry, row by row, strictly increasing within a row. */
    readonly colIdx: Int32Array,
  ) {
    if (rowPtr.length !== rows + 1) throw new ShapeError(`SparsityPattern: expected rowPtr of length ${rows + 1}, received ${rowPtr.length}`);
  }

  /** Possibly non-zero entries. */
  get nnz(): number {
    return this.rowPtr[this.rows];
  }

  /** Entries in row `r`. */
  rowNnz(r: number): number {
    return this.rowPtr[r + 1] - this.rowPtr[r];
  }

  /** Largest row: a lower bound on the colours of any column colouring (its columns all differ). */
  maxRowNnz(): number {
    let m = 0;
    for (let r = 0; r < this.rows; r++) m = Math.max(m, this.rowPtr[r + 1] - this.rowPtr[r]);
    return m;
  }

  /** The columns of row `r` (a view). */
  row(r: number): Int32Array {
    return this.colIdx.subarray(this.rowPtr[r], this.rowPtr[r + 1]);
  }

  /** True when `(r, c)` may be non-zero. */
  has(r: number, c: number): boolean {
    for (let k = this.rowPtr[r]; k < this.rowPtr[r + 1]; k++) if (this.colIdx[k] === c) return true;
    return false;
  }

  /** The transpose (columns become rows), in O(nnz). */
  transpose(): SparsityPattern {
    const ptr = new Int32Array(this.cols + 1);
    for (let k = 0; k < this.nnz; k++) ptr[this.colIdx[k] + 1]++;
    for (let c = 0; c < this.cols; c++) ptr[c + 1] += ptr[c];
    const fill = ptr.slice(0, this.cols);
    const idx = new Int32Array(this.nnz);
    for (let r = 0; r < this.rows; r++) for (let k = this.rowPtr[r]; k < this.rowPtr[r + 1]; k++) idx[fill[this.colIdx[k]]++] = r;
    return new SparsityPattern(this.cols, this.rows, ptr, idx);
  }

  /** Same rows, columns and entries. */
  equals(o: SparsityPattern): boolean {
    if (o.rows !== this.rows || o.cols !== this.cols || o.nnz !== this.nnz) return false;
    for (let r = 0; r <= this.rows; r++) if (o.rowPtr[r] !== this.rowPtr[r]) return false;
    for (let k = 0; k < this.nnz; k++) if (o.colIdx[k] !== this.colIdx[k]) return false;
    return true;
  }

  /** True when every entry of this pattern is also in `o`. */
  subsetOf(o: SparsityPattern): boolean {
    if (o.rows !== this.rows || o.cols !== this.cols) return false;
    for (let r = 0; r < this.rows; r++) {
      let q = o.rowPtr[r];
      for (let k = this.rowPtr[r]; k < this.rowPtr[r + 1]; k++) {
        const c = this.colIdx[k];
        while (q < o.rowPtr[r + 1] && o.colIdx[q] < c) q++;
        if (q === o.rowPtr[r + 1] || o.colIdx[q] !== c) return false;
      }
    }
    return true;
  }

  /**
   * The boolean product `this ∘ inner`: row `r` of the result is the union of the rows of `inner`
   * that row `r` of `this` selects (`this` is an outer layer's pattern over `inner`'s rows).
   */
  compose(inner: SparsityPattern): SparsityPattern {
    if (inner.rows !== this.cols) throw new ShapeError(`SparsityPattern.compose: expected an inner pattern of ${this.cols} rows, received ${inner.rows}`);
    const mark = new Int32Array(inner.cols).fill(-1);
    const rows: Int32Array[] = [];
    let nnz = 0;
    let buf = new Int32Array(64);
    for (let r = 0; r < this.rows; r++) {
      let n = 0;
      for (let k = this.rowPtr[r]; k < this.rowPtr[r + 1]; k++) {
        const m = this.colIdx[k];
        for (let q = inner.rowPtr[m]; q < inner.rowPtr[m + 1]; q++) {
          const c = inner.colIdx[q];
          if (mark[c] === r) continue;
          mark[c] = r;
          if (n === buf.length) {
            const nb = new Int32Array(2 * n);
            nb.set(buf);
            buf = nb;
          }
          buf[n++] = c;
        }
      }
      const row = buf.slice(0, n).sort();
      rows.push(row);
      nnz += n;
    }
    return SparsityPattern.fromRowArrays(rows, inner.cols, nnz);
  }

  /**
   * The Kronecker product `a ⊗ b`: row `(ra, rb)` holds the columns `ca · b.cols + cb`, sorted
   * when both operands are.
   */
  static kron(a: SparsityPattern, b: SparsityPattern): SparsityPattern {
    const rows = a.rows * b.rows;
    const rowPtr = new Int32Array(rows + 1);
    const colIdx = new Int32Array(a.nnz * b.nnz);
    const bc = b.cols;
    let e = 0;
    let r = 0;
    for (let ra = 0; ra < a.rows; ra++) {
      const a0 = a.rowPtr[ra];
      const a1 = a.rowPtr[ra + 1];
      for (let rb = 0; rb < b.rows; rb++) {
        const b0 = b.rowPtr[rb];
        const b1 = b.rowPtr[rb + 1];
        for (let qa = a0; qa < a1; qa++) {
          const base = a.colIdx[qa] * bc;
          for (let qb = b0; qb < b1; qb++) colIdx[e++] = base + b.colIdx[qb];
        }
        rowPtr[++r] = e;
      }
    }
    return new SparsityPattern(rows, a.cols * bc, rowPtr, colIdx);
  }

  /** Union of patterns of one shape (e.g. the samples of a batch): what a colouring valid for all of them must respect. */
  static union(ps: readonly SparsityPattern[]): SparsityPattern {
    if (ps.length === 0) throw new ShapeError('SparsityPattern.union: expected at least one pattern, received none');
    if (ps.length === 1) return ps[0];
    const { rows, cols } = ps[0];
    for (const p of ps) if (p.rows !== rows || p.cols !== cols) throw new ShapeError(`SparsityPattern.union: expected patterns of ${rows} × ${cols}, received ${p.rows} × ${p.cols}`);
    const mark = new Int32Array(cols).fill(-1);
    const out: Int32Array[] = [];
    let nnz = 0;
    for (let r = 0; r < rows; r++) {
      const acc: number[] = [];
      for (const p of ps) {
        for (let k = p.rowPtr[r]; k < p.rowPtr[r + 1]; k++) {
          const c = p.colIdx[k];
          if (mark[c] !== r) {
            mark[c] = r;
            acc.push(c);
          }
        }
      }
      const row = Int32Array.from(acc).sort();
      out.push(row);
      nnz += row.length;
    }
    return SparsityPattern.fromRowArrays(out, cols, nnz);
  }

  /** A pattern from one sorted column array per row. */
  static fromRowArrays(rowArrays: readonly (Int32Array | readonly number[])[], cols: number, nnz?: number): SparsityPattern {
    const total = nnz ?? rowArrays.reduce((s, r) => s + r.length, 0);
    const rowPtr = new Int32Array(rowArrays.length + 1);
    const colIdx = new Int32Array(total);
    let e = 0;
    rowArrays.forEach((r, i) => {
      for (let k = 0; k < r.length; k++) colIdx[e++] = r[k];
      rowPtr[i + 1] = e;
    });
    return new SparsityPattern(rowArrays.length, cols, rowPtr, colIdx);
  }

  /** The `n × n` identity. */
  static identity(n: number): SparsityPattern {
    const rowPtr = new Int32Array(n + 1);
    const colIdx = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      rowPtr[i + 1] = i + 1;
      colIdx[i] = i;
    }
    return new SparsityPattern(n, n, rowPtr, colIdx);
  }

  /** The all-ones `rows × cols` pattern. */
  static full(rows: number, cols: number): SparsityPattern {
    const rowPtr = new Int32Array(rows + 1);
    const colIdx = new Int32Array(rows * cols);
    for (let r = 0; r < rows; r++) {
      rowPtr[r + 1] = (r + 1) * cols;
      for (let c = 0; c < cols; c++) colIdx[r * cols + c] = c;
    }
    return new SparsityPattern(rows, cols, rowPtr, colIdx);
  }

  /** The pattern of the stored non-zeros of a dense row-major `rows × cols` buffer. */
  static fromDense(d: ArrayLike<number>, rows: number, cols: number, offset = 0): SparsityPattern {
    const out: number[][] = [];
    for (let r = 0; r < rows; r++) {
      const row: number[] = [];
      for (let c = 0; c < cols; c++) if (d[offset + r * cols + c] !== 0) row.push(c);
      out.push(row);
    }
    return SparsityPattern.fromRowArrays(out, cols);
  }
}

/**
 * A pattern that is a Kronecker product of small factors: entry `(r, c)` may be non-zero iff every
 * factor `k` may be non-zero at `(r_k, c_k)`, where `r` and `c` are read in mixed radix over the
 * factors' row and column extents (factor 0 most significant, as row-major NHWC).
 */
export class KronPattern {
  constructor(
    /** The factors, most significant (outermost axis) first. */
    readonly factors: readonly SparsityPattern[]
  ) {
    if (factors.length === 0) throw new ShapeError('KronPattern: expected at least one factor, received none');
  }

  /** Extents of the factors' rows (their product is the output size). */
  get rowExtents(): number[] {
    return this.factors.map((f) => f.rows);
  }

  /** Extents of the factors' columns (their product is the input size). */
  get colExtents(): number[] {
    return this.factors.map((f) => f.cols);
  }

  /** Rows of the product: the product of the factors' rows. */
  get rows(): number {
    return this.factors.reduce((s, f) => s * f.rows, 1);
  }

  /** Columns of the product: the product of the factors' columns. */
  get cols(): number {
    return this.factors.reduce((s, f) => s * f.cols, 1);
  }

  /** Structural non-zeros: the product of the factors'. */
  get nnz(): number {
    return this.factors.reduce((s, f) => s * f.nnz, 1);
  }

  /** Largest row: the product of the factors' largest rows. */
  maxRowNnz(): number {
    return this.factors.reduce((s, f) => s * f.maxRowNnz(), 1);
  }

  /** Columns touched by at least one row. */
  usedCols(): number {
    return this.factors.reduce((s, f) => {
      const used = new Uint8Array(f.cols);
      for (let k = 0; k < f.nnz; k++) used[f.colIdx[k]] = 1;
      return s * used.reduce((a, b) => a + b, 0);
    }, 1);
  }

  /** Rows with at least one entry. */
  usedRows(): number {
    return this.factors.reduce((s, f) => {
      let n = 0;
      for (let r = 0; r < f.rows; r++) if (f.rowPtr[r + 1] > f.rowPtr[r]) n++;
      return s * n;
    }, 1);
  }

  /**
   * The explicit pattern (columns sorted), refused over the memory budget before allocating:
   * at 224×224×3 a conv stage's structural pattern is 62.8 million entries.
   */
  expand(budgetBytes: number = getMemoryBudget()): SparsityPattern {
    guardBytes(`explicit sparsity pattern (${this.nnz} entries)`, 4 * (this.nnz + this.rows + 1), budgetBytes, 'work with the Kronecker factors');
    // Folded pairwise, most significant factor first: each step is two tight loops.
    let P = this.factors[0];
    for (let k = 1; k < this.factors.length; k++) P = SparsityPattern.kron(P, this.factors[k]);
    return P;
  }

  /** The identity pattern over a per-sample shape, one factor per axis. */
  static identity(shape: readonly number[]): KronPattern {
    return new KronPattern(shape.length === 0 ? [SparsityPattern.identity(1)] : shape.map((d) => SparsityPattern.identity(d)));
  }
}

/** How a layer acts on one axis of its input: not at all, coupling everything, or through a small pattern. */
export type AxisMap = {
  /** The axis passes through: output index = input index. */
  kind: 'identity'
} | {
  /** Every output along the axis depends on every input along it. */
  kind: 'full';
  /** Output extent along the axis. */
  rows: number
} | {
  /** Through a small pattern. */
  kind: 'matrix';
  /** Rows: output extent along the axis; columns: input extent. */
  pattern: SparsityPattern
};

/** A layer's structural pattern w.r.t. its input, axis by axis. */
export interface AxisStructure {
  /** The input axes the maps act on (their product is the input size). */
  inDims: number[];
  /** One map per input axis. */
  maps: AxisMap[];
}


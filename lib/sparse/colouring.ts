/**
 * Column (and row) colourings for compressed Jacobians, Curtis–Powell–Reid: two columns with no
 * row in common may share a colour, so one tangent seeded on all columns of a colour recovers each
 * of them from the rows it alone touches. A colouring is a distance-2 colouring of the column
 * intersection graph; its count is at least the largest row (those columns pairwise share it).
 *
 * Where the pattern is a Kronecker product (every layer's, and a stage's whose layers line up, see
 * `pattern.ts`), the colouring is the product of the factors' colourings: columns whose colours
 * agree on every factor differ on some factor `k` where they never share a row of that factor, so
 * they never share a row. Each factor of a conv stack is a window (interval) pattern whose column
 * graph is an interval graph, where greedy colouring in order is optimal and meets the largest
 * row; the product then meets the product of the largest rows, the lower bound: optimal, and O(n).
 * For a stride-1 3×3 convolution on 3 channels this is `3 · 3 · 3 = 27` colours: spatial position
 * modulo the window, times the channel. Elsewhere: greedy CPR on the explicit pattern.
 * @module
 */
import { KronPattern, SparsityPattern } from '../structure.js';

/** A colouring of a pattern's columns (or rows). */
export interface Colouring {
  /** Colour of every column, `0 .. count-1`; unused columns get colour 0. */
  colours: Int32Array;
  /** Number of colours. */
  count: number;
  /** How it was made. */
  method: 'kronecker' | 'greedy' | 'trivial';
}

/**
 * Greedy CPR colouring of the columns of `p`, in natural order (for window patterns, this is
 * the optimal interval-graph order). Cost `Σ_rows nnz(row)²`: for small and medium patterns.
 * @example
 * const c = greedyColumnColouring(windowPattern(8, 3, 1, 'valid')); // c.count === 3
 */
export function greedyColumnColouring(p: SparsityPattern, order?: Int32Array): Colouring {
  const t = p.transpose();
  const colours = new Int32Array(p.cols).fill(-1);
  const forbid = new Int32Array(p.cols + 1).fill(-1);
  let count = 0;
  for (let n = 0; n < p.cols; n++) {
    const j = order ? order[n] : n;
    for (let q = t.rowPtr[j]; q < t.rowPtr[j + 1]; q++) {
      const r = t.colIdx[q];
      for (let k = p.rowPtr[r]; k < p.rowPtr[r + 1]; k++) {
        const c = colours[p.colIdx[k]];
        if (c >= 0) forbid[c] = j;
      }
    }
    let c = 0;
    while (forbid[c] === j) c++;
    colours[j] = c;
    if (c + 1 > count) count = c + 1;
  }
  return { colours, count: Math.max(count, 1), method: 'greedy' };
}

/** Greedy colouring of the rows of `p` (rows sharing no column share a colour): for stacked VJPs. */
export function greedyRowColouring(p: SparsityPattern): Colouring {
  return greedyColumnColouring(p.transpose());
}

/** One colour per column: dense forward mode. */
export function trivialColouring(cols: number): Colouring {
  const colours = new Int32Array(cols);
  for (let j = 0; j < cols; j++) colours[j] = j;
  return { colours, count: cols, method: 'trivial' };
}

/**
 * The product colouring of a Kronecker pattern's columns: greedy on each small factor, then a
 * mixed-radix product. O(cols), never lists the pattern's entries.
 */
export function kronColumnColouring(k: KronPattern): Colouring {
  const per = k.factors.map((f) => greedyColumnColouring(f));
  // Folded factor by factor: colour (…, c_k) = colour(…) · count_k + c_k, in mixed radix as the columns.
  let colours = Int32Array.from(per[0].colours);
  let count = per[0].count;
  for (let f = 1; f < per.length; f++) {
    const cf = per[f].colours;
    const n = cf.length;
    const next = new Int32Array(colours.length * n);
    const cnt = per[f].count;
    for (let i = 0, e = 0; i < colours.length; i++) {
      const base = colours[i] * cnt;
      for (let j = 0; j < n; j++) next[e++] = base + cf[j];
    }
    colours = next;
    count *= cnt;
  }
  return { colours, count, method: 'kronecker' };
}

/** Row colouring of a Kronecker pattern: the product of its factors' row colourings. */
export function kronRowColouring(k: KronPattern): Colouring {
  return kronColumnColouring(new KronPattern(k.factors.map((f) => f.transpose())));
}

/**
 * Checks that no row of `p` holds two columns of one colour.
 * @returns the first offending `(row, colour)`, or null when the colouring is valid.
 */
export function findColouringConflict(p: SparsityPattern, c: Colouring): {
  /** The row holding two columns of one colour. */
  row: number;
  /** That colour. */
  colour: number
} | null {
  const seen = new Int32Array(c.count).fill(-1);
  for (let r = 0; r < p.rows; r++) {
    for (let k = p.rowPtr[r]; k < p.rowPtr[r + 1]; k++) {
      const col = c.colours[p.colIdx[k]];
      if (seen[col] === r) return { row: r, colour: col };
      seen[col] = r;
    }
  }
  return null;
}

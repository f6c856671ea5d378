/**
 * Window geometry, in one place: how a window of `k` taps, taken every `s` positions with
 * TensorFlow's padding, lands on an axis of `n` positions. Conv2D, the pooling layers and the
 * sparsity patterns all read it from here.
 *
 * TensorFlow's rule: 'valid' takes `floor((n - k) / s) + 1` outputs and no padding; 'same' takes
 * `ceil(n / s)` outputs and pads `max((out - 1) s + k - n, 0)` in all, the smaller half before.
 * @module
 */
import { ConfigError, ShapeError, fmtValue } from '../errors.js';
import { SparsityPattern } from '../structure.js';

/** Reads a positive integer or a pair of them (`3` or `[3, 3]`), as Keras accepts. */
export function pair(v: unknown, what: string, layer: string): [number, number] {
  const arr = typeof v === 'number' ? [v, v] : v;
  if (!Array.isArray(arr) || arr.length !== 2 || arr.some((d) => !Number.isInteger(d) || d <= 0)) {
    throw new ConfigError(`${layer}: expected ${what} to be a positive integer or a pair of them, received ${fmtValue(v)}`);
  }
  return [arr[0], arr[1]];
}

/** Padding as Keras names it. */
export type Padding = 'valid' | 'same';

/** Validates a padding option. */
export function padding(v: unknown, layer: string): Padding {
  if (v === undefined) return 'valid';
  if (v !== 'valid' && v !== 'same') throw new ConfigError(`${layer}: expected padding "valid" or "same", received ${fmtValue(v)}`);
  return v;
}

/**
 * Output extent and leading pad of one spatial axis, TensorFlow's rule: 'valid' takes
 * `floor((n - k) / s) + 1`; 'same' takes `ceil(n / s)` and pads `max((out - 1) s + k - n, 0)` in
 * all, the smaller half before.
 */
export function windowAxis(n: number, k: number, s: number, pad: Padding, layer: string): {
  /** Output extent. */
  out: number;
  /** Padding before the first element. */
  before: number
} {
  if (pad === 'valid') {
    if (k > n) throw new ShapeError(`${layer}: expected a window of ${k} to fit an input extent of ${n} with padding "valid", received extent ${n} < ${k}`);
    return { out: Math.floor((n - k) / s) + 1, before: 0 };
  }
  const out = Math.ceil(n / s);
  const total = Math.max((out - 1) * s + k - n, 0);
  return { out, before: Math.floor(total / 2) };
}

/**
 * The windows of one spatial axis, hoisted out of the hot loops: output position `o` reads input
 * positions `start[o] + k` for kernel taps `k` in `[lo[o], hi[o])`, the taps that land inside the
 * input. The others fall in the padding: patch gathers leave them zero and the tangent loops skip them.
 */
export interface WindowRanges {
  /** Output extent. */
  out: number;
  /** `o · stride − padBefore`: the input position of tap 0 (negative inside the leading pad). */
  start: Int32Array;
  /** First tap inside the input. */
  lo: Int32Array;
  /** One past the last tap inside the input. */
  hi: Int32Array;
}

/** Valid tap ranges of every window along an axis of extent `n`, window `k`, stride `s` (TensorFlow's padding rule via {@link windowAxis}). */
export function windowRanges(n: number, k: number, s: number, pad: Padding, layer: string): WindowRanges {
  const { out, before } = windowAxis(n, k, s, pad, layer);
  const start = new Int32Array(out);
  const lo = new Int32Array(out);
  const hi = new Int32Array(out);
  for (let o = 0; o < out; o++) {
    start[o] = o * s - before;
    lo[o] = Math.max(0, -start[o]);
    hi[o] = Math.min(k, n - start[o]);
  }
  return { out, start, lo, hi };
}

/**
 * The windows of one spatial axis as a pattern: output position `o` reads the input positions of
 * its window that fall inside the input (TensorFlow's padding via `windowAxis`).
 * `taps`: columns are the window's taps `0..k-1` instead of input positions (for kernel patterns).
 */
export function windowPattern(n: number, k: number, s: number, pad: Padding, taps = false, what = 'window'): SparsityPattern {
  const { out, before } = windowAxis(n, k, s, pad, what);
  const rows: number[][] = [];
  for (let o = 0; o < out; o++) {
    const start = o * s - before;
    const row: number[] = [];
    for (let t = Math.max(0, -start); t < Math.min(k, n - start); t++) row.push(taps ? t : start + t);
    rows.push(row);
  }
  return SparsityPattern.fromRowArrays(rows, taps ? k : n);
}

/** Largest number of in-bounds taps of any window on an axis: the axis's factor of the closed-form colour counts. */
export function maxWindow(n: number, k: number, s: number, pad: Padding): number {
  const { out, before } = windowAxis(n, k, s, pad, 'window');
  let m = 0;
  for (let o = 0; o < out; o++) {
    const start = o * s - before;
    m = Math.max(m, Math.min(k, n - start) - Math.max(0, -start));
  }
  return m;
}


/**
 * Window geometry, in one place: how a window of `k` taps, `d` positions apart (the dilation),
 * taken every `s` positions with TensorFlow's padding, lands on an axis of `n` positions. Conv2D,
 * the pooling layers and the sparsity patterns all read it from here.
 *
 * TensorFlow's rule, on the effective window `ke = (k - 1) d + 1`: 'valid' takes
 * `floor((n - ke) / s) + 1` outputs and no padding; 'same' takes `ceil(n / s)` outputs and pads
 * `max((out - 1) s + ke - n, 0)` in all, the smaller half before.
 * @module
 */
import { ConfigError, ShapeError, fmtValue } from '../errors.js';
import { type AxisStructure, SparsityPattern } from '../structure.js';

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

/** The extent a window of `k` taps `d` apart spans: `(k - 1) d + 1` (Keras' effective kernel). */
export function effectiveWindow(k: number, d = 1): number {
  return (k - 1) * d + 1;
}

/**
 * Output extent and leading pad of one spatial axis, TensorFlow's rule on the effective window
 * `ke = (k - 1) d + 1`: 'valid' takes `floor((n - ke) / s) + 1`; 'same' takes `ceil(n / s)` and
 * pads `max((out - 1) s + ke - n, 0)` in all, the smaller half before.
 */
export function windowAxis(n: number, k: number, s: number, pad: Padding, layer: string, d = 1): {
  /** Output extent. */
  out: number;
  /** Padding before the first element. */
  before: number
} {
  const ke = effectiveWindow(k, d);
  if (pad === 'valid') {
    if (ke > n) {
      const what = d === 1 ? `a window of ${k}` : `a window of ${k} taps at dilation ${d} (spanning ${ke})`;
      throw new ShapeError(`${layer}: expected ${what} to fit an input extent of ${n} with padding "valid", received extent ${n} < ${ke}`);
    }
    return { out: Math.floor((n - ke) / s) + 1, before: 0 };
  }
  const out = Math.ceil(n / s);
  const total = Math.max((out - 1) * s + ke - n, 0);
  return { out, before: Math.floor(total / 2) };
}

/**
 * The windows of one spatial axis, hoisted out of the hot loops: output position `o` reads input
 * positions `start[o] + t · step` for kernel taps `t` in `[lo[o], hi[o])`, the taps that land
 * inside the input. With a dilation the positions read are not contiguous but the taps still are:
 * a tap is inside iff `0 ≤ start + t · step < n`, an interval in `t`. The other taps fall in the
 * padding: patch gathers leave them zero and the tangent loops skip them.
 */
export interface WindowRanges {
  /** Output extent. */
  out: number;
  /** The dilation: input positions between consecutive taps (1 for a plain window). */
  step: number;
  /** `o · stride − padBefore`: the input position of tap 0 (negative inside the leading pad). */
  start: Int32Array;
  /** First tap inside the input. */
  lo: Int32Array;
  /** One past the last tap inside the input; equal to `lo` when every tap is in the padding. */
  hi: Int32Array;
}

/**
 * Valid tap ranges of every window along an axis of extent `n`, window `k`, stride `s`, dilation
 * `d` (TensorFlow's padding rule via {@link windowAxis}): tap `t` reads `start + t·d`, inside iff
 * `ceil(-start / d) ≤ t ≤ floor((n - 1 - start) / d)`.
 */
export function windowRanges(n: number, k: number, s: number, pad: Padding, layer: string, d = 1): WindowRanges {
  const { out, before } = windowAxis(n, k, s, pad, layer, d);
  const start = new Int32Array(out);
  const lo = new Int32Array(out);
  const hi = new Int32Array(out);
  for (let o = 0; o < out; o++) {
    const s0 = o * s - before;
    start[o] = s0;
    lo[o] = Math.max(0, Math.ceil(-s0 / d));
    // A large dilation on a small 'same' input can put every tap in the padding: an empty range, not a negative one.
    hi[o] = Math.max(lo[o], Math.min(k, Math.floor((n - 1 - s0) / d) + 1));
  }
  return { out, step: d, start, lo, hi };
}

/** A run of windows along an axis (see {@link windowRun}). */
export interface WindowRun {
  /** How many windows, from the first. */
  q: number;
  /** Input positions from each window's first tap to the next's. */
  step: number;
}

/**
 * The windows `o .. o + q` (`q` at most `limit`) that share window `o`'s in-bounds taps, each
 * `step` input positions after the last: a run of windows that a SIMD kernel walks in one call,
 * its start advanced by `step` per window. A valid window's row is one such run.
 */
export function windowRun(r: WindowRanges, o: number, limit: number): WindowRun {
  const step = o + 1 < r.out ? r.start[o + 1] - r.start[o] : 0;
  let q = 1;
  while (q < limit && o + q < r.out && r.lo[o + q] === r.lo[o] && r.hi[o + q] === r.hi[o] && r.start[o + q] - r.start[o + q - 1] === step) q++;
  return { q, step };
}

/**
 * The windows of one spatial axis as a pattern: output position `o` reads the input positions of
 * its window that fall inside the input (TensorFlow's padding via `windowAxis`), `d` apart.
 * `taps`: columns are the window's taps `0..k-1` instead of input positions (for kernel patterns).
 */
export function windowPattern(n: number, k: number, s: number, pad: Padding, taps = false, what = 'window', d = 1): SparsityPattern {
  const w = windowRanges(n, k, s, pad, what, d);
  const rows: number[][] = [];
  for (let o = 0; o < w.out; o++) {
    const row: number[] = [];
    for (let t = w.lo[o]; t < w.hi[o]; t++) row.push(taps ? t : w.start[o] + t * d);
    rows.push(row);
  }
  return SparsityPattern.fromRowArrays(rows, taps ? k : n);
}

/** Largest number of in-bounds taps of any window on an axis: the axis's factor of the closed-form colour counts. */
export function maxWindow(n: number, k: number, s: number, pad: Padding, d = 1): number {
  const w = windowRanges(n, k, s, pad, 'window', d);
  let m = 0;
  for (let o = 0; o < w.out; o++) m = Math.max(m, w.hi[o] - w.lo[o]);
  return m;
}

/** The window options of a 2-D pooling layer, as Keras writes them. */
export interface PoolConfig {
  /** Window `[ph, pw]`, or one number for both; default 2. */
  pool_size?: number | [number, number];
  /** Steps; default (or null): the pool size. */
  strides?: number | [number, number] | null;
  /** `'valid'` (default) or `'same'`. */
  padding?: Padding;
}

/**
 * The windows of a 2-D pooling layer (MaxPooling2D, AveragePooling2D), read from its Keras config
 * once: pool size, strides (Keras' default: the pool size, so the windows tile the image) and
 * padding, with the geometry and the structural pattern both poolings share.
 */
export class PoolWindows {
  /** Window `[ph, pw]`. */
  readonly poolSize: [number, number];
  /** Steps `[sh, sw]`. */
  readonly strides: [number, number];
  /** `'valid'` or `'same'`. */
  readonly padding: Padding;

  constructor(config: PoolConfig, layer: string) {
    this.poolSize = pair(config.pool_size ?? 2, 'pool_size', layer);
    this.strides = pair(config.strides ?? this.poolSize, 'strides', layer);
    this.padding = padding(config.padding, layer);
  }

  /** The Keras config keys of these windows. */
  config(): Required<Pick<PoolConfig, 'padding'>> & {
    /** Window `[ph, pw]`. */
    pool_size: number[];
    /** Steps `[sh, sw]`. */
    strides: number[]
  } {
    return { pool_size: this.poolSize.slice(), strides: this.strides.slice(), padding: this.padding };
  }

  /** Window ranges on an `H × W` image; a 'valid' pool larger than the image is refused, quoting both. */
  ranges(H: number, W: number, layer: string): {
    /** The windows along the rows. */
    rows: WindowRanges;
    /** The windows along the columns. */
    cols: WindowRanges
  } {
    const [ph, pw] = this.poolSize;
    if (this.padding === 'valid' && (ph > H || pw > W)) {
      throw new ShapeError(`${layer}: expected pool_size [${ph}, ${pw}] to fit the input's spatial extent [${H}, ${W}] with padding "valid", received an input of [${H}, ${W}] (use padding "same" or a smaller pool)`);
    }
    return { rows: windowRanges(H, ph, this.strides[0], this.padding, layer), cols: windowRanges(W, pw, this.strides[1], this.padding, layer) };
  }

  /** The per-sample output shape `[Ho, Wo, C]` for an input `[H, W, C]` (NHWC, rank 3 refused otherwise). */
  outputShape(inputShape: readonly number[], layer: string): number[] {
    if (inputShape.length !== 3) throw new ShapeError(`${layer}: expected a per-sample input of rank 3 ([H, W, C], NHWC), received [${inputShape.join(', ')}] (rank ${inputShape.length})`);
    const { rows, cols } = this.ranges(inputShape[0], inputShape[1], layer);
    return [rows.out, cols.out, inputShape[2]];
  }

  /** Each output reads a window of rows and of columns, in its own channel. */
  structure(inputShape: readonly number[], layer: string): AxisStructure {
    const [H, W] = inputShape;
    return {
      inDims: inputShape.slice(),
      maps: [
        { kind: 'matrix', pattern: windowPattern(H, this.poolSize[0], this.strides[0], this.padding, false, layer) },
        { kind: 'matrix', pattern: windowPattern(W, this.poolSize[1], this.strides[1], this.padding, false, layer) },
        { kind: 'identity' },
      ],
    };
  }
}

/**
 * `allclose` with a report: compares shapes first, then every element with NumPy's rule
 * `|a - e| <= atol + rtol · |e|`, and names the worst element when it fails.
 * @module
 */
import { ConfigError, ShapeError, fmtShape, fmtValue } from './errors.js';
import type { Jacobian } from './jacobian.js';
import { type Tensor, contiguous, stridesOf } from './tensor.js';

/** Tolerances and NaN handling: NumPy's defaults (`rtol = 1e-5`, `atol = 1e-8`, `equal_nan = False`). */
export interface AllcloseOptions {
  /** Relative tolerance, scaled by `|expected|`; default `1e-5`. */
  rtol?: number;
  /** Absolute tolerance; default `1e-8`. */
  atol?: number;
  /** Whether a NaN matches a NaN at the same index; default false, as NumPy's `equal_nan`. */
  equalNan?: boolean;
}

/** The options with their defaults, checked: a tolerance that is negative, NaN or not a number would make every comparison meaningless. */
function resolveOptions(opts: AllcloseOptions | undefined, where: string): Required<AllcloseOptions> {
  if (opts === undefined || opts === null) opts = {};
  if (typeof opts !== 'object') throw new ConfigError(`${where}: expected options {rtol, atol, equalNan}, received ${fmtValue(opts)}`);
  for (const k of Object.keys(opts)) {
    if (k !== 'rtol' && k !== 'atol' && k !== 'equalNan') throw new ConfigError(`${where}: unknown option ${JSON.stringify(k)}; expected rtol, atol or equalNan`);
  }
  const tol = (v: unknown, key: string, dflt: number): number => {
    if (v === undefined) return dflt;
    if (typeof v !== 'number' || !(v >= 0) || v === Infinity) throw new ConfigError(`${where}: expected ${key} to be a non-negative finite number, received ${fmtValue(v)}`);
    return v;
  };
  if (opts.equalNan !== undefined && typeof opts.equalNan !== 'boolean') throw new ConfigError(`${where}: expected equalNan to be a boolean, received ${fmtValue(opts.equalNan)}`);
  return { rtol: tol(opts.rtol, 'rtol', 1e-5), atol: tol(opts.atol, 'atol', 1e-8), equalNan: opts.equalNan ?? false };
}

/**
 * Anything `allclose` compares: a tensor, a Jacobian, a `{shape, data}` object, nested arrays, a
 * number, or `null` (a non-trainable parameter's gradient), which equals only `null`.
 */
export type Comparable = null | Tensor | Jacobian | {
  /** Its shape. */
  shape: readonly number[];
  /** Its values, row-major. */
  data: ArrayLike<number>
} | number | readonly unknown[];

/** The outcome of a comparison, with the worst element when shapes match. */
export interface AllcloseReport {
  /** True when the shapes match and every element is within tolerance. */
  pass: boolean;
  /** Shape of the actual value. */
  shapeActual: number[];
  /** Shape of the expected value. */
  shapeExpected: number[];
  /** Elements outside tolerance. */
  mismatches: number;
  /** Elements compared. */
  size: number;
  /** The element furthest outside (or nearest to) its tolerance. */
  worst: {
    /** Its multi-index. */
    index: number[];
    /** The actual value there. */
    actual: number;
    /** The expected value there. */
    expected: number;
    /** `|actual − expected|`. */
    absError: number;
    /** `|actual − expected| / |expected|`. */
    relError: number
  } | null;
  /** Largest `|a - e| / |e|` over all elements (0/0 counted as 0). */
  maxRelError: number;
  /** Largest `|a - e|` over all elements. */
  maxAbsError: number;
  /** Set when one side is `null` and the other is not (a gradient given where none is due, or missing). */
  nullSide?: 'actual' | 'expected';
}

/**
 * Reads any {@link Comparable} as a flat row-major array and its shape. Nested arrays must be
 * rectangular and hold numbers only: a ragged row or a string would otherwise be compared as NaN.
 * @throws ShapeError quoting what was received.
 */
export function flatten(v: Comparable): {
  /** The shape. */
  shape: number[];
  /** The values, row-major. */
  data: ArrayLike<number>
} {
  if (typeof v === 'number') return { shape: [], data: [v] };
  if (Array.isArray(v)) {
    const shape: number[] = [];
    let cur: unknown = v;
    while (Array.isArray(cur)) {
      shape.push(cur.length);
      cur = cur[0];
    }
    const data: number[] = [];
    const index: number[] = [];
    const walk = (x: unknown, axis: number): void => {
      if (axis === shape.length) {
        if (typeof x !== 'number') throw new ShapeError(`allclose: expected numbers in nested arrays, received ${fmtValue(x)} at [${index.join(', ')}]`);
        data.push(x);
        return;
      }
      if (!Array.isArray(x) || x.length !== shape[axis]) {
        throw new ShapeError(`allclose: expected rectangular nested arrays of shape ${fmtShape(shape)}, received ${Array.isArray(x) ? `a row of ${x.length}` : fmtValue(x)} at [${index.join(', ')}]`);
      }
      for (let i = 0; i < x.length; i++) {
        index.push(i);
        walk(x[i], axis + 1);
        index.pop();
      }
    };
    walk(v, 0);
    return { shape, data };
  }
  const o = v as { toDense?: () => Tensor; stride?: number[]; shape: readonly number[]; data: ArrayLike<number> } | null;
  if (o && typeof o === 'object') {
    if (typeof o.toDense === 'function') return flatten(o.toDense());
    if (Array.isArray(o.stride)) {
      const c = contiguous(o as unknown as Tensor);
      return { shape: c.shape.slice(), data: c.data.subarray(0, c.size) };
    }
    if (Array.isArray(o.shape) && o.data && typeof o.data.length === 'number') {
      const n = o.shape.reduce((a: number, d: unknown) => a * (typeof d === 'number' ? d : NaN), 1);
      if (n !== o.data.length) throw new ShapeError(`allclose: expected {shape, data} with ${n} values for shape ${fmtShape(o.shape)}, received ${o.data.length}`);
      return { shape: o.shape.slice(), data: o.data };
    }
  }
  throw new ShapeError(`allclose: expected a tensor, a Jacobian, {shape, data}, nested arrays or a number, received ${fmtValue(v)}`);
}

/**
 * Compares two tensors (or Jacobians, or arrays) element by element and reports the worst element.
 * @example
 * const r = allcloseReport(jacobianWrtInput(dense, x), expectedJ, { rtol: 1e-10 });
 * if (!r.pass) console.log(r.worst);
 */
export function allcloseReport(actual: Comparable, expected: Comparable, opts: AllcloseOptions = {}): AllcloseReport {
  const { rtol, atol, equalNan } = resolveOptions(opts, 'allclose');
  if (actual === null || expected === null) {
    const both = actual === null && expected === null;
    const other = both ? { shape: [] } : flatten((actual ?? expected)!);
    return { pass: both, shapeActual: actual === null ? [] : other.shape, shapeExpected: expected === null ? [] : other.shape, size: 0, mismatches: both ? 0 : 1, worst: null, maxRelError: both ? 0 : Infinity, maxAbsError: both ? 0 : Infinity, ...(both ? {} : { nullSide: actual === null ? 'actual' as const : 'expected' as const }) };
  }
  const a = flatten(actual);
  const e = flatten(expected);
  const base = { shapeActual: a.shape, shapeExpected: e.shape, size: e.data.length };
  if (a.shape.length !== e.shape.length || a.shape.some((d, i) => d !== e.shape[i])) {
    return { ...base, pass: false, mismatches: Math.max(a.data.length, e.data.length), worst: null, maxRelError: Infinity, maxAbsError: Infinity };
  }
  let mismatches = 0;
  let worstK = -1;
  let worstScore = -Infinity;
  let maxRel = 0;
  let maxAbs = 0;
  for (let k = 0; k < e.data.length; k++) {
    const av = a.data[k];
    const ev = e.data[k];
    const err = Math.abs(av - ev);
    const tol = atol + rtol * Math.abs(ev);
    // NaN on either side is a mismatch, even NaN against NaN unless equalNan (NumPy's equal_nan);
    // equal infinities match. An infinite expected value makes tol infinite, so only an equal
    // infinity may match it (as NumPy).
    const bothNaN = equalNan && Number.isNaN(av) && Number.isNaN(ev);
    const ok = bothNaN || av === ev || (err <= tol && Number.isFinite(ev));
    const score = bothNaN || av === ev ? 0 : Number.isNaN(err) || !Number.isFinite(ev) ? Infinity : err / (tol || Number.MIN_VALUE);
    if (!ok) mismatches++;
    if (score > worstScore) {
      worstScore = score;
      worstK = k;
    }
    if (!(av === ev)) {
      maxAbs = Math.max(maxAbs, Number.isNaN(err) ? Infinity : err);
      maxRel = Math.max(maxRel, ev === 0 ? (err === 0 ? 0 : Infinity) : err / Math.abs(ev));
    }
  }
  let worst: AllcloseReport['worst'] = null;
  if (worstK >= 0) {
    const av = a.data[worstK];
    const ev = e.data[worstK];
    const idx: number[] = [];
    let r = worstK;
    for (const s of stridesOf(e.shape)) {
      idx.push(Math.floor(r / s));
      r %= s;
    }
    const absError = Math.abs(av - ev);
    worst = { index: idx, actual: av, expected: ev, absError, relError: ev === 0 ? (absError === 0 ? 0 : Infinity) : absError / Math.abs(ev) };
  }
  return { ...base, pass: mismatches === 0, mismatches, worst, maxRelError: maxRel, maxAbsError: maxAbs };
}

/** True when every element is within tolerance and the shapes match. */
export function allclose(actual: Comparable, expected: Comparable, opts: AllcloseOptions = {}): boolean {
  return allcloseReport(actual, expected, opts).pass;
}

/** The failure text: shapes first, then the worst element with both values and both errors. */
export function describeReport(r: AllcloseReport, opts: AllcloseOptions = {}): string {
  const { rtol, atol, equalNan } = resolveOptions(opts, 'allclose');
  if (r.nullSide) return r.nullSide === 'actual' ? `expected a tensor of shape [${r.shapeExpected.join(', ')}], received null` : `expected null, received shape [${r.shapeActual.join(', ')}]`;
  if (r.worst === null && r.mismatches > 0) {
    return `expected shape [${r.shapeExpected.join(', ')}], received shape [${r.shapeActual.join(', ')}]`;
  }
  const w = r.worst;
  if (!w) return 'no elements';
  return (
    `${r.mismatches} of ${r.size} elements differ beyond rtol=${rtol}, atol=${atol}; worst at [${w.index.join(', ')}]: ` +
    `actual ${w.actual}, expected ${w.expected}, abs error ${w.absError.toExponential(3)}, rel error ${w.relError.toExponential(3)}` +
    (!equalNan && Number.isNaN(w.actual) && Number.isNaN(w.expected) ? ' (NaN matches NaN only with { equalNan: true })' : '')
  );
}

/** What {@link maxDifference} returns. */
export interface MaxDifference {
  /** Largest `|a - e|`. */
  maxAbs: number;
  /** Largest `|e|`. */
  maxRef: number;
  /** `maxAbs / maxRef` (or `maxAbs` when the reference is all zero). */
  rel: number;
}

/**
 * The largest absolute difference, and the same relative to the largest reference magnitude: the
 * one-number summary the commands print when a gradient is compared with its reference.
 * @example
 * maxDifference(chained, vjpGradient).rel; // 9.8e-16
 */
export function maxDifference(actual: Comparable, expected: Comparable): MaxDifference {
  if (actual === null && expected === null) return { maxAbs: 0, maxRef: 0, rel: 0 };
  if (actual === null || expected === null) throw new TypeError(`maxDifference: expected ${expected === null ? 'null' : 'a tensor'}, received ${actual === null ? 'null' : 'a tensor'}`);
  const a = flatten(actual);
  const e = flatten(expected);
  if (a.data.length !== e.data.length) throw new ShapeError(`maxDifference: expected ${e.data.length} values, received ${a.data.length}`);
  let maxAbs = 0;
  let maxRef = 0;
  for (let i = 0; i < e.data.length; i++) {
    maxAbs = Math.max(maxAbs, Math.abs(a.data[i] - e.data[i]));
    maxRef = Math.max(maxRef, Math.abs(e.data[i]));
  }
  return { maxAbs, maxRef, rel: maxRef === 0 ? maxAbs : maxAbs / maxRef };
}

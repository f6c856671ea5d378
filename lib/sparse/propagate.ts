/**
 * Sparse forward accumulation: the Jacobian of a stage as the chain rule over its layers,
 * `J = L_n ⋯ L_2 L_1`, where every activation carries only its non-zero derivative parts (a sparse
 * tangent row over the stage's input columns) instead of a dense block of `T` tangents. Nothing
 * structurally zero, and nothing value-dependently zero (a ReLU that is off, a pooling window's
 * losers, a dropped unit), is ever computed or stored.
 *
 * Each layer contributes its local Jacobian `L_k` by rows:
 * - Conv2D and Dense: the linear map's rows are the kernel's entries (the Jacobian of a linear map
 *   is its matrix), times the fused activation's derivative, read from the activation primitive's
 *   dual-number rule on a unit tangent;
 * - every other layer (Activation, MaxPooling2D, Flatten, Dropout): by compressed forward mode on
 *   the layer alone (its closed-form colouring needs 1 to `ph·pw` colours, or the softmax row), the
 *   same dual-number `jvp` the dense builders use, decompressed and stripped of exact zeros.
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
import { type ActivationName, activationJvp } from '../activations.js';
import { ConfigError, ShapeError, fmtShape } from '../errors.js';
import type { Differentiable, Forward, ForwardOptions } from '../layers/layer.js';
import { windowRanges } from '../layers/layer.js';
import { type Data, type Tensor, allocData, assertFinite, assertShape, contiguous, dtypeOf, sizeOf, zeros } from '../tensor.js';
import { kronColumnColouring } from './coloring.js';
import { compressedForward } from './compressed.js';
import { CsrMatrix, SparseJacobian } from './csr.js';
import { type LayerLike, asKnownLayer, layerInputKron, ownerOf } from './pattern.js';

/** A layer's local Jacobian, row by row, for every sample of a recorded pass. */
export interface LocalJacobian {
  /** Per-sample rows (the layer's outputs). */
  readonly rows: number;
  /** Per-sample columns (the layer's inputs, or a parameter's entries). */
  readonly cols: number;
  /** Every row has at most one entry: composed as an index map, never materialized. */
  readonly single: boolean;
  /** Most entries any row may have (sizes the row buffers). */
  readonly maxRowNnz: number;
  /** Writes row `o` of sample `b` as columns and coefficients; returns the count. */
  row(b: number, o: number, idx: Int32Array, coef: Float64Array): number;
}

/** One layer of a recorded pass: the layer, what its forward saved, its input and output. */
export interface LayerPass {
  /** The layer. */
  layer: LayerLike;
  /** What its forward pass saved (its `Saved`). */
  saved: unknown;
  /** Its input `[B, ...in]`. */
  x: Tensor;
  /** Its output `[B, ...out]`. */
  y: Tensor;
}

/** The leaf layers of a recorded pass of `f` (a known layer or a stack of them), with their saved residuals; null when the structure is unknown. */
export function layerPasses(f: Differentiable, x: Tensor, fwd: Forward<unknown>): LayerPass[] | null {
  const leaf = asKnownLayer(f);
  if (leaf) return [{ layer: leaf, saved: fwd.saved, x, y: fwd.y }];
  const layers = (f as { layers?: unknown }).layers;
  const saved = fwd.saved as { perLayer?: unknown[]; outputs?: Tensor[] } | null;
  if (!Array.isArray(layers) || !saved || !Array.isArray(saved.perLayer) || !Array.isArray(saved.outputs) || saved.perLayer.length !== layers.length) return null;
  const out: LayerPass[] = [];
  let h = x;
  for (let i = 0; i < layers.length; i++) {
    const inner = layerPasses(layers[i] as Differentiable, h, { y: saved.outputs[i], saved: saved.perLayer[i] });
    if (!inner) return null;
    out.push(...inner);
    h = saved.outputs[i];
  }
  return out;
}

/** `act'` at every element, from the activation's dual-number rule on a unit tangent (reading the saved `z` or `y`, as the rule needs); null for softmax (not diagonal). */
export function activationDiagonal(act: ActivationName, z: Data | null, y: Data, n: number, rowLength: number): Float64Array | null {
  if (act === 'softmax') return null;
  const d = new Float64Array(n).fill(1);
  activationJvp(act, z, y, d, n, 1, rowLength);
  return d;
}

/** The pre-activation `z` that Conv2D and Dense save for gelu, swish/silu and softsign, or null. */
function savedZ(p: LayerPass): Data | null {
  const z = (p.saved as { z?: Tensor | null } | null)?.z;
  return z ? z.data.subarray(z.offset, z.offset + z.size) : null;
}

/** The saved `{x, y}` of Conv2D and Dense, checked. */
function xy(p: LayerPass): { x: Data; y: Data } {
  const s = p.saved as { x?: Tensor; y?: Tensor };
  if (!s || !s.x || !s.y) throw new ConfigError(`sparse propagation: expected ${p.layer.describe()} to save its input x and output y, received ${Object.keys(s ?? {}).join(', ') || 'nothing'}`);
  return { x: s.x.data.subarray(s.x.offset, s.x.offset + s.x.size), y: s.y.data.subarray(s.y.offset, s.y.offset + s.y.size) };
}

/**
 * Conv2D's local Jacobian w.r.t. its input (`wrt = 'input'`), its kernel or its bias: row
 * `(oh, ow, co)` is the window's kernel column (or the window's inputs, or one entry), scaled by
 * the activation's derivative; with a fused softmax, combined over the channels.
 */
export function convLocal(p: LayerPass, wrt: 'input' | 'kernel' | 'bias'): LocalJacobian {
  const L = p.layer;
  const [H, W, Cin] = L.inputShape;
  const [kh, kw] = L.kernelSize!;
  const [sh, sw] = L.strides!;
  const Cout = L.filters!;
  const rA = windowRanges(H, kh, sh, L.padding!, L.describe());
  const cA = windowRanges(W, kw, sw, L.padding!, L.describe());
  const Wk = L.params[0].value.data;
  const { x, y } = xy(p);
  const nOut = rA.out * cA.out * Cout;
  const nIn = H * W * Cin;
  const act = L.activation as ActivationName;
  const diag = activationDiagonal(act, savedZ(p), y, y.length, Cout);
  const K = kh * kw * Cin;
  const coupled = !diag && wrt !== 'input';
  const rows = nOut;
  const cols = wrt === 'input' ? nIn : wrt === 'kernel' ? K * Cout : Cout;
  const maxRowNnz = wrt === 'bias' ? (diag ? 1 : Cout) : K * (coupled ? Cout : 1);
  const yc = new Float64Array(Cout);
  return {
    rows,
    cols,
    single: wrt === 'bias' && !!diag,
    maxRowNnz,
    row(b, o, idx, coef) {
      const co = o % Cout;
      const pix = (o - co) / Cout;
      const ow = pix % cA.out;
      const oh = (pix - ow) / cA.out;
      const yo = b * nOut + pix * Cout;
      let a = 1;
      if (diag) {
        a = diag[yo + co];
        if (a === 0) return 0;
      } else {
        for (let c = 0; c < Cout; c++) yc[c] = y[yo + c];
      }
      const ycCo = yc[co];
      let n = 0;
      if (wrt === 'bias') {
        if (diag) {
          idx[0] = co;
          coef[0] = a;
          return 1;
        }
        // Softmax: ∂y_co/∂b_c = y_co (δ - y_c).
        for (let c = 0; c < Cout; c++) {
          const v = ycCo * ((c === co ? 1 : 0) - yc[c]);
          if (v !== 0) {
            idx[n] = c;
            coef[n++] = v;
          }
        }
        return n;
      }
      const ih0 = rA.start[oh];
      const iw0 = cA.start[ow];
      for (let i = rA.lo[oh]; i < rA.hi[oh]; i++) {
        for (let j = cA.lo[ow]; j < cA.hi[ow]; j++) {
          const xo = ((b * H + ih0 + i) * W + iw0 + j) * Cin;
          const tap0 = (i * kw + j) * Cin;
          for (let ci = 0; ci < Cin; ci++) {
            const tap = tap0 + ci;
            if (wrt === 'input') {
              let v: number;
              if (diag) v = a * Wk[tap * Cout + co];
              else {
                // Softmax over the channels: Σ_c y_co (δ - y_c) W[tap, c].
                let s = 0;
                for (let c = 0; c < Cout; c++) s += yc[c] * Wk[tap * Cout + c];
                v = ycCo * (Wk[tap * Cout + co] - s);
              }
              if (v !== 0) {
                idx[n] = xo - b * nIn + ci;
                coef[n++] = v;
              }
            } else {
              const xv = x[xo + ci];
              if (xv === 0) continue;
              if (diag) {
                idx[n] = tap * Cout + co;
                coef[n++] = a * xv;
              } else {
                for (let c = 0; c < Cout; c++) {
                  const v = ycCo * ((c === co ? 1 : 0) - yc[c]) * xv;
                  if (v !== 0) {
                    idx[n] = tap * Cout + c;
                    coef[n++] = v;
                  }
                }
              }
            }
          }
        }
      }
      return n;
    },
  };
}

/** Dense's local Jacobian w.r.t. its input, kernel or bias: row `o` is `Wᵀ`'s row (or `x`, or one entry) times the activation's derivative. */
export function denseLocal(p: LayerPass, wrt: 'input' | 'kernel' | 'bias'): LocalJacobian {
  const L = p.layer;
  const nIn = L.inputShape[0];
  const u = L.units!;
  const Wk = L.params[0].value.data;
  const { x, y } = xy(p);
  const diag = activationDiagonal(L.activation as ActivationName, savedZ(p), y, y.length, u);
  const cols = wrt === 'input' ? nIn : wrt === 'kernel' ? nIn * u : u;
  const coupled = !diag && wrt !== 'input';
  const maxRowNnz = wrt === 'bias' ? (diag ? 1 : u) : nIn * (coupled ? u : 1);
  const colSum = new Float64Array(nIn);
  return {
    rows: u,
    cols,
    single: wrt === 'bias' && !!diag,
    maxRowNnz,
    row(b, o, idx, coef) {
      const yo = b * u;
      let n = 0;
      if (diag) {
        const a = diag[yo + o];
        if (a === 0) return 0;
        if (wrt === 'bias') {
          idx[0] = o;
          coef[0] = a;
          return 1;
        }
        for (let i = 0; i < nIn; i++) {
          const v = wrt === 'input' ? a * Wk[i * u + o] : a * x[b * nIn + i];
          if (v !== 0) {
            idx[n] = wrt === 'input' ? i : i * u + o;
            coef[n++] = v;
          }
        }
        return n;
      }
      // Softmax: ∂y_o/∂z_c = y_o (δ_oc - y_c).
      const yO = y[yo + o];
      if (wrt === 'bias') {
        for (let c = 0; c < u; c++) {
          const v = yO * ((c === o ? 1 : 0) - y[yo + c]);
          if (v !== 0) {
            idx[n] = c;
            coef[n++] = v;
          }
        }
        return n;
      }
      if (wrt === 'input') {
        for (let i = 0; i < nIn; i++) {
          let s = 0;
          for (let c = 0; c < u; c++) s += y[yo + c] * Wk[i * u + c];
          colSum[i] = s;
        }
        for (let i = 0; i < nIn; i++) {
          const v = yO * (Wk[i * u + o] - colSum[i]);
          if (v !== 0) {
            idx[n] = i;
            coef[n++] = v;
          }
        }
        return n;
      }
      for (let i = 0; i < nIn; i++) {
        const xv = x[b * nIn + i];
        if (xv === 0) continue;
        for (let c = 0; c < u; c++) {
          const v = yO * ((c === o ? 1 : 0) - y[yo + c]) * xv;
          if (v !== 0) {
            idx[n] = i * u + c;
            coef[n++] = v;
          }
        }
      }
      return n;
    },
  };
}

/**
 * A diagonal layer's local Jacobian (element-wise activation, Dropout, Flatten), by compressed
 * forward mode with its closed-form colouring: one colour, so one `jvp` with a unit tangent `T = 1`
 * gives the whole diagonal, which needs no decompression. Zeros (a ReLU that is off, a dropped
 * unit) make empty rows.
 */
export function diagonalLocal(p: LayerPass): LocalJacobian {
  const L = p.layer;
  const B = p.x.shape[0];
  const n = sizeOf(L.inputShape);
  const seed = zeros([...p.x.shape, 1], dtypeOf(p.x));
  seed.data.fill(1);
  const dy = contiguous(L.jvp(p.saved, { dx: seed, dParams: null, T: 1 }));
  assertShape(dy, [B, ...L.outputShape, 1], `${L.describe()} jvp output`);
  const d = dy.data.subarray(dy.offset, dy.offset + dy.size);
  return {
    rows: n,
    cols: n,
    single: true,
    maxRowNnz: 1,
    row(b, o, idx, coef) {
      const v = d[b * n + o];
      if (v === 0) return 0;
      idx[0] = o;
      coef[0] = v;
      return 1;
    },
  };
}

/** A local Jacobian held as per-sample CSR matrices. */
export function csrLocal(J: SparseJacobian): LocalJacobian {
  let single = true;
  let maxRowNnz = 0;
  for (const m of J.samples) {
    const r = m.maxRowNnz();
    maxRowNnz = Math.max(maxRowNnz, r);
    if (r > 1) single = false;
  }
  const rows = J.samples[0]?.rows ?? 0;
  const cols = J.samples[0]?.cols ?? 0;
  return {
    rows,
    cols,
    single,
    maxRowNnz,
    row(b, o, idx, coef) {
      const m = J.samples[b];
      const a = m.rowPtr[o];
      const n = m.rowPtr[o + 1] - a;
      for (let k = 0; k < n; k++) {
        idx[k] = m.colIdx[a + k];
        coef[k] = m.values[a + k];
      }
      return n;
    },
  };
}

/**
 * A layer's local Jacobian w.r.t. its input: from the kernel for Conv2D and Dense, by compressed
 * forward mode through the layer's own `jvp` (closed-form colouring) for the others.
 */
export function localInputJacobian(p: LayerPass): LocalJacobian {
  const L = p.layer;
  if (L.className === 'Conv2D') return convLocal(p, 'input');
  if (L.className === 'Dense') return denseLocal(p, 'input');
  if (L.className === 'Flatten' || L.className === 'Dropout' || (L.className === 'Activation' && L.activation !== 'softmax')) return diagonalLocal(p);
  const kron = layerInputKron(L);
  const J = compressedForward(L, p.x, { forward: { y: p.y, saved: p.saved }, pattern: kron.expand(), colouring: kronColumnColouring(kron) });
  // Exact zeros were dropped: a pooling row keeps its winner only.
  return csrLocal(J);
}

/** A layer's local Jacobian w.r.t. its parameter `k` (Conv2D and Dense: `kernel`, `bias`). */
export function localParamJacobian(p: LayerPass, k: number): LocalJacobian {
  const L = p.layer;
  const name = L.params[k]?.name;
  if (name !== 'kernel' && name !== 'bias') throw new ConfigError(`sparse propagation: ${L.describe()} has no parameter ${k} (kernel or bias), received ${String(name)}`);
  if (L.className === 'Conv2D') return convLocal(p, name);
  if (L.className === 'Dense') return denseLocal(p, name);
  throw new ConfigError(`sparse propagation: no parameter rule for ${L.describe()}`);
}

/** Row storage that grows by half when full. */
class RowWriter {
  colIdx: Int32Array;
  values: Float64Array;
  n = 0;
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
  /** The finished matrix; trailing capacity is kept as a view unless it wastes more than a quarter. */
  finish(rows: number, cols: number, dtype: 'float64' | 'float32'): CsrMatrix {
    const n = this.n;
    const tight = n >= 0.75 * this.colIdx.length;
    const colIdx = tight ? this.colIdx.subarray(0, n) : this.colIdx.slice(0, n);
    let values: Data;
    if (dtype === 'float32') values = Float32Array.from(this.values.subarray(0, n));
    else values = tight ? this.values.subarray(0, n) : this.values.slice(0, n);
    return new CsrMatrix(rows, cols, this.rowPtr, colIdx, values);
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
  if (!passes) throw new ConfigError(`propagateJacobian: expected a layer or a stack of ${['Conv2D', 'Dense', 'Activation', 'MaxPooling2D', 'Flatten', 'Dropout'].join(', ')} layers, received ${describe(f)}`);
  const wrt = opts.wrt ?? 'input';
  let first = 0;
  let local0: LocalJacobian | null = null;
  let colShape = f.inputShape;
  if (wrt !== 'input') {
    const p = f.params[wrt];
    if (!p) throw new ShapeError(`propagateJacobian: expected wrt to be 'input' or a parameter index in 0..${f.params.length - 1}, received ${wrt}`);
    const owner = ownerOf(passes.map((q) => q.layer), p);
    if (!owner) throw new ConfigError(`propagateJacobian: parameter ${wrt} (${p.name}) of ${describe(f)} belongs to none of its layers`);
    first = owner.layer;
    local0 = localParamJacobian(passes[first], owner.param);
    colShape = p.value.shape;
  }
  const B = x.shape[0];
  const dtype = dtypeOf(x);
  const nCols = sizeOf(colShape);
  // Local Jacobians of the layers after the start (w.r.t. a parameter: the start is the parameter's own rows).
  const locals: LocalJacobian[] = passes.map((q, i) => (i < first ? (null as unknown as LocalJacobian) : i === first && local0 ? local0 : localInputJacobian(q)));
  const last = passes.length - 1;
  let lastMulti = -1;
  for (let i = first; i <= last; i++) if (!locals[i].single) lastMulti = i;
  const sort = opts.sortRows ?? true;
  const samples: CsrMatrix[] = [];
  const steps = B * (last - first + 1);
  const maxLocal = Math.max(1, ...locals.slice(first).map((l) => l.maxRowNnz));
  const idx = new Int32Array(maxLocal);
  const coef = new Float64Array(maxLocal);
  for (let b = 0; b < B; b++) {
    // Backward sweep: which rows of each layer's output some later row needs.
    const needed: Uint8Array[] = new Array(passes.length);
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
      const w: RowWriter = new RowWriter(targets.length, Math.min(1 << 22, Math.ceil(targets.length * Math.min(nCols, L.maxRowNnz * avgIn) * 0.5)));
      for (let t = 0; t < targets.length; t++) {
        const r = targets[t];
        if (r >= 0) {
          const n = L.row(b, r, idx, coef);
          stamp++;
          const cnt = M === null ? accumulateIdentity(n, idx, coef, tscale ? tscale[t] : 1, alias, scale, stamp, mark, acc, touched) : accumulateRows(n, idx, coef, tscale ? tscale[t] : 1, alias, scale, M.rowPtr, M.colIdx, M.values as Float64Array, stamp, mark, acc, touched);
          if (sort && cnt > 1) touched.subarray(0, cnt).sort();
          w.ensure(cnt, t + 1, targets.length);
          w.n = writeRow(cnt, touched, acc, w.colIdx, w.values, w.n);
        }
        w.rowPtr[t + 1] = w.n;
      }
      const isResult = i === lastMulti;
      M = w.finish(targets.length, nCols, isResult ? dtype : 'float64');
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
  const label = wrt === 'input' ? 'w.r.t. input' : `w.r.t. ${f.params[wrt].name}`;
  return new SparseJacobian(samples, f.outputShape, colShape, wrt === 'input' ? 'input' : 'param', dtype, label);
}

/**
 * One tangent row as a combination of rows of the level below: `Σ_e coef[e] · ts · scale[src] · M[alias[src]]`,
 * accumulated densely in `acc` at the columns listed in `touched` (first touch marked by `stamp`).
 * A separate small function keeps the hot loop monomorphic for the JIT.
 */
function accumulateRows(n: number, idx: Int32Array, coef: Float64Array, ts: number, alias: Int32Array | null, scale: Float64Array | null, rowPtr: Int32Array, colIdx: Int32Array, vals: Float64Array, stamp: number, mark: Int32Array, acc: Float64Array, touched: Int32Array): number {
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
    for (let q = rowPtr[src]; q < qe; q++) {
      const j = colIdx[q];
      if (mark[j] !== stamp) {
        mark[j] = stamp;
        acc[j] = c * vals[q];
        touched[cnt++] = j;
      } else {
        acc[j] += c * vals[q];
      }
    }
  }
  return cnt;
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

/** Appends the non-zeros among the touched columns to the output arrays; returns the new length. */
function writeRow(cnt: number, touched: Int32Array, acc: Float64Array, outC: Int32Array, outV: Float64Array, k: number): number {
  for (let e = 0; e < cnt; e++) {
    const j = touched[e];
    const v = acc[j];
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

function describe(f: Differentiable): string {
  const d = (f as { describe?: () => string }).describe;
  const c = (f as { className?: string }).className;
  return typeof d === 'function' ? d.call(f) : c ? `a ${c}` : `a Differentiable of input ${fmtShape(f.inputShape)}`;
}

/** True when {@link propagateJacobian} can build Jacobians of `f` (its layers are all known). */
export function canPropagate(f: Differentiable): boolean {
  if (asKnownLayer(f)) return true;
  const layers = (f as { layers?: unknown }).layers;
  return Array.isArray(layers) && layers.length > 0 && layers.every((l) => canPropagate(l as Differentiable));
}

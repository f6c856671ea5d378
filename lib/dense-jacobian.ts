/**
 * The dense engine: Jacobians stored densely and built column by column with forward-mode dual
 * numbers (a block of `T` tangents per pass), or row by row from VJPs of basis cotangents (the
 * reverse-mode reference). It knows nothing of the structured engines (`lib/sparse`); the router
 * in `lib/jacobian.ts` picks between them.
 *
 * Layout, said once and kept everywhere: a Jacobian of `y = f(x)` is `[...outShape, ...inShape]`,
 * row-major; a batch Jacobian leads with the batch axis once: `[B, ...out, ...in]` holds
 * `∂y[b, o] / ∂x[b, i]` (samples are independent, so cross-sample blocks are zero and not stored);
 * a Jacobian w.r.t. a parameter is `[B, ...out, ...param]` (TensorFlow's `jacobian` of the batched
 * output w.r.t. a weight shared by the batch). Where a layer couples the samples
 * (BatchNormalization in training), the batch Jacobian is refused and the full Jacobian
 * `[B, ...out, B, ...in]` ({@link fullJacobianWrtInput}) holds every cross-sample term.
 * @module
 */
import { recycleBuffer } from './buffer-pool.js';
import { ConfigError, ShapeError, fmtShape } from './errors.js';
import { contractDense } from './helpers.js';
import { type Differentiable, type ForwardOptions, type Forward, type Tangents, describeOf, leavesOf, trainableIndices } from './layers/layer.js';
import { TangentPool, deliverTangent } from './layers/out.js';
import { getMemoryBudget, guardBytes } from './memory.js';
import ndarray from 'ndarray';
import { type DType, type Tensor, assertFinite, assertShape, bytesPerElement, contiguous, dtypeOf, isContiguous, sizeOf, stridesOf, tensor, zeros } from './tensor.js';

/**
 * What every Jacobian format offers; the chain helpers accept any of them: `dense` here, `sparse`
 * (per-sample CSR) in `lib/sparse/csr.ts`, `factored` (a weight Jacobian as a CSR factor times a
 * layer's patches ⊗ identity) in `lib/sparse/factored.ts`.
 */
export interface Jacobian {
  /** `dense`, `sparse` or `factored`. */
  readonly format: 'dense' | 'sparse' | 'factored';
  /** `[B, ...out, ...in]` (or `[...out, ...in]` when `batch` is null). */
  readonly shape: readonly number[];
  /** Leading batch extent, or null for an unbatched Jacobian. */
  readonly batch: number | null;
  /** Per-sample output shape (the rows). */
  readonly outShape: readonly number[];
  /** Per-sample input or parameter shape (the columns). */
  readonly inShape: readonly number[];
  /** Bytes of the stored values. */
  readonly bytes: number;
  /** The values as a dense `[B, ...out, ...in]` tensor (a view when already dense). */
  toDense(): Tensor;
  /**
   * The cotangent contraction `Σ_out dy[b, out] · J[b, out, …in]` → `[B, ...in]`, or with
   * `sumBatch` also summed over the batch → `[...in]` (a parameter shared by the batch): the seed's
   * `upstream_gradient_loss_out` and `upstream_gradient_loss_weights`. Each format contracts
   * without densifying.
   */
  vjp(dy: Tensor, sumBatch: boolean): Tensor;
}

/** A Jacobian stored densely, row-major, as one tensor. */
export class DenseJacobian implements Jacobian {
  readonly format = 'dense' as const;
  constructor(
    /** The values, shaped `[B, ...out, ...in]`. */
    readonly values: Tensor,
    readonly batch: number | null,
    readonly outShape: readonly number[],
    readonly inShape: readonly number[],
    /** What it differentiates, for reports: `conv2d_1 w.r.t. input`. */
    readonly label = '',
  ) {
    const expected = [...(batch === null ? [] : [batch]), ...outShape, ...inShape];
    assertShape(values, expected, `DenseJacobian ${label}`);
  }
  get shape(): readonly number[] {
    return this.values.shape;
  }
  get bytes(): number {
    return this.values.size * this.values.data.BYTES_PER_ELEMENT;
  }
  toDense(): Tensor {
    return this.values;
  }
  vjp(dy: Tensor, sumBatch: boolean): Tensor {
    return contractDense(this.values, dy, sumBatch);
  }
}

/** Options of the dense builders. */
export interface DenseJacobianOptions {
  /** Tangents per forward pass (the block width `T`). Default: sized so one block stays near 64 MiB, at most 256. */
  tangents?: number;
  /** Refuse a Jacobian whose bytes exceed this (default {@link getMemoryBudget}). */
  memoryBudget?: number;
  /** Called after each block with (columns done, columns in all): for progress bars. */
  onProgress?: (done: number, total: number) => void;
  /**
   * Forward mode w.r.t. the input only: a buffer to build J in, instead of a new one: a
   * contiguous tensor `[B, ...out, ...in]` of the input's dtype, zeroed here first. A loop that
   * builds J every step then reuses its pages: first touching a fresh J's pages costs more than
   * writing them on these machines. The result's values live in `into`.
   */
  into?: Tensor;
}

/** Bytes of a dense batch Jacobian `[B, ...out, ...in]` of a dtype, from shapes alone. */
export function denseJacobianBytes(batch: number, outShape: readonly number[], inShape: readonly number[], dtype: DType = 'float64'): number {
  return batch * sizeOf(outShape) * sizeOf(inShape) * bytesPerElement(dtype);
}

/** Picks the tangent block width: wide enough to amortize each pass, narrow enough to stay small. */
export function tangentBlockWidth(columns: number, bytesPerTangent: number, requested?: number): number {
  if (requested !== undefined) {
    if (!Number.isInteger(requested) || requested <= 0) throw new ShapeError(`tangents: expected a positive integer block width, received ${requested}`);
    return Math.min(requested, Math.max(columns, 1));
  }
  const byMemory = Math.max(1, Math.floor((64 * 1024 ** 2) / Math.max(bytesPerTangent, 1)));
  return Math.max(1, Math.min(columns, 256, byMemory));
}

/**
 * Jacobian w.r.t. the input, built column by column with forward-mode dual numbers:
 * `[B, ...out, ...in]`. Column `c` of every sample is seeded at once (samples are independent),
 * so `ceil(in / T)` passes of `T` tangents build it.
 * @example
 * const dense = new Dense({ units: 2 }).build([3]);
 * const J = forwardJacobianWrtInput(dense, tensor([1, 2, 3], [1, 3])); // J.shape = [1, 2, 3], J = Wᵀ
 */
export function forwardJacobianWrtInput<S>(f: Differentiable<S>, x: Tensor, opts: DenseJacobianOptions & ForwardOptions = {}): DenseJacobian {
  assertShape(x, [null, ...f.inputShape], 'jacobianWrtInput x');
  assertFinite(x, 'jacobianWrtInput x');
  assertSamplesIndependent(f, opts, 'jacobianWrtInput');
  const B = x.shape[0];
  const dtype = dtypeOf(x);
  const nIn = sizeOf(f.inputShape);
  const nOut = sizeOf(f.outputShape);
  const shape = [B, ...f.outputShape, ...f.inputShape];
  if (opts.into !== undefined) checkInto(opts.into, shape, dtype, f, x);
  else guardBytes(`batch Jacobian w.r.t. the input ${fmtShape(shape)}`, denseJacobianBytes(B, f.outputShape, f.inputShape, dtype), opts.memoryBudget ?? getMemoryBudget());
  const fwd = f.forward(x, opts);
  const J = opts.into ?? zeros(shape, dtype);
  if (opts.into) J.data.fill(0);
  const T = tangentBlockWidth(nIn, B * (nIn + nOut) * bytesPerElement(dtype), opts.tangents);
  const seeds = new BasisSeeds([B, ...f.inputShape], nIn, dtype);
  const pool = new TangentPool();
  for (let c0 = 0; c0 < nIn; c0 += T) {
    const Tc = Math.min(T, nIn - c0);
    // Each tangent t is the basis direction e_{c0+t}, set in every sample at once; the output
    // tangents go straight into columns c0..c0+Tc of J.
    const seed = seeds.at(c0, Tc, B);
    jvpInto(f, fwd.saved, { xDot: seed, paramDots: null, T: Tc, rows: { lo: c0, hi: c0 + Tc }, pool }, columnBlock(J, nIn, c0, Tc, [B, ...f.outputShape]));
    opts.onProgress?.(c0 + Tc, nIn);
  }
  seeds.release();
  pool.drain();
  return new DenseJacobian(J, B, f.outputShape, f.inputShape, 'w.r.t. input');
}

/**
 * Jacobian w.r.t. each parameter, built column by column with forward-mode dual numbers:
 * `[B, ...out, ...param]` per trainable parameter, in `params` order (none w.r.t. state, such as
 * BatchNormalization's moving statistics: see `trainableParams`).
 */
export function forwardJacobianWrtWeights<S>(f: Differentiable<S>, x: Tensor, opts: DenseJacobianOptions & ForwardOptions = {}): DenseJacobian[] {
  assertShape(x, [null, ...f.inputShape], 'jacobianWrtWeights x');
  assertFinite(x, 'jacobianWrtWeights x');
  const B = x.shape[0];
  const dtype = dtypeOf(x);
  const nOut = sizeOf(f.outputShape);
  if (opts.into !== undefined) throw new ConfigError(`jacobianWrtWeights: expected no into (a buffer to build in is taken by jacobianWrtInput in forward mode, one Jacobian), received into of shape ${fmtShape(opts.into?.shape ?? [])}`);
  const wrt = trainableIndices(f);
  const total = wrt.reduce((s, k) => s + denseJacobianBytes(B, f.outputShape, f.params[k].value.shape, dtype), 0);
  guardBytes(`Jacobians w.r.t. ${wrt.length} parameters`, total, opts.memoryBudget ?? getMemoryBudget());
  const fwd = f.forward(x, opts);
  const out: DenseJacobian[] = [];
  const allCols = wrt.reduce((s, k) => s + f.params[k].value.size, 0);
  let done = 0;
  const pool = new TangentPool();
  wrt.forEach((k) => {
    const p = f.params[k];
    const nP = p.value.size;
    const J = zeros([B, ...f.outputShape, ...p.value.shape], dtype);
    const T = tangentBlockWidth(nP, (B * nOut + nP) * bytesPerElement(dtype), opts.tangents);
    const seeds = new BasisSeeds(p.value.shape, nP, dtype);
    for (let c0 = 0; c0 < nP; c0 += T) {
      const Tc = Math.min(T, nP - c0);
      const paramDots: (Tensor | null)[] = f.params.map((_, j) => (j === k ? seeds.at(c0, Tc, 1) : null));
      jvpInto(f, fwd.saved, { xDot: null, paramDots, T: Tc, rows: { lo: c0, hi: c0 + Tc }, pool }, columnBlock(J, nP, c0, Tc, [B, ...f.outputShape]));
      done += Tc;
      opts.onProgress?.(done, allCols);
    }
    out.push(new DenseJacobian(J, B, f.outputShape, p.value.shape, `w.r.t. ${p.name}`));
    seeds.release();
  });
  pool.drain();
  return out;
}

/**
 * `into` must be J's buffer exactly: contiguous from its start, J's shape and the input's dtype,
 * and none of the buffers the pass reads (the input, a weight): clearing it would change the
 * values J is built from. Checked before any work.
 */
function checkInto(into: Tensor, shape: readonly number[], dtype: DType, f: Differentiable, x: Tensor): void {
  if (!into || !Array.isArray(into.shape) || !into.data) throw new ShapeError(`jacobianWrtInput into: expected a tensor ${fmtShape(shape)} (${dtype}) to build J in, received ${String(into)}`);
  assertShape(into, shape, 'jacobianWrtInput into');
  if (dtypeOf(into) !== dtype) throw new ShapeError(`jacobianWrtInput into: expected dtype ${dtype} (the input's), received ${dtypeOf(into)}`);
  if (into.offset !== 0 || into.data.length !== sizeOf(shape) || !isContiguous(into)) {
    throw new ShapeError(`jacobianWrtInput into: expected a contiguous tensor ${fmtShape(shape)} owning its whole buffer, received a view with strides ${fmtShape(into.stride)}, offset ${into.offset}, on ${into.data.length} elements`);
  }
  const read = [{ what: 'the input x', t: x }, ...f.params.map((p) => ({ what: `weight ${p.name}`, t: p.value }))];
  const shared = read.find((r) => r.t.data.buffer === into.data.buffer);
  if (shared) throw new ShapeError(`jacobianWrtInput into: expected a buffer of its own, received one shared with ${shared.what}, which building J reads after clearing into`);
}

/**
 * Basis seeds `[...shape, T]` for columns `c0..c0+T` of `cols` per sample, kept across blocks:
 * one buffer per block width (the last block may be narrower), where only the ones of the block
 * before are cleared, never the whole block.
 */
class BasisSeeds {
  private readonly bufs = new Map<number, { seed: Tensor; c0: number; B: number }>();
  constructor(
    private readonly shape: readonly number[],
    private readonly cols: number,
    private readonly dtype: DType,
  ) {}
  /** The seed `[...shape, T]` holding `e_{c0+t}` in tangent `t` of each of the `B` samples. */
  at(c0: number, T: number, B: number): Tensor {
    let s = this.bufs.get(T);
    if (!s) this.bufs.set(T, (s = { seed: zeros([...this.shape, T], this.dtype), c0: -1, B }));
    if (s.c0 >= 0) this.mark(s, s.c0, 0);
    this.mark(s, c0, 1);
    s.c0 = c0;
    return s.seed;
  }
  /** Gives the seed buffers to the shared pool (`lib/buffer-pool.ts`) once the build is done, their ones cleared, so that the next build reuses their pages without clearing them whole. */
  release(): void {
    for (const s of this.bufs.values()) {
      if (s.c0 >= 0) this.mark(s, s.c0, 0);
      recycleBuffer(s.seed.data, true);
    }
    this.bufs.clear();
  }
  /** Sets the diagonal entries `e_{c0+t}` of tangent `t`, in every sample, to `v` (1 to seed a block, 0 to clear it). */
  private mark(s: { seed: Tensor; B: number }, c0: number, v: number): void {
    const d = s.seed.data;
    const T = s.seed.shape[s.seed.shape.length - 1];
    for (let b = 0; b < s.B; b++) for (let t = 0; t < T; t++) d[(b * this.cols + c0 + t) * T + t] = v;
  }
}

/** Columns `c0..c0+Tc` of `J` (rows of `cols`), as the strided view `[...lead, Tc]` a `jvp` writes into. */
function columnBlock(J: Tensor, cols: number, c0: number, Tc: number, lead: readonly number[]): Tensor {
  return ndarray(J.data, [...lead, Tc], [...stridesOf(lead).map((s) => s * cols), 1], c0) as Tensor;
}

/** Pushes one block of basis tangents through `f` into its column block `out` of J (copying, when `f` returned a tensor of its own). */
function jvpInto<S>(f: Differentiable<S>, saved: S, tangents: Tangents, out: Tensor): void {
  const yDot = f.jvp(saved, tangents, out);
  assertShape(yDot, out.shape, 'jacobian jvp output');
  if (yDot !== out) deliverTangent(out, yDot);
}

/** Copies the `Tc` tangent columns of `yDot` (`[rows, T]`) into columns `c0..c0+Tc` of `J` (`[rows, cols]`). */
function scatterColumns(yDot: Tensor, J: Tensor['data'], rows: number, cols: number, c0: number, Tc: number, T: number): void {
  const d = yDot.data;
  for (let r = 0; r < rows; r++) {
    const src = r * T;
    const dst = r * cols + c0;
    for (let t = 0; t < Tc; t++) J[dst + t] = d[src + t];
  }
}

/**
 * Jacobian w.r.t. the input, built row by row from VJPs of basis cotangents (reverse mode):
 * the reference the dual-number Jacobian is checked against. Same layout as {@link jacobianWrtInput}.
 */
export function jacobianWrtInputByVjp<S>(f: Differentiable<S>, x: Tensor, opts: ForwardOptions & { memoryBudget?: number } = {}): DenseJacobian {
  assertShape(x, [null, ...f.inputShape], 'jacobianWrtInputByVjp x');
  assertSamplesIndependent(f, opts, 'jacobianWrtInputByVjp');
  const B = x.shape[0];
  const dtype = dtypeOf(x);
  const nIn = sizeOf(f.inputShape);
  const nOut = sizeOf(f.outputShape);
  guardBytes('batch Jacobian (reverse mode)', denseJacobianBytes(B, f.outputShape, f.inputShape, dtype), opts.memoryBudget ?? getMemoryBudget());
  const fwd = f.forward(x, opts);
  const J = zeros([B, ...f.outputShape, ...f.inputShape], dtype);
  const dy = zeros([B, ...f.outputShape], dtype);
  for (let o = 0; o < nOut; o++) {
    dy.data.fill(0);
    for (let b = 0; b < B; b++) dy.data[b * nOut + o] = 1;
    const dx = contiguous(f.vjp(fwd.saved, dy).dx);
    for (let b = 0; b < B; b++) J.data.set(dx.data.subarray(b * nIn, (b + 1) * nIn), (b * nOut + o) * nIn);
  }
  return new DenseJacobian(J, B, f.outputShape, f.inputShape, 'w.r.t. input (reverse)');
}

/**
 * Jacobians w.r.t. each parameter, row by row from VJPs: one basis cotangent per (sample, output),
 * since a parameter is shared by the batch. The reverse-mode reference for {@link jacobianWrtWeights}.
 */
export function jacobianWrtWeightsByVjp<S>(f: Differentiable<S>, x: Tensor, opts: ForwardOptions & { memoryBudget?: number } = {}): DenseJacobian[] {
  assertShape(x, [null, ...f.inputShape], 'jacobianWrtWeightsByVjp x');
  const B = x.shape[0];
  const dtype = dtypeOf(x);
  const nOut = sizeOf(f.outputShape);
  const wrt = trainableIndices(f);
  const total = wrt.reduce((s, k) => s + denseJacobianBytes(B, f.outputShape, f.params[k].value.shape, dtype), 0);
  guardBytes('Jacobians w.r.t. parameters (reverse mode)', total, opts.memoryBudget ?? getMemoryBudget());
  const fwd = f.forward(x, opts);
  const Js = wrt.map((k) => zeros([B, ...f.outputShape, ...f.params[k].value.shape], dtype));
  const dy = zeros([B, ...f.outputShape], dtype);
  for (let r = 0; r < B * nOut; r++) {
    dy.data.fill(0);
    dy.data[r] = 1;
    const { dParams } = f.vjp(fwd.saved, dy);
    wrt.forEach((k, n) => {
      const g = contiguous(dParams[k]);
      Js[n].data.set(g.data.subarray(g.offset, g.offset + g.size), r * g.size);
    });
  }
  return Js.map((J, n) => new DenseJacobian(J, B, f.outputShape, f.params[wrt[n]].value.shape, `w.r.t. ${f.params[wrt[n]].name} (reverse)`));
}

/**
 * A JVP along one direction for every sample: `J v` with `v` shaped like `x` (and optional
 * parameter directions). The engine's cheapest derivative: one pass with `T = 1`.
 */
export function jvpAlong<S>(f: Differentiable<S>, x: Tensor, v: Tensor | null, dParams: (Tensor | null)[] | null = null, opts: ForwardOptions = {}): {
  /** The primal output `[B, ...out]`. */
  y: Tensor;
  /** The JVP `J v`, `[B, ...out]`. */
  jv: Tensor
} {
  const fwd: Forward<S> = f.forward(x, opts);
  const dx = v === null ? null : tensor(contiguous(v).data.slice(0, v.size), [...v.shape, 1], dtypeOf(v));
  const dP = dParams?.map((p) => (p === null ? null : tensor(contiguous(p).data.slice(0, p.size), [...p.shape, 1], dtypeOf(p)))) ?? null;
  const out = contiguous(f.jvp(fwd.saved, { xDot: dx, paramDots: dP, T: 1 }));
  return { y: fwd.y, jv: tensor(out.data, out.shape.slice(0, -1), dtypeOf(out)) };
}

/**
 * Throws when a forward pass of `f` couples the samples (a layer's `samplesIndependent` hook says
 * so), naming the layer: the batch Jacobian `[B, ...out, ...in]` would drop the cross-sample terms.
 */
export function assertSamplesIndependent(f: Differentiable, opts: ForwardOptions, what: string): void {
  const coupled = firstCouplingLayer(f, opts);
  if (coupled) {
    throw new ConfigError(
      `${what}: ${describeOf(coupled)} couples the samples of a batch${opts.training ? ' in training mode' : ''} (each output depends on every sample), so the batch Jacobian [B, ...out, ...in] would drop the cross-sample terms; expected a stage whose samples are independent, received one with ${describeOf(coupled)}: use fullJacobianWrtInput ([B, ...out, B, ...in]) or the VJP chain`,
    );
  }
}

/** The first layer of `f` whose forward pass couples the samples, or null. */
export function firstCouplingLayer(f: Differentiable, opts: ForwardOptions): Differentiable | null {
  return leavesOf(f).find((l) => l.samplesIndependent?.(opts) === false) ?? null;
}

/**
 * The full Jacobian w.r.t. the input, built column by column with forward-mode dual numbers:
 * `[B, ...out, B, ...in]`, every `∂y[b, o] / ∂x[b', i]`, cross-sample terms included. What the
 * explicit chain uses for a stage whose samples are coupled; `B` times the batch Jacobian's bytes.
 * @example
 * const J = fullJacobianWrtInput(bnStage, x, { training: true }); // [4, 5, 4, 2, 4, 5, 4, 3]
 */
export function fullJacobianWrtInput<S>(f: Differentiable<S>, x: Tensor, opts: DenseJacobianOptions & ForwardOptions = {}): DenseJacobian {
  assertShape(x, [null, ...f.inputShape], 'fullJacobianWrtInput x');
  assertFinite(x, 'fullJacobianWrtInput x');
  if (opts.into !== undefined) throw new ConfigError(`fullJacobianWrtInput: expected no into (jacobianWrtInput's batch Jacobian takes one), received into of shape ${fmtShape(opts.into?.shape ?? [])}`);
  const B = x.shape[0];
  const dtype = dtypeOf(x);
  const nIn = B * sizeOf(f.inputShape);
  const nOut = B * sizeOf(f.outputShape);
  guardBytes(`full Jacobian w.r.t. the input ${fmtShape([B, ...f.outputShape, B, ...f.inputShape])}`, nOut * nIn * bytesPerElement(dtype), opts.memoryBudget ?? getMemoryBudget());
  const fwd = f.forward(x, opts);
  const J = zeros([B, ...f.outputShape, B, ...f.inputShape], dtype);
  const T = tangentBlockWidth(nIn, (nIn + nOut) * bytesPerElement(dtype), opts.tangents);
  const seed = zeros([B, ...f.inputShape, T], dtype);
  for (let c0 = 0; c0 < nIn; c0 += T) {
    const Tc = Math.min(T, nIn - c0);
    // Column c is one input element of one sample: the whole batch is the column space.
    if (c0 > 0) for (let t = 0; t < T; t++) seed.data[(c0 - T + t) * T + t] = 0;
    for (let t = 0; t < Tc; t++) seed.data[(c0 + t) * T + t] = 1;
    const yDot = contiguous(f.jvp(fwd.saved, { xDot: seed, paramDots: null, T }));
    scatterColumns(yDot, J.data, nOut, nIn, c0, Tc, T);
    opts.onProgress?.(c0 + Tc, nIn);
  }
  return new DenseJacobian(J, B, f.outputShape, [B, ...f.inputShape], 'w.r.t. input (full, samples coupled)');
}

/**
 * The memory account of the two ways, its types and the helpers its three readings share: the
 * bytes of every Jacobian the explicit way materializes (w.r.t. the input and each weight), the
 * bytes the VJP way holds (the residuals its forward pass saved, plus its cotangents), and their
 * ratio. Read from shapes alone (`estimate.ts`), from what was allocated (`measure.ts`), and
 * printed (`format.ts`).
 *
 * Activations shared between layers are counted once: Dense saves its input `x`, which is the
 * very buffer the layer before it saved as its output `y`.
 * @module
 */
import { ConfigError, fmtShape } from '../errors.js';
import { type Differentiable, describeOf, leavesOf } from '../layers/layer.js';
import { type DType, type Tensor, dtypeOf, zeros } from '../tensor.js';

/** One buffer in an account. */
export interface BufferAccount {
  /** What it is: `conv2d_1 saved y`, `dense cotangent dx`. */
  what: string;
  /** Its shape (for measured buffers: the shape of the first view met of it). */
  shape: number[];
  /** Element type: `float64`, `float32`, `int32`, ... */
  dtype: string;
  /** Bytes of the buffer. */
  bytes: number;
}

/** One Jacobian of the explicit way. */
export interface JacobianAccount {
  /** `input`, or the parameter: `conv2d_1.kernel`. */
  wrt: string;
  /** `[B, ...out, ...in]` or `[B, ...out, ...param]`. */
  shape: number[];
  /** Its columns: the per-sample input size, or the parameter's size. */
  columns: number;
  /** Bytes of the dense Jacobian: `B · |out| · columns · bytesPerElement`. */
  bytes: number;
  /** Tangents pushed per pass (`T`) while building it. */
  tangents: number;
  /** Bytes of one block of `T` tangents: the seed plus every layer's tangent output in one pass. */
  tangentBlockBytes: number;
  /** Streamed way (`ChainOptions.streamed`): tangents per block (`streamedBlockWidth` in `lib/streamed.ts`). */
  streamedTangents: number;
  /** Streamed way: bytes of one block, the only part of this Jacobian ever held. */
  streamedBlockBytes: number;
  /** Bytes of this Jacobian's contraction with the upstream gradient: the weight's gradient `[...param]`, or dLoss/dIn `[B, ...in]`. */
  gradientBytes: number;
  /**
   * Format `factored` (`lib/sparse/factored.ts`), for a weight whose layer states a factor: the
   * bytes of the factored Jacobian, its patches plus its CSR factor `A` at its structural bound
   * (what it holds when no value is zero), `A` counted for the layer's first parameter only (the
   * others share it). Absent for the input and for other layers' weights.
   */
  factoredBytes?: number;
}

/** What the explicit way materializes. */
export interface ExplicitAccount {
  /** Every Jacobian: w.r.t. the input, then each parameter in `params` order. */
  jacobians: JacobianAccount[];
  /** Their sum: what the budget is checked against. */
  jacobianBytes: number;
  /** The largest single block of tangents (only one block is alive at a time). */
  tangentBlockBytes: number;
  /**
   * The streamed way (`jacobianChain(…, { streamed: true })`): one block at a time, contracted and
   * dropped, so it holds the largest block, the tapes' residuals and the gradients, never a Jacobian.
   */
  streamed: StreamedAccount;
}

/** What the streamed explicit way holds at its peak. */
export interface StreamedAccount {
  /** The largest streamed block. */
  blockBytes: number;
  /** Every contraction it returns: the weights' gradients and each stage's dLoss/dIn. */
  gradientBytes: number;
  /** `blockBytes + gradientBytes + ` the tapes' residuals: what its guard checks. */
  bytes: number;
}

/** The streamed account from the Jacobians it streams and the residuals of the tapes. */
export function streamedAccount(jacobians: readonly JacobianAccount[], residualBytes: number): StreamedAccount {
  const blockBytes = Math.max(0, ...jacobians.map((j) => j.streamedBlockBytes));
  const gradientBytes = sum(jacobians.map((j) => j.gradientBytes));
  return { blockBytes, gradientBytes, bytes: blockBytes + gradientBytes + residualBytes };
}

/** What the VJP way holds. */
export interface VjpAccount {
  /** Buffers the forward pass saved for the reverse pass (each counted once). */
  residuals: BufferAccount[];
  /** Bytes of all `residuals`. */
  residualBytes: number;
  /** Cotangents of the reverse pass: dy, every layer's dx (views not counted again), every parameter's gradient. */
  cotangents: BufferAccount[];
  /** Bytes of all `cotangents`. */
  cotangentBytes: number;
  /** `residualBytes + cotangentBytes`. */
  bytes: number;
}

/** The account of one layer, stage or split model at one batch size. */
export interface MemoryReport {
  /** `estimate` (shapes alone) or `measured` (buffers actually allocated). */
  kind: 'estimate' | 'measured';
  /** What was accounted: `Conv2D "conv2d"`, `Sequential "model_0"`, `2 stages`. */
  what: string;
  /** Batch size `B` it was accounted at. */
  batch: number;
  /** Element type of activations and Jacobians. */
  dtype: DType;
  /** Per-sample input shape. */
  inputShape: number[];
  /** Per-sample output shape. */
  outputShape: number[];
  /** What the explicit-Jacobian way materializes. */
  explicit: ExplicitAccount;
  /** What the VJP way holds. */
  vjp: VjpAccount;
  /** `explicit.jacobianBytes / vjp.bytes`: how many times more the explicit way materializes. */
  ratio: number;
  /** For a split model: one report per stage (the model's Jacobians are the stages' Jacobians). */
  stages: MemoryReport[];
}

/** Options of {@link estimateMemory}. */
export interface MemoryEstimateOptions {
  /** Element type of activations and Jacobians; default the model's (its first parameter's), else float64. */
  dtype?: DType;
  /** Training mode: Dropout saves a mask. Default false. */
  training?: boolean;
  /** Tangent block width the builders would be given (default: theirs, `tangentBlockWidth` in `lib/dense-jacobian.ts`). */
  tangents?: number;
  /**
   * For a split model: count the first stage's Jacobian w.r.t. the model input too. Default false,
   * as `jacobianChain`, which needs it for no gradient and never builds it. (Each stage's own
   * report in `stages` always lists it.)
   */
  firstStageInput?: boolean;
}

/** A model split into stages, or one layer or stage. */
export type Accountable = Differentiable | readonly Differentiable[];


/** The VJP way's account from its residual and cotangent buffers. */
export function vjpAccount(residuals: BufferAccount[], cotangents: BufferAccount[]): VjpAccount {
  const residualBytes = sum(residuals.map((b) => b.bytes));
  const cotangentBytes = sum(cotangents.map((b) => b.bytes));
  return { residuals, residualBytes, cotangents, cotangentBytes, bytes: residualBytes + cotangentBytes };
}


/** The stages of an accountable model, checked to chain (each stage's input is the last one's output). */
export function asStages(model: Accountable): readonly Differentiable[] {
  const stages = Array.isArray(model) ? (model as readonly Differentiable[]) : [model as Differentiable];
  if (stages.length === 0) throw new ConfigError('memory report: expected a layer, a stage or a non-empty list of stages, received an empty list');
  for (let s = 1; s < stages.length; s++) {
    const a = stages[s - 1].outputShape;
    const b = stages[s].inputShape;
    if (a.length !== b.length || a.some((d, i) => d !== b[i])) {
      throw new ConfigError(`memory report: stage ${s} expects input ${fmtShape(b)}, but stage ${s - 1} gives ${fmtShape(a)}`);
    }
  }
  return stages;
}

/** How the account names a layer: its own name, else how it describes itself. */
export function leafName(l: Differentiable): string {
  const name = (l as { name?: unknown }).name;
  return typeof name === 'string' && name ? name : describeOf(l);
}

/** The model's element type: its first parameter's, else its first layer's `dtype`, else float64. */
export function modelDtype(f: Differentiable): DType {
  const p = leavesOf(f).flatMap((l) => l.params)[0];
  if (p) return dtypeOf(p.value);
  return (leavesOf(f)[0] as { dtype?: DType }).dtype ?? 'float64';
}

/** A tensor of ones shaped and typed like `t`: the default output cotangent. */
export function onesLike(t: Tensor): Tensor {
  const o = zeros(t.shape, dtypeOf(t));
  o.data.fill(1);
  return o;
}

/** The sum of a list of byte counts. */
export function sum(xs: number[]): number {
  let s = 0;
  for (const x of xs) s += x;
  return s;
}

/** The largest Jacobian of an account. */
export function largest(js: JacobianAccount[]): JacobianAccount {
  return js.reduce((a, b) => (b.bytes > a.bytes ? b : a), js[0]);
}

/** `43×`, `3.21×`: how a ratio is printed. */
export function fmtRatio(r: number): string {
  return r >= 100 ? `${Math.round(r)}×` : `${r.toPrecision(3)}×`;
}

/** Distinct buffers reachable from values, each counted once, in the order first met. */
export class BufferSet {
  private seen = new Set<ArrayBufferLike>();
  private visited = new Set<object>();
  private items: BufferAccount[] = [];
  private buffers: ArrayBufferLike[] = [];

  /** Adds the buffer of a tensor or typed array. */
  add(v: unknown, what: string): void {
    if (ArrayBuffer.isView(v)) {
      this.addView(v, [(v as unknown as { length: number }).length], what);
    } else if (isTensor(v)) {
      this.addView(v.data, v.shape.slice(), what);
    }
  }

  /** Walks arrays and plain objects, adding every buffer met. */
  walk(v: unknown, what: string): void {
    if (v === null || typeof v !== 'object') return;
    if (ArrayBuffer.isView(v) || isTensor(v)) return this.add(v, what);
    if (this.visited.has(v)) return;
    this.visited.add(v);
    if (Array.isArray(v)) v.forEach((e, i) => this.walk(e, `${what}[${i}]`));
    else for (const [k, e] of Object.entries(v)) this.walk(e, `${what}.${k}`);
  }

  /** The buffers, in the order first met. */
  list(): BufferAccount[] {
    return this.items;
  }

  /** The buffers with their identity, in the order first met: to tell which is a layer's input or output. */
  entries(): {
    /** The buffer itself, for identity. */
    buffer: ArrayBufferLike;
    /** Its account. */
    account: BufferAccount
  }[] {
    return this.items.map((account, i) => ({ buffer: this.buffers[i], account }));
  }

  private addView(view: ArrayBufferView, shape: number[], what: string): void {
    if (this.seen.has(view.buffer)) return;
    this.seen.add(view.buffer);
    this.items.push({ what, shape, dtype: viewDtype(view), bytes: view.buffer.byteLength });
    this.buffers.push(view.buffer);
  }
}

/** True for an ndarray tensor (typed data and a shape). */
export function isTensor(v: unknown): v is Tensor {
  return typeof v === 'object' && v !== null && ArrayBuffer.isView((v as Tensor).data) && Array.isArray((v as Tensor).shape);
}

/** The element type of a typed array, as the account prints it. */
export function viewDtype(v: ArrayBufferView): string {
  if (v instanceof Float64Array) return 'float64';
  if (v instanceof Float32Array) return 'float32';
  if (v instanceof Int32Array) return 'int32';
  if (v instanceof Uint8Array) return 'uint8';
  return v.constructor.name;
}

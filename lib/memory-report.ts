/**
 * The memory cost of the two ways, accounted: the bytes of every Jacobian the explicit way
 * materializes (w.r.t. the input and each weight), the bytes the VJP way holds (the residuals its
 * forward pass saved, plus its cotangents), and their ratio.
 *
 * Two readings of one account. {@link estimateMemory} works from shapes alone, before anything is
 * computed, from what each layer type's forward pass saves (Dense and Conv2D: `x` and `y`;
 * Activation: `y`; MaxPooling2D: an int32 `argmax`; Dropout in training: its mask; Flatten and an
 * inference Dropout: nothing, their output is a view of their input). {@link measureMemory} runs
 * the passes and counts the buffers actually reachable from what they returned, each buffer once
 * (views share their buffer), so the estimate can be checked against what was allocated.
 *
 * Activations shared between layers are counted once: Dense saves its input `x`, which is the
 * very buffer the layer before it saved as its output `y`.
 * @module
 */
import { ConfigError, fmtShape } from './errors.js';
import { denseJacobianBytes, jacobianWrtInput, jacobianWrtWeights, tangentBlockWidth } from './jacobian.js';
import type { Differentiable, ForwardOptions } from './layers/layer.js';
import { fmtBytes, getMemoryBudget, guardBytes } from './memory.js';
import { type DType, type Tensor, bytesPerElement, dtypeOf, sizeOf, zeros } from './tensor.js';

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
}

/** What the explicit way materializes. */
export interface ExplicitAccount {
  /** Every Jacobian: w.r.t. the input, then each parameter in `params` order. */
  jacobians: JacobianAccount[];
  /** Their sum: what the budget is checked against. */
  jacobianBytes: number;
  /** The largest single block of tangents (only one block is alive at a time). */
  tangentBlockBytes: number;
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
  /** Tangent block width the builders would be given (default: theirs, {@link tangentBlockWidth}). */
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

/**
 * The account from shapes alone, before anything is allocated.
 * @example
 * const report = estimateMemory(cnn.split([9]), 8); // the CNN's two stages at batch 8
 * report.explicit.jacobianBytes; // every stage Jacobian, w.r.t. input and each weight
 * report.vjp.bytes;              // residuals + cotangents
 * report.ratio;
 */
export function estimateMemory(model: Accountable, batch: number, opts: MemoryEstimateOptions = {}): MemoryReport {
  if (!Number.isInteger(batch) || batch <= 0) throw new ConfigError(`estimateMemory: expected a positive integer batch, received ${batch}`);
  const stages = asStages(model);
  const dtype = opts.dtype ?? modelDtype(stages[0]);
  const stageReports = stages.map((s) => estimateOne(s, batch, dtype, opts));
  if (!Array.isArray(model)) return stageReports[0];
  // The VJP way through stages is one reverse pass through all their layers: a stage's input cotangent is the next stage's dy.
  const whole = estimateOne(stages, batch, dtype, opts, `${stages.length} stages`);
  return combine('estimate', whole, stageReports, opts.firstStageInput ?? false);
}

/** Options of {@link measureMemory}. */
export interface MemoryMeasureOptions extends ForwardOptions {
  /** As {@link MemoryEstimateOptions.firstStageInput}. */
  firstStageInput?: boolean;
  /** The output cotangent for the VJP way; default ones. */
  dy?: Tensor;
  /** Build the Jacobians and count them (default true); false accounts the VJP way only (no Jacobians listed, ratio NaN). */
  jacobians?: boolean;
  /** Budget the Jacobians are refused over, before allocating (default {@link getMemoryBudget}). */
  memoryBudget?: number;
  /** Tangent block width for the Jacobian builders. */
  tangents?: number;
}

/**
 * The account from what was allocated: runs the forward pass, the Jacobians (refused over the
 * budget before any is built) and the reverse pass, and counts each buffer reachable from their
 * results once. The tangent blocks live only inside the builders, so their bytes are the
 * estimate's.
 * @example
 * const measured = measureMemory(conv, x);
 * measured.vjp.residualBytes === estimateMemory(conv, x.shape[0]).vjp.residualBytes; // true
 */
export function measureMemory(model: Accountable, x: Tensor, opts: MemoryMeasureOptions = {}): MemoryReport {
  const stages = asStages(model);
  const dtype = dtypeOf(x);
  const eo = { dtype, training: opts.training, tangents: opts.tangents, firstStageInput: opts.firstStageInput };
  const est = estimateMemory(model, x.shape[0], eo);
  // Every stage's Jacobians are built here (the first stage's w.r.t. its input too): all are checked before any is.
  if (opts.jacobians !== false) guardExplicitWay(Array.isArray(model) ? estimateMemory(model, x.shape[0], { ...eo, firstStageInput: true }) : est, opts.memoryBudget);
  const fo: ForwardOptions = { training: opts.training, rng: opts.rng };
  // Stage by stage: its Jacobians (then dropped: only their sizes are kept), and its own VJP way.
  const reports: MemoryReport[] = [];
  let h = x;
  for (const [s, stage] of stages.entries()) {
    const estS = est.stages.length ? est.stages[s] : est;
    const jac: JacobianAccount[] = [];
    if (opts.jacobians !== false) {
      const jo = { ...fo, tangents: opts.tangents, memoryBudget: opts.memoryBudget };
      const Js = [jacobianWrtInput(stage, h, jo), ...jacobianWrtWeights(stage, h, jo)];
      Js.forEach((J, k) => jac.push({ ...estS.explicit.jacobians[k], shape: J.shape.slice(), bytes: J.bytes }));
    }
    const { account, y } = measureVjpWay([stage], h, fo, s === stages.length - 1 ? opts.dy : undefined);
    const jacobianBytes = sum(jac.map((j) => j.bytes));
    reports.push({ ...estS, kind: 'measured', explicit: { jacobians: jac, jacobianBytes, tangentBlockBytes: estS.explicit.tangentBlockBytes }, vjp: account, ratio: opts.jacobians === false ? NaN : jacobianBytes / account.bytes, stages: [] });
    h = y;
  }
  if (!Array.isArray(model)) return reports[0];
  const whole = measureVjpWay(stages, x, fo, opts.dy);
  const r = combine('measured', { ...est, kind: 'measured', vjp: whole.account, stages: [] }, reports, opts.firstStageInput ?? false);
  return opts.jacobians === false ? { ...r, ratio: NaN } : r;
}

/**
 * The VJP way, counted: the buffers the stages' own forward passes saved (each once), then a
 * reverse pass layer by layer, so that every intermediate cotangent is seen and counted.
 */
function measureVjpWay(stages: readonly Differentiable[], x: Tensor, fo: ForwardOptions, dy?: Tensor): { account: VjpAccount; y: Tensor } {
  const residuals = new BufferSet();
  let h = x;
  for (const stage of stages) {
    const fwd = stage.forward(h, fo);
    residuals.walk(fwd.saved, `${describeOf(stage)} saved`);
    h = fwd.y;
  }
  const layers = stages.flatMap((s) => leaves(s));
  const saved: unknown[] = [];
  let hl = x;
  for (const leaf of layers) {
    const fwd = leaf.forward(hl, fo);
    saved.push(fwd.saved);
    hl = fwd.y;
  }
  const cot = new BufferSet();
  let g = dy ?? onesLike(h);
  cot.add(g, 'output cotangent dy');
  for (let i = layers.length - 1; i >= 0; i--) {
    const ct = layers[i].vjp(saved[i], g);
    cot.add(ct.dx, `${leafName(layers[i])} cotangent dx`);
    ct.dParams.forEach((p, k) => cot.add(p, `${leafName(layers[i])} gradient ${layers[i].params[k]?.name ?? k}`));
    g = ct.dx;
  }
  return { account: vjpAccount(residuals.list(), cot.list()), y: h };
}

/**
 * Refuses the explicit way when its Jacobians would exceed the budget, before allocating: the
 * error gives the estimate, the budget, and what the VJP way would hold instead.
 * @throws MemoryBudgetError e.g. `explicit-Jacobian way for 2 stages: needs an estimated 6.12 GiB ..., over the memory budget of 4.00 GiB; use the VJP way ... which holds 41.3 MiB here`
 * @example
 * guardExplicitWay(estimateMemory(stages, 8)); // throws before jacobianChain allocates anything
 */
export function guardExplicitWay(report: MemoryReport, budgetBytes: number = getMemoryBudget()): void {
  guardBytes(
    `explicit-Jacobian way for ${report.what} at batch ${report.batch} (${report.explicit.jacobians.length} Jacobians, the largest ${fmtShape(largest(report.explicit.jacobians).shape)})`,
    report.explicit.jacobianBytes,
    budgetBytes,
    `use the VJP way (vjpChain, or tape.gradient with outputGradients), which holds ${fmtBytes(report.vjp.bytes)} (${report.vjp.bytes} bytes) here: ${fmtRatio(report.ratio)} less`,
  );
}

/**
 * A report as a markdown table: every Jacobian, then the VJP way's residuals and cotangents.
 * @example
 * console.log(formatMemoryReport(estimateMemory(conv, 3)));
 */
export function formatMemoryReport(r: MemoryReport): string {
  const lines = [
    `**${r.what}**, batch ${r.batch}, ${r.dtype} (${r.kind}): input ${fmtShape(r.inputShape)} → output ${fmtShape(r.outputShape)}`,
    '',
    '| way | what | shape | bytes |',
    '|---|---|---|---:|',
    ...r.explicit.jacobians.map((j) => `| explicit | J w.r.t. ${j.wrt} | ${fmtShape(j.shape)} | ${fmtBytes(j.bytes)} |`),
    `| explicit | one tangent block (T = ${Math.max(...r.explicit.jacobians.map((j) => j.tangents), 0)}) | | ${fmtBytes(r.explicit.tangentBlockBytes)} |`,
    ...r.vjp.residuals.map((b) => `| vjp | ${b.what} | ${fmtShape(b.shape)} ${b.dtype} | ${fmtBytes(b.bytes)} |`),
    ...r.vjp.cotangents.map((b) => `| vjp | ${b.what} | ${fmtShape(b.shape)} | ${fmtBytes(b.bytes)} |`),
    '',
    `Jacobians ${fmtBytes(r.explicit.jacobianBytes)} vs VJP ${fmtBytes(r.vjp.bytes)} (residuals ${fmtBytes(r.vjp.residualBytes)} + cotangents ${fmtBytes(r.vjp.cotangentBytes)}): ratio ${fmtRatio(r.ratio)}`,
  ];
  return lines.join('\n');
}

/**
 * Bytes of the distinct buffers reachable from a value (a forward pass's `saved`, a result):
 * tensors, typed arrays, arrays and plain objects are walked; each underlying buffer counts once.
 * @example
 * bytesHeld(conv.forward(x).saved); // x and y: (|x| + |y|) · 8
 */
export function bytesHeld(value: unknown): number {
  const s = new BufferSet();
  s.walk(value, 'value');
  return sum(s.list().map((b) => b.bytes));
}

// ---------------------------------------------------------------------------------------------
// The estimate: a symbolic forward pass over buffers.

/** A buffer in the symbolic pass: an activation (shared by the layers that read it) or a layer's own. */
interface SymBuffer {
  key: string;
  what: string;
  shape: number[];
  dtype: string;
  bpe: number;
}

/** What one layer type does with buffers, from shapes alone. */
interface LeafRule {
  /** Buffers the forward pass saves, besides activations: `x` (its input), `y` (its output), or its own. */
  saves: ('x' | 'y' | { what: string; perSample: number[]; dtype: string; bpe: number })[];
  /** The output is a view of the input (Flatten; Dropout at inference): no new buffer. */
  outputIsView: boolean;
  /** The JVP returns a view of (or the very) input tangent. */
  jvpIsView: boolean;
  /** The VJP returns a view of (or the very) output cotangent. */
  vjpIsView: boolean;
}

interface LeafLike extends Differentiable {
  readonly className?: string;
  readonly name?: string;
  readonly dtype?: DType;
}

/** Rules per layer class: what its forward saves (see each layer's `Saved` interface). */
const RULES: Record<string, (l: LeafLike, training: boolean) => LeafRule> = {
  Dense: () => ({ saves: ['x', 'y'], outputIsView: false, jvpIsView: false, vjpIsView: false }),
  Conv2D: () => ({ saves: ['x', 'y'], outputIsView: false, jvpIsView: false, vjpIsView: false }),
  Activation: () => ({ saves: ['y'], outputIsView: false, jvpIsView: false, vjpIsView: false }),
  MaxPooling2D: (l) => ({ saves: [{ what: 'argmax', perSample: l.outputShape.slice(), dtype: 'int32', bpe: 4 }], outputIsView: false, jvpIsView: false, vjpIsView: false }),
  Flatten: () => ({ saves: [], outputIsView: true, jvpIsView: true, vjpIsView: true }),
  Dropout: (l, training) =>
    training
      ? { saves: [{ what: 'mask', perSample: l.inputShape.slice(), dtype: '', bpe: 0 }], outputIsView: false, jvpIsView: false, vjpIsView: false }
      : { saves: [], outputIsView: true, jvpIsView: true, vjpIsView: true },
};

/** Layer classes the estimate knows. */
export const ACCOUNTED_LAYERS = Object.keys(RULES);

function estimateOne(model: Differentiable | readonly Differentiable[], B: number, dtype: DType, opts: MemoryEstimateOptions, what?: string): MemoryReport {
  const stages = Array.isArray(model) ? (model as readonly Differentiable[]) : [model as Differentiable];
  const ls = stages.flatMap((s) => leaves(s));
  const bpe = bytesPerElement(dtype);
  const training = opts.training ?? false;
  const rules = ls.map((l) => ruleOf(l, training));
  // act[i]: the buffer holding the input of leaf i (act[L] is the output); views point at the buffer they view.
  const act: SymBuffer[] = [];
  const inShape = stages[0].inputShape.slice();
  act.push({ key: 'act0', what: 'input x', shape: [B, ...inShape], dtype, bpe });
  ls.forEach((l, i) => {
    act.push(rules[i].outputIsView ? act[i] : { key: `act${i + 1}`, what: `${leafName(l)} output y`, shape: [B, ...l.outputShape], dtype, bpe });
  });
  const residuals = new Map<string, SymBuffer>();
  // A Sequential's forward saves its input and every layer's output besides the layers' own residuals.
  let base = 0;
  for (const st of stages) {
    const n = leaves(st).length;
    if (isContainer(st)) {
      for (let i = base; i <= base + n; i++) if (!residuals.has(act[i].key)) residuals.set(act[i].key, { ...act[i], what: `${describeOf(st)} saved ${act[i].what}` });
    }
    base += n;
  }
  ls.forEach((l, i) => {
    for (const s of rules[i].saves) {
      const b: SymBuffer =
        s === 'x' ? act[i] : s === 'y' ? act[i + 1] : { key: `own${i}.${s.what}`, what: `${leafName(l)} ${s.what}`, shape: [B, ...s.perSample], dtype: s.dtype || dtype, bpe: s.bpe || bpe };
      if (!residuals.has(b.key)) residuals.set(b.key, { ...b, what: s === 'x' || s === 'y' ? `${leafName(l)} saved ${s} (${b.what})` : `${b.what}` });
    }
  });
  // The reverse pass: dy, then each leaf's dx (a view of its dy for Flatten, inference Dropout), and each gradient.
  const outShape = stages[stages.length - 1].outputShape.slice();
  const cot: SymBuffer[] = [{ key: 'dy', what: 'output cotangent dy', shape: [B, ...outShape], dtype, bpe }];
  for (let i = ls.length - 1; i >= 0; i--) {
    if (!rules[i].vjpIsView) cot.push({ key: `dx${i}`, what: `${leafName(ls[i])} cotangent dx`, shape: [B, ...ls[i].inputShape], dtype, bpe });
    ls[i].params.forEach((p) => cot.push({ key: `g${i}.${p.name}`, what: `${leafName(ls[i])} gradient ${p.name}`, shape: p.value.shape.slice(), dtype, bpe }));
  }
  const vjp = vjpAccount([...residuals.values()].map(account), cot.map(account));
  // The explicit way: per stage, the Jacobian w.r.t. its input and w.r.t. each of its parameters.
  const jacobians: JacobianAccount[] = [];
  let leafBase = 0;
  for (const [s, st] of stages.entries()) {
    const sl = leaves(st);
    const prefix = stages.length > 1 ? `stage ${s} ` : '';
    const nIn = sizeOf(st.inputShape);
    const nOut = sizeOf(st.outputShape);
    // A block's tangents: the seed, then each layer's JVP output that is not a view.
    const outs = (from: number) => sum(sl.slice(from).map((l, k) => (rules[leafBase + from + k].jvpIsView ? 0 : sizeOf(l.outputShape))));
    const T = tangentBlockWidth(nIn, B * (nIn + nOut) * bpe, opts.tangents);
    jacobians.push({
      wrt: `${prefix}input`,
      shape: [B, ...st.outputShape, ...st.inputShape],
      columns: nIn,
      bytes: denseJacobianBytes(B, st.outputShape, st.inputShape, dtype),
      tangents: T,
      tangentBlockBytes: T * bpe * B * (nIn + outs(0)),
    });
    sl.forEach((l, j) => {
      for (const p of l.params) {
        const nP = p.value.size;
        const Tp = tangentBlockWidth(nP, (B * nOut + nP) * bpe, opts.tangents);
        jacobians.push({
          wrt: `${prefix}${leafName(l)}.${p.name}`,
          shape: [B, ...st.outputShape, ...p.value.shape],
          columns: nP,
          bytes: denseJacobianBytes(B, st.outputShape, p.value.shape, dtype),
          tangents: Tp,
          // Layers before the seeded one are skipped (null tangents stay null).
          tangentBlockBytes: Tp * bpe * (nP + B * outs(j)),
        });
      }
    });
    leafBase += sl.length;
  }
  const jacobianBytes = sum(jacobians.map((j) => j.bytes));
  return {
    kind: 'estimate',
    what: what ?? describeOf(stages[0]),
    batch: B,
    dtype,
    inputShape: inShape,
    outputShape: outShape,
    explicit: { jacobians, jacobianBytes, tangentBlockBytes: Math.max(0, ...jacobians.map((j) => j.tangentBlockBytes)) },
    vjp,
    ratio: jacobianBytes / vjp.bytes,
    stages: [],
  };
}

function combine(kind: 'estimate' | 'measured', whole: MemoryReport, stages: MemoryReport[], firstStageInput: boolean): MemoryReport {
  const jacobians = stages.flatMap((r, s) =>
    r.explicit.jacobians.filter((_, k) => firstStageInput || s > 0 || k > 0).map((j) => ({ ...j, wrt: `stage ${s} ${j.wrt}` })),
  );
  const jacobianBytes = sum(jacobians.map((j) => j.bytes));
  return {
    ...whole,
    kind,
    explicit: { jacobians, jacobianBytes, tangentBlockBytes: Math.max(0, ...stages.map((r) => r.explicit.tangentBlockBytes)) },
    ratio: jacobianBytes / whole.vjp.bytes,
    stages,
  };
}

function vjpAccount(residuals: BufferAccount[], cotangents: BufferAccount[]): VjpAccount {
  const residualBytes = sum(residuals.map((b) => b.bytes));
  const cotangentBytes = sum(cotangents.map((b) => b.bytes));
  return { residuals, residualBytes, cotangents, cotangentBytes, bytes: residualBytes + cotangentBytes };
}

function account(b: SymBuffer): BufferAccount {
  return { what: b.what, shape: b.shape, dtype: b.dtype, bytes: sizeOf(b.shape) * b.bpe };
}

function ruleOf(l: LeafLike, training: boolean): LeafRule {
  const rule = l.className ? RULES[l.className] : undefined;
  if (!rule) {
    throw new ConfigError(`memory estimate: no residual rule for layer ${l.className ? `class ${JSON.stringify(l.className)}` : 'without a className'}; expected one of ${ACCOUNTED_LAYERS.join(', ')} (or a Sequential of them)`);
  }
  const r = rule(l, training);
  // Dropout's mask takes the layer's dtype.
  const dt: DType = l.dtype ?? 'float64';
  return { ...r, saves: r.saves.map((s) => (typeof s === 'object' && s.bpe === 0 ? { ...s, dtype: dt, bpe: bytesPerElement(dt) } : s)) };
}

// ---------------------------------------------------------------------------------------------
// Shared helpers.

function asStages(model: Accountable): readonly Differentiable[] {
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

function isContainer(f: Differentiable): boolean {
  return Array.isArray((f as { layers?: unknown }).layers);
}

/** The leaf layers of a layer or stage (a Sequential's `layers`, recursively). */
function leaves(f: Differentiable): LeafLike[] {
  if (isContainer(f)) return (f as unknown as { layers: Differentiable[] }).layers.flatMap((l) => leaves(l));
  return [f as LeafLike];
}

function leafName(l: LeafLike): string {
  return l.name || l.className || 'layer';
}

function describeOf(f: Differentiable): string {
  const d = (f as { describe?: () => string }).describe;
  return typeof d === 'function' ? d.call(f) : ((f as LeafLike).className ?? 'model');
}

function modelDtype(f: Differentiable): DType {
  const p = leaves(f).flatMap((l) => l.params)[0];
  if (p) return dtypeOf(p.value);
  return (leaves(f)[0] as { dtype?: DType }).dtype ?? 'float64';
}

function onesLike(t: Tensor): Tensor {
  const o = zeros(t.shape, dtypeOf(t));
  o.data.fill(1);
  return o;
}

function sum(xs: number[]): number {
  let s = 0;
  for (const x of xs) s += x;
  return s;
}

function largest(js: JacobianAccount[]): JacobianAccount {
  return js.reduce((a, b) => (b.bytes > a.bytes ? b : a), js[0]);
}

function fmtRatio(r: number): string {
  return r >= 100 ? `${Math.round(r)}×` : `${r.toPrecision(3)}×`;
}

/** Distinct buffers reachable from values, each counted once, in the order first met. */
class BufferSet {
  private seen = new Set<ArrayBufferLike>();
  private visited = new Set<object>();
  private items: BufferAccount[] = [];

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

  list(): BufferAccount[] {
    return this.items;
  }

  private addView(view: ArrayBufferView, shape: number[], what: string): void {
    if (this.seen.has(view.buffer)) return;
    this.seen.add(view.buffer);
    this.items.push({ what, shape, dtype: viewDtype(view), bytes: view.buffer.byteLength });
  }
}

function isTensor(v: unknown): v is Tensor {
  return typeof v === 'object' && v !== null && ArrayBuffer.isView((v as Tensor).data) && Array.isArray((v as Tensor).shape);
}

function viewDtype(v: ArrayBufferView): string {
  if (v instanceof Float64Array) return 'float64';
  if (v instanceof Float32Array) return 'float32';
  if (v instanceof Int32Array) return 'int32';
  if (v instanceof Uint8Array) return 'uint8';
  return v.constructor.name;
}

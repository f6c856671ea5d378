/**
 * Structured Jacobians with an automatic choice of mode: `jacobianWrtInput(x, {mode, format})` and
 * `jacobianWrtWeights(x, {mode, format})` route here (see `lib/jacobian.ts`).
 *
 * Engines (see {@link JacobianPlan}):
 * - forward · `propagate`: sparse tangents layer by layer (`propagate.ts`), each layer's local
 *   Jacobian from its own hooks; computes only non-zeros;
 * - forward · `compressed`: coloured columns through the dual-number `jvp`, `T` colours per pass
 *   (`compressed.ts`); any {@link Differentiable} (a layer without structure hooks is dense: one
 *   column per colour, the dense builder);
 * - reverse · `compressed`: coloured rows through the `vjp` (stacked VJPs); best when the Jacobian
 *   is wide (few rows), e.g. a stage ending in `Dense(1)`;
 * - `dense`: the dense builders of `lib/jacobian.ts` (format `dense` only).
 *
 * `mode: 'auto'` estimates each available engine's multiply-adds (an indexed sparse
 * multiply-add counted as {@link SPARSE_OP_COST} dense ones) from the layers' structure hooks and
 * the closed-form patterns and colourings, drops those whose working set exceeds the memory budget,
 * and takes the cheapest; the plan (attached to a sparse result as `J.plan`, and returned by
 * {@link planJacobian}) lists every candidate and says why the winner won.
 * @module
 */
import { ConfigError, fmtShape, fmtValue } from '../errors.js';
import { DenseJacobian, type Jacobian, assertSamplesIndependent, denseJacobianBytes, firstCouplingLayer, forwardJacobianWrtInput as denseJacobianWrtInput, forwardJacobianWrtWeights as denseJacobianWrtWeights, jacobianWrtInputByVjp, jacobianWrtWeightsByVjp } from '../dense-jacobian.js';
import { type Differentiable, type ForwardOptions, describeOf, leavesOf, trainableIndices } from '../layers/layer.js';
import { fmtBytes, getMemoryBudget, guardBytes } from '../memory.js';
import { type Tensor, assertFinite, assertShape, bytesPerElement, dtypeOf, sizeOf } from '../tensor.js';
import { type Colouring, greedyColumnColouring, greedyRowColouring, kronColumnColouring, kronRowColouring, trivialColouring } from './colouring.js';
import { DEFAULT_BLOCK_BYTES, blockWidthFor, bytesPerTangent, compressedForward, compressedReverse, stackPatterns } from './compressed.js';
import { type CsrMatrix, type JacobianPlan, type PlanCandidate, SparseJacobian } from './csr.js';
import { FactoredJacobian, factoredBytesBound } from './factored.js';
import { KronPattern, SparsityPattern } from '../structure.js';
import { localJacobianOf, localRowNnzOf, macsOf } from './hooks.js';
import { composeKron, ownerOf, paramKron, stageKron } from './pattern.js';
import { chainLocals, layerPasses, propagateJacobian } from './propagate.js';

/** How the Jacobian is built: `auto` picks by estimated cost. */
export type JacobianMode = 'auto' | 'forward' | 'reverse';
/**
 * How it is stored: `dense` (`DenseJacobian`), `sparse` (`SparseJacobian`, per-sample CSR), or
 * `factored` (w.r.t. a weight whose layer declares a `paramFactor`: a `FactoredJacobian`, the
 * stage's CSR Jacobian w.r.t. the layer's linear output times the layer's patches ⊗ identity;
 * elsewhere, and w.r.t. the input, CSR as `sparse`).
 */
export type JacobianFormat = 'dense' | 'sparse' | 'factored';
/** The engines a plan chooses among. */
export type JacobianEngine = 'propagate' | 'compressed' | 'dense';

/** How many dense multiply-adds one indexed sparse multiply-add (gather, scatter, marker test) costs, for the planner. */
export const SPARSE_OP_COST = 4;

/** Options of the structured builders. */
export interface StructuredJacobianOptions extends ForwardOptions {
  /** `auto` (default here), `forward` or `reverse`. */
  mode?: JacobianMode;
  /** `sparse` (default here), `factored` or `dense`. */
  format?: JacobianFormat;
  /** Force an engine within the mode (forward: `propagate`, `compressed` or `dense`; reverse: `compressed` or `dense`). */
  engine?: JacobianEngine;
  /**
   * What the compressed engines colour: `structural` (default: the closed-form pattern, O(n)) or
   * `values` (the pattern of this very pass, pruned by ReLU zeros and pooling winners: fewer
   * colours, found by sparse propagation first and greedy CPR).
   */
  pattern?: 'structural' | 'values';
  /** Refuse a result (or working set) estimated over this many bytes. Default {@link getMemoryBudget}. */
  memoryBudget?: number;
  /** Bytes one block of tangents may take. Default: 256 MiB, at most a sixteenth of the budget. */
  blockBytes?: number;
  /** Tangents per pass (overrides `blockBytes`). */
  tangents?: number;
  /** Progress: (steps done, steps in all). */
  onProgress?: (done: number, total: number) => void;
}

/** Structural entries per local row of a layer at a recorded pass, and how many inputs a needed output row needs (its fan-out in the backward marking): from its hooks. */
function localFan(l: Differentiable): { nnz: number; multi: boolean; fan: number } {
  const nnz = localRowNnzOf(l);
  return { nnz, multi: nnz > 1, fan: nnz };
}

/**
 * Estimated multiply-adds and largest level (entries) of sparse propagation, from structure alone:
 * a full layer's row combines `local` rows of the last materialized level; the rows it makes hold
 * at most the structural receptive field (`prefixRowNnz`, from the Kronecker pattern) and at most
 * `local ×` the combined rows' entries. Selections (pooling winners) and diagonals keep the row
 * size and the needed count.
 */
function propagateEstimate(layers: readonly Differentiable[], first: number, firstNnz: number, prefixRowNnz: readonly number[]): { macs: number; levelEntries: number; resultEntries: number } {
  const n = layers.length;
  const needed = new Array<number>(n);
  needed[n - 1] = sizeOf(layers[n - 1].outputShape);
  for (let k = n - 1; k > first; k--) needed[k - 1] = Math.min(sizeOf(layers[k - 1].outputShape), needed[k] * localFan(layers[k]).fan);
  let macs = 0;
  let rowNnz = 1;
  let level = 0;
  for (let k = first; k < n; k++) {
    const lf = k === first && firstNnz > 0 ? { nnz: firstNnz, multi: true, fan: firstNnz } : localFan(layers[k]);
    if (!lf.multi) {
      macs += needed[k];
      continue;
    }
    macs += needed[k] * lf.nnz * rowNnz * SPARSE_OP_COST;
    rowNnz = Math.min(lf.nnz * rowNnz, prefixRowNnz[k] ?? Infinity);
    level = Math.max(level, needed[k] * rowNnz);
  }
  return { macs, levelEntries: level, resultEntries: needed[n - 1] * rowNnz };
}

/** Largest structural row of each layer's output w.r.t. the stage input (or the parameter), from the composed Kronecker patterns; empty when they do not line up. */
function prefixRowNnz(layers: readonly Differentiable[], wrt: { layer: number; param: number } | null): number[] {
  const out: number[] = [];
  try {
    let P = wrt ? paramKron(layers[wrt.layer], wrt.param) : KronPattern.identity(layers[0].inputShape);
    for (let i = 0; i < layers.length; i++) {
      if (wrt && i < wrt.layer) continue;
      if (!wrt || i > wrt.layer) P = composeKron(layers[i], P);
      out[i] = P.maxRowNnz();
    }
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
  }
  return out;
}

/** What the planner knows about `f` w.r.t. one target. */
interface Setting {
  f: Differentiable;
  B: number;
  bpe: number;
  wrt: 'input' | number;
  rows: number;
  cols: number;
  layers: Differentiable[];
  kron: KronPattern | null;
  budget: number;
  blockBytes: number;
}

function setting(f: Differentiable, B: number, dtype: 'float64' | 'float32', wrt: 'input' | number, opts: StructuredJacobianOptions): Setting {
  const layers = leavesOf(f);
  let kron: KronPattern | null = null;
  try {
    if (wrt === 'input') kron = stageKron(layers);
    else {
      const owner = ownerOf(layers, f.params[wrt]);
      kron = owner ? stageKron(layers, owner) : null;
    }
  } catch (e) {
    // Layers whose patterns do not line up into Kronecker factors: the compressed engines fall back to dense colourings.
    if (!(e instanceof ConfigError)) throw e;
    kron = null;
  }
  const budget = opts.memoryBudget ?? getMemoryBudget();
  return {
    f,
    B,
    bpe: bytesPerElement(dtype),
    wrt,
    rows: sizeOf(f.outputShape),
    cols: wrt === 'input' ? sizeOf(f.inputShape) : f.params[wrt].value.size,
    layers,
    kron,
    budget,
    blockBytes: opts.blockBytes ?? Math.min(DEFAULT_BLOCK_BYTES, Math.max(1024 ** 2, Math.floor(budget / 16))),
  };
}

/** Every engine's estimate for one target (input or one parameter). */
function candidates(s: Setting, format: JacobianFormat): PlanCandidate[] {
  const { B, bpe, rows, cols, layers, kron } = s;
  // One tangent through every layer: the unit the engines' costs are counted in.
  const unit = layers.reduce((n, l) => n + macsOf(l), 0);
  const perT = bytesPerTangent(s.f, B, bpe === 4 ? 'float32' : 'float64', s.wrt);
  const out: PlanCandidate[] = [];
  const resultBytes = (entries: number) => entries * (4 + bpe);
  let first = 0;
  let firstNnz = 0;
  const owner = s.wrt === 'input' ? null : ownerOf(layers, s.f.params[s.wrt])!;
  const prefix = prefixRowNnz(layers, owner);
  if (owner) {
    first = owner.layer;
    firstNnz = prefix[first] ?? cols;
  }
  const est = propagateEstimate(layers, first, firstNnz, prefix);
  out.push({ mode: 'forward', engine: 'propagate', colours: 0, macs: B * est.macs, workBytes: resultBytes(est.levelEntries) });
  if (kron) {
    const cf = kronColumnColouring(kron).count;
    const T = blockWidthFor(cf, perT, s.blockBytes);
    out.push({ mode: 'forward', engine: 'compressed', colours: cf, macs: cf * B * unit + kron.nnz * B, workBytes: T * perT });
    const cr = kronRowColouring(kron).count * (s.wrt === 'input' ? 1 : B);
    out.push({ mode: 'reverse', engine: 'compressed', colours: cr, macs: cr * 2 * B * unit + kron.nnz * B, workBytes: B * (sizeOf(s.f.inputShape) + 2 * rows) * bpe });
  } else {
    const why = 'the layers do not line up into a Kronecker pattern';
    out.push({ mode: 'forward', engine: 'compressed', colours: cols, macs: Infinity, workBytes: 0, unavailable: `${why}: compressed is the dense engine here` });
    out.push({ mode: 'reverse', engine: 'compressed', colours: rows, macs: Infinity, workBytes: 0, unavailable: `${why}: compressed is the dense engine here` });
  }
  const Td = blockWidthFor(cols, perT, s.blockBytes);
  out.push({ mode: 'forward', engine: 'dense', colours: cols, macs: cols * B * unit + (format === 'sparse' ? B * rows * cols : 0), workBytes: Td * perT });
  const rr = s.wrt === 'input' ? rows : B * rows;
  out.push({ mode: 'reverse', engine: 'dense', colours: rr, macs: rr * 2 * B * unit + (format === 'sparse' ? B * rows * cols : 0), workBytes: B * (sizeOf(s.f.inputShape) + 2 * rows) * bpe });
  return out;
}

function fmtMacs(n: number): string {
  return n === Infinity ? '∞' : n.toExponential(2);
}

/** Picks the engine: the requested mode and engine, or the cheapest available candidate within the budget. */
function choose(s: Setting, opts: StructuredJacobianOptions, format: JacobianFormat): JacobianPlan {
  const mode = opts.mode ?? 'auto';
  if (!['auto', 'forward', 'reverse'].includes(mode)) throw new ConfigError(`jacobian: expected mode 'auto', 'forward' or 'reverse', received ${fmtValue(opts.mode)}`);
  if (opts.engine !== undefined && !['propagate', 'compressed', 'dense'].includes(opts.engine)) throw new ConfigError(`jacobian: expected engine 'propagate', 'compressed' or 'dense', received ${fmtValue(opts.engine)}`);
  if (opts.engine === 'propagate' && mode === 'reverse') throw new ConfigError(`jacobian: engine 'propagate' is forward mode, received mode 'reverse'`);
  const all = candidates(s, format);
  const usable = all.filter((c) => !c.unavailable && (mode === 'auto' || c.mode === mode) && (opts.engine === undefined || c.engine === opts.engine));
  let pick: PlanCandidate;
  let reason: string;
  const others = (c: PlanCandidate) =>
    all
      .filter((o) => o !== c)
      .map((o) => `${o.mode}/${o.engine}${o.colours ? ` (${o.colours} colours)` : ''} ${o.unavailable ? 'unavailable' : fmtMacs(o.macs)}`)
      .join(', ');
  if (mode === 'auto' && opts.engine === undefined) {
    const fits = usable.filter((c) => c.workBytes <= s.budget);
    const pool = fits.length ? fits : usable;
    pick = pool.reduce((a, c) => (c.macs < a.macs ? c : a), pool[0]);
    reason = `cheapest estimate: ${pick.mode}/${pick.engine} ${fmtMacs(pick.macs)} multiply-adds, working set ${fmtBytes(pick.workBytes)}; vs ${others(pick)}`;
    if (!fits.length) reason += `; no engine fits the budget of ${fmtBytes(s.budget)}`;
  } else {
    // An explicit mode (or engine): the cheapest of what it allows, within the budget when one fits.
    if (!usable.length) {
      const wanted = `${mode}${opts.engine ? `/${opts.engine}` : ''}`;
      const why = all.filter((c) => (mode === 'auto' || c.mode === mode) && (!opts.engine || c.engine === opts.engine)).map((c) => c.unavailable).filter(Boolean);
      throw new ConfigError(`jacobian: ${wanted} is not available for ${describeOf(s.f)}: ${why.join('; ') || 'no such engine'}`);
    }
    const fits = usable.filter((c) => c.workBytes <= s.budget);
    const pool = fits.length ? fits : usable;
    pick = pool.reduce((a, c) => (c.macs < a.macs ? c : a), pool[0]);
    reason = `requested ${mode}${opts.engine ? `/${opts.engine}` : ''}: ${pick.mode}/${pick.engine} ${fmtMacs(pick.macs)} multiply-adds; vs ${others(pick)}`;
  }
  const perT = bytesPerTangent(s.f, s.B, s.bpe === 4 ? 'float32' : 'float64', s.wrt);
  const blockWidth = pick.mode === 'forward' && pick.engine !== 'propagate' ? blockWidthFor(pick.colours, perT, s.blockBytes, opts.tangents) : 1;
  return {
    mode: pick.mode,
    engine: pick.engine,
    reason,
    colours: pick.colours,
    blockWidth,
    passes: pick.engine === 'propagate' ? 0 : Math.ceil(pick.colours / blockWidth),
    candidates: all,
    estimatedBytes: (s.kron ? s.kron.nnz : s.rows * s.cols) * s.B * (4 + s.bpe),
    budgetBytes: s.budget,
  };
}

/**
 * The plan for a Jacobian of `f` at a batch of `batch` (w.r.t. the input, or `f.params[wrt]`):
 * the engine `mode: 'auto'` would choose, every candidate's estimate, and why. Nothing is computed.
 * @example
 * const plan = planJacobian(model_0, 1, { dtype: 'float64' });
 * plan.engine; plan.reason; // 'propagate', 'cheapest estimate: …'
 */
export function planJacobian(f: Differentiable, batch: number, opts: StructuredJacobianOptions & { wrt?: 'input' | number; dtype?: 'float64' | 'float32' } = {}): JacobianPlan {
  return choose(setting(f, batch, opts.dtype ?? 'float64', opts.wrt ?? 'input', opts), opts, opts.format ?? 'sparse');
}

/** Colouring and pattern for the compressed engines, per the `pattern` option. */
function compressedSetup(s: Setting, f: Differentiable, x: Tensor, plan: JacobianPlan, opts: StructuredJacobianOptions, fwd: { y: Tensor; saved: unknown }) {
  if (plan.engine === 'dense' || !s.kron) {
    const n = plan.mode === 'forward' ? s.cols : s.wrt === 'input' ? s.rows : s.B * s.rows;
    return { pattern: undefined as SparsityPattern | SparsityPattern[] | undefined, colouring: trivialColouring(n) };
  }
  if (opts.pattern === 'values') {
    const J = propagateJacobian(f, x, { wrt: s.wrt, forward: fwd });
    const pats = J.samples.map((m) => new SparsityPattern(m.rows, m.cols, m.rowPtr, m.colIdx));
    const union = SparsityPattern.union(pats);
    let colouring: Colouring;
    if (plan.mode === 'forward') colouring = greedyColumnColouring(union);
    else if (s.wrt === 'input') colouring = greedyRowColouring(union);
    else colouring = greedyRowColouring(stackPatterns(pats));
    return { pattern: pats, colouring };
  }
  guardBytes(`structural pattern of ${describeOf(f)}`, 4 * s.kron.nnz, s.budget, "use engine 'propagate'");
  const pattern = s.kron.expand(s.budget);
  let colouring: Colouring;
  if (plan.mode === 'forward') colouring = kronColumnColouring(s.kron);
  else if (s.wrt === 'input') colouring = kronRowColouring(s.kron);
  else colouring = greedyRowColouring(stackPatterns(new Array<SparsityPattern>(s.B).fill(pattern)));
  return { pattern, colouring };
}

/** Builds one target's Jacobian with the plan's engine, as a SparseJacobian (or Dense, for the dense engine with format dense). */
function build(s: Setting, f: Differentiable, x: Tensor, plan: JacobianPlan, opts: StructuredJacobianOptions, fwd: { y: Tensor; saved: unknown }): SparseJacobian {
  const t0 = performance.now();
  let J: SparseJacobian;
  if (plan.engine === 'propagate') {
    J = propagateJacobian(f, x, { wrt: s.wrt, forward: fwd, onProgress: opts.onProgress });
  } else {
    const { pattern, colouring } = compressedSetup(s, f, x, plan, opts, fwd);
    plan.colours = colouring.count;
    plan.passes = plan.mode === 'forward' ? Math.ceil(colouring.count / plan.blockWidth) : colouring.count;
    const co = { wrt: s.wrt, forward: fwd, pattern, colouring, tangents: plan.blockWidth, onProgress: opts.onProgress };
    J = plan.mode === 'forward' ? compressedForward(f, x, co) : compressedReverse(f, x, co);
  }
  plan.ms = performance.now() - t0;
  J.plan = plan;
  return J;
}

/** Checks x and the options shared by both builders. */
function checkCall(f: Differentiable, x: Tensor, what: string, opts: StructuredJacobianOptions): void {
  assertShape(x, [null, ...f.inputShape], `${what} x`);
  assertFinite(x, `${what} x`);
  if (opts.format !== undefined && opts.format !== 'dense' && opts.format !== 'sparse' && opts.format !== 'factored') {
    throw new ConfigError(`${what}: expected format 'dense', 'sparse' or 'factored', received ${fmtValue(opts.format)}`);
  }
  if (opts.pattern !== undefined && opts.pattern !== 'structural' && opts.pattern !== 'values') {
    throw new ConfigError(`${what}: expected pattern 'structural' or 'values', received ${fmtValue(opts.pattern)}`);
  }
  if (what === 'jacobianWrtInput') assertSamplesIndependent(f, opts, `${what} (structured engines)`);
  const coupled = firstCouplingLayer(f, opts);
  if (coupled) {
    // Reached for the weights only: the input's batch Jacobian was refused just above.
    // The structured engines read per-sample patterns and per-sample local Jacobians, which cannot hold a path from one sample to another.
    throw new ConfigError(
      `${what} (structured engines): ${describeOf(coupled)} couples the samples of a batch${opts.training ? ' in training mode' : ''}, and these engines build per-sample Jacobians; expected a stage whose samples are independent, received one with ${describeOf(coupled)}: use the dense builders (no mode, engine or format)`,
    );
  }
}

/**
 * The Jacobian w.r.t. the input, `[B, ...out, ...in]`, sparse (per-sample CSR), by the engine the
 * mode picks (`auto` by default). The result's `plan` says which and why.
 * @example
 * const J = sparseJacobianWrtInput(model_0, x); // auto: propagate for a conv stage
 * J.nnz; J.bytes; J.plan.reason;
 */
export function sparseJacobianWrtInput(f: Differentiable, x: Tensor, opts: StructuredJacobianOptions = {}): SparseJacobian {
  checkCall(f, x, 'jacobianWrtInput', opts);
  const s = setting(f, x.shape[0], dtypeOf(x), 'input', opts);
  const plan = choose(s, opts, 'sparse');
  guardBytes(`sparse batch Jacobian w.r.t. the input ${fmtShape([s.B, ...f.outputShape, ...f.inputShape])} (structural bound)`, plan.estimatedBytes, s.budget);
  const fwd = f.forward(x, opts);
  return build(s, f, x, plan, opts, fwd);
}

/**
 * The Jacobians w.r.t. each parameter, `[B, ...out, ...param]` each, sparse; one plan per parameter.
 * @example
 * const [dKernel, dBias] = sparseJacobianWrtWeights(conv, x); // each a SparseJacobian with its plan
 * upstreamGradientLossWeights(dKernel, dLoss_dOut);           // dLoss/dKernel, [kh, kw, cin, cout]
 */
export function sparseJacobianWrtWeights(f: Differentiable, x: Tensor, opts: StructuredJacobianOptions & { format: 'factored' }): (SparseJacobian | FactoredJacobian)[];
export function sparseJacobianWrtWeights(f: Differentiable, x: Tensor, opts?: StructuredJacobianOptions & { format?: 'sparse' | 'dense' }): SparseJacobian[];
export function sparseJacobianWrtWeights(f: Differentiable, x: Tensor, opts?: StructuredJacobianOptions): (SparseJacobian | FactoredJacobian)[];
export function sparseJacobianWrtWeights(f: Differentiable, x: Tensor, opts: StructuredJacobianOptions = {}): (SparseJacobian | FactoredJacobian)[] {
  checkCall(f, x, 'jacobianWrtWeights', opts);
  const B = x.shape[0];
  const settings = trainableIndices(f).map((k) => setting(f, B, dtypeOf(x), k, opts));
  const plans = settings.map((s) => choose(s, opts, 'sparse'));
  if (opts.format === 'factored') return factoredWeights(f, x, settings, plans, opts);
  const total = plans.reduce((a, p) => a + p.estimatedBytes, 0);
  guardBytes(`sparse Jacobians w.r.t. ${settings.length} parameters (structural bound)`, total, settings[0]?.budget ?? opts.memoryBudget ?? getMemoryBudget());
  const fwd = f.forward(x, opts);
  return settings.map((s, k) => build(s, f, x, plans[k], opts, fwd));
}

/**
 * The factored path of {@link sparseJacobianWrtWeights}: for each parameter whose layer states a
 * `paramFactor` at this pass, `A · (P ⊗ I)` with `A` the stage's Jacobian w.r.t. the layer's
 * linear output, by sparse propagation from there (built once per layer: a kernel and its bias
 * share it, since the factors after `z` are the layer's activation's); every other parameter by its
 * plan, as CSR. Refused before building when the structural bound of all of it (each shared `A`
 * once) is over the budget.
 */
function factoredWeights(f: Differentiable, x: Tensor, settings: Setting[], plans: JacobianPlan[], opts: StructuredJacobianOptions): (SparseJacobian | FactoredJacobian)[] {
  const B = x.shape[0];
  const dtype = dtypeOf(x);
  const layers = leavesOf(f);
  const owners = settings.map((s) => ownerOf(layers, f.params[s.wrt as number]));
  const bounds = owners.map((o) => (o ? factoredBytesBound(layers, o, B, dtype) : null));
  // Each layer's A counted once: its kernel and bias share it.
  const leftBytes = new Map<number, number>();
  owners.forEach((o, k) => {
    if (o && bounds[k]) leftBytes.set(o.layer, bounds[k]!.left);
  });
  const total = [...leftBytes.values()].reduce((a, b) => a + b, 0) + bounds.reduce((a, bd, k) => a + (bd ? bd.factor : plans[k].estimatedBytes), 0);
  guardBytes(`Jacobians w.r.t. ${settings.length} parameters, factored where the layer states it (structural bound)`, total, settings[0]?.budget ?? opts.memoryBudget ?? getMemoryBudget());
  const fwd = f.forward(x, opts);
  const passes = layerPasses(f, x, fwd);
  const facts = owners.map((owner, k) => {
    if (!owner || !passes || !bounds[k]) return null;
    const q = passes[owner.layer];
    const fz = q.layer.paramFactor?.(q, owner.param) ?? null;
    return fz ? { owner, ...fz } : null;
  });
  const lefts = new Map<number, CsrMatrix[]>();
  return settings.map((s, k) => {
    const fz = facts[k];
    if (!fz || !passes) return build(s, f, x, plans[k], opts, fwd);
    const t0 = performance.now();
    let left = lefts.get(fz.owner.layer);
    const shared = left !== undefined;
    if (!left) {
      const locals = [...fz.then, ...passes.slice(fz.owner.layer + 1).flatMap((q) => localJacobianOf(q, 'input'))];
      // Unsorted rows: nothing reads A by column order, and sorting its long rows is a good part of its cost.
      left = chainLocals(locals, B, fz.factor.positions * fz.factor.units, dtype, { onProgress: opts.onProgress, sortRows: false });
      lefts.set(fz.owner.layer, left);
    }
    const p = f.params[s.wrt as number];
    const owner = describeOf(layers[fz.owner.layer]);
    const J = new FactoredJacobian(left, fz.factor, f.outputShape, p.value.shape, dtype, `w.r.t. ${p.name} (factored)`, shared);
    J.plan = {
      ...plans[k],
      mode: 'forward',
      engine: 'propagate',
      reason: `factored: the stage's Jacobian w.r.t. ${owner}'s linear output (sparse propagation${shared ? ', shared with its other parameter' : ''}) times its patches ⊗ identity; vs CSR by ${plans[k].mode}/${plans[k].engine}`,
      colours: 0,
      blockWidth: 1,
      passes: 0,
      estimatedBytes: (shared ? 0 : bounds[k]!.left) + bounds[k]!.factor,
      ms: performance.now() - t0,
    };
    return J;
  });
}

/**
 * The dense or sparse Jacobian w.r.t. the input, as `{mode, format}` ask: what
 * `jacobianWrtInput(f, x, {mode, format})` routes to when either is given.
 * @example
 * const J = structuredJacobianWrtInput(model_0, x, { mode: 'auto', format: 'dense' }); // a DenseJacobian, built sparsely
 */
export function structuredJacobianWrtInput(f: Differentiable, x: Tensor, opts: StructuredJacobianOptions = {}): Jacobian {
  // W.r.t. the input nothing is factored: `factored` is CSR there.
  if ((opts.format ?? 'sparse') !== 'dense') return sparseJacobianWrtInput(f, x, opts);
  checkCall(f, x, 'jacobianWrtInput', opts);
  const s = setting(f, x.shape[0], dtypeOf(x), 'input', opts);
  const plan = choose(s, opts, 'dense');
  guardBytes(`batch Jacobian w.r.t. the input ${fmtShape([s.B, ...f.outputShape, ...f.inputShape])}`, denseJacobianBytes(s.B, f.outputShape, f.inputShape, dtypeOf(x)), s.budget);
  if (plan.engine === 'dense') {
    // Without mode, format and engine, the dense builders run themselves rather than route back here.
    const jo = { ...opts, mode: undefined, format: undefined, engine: undefined, memoryBudget: s.budget };
    return plan.mode === 'forward' ? denseJacobianWrtInput(f, x, jo) : jacobianWrtInputByVjp(f, x, jo);
  }
  const J = build(s, f, x, plan, opts, f.forward(x, opts));
  return new DenseJacobian(J.toDense({ memoryBudget: s.budget }), s.B, f.outputShape, f.inputShape, `w.r.t. input (${plan.mode}/${plan.engine})`);
}

/**
 * The dense or sparse Jacobians w.r.t. each parameter, as `{mode, format}` ask.
 * @example
 * const Js = structuredJacobianWrtWeights(stage, x, { mode: 'reverse', format: 'sparse' });
 */
export function structuredJacobianWrtWeights(f: Differentiable, x: Tensor, opts: StructuredJacobianOptions = {}): Jacobian[] {
  if ((opts.format ?? 'sparse') !== 'dense') return sparseJacobianWrtWeights(f, x, opts);
  checkCall(f, x, 'jacobianWrtWeights', opts);
  const B = x.shape[0];
  const dtype = dtypeOf(x);
  const budget = opts.memoryBudget ?? getMemoryBudget();
  const wrt = trainableIndices(f);
  guardBytes(`Jacobians w.r.t. ${wrt.length} parameters`, wrt.reduce((a, k) => a + denseJacobianBytes(B, f.outputShape, f.params[k].value.shape, dtype), 0), budget);
  const settings = wrt.map((k) => setting(f, B, dtype, k, opts));
  const plans = settings.map((s) => choose(s, opts, 'dense'));
  // Stacked VJPs give every parameter's rows at once: when every plan is reverse and one of them
  // needs all the rows anyway (engine dense), one pass serves them all rather than one per parameter.
  const allReverse = plans.every((p) => p.mode === 'reverse') && plans.some((p) => p.engine === 'dense');
  if (allReverse || plans.every((p) => p.engine === 'dense' && p.mode === plans[0].mode)) {
    const jo = { ...opts, mode: undefined, format: undefined, engine: undefined, memoryBudget: budget };
    return plans[0]?.mode === 'reverse' ? jacobianWrtWeightsByVjp(f, x, jo) : denseJacobianWrtWeights(f, x, jo);
  }
  const fwd = f.forward(x, opts);
  return settings.map((s, k) => {
    const p = f.params[wrt[k]];
    if (plans[k].engine === 'dense' && plans[k].mode === 'forward') {
      // One parameter at a time through the dense builder would rebuild all of them: use the compressed engine with one colour per column instead.
      plans[k].engine = 'compressed';
    }
    const J = build(s, f, x, plans[k], opts, fwd);
    return new DenseJacobian(J.toDense({ memoryBudget: budget }), B, f.outputShape, p.value.shape, `w.r.t. ${p.name} (${plans[k].mode}/${plans[k].engine})`);
  });
}

/**
 * The memory account from what was allocated: the passes run, and each buffer reachable from their
 * results counted once (views share their buffer), so that the estimate (`estimate.ts`) can be
 * checked against it.
 * @module
 */
import { firstCouplingLayer, fullJacobianWrtInput, jacobianWrtInput, jacobianWrtWeights } from '../jacobian.js';
import type { Differentiable, ForwardOptions } from '../layers/layer.js';
import { describeOf, isTrainable, leavesOf } from '../layers/layer.js';
import type { Tensor } from '../tensor.js';
import { dtypeOf } from '../tensor.js';
import { type Accountable, BufferSet, type JacobianAccount, type MemoryReport, type VjpAccount, asStages, leafName, onesLike, sum, vjpAccount } from './account.js';
import { combine, estimateMemory, guardExplicitWay } from './estimate.js';

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
      const Jin = firstCouplingLayer(stage, fo) ? fullJacobianWrtInput(stage, h, jo) : jacobianWrtInput(stage, h, jo);
      const Js = [Jin, ...jacobianWrtWeights(stage, h, jo)];
      Js.forEach((J, k) => jac.push({ ...estS.explicit.jacobians[k], shape: J.shape.slice(), bytes: J.bytes }));
    }
    const { account, y } = measureVjpWay([stage], h, fo, s === stages.length - 1 ? opts.dy : undefined);
    const jacobianBytes = sum(jac.map((j) => j.bytes));
    reports.push({ ...estS, kind: 'measured', explicit: { jacobians: jac, jacobianBytes, tangentBlockBytes: estS.explicit.tangentBlockBytes, streamed: estS.explicit.streamed }, vjp: account, ratio: opts.jacobians === false ? NaN : jacobianBytes / account.bytes, stages: [] });
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
  const layers = stages.flatMap((s) => leavesOf(s));
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
    ct.dParams.forEach((p, k) => {
      // A non-trainable parameter's cotangent is dropped at once, as the chains drop it.
      if (isTrainable(layers[i].params[k])) cot.add(p, `${leafName(layers[i])} gradient ${layers[i].params[k]?.name ?? k}`);
    });
    g = ct.dx;
  }
  return { account: vjpAccount(residuals.list(), cot.list()), y: h };
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


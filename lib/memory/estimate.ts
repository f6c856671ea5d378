/**
 * The memory account from shapes alone, before anything is allocated: a symbolic forward pass
 * over buffers, from what each layer says its forward pass saves (its `residuals` hook: Dense and
 * Conv2D their `x` and `y`, Activation its `y`, MaxPooling2D an int32 `argmax`, Dropout in
 * training its mask, Flatten nothing), or, for a layer without the hook, from what a probe pass of
 * one sample saved.
 * @module
 */
import { ConfigError, fmtShape } from '../errors.js';
import { denseJacobianBytes, firstCouplingLayer, tangentBlockWidth } from '../dense-jacobian.js';
import { type Differentiable, type ForwardOptions, type Residuals, describeOf, leavesOf, trainableParams } from '../layers/layer.js';
import { fmtBytes, getMemoryBudget, guardBytes } from '../memory.js';
import { type DType, bytesPerElement, sizeOf, zeros } from '../tensor.js';
import { streamedBlockWidth, streamedBytesPerTangent } from '../streamed.js';
import { factoredBytesBound } from '../sparse/factored.js';
import { type Accountable, type BufferAccount, BufferSet, type JacobianAccount, type MemoryEstimateOptions, type MemoryReport, asStages, fmtRatio, largest, leafName, modelDtype, streamedAccount, sum, viewDtype, vjpAccount } from './account.js';

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

/**
 * Refuses the explicit way when its Jacobians would exceed the budget, before allocating: the
 * error gives the estimate, the budget, and what the VJP way would hold instead.
 * @throws MemoryBudgetError e.g. `explicit-Jacobian way for 2 stages: needs an estimated 6.12 GiB ..., over the memory budget of 4.00 GiB; use the VJP way ... which holds 41.3 MiB here`
 * @example
 * guardExplicitWay(estimateMemory(stages, 8)); // throws before jacobianChain allocates anything
 */
export function guardExplicitWay(report: MemoryReport, budgetBytes: number = getMemoryBudget(), opts: {
  /** Guard the streamed way (one block, the residuals and the gradients) instead of the materialized one. */
  streamed?: boolean
} = {}): void {
  if (opts.streamed) {
    const s = report.explicit.streamed;
    guardBytes(
      `streamed explicit-Jacobian way for ${report.what} at batch ${report.batch} (${report.explicit.jacobians.length} Jacobians streamed, the largest block ${fmtBytes(s.blockBytes)}; gradients ${fmtBytes(s.gradientBytes)}; the tapes' residuals ${fmtBytes(report.vjp.residualBytes)})`,
      explicitWayBytes(report, true),
      budgetBytes,
      `use the VJP way (vjpChain), which holds ${fmtBytes(report.vjp.bytes)} (${report.vjp.bytes} bytes) here, or narrower blocks ({ jacobian: { tangents } })`,
    );
    return;
  }
  guardBytes(
    `explicit-Jacobian way for ${report.what} at batch ${report.batch} (${report.explicit.jacobians.length} Jacobians, the largest ${fmtShape(largest(report.explicit.jacobians).shape)}, ${fmtBytes(report.explicit.jacobianBytes)}; one tangent block ${fmtBytes(report.explicit.tangentBlockBytes)}; the tapes' residuals ${fmtBytes(report.vjp.residualBytes)})`,
    explicitWayBytes(report),
    budgetBytes,
    `use the VJP way (vjpChain, or tape.gradient with outputGradients), which holds ${fmtBytes(report.vjp.bytes)} (${report.vjp.bytes} bytes) here: ${fmtRatio(report.ratio)} less`,
  );
}

/**
 * Everything the explicit way holds at its peak, the one figure every guard checks: its Jacobians,
 * one block of tangents while the largest is built, and the residuals of the tapes it records.
 * Streamed (`streamed`): no Jacobian is held, only the largest block, the residuals and the
 * gradients ({@link StreamedAccount}).
 * @example
 * explicitWayBytes(estimateMemory(stages, 8), true) < explicitWayBytes(estimateMemory(stages, 8)); // true for any CNN
 */
export function explicitWayBytes(report: MemoryReport, streamed = false): number {
  if (streamed) return report.explicit.streamed.bytes;
  return report.explicit.jacobianBytes + report.explicit.tangentBlockBytes + report.vjp.residualBytes;
}


/**
 * `factoredBytes` of a weight Jacobian whose layer states a factor (`format: 'factored'`): the
 * patches, and the structural bound of `A` for the layer's first trainable parameter (the others
 * share it, as the builder does); nothing otherwise.
 */
function factoredOf(layers: readonly Differentiable[], layer: number, param: number, B: number, dtype: DType, shared: boolean): { factoredBytes?: number } {
  const b = factoredBytesBound(layers, { layer, param }, B, dtype);
  return b ? { factoredBytes: (shared ? 0 : b.left) + b.factor } : {};
}

/** One layer's residuals with element sizes resolved. */
interface LeafRule {
  saves: ('x' | 'y' | { what: string; perSample: number[]; dtype: string; bpe: number; shared: boolean })[];
  outputIsView: boolean;
  jvpIsView: boolean;
  vjpIsView: boolean;
}

const BYTES_PER: Record<string, number> = { float64: 8, float32: 4, int32: 4, uint8: 1 };

/**
 * What a layer's forward pass saves, from its `residuals` hook; for a layer without it, from a
 * probe forward pass of one sample (zeros): each buffer its `saved` reaches is its input (`x`),
 * its output (`y`), or a buffer of its own, counted per sample.
 */
export function residualsOf(l: Differentiable, opts: ForwardOptions): Residuals {
  if (l.residuals) return l.residuals(opts);
  const dtype = modelDtype(l);
  guardBytes(`a probe pass of ${describeOf(l)} (one sample) to count its residuals`, (sizeOf(l.inputShape) + sizeOf(l.outputShape)) * 2 * bytesPerElement(dtype), getMemoryBudget(), 'give the layer a residuals hook');
  const x = zeros([1, ...l.inputShape], dtype);
  const fwd = l.forward(x, opts);
  if (!fwd || typeof fwd !== 'object' || !fwd.y || !ArrayBuffer.isView(fwd.y.data)) {
    throw new ConfigError(`memory estimate: expected ${describeOf(l)}'s forward pass to return { y: Tensor, saved }, received ${fwd === null || typeof fwd !== 'object' ? String(fwd) : `an object with keys ${Object.keys(fwd).join(', ') || '(none)'}`}`);
  }
  const seen = new BufferSet();
  seen.walk(fwd.saved, 'saved');
  const saves: Residuals['saves'][number][] = [];
  for (const { buffer, account: b } of seen.entries()) {
    if (buffer === x.data.buffer) saves.push('x');
    else if (buffer === fwd.y.data.buffer) saves.push('y');
    else saves.push({ what: b.what.replace(/^saved\.?/, '') || 'saved', perSample: [b.bytes / (BYTES_PER[b.dtype] ?? 1)], dtype: b.dtype in BYTES_PER ? (b.dtype as 'float64') : 'uint8' });
  }
  return { saves, outputIsView: fwd.y.data.buffer === x.data.buffer };
}

function ruleOf(l: Differentiable, training: boolean): LeafRule {
  const r = residualsOf(l, { training });
  return {
    saves: r.saves.map((s) => (typeof s === 'string' ? s : { what: s.what, perSample: s.perSample.slice(), dtype: s.dtype, bpe: BYTES_PER[s.dtype] ?? 8, shared: s.shared ?? false })),
    outputIsView: r.outputIsView ?? false,
    jvpIsView: r.jvpIsView ?? false,
    vjpIsView: r.vjpIsView ?? false,
  };
}

/** A buffer in the symbolic pass: an activation (shared by the layers that read it) or a layer's own. */
interface SymBuffer {
  key: string;
  what: string;
  shape: number[];
  dtype: string;
  bpe: number;
}

function estimateOne(model: Differentiable | readonly Differentiable[], B: number, dtype: DType, opts: MemoryEstimateOptions, what?: string): MemoryReport {
  const stages = Array.isArray(model) ? (model as readonly Differentiable[]) : [model as Differentiable];
  const ls = stages.flatMap((s) => leavesOf(s));
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
    const n = leavesOf(st).length;
    if (st.layers) {
      for (let i = base; i <= base + n; i++) if (!residuals.has(act[i].key)) residuals.set(act[i].key, { ...act[i], what: `${describeOf(st)} saved ${act[i].what}` });
    }
    base += n;
  }
  ls.forEach((l, i) => {
    for (const s of rules[i].saves) {
      const b: SymBuffer =
        s === 'x' ? act[i] : s === 'y' ? act[i + 1] : { key: `own${i}.${s.what}`, what: `${leafName(l)} ${s.what}`, shape: s.shared ? s.perSample.slice() : [B, ...s.perSample], dtype: s.dtype, bpe: s.bpe };
      if (!residuals.has(b.key)) residuals.set(b.key, { ...b, what: s === 'x' || s === 'y' ? `${leafName(l)} saved ${s} (${b.what})` : `${b.what}` });
    }
  });
  // The reverse pass: dy, then each leaf's dx (a view of its dy for Flatten, inference Dropout), and each gradient.
  const outShape = stages[stages.length - 1].outputShape.slice();
  const cot: SymBuffer[] = [{ key: 'dy', what: 'output cotangent dy', shape: [B, ...outShape], dtype, bpe }];
  for (let i = ls.length - 1; i >= 0; i--) {
    if (!rules[i].vjpIsView) cot.push({ key: `dx${i}`, what: `${leafName(ls[i])} cotangent dx`, shape: [B, ...ls[i].inputShape], dtype, bpe });
    trainableParams(ls[i]).forEach((p) => cot.push({ key: `g${i}.${p.name}`, what: `${leafName(ls[i])} gradient ${p.name}`, shape: p.value.shape.slice(), dtype, bpe }));
  }
  const vjp = vjpAccount([...residuals.values()].map(account), cot.map(account));
  // The explicit way: per stage, the Jacobian w.r.t. its input and w.r.t. each of its parameters.
  const jacobians: JacobianAccount[] = [];
  let leafBase = 0;
  for (const [s, st] of stages.entries()) {
    const sl = leavesOf(st);
    const prefix = stages.length > 1 ? `stage ${s} ` : '';
    const nIn = sizeOf(st.inputShape);
    const nOut = sizeOf(st.outputShape);
    // A block's tangents: the seed, then each layer's JVP output that is not a view.
    const outs = (from: number) => sum(sl.slice(from).map((l, k) => (rules[leafBase + from + k].jvpIsView ? 0 : sizeOf(l.outputShape))));
    // A stage that couples its samples (BatchNormalization in training) needs the full Jacobian [B, ...out, B, ...in]: B times the columns and the bytes.
    const coupled = firstCouplingLayer(st, { training }) !== null;
    const cols = coupled ? B * nIn : nIn;
    const T = tangentBlockWidth(cols, B * (nIn + nOut) * bpe, opts.tangents);
    jacobians.push({
      wrt: `${prefix}input${coupled ? ' (full, samples coupled)' : ''}`,
      shape: coupled ? [B, ...st.outputShape, B, ...st.inputShape] : [B, ...st.outputShape, ...st.inputShape],
      columns: cols,
      bytes: (coupled ? B : 1) * denseJacobianBytes(B, st.outputShape, st.inputShape, dtype),
      tangents: T,
      tangentBlockBytes: T * bpe * B * (nIn + outs(0)),
      ...streamedOf(st, cols, B * nIn, B, dtype, opts.tangents),
      gradientBytes: B * nIn * bpe,
    });
    sl.forEach((l, j) => {
      for (const p of trainableParams(l)) {
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
          ...streamedOf(st, nP, nP, B, dtype, opts.tangents),
          gradientBytes: nP * bpe,
          ...factoredOf(sl, j, l.params.indexOf(p), B, dtype, p !== trainableParams(l)[0]),
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
    explicit: { jacobians, jacobianBytes, tangentBlockBytes: Math.max(0, ...jacobians.map((j) => j.tangentBlockBytes)), streamed: streamedAccount(jacobians, vjp.residualBytes) },
    vjp,
    ratio: jacobianBytes / vjp.bytes,
    stages: [],
  };
}

/** A split model's account from its stages' and the whole model's VJP way. */
export function combine(kind: 'estimate' | 'measured', whole: MemoryReport, stages: MemoryReport[], firstStageInput: boolean): MemoryReport {
  const jacobians = stages.flatMap((r, s) =>
    r.explicit.jacobians.filter((_, k) => firstStageInput || s > 0 || k > 0).map((j) => ({ ...j, wrt: `stage ${s} ${j.wrt}` })),
  );
  const jacobianBytes = sum(jacobians.map((j) => j.bytes));
  return {
    ...whole,
    kind,
    explicit: { jacobians, jacobianBytes, tangentBlockBytes: Math.max(0, ...stages.map((r) => r.explicit.tangentBlockBytes)), streamed: streamedAccount(jacobians, whole.vjp.residualBytes) },
    ratio: jacobianBytes / whole.vjp.bytes,
    stages,
  };
}

/** The streamed way's block for one Jacobian: the same width and bytes as `lib/streamed.ts` holds. */
function streamedOf(st: Differentiable, columns: number, seedElements: number, B: number, dtype: DType, tangents?: number): { streamedTangents: number; streamedBlockBytes: number } {
  const perTangent = streamedBytesPerTangent(st, seedElements, B, dtype);
  const T = streamedBlockWidth(columns, perTangent, tangents);
  return { streamedTangents: T, streamedBlockBytes: T * perTangent };
}

function account(b: SymBuffer): BufferAccount {
  return { what: b.what, shape: b.shape, dtype: b.dtype, bytes: sizeOf(b.shape) * b.bpe };
}

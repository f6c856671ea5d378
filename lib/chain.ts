/**
 * The chain rule between stages, three ways, each one visible loop over the stages, last to first:
 * - {@link referenceGradients}: one tape over the whole model (the seed's reference);
 * - {@link jacobianChain}: a tape per stage; each stage's Jacobians (w.r.t. its input and its
 *   weights) are materialized and contracted with the upstream gradient by the seed's helpers;
 * - {@link vjpChain}: a stage per {@link StageRunner}; each stage's reverse pass is fed the next
 *   stage's input gradient as its output gradient (cotangent). Nothing larger than an activation
 *   crosses a stage boundary, and stages exchange only plain `{shape, dtype, data}` messages, so a
 *   runner may live in a worker or another process.
 *
 * All three return dLoss/dWeights for every layer and dLoss/dOut at every stage boundary.
 * @module
 */
import { recycleBuffer } from './buffer-pool.js';
import { ConfigError, ShapeError, fmtShape, fmtValue } from './errors.js';
import { type ContractibleJacobian, upstreamGradientLossOut, upstreamGradientLossWeights } from './helpers.js';
import type { Jacobian, JacobianOptions, SparseJacobianOptions } from './jacobian.js';
import { type Param, isTrainable, trainableParams } from './layers/layer.js';
import { type Loss, type LossSpec, lossFrom } from './losses.js';
import { Sequential, type SequentialForwardOptions } from './sequential.js';
import { GradientTape } from './tape.js';
import { estimateMemory, guardExplicitWay } from './memory-report.js';
import { getMemoryBudget } from './memory.js';
import { type DType, type Tensor, assertFinite, assertShape, bytesOf, contiguous, dtypeOf, sizeOf, tensor } from './tensor.js';

/** Options shared by the three ways. */
export interface ChainOptions {
  /** Training mode (Dropout draws masks). Default false. */
  training?: boolean;
  /**
   * Seed of the per-layer generators (see {@link SequentialForwardOptions}): the three ways draw
   * identical Dropout masks because a mask depends only on (seed, global layer index). Default 0.
   */
  seed?: number;
  /**
   * Options of the Jacobian builders (block width, memory budget, progress); with
   * `{ format: 'sparse', mode: 'auto' }` the explicit chain materializes structured sparse Jacobians,
   * with `{ format: 'factored' }` the weight Jacobians of Conv2D and Dense layers as factors (a CSR
   * Jacobian w.r.t. the layer's linear output times its patches ⊗ identity, `lib/sparse/factored.ts`).
   */
  jacobian?: JacobianOptions | SparseJacobianOptions;
  /**
   * Explicit way only: stream every Jacobian instead of materializing it. Each block of `T`
   * columns (`jacobian.tangents`, default sized to about 64 MiB of tangents) is built by dual
   * numbers, contracted with the upstream gradient at once and dropped (`lib/streamed.ts`), so
   * the memory is one block plus the residuals and the gradients at any image size; the time is
   * the dense forward builder's. Not with `jacobian.format`, `mode` or `engine`. Default false.
   */
  streamed?: boolean;
  /**
   * The forward pass computes rows `[start, start + B)` of a batch of
   * `total` rows (a micro-batch of a pipelined step), so Dropout draws those rows of the whole
   * batch's masks (see `ForwardOptions.batchSlice`). Absent: the pass is the whole batch.
   */
  batchSlice?: {
    /** First row of the whole batch. */
    start: number;
    /** Rows of the whole batch. */
    total: number
  };
}

/** One materialized Jacobian, for the memory table. */
export interface JacobianRecord {
  /** `dOut/dIn` or `dOut/d conv2d.kernel`. */
  label: string;
  /** `[B, ...out, ...in]` or `[B, ...out, ...param]`. */
  shape: number[];
  /** Bytes of its values (streamed: of the largest block held; factored: a factor it shares with its layer's other parameter is counted with the first). */
  bytes: number;
  /**
   * How it was stored: `dense`; `sparse` when the chain was asked for structured sparse Jacobians;
   * `factored` for a weight Jacobian stored as its factors (`{ format: 'factored' }`);
   * `streamed` when it was never stored whole (then `shape` is the whole Jacobian's and `bytes`
   * the largest block's).
   */
  format: string;
}

/** What one stage held, per way. */
export interface StageMemory {
  /** Index of the stage. */
  stage: number;
  /** Name of the stage (`model_0`). */
  name: string;
  /** Bytes of the residuals the stage's tape saved (inputs, outputs, masks...), each buffer once. */
  residualBytes: number;
  /** Explicit way: every Jacobian materialized. Empty for the other ways. */
  jacobians: JacobianRecord[];
  /** VJP way: bytes of the cotangents crossing the stage (dy in, dx out). 0 for the other ways. */
  cotangentBytes: number;
  /** Bytes of the stage's parameter gradients (the same for every way). */
  gradientBytes: number;
}

/** What each way returns. */
export interface ChainResult {
  /** Which way computed it. */
  method: 'reference' | 'jacobian' | 'vjp';
  /** The loss of the whole model on the batch. */
  loss: number;
  /**
   * `dLoss_dWeights[i][k]`: gradient w.r.t. parameter `k` of model layer `i` (layers of all stages,
   * in order; parameters in Keras order), or `null` for a non-trainable one (BatchNormalization's
   * moving statistics, a frozen layer's weights), as Keras' fixtures write it.
   */
  dLoss_dWeights: (Tensor | null)[][];
  /** `dLoss_dOut[s]`: the upstream gradient arriving at stage `s`'s output (the last is dLoss/dY). */
  dLoss_dOut: Tensor[];
  /** `stageOutputs[s]`: the output of stage `s`. */
  stageOutputs: Tensor[];
  /** Per stage: what it held. */
  memory: StageMemory[];
}

function resolveLoss(loss: LossSpec): Loss {
  return lossFrom(loss);
}

function checkStages(stages: readonly Sequential[], what: string): void {
  if (!Array.isArray(stages) || stages.length === 0) throw new ConfigError(`${what}: expected a non-empty array of stages, received ${Array.isArray(stages) ? 'an empty array' : fmtValue(stages)}`);
  stages.forEach((st, s) => {
    if (!(st instanceof Sequential)) throw new ConfigError(`${what}: expected stage ${s} to be a Sequential, received ${typeof st}`);
    if (s > 0) {
      const prev = stages[s - 1].outputShape;
      if (prev.length !== st.inputShape.length || prev.some((d: number, i: number) => d !== st.inputShape[i])) {
        throw new ConfigError(`${what}: stage ${s} (${st.name}) expects input ${fmtShape(st.inputShape)}, but stage ${s - 1} (${stages[s - 1].name}) outputs ${fmtShape(prev)}`);
      }
    }
  });
}

/** The batch and its labels, checked before any stage runs: a tensor of the first stage's input shape, and labels for as many samples. */
function checkBatch(stages: readonly Sequential[], x: Tensor, yTrue: Tensor, what: string): void {
  for (const [name, t] of [['x', x], ['yTrue', yTrue]] as const) {
    if (!t || !Array.isArray((t as Tensor).shape) || !(t as Tensor).data) throw new ShapeError(`${what} ${name}: expected a tensor, received ${t === null ? 'null' : typeof t}`);
  }
  assertShape(x, [null, ...stages[0].inputShape], `${what} x`);
  assertFinite(x, `${what} x`);
  if (yTrue.shape[0] !== x.shape[0]) throw new ShapeError(`${what} yTrue: expected ${x.shape[0]} samples (the batch of x), received shape ${fmtShape(yTrue.shape)}`);
}

/** A stage's trainable-parameter gradients regrouped per layer in Keras order, `null` where a parameter is not trainable: `[[kernel, bias], [], [gamma, beta, null, null]]`. */
function perLayer<T>(stage: Sequential, trainable: readonly T[]): (T | null)[][] {
  let k = 0;
  return stage.layers.map((l) => l.params.map((p) => (isTrainable(p) ? trainable[k++] : null)));
}

function forwardOptions(opts: ChainOptions): SequentialForwardOptions {
  return { training: opts.training ?? false, seed: opts.seed ?? 0, ...(opts.batchSlice ? { batchSlice: opts.batchSlice } : {}) };
}

/**
 * The reference: one tape over the whole model (the stages joined), asked, stage by stage, for
 * dLoss/dOut at the stage's output and dLoss/dWeights of its layers. The seed's
 * `tape.gradient(loss, layer_n.trainable_weights)` on one persistent tape.
 * @example
 * const ref = referenceGradients(model.split([1, 2]), x, y, 'mse');
 * ref.dLoss_dWeights[3][0]; // the Dense kernel's gradient, [384, 1]
 */
export function referenceGradients(stages: readonly Sequential[], x: Tensor, yTrue: Tensor, loss: LossSpec, opts: ChainOptions = {}): ChainResult {
  checkStages(stages, 'referenceGradients');
  checkBatch(stages, x, yTrue, 'referenceGradients');
  const model = Sequential.concat(stages);
  const tape = new GradientTape(model);
  tape.forward(x, forwardOptions(opts));
  const lossT = tape.loss(resolveLoss(loss), yTrue);
  const S = stages.length;
  const dLoss_dWeights: (Tensor | null)[][][] = new Array(S);
  const dLoss_dOut: Tensor[] = new Array(S);
  const stageOutputs: Tensor[] = new Array(S);
  const memory: StageMemory[] = new Array(S);
  let end = model.layers.length;
  // The chain rule is the tape's: each question is one reverse sweep from the loss.
  for (let s = S - 1; s >= 0; s--) {
    const stage = stages[s];
    const out_s = tape.activations[end];
    const [dLoss_dOut_s, ...dLoss_dW] = tape.gradient(lossT, [out_s, ...trainableParams(stage)]);
    dLoss_dOut[s] = dLoss_dOut_s;
    dLoss_dWeights[s] = perLayer(stage, dLoss_dW);
    stageOutputs[s] = out_s;
    const start = end - stage.layers.length;
    memory[s] = { stage: s, name: stage.name, residualBytes: tape.residualBytes(start, end), jacobians: [], cotangentBytes: 0, gradientBytes: sumBytes(dLoss_dW) };
    end = start;
  }
  return { method: 'reference', loss: tape.lossValue, dLoss_dWeights: dLoss_dWeights.flat(), dLoss_dOut, stageOutputs, memory };
}

/**
 * Runs the stages forward, each under its own tape (TensorFlow's nested `with GradientTape()`
 * blocks): returns the tapes, the last one holding the recorded loss.
 */
export function recordStages(stages: readonly Sequential[], x: Tensor, opts: ChainOptions = {}): GradientTape[] {
  const tapes: GradientTape[] = [];
  let h = x;
  for (const stage of stages) {
    const tape = new GradientTape(stage);
    h = tape.forward(h, forwardOptions(opts));
    tapes.push(tape);
  }
  return tapes;
}

/**
 * The explicit-Jacobian chain (the seed's method): a tape per stage; from the last stage to the
 * first, materialize the stage's Jacobian w.r.t. each weight (`[B, ...out, ...param]`) and w.r.t.
 * its input (`[B, ...out, ...in]`), and contract them with the upstream gradient:
 * `dLoss/dW = Σ_{b,out} J_W · dLoss/dOut`, `dLoss/dIn = Σ_out J_in · dLoss/dOut`, which is the
 * upstream gradient of the stage before.
 *
 * With `{ streamed: true }` no Jacobian is held: each block of `T` columns is built by dual numbers,
 * contracted at once by the same helpers and dropped (`lib/streamed.ts`), so the memory is one block,
 * the residuals and the gradients; the records then say `format: 'streamed'`, the whole Jacobian's
 * shape and the bytes of the largest block held.
 * @example
 * const res = jacobianChain(model.split([1, 2]), x, y, 'mse');
 * res.memory[0].jacobians; // [{ label: 'dOut/d conv2d.kernel', shape: [3, 9, 9, 6, 2, 2, 1, 6], bytes: 93312 }, …]
 * const str = jacobianChain(model.split([1, 2]), x, y, 'mse', { streamed: true }); // the same gradients
 * str.memory[0].jacobians[0].format; // 'streamed'
 */
export function jacobianChain(stages: readonly Sequential[], x: Tensor, yTrue: Tensor, loss: LossSpec, opts: ChainOptions = {}): ChainResult {
  checkStages(stages, 'jacobianChain');
  checkBatch(stages, x, yTrue, 'jacobianChain');
  const jopts = opts.jacobian ?? {};
  const streamed = checkStreamed(opts);
  if (streamed) {
    // One block, the residuals and the gradients against the budget: never a whole Jacobian.
    guardExplicitWay(estimateMemory([...stages], x.shape[0], { dtype: dtypeOf(x), training: opts.training, tangents: jopts.tangents }), jopts.memoryBudget ?? getMemoryBudget(), { streamed: true });
  } else if (jopts.format !== 'sparse' && jopts.format !== 'factored') {
    // All the dense Jacobians this chain will hold, against the budget, before the first forward pass.
    guardExplicitWay(estimateMemory([...stages], x.shape[0], { dtype: dtypeOf(x), training: opts.training }), jopts.memoryBudget ?? getMemoryBudget());
  }
  const tapes = recordStages(stages, x, opts);
  const S = stages.length;
  const last = tapes[S - 1];
  const lossT = last.loss(resolveLoss(loss), yTrue);
  const dLoss_dWeights: (Tensor | null)[][][] = new Array(S);
  const dLoss_dOut: Tensor[] = new Array(S);
  const memory: StageMemory[] = new Array(S);
  let dLoss_dOut_s = last.gradient(lossT, last.output); // dLoss/dY
  for (let s = S - 1; s >= 0; s--) {
    const step = explicitStageBackward(stages[s], tapes[s], dLoss_dOut_s, s, s > 0, { ...opts, streamed });
    dLoss_dOut[s] = dLoss_dOut_s;
    dLoss_dWeights[s] = step.dLoss_dWeights;
    memory[s] = step.memory;
    if (step.dLoss_dIn) dLoss_dOut_s = step.dLoss_dIn;
  }
  return { method: 'jacobian', loss: last.lossValue, dLoss_dWeights: dLoss_dWeights.flat(), dLoss_dOut, stageOutputs: tapes.map((t) => t.output), memory };
}

/** What {@link explicitStageBackward} returns for one stage. */
export interface ExplicitStageStep {
  /** Per layer of the stage, per parameter (Keras order): dLoss/dW, null for a non-trainable parameter. */
  dLoss_dWeights: (Tensor | null)[][];
  /** dLoss/dIn `[B, ...in]`, the upstream gradient of the stage before; null when not asked for. */
  dLoss_dIn: Tensor | null;
  /** What the stage held: its residuals, every Jacobian built, its gradients. */
  memory: StageMemory;
}

/**
 * One stage of the explicit chain, by the seed's method: builds the stage's Jacobians from its
 * recorded tape (w.r.t. each weight and, when `needInput`, w.r.t. its input; dense, structured
 * or streamed as `opts` says) and contracts them with `dLoss_dOut` (`[B, ...out]`, the gradient
 * arriving at the stage's output) by `upstreamGradientLossWeights` / `upstreamGradientLossOut`.
 * {@link jacobianChain} runs it for every stage; a remote chain runs it for the stages it holds.
 * @param index the stage's index, for the memory record.
 * @example
 * const [tape0] = recordStages([model_0], x, opts);
 * const { dLoss_dWeights } = explicitStageBackward(model_0, tape0, dLoss_dOut0, 0, false, opts);
 */
export function explicitStageBackward(stage: Sequential, tape: GradientTape, dLoss_dOut: Tensor, index: number, needInput: boolean, opts: ChainOptions = {}): ExplicitStageStep {
  const jopts = opts.jacobian ?? {};
  const params = trainableParams(stage);
  if (checkStreamed(opts)) {
    // Each block of columns is built, contracted with dLoss_dOut by the seed's helpers and dropped.
    const so = { tangents: jopts.tangents, onProgress: jopts.onProgress };
    const dW = tape.streamedJacobian(tape.output, params, dLoss_dOut, so);
    const jacobians = dW.map((c, k) => ({ label: `dOut/d ${ownerName(stage, params[k])}`, shape: c.shape, bytes: c.blockBytes, format: 'streamed' }));
    let dLoss_dIn: Tensor | null = null;
    if (needInput) {
      const dIn = tape.streamedBatchJacobian(tape.output, tape.input, dLoss_dOut, so);
      jacobians.unshift({ label: tape.samplesCoupled ? 'dOut/dIn (full, samples coupled)' : 'dOut/dIn', shape: dIn.shape, bytes: dIn.blockBytes, format: 'streamed' });
      dLoss_dIn = dIn.gradient;
    }
    const grads = dW.map((c) => c.gradient);
    return { dLoss_dWeights: perLayer(stage, grads), dLoss_dIn, memory: { stage: index, name: stage.name, residualBytes: tape.residualBytes(), jacobians, cotangentBytes: 0, gradientBytes: sumBytes(grads) } };
  }
  // The structured engines build per-sample Jacobians: a stage that couples its samples takes the dense builders.
  const jo = tape.samplesCoupled ? { tangents: jopts.tangents, memoryBudget: jopts.memoryBudget, onProgress: jopts.onProgress } : opts.jacobian;
  const dOut_dWeights = tape.jacobian(tape.output, params, jo);
  const dLoss_dW = dOut_dWeights.map((J) => upstreamGradientLossWeights(J, dLoss_dOut));
  const jacobians = dOut_dWeights.map((J, k) => ({ label: `dOut/d ${ownerName(stage, params[k])}`, shape: J.shape.slice(), bytes: J.bytes, format: J.format }));
  let dLoss_dIn: Tensor | null = null;
  if (needInput) {
    const { J, coupled } = inputJacobian(tape, opts);
    jacobians.unshift({ label: coupled ? 'dOut/dIn (full, samples coupled)' : 'dOut/dIn', shape: J.shape.slice(), bytes: J.bytes, format: J.format });
    dLoss_dIn = contractInputJacobian(J, coupled, dLoss_dOut);
  }
  return { dLoss_dWeights: perLayer(stage, dLoss_dW), dLoss_dIn, memory: { stage: index, name: stage.name, residualBytes: tape.residualBytes(), jacobians, cotangentBytes: 0, gradientBytes: sumBytes(dLoss_dW) } };
}

/**
 * The stage's Jacobian w.r.t. its input, materialized from its recorded tape: the batch Jacobian
 * `[B, ...out, ...in]`, or, for a stage that couples its samples (BatchNormalization in
 * training), the full one `[B, ...out, B, ...in]` (`coupled`), built by the dense builders.
 * @example
 * const { J, coupled } = inputJacobian(tape_1); // J.shape [B, 1, 3, 3, 8], coupled false
 */
export function inputJacobian(tape: GradientTape, opts: ChainOptions = {}): {
  /** The Jacobian. */
  J: Jacobian;
  /** True when it is the full `[B, ...out, B, ...in]` one. */
  coupled: boolean
} {
  const jopts = opts.jacobian ?? {};
  if (tape.samplesCoupled) return { J: tape.fullJacobian(tape.output, tape.input, { tangents: jopts.tangents, memoryBudget: jopts.memoryBudget, onProgress: jopts.onProgress }), coupled: true };
  return { J: tape.batchJacobian(tape.output, tape.input, opts.jacobian), coupled: false };
}

/**
 * dLoss/dIn `[B, ...in]` from a stage's input Jacobian and dLoss/dOut `[B, ...out]`: the seed's
 * `upstreamGradientLossOut` for a batch Jacobian; for a full one (`coupled`, `[B, ...out, B, ...in]`)
 * the weights' contraction `upstreamGradientLossWeights`, summed over the batch and output axes.
 * @example
 * const dLoss_dOut0 = contractInputJacobian(dOut1_dOut0, false, dLoss_dOut1); // [B, 3, 3, 8]
 */
export function contractInputJacobian(J: Tensor | ContractibleJacobian, coupled: boolean, dLoss_dOut: Tensor): Tensor {
  // Exact for a coupled stage, at B times the batch Jacobian's bytes.
  return coupled ? upstreamGradientLossWeights(J, dLoss_dOut) : upstreamGradientLossOut(J, dLoss_dOut);
}

/** Whether the chain streams; refuses the options a streamed chain cannot honour, before any work. */
function checkStreamed(opts: ChainOptions): boolean {
  const st = opts.streamed;
  if (st === undefined || st === false) return false;
  if (st !== true) throw new ConfigError(`jacobianChain: expected streamed to be a boolean, received ${fmtValue(st)}`);
  const j = (opts.jacobian ?? {}) as JacobianOptions & { format?: string };
  const asked = (['format', 'mode', 'engine'] as const).filter((k) => j[k] !== undefined && !(k === 'format' && j.format === 'dense') && !(k === 'mode' && j.mode === 'forward'));
  if (asked.length > 0) {
    throw new ConfigError(
      `jacobianChain: streamed builds dense blocks by forward-mode dual numbers, so it takes no ${asked.map((k) => `jacobian.${k}`).join(', ')}; expected { streamed: true } alone (with jacobian.tangents to size the blocks) or a structured chain without streamed, received ${asked.map((k) => `${k}: ${fmtValue(j[k])}`).join(', ')}`,
    );
  }
  return true;
}

/** `conv2d.kernel`: the layer and name of a parameter of a stage. */
function ownerName(stage: Sequential, p: Param): string {
  const { layer, param } = stage.paramOwners[stage.params.indexOf(p)];
  const l = stage.layers[layer];
  return `${l.name}.${l.params[param].name}`;
}

function sumBytes(ts: readonly Tensor[]): number {
  return ts.reduce((s, t) => s + bytesOf(t), 0);
}

// ---------------------------------------------------------------------------------------------
// The stage boundary of the VJP way: plain messages, and a runner per stage.

/** A tensor as it crosses a stage boundary: plain data (structured-clone and postMessage safe). */
export interface TensorMessage {
  /** The tensor's shape. */
  shape: number[];
  /** `float64` or `float32`, matching `data`. */
  dtype: DType;
  /** The values, row-major. */
  data: Float64Array | Float32Array;
}

/** A row-major copy of `t` as a message (the copy is what a real boundary would transfer). */
export function toMessage(t: Tensor): TensorMessage {
  const c = contiguous(t);
  return { shape: t.shape.slice(), dtype: dtypeOf(t), data: c.data.slice(c.offset, c.offset + c.size) };
}

/** A tensor over a message's data, checking that its shape, dtype and length agree. */
export function fromMessage(m: TensorMessage, what = 'message'): Tensor {
  if (!m || !Array.isArray(m.shape) || !(m.data instanceof Float64Array || m.data instanceof Float32Array)) {
    throw new ConfigError(`${what}: expected {shape: number[], dtype, data: Float64Array | Float32Array}, received ${m === null || typeof m !== 'object' ? String(m) : `keys ${Object.keys(m).join(', ')}`}`);
  }
  const dtype: DType = m.data instanceof Float32Array ? 'float32' : 'float64';
  if (m.dtype !== dtype) throw new ConfigError(`${what}: dtype says ${m.dtype} but data is ${dtype}`);
  if (sizeOf(m.shape) !== m.data.length) throw new ConfigError(`${what}: shape ${fmtShape(m.shape)} needs ${sizeOf(m.shape)} values, received ${m.data.length}`);
  return tensor(m.data, m.shape, dtype);
}

/**
 * One stage behind a boundary that only activations and cotangents cross. `forward` records a
 * pass and returns the activation; `backward` takes the output's cotangent and returns the input's,
 * keeping the weight gradients where the weights live. Async, so that a runner may be a worker.
 */
export interface StageRunner {
  /** Name of the stage, for errors and reports. */
  readonly name: string;
  /** Records a forward pass on the activation `x` (`[B, ...in]`); returns the output `[B, ...out]`. */
  forward(x: TensorMessage): Promise<TensorMessage>;
  /** The VJP of the recorded pass: `dy` (`[B, ...out]`) in, `dx` (`[B, ...in]`) out; weight gradients kept locally. */
  backward(dy: TensorMessage): Promise<TensorMessage>;
  /**
   * Optional: `backward` for a caller that discards `dx` (the first stage of a chain), keeping the
   * weight gradients only and skipping the first layer's input cotangent. Fallback: `backward`.
   */
  backwardParams?(dy: TensorMessage): Promise<void>;
  /** The weight gradients of the last backward, per layer per parameter (Keras order), null for a non-trainable parameter. */
  gradients(): Promise<(TensorMessage | null)[][]>;
  /** Bytes the stage held: the tape's residuals, the cotangents in and out, the weight gradients. */
  memory(): Promise<{
    /** Bytes of the residuals its tape saved. */
    residualBytes: number;
    /** Bytes of the cotangents `dy` in and `dx` out. */
    cotangentBytes: number;
    /** Bytes of its weight gradients. */
    gradientBytes: number
  }>;
}

/**
 * A {@link StageRunner} in this process: a stage and its own {@link GradientTape}; `backward` is
 * `tape.gradient(output, [input, ...params], { outputGradients: dy })`.
 * @example
 * const runner = new LocalStageRunner(model_1, { training: true, seed: 7 });
 * const y = await runner.forward(toMessage(h));
 * const dh = await runner.backward(toMessage(dLoss_dY)); // dLoss/dh, fed to model_0's runner
 */
export class LocalStageRunner implements StageRunner {
  private tape: GradientTape | null = null;
  private grads: (Tensor | null)[][] | null = null;
  private cotangentBytes = 0;

  constructor(
    /** The stage this runner runs. */
    readonly stage: Sequential,
    private readonly opts: ChainOptions = {},
  ) {}

  /** The stage's name. */
  get name(): string {
    return this.stage.name;
  }

  /** The tape of the last forward pass (null before the first): what the explicit way builds its Jacobians from. */
  get recordedTape(): GradientTape | null {
    return this.tape;
  }

  async forward(x: TensorMessage): Promise<TensorMessage> {
    this.tape = new GradientTape(this.stage);
    this.grads = null;
    // Fused: this tape is asked for the stage's input and weights only, never for an activation inside.
    return toMessage(this.tape.forward(fromMessage(x, `${this.name} forward x`), { ...forwardOptions(this.opts), fuse: true }));
  }

  async backward(dy: TensorMessage): Promise<TensorMessage> {
    if (!this.tape) throw new ConfigError(`stage runner "${this.name}": backward before forward; run forward(x) first`);
    const t = this.tape;
    const dyT = fromMessage(dy, `${this.name} backward dy`);
    assertFinite(dyT, `stage runner "${this.name}" backward dy`);
    const [dx, ...dW] = t.gradient(t.output, [t.input, ...trainableParams(this.stage)], { outputGradients: dyT });
    this.grads = perLayer(this.stage, dW);
    this.cotangentBytes = bytesOf(dyT) + bytesOf(dx);
    return toMessage(dx);
  }

  /** {@link LocalStageRunner.backward} without `dx`: `tape.gradient(output, params, { outputGradients: dy })`. */
  async backwardParams(dy: TensorMessage): Promise<void> {
    if (!this.tape) throw new ConfigError(`stage runner "${this.name}": backward before forward; run forward(x) first`);
    const t = this.tape;
    const dyT = fromMessage(dy, `${this.name} backward dy`);
    assertFinite(dyT, `stage runner "${this.name}" backward dy`);
    this.grads = perLayer(this.stage, t.gradient(t.output, trainableParams(this.stage), { outputGradients: dyT }));
    this.cotangentBytes = bytesOf(dyT);
  }

  /**
   * Gives the buffers of the recorded pass (every layer's output, this runner's own: what it sends
   * on is a copy) back to the buffer pool, for the next step's passes to reuse (a fresh buffer
   * costs a page fault per 4 KiB on first touch), and drops the tape: a backward after it refuses
   * until the next forward. Not the input, which is the caller's message (vjpChain hands a stage's
   * output to the next stage and to its result). For a caller that created this runner and has
   * read everything it wants of it (gradients, memory).
   */
  release(): void {
    const t = this.tape;
    this.tape = null;
    if (!t) return;
    const input = t.input.data;
    for (const a of t.activations.slice(1)) if (a.data !== input) recycleBuffer(a.data);
  }

  async gradients(): Promise<(TensorMessage | null)[][]> {
    if (!this.grads) throw new ConfigError(`stage runner "${this.name}": no gradients yet; run forward(x) then backward(dy)`);
    return this.grads.map((l) => l.map((g) => (g === null ? null : toMessage(g))));
  }

  async memory(): Promise<{
    /** Bytes of the residuals its tape saved. */
    residualBytes: number;
    /** Bytes of the cotangents `dy` in and `dx` out. */
    cotangentBytes: number;
    /** Bytes of its weight gradients. */
    gradientBytes: number
  }> {
    return { residualBytes: this.tape?.residualBytes() ?? 0, cotangentBytes: this.cotangentBytes, gradientBytes: sumBytes((this.grads?.flat() ?? []).filter((g) => g !== null)) };
  }
}

/**
 * The VJP chain: from the last stage to the first, each stage's reverse pass gets the next
 * stage's input gradient as its output gradient. Only activations (forward) and cotangents
 * (backward) cross the boundaries, as messages; the loss is computed where the labels are.
 * Async because a runner may live in a worker.
 * @param stages the stages, or runners already wrapping them (for remote stages).
 * @example
 * const res = await vjpChain(model.split([1, 2]), x, y, 'mse');
 * res.dLoss_dOut[1]; // dLoss/dOut1, [3, 8, 8, 6]: what stage 2 sent back to stage 1
 */
export async function vjpChain(stages: readonly (Sequential | StageRunner)[], x: Tensor, yTrue: Tensor, loss: LossSpec, opts: ChainOptions = {}): Promise<ChainResult> {
  if (!Array.isArray(stages) || stages.length === 0) throw new ConfigError(`vjpChain: expected a non-empty array of stages (Sequential or StageRunner), received ${Array.isArray(stages) ? 'an empty array' : fmtValue(stages)}`);
  const runners: StageRunner[] = stages.map((st) => (st instanceof Sequential ? new LocalStageRunner(st, opts) : st));
  if (stages.every((st) => st instanceof Sequential)) {
    checkStages(stages as Sequential[], 'vjpChain');
    checkBatch(stages as Sequential[], x, yTrue, 'vjpChain');
  }
  const lossFn = resolveLoss(loss);
  const S = runners.length;
  const stageOutputs: Tensor[] = [];
  let h = toMessage(x);
  for (const runner of runners) {
    h = await runner.forward(h);
    stageOutputs.push(fromMessage(h, `${runner.name} output`));
  }
  const yPred = stageOutputs[S - 1];
  const lossValue = lossFn.value(yTrue, yPred);
  const dLoss_dOut: Tensor[] = new Array(S);
  let dLoss_dOut_s = toMessage(lossFn.gradient(yTrue, yPred)); // dLoss/dY
  for (let s = S - 1; s >= 0; s--) {
    dLoss_dOut[s] = fromMessage(dLoss_dOut_s, `dLoss/dOut${s}`);
    const runner = runners[s];
    // Stage 0's dLoss/dIn is nobody's dLoss/dOut: a runner that can skip it does.
    if (s === 0 && runner.backwardParams) await runner.backwardParams(dLoss_dOut_s);
    else dLoss_dOut_s = await runner.backward(dLoss_dOut_s); // dLoss/dIn of stage s = dLoss/dOut of stage s-1
  }
  const grads = await Promise.all(runners.map((r) => r.gradients()));
  const mem = await Promise.all(runners.map((r) => r.memory()));
  // The runners made here are read out: their passes' buffers go to the next step.
  runners.forEach((r, s) => {
    if (stages[s] instanceof Sequential) (r as LocalStageRunner).release();
  });
  return {
    method: 'vjp',
    loss: lossValue,
    dLoss_dWeights: grads.flatMap((layers) => layers.map((ps) => ps.map((m) => (m === null ? null : fromMessage(m, 'gradient'))))),
    dLoss_dOut,
    stageOutputs,
    memory: mem.map((m, s) => ({ stage: s, name: runners[s].name, jacobians: [], ...m })),
  };
}

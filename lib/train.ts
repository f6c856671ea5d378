/**
 * Training a model split into stages as if it were one: for each batch, every stage runs forward
 * on its own tape, the backward pass crosses the stage boundaries by the chosen method (`vjp`:
 * cotangents passed upstream; `jacobian`: the seed's explicit-Jacobian chain; `reference`: the
 * whole model on one tape), then each stage's optimizer steps its own weights. Where a NaN was
 * born, when one stops training, is `lib/forensics.ts`'s to find.
 * @module
 */
import { type ChainOptions, type ChainResult, jacobianChain, referenceGradients, vjpChain } from './chain.js';
import { ConfigError, ShapeError, fmtShape, fmtValue } from './errors.js';
import { type NonFiniteOrigin, type NonFiniteReport, findNonFinite, nonFiniteGradient, origin, where } from './forensics.js';
import { type Loss, type LossSpec, lossFrom } from './losses.js';
import { estimateMemory, guardExplicitWay } from './memory-report.js';
import { getMemoryBudget } from './memory.js';
import { type Optimizer, type OptimizerConfig, optimizerFromConfig } from './optimizers.js';
import { Rng } from './rng.js';
import { Sequential, type SequentialForwardOptions } from './sequential.js';
import { type DType, type Tensor, assertFinite, contiguous, dtypeOf, sizeOf, tensor } from './tensor.js';

/** Examples and their labels: `x` `[N, ...in]`, `y` `[N, ...out]`. */
export interface Dataset {
  /** Examples `[N, ...in]`. */
  x: Tensor;
  /** Labels `[N, ...out]`, one row per example. */
  y: Tensor;
}

/**
 * How the backward pass crosses the stages: `vjp` (each stage's reverse pass seeded with the
 * cotangent from downstream, the default), `jacobian` (each stage's Jacobians materialized by
 * dual numbers and contracted with the upstream gradient, the seed's method), `reference` (the
 * whole model on one tape, ignoring the split: the oracle the two are checked against).
 */
export type BackwardMethod = 'vjp' | 'jacobian' | 'reference';
/** The methods {@link fit} accepts. */
export const BACKWARD_METHODS: readonly BackwardMethod[] = ['vjp', 'jacobian', 'reference'];

/** Options of {@link fit}. */
export interface FitOptions {
  /** Layer indices where a new stage starts (`[9]`: model_0 = layers 0..8, model_1 = the rest); `[]` for one stage. */
  split: readonly number[];
  /** A loss or its Keras name. */
  loss: LossSpec;
  /** One optimizer shared by every stage, or a config from which each stage gets its own (see `optimizerPerStage`). */
  optimizer: Optimizer | OptimizerConfig;
  /** With a config: one optimizer per stage (true) or one shared (false, the default). Both step alike. */
  optimizerPerStage?: boolean;
  /** Backward method; default `vjp`. */
  method?: BackwardMethod;
  /** Passes over the training data; default 1. */
  epochs?: number;
  /** Examples per step; default 32 (the last batch of an epoch may be smaller). */
  batchSize?: number;
  /** Fraction of the data, taken from its end before any shuffling (as Keras), kept for validation; default 0. */
  validationSplit?: number;
  /** Explicit validation data (instead of `validationSplit`). */
  validationData?: Dataset;
  /** Reshuffle the training examples every epoch; default true. */
  shuffle?: boolean;
  /** Seeds the shuffles and the Dropout masks; default 0. */
  seed?: number;
  /** Forward in training mode (Dropout active); default true. */
  training?: boolean;
  /** Forwarded to the Jacobian builders of the `jacobian` method. */
  tangents?: number;
  /** Forwarded to the Jacobian builders of the `jacobian` method: refuse a Jacobian over this many bytes. */
  memoryBudget?: number;
  /**
   * A data-parallel gradient pool for the `vjp` step (`createPool` of `jacobian-chain/node`, built
   * for this very model): each step's batch is cut into the pool's fixed shards, whose gradients
   * are summed in shard order, so the weights are bit-identical for 1, 2 or N threads. Absent:
   * the step runs here, on the whole batch (today's behaviour).
   */
  pool?: GradientPool;
  /** The `jacobian` method streamed (`ChainOptions.streamed`): one block of columns held at a time. Default false. */
  streamed?: boolean;
  /** Called before each epoch with its number (1-based) and its batch count. */
  onEpochBegin?: (epoch: number, batches: number) => void;
  /** Called after each step with running means over the epoch so far. */
  onBatchEnd?: (info: BatchInfo) => void;
  /** Called after each epoch with its log. */
  onEpochEnd?: (log: EpochLog) => void;
}

/** What {@link FitOptions.onBatchEnd} receives. */
export interface BatchInfo {
  /** Epoch number, 1-based. */
  epoch: number;
  /** 1-based batch number within the epoch. */
  batch: number;
  /** Batches in the epoch. */
  batches: number;
  /** This step's loss. */
  loss: number;
  /** Running example-weighted means over the epoch so far. */
  meanLoss: number;
  /** Running example-weighted mean accuracy over the epoch so far. */
  meanAccuracy: number;
}

/** One epoch's metrics: means over the epoch's steps (training mode), then validation (inference). */
export interface EpochLog {
  /** Epoch number, 1-based. */
  epoch: number;
  /** Mean training loss over the epoch (example-weighted). */
  loss: number;
  /** Mean training accuracy over the epoch. */
  accuracy: number;
  /** Validation loss after the epoch, or null without validation data. */
  valLoss: number | null;
  /** Validation accuracy after the epoch, or null without validation data. */
  valAccuracy: number | null;
  /** Wall time of the epoch, validation included. */
  seconds: number;
}

/** What {@link fit} returns. */
export interface FitResult {
  /** One log per completed epoch. */
  history: EpochLog[];
  /** The stages trained (sharing the model's layers). */
  stages: Sequential[];
  /** Optimizer steps taken. */
  steps: number;
  /** Set when training stopped early on a non-finite loss or gradient; the weights are those before the bad step. */
  stopped: NonFiniteReport | null;
}

/** Loss and metric of a forward pass on one batch. */
export interface Evaluation {
  /** Mean loss over the examples. */
  loss: number;
  /** Fraction of examples classified correctly. */
  accuracy: number;
}

/**
 * Accuracy as Keras picks it: with one output per example, binary accuracy (`p > 0.5` against
 * `y > 0.5`); with several, categorical accuracy (arg-max of `p` against arg-max of `y`).
 * Returns the number of correct examples.
 * @example
 * correctCount(tensor([1, 0], [2, 1]), tensor([0.9, 0.7], [2, 1])); // 1
 */
export function correctCount(yTrue: Tensor, yPred: Tensor): number {
  const t = contiguous(yTrue);
  const p = contiguous(yPred);
  const rows = p.shape[0];
  const cols = rows === 0 ? 0 : p.size / rows;
  let correct = 0;
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    if (cols === 1) {
      if (p.data[p.offset + o] > 0.5 === t.data[t.offset + o] > 0.5) correct++;
      continue;
    }
    let bp = 0;
    let bt = 0;
    for (let k = 1; k < cols; k++) {
      if (p.data[p.offset + o + k] > p.data[p.offset + o + bp]) bp = k;
      if (t.data[t.offset + o + k] > t.data[t.offset + o + bt]) bt = k;
    }
    if (bp === bt) correct++;
  }
  return correct;
}

/**
 * Rows `idx` of `t` gathered (copied) into a new contiguous tensor `[idx.length, ...rest]`: a batch.
 * @example
 * const xb = takeRows(train.x, [4, 0, 7]); // [3, 28, 28, 1]
 */
export function takeRows(t: Tensor, idx: ArrayLike<number>): Tensor {
  const c = contiguous(t);
  const row = sizeOf(c.shape.slice(1));
  const out = tensor(new (c.data.constructor as Float64ArrayConstructor)(idx.length * row), [idx.length, ...c.shape.slice(1)], dtypeOf(t));
  for (let i = 0; i < idx.length; i++) out.data.set(c.data.subarray(c.offset + idx[i] * row, c.offset + (idx[i] + 1) * row), i * row);
  return out;
}

/**
 * Checks a dataset against a model before any work, by shapes and a scan of the values: ranks,
 * per-example shapes, matching counts, at least one example, finite values.
 * @throws ShapeError quoting expected and received shapes.
 * @example
 * checkDataset(model, { x, y: zeros([6]) }); // ShapeError: training data y (labels): expected shape [6, 1] (...), received [6]
 */
export function checkDataset(model: { inputShape: readonly number[]; outputShape: readonly number[] }, data: Dataset, what = 'training data'): void {
  if (!data || !data.x || !data.y) throw new ShapeError(`${what}: expected {x, y} tensors, received ${fmtValue(data)}`);
  const { x, y } = data;
  const expX = [x.shape[0] ?? 0, ...model.inputShape];
  if (x.shape.length !== expX.length || x.shape.some((d, i) => i > 0 && d !== expX[i])) {
    throw new ShapeError(`${what} x: expected shape [N, ${model.inputShape.join(', ')}], received ${fmtShape(x.shape)}`);
  }
  const expY = [x.shape[0], ...model.outputShape];
  if (y.shape.length !== expY.length || y.shape.some((d, i) => d !== expY[i])) {
    throw new ShapeError(`${what} y (labels): expected shape ${fmtShape(expY)} (one label row per example, like the model's output ${fmtShape(['N' as unknown as number, ...model.outputShape])}), received ${fmtShape(y.shape)}`);
  }
  if (x.shape[0] === 0) throw new ShapeError(`${what}: expected at least one example, received an empty dataset (x ${fmtShape(x.shape)})`);
  assertFinite(x, `${what} x`);
  assertFinite(y, `${what} y`);
}

function positiveInt(v: unknown, key: string): number {
  if (!Number.isInteger(v) || (v as number) <= 0) throw new ConfigError(`fit: expected ${key} to be a positive integer, received ${fmtValue(v)}`);
  return v as number;
}

/**
 * Loss and accuracy of `model` on `data` in inference mode, in batches (example-weighted means).
 * @example
 * const { loss, accuracy } = evaluate(model, test, 'binary_crossentropy');
 */
export function evaluate(model: Sequential, data: Dataset, loss: LossSpec, batchSize = 256): Evaluation {
  checkDataset(model, data, 'evaluation data');
  const lossFn = lossFrom(loss);
  const N = data.x.shape[0];
  let total = 0;
  let correct = 0;
  for (let b0 = 0; b0 < N; b0 += batchSize) {
    const idx = Array.from({ length: Math.min(batchSize, N - b0) }, (_, i) => b0 + i);
    const x = takeRows(data.x, idx);
    const y = takeRows(data.y, idx);
    const { y: p } = model.forward(x);
    total += lossFn.value(y, p) * idx.length;
    correct += correctCount(y, p);
  }
  return { loss: total / N, accuracy: correct / N };
}

/**
 * The seed of step `step`'s Dropout masks, by mixing the run's seed with the step number: the same
 * in every method, so all three see the same masks.
 * @example
 * vjpChain(stages, x, y, 'binary_crossentropy', { training: true, seed: stepSeed(0, 41) });
 */
export function stepSeed(seed: number, step: number): number {
  return (Math.imul((seed >>> 0) ^ 0x2545f491, 0x9e3779b1) + Math.imul(step + 1, 0x85ebca77)) >>> 0;
}

/** What a {@link GradientPool} returns for one step: as {@link StepResult}, without the chain's report. */
export interface PoolGradients {
  /** The loss of the whole batch before the update (computed on the whole batch's prediction). */
  loss: number;
  /** The model's output on the batch (`[B, ...out]`). */
  yPred: Tensor;
  /** `dLoss_dWeights[i][k]`: dLoss/d(parameter k of model layer i), null for a non-trainable parameter. */
  dLoss_dWeights: (Tensor | null)[][];
}

/**
 * Something that computes one step's loss and weight gradients for {@link fit} elsewhere (worker
 * threads: `createPool` of `jacobian-chain/node`). The core only knows this contract, so that the
 * main entry never reaches `worker_threads`.
 */
export interface GradientPool {
  /** The model whose layers the pool mirrors; {@link fit} refuses a pool built for another. */
  readonly model: Sequential;
  /** Threads the pool runs on. */
  readonly threads: number;
  /** dLoss/dWeights of the batch `x` `[B, ...in]`, `yTrue` `[B, ...out]` at the model's current weights. */
  gradients(x: Tensor, yTrue: Tensor, loss: Loss, opts: {
    /** Forward in training mode (Dropout active). */
    training: boolean;
    /** The step's seed of the per-layer generators (see {@link stepSeed}). */
    seed: number
  }): Promise<PoolGradients>;
}

/** One training step's outcome: the loss, the prediction, and the gradients of each stage. */
export interface StepResult {
  /** The loss of the batch before the update. */
  loss: number;
  /** The model's output on the batch (`[B, ...out]`). */
  yPred: Tensor;
  /** `dLoss_dWeights[i][k]`: dLoss/d(parameter k of model layer i), indexed as the chains' {@link ChainResult}; null for a non-trainable parameter (no update). */
  dLoss_dWeights: (Tensor | null)[][];
  /** What the chain returned (boundary gradients, memory), for reports. */
  chain: ChainResult;
}

/**
 * One step's gradients by `method`, every stage's forward on its own tape: the loss, the
 * prediction and dLoss/dWeights per stage, or where a non-finite value came from.
 * @example
 * const out = await stepGradients('jacobian', model.split([9]), x, y, 'binary_crossentropy', { training: true, seed: 1 });
 * if ('dLoss_dWeights' in out) model.layers.forEach((l, i) => optimizer.step(l.params, out.dLoss_dWeights[i]));
 */
export async function stepGradients(
  method: BackwardMethod,
  stages: readonly Sequential[],
  x: Tensor,
  yTrue: Tensor,
  loss: LossSpec,
  opts: ChainOptions = {},
): Promise<StepResult | {
  /** Where a non-finite value first appeared; no gradients are returned then. */
  nonFinite: NonFiniteOrigin
}> {
  const fwd: SequentialForwardOptions = { training: opts.training ?? false, seed: opts.seed ?? 0 };
  let res: ChainResult;
  try {
    res =
      method === 'vjp'
        ? await vjpChain(stages, x, yTrue, loss, opts)
        : method === 'jacobian'
          ? jacobianChain(stages, x, yTrue, loss, opts)
          : referenceGradients(stages, x, yTrue, loss, opts);
  } catch (err) {
    // A NaN stops the chain wherever it is first checked (the loss, a Jacobian builder): say where it was born.
    const bad = findNonFinite(stages, x, fwd);
    if (bad) return { nonFinite: bad };
    throw err;
  }
  const S = stages.length;
  const yPred = res.stageOutputs[S - 1];
  if (!Number.isFinite(res.loss)) {
    const bad = findNonFinite(stages, x, fwd);
    const last = stages[S - 1];
    return { nonFinite: bad ?? origin(stages, S - 1, last.layers.length - 1, `the loss is ${res.loss} on finite predictions of ${where(stages, S - 1, last.layers.length - 1)}`) };
  }
  const bad = nonFiniteGradient(stages, res.dLoss_dWeights, res.loss);
  if (bad) return { nonFinite: bad };
  return { loss: res.loss, yPred, dLoss_dWeights: res.dLoss_dWeights, chain: res };
}

/**
 * Trains `model` split at `opts.split`, as one model, batch by batch: stage-by-stage forward on
 * each stage's own tape, backward by `opts.method`, then each stage's optimizer step.
 * Everything is validated before the first step; a non-finite loss or gradient stops training
 * before the bad update, with a report naming the stage and layer that produced it.
 * @example
 * const model = catsVsDogsCnn({ side: 28, channels: 1 });
 * const { history } = await fit(model, train, {
 *   split: splitAfterLastPooling(model), loss: 'binary_crossentropy',
 *   optimizer: { name: 'adam', learning_rate: 1e-3 }, epochs: 3, batchSize: 32, validationSplit: 0.1,
 * });
 */
export async function fit(model: Sequential, data: Dataset, opts: FitOptions): Promise<FitResult> {
  // Everything that can be wrong is found here, before the first step changes a weight.
  if (!(model instanceof Sequential)) throw new ConfigError(`fit: expected a Sequential model, received ${fmtValue(model)}`);
  if (!opts || typeof opts !== 'object') throw new ConfigError(`fit: expected options {split, loss, optimizer, ...}, received ${fmtValue(opts)}`);
  const method = opts.method ?? 'vjp';
  if (!BACKWARD_METHODS.includes(method)) throw new ConfigError(`fit: expected method to be one of ${BACKWARD_METHODS.join(', ')}, received ${fmtValue(method)}`);
  if (!Array.isArray(opts.split)) throw new ConfigError(`fit: expected split to be an array of layer indices ([] for one stage), received ${fmtValue(opts.split)}`);
  const stages = model.split(opts.split);
  const lossFn = lossFrom(opts.loss);
  if (!lossFn || typeof lossFn.value !== 'function' || typeof lossFn.gradient !== 'function') throw new ConfigError(`fit: expected a loss or its name, received ${fmtValue(opts.loss)}`);
  const epochs = positiveInt(opts.epochs ?? 1, 'epochs');
  const batchSize = positiveInt(opts.batchSize ?? 32, 'batchSize');
  const seed = opts.seed ?? 0;
  if (!Number.isInteger(seed)) throw new ConfigError(`fit: expected seed to be an integer, received ${fmtValue(seed)}`);
  const optimizers = makeOptimizers(opts, stages.length);
  const pool = opts.pool;
  if (pool !== undefined) {
    if (!pool || typeof pool.gradients !== 'function') throw new ConfigError(`fit: expected pool to be a GradientPool (createPool of jacobian-chain/node), received ${fmtValue(pool)}`);
    if (pool.model !== model) throw new ConfigError(`fit: expected a pool built for this model (createPool(model, ...)), received one built for "${pool.model?.name}"`);
    if (method !== 'vjp') throw new ConfigError(`fit: a pool runs the vjp step only; expected method "vjp" with pool, received ${fmtValue(method)}`);
  }
  checkDataset(model, data);
  let train = data;
  let val: Dataset | null = opts.validationData ?? null;
  const vs = opts.validationSplit ?? 0;
  if (typeof vs !== 'number' || !(vs >= 0 && vs < 1)) throw new ConfigError(`fit: expected validationSplit in [0, 1), received ${fmtValue(opts.validationSplit)}`);
  if (vs > 0) {
    if (val) throw new ConfigError('fit: expected validationSplit or validationData, received both');
    const N = data.x.shape[0];
    const nVal = Math.floor(N * vs);
    if (nVal === 0 || nVal === N) throw new ShapeError(`fit: validationSplit ${vs} of ${N} examples leaves ${nVal === 0 ? 'no validation' : 'no training'} examples`);
    // As Keras: the last fraction, before any shuffling.
    const cut = N - nVal;
    train = { x: takeRows(data.x, range(0, cut)), y: takeRows(data.y, range(0, cut)) };
    val = { x: takeRows(data.x, range(cut, N)), y: takeRows(data.y, range(cut, N)) };
  }
  if (val) checkDataset(model, val, 'validation data');
  const N = train.x.shape[0];
  // The explicit way's whole peak (its Jacobians, a tangent block, the tapes' residuals), from shapes, before the first step.
  if (opts.streamed !== undefined && typeof opts.streamed !== 'boolean') throw new ConfigError(`fit: expected streamed to be a boolean, received ${fmtValue(opts.streamed)}`);
  if (opts.streamed && method !== 'jacobian') throw new ConfigError(`fit: streamed is a way of the jacobian method; expected method 'jacobian' with streamed, received method ${fmtValue(method)}`);
  if (method === 'jacobian') guardExplicitWay(estimateMemory(stages, Math.min(batchSize, N), { training: opts.training ?? true, tangents: opts.tangents }), opts.memoryBudget ?? getMemoryBudget(), { streamed: opts.streamed });

  const batches = Math.ceil(N / batchSize);
  const shuffleRng = new Rng(seed);
  const history: EpochLog[] = [];
  let step = 0;
  for (let epoch = 1; epoch <= epochs; epoch++) {
    const t0 = performance.now();
    opts.onEpochBegin?.(epoch, batches);
    const order = opts.shuffle === false ? range(0, N) : Array.from(shuffleRng.permutation(N));
    let lossSum = 0;
    let correct = 0;
    let seen = 0;
    for (let b = 0; b < batches; b++) {
      const idx = order.slice(b * batchSize, Math.min(N, (b + 1) * batchSize));
      const x = takeRows(train.x, idx);
      const y = takeRows(train.y, idx);
      const chainOpts: ChainOptions = {
        training: opts.training ?? true,
        seed: stepSeed(seed, step),
        jacobian: { tangents: opts.tangents, memoryBudget: opts.memoryBudget },
        streamed: opts.streamed,
      };
      const out = pool ? await poolStep(pool, stages, x, y, lossFn, chainOpts) : await stepGradients(method, stages, x, y, lossFn, chainOpts);
      if ('nonFinite' in out) {
        const bad = out.nonFinite;
        return { history, stages, steps: step, stopped: { epoch, batch: b + 1, ...bad, message: `non-finite ${bad.kind} at epoch ${epoch}, batch ${b + 1}: ${bad.message}; training stopped before the update` } };
      }
      // The chain rule is done for every stage before any stage's weights move; each layer's gradients go to its stage's optimizer.
      stages.forEach((stage, s) => stage.layers.forEach((l, i) => optimizers[s].step(l.params, out.dLoss_dWeights[stage.layerOffset + i])));
      step++;
      lossSum += out.loss * idx.length;
      correct += correctCount(y, out.yPred);
      seen += idx.length;
      opts.onBatchEnd?.({ epoch, batch: b + 1, batches, loss: out.loss, meanLoss: lossSum / seen, meanAccuracy: correct / seen });
    }
    const v = val ? evaluate(model, val, lossFn, Math.max(batchSize, 256)) : null;
    const log: EpochLog = { epoch, loss: lossSum / seen, accuracy: correct / seen, valLoss: v?.loss ?? null, valAccuracy: v?.accuracy ?? null, seconds: (performance.now() - t0) / 1000 };
    history.push(log);
    opts.onEpochEnd?.(log);
  }
  return { history, stages, steps: step, stopped: null };
}

/** One step through a pool; a non-finite loss or gradient is traced here, as {@link stepGradients} does. */
async function poolStep(pool: GradientPool, stages: readonly Sequential[], x: Tensor, yTrue: Tensor, loss: Loss, opts: ChainOptions): Promise<PoolGradients | {
  /** Where a non-finite value first appeared. */
  nonFinite: NonFiniteOrigin
}> {
  const fwd: SequentialForwardOptions = { training: opts.training ?? false, seed: opts.seed ?? 0 };
  let res: PoolGradients;
  try {
    res = await pool.gradients(x, yTrue, loss, { training: fwd.training ?? false, seed: fwd.seed ?? 0 });
  } catch (err) {
    const bad = findNonFinite(stages, x, fwd);
    if (bad) return { nonFinite: bad };
    throw err;
  }
  if (!Number.isFinite(res.loss)) {
    const bad = findNonFinite(stages, x, fwd);
    const S = stages.length;
    const last = stages[S - 1];
    return { nonFinite: bad ?? origin(stages, S - 1, last.layers.length - 1, `the loss is ${res.loss} on finite predictions of ${where(stages, S - 1, last.layers.length - 1)}`) };
  }
  const bad = nonFiniteGradient(stages, res.dLoss_dWeights, res.loss);
  if (bad) return { nonFinite: bad };
  return res;
}

function makeOptimizers(opts: FitOptions, n: number): Optimizer[] {
  const o = opts.optimizer;
  if (!o || typeof o !== 'object') throw new ConfigError(`fit: expected an optimizer or {"name": "sgd"|"adam", ...}, received ${fmtValue(o)}`);
  if (typeof (o as Optimizer).step === 'function') {
    if (opts.optimizerPerStage) throw new ConfigError('fit: optimizerPerStage needs an optimizer config (each stage gets its own optimizer built from it), received an optimizer instance');
    return new Array<Optimizer>(n).fill(o as Optimizer);
  }
  const config = o as OptimizerConfig;
  if (opts.optimizerPerStage) return Array.from({ length: n }, () => optimizerFromConfig(config));
  return new Array<Optimizer>(n).fill(optimizerFromConfig(config));
}

function range(a: number, b: number): number[] {
  return Array.from({ length: b - a }, (_, i) => a + i);
}

/**
 * The bench's cases: what is run (a layer, a stage, a split model), at which batch, which
 * operations; and how a case is built, the same way in the parent (for the analytic bytes) and in
 * the child process that measures it.
 * @module
 */
import { ConfigError } from '../lib/errors.js';
import type { Layer } from '../lib/layers/layer.js';
import { layerFromConfig } from '../lib/model-io.js';
import { SEED_REFERENCE_SPLIT, catsVsDogsCnn, seedReferenceModel, seededBatch, splitAfterLastPooling } from '../lib/models.js';
import { Rng } from '../lib/rng.js';
import { Sequential } from '../lib/sequential.js';
import { type DType, type Tensor, randomNormal } from '../lib/tensor.js';

/** Operations a case may time and measure. */
export const OPS = [
  'forward',
  'jvpBlock',
  'writeJ',
  'jacobianWrtInput',
  'jacobianInto',
  'jacobianWrtWeights',
  'explicitChain',
  'vjpChain',
  'tfForward',
  'tfVjp',
  'tfJacobianWrtInput',
  'tfJacobianWrtWeights',
] as const;
export type OpName = (typeof OPS)[number];

/** What one op is, for the tables. */
export const OP_LABELS: Record<OpName, string> = {
  forward: 'forward pass',
  jvpBlock: 'one JVP pass, T dense tangents, into an output block',
  writeJ: 'write a J-sized buffer once (allocate + fill)',
  jacobianWrtInput: 'jacobianWrtInput (dual numbers)',
  jacobianInto: 'jacobianWrtInput into a reused J (dual numbers, { into })',
  jacobianWrtWeights: 'jacobianWrtWeights (dual numbers)',
  explicitChain: 'explicit-Jacobian chain',
  vjpChain: 'VJP chain',
  tfForward: 'tfjs forward',
  tfVjp: 'tfjs tf.grads with dy',
  tfJacobianWrtInput: 'tfjs Jacobian w.r.t. input (row VJPs)',
  tfJacobianWrtWeights: 'tfjs Jacobians w.r.t. weights (row VJPs)',
};

/** What a case runs. */
export type TargetSpec =
  | { kind: 'layer'; className: 'Dense' | 'Conv2D' | 'MaxPooling2D' | 'Activation' | 'Flatten' | 'Dropout'; config: Record<string, unknown>; inputShape: number[] }
  | { kind: 'seed'; stage?: number }
  | { kind: 'cnn'; side: number; channels: number; stage?: number };

/** One case of the bench. */
export interface BenchCase {
  /** Unique, file-name safe. */
  id: string;
  group: 'layer' | 'stage' | 'model';
  title: string;
  target: TargetSpec;
  batch: number;
  dtype: DType;
  /** Training mode (Dropout masks); default false. */
  training?: boolean;
  /** A memory budget of its own (bytes), instead of the run's. */
  memoryBudget?: number;
  ops: OpName[];
}

/** A case, built: the differentiable under test (a single layer or stage), or the split model's stages. */
export interface BuiltCase {
  /** The layer or stage (as a one-layer-or-more Sequential), when the case is one. */
  single: Sequential | null;
  /** The split model's stages, when the case is a whole model. */
  stages: Sequential[] | null;
  /** Every layer, in order (for the tfjs peer). */
  layers: Layer[];
  /** The input of what is under test. */
  x: Tensor;
  /** Labels of the whole model (model cases). */
  yTrue: Tensor;
  loss: string;
  /** An output cotangent for single cases: seeded normal, `[B, ...out]`. */
  dy: Tensor;
}

function makeLayer(t: Extract<TargetSpec, { kind: 'layer' }>): Layer {
  return layerFromConfig({ class_name: t.className, config: t.config });
}

/** Builds a case's model and batch, deterministically (the parent and the child build the same). */
export function buildCase(c: BenchCase): BuiltCase {
  const t = c.target;
  const B = c.batch;
  const dtype = c.dtype;
  let model: Sequential;
  let points: number[];
  let x: Tensor;
  let yTrue: Tensor;
  let loss: string;
  if (t.kind === 'layer') {
    const layer = makeLayer(t).build(t.inputShape, { rng: new Rng(1), dtype });
    const single = new Sequential([layer], { name: layer.className.toLowerCase() });
    const rng = new Rng(2);
    x = randomNormal([B, ...t.inputShape], rng, dtype);
    const dy = randomNormal([B, ...layer.outputShape], rng, dtype);
    return { single, stages: null, layers: [layer], x, yTrue: dy, loss: 'mse', dy };
  }
  if (t.kind === 'seed') {
    model = seedReferenceModel({ dtype });
    points = SEED_REFERENCE_SPLIT.slice();
    ({ x, y: yTrue } = seededBatch([10, 10, 1], { batch: B, seed: 0, dtype }));
    loss = 'mse';
  } else {
    model = catsVsDogsCnn({ side: t.side, channels: t.channels, dtype });
    points = splitAfterLastPooling(model);
    ({ x, y: yTrue } = seededBatch([t.side, t.side, t.channels], { batch: B, seed: 0, dtype }));
    loss = 'binary_crossentropy';
  }
  const stages = model.split(points);
  if (t.stage === undefined) return { single: null, stages, layers: model.layers.slice(), x, yTrue, loss, dy: yTrue };
  if (!Number.isInteger(t.stage) || t.stage < 0 || t.stage >= stages.length) throw new ConfigError(`bench case ${c.id}: expected a stage in 0..${stages.length - 1}, received ${t.stage}`);
  // The stage's input is what the stages before it output on the batch.
  let h = x;
  for (let s = 0; s < t.stage; s++) h = stages[s].forward(h, { training: c.training }).y;
  const single = stages[t.stage];
  const dy = randomNormal([B, ...single.outputShape], new Rng(3), dtype);
  return { single, stages: null, layers: single.layers.slice(), x: h, yTrue, loss, dy };
}

const SINGLE_OPS: OpName[] = ['forward', 'jvpBlock', 'writeJ', 'jacobianWrtInput', 'jacobianWrtWeights', 'explicitChain', 'vjpChain', 'tfForward', 'tfVjp', 'tfJacobianWrtInput', 'tfJacobianWrtWeights'];
const MODEL_OPS: OpName[] = ['forward', 'explicitChain', 'vjpChain', 'tfForward', 'tfVjp'];

function layerCase(id: string, title: string, className: Extract<TargetSpec, { kind: 'layer' }>['className'], config: Record<string, unknown>, inputShape: number[], batch: number, extra: Partial<BenchCase> = {}): BenchCase {
  // The layer itself says whether it has weights to differentiate.
  const noParams = layerFromConfig({ class_name: className, config }).build(inputShape).params.length === 0;
  // A layer also builds J into a reused buffer, for its block ratio without a fresh J's page faults.
  const ops = SINGLE_OPS.filter((o) => !(noParams && (o === 'jacobianWrtWeights' || o === 'tfJacobianWrtWeights'))).flatMap((o): OpName[] => (o === 'jacobianWrtInput' ? [o, 'jacobianInto'] : [o]));
  return { id, group: 'layer', title, target: { kind: 'layer', className, config, inputShape }, batch, dtype: 'float64', ops, ...extra };
}

function stageCase(id: string, title: string, target: TargetSpec, batch: number): BenchCase {
  return { id, group: 'stage', title, target, batch, dtype: 'float64', ops: SINGLE_OPS.slice() };
}

function modelCase(id: string, title: string, target: TargetSpec, batch: number): BenchCase {
  return { id, group: 'model', title, target, batch, dtype: 'float64', ops: MODEL_OPS.slice() };
}

/** The CNN sides and batches measured as whole models (the memory-against-side plot's measured points). */
export const MEASURED_MODELS: readonly [side: number, batch: number][] = [
  [24, 1],
  [32, 1],
  [32, 8],
  [48, 1],
  [64, 1],
  [64, 8],
];
/** The CNN sides accounted analytically (shapes only). */
export const ANALYTIC_SIDES = [22, 24, 32, 48, 64, 96, 128, 192, 256];

/**
 * The full suite, sized to finish in about a quarter of an hour on 2 cores: layers across sizes,
 * the seed's three stages, the CNN's two stages at 32 (batch 8) and 64 (batch 1), and the split
 * models (the seed's; the CNN across sides, at batch 1 and 8).
 */
export function fullCases(): BenchCase[] {
  const cases: BenchCase[] = [];
  for (const [n, m] of [
    [64, 64],
    [256, 64],
  ]) {
    cases.push(layerCase(`dense-${n}x${m}-b8`, `Dense ${n}→${m}, relu`, 'Dense', { units: m, activation: 'relu' }, [n], 8));
  }
  for (const side of [8, 24]) {
    cases.push(layerCase(`conv2d-${side}-b4`, `Conv2D 32·3×3 relu on ${side}×${side}×3`, 'Conv2D', { filters: 32, kernel_size: 3, activation: 'relu' }, [side, side, 3], 4));
  }
  cases.push(layerCase('conv2d-12c32-b4', 'Conv2D 32·3×3 relu on 12×12×32', 'Conv2D', { filters: 32, kernel_size: 3, activation: 'relu' }, [12, 12, 32], 4));
  for (const side of [8, 24]) {
    cases.push(layerCase(`maxpool-${side}-b4`, `MaxPooling2D 2×2 on ${side}×${side}×32`, 'MaxPooling2D', { pool_size: 2 }, [side, side, 32], 4));
  }
  for (const n of [256, 4096]) cases.push(layerCase(`relu-${n}-b8`, `Activation relu on ${n}`, 'Activation', { activation: 'relu' }, [n], 8));
  cases.push(layerCase('flatten-8x8x32-b8', 'Flatten 8×8×32', 'Flatten', {}, [8, 8, 32], 8));
  // Training mode: the mask is the residual; the tfjs peer has no same-mask dropout, so no peer ops.
  cases.push(layerCase('dropout-1024-b8', 'Dropout 0.5 (training) on 1024', 'Dropout', { rate: 0.5, seed: 1 }, [1024], 8, { training: true, ops: ['forward', 'jvpBlock', 'writeJ', 'jacobianWrtInput', 'jacobianInto', 'explicitChain', 'vjpChain'] }));
  for (const s of [0, 1, 2]) cases.push(stageCase(`seed-stage${s}-b3`, `seed reference model, stage ${s}`, { kind: 'seed', stage: s }, 3));
  for (const [side, B] of [
    [32, 8],
    [64, 1],
  ]) {
    for (const s of [0, 1]) cases.push(stageCase(`cnn${side}-stage${s}-b${B}`, `cats-vs-dogs CNN ${side}×${side}×3, stage ${s}`, { kind: 'cnn', side, channels: 3, stage: s }, B));
  }
  cases.push(modelCase('seed-model-b3', 'seed reference model, 3 stages', { kind: 'seed' }, 3));
  for (const [side, B] of MEASURED_MODELS) cases.push(modelCase(`cnn${side}-model-b${B}`, `cats-vs-dogs CNN ${side}×${side}×3, 2 stages`, { kind: 'cnn', side, channels: 3 }, B));
  // Over the budget: the explicit way is refused before allocating (its analytic bytes still reported); the VJP way runs.
  cases.push(modelCase('cnn96-model-b8', 'cats-vs-dogs CNN 96×96×3, 2 stages', { kind: 'cnn', side: 96, channels: 3 }, 8));
  return cases;
}

/** The quick suite CI runs: every group and every op, on small shapes. */
export function quickCases(): BenchCase[] {
  return [
    layerCase('dense-64x32-b4', 'Dense 64→32, relu', 'Dense', { units: 32, activation: 'relu' }, [64], 4),
    layerCase('conv2d-8-b2', 'Conv2D 8·3×3 relu on 8×8×3', 'Conv2D', { filters: 8, kernel_size: 3, activation: 'relu' }, [8, 8, 3], 2),
    layerCase('maxpool-8-b2', 'MaxPooling2D 2×2 on 8×8×8', 'MaxPooling2D', { pool_size: 2 }, [8, 8, 8], 2),
    stageCase('seed-stage0-b3', 'seed reference model, stage 0', { kind: 'seed', stage: 0 }, 3),
    // A budget of 1 MiB: the 4.27 MiB Jacobian w.r.t. the input is refused before allocating, the VJP way runs.
    { ...stageCase('seed-stage1-b3-1mib', 'seed reference model, stage 1, memory budget 1 MiB', { kind: 'seed', stage: 1 }, 3), memoryBudget: 1024 ** 2, ops: ['jacobianWrtInput', 'explicitChain', 'vjpChain'] },
    modelCase('seed-model-b3', 'seed reference model, 3 stages', { kind: 'seed' }, 3),
    // The smallest CNN the architecture takes; its explicit chain runs into the (quick) time cap, which is exercised too.
    { ...modelCase('cnn22-model-b1', 'cats-vs-dogs CNN 22×22×1, 2 stages', { kind: 'cnn', side: 22, channels: 1 }, 1), ops: ['forward', 'explicitChain', 'vjpChain', 'tfVjp'] },
  ];
}

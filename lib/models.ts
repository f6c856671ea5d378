/**
 * The seed's two models, built with seeded Glorot-uniform weights, and seeded batches for them:
 * the reference model (three stages) and the cats-vs-dogs CNN (two stages, split after the last
 * pooling layer).
 * @module
 */
import { ConfigError, fmtValue } from './errors.js';
import { Activation } from './layers/activation.js';
import { Conv2D } from './layers/conv2d.js';
import { Dense } from './layers/dense.js';
import { Dropout } from './layers/dropout.js';
import { Flatten } from './layers/flatten.js';
import { isTrainable } from './layers/layer.js';
import { MaxPooling2D } from './layers/max-pooling2d.js';
import { Rng } from './rng.js';
import { Sequential } from './sequential.js';
import { getMemoryBudget, guardBytes } from './memory.js';
import { type DType, type Tensor, bytesPerElement, randomUniform, zeros } from './tensor.js';

/** Options of the builders. */
export interface ModelOptions {
  /** Seed of the initial weights. Default 0. */
  seed?: number;
  /** Element type of weights and activations. Default float64. */
  dtype?: DType;
}

/**
 * The seed's reference model on `[10, 10, 1]` images: `layer_0 = Conv2D(6, 2, relu)`,
 * `layer_1 = Conv2D(6, 2, relu)`, `layer_2 = Flatten · Dense(1) · Activation(sigmoid)`; loss mse.
 * Split it with {@link SEED_REFERENCE_SPLIT} into its three stages.
 * @example
 * const [layer_0, layer_1, layer_2] = seedReferenceModel().split(SEED_REFERENCE_SPLIT);
 */
export function seedReferenceModel(opts: ModelOptions = {}): Sequential {
  return new Sequential(
    [
      new Conv2D({ filters: 6, kernel_size: 2, activation: 'relu' }),
      new Conv2D({ filters: 6, kernel_size: 2, activation: 'relu' }),
      new Flatten(),
      new Dense({ units: 1 }),
      new Activation({ activation: 'sigmoid' }),
    ],
    { inputShape: [10, 10, 1], rng: new Rng(opts.seed ?? 0), dtype: opts.dtype, name: 'seed_reference' },
  );
}

/** Where the seed's reference model splits: `[0] [1] [2, 3, 4]`. */
export const SEED_REFERENCE_SPLIT: readonly number[] = [1, 2];

/** One trainable parameter under the seed's name, and where its gradient is in a `ChainResult` (`dLoss_dWeights[layer][param]`). */
export interface SeedGradientLabel {
  /** `dLoss_dWeights2`, `dLoss_dBias2`; a stage with several layers with weights adds the layer's name: `dLoss_dWeights1_dense_1`. */
  label: string;
  /** Global layer index (over all stages). */
  layer: number;
  /** Index in the layer's `params`. */
  param: number;
}

/**
 * The seed's names of the trainable parameters of split `stages`, last stage first, as the seed's
 * answer prints its `valid` lines.
 * @example
 * seedGradientLabels(seedReferenceModel().split(SEED_REFERENCE_SPLIT)).map((l) => l.label);
 * // ['dLoss_dWeights2', 'dLoss_dBias2', 'dLoss_dWeights1', 'dLoss_dBias1', 'dLoss_dWeights0', 'dLoss_dBias0']
 */
export function seedGradientLabels(stages: readonly Sequential[]): SeedGradientLabel[] {
  const out: SeedGradientLabel[] = [];
  const offsets = stages.map((_, s) => stages.slice(0, s).reduce((n, st) => n + st.layers.length, 0));
  for (let s = stages.length - 1; s >= 0; s--) {
    const withParams = stages[s].layers.filter((l) => l.params.length > 0).length;
    stages[s].layers.forEach((l, i) => {
      l.params.forEach((p, k) => {
        // State (BatchNormalization's moving statistics) and frozen weights have no gradient to check.
        if (!isTrainable(p)) return;
        const kind = p.name === 'kernel' ? 'Weights' : p.name === 'bias' ? 'Bias' : p.name;
        out.push({ label: `dLoss_d${kind}${s}${withParams > 1 ? `_${l.name}` : ''}`, layer: offsets[s] + i, param: k });
      });
    });
  }
  return out;
}

/** A batch and its labels. */
export interface Batch {
  /** Inputs `[B, ...inputShape]`. */
  x: Tensor;
  /** Labels `[B, labels]`. */
  y: Tensor;
}

/**
 * A seeded batch for an image model: `x` uniform in `[0, 1)` (`[B, ...inputShape]`, the seed's
 * `tf.random.uniform`), labels `y = uniform > 0.5` (`[B, 1]`).
 * @example
 * const { x, y } = seededBatch([10, 10, 1], { batch: 3, seed: 0 }); // x: [3, 10, 10, 1], y: [3, 1]
 */
export function seededBatch(inputShape: readonly number[], opts: { batch?: number; seed?: number; dtype?: DType; labels?: number } = {}): Batch {
  const B = opts.batch ?? 3;
  if (!Number.isInteger(B) || B <= 0) throw new ConfigError(`seededBatch: expected batch to be a positive integer, received ${fmtValue(opts.batch)}`);
  const rng = new Rng(opts.seed ?? 0);
  const x = randomUniform([B, ...inputShape], rng, 0, 1, opts.dtype);
  const y = zeros([B, opts.labels ?? 1], opts.dtype);
  for (let i = 0; i < y.size; i++) y.data[i] = rng.uniform() > 0.5 ? 1 : 0;
  return { x, y };
}

/** Options of {@link catsVsDogsCnn}. */
export interface CnnOptions extends ModelOptions {
  /** Image side (square images). Default 32; at least 22 so that three conv-pool blocks fit. */
  side?: number;
  /** Image channels. Default 3. */
  channels?: number;
  /** Filters of the three Conv2D layers; the seed's are `[32, 32, 64]`. */
  filters?: readonly [number, number, number];
  /** Units of the hidden Dense layer; the seed's are 64. */
  units?: number;
}

/**
 * The seed's cats-vs-dogs CNN, layer for layer: three blocks of `Conv2D(32|32|64, 3×3)`,
 * `Activation(relu)`, `MaxPooling2D(2)`; then `Flatten`, `Dense(64)`, `Activation(relu)`,
 * `Dropout(0.5)`, `Dense(1)`, `Activation(sigmoid)`; loss binary cross-entropy. Other widths
 * (`filters`, `units`) keep the topology: a small one trains on digits in seconds.
 * Split it with {@link splitAfterLastPooling} into the seed's model_0 and model_1.
 * @example
 * const cnn = catsVsDogsCnn({ side: 32, channels: 3 });
 * const [model_0, model_1] = cnn.split(splitAfterLastPooling(cnn)); // model_0 outputs [B, 2, 2, 64]
 * const small = catsVsDogsCnn({ side: 28, channels: 1, filters: [8, 16, 16], units: 32 });
 */
export function catsVsDogsCnn(opts: CnnOptions = {}): Sequential {
  const side = opts.side ?? 32;
  const channels = opts.channels ?? 3;
  if (!Number.isSafeInteger(side) || side < 22) throw new ConfigError(`catsVsDogsCnn: expected side to be an integer >= 22 (three 3×3 convolutions and 2×2 poolings must fit), received ${fmtValue(opts.side)}`);
  if (!Number.isSafeInteger(channels) || channels <= 0) throw new ConfigError(`catsVsDogsCnn: expected channels to be a positive integer, received ${fmtValue(opts.channels)}`);
  const filters = opts.filters ?? [32, 32, 64];
  const units = opts.units ?? 64;
  if (!Array.isArray(filters) || filters.length !== 3 || filters.some((f) => !Number.isInteger(f) || f <= 0)) {
    throw new ConfigError(`catsVsDogsCnn: expected filters to be three positive integers (one per Conv2D), received ${fmtValue(opts.filters)}`);
  }
  if (!Number.isInteger(units) || units <= 0) throw new ConfigError(`catsVsDogsCnn: expected units to be a positive integer, received ${fmtValue(opts.units)}`);
  guardModelWeights(`catsVsDogsCnn on ${side}×${side}×${channels}`, cnnWeightSizes(side, channels, filters, units), opts.dtype ?? 'float64');
  const block = (f: number) => [new Conv2D({ filters: f, kernel_size: [3, 3] }), new Activation({ activation: 'relu' }), new MaxPooling2D({ pool_size: [2, 2] })];
  return new Sequential(
    [
      ...block(filters[0]),
      ...block(filters[1]),
      ...block(filters[2]),
      new Flatten(),
      new Dense({ units }),
      new Activation({ activation: 'relu' }),
      new Dropout({ rate: 0.5 }),
      new Dense({ units: 1 }),
      new Activation({ activation: 'sigmoid' }),
    ],
    { inputShape: [side, side, channels], rng: new Rng(opts.seed ?? 0), dtype: opts.dtype, name: 'cats_vs_dogs' },
  );
}

/**
 * The element count of each weight of the cats-vs-dogs CNN (kernel, bias per Conv2D and Dense),
 * from its shapes alone: valid 3×3 convolutions, 2×2 poolings that floor.
 * @example
 * cnnWeightSizes(32, 3).reduce((a, b) => a + b); // the CNN's parameter count at 32×32×3
 */
export function cnnWeightSizes(side: number, channels: number, filters: readonly number[] = [32, 32, 64], units = 64): number[] {
  const sizes: number[] = [];
  let s = side;
  let c = channels;
  for (const f of filters) {
    sizes.push(9 * c * f, f);
    s = Math.floor((s - 2) / 2);
    c = f;
  }
  const features = s * s * c;
  sizes.push(features * units, units, units, 1);
  return sizes;
}

/**
 * Refuses a model before any layer is built when all its weights together would not fit the
 * memory budget (each layer's `build` checks its own; this checks their sum, from shapes alone).
 * @throws MemoryBudgetError naming the weights, the estimate and the budget.
 */
export function guardModelWeights(what: string, weightSizes: readonly number[], dtype: DType = 'float64'): void {
  const total = weightSizes.reduce((a, b) => a + b, 0);
  guardBytes(`${what}: ${total} weights (${dtype})`, total * bytesPerElement(dtype), getMemoryBudget(), 'use a smaller model (a smaller side, fewer filters or units)');
}

/** The split point right after the last pooling layer (one with a `poolSize`): the seed's model_0 / model_1 boundary. */
export function splitAfterLastPooling(model: Sequential): number[] {
  const last = model.layers.map((l) => 'poolSize' in l).lastIndexOf(true);
  if (last < 0 || last === model.layers.length - 1) {
    throw new ConfigError(`splitAfterLastPooling: expected a pooling layer followed by more layers in ${model.describe()}, received classes ${model.layers.map((l) => l.className).join(', ')}`);
  }
  return [last + 1];
}

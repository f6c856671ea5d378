/**
 * The seed's two models, built with seeded Glorot-uniform weights, and seeded batches for them:
 * the reference model (three stages) and the cats-vs-dogs CNN (two stages, split after the last
 * pooling layer).
 * @module
 */
import { getHeapStatistics } from 'node:v8';
import { ConfigError, MemoryBudgetError, fmtValue } from './errors.js';
import { Activation } from './layers/activation.js';
import { Conv2D } from './layers/conv2d.js';
import { Dense } from './layers/dense.js';
import { Dropout } from './layers/dropout.js';
import { Flatten } from './layers/flatten.js';
import { MaxPooling2D } from './layers/max-pooling2d.js';
import { Rng } from './rng.js';
import { Sequential } from './sequential.js';
import { fmtBytes, getMemoryBudget, guardBytes } from './memory.js';
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
}

/**
 * The seed's cats-vs-dogs CNN, layer for layer: three blocks of `Conv2D(32|32|64, 3×3)`,
 * `Activation(relu)`, `MaxPooling2D(2)`; then `Flatten`, `Dense(64)`, `Activation(relu)`,
 * `Dropout(0.5)`, `Dense(1)`, `Activation(sigmoid)`; loss binary cross-entropy.
 * Split it with {@link splitAfterLastPooling} into the seed's model_0 and model_1.
 * @example
 * const cnn = catsVsDogsCnn({ side: 32, channels: 3 });
 * const [model_0, model_1] = cnn.split(splitAfterLastPooling(cnn)); // model_0 outputs [B, 2, 2, 64]
 */
export function catsVsDogsCnn(opts: CnnOptions = {}): Sequential {
  const side = opts.side ?? 32;
  const channels = opts.channels ?? 3;
  if (!Number.isSafeInteger(side) || side < 22) throw new ConfigError(`catsVsDogsCnn: expected side to be an integer >= 22 (three 3×3 convolutions and 2×2 poolings must fit), received ${fmtValue(opts.side)}`);
  if (!Number.isSafeInteger(channels) || channels <= 0) throw new ConfigError(`catsVsDogsCnn: expected channels to be a positive integer, received ${fmtValue(opts.channels)}`);
  guardModelWeights(`catsVsDogsCnn on ${side}×${side}×${channels}`, cnnWeightSizes(side, channels), opts.dtype ?? 'float64');
  const block = (filters: number) => [new Conv2D({ filters, kernel_size: [3, 3] }), new Activation({ activation: 'relu' }), new MaxPooling2D({ pool_size: [2, 2] })];
  return new Sequential(
    [
      ...block(32),
      ...block(32),
      ...block(64),
      new Flatten(),
      new Dense({ units: 64 }),
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
 * Refuses a model before any layer is built when its weights would not fit: all of them against
 * the memory budget, and the largest against the free JavaScript heap, because Glorot
 * initialization stages each kernel in a plain array of doubles (8 bytes a weight) before copying
 * it into its typed array, and a heap overrun is a crash of the process, not an error.
 * @throws MemoryBudgetError naming the weights, the estimate and the budget (or the free heap).
 */
export function guardModelWeights(what: string, weightSizes: readonly number[], dtype: DType = 'float64'): void {
  const total = weightSizes.reduce((a, b) => a + b, 0);
  guardBytes(`${what}: ${total} weights (${dtype})`, total * bytesPerElement(dtype), getMemoryBudget(), 'use a smaller model (a smaller side, fewer filters or units)');
  const largest = Math.max(0, ...weightSizes);
  const heap = getHeapStatistics();
  const free = heap.heap_size_limit - heap.used_heap_size;
  // Half the free heap: the staging array and the garbage of the layers built before it coexist.
  if (largest * 8 > free / 2) {
    throw new MemoryBudgetError(
      `${what}: initializing its largest kernel (${largest} weights) needs an estimated ${fmtBytes(largest * 8)} (${largest * 8} bytes) of JavaScript heap, over half the ${fmtBytes(free)} free (heap limit ${fmtBytes(heap.heap_size_limit)}); use a smaller model, or give node more heap (--max-old-space-size)`,
      largest * 8,
      free / 2,
    );
  }
}

/** The split point right after the last MaxPooling2D layer: the seed's model_0 / model_1 boundary. */
export function splitAfterLastPooling(model: Sequential): number[] {
  const last = model.layers.map((l) => l.className).lastIndexOf('MaxPooling2D');
  if (last < 0 || last === model.layers.length - 1) {
    throw new ConfigError(`splitAfterLastPooling: expected a MaxPooling2D layer followed by more layers in ${model.describe()}, received classes ${model.layers.map((l) => l.className).join(', ')}`);
  }
  return [last + 1];
}

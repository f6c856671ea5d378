/**
 * The unit of work of a data-parallel VJP step, the same code whatever thread runs it: a batch
 * `[B, ...in]` is cut into fixed shards ({@link shardBounds}, from `B` and the shard count alone,
 * never from the thread count); each shard runs `forward` then `vjp` on its own
 * {@link GradientTape} ({@link ShardRunner}); the shards' weight cotangents are summed in shard
 * order ({@link reduceShards}). Floating-point sums depend on their grouping, so fixing the
 * grouping is what makes 1, 2 and N threads bit-identical.
 *
 * No `worker_threads` here: the pool (`lib/pool/pool.ts`, behind `jacobian-chain/node`) runs this
 * in workers, and its one-thread path runs it inline.
 * @module
 */
import { ConfigError, fmtShape } from '../errors.js';
import { type Differentiable, isTrainable, trainableParams } from '../layers/layer.js';
import type { Sequential } from '../sequential.js';
import { GradientTape } from '../tape.js';
import { type DType, type Tensor, bytesPerElement, contiguous, dtypeOf, tensor } from '../tensor.js';

/** One shard of a batch: rows `[start, start + count)`, `index` its place in the reduction order. */
export interface ShardBounds {
  /** Position in the fixed reduction order (0 first). */
  index: number;
  /** First row of the batch. */
  start: number;
  /** Rows in this shard (at least 1). */
  count: number;
}

/**
 * The fixed shards of a batch of `batch` rows: `min(shards, batch)` contiguous, near-equal runs
 * (`floor(k·B/S)` to `floor((k+1)·B/S)`), a function of `batch` and `shards` only.
 * @example
 * shardBounds(8, 3); // [{index: 0, start: 0, count: 2}, {index: 1, start: 2, count: 3}, {index: 2, start: 5, count: 3}]
 */
export function shardBounds(batch: number, shards: number): ShardBounds[] {
  const S = Math.min(shards, batch);
  return Array.from({ length: S }, (_, k) => {
    const start = Math.floor((k * batch) / S);
    return { index: k, start, count: Math.floor(((k + 1) * batch) / S) - start };
  });
}

/** Where every parameter of a model lives in one flat buffer, and every trainable one in a gradient slot. */
export interface ParamLayout {
  /** dtype of every parameter (and of the buffers). */
  dtype: DType;
  /** `offsets[k]`: first element of flat parameter `k` (model `params` order) in the weight buffer. */
  offsets: number[];
  /** `shapes[k]`: the shape of flat parameter `k`. */
  shapes: number[][];
  /** `gradOffsets[k]`: first element of parameter `k`'s gradient in a slot, or -1 when it is not trainable. */
  gradOffsets: number[];
  /** Elements of the weight buffer. */
  size: number;
  /** Elements of one gradient slot (the trainable parameters). */
  gradSize: number;
}

/**
 * The flat layout of `model`'s parameters; every parameter must have the model's dtype.
 * @throws ConfigError naming a parameter of another dtype.
 * @example
 * paramLayout(model).gradSize; // trainable scalars
 */
export function paramLayout(model: Sequential): ParamLayout {
  const dtype = model.dtype;
  const offsets: number[] = [];
  const shapes: number[][] = [];
  const gradOffsets: number[] = [];
  let size = 0;
  let gradSize = 0;
  model.layers.forEach((l) =>
    l.params.forEach((p) => {
      if (dtypeOf(p.value) !== dtype) throw new ConfigError(`pool: expected every parameter in the model's dtype ${dtype}, received ${l.describe()}.${p.name} in ${dtypeOf(p.value)}`);
      offsets.push(size);
      shapes.push(p.value.shape.slice());
      size += p.value.size;
      gradOffsets.push(isTrainable(p) ? gradSize : -1);
      if (isTrainable(p)) gradSize += p.value.size;
    }),
  );
  return { dtype, offsets, shapes, gradOffsets, size, gradSize };
}

/** A typed array of `dtype` over `length` elements of `buf` from element `offset`. */
export function typedView(buf: ArrayBufferLike, dtype: DType, offset: number, length: number): Float64Array | Float32Array {
  const bpe = bytesPerElement(dtype);
  return dtype === 'float32' ? new Float32Array(buf, offset * bpe, length) : new Float64Array(buf, offset * bpe, length);
}

/**
 * Refuses, before any work, a model whose training forward cannot be cut into shards exactly: a
 * layer that couples the samples (BatchNormalization's batch statistics in training) or a
 * stochastic layer that cannot draw its rows of the whole batch's noise.
 * @throws ConfigError naming the layer and what to do instead.
 * @example
 * checkShardable(model, true); // throws for BatchNormalization in training
 */
export function checkShardable(model: Sequential, training: boolean): void {
  model.layers.forEach((layer, i) => {
    const l: Differentiable = layer;
    if (l.samplesIndependent?.({ training }) === false) {
      throw new ConfigError(`pool: layer ${i} (${layer.describe()}) couples the samples of a batch in ${training ? 'training' : 'inference'} (batch statistics), so a shard cannot compute its part alone; expected layers whose samples are independent, received one that is not: train it with threads: 1 (fit without a pool)`);
    }
    if (training && l.stochastic && !l.batchSliced) {
      throw new ConfigError(`pool: layer ${i} (${layer.describe()}) draws noise in training but does not honour batchSlice, so shards would draw other noise than one pass; expected a stochastic layer with batchSliced, received one without: train it with threads: 1`);
    }
  });
}

/**
 * Points every parameter of `model` at its place in the weight buffer `buf` (shared memory): a
 * new tensor per call, so that nothing keyed on a tensor's identity sees stale weights.
 * @example
 * bindWeights(workerModel, layout, weightsSab); // before each step's forward
 */
export function bindWeights(model: Sequential, layout: ParamLayout, buf: ArrayBufferLike): void {
  let k = 0;
  for (const l of model.layers) {
    for (const p of l.params) {
      const shape = layout.shapes[k];
      if (!shape || shape.length !== p.value.shape.length || shape.some((d, i) => d !== p.value.shape[i])) {
        throw new ConfigError(`pool: expected parameter ${k} (${l.describe()}.${p.name}) of shape ${fmtShape(shape)}, received ${fmtShape(p.value.shape)} in the rebuilt model`);
      }
      if ((layout.gradOffsets[k] >= 0) !== isTrainable(p)) {
        throw new ConfigError(`pool: expected parameter ${k} (${l.describe()}.${p.name}) to be ${layout.gradOffsets[k] >= 0 ? 'trainable' : 'frozen'} as in the pool's model, received ${isTrainable(p) ? 'trainable' : 'frozen'} in the rebuilt model`);
      }
      p.value = tensor(typedView(buf, layout.dtype, layout.offsets[k], p.value.size), shape, layout.dtype);
      k++;
    }
  }
}

/** Copies the current value of every parameter of `model` into the weight buffer `into`. */
export function writeWeights(model: Sequential, layout: ParamLayout, into: Float64Array | Float32Array): void {
  let k = 0;
  for (const l of model.layers) {
    for (const p of l.params) {
      const c = contiguous(p.value);
      into.set(c.data.subarray(c.offset, c.offset + c.size), layout.offsets[k++]);
    }
  }
}

/**
 * Runs shards of a batch through a model: `forward` records a shard's pass on its own tape (the
 * Dropout masks are the shard's rows of the whole batch's, see `batchSlice`), `backward` pulls the
 * shard's rows of the loss cotangent `dy` back and writes its weight cotangents into a slot.
 * @example
 * const runner = new ShardRunner(model, paramLayout(model));
 * const y0 = runner.forward({ index: 0, start: 0, count: 4 }, x0, 8, { training: true, seed: 3 });
 * runner.backward(0, dy0, slot0);
 */
export class ShardRunner {
  private readonly tapes = new Map<number, GradientTape>();

  constructor(
    /** The model the shards run through. */
    readonly model: Sequential,
    /** Where its parameters' gradients go in a slot. */
    readonly layout: ParamLayout,
  ) {}

  /** Records shard `shard`'s forward on `x` (its rows `[count, ...in]`) of a batch of `batch` rows; returns its output. */
  forward(shard: ShardBounds, x: Tensor, batch: number, opts: {
    /** Training mode (Dropout active). */
    training: boolean;
    /** The step's seed of the per-layer generators. */
    seed: number
  }): Tensor {
    const tape = new GradientTape(this.model);
    const y = tape.forward(x, { training: opts.training, seed: opts.seed, batchSlice: { start: shard.start, total: batch } });
    this.tapes.set(shard.index, tape);
    return y;
  }

  /** The VJP of shard `index`'s recorded pass for its rows `dy` `[count, ...out]`; its weight cotangents written into `slot`. */
  backward(index: number, dy: Tensor, slot: Float64Array | Float32Array): void {
    const tape = this.tapes.get(index);
    if (!tape) throw new ConfigError(`pool: backward of shard ${index} before its forward`);
    this.tapes.delete(index);
    const params = trainableParams(this.model);
    const grads = tape.gradient(tape.output, params, { outputGradients: dy });
    let j = 0;
    this.model.params.forEach((p, k) => {
      if (!isTrainable(p)) return;
      const g = contiguous(grads[j++]);
      slot.set(g.data.subarray(g.offset, g.offset + g.size), this.layout.gradOffsets[k]);
    });
  }
}

/**
 * The weight cotangents of the whole batch: the shards' slots summed element by element in shard
 * order (`((s0 + s1) + s2) + …`, each sum rounded to the dtype), per layer per parameter, null for a
 * non-trainable parameter.
 * @example
 * const dLoss_dWeights = reduceShards(model, layout, [slot0, slot1]);
 */
export function reduceShards(model: Sequential, layout: ParamLayout, slots: readonly (Float64Array | Float32Array)[]): (Tensor | null)[][] {
  let k = 0;
  return model.layers.map((l) =>
    l.params.map((p) => {
      const off = layout.gradOffsets[k];
      const shape = layout.shapes[k++];
      if (off < 0) return null;
      const n = p.value.size;
      const out = layout.dtype === 'float32' ? new Float32Array(n) : new Float64Array(n);
      out.set(slots[0].subarray(off, off + n));
      for (let s = 1; s < slots.length; s++) {
        const src = slots[s];
        for (let e = 0; e < n; e++) out[e] += src[off + e];
      }
      return tensor(out, shape, layout.dtype);
    }),
  );
}

/**
 * The messages between the training pool and its workers: shard bounds, flags and buffer handles
 * (SharedArrayBuffers are shared, not copied, by `postMessage`); never the numbers themselves.
 * @module
 */
import type { DType } from '../tensor.js';
import type { ParamLayout, ShardBounds } from './shard.js';

/** What a worker starts with (`workerData`). */
export interface PoolInit {
  /** `JSON.stringify({ modelTopology })` of the model: its layers and configs, no weights. */
  topology: string;
  /** Where each parameter lives in `weights` and each gradient in a slot. */
  layout: ParamLayout;
  /** The shared weight buffer, `layout.size` elements of `layout.dtype`, written by the pool before each step. */
  weights: SharedArrayBuffer;
  /** The shared gradient slots, one of `layout.gradSize` elements per shard, in shard order. */
  grads: SharedArrayBuffer;
}

/** A request to a worker: run the forward of some shards, or the backward of those it ran. */
export type PoolRequest =
  | {
      /** Forward of `shards`. */
      type: 'forward';
      /** The shards this worker runs in this step. */
      shards: ShardBounds[];
      /** Rows of the whole batch. */
      batch: number;
      /** dtype of `x`. */
      dtype: DType;
      /** The batch `[batch, ...in]`, shared. */
      x: SharedArrayBuffer;
      /** Where the prediction `[batch, ...out]` goes, shared. */
      y: SharedArrayBuffer;
      /** Where the pool writes the loss cotangent `[batch, ...out]` before the backward, shared. */
      dy: SharedArrayBuffer;
      /** Training mode. */
      training: boolean;
      /** The step's seed of the per-layer generators. */
      seed: number;
    }
  | {
      /** Backward of the shards of the last forward. */
      type: 'backward';
    };

/** A worker's answer: done, or the error it threw. */
export type PoolReply =
  | {
      /** Done. */
      ok: true;
    }
  | {
      /** Failed. */
      ok: false;
      /** The error's class name. */
      name: string;
      /** The error's message. */
      message: string;
    };

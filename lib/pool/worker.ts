/**
 * A worker of the training pool (`lib/pool/pool.ts`): rebuilds the model once from its topology
 * (the library's model format, as a string), then, per step, binds its parameters to the shared
 * weight buffer and runs its shards with {@link ShardRunner}: `forward` writes each shard's output
 * rows into the shared prediction buffer, `backward` reads the shard's rows of the loss cotangent
 * and writes its weight cotangents into the shard's shared slot. Only shard bounds and buffer
 * handles cross as messages; every number lives in shared memory.
 * @module
 */
import { parentPort, workerData } from 'node:worker_threads';
import { loadModel } from '../model-format.js';
import { sizeOf, tensor } from '../tensor.js';
import { type ParamLayout, type ShardBounds, ShardRunner, bindWeights, typedView } from './shard.js';
import type { PoolInit, PoolReply, PoolRequest } from './messages.js';

const init = workerData as PoolInit;
const model = loadModel(init.topology, { weights: 'initialize', dtype: init.layout.dtype });
const layout: ParamLayout = init.layout;
const runner = new ShardRunner(model, layout);
const inRow = sizeOf(model.inputShape);
const outRow = sizeOf(model.outputShape);
let pending: ShardBounds[] = [];
let step: Extract<PoolRequest, { type: 'forward' }> | null = null;

function handle(req: PoolRequest): void {
  if (req.type === 'forward') {
    step = req;
    pending = req.shards;
    bindWeights(model, layout, init.weights);
    for (const sh of req.shards) {
      const x = tensor(typedView(req.x, req.dtype, sh.start * inRow, sh.count * inRow), [sh.count, ...model.inputShape], req.dtype);
      const y = runner.forward(sh, x, req.batch, { training: req.training, seed: req.seed });
      typedView(req.y, layout.dtype, sh.start * outRow, sh.count * outRow).set(y.data.subarray(y.offset, y.offset + y.size));
    }
    return;
  }
  if (!step) throw new Error('backward before forward');
  for (const sh of pending) {
    const dy = tensor(typedView(step.dy, layout.dtype, sh.start * outRow, sh.count * outRow), [sh.count, ...model.outputShape], layout.dtype);
    runner.backward(sh.index, dy, typedView(init.grads, layout.dtype, sh.index * layout.gradSize, layout.gradSize));
  }
  pending = [];
}

parentPort!.on('message', (req: PoolRequest) => {
  let reply: PoolReply;
  try {
    handle(req);
    reply = { ok: true };
  } catch (e) {
    const err = e as Error;
    reply = { ok: false, name: err?.name ?? 'Error', message: err?.message ?? String(e) };
  }
  parentPort!.postMessage(reply);
});
parentPort!.postMessage({ ok: true } satisfies PoolReply);

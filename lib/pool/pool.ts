/**
 * A `worker_threads` pool for the data-parallel VJP training step (Node only: reached from
 * `jacobian-chain/node`, never from the main entry).
 *
 * Each worker rebuilds the model once from its topology; per step the pool writes the current
 * weights and the batch into shared memory, the workers run the forward of their fixed shards
 * ({@link shardBounds}), the pool computes the loss and its cotangent `dy` on the whole batch's
 * prediction (the very code `fit` runs, so the loss is the one-process loss), the workers pull
 * their rows of `dy` back, and the pool sums the shards' weight cotangents in shard order. The
 * shards depend on the batch and the shard count only, so 1, 2 and N threads give bit-identical
 * gradients; one thread runs the same shards inline, without a worker.
 *
 * Hand-written rather than piscina: piscina 5 pulls the optional native package `@napi-rs/nice`
 * (a prebuilt binary), and its task queue sends a task to any idle worker, while a step's backward
 * must reach the worker that holds the shard's tape.
 * @module
 */
import { Worker } from 'node:worker_threads';
import { ConfigError, JacobianChainError, ShapeError, fmtShape, fmtValue } from '../errors.js';
import type { Loss } from '../losses.js';
import { guardBytes } from '../memory.js';
import { saveModel } from '../model-format.js';
import { Sequential } from '../sequential.js';
import { type DType, type Tensor, assertShape, bytesPerElement, contiguous, dtypeOf, sizeOf, tensor } from '../tensor.js';
import { type Dataset, type FitOptions, type FitResult, type GradientPool, type PoolGradients, fit } from '../train.js';
import type { PoolInit, PoolReply, PoolRequest } from './messages.js';
import { type ParamLayout, type ShardBounds, ShardRunner, checkShardable, paramLayout, reduceShards, shardBounds, typedView, writeWeights } from './shard.js';

/** Most threads a pool accepts. */
export const MAX_POOL_THREADS = 64;
/** Shards per batch unless told: fixed, so that any thread count up to it has work. */
export const DEFAULT_POOL_SHARDS = 8;

/** Options of {@link createPool}. */
export interface PoolOptions {
  /** Threads: 1 (default) runs the shards inline, N > 1 starts N workers. An integer in `[1, 64]`. */
  threads?: number;
  /**
   * Shards per batch (a batch of fewer rows has one per row), default 8. The gradient depends on
   * it (the grouping of the sums), never on `threads`; 1 shard is the one-process `fit` exactly.
   */
  shards?: number;
}

/** An error a pool worker threw, with its class name and message. */
export class PoolError extends JacobianChainError {}

/** One worker and its one outstanding request. */
interface PoolWorker {
  worker: Worker;
  waiting: { resolve: () => void; reject: (e: Error) => void } | null;
  failed: Error | null;
}

function integerIn(v: unknown, lo: number, hi: number, key: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) throw new ConfigError(`createPool: expected ${key} to be an integer in [${lo}, ${hi}], received ${fmtValue(v)}`);
  return v;
}

/**
 * The worker beside this module. From the compiled build it is `worker.js`, run by plain node;
 * from TypeScript sources (specs, tsx) it is `worker.ts`, loaded through tsx's API by a small
 * bootstrap beside it (`tsx-boot.mjs`), since `--import tsx` in a worker's execArgv does not reach
 * the worker's loader on Node 20.
 */
function spawnWorker(init: PoolInit): Worker {
  // A worker inherits the process's flags, but Node refuses per-process ones in a worker's
  // execArgv: --input-type (of `node -e`) and V8's heap, stack and gc flags (`node --expose-gc`).
  const perProcess = /^--(input-type|expose[-_]gc|max[-_]old[-_]space[-_]size|max[-_]semi[-_]space[-_]size|stack[-_]size)\b/;
  const execArgv = process.execArgv.filter((a) => !perProcess.test(a));
  if (!import.meta.url.endsWith('.ts')) return new Worker(new URL('./worker.js', import.meta.url), { workerData: init, execArgv });
  return new Worker(new URL('./tsx-boot.mjs', import.meta.url), { workerData: { ...init, entry: new URL('./worker.ts', import.meta.url).href }, execArgv });
}

/**
 * A data-parallel gradient pool over `model`'s batch samples; give it to `fit` as `{ pool }`.
 * Close it when done ({@link TrainingPool.close}); an idle pool never keeps the process alive.
 * @example
 * const pool = await createPool(model, { threads: 2 });
 * try { await fit(model, train, { split: [], loss: 'binary_crossentropy', optimizer: { name: 'adam' }, pool }); }
 * finally { await pool.close(); }
 */
export class TrainingPool implements GradientPool {
  /** Shards per batch. */
  readonly shards: number;
  private readonly layout: ParamLayout;
  private readonly weights: SharedArrayBuffer;
  private readonly grads: SharedArrayBuffer;
  private readonly workers: PoolWorker[] = [];
  private readonly inline: ShardRunner | null;
  private buffers: { rows: number; dtype: DType; x: SharedArrayBuffer; y: SharedArrayBuffer; dy: SharedArrayBuffer } | null = null;
  private closed = false;
  private busy = false;

  private constructor(
    /** The model the pool mirrors. */
    readonly model: Sequential,
    /** Threads the pool runs on. */
    readonly threads: number,
    shards: number,
  ) {
    this.shards = shards;
    this.layout = paramLayout(model);
    const bpe = bytesPerElement(this.layout.dtype);
    this.weights = new SharedArrayBuffer(Math.max(1, this.layout.size) * bpe);
    // One gradient slot per shard: the fixed-order sum needs every shard's cotangents at once.
    guardBytes(`pool gradient slots (${shards} shards × ${this.layout.gradSize} trainable values)`, shards * this.layout.gradSize * bpe, undefined, 'use fewer shards (createPool(model, { shards }))');
    this.grads = new SharedArrayBuffer(Math.max(1, shards * this.layout.gradSize) * bpe);
    this.inline = threads === 1 ? new ShardRunner(model, this.layout) : null;
  }

  /** Builds the pool and waits for its workers to have rebuilt the model. Use {@link createPool}. */
  static async create(model: Sequential, opts: PoolOptions = {}): Promise<TrainingPool> {
    if (!(model instanceof Sequential)) throw new ConfigError(`createPool: expected a Sequential model, received ${fmtValue(model)}`);
    if (!opts || typeof opts !== 'object') throw new ConfigError(`createPool: expected options {threads, shards}, received ${fmtValue(opts)}`);
    const threads = integerIn(opts.threads ?? 1, 1, MAX_POOL_THREADS, 'threads');
    const shards = integerIn(opts.shards ?? DEFAULT_POOL_SHARDS, 1, 4096, 'shards');
    const pool = new TrainingPool(model, threads, shards);
    if (threads > 1) await pool.start();
    return pool;
  }

  private async start(): Promise<void> {
    const topology = JSON.stringify({ modelTopology: topologyOf(this.model) });
    const init: PoolInit = { topology, layout: this.layout, weights: this.weights, grads: this.grads };
    const ready: Promise<void>[] = [];
    for (let w = 0; w < this.threads; w++) {
      const worker = spawnWorker(init);
      const pw: PoolWorker = { worker, waiting: null, failed: null };
      ready.push(new Promise<void>((resolve, reject) => (pw.waiting = { resolve, reject })));
      worker.on('message', (reply: PoolReply) => {
        const waiting = pw.waiting;
        pw.waiting = null;
        if (!waiting) return;
        worker.unref();
        if (reply.ok) waiting.resolve();
        else waiting.reject(new PoolError(`pool worker ${w}: ${reply.name}: ${reply.message}`));
      });
      const fail = (e: Error): void => {
        pw.failed = e;
        pw.waiting?.reject(e);
        pw.waiting = null;
      };
      worker.on('error', (e) => fail(new PoolError(`pool worker ${w} failed: ${e?.message ?? String(e)}`)));
      worker.on('exit', (code) => fail(new PoolError(this.closed ? `pool worker ${w}: the pool was closed during a step` : `pool worker ${w} exited (code ${code})`)));
      this.workers.push(pw);
    }
    try {
      await Promise.all(ready);
    } catch (e) {
      await this.close();
      throw e;
    }
  }

  private call(w: number, req: PoolRequest): Promise<void> {
    const pw = this.workers[w];
    if (pw.failed) return Promise.reject(pw.failed);
    return new Promise<void>((resolve, reject) => {
      pw.waiting = { resolve, reject };
      // Referenced only while it works: an idle pool never holds the process open.
      pw.worker.ref();
      pw.worker.postMessage(req);
    });
  }

  /**
   * The loss and dLoss/dWeights of the batch `x` `[B, ...in]`, `yTrue` `[B, ...out]`, at the
   * model's current weights: shards forward, the loss on the whole prediction, shards backward,
   * the shards' cotangents summed in shard order.
   * @throws ConfigError for a closed or busy pool, a model a pool cannot shard; ShapeError for a bad batch.
   */
  async gradients(x: Tensor, yTrue: Tensor, loss: Loss, opts: {
    /** Forward in training mode (Dropout active). */
    training: boolean;
    /** The step's seed of the per-layer generators. */
    seed: number
  }): Promise<PoolGradients> {
    if (this.closed) throw new ConfigError('pool: expected an open pool, received one already closed');
    if (this.busy) throw new ConfigError('pool: expected one step at a time, received a step while another runs (await each gradients call)');
    assertShape(x, [null, ...this.model.inputShape], 'pool x');
    const B = x.shape[0];
    if (B === 0) throw new ShapeError(`pool x: expected at least one example, received shape ${fmtShape(x.shape)}`);
    if (!yTrue || yTrue.shape?.[0] !== B) throw new ShapeError(`pool yTrue: expected ${B} rows (the batch of x), received shape ${fmtShape(yTrue?.shape)}`);
    checkShardable(this.model, opts.training);
    this.busy = true;
    try {
      const shards = shardBounds(B, this.shards);
      const slots = shards.map((s) => typedView(this.grads, this.layout.dtype, s.index * this.layout.gradSize, this.layout.gradSize));
      const yPred = this.inline ? this.inlineForward(shards, x, opts) : await this.workersForward(shards, x, opts);
      const lossValue = loss.value(yTrue, yPred);
      const dy = contiguous(loss.gradient(yTrue, yPred));
      if (this.inline) {
        for (const s of shards) {
          const rows = tensor(dy.data.subarray(dy.offset + s.start * (dy.size / B), dy.offset + (s.start + s.count) * (dy.size / B)), [s.count, ...dy.shape.slice(1)], dtypeOf(dy));
          this.inline.backward(s.index, rows, slots[s.index]);
        }
      } else {
        typedView(this.buffers!.dy, this.layout.dtype, 0, dy.size).set(dy.data.subarray(dy.offset, dy.offset + dy.size));
        await settled(this.workers.map((_, w) => this.call(w, { type: 'backward' })));
      }
      return { loss: lossValue, yPred, dLoss_dWeights: reduceShards(this.model, this.layout, slots) };
    } finally {
      this.busy = false;
    }
  }

  private inlineForward(shards: ShardBounds[], x: Tensor, opts: { training: boolean; seed: number }): Tensor {
    const xc = contiguous(x);
    const B = x.shape[0];
    const row = xc.size / B;
    const outs = shards.map((s) => this.inline!.forward(s, tensor(xc.data.subarray(xc.offset + s.start * row, xc.offset + (s.start + s.count) * row), [s.count, ...x.shape.slice(1)], dtypeOf(x)), B, opts));
    const outRow = sizeOf(this.model.outputShape);
    const data = this.layout.dtype === 'float32' ? new Float32Array(B * outRow) : new Float64Array(B * outRow);
    outs.forEach((y, k) => data.set(contiguous(y).data.subarray(contiguous(y).offset, contiguous(y).offset + y.size), shards[k].start * outRow));
    return tensor(data, [B, ...this.model.outputShape], this.layout.dtype);
  }

  private async workersForward(shards: ShardBounds[], x: Tensor, opts: { training: boolean; seed: number }): Promise<Tensor> {
    const B = x.shape[0];
    const dtype = dtypeOf(x);
    const inRow = sizeOf(this.model.inputShape);
    const outRow = sizeOf(this.model.outputShape);
    const bufs = this.batchBuffers(B, dtype);
    writeWeights(this.model, this.layout, typedView(this.weights, this.layout.dtype, 0, this.layout.size));
    const xc = contiguous(x);
    typedView(bufs.x, dtype, 0, B * inRow).set(xc.data.subarray(xc.offset, xc.offset + xc.size));
    // Shard k to worker k mod N: which thread runs a shard changes nothing in its numbers.
    const perWorker: ShardBounds[][] = this.workers.map(() => []);
    shards.forEach((s) => perWorker[s.index % this.threads].push(s));
    await settled(
      perWorker.map((mine, w) => this.call(w, { type: 'forward', shards: mine, batch: B, dtype, x: bufs.x, y: bufs.y, dy: bufs.dy, training: opts.training, seed: opts.seed })),
    );
    return tensor(typedView(bufs.y, this.layout.dtype, 0, B * outRow).slice(), [B, ...this.model.outputShape], this.layout.dtype);
  }

  /** Shared batch buffers for at least `rows` rows, reused across steps (fresh pages cost faults). */
  private batchBuffers(rows: number, dtype: DType): { x: SharedArrayBuffer; y: SharedArrayBuffer; dy: SharedArrayBuffer } {
    const b = this.buffers;
    if (b && b.rows >= rows && b.dtype === dtype) return b;
    const inRow = sizeOf(this.model.inputShape);
    const outRow = sizeOf(this.model.outputShape);
    const obpe = bytesPerElement(this.layout.dtype);
    this.buffers = {
      rows,
      dtype,
      x: new SharedArrayBuffer(Math.max(1, rows * inRow) * bytesPerElement(dtype)),
      y: new SharedArrayBuffer(Math.max(1, rows * outRow) * obpe),
      dy: new SharedArrayBuffer(Math.max(1, rows * outRow) * obpe),
    };
    return this.buffers;
  }

  /** Stops the workers; the pool refuses further steps. Safe to call twice. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all(this.workers.map((pw) => pw.worker.terminate()));
  }
}

/**
 * Waits for every worker's answer, then throws the first error: a worker still busy with a failed
 * step would otherwise answer the next step's request with this one's reply.
 */
async function settled(calls: Promise<void>[]): Promise<void> {
  const results = await Promise.allSettled(calls);
  const bad = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (bad) throw bad.reason;
}

/** The model's topology in the library's model format (layers and configs); the weights live in shared memory. */
function topologyOf(model: Sequential): ReturnType<typeof saveModel>['modelTopology'] {
  return saveModel(model).modelTopology;
}

/**
 * A {@link TrainingPool} over `model` with `opts.threads` threads (default 1: inline, no worker).
 * @throws ConfigError for threads or shards that are not integers in range, or a model a pool cannot shard.
 * @example
 * const pool = await createPool(model, { threads: 2 });
 * await fit(model, train, { split: [], loss: 'binary_crossentropy', optimizer: { name: 'sgd', momentum: 0.9 }, pool });
 * await pool.close();
 */
export async function createPool(model: Sequential, opts: PoolOptions = {}): Promise<TrainingPool> {
  return TrainingPool.create(model, opts);
}

/**
 * `fit` with a data-parallel pool made for the run and closed after it: `threads` workers (default
 * 1, inline), `shards` per batch. The method is `vjp`.
 * @example
 * const { history } = await fitParallel(model, train, { split: [], loss: 'binary_crossentropy', optimizer: { name: 'adam' }, threads: 2 });
 */
export async function fitParallel(model: Sequential, data: Dataset, opts: FitOptions & PoolOptions): Promise<FitResult> {
  if (!opts || typeof opts !== 'object') throw new ConfigError(`fitParallel: expected options {split, loss, optimizer, threads, ...}, received ${fmtValue(opts)}`);
  const { threads, shards, ...fitOpts } = opts;
  const pool = await createPool(model, { threads, shards });
  try {
    return await fit(model, data, { ...fitOpts, pool });
  } finally {
    await pool.close();
  }
}

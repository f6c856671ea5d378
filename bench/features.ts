/**
 * What this build of the library can do, detected by feature (by calling it), never by a flag:
 * a multi-core training step (a worker pool behind `jacobian-chain/node`), the streamed explicit
 * mode (`jacobianChain(…, { streamed: true })`) and `mode: 'auto'` for dense Jacobians. Each
 * detector returns the runnable thing, or why it is not there, in words for the report.
 * @example
 * const s = await streamedSupport();
 * if (!s.supported) console.log(`not measured: ${s.reason}`);
 * @module
 */
import { type ChainOptions, jacobianChain, vjpChain } from '../lib/chain.js';
import { Dense } from '../lib/layers/dense.js';
import { jacobianWrtInput } from '../lib/jacobian.js';
import { SEED_REFERENCE_SPLIT, seedReferenceModel, seededBatch } from '../lib/models.js';
import { type Loss, type LossSpec, lossFrom } from '../lib/losses.js';
import { Sequential } from '../lib/sequential.js';
import type { PoolGradients } from '../lib/train.js';
import { type Tensor, tensor } from '../lib/tensor.js';

/** A detected feature, or why it is missing. */
export type Feature<T> = { supported: true; what: string; run: T } | { supported: false; reason: string };

/** One training step on every core: forward, loss, backward of a split model. */
export type MultiCoreStep = (stages: readonly Sequential[], x: Tensor, yTrue: Tensor, loss: string) => Promise<unknown>;

/**
 * The multi-core VJP step: the worker pool of `jacobian-chain/node` (`createPool`, fixed shards
 * of the batch so that any thread count gives the same bits), over the stages joined into one
 * model. The pool is created once per model (workers boot outside the timed region); the step is
 * `pool.gradients`: shards forward, the loss on the whole prediction, shards backward, the
 * shards' cotangents summed in shard order. The bench checks its gradients against vjpChain's
 * before timing it. `close()` ends the workers.
 */
export async function multiCoreStep(threads: number): Promise<Feature<MultiCoreStep> & { close?: () => Promise<void> }> {
  const node = (await import('../lib/node.js')) as Record<string, unknown>;
  if (typeof node.createPool !== 'function') {
    return { supported: false, reason: `no multi-core path in this build (jacobian-chain/node exports ${Object.keys(node).sort().join(', ')}; none is createPool)` };
  }
  const createPool = node.createPool as (m: Sequential, o: { threads: number }) => Promise<{ gradients(x: Tensor, y: Tensor, l: Loss, o: { training: boolean; seed: number }): Promise<PoolGradients>; close(): Promise<void> }>;
  const pools = new Map<readonly Sequential[], Awaited<ReturnType<typeof createPool>>>();
  const run: MultiCoreStep = async (stages, x, yTrue, loss) => {
    let pool = pools.get(stages);
    if (!pool) {
      pool = await createPool(Sequential.concat([...stages]), { threads });
      pools.set(stages, pool);
    }
    return pool.gradients(x, yTrue, lossFrom(loss as LossSpec), { training: false, seed: 0 });
  };
  return {
    supported: true,
    what: `createPool(model, { threads: ${threads} }).gradients (jacobian-chain/node)`,
    run,
    close: async () => {
      for (const p of pools.values()) await p.close();
      pools.clear();
    },
  };
}

/** max |a − b| / max |b| (Infinity when the lengths differ, so a truncated result never passes a check). */
export function maxRelDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let d = 0;
  let s = 0;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i] - b[i]));
    s = Math.max(s, Math.abs(b[i]));
  }
  return d / (s || 1);
}

/** The streamed explicit chain's options, when `jacobianChain` honours `streamed: true`. */
export type StreamedChain = (stages: readonly Sequential[], x: Tensor, yTrue: Tensor, loss: string, opts: ChainOptions) => unknown;

/**
 * The streamed explicit mode: `jacobianChain(stages, x, y, loss, { streamed: true })`. Supported
 * when, on the seed's small model, the option changes what the chain holds (a streamed chain
 * cannot report the materialized Jacobians of the default one: an ignored option would) and the
 * gradients still agree with the VJP chain's to 1e-10 (a streamed mode that is wrong is refused
 * here, loudly, rather than timed).
 */
export async function streamedSupport(): Promise<Feature<StreamedChain>> {
  const stages = seedReferenceModel().split(SEED_REFERENCE_SPLIT.slice());
  const { x, y } = seededBatch([10, 10, 1], { batch: 2, seed: 0 });
  const opts = { streamed: true } as ChainOptions;
  let streamed;
  try {
    streamed = jacobianChain(stages, x, y, 'mse', opts);
  } catch (e) {
    return { supported: false, reason: `no streamed mode in this build (jacobianChain with { streamed: true } threw ${e instanceof Error ? e.message : String(e)})` };
  }
  const plain = jacobianChain(stages, x, y, 'mse');
  const records = (r: typeof plain) => JSON.stringify(r.memory.map((m) => m.jacobians));
  if (records(streamed) === records(plain)) return { supported: false, reason: 'no streamed mode in this build (jacobianChain accepts { streamed: true } but holds the same Jacobians as without it)' };
  const ref = await vjpChain(stages, x, y, 'mse');
  const a = streamed.dLoss_dWeights.flat().filter((g) => g !== null);
  const b = ref.dLoss_dWeights.flat().filter((g) => g !== null);
  const worst = Math.max(...a.map((g, k) => maxRelDiff(g.data, b[k].data)));
  if (!(worst <= 1e-10)) throw new Error(`bench: the streamed explicit chain disagrees with the VJP chain on the seed's model: max relative difference ${worst} > 1e-10`);
  return { supported: true, what: 'jacobianChain(…, { streamed: true })', run: (st, xx, yy, loss, o) => jacobianChain(st, xx, yy, loss, { ...o, streamed: true } as ChainOptions) };
}

/** `mode: 'auto'` for a dense Jacobian: supported when the builder accepts it and returns a dense result equal to the forward mode's. */
export function autoDenseSupport(): Feature<true> {
  const d = new Dense({ units: 2 }).build([3]);
  const x = tensor([1, 2, 3], [1, 3]);
  try {
    const J = jacobianWrtInput(d, x, { mode: 'auto' });
    const F = jacobianWrtInput(d, x);
    if (J.format !== 'dense') return { supported: false, reason: `mode 'auto' returned a ${J.format} Jacobian where a dense one was asked for` };
    if (maxRelDiff(J.values.data, F.values.data) > 1e-12) throw new Error(`bench: mode 'auto' disagrees with forward mode on a Dense layer (max relative difference ${maxRelDiff(J.values.data, F.values.data)})`);
    return { supported: true, what: "jacobianWrtInput / jacobianWrtWeights with { mode: 'auto' }", run: true };
  } catch (e) {
    if (e instanceof Error && e.message.startsWith('bench:')) throw e;
    return { supported: false, reason: `no mode 'auto' for dense Jacobians in this build (${e instanceof Error ? e.message : String(e)})` };
  }
}

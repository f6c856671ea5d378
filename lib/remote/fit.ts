/**
 * Split training across processes (issue #15): {@link fitRemote} trains local upstream stages and
 * the downstream stages of a {@link RemoteStageRunner} as one model, batch for batch as `fit` does
 * in one process (the same shuffles, the same step seeds, so the same Dropout masks, the same
 * optimizer steps): by the VJP way, so that N steps give bit-identical weights, or by the explicit
 * way (the seed's method), the local stages' Jacobians contracted with the dLoss/dOut that comes
 * back, or with the server's batch Jacobian shipped instead and contracted here.
 * Pipelined in micro-batches (`microBatches`, the VJP way), the weights are equal to summation rounding.
 * @module
 */
import { type ChainOptions, LocalStageRunner, contractInputJacobian, explicitStageBackward, fromMessage, recordStages, toMessage, vjpChain } from '../chain.js';
import { estimateMemory, guardExplicitWay } from '../memory-report.js';
import { getMemoryBudget } from '../memory.js';
import { ConfigError, fmtShape, fmtValue } from '../errors.js';
import { firstNonFinite } from '../forensics.js';
import { type Loss, type LossSpec, lossFrom } from '../losses.js';
import type { Differentiable } from '../layers/layer.js';
import { type OptimizerConfig, optimizerFromConfig } from '../optimizers.js';
import { Rng } from '../rng.js';
import { Sequential } from '../sequential.js';
import { type Dataset, checkDataset, correctCount, stepSeed, takeRows } from '../train.js';
import { type Tensor, assertFinite, assertShape, axpy, bytesOf, contiguous, copy, dtypeOf, zeros } from '../tensor.js';
import type { RemoteStageRunner, ServerHeld, WireTraffic } from './client.js';
import { type CheckpointOptions, type CheckpointSlots, type CheckpointTensor, checkCheckpointOptions, listCheckpoints, paramsFromCheckpoint, paramsToCheckpoint, readCheckpoint, writeCheckpoint } from './checkpoint.js';
import { RemoteError } from './wire.js';

/** What the client's checkpoint holds besides the weights and the optimizer's slots. */
interface ClientCheckpoint {
  /** The stages' names, to refuse another model's checkpoint. */
  stages: string[];
  seed: number;
  /** Epoch in progress (1-based) and the next batch in it (0-based; `batches` when the epoch's steps are all done). */
  epoch: number;
  nextBatch: number;
  /** The epoch's order of examples, and the shuffle generator's state after drawing it. */
  order: number[];
  rng: [number, number, number, number];
  /** The epoch's running sums, and the finished epochs. */
  lossSum: number;
  correct: number;
  seen: number;
  history: RemoteEpochLog[];
  weights: CheckpointTensor[];
  slots: (CheckpointSlots | null)[];
}

/** Options of {@link fitRemote}: `fit`'s, less what needs the whole model in one process. */
export interface RemoteFitOptions {
  /** A loss or its Keras name, computed here, where the labels are. */
  loss: LossSpec;
  /** The local stages' optimizer; the server's was sent when the runner connected (the same config gives `fit`'s steps). */
  optimizer: OptimizerConfig;
  /** Passes over the data; default 1. */
  epochs?: number;
  /** Examples per step; default 32. */
  batchSize?: number;
  /** Reshuffle every epoch; default true. */
  shuffle?: boolean;
  /** Seeds the shuffles and the Dropout masks; default 0. */
  seed?: number;
  /** Forward in training mode (Dropout active); default true. */
  training?: boolean;
  /**
   * Where the labels are: `here` (the default; `data.y`, the loss computed here by `vjpChain`) or
   * `server` (the server holds them, row for row with `data.x`; each step names its examples by
   * index and gets back the loss and the cotangent, and `data.y` is not needed).
   */
  labels?: 'here' | 'server';
  /**
   * How the backward pass crosses: `vjp` (the default; the cotangent crosses and every stage runs its
   * reverse pass) or `jacobian` (the seed's explicit way: the local stages' Jacobians are built and
   * contracted with the dLoss/dOut that comes back, as `fit` with `method: 'jacobian'` does).
   */
  method?: 'vjp' | 'jacobian';
  /**
   * With `method: 'jacobian'`: the server ships its stages' batch Jacobians dOut_s/dIn_s instead of
   * the cotangent; they are contracted here with dLoss/dY, and dLoss/dOut_s goes back for the server
   * to contract its weights' Jacobians with (RPCs Jacobian and BackwardWeights). What the seed's
   * method would send over a network. Not with `labels: 'server'`. Default false.
   */
  shipJacobian?: boolean;
  /** With `method: 'jacobian'`: the local stages' Jacobians streamed (`ChainOptions.streamed`). Default false. */
  streamed?: boolean;
  /** The id of the first step on the wire; default 0 (a resumed run continues the server's count). */
  firstStepId?: number;
  /**
   * Checkpoint the local weights, the optimizer's state, the step count, the data order (the
   * shuffle generator's state and the epoch's order) and the epoch's running sums every `every`
   * steps into `dir`, atomically. When `dir` holds a checkpoint, training resumes from the newest
   * (the server, started with its own checkpoint folder, is rolled back or forward to the same
   * step) and ends bit-identical to an uninterrupted run. Step ids then start at 0.
   */
  checkpoint?: CheckpointOptions;
  /**
   * Pipelining (GPipe-style): cut each batch into this many micro-batches (fewer when a batch has
   * fewer rows). The local forward of micro-batch k+1 runs while micro-batch k is on the wire and
   * on the server; the loss and its cotangent are computed on the whole batch, as `fit` computes
   * them; then every micro-batch's cotangent goes back at once, and each `dx` is pulled through
   * the local stages while the server works on the next. Both sides sum their micro-batches'
   * weight gradients in micro-batch order and step once. The weights then agree with `fit`'s to
   * summation rounding (the sum over the batch is grouped by micro-batch), not bit for bit.
   * Labels here only; not with a layer that couples the samples (BatchNormalization in training).
   * Default 1: the unpipelined step, bit-identical to `fit`.
   */
  microBatches?: number;
  /** Called after each step with its loss and what crossed the wire. */
  onStep?: (info: RemoteStepInfo) => void;
}

/** What {@link RemoteFitOptions.onStep} receives. */
export interface RemoteStepInfo {
  /** Step id on the wire. */
  stepId: number;
  /** Epoch (1-based) and batch within it (1-based). */
  epoch: number;
  /** Batch within the epoch, 1-based. */
  batch: number;
  /** Batches in an epoch. */
  batches: number;
  /** The batch's loss before the update. */
  loss: number;
  /** What crossed the wire in this step, and the server's compute. */
  wire: WireTraffic;
  /** Milliseconds of this step spent computing here: the step's wall time less its round trips, or, pipelined (calls overlap), the local sections timed one by one. */
  localComputeMs: number;
  /**
   * Bytes each side held for the step: here, the local stages' residuals, cotangents (VJP way) or
   * Jacobians (explicit way; with the Jacobian shipped, the received one too) and weight gradients;
   * there, what the server reported.
   */
  held: {
    /** Bytes held here, all told. */
    here: number;
    /** What the server held, by kind. */
    there: ServerHeld
  };
  /** Wall time of the step. */
  stepMs: number;
}

/** One epoch of {@link fitRemote}. */
export interface RemoteEpochLog {
  /** Epoch number, 1-based. */
  epoch: number;
  /** Mean training loss over the epoch (example-weighted). */
  loss: number;
  /** Mean training accuracy over the epoch. */
  accuracy: number;
}

/** What {@link fitRemote} returns. */
export interface RemoteFitResult {
  /** Steps applied on both sides. */
  steps: number;
  /** The step count of the checkpoint this run resumed from, or null for a run from the start. */
  resumedFrom: number | null;
  /** Per epoch, the example-weighted mean loss and accuracy. */
  history: RemoteEpochLog[];
  /** Why training stopped early (a non-finite loss or gradient, before its update), or null. */
  stopped: string | null;
}

/**
 * Trains `local` (the upstream stages, from `model.split`) and `remote` (the stages after them)
 * as one model: each step runs `vjpChain([...local, remote], x, y, loss)` (the cotangent crosses
 * the wire), or with `method: 'jacobian'` the explicit way (the local stages' Jacobians contracted
 * with the dLoss/dOut that comes back, or with `shipJacobian` the server's batch Jacobians
 * contracted here), then the server applies its step, then the local stages step. The server's step
 * comes first so that a lost Apply reply can be retried (same step id, applied once) before
 * anything here moves.
 * @example
 * const [model_0, model_1] = loadModelFile('m.json').split([3]); // model_1 is what the server hosts
 * const remote = await RemoteStageRunner.connect({ address: '127.0.0.1:50051' }, { name: 'sgd', learning_rate: 0.1, momentum: 0.9 });
 * const res = await fitRemote([model_0], remote, { x, y }, { loss: 'binary_crossentropy', optimizer: { name: 'sgd', learning_rate: 0.1, momentum: 0.9 }, batchSize: 4 });
 */
export async function fitRemote(local: readonly Sequential[], remote: RemoteStageRunner, data: Dataset | { x: Tensor }, opts: RemoteFitOptions): Promise<RemoteFitResult> {
  if (!Array.isArray(local) || local.length === 0 || local.some((s) => !(s instanceof Sequential))) throw new ConfigError(`fitRemote: expected a non-empty array of local stages (Sequential), received ${fmtValue(local)}`);
  const last = local[local.length - 1];
  const first = remote.stages[0];
  if (last.layerOffset + last.layers.length !== first.firstLayer || fmtShape(last.outputShape) !== fmtShape(first.inputShape)) {
    throw new ConfigError(`fitRemote: the local stages end at layer ${last.layerOffset + last.layers.length} with output ${fmtShape(last.outputShape)}, but the server's ${first.name} starts at layer ${first.firstLayer} with input ${fmtShape(first.inputShape)}; expected the server to host the stages right after the local ones`);
  }
  if (last.dtype !== remote.dtype) throw new ConfigError(`fitRemote: the local stages are ${last.dtype}, the server's ${remote.dtype}; expected one dtype`);
  const lossFn = lossFrom(opts.loss);
  const epochs = positiveInt(opts.epochs ?? 1, 'epochs');
  const batchSize = positiveInt(opts.batchSize ?? 32, 'batchSize');
  const seed = opts.seed ?? 0;
  if (!Number.isInteger(seed)) throw new ConfigError(`fitRemote: expected seed to be an integer, received ${fmtValue(seed)}`);
  const firstStepId = opts.firstStepId ?? 0;
  if (!Number.isSafeInteger(firstStepId) || firstStepId < 0) throw new ConfigError(`fitRemote: expected firstStepId to be a non-negative integer, received ${fmtValue(opts.firstStepId)}`);
  const optimizer = optimizerFromConfig(opts.optimizer);
  const labelsThere = opts.labels === 'server';
  if (opts.labels !== undefined && opts.labels !== 'here' && !labelsThere) throw new ConfigError(`fitRemote: expected labels to be "here" or "server", received ${fmtValue(opts.labels)}`);
  const method = opts.method ?? 'vjp';
  if (method !== 'vjp' && method !== 'jacobian') throw new ConfigError(`fitRemote: expected method to be "vjp" or "jacobian", received ${fmtValue(opts.method)}`);
  for (const key of ['shipJacobian', 'streamed'] as const) {
    const v = opts[key];
    if (v !== undefined && typeof v !== 'boolean') throw new ConfigError(`fitRemote: expected ${key} to be a boolean, received ${fmtValue(v)}`);
    if (v && method !== 'jacobian') throw new ConfigError(`fitRemote: ${key} is a way of the explicit method; expected method 'jacobian' with ${key}, received method ${fmtValue(method)}`);
  }
  const ship = opts.shipJacobian === true;
  // The labels are where dLoss/dY is made: a Jacobian shipped to a client without them could not be contracted.
  if (ship && labelsThere) throw new ConfigError("fitRemote: shipJacobian sends the server's Jacobian to be contracted with dLoss/dY where the labels are; expected labels 'here' with shipJacobian, received labels 'server'");
  const microBatches = positiveInt(opts.microBatches ?? 1, 'microBatches');
  if (microBatches > 1) {
    // The explicit way's Jacobians are built per batch on both sides: there is no micro-batch of them to overlap.
    if (method !== 'vjp') throw new ConfigError(`fitRemote: expected microBatches 1 with method 'jacobian' (micro-batches pipeline the VJP way), received ${microBatches}`);
    if (labelsThere) throw new ConfigError(`fitRemote: expected microBatches 1 with labels on the server (its loss takes the whole batch in one ForwardLoss), received ${microBatches}`);
    const refusal = microBatchRefusal(local, opts.training ?? true);
    if (refusal) throw new ConfigError(`fitRemote: ${refusal}`);
  }
  if (labelsThere) {
    assertShape(data?.x, [null, ...local[0].inputShape], 'fitRemote data x');
    assertFinite(data.x, 'fitRemote data x');
    if (remote.labels !== data.x.shape[0]) throw new ConfigError(`fitRemote: expected the server to hold one label per example (${data.x.shape[0]}), received a server holding ${remote.labels}`);
  } else {
    checkDataset({ inputShape: local[0].inputShape, outputShape: remote.outputShape }, data as Dataset);
  }

  const N = data.x.shape[0];
  // The local stages' Jacobians (a tangent block, the tapes' residuals) against the budget, from shapes, before the first step: fit's guard.
  if (method === 'jacobian') guardExplicitWay(estimateMemory([...local], Math.min(batchSize, N), { training: opts.training ?? true }), getMemoryBudget(), { streamed: opts.streamed });
  const batches = Math.ceil(N / batchSize);
  // fit's generator, drawn the same way, so the batches are fit's.
  const shuffleRng = new Rng(seed);
  let history: RemoteFitResult['history'] = [];
  let step = 0;
  const localLayers = local.flatMap((s) => s.layers);
  const localParams = localLayers.flatMap((l) => l.params);
  const names = [...local.map((s) => s.name), ...remote.stages.map((s) => s.name)];
  const cp = opts.checkpoint === undefined ? null : checkCheckpointOptions(opts.checkpoint, 'fitRemote');
  if (cp && firstStepId !== 0) throw new ConfigError(`fitRemote: with checkpoint, step ids start at 0 (the step count both sides save); received firstStepId ${firstStepId}`);
  let resumed: ClientCheckpoint | null = null;
  let resumedFrom: number | null = null;
  if (cp) {
    const saved = listCheckpoints(cp.dir, 'client');
    if (saved.length > 0) {
      resumedFrom = saved[saved.length - 1];
      resumed = readCheckpoint<ClientCheckpoint>(cp.dir, 'client', resumedFrom);
      if (resumed.stages.join('+') !== names.join('+') || resumed.seed !== seed || resumed.order.length !== N) {
        throw new ConfigError(`fitRemote: the checkpoint at step ${resumedFrom} in ${JSON.stringify(cp.dir)} is of stages ${resumed.stages.join('+')}, seed ${resumed.seed}, ${resumed.order.length} examples; expected ${names.join('+')}, seed ${seed}, ${N} examples`);
      }
      paramsFromCheckpoint(localParams, optimizer, resumed, `fitRemote checkpoint at step ${resumedFrom}`);
      shuffleRng.setState(resumed.rng);
      history = resumed.history;
      step = resumedFrom;
    }
    // The server meets us at our step: rolled back to its own checkpoint there if it went further.
    await remote.resume(step, opts.optimizer);
  }
  for (let epoch = resumed ? resumed.epoch : 1; epoch <= epochs; epoch++) {
    const fromCheckpoint = resumed !== null && epoch === resumed.epoch;
    const order = fromCheckpoint ? resumed!.order : opts.shuffle === false ? Array.from({ length: N }, (_, i) => i) : Array.from(shuffleRng.permutation(N));
    let lossSum = fromCheckpoint ? resumed!.lossSum : 0;
    let correct = fromCheckpoint ? resumed!.correct : 0;
    let seen = fromCheckpoint ? resumed!.seen : 0;
    for (let b = fromCheckpoint ? resumed!.nextBatch : 0; b < batches; b++) {
      const t0 = performance.now();
      const idx = order.slice(b * batchSize, Math.min(N, (b + 1) * batchSize));
      const x = takeRows(data.x, idx);
      const chainOpts: ChainOptions = { training: opts.training ?? true, seed: stepSeed(seed, step), streamed: opts.streamed };
      const stepId = firstStepId + step;
      remote.beginStep(stepId, chainOpts);
      remote.takeTraffic();
      const stop = (why: string): RemoteFitResult => ({ steps: step, resumedFrom, history, stopped: `non-finite ${why} at epoch ${epoch}, batch ${b + 1} (step ${stepId}); training stopped before the update` });
      let res: { loss: number; correct: number; dLoss_dWeights: (Tensor | null)[][]; heldHere: number; localMs?: number };
      if (method === 'jacobian') {
        let out;
        try {
          out = await explicitRemoteStep(local, remote, x, labelsThere ? idx : takeRows((data as Dataset).y, idx), lossFn, chainOpts, ship);
        } catch (e) {
          if (e instanceof RemoteError && /the loss is/.test(e.message)) return stop(`loss on the server (${e.message})`);
          throw e;
        }
        if (typeof out === 'string') return stop(out);
        res = out;
      } else if (labelsThere) {
        // vjpChain's steps, with the loss where the labels are.
        const runners = local.map((s) => new LocalStageRunner(s, chainOpts));
        let h = toMessage(x);
        for (const r of runners) h = await r.forward(h);
        let there;
        try {
          there = await remote.forwardLoss(h, idx);
        } catch (e) {
          if (e instanceof RemoteError && /the loss is/.test(e.message)) return stop(`loss on the server (${e.message})`);
          throw e;
        }
        let g = there.dx;
        for (let s = runners.length - 1; s >= 0; s--) g = await runners[s].backward(g);
        const grads = await Promise.all(runners.map((r) => r.gradients()));
        res = { loss: there.loss, correct: there.correct, dLoss_dWeights: grads.flatMap((layers) => layers.map((ps) => ps.map((m) => (m === null ? null : fromMessage(m, 'gradient'))))), heldHere: heldBy(await Promise.all(runners.map((r) => r.memory()))) };
      } else if (microBatches > 1 && idx.length > 1) {
        res = await pipelinedStep(local, remote, x, takeRows((data as Dataset).y, idx), lossFn, chainOpts, Math.min(microBatches, idx.length));
      } else {
        const y = takeRows((data as Dataset).y, idx);
        const chain = await vjpChain([...local.map((s) => new LocalStageRunner(s, chainOpts)), remote], x, y, lossFn, chainOpts);
        res = { loss: chain.loss, correct: correctCount(y, chain.stageOutputs[chain.stageOutputs.length - 1]), dLoss_dWeights: chain.dLoss_dWeights, heldHere: heldBy(chain.memory.slice(0, local.length)) };
      }
      if (!Number.isFinite(res.loss)) return stop(`loss (${res.loss})`);
      const remoteFinite = remote.gradientsFinite;
      if (!remoteFinite.ok) return stop(`gradient on the server: ${remoteFinite.where}`);
      for (let i = 0; i < localLayers.length; i++) {
        for (let k = 0; k < localLayers[i].params.length; k++) {
          const g = res.dLoss_dWeights[i][k];
          const bad = g === null ? null : firstNonFinite(g);
          if (bad) return stop(`gradient of ${localLayers[i].name}.${localLayers[i].params[k].name}: ${bad.value} at [${bad.index.join(', ')}]`);
        }
      }
      await remote.apply();
      localLayers.forEach((l, i) => optimizer.step(l.params, res.dLoss_dWeights[i]));
      step++;
      lossSum += res.loss * idx.length;
      correct += res.correct;
      seen += idx.length;
      if (cp && step % cp.every === 0) {
        writeCheckpoint(cp, 'client', step, { stages: names, seed, epoch, nextBatch: b + 1, order, rng: shuffleRng.state(), lossSum, correct, seen, history, ...paramsToCheckpoint(localParams, optimizer) } satisfies Omit<ClientCheckpoint, 'weights' | 'slots'> & object);
      }
      const wire = remote.takeTraffic();
      const stepMs = performance.now() - t0;
      opts.onStep?.({ stepId, epoch, batch: b + 1, batches, loss: res.loss, wire, localComputeMs: res.localMs ?? Math.max(0, stepMs - wire.wireMs - wire.remoteComputeMs), stepMs, held: { here: res.heldHere, there: remote.serverHeld } });
    }
    history.push({ epoch, loss: lossSum / seen, accuracy: correct / seen });
  }
  return { steps: step, resumedFrom, history, stopped: null };
}

/** Bytes the stages' records say they held: residuals, cotangents, Jacobians, gradients. */
function heldBy(records: readonly { residualBytes: number; cotangentBytes: number; gradientBytes: number; jacobians?: readonly { bytes: number }[] }[]): number {
  return records.reduce((n, m) => n + m.residualBytes + m.cotangentBytes + m.gradientBytes + (m.jacobians ?? []).reduce((k, j) => k + j.bytes, 0), 0);
}

/**
 * One step by the explicit way across the wire: the local stages forward on their own tapes, the
 * server's forward (and the loss here, or there with the labels), then dLoss/dOut of the last
 * local stage, either sent back by the server as a cotangent (its stages run their reverse pass)
 * or, with `ship`, contracted here from the server's shipped batch Jacobians (dLoss/dOut_s going
 * back for its weights); then, last local stage first, each local stage's Jacobians contracted with
 * the dLoss/dOut at its output by the seed's helpers. A non-finite loss answers why, before any
 * backward pass.
 */
async function explicitRemoteStep(local: readonly Sequential[], remote: RemoteStageRunner, x: Tensor, labels: Tensor | number[], lossFn: Loss, chainOpts: ChainOptions, ship: boolean): Promise<string | { loss: number; correct: number; dLoss_dWeights: (Tensor | null)[][]; heldHere: number }> {
  const tapes = recordStages(local, x, chainOpts);
  const h = toMessage(tapes[tapes.length - 1].output);
  let loss: number;
  let correct: number;
  let dLoss_dOut: Tensor;
  let heldHere = 0;
  if (Array.isArray(labels)) {
    const there = await remote.forwardLoss(h, labels);
    ({ loss, correct } = there);
    dLoss_dOut = fromMessage(there.dx, 'dLoss/dOut');
  } else {
    const yPred = fromMessage(await remote.forward(h), `${remote.name} output`);
    loss = lossFn.value(labels, yPred);
    if (!Number.isFinite(loss)) return `loss (${loss})`;
    correct = correctCount(labels, yPred);
    const dLoss_dY = lossFn.gradient(labels, yPred);
    if (ship) {
      const shipped = await remote.jacobians();
      // The seed's loop over the server's stages, run here: the last one first.
      const douts: Tensor[] = new Array(shipped.length);
      let g = dLoss_dY;
      for (let s = shipped.length - 1; s >= 0; s--) {
        douts[s] = g;
        g = contractInputJacobian(shipped[s].J, shipped[s].coupled, g);
        heldHere += bytesOf(shipped[s].J);
      }
      await remote.backwardWeights(douts);
      dLoss_dOut = g;
    } else {
      dLoss_dOut = fromMessage(await remote.backward(toMessage(dLoss_dY)), 'dLoss/dOut');
    }
  }
  const dLoss_dWeights: (Tensor | null)[][][] = new Array(local.length);
  for (let s = local.length - 1; s >= 0; s--) {
    const step = explicitStageBackward(local[s], tapes[s], dLoss_dOut, s, s > 0, chainOpts);
    dLoss_dWeights[s] = step.dLoss_dWeights;
    heldHere += heldBy([step.memory]);
    if (step.dLoss_dIn) dLoss_dOut = step.dLoss_dIn;
  }
  return { loss, correct, dLoss_dWeights: dLoss_dWeights.flat(), heldHere };
}

/**
 * One step cut into `m` micro-batches, GPipe's schedule: every forward first (each micro-batch's
 * Forward sent as soon as its local pass is done, so the next local pass overlaps it), the loss on
 * the whole batch, then every backward (all cotangents sent at once, each `dx` pulled through the
 * local stages as it arrives). Returns the loss, the right count and the local gradients summed
 * in micro-batch order; the server sums its own at Apply.
 */
async function pipelinedStep(local: readonly Sequential[], remote: RemoteStageRunner, x: Tensor, y: Tensor, lossFn: Loss, chainOpts: ChainOptions, m: number): Promise<{ loss: number; correct: number; dLoss_dWeights: (Tensor | null)[][]; heldHere: number; localMs: number }> {
  const B = x.shape[0];
  // Timed section by section: with calls overlapping, the step's wall time less its round trips says nothing.
  let localMs = 0;
  let t = performance.now();
  const lap = () => {
    localMs += performance.now() - t;
  };
  const starts = Array.from({ length: m + 1 }, (_, k) => Math.floor((k * B) / m));
  const rowsOf = (k: number) => Array.from({ length: starts[k + 1] - starts[k] }, (_, r) => starts[k] + r);
  const runners: LocalStageRunner[][] = [];
  const outputs: Promise<Tensor>[] = [];
  for (let k = 0; k < m; k++) {
    // Each micro-batch draws its rows of the whole batch's Dropout masks: fit's masks.
    const rs = local.map((st) => new LocalStageRunner(st, { ...chainOpts, batchSlice: { start: starts[k], total: B } }));
    t = performance.now();
    let h = toMessage(takeRows(x, rowsOf(k)));
    for (const r of rs) h = await r.forward(h);
    lap();
    runners.push(rs);
    outputs.push(settled(remote.forwardPart(fromMessage(h, 'local output'), { index: k, count: m, rowOffset: starts[k], batchRows: B })));
    // The call is written to the socket on a later turn of the event loop: let it go before the next local pass takes the thread.
    await new Promise((r) => setImmediate(r));
  }
  const parts = await Promise.all(outputs);
  t = performance.now();
  const yPred = concatRows(parts);
  const loss = lossFn.value(y, yPred);
  const dy = lossFn.gradient(y, yPred);
  lap();
  const backs = parts.map((_, k) => settled(remote.backwardPart(takeRows(dy, rowsOf(k)), k)));
  let sum: (Tensor | null)[][] | null = null;
  for (let k = 0; k < m; k++) {
    const back = await backs[k];
    t = performance.now();
    let g = toMessage(back.dx);
    const rs = runners[k];
    for (let s = rs.length - 1; s >= 0; s--) {
      // Stage 0's dLoss/dIn is nobody's cotangent, as in vjpChain.
      if (s === 0) await rs[s].backwardParams(g);
      else g = await rs[s].backward(g);
    }
    const grads = (await Promise.all(rs.map((r) => r.gradients()))).flatMap((layers) => layers.map((ps) => ps.map((t) => (t === null ? null : fromMessage(t, 'gradient')))));
    if (sum === null) sum = grads.map((ps) => ps.map((g0) => (g0 === null ? null : copy(g0))));
    else sum.forEach((ps, i) => ps.forEach((s, j) => s !== null && axpy(s, 1, grads[i][j]!)));
    lap();
  }
  const heldHere = heldBy(await Promise.all(runners.flat().map((r) => r.memory())));
  return { loss, correct: correctCount(y, yPred), dLoss_dWeights: sum!, heldHere, localMs };
}

/** `p`, marked as handled: when an earlier call of the step fails and is thrown, the later ones' refusals must not crash the process as unhandled. */
function settled<T>(p: Promise<T>): Promise<T> {
  p.catch(() => undefined);
  return p;
}

/** The rows of `parts` one under the other: `[Σb, ...]`. */
function concatRows(parts: readonly Tensor[]): Tensor {
  const rows = parts.reduce((n, t) => n + t.shape[0], 0);
  const out = zeros([rows, ...parts[0].shape.slice(1)], dtypeOf(parts[0]));
  let at = 0;
  for (const t of parts) {
    const c = contiguous(t);
    out.data.set(c.data.subarray(c.offset, c.offset + c.size), at);
    at += c.size;
  }
  return out;
}

/**
 * Why `stages` cannot be cut into micro-batches (a layer that couples the samples of a batch, or
 * noise that cannot be drawn by rows), or null when they can.
 * @example
 * microBatchRefusal(model.split([3]), true); // null for Conv2D, Dropout, Dense
 */
export function microBatchRefusal(stages: readonly Sequential[], training: boolean): string | null {
  for (const st of stages) {
    for (const [i, layer] of st.layers.entries()) {
      const l: Differentiable = layer;
      if (l.samplesIndependent?.({ training }) === false) return `layer ${st.layerOffset + i} (${layer.describe()}) couples the samples of a batch in ${training ? 'training' : 'inference'} (batch statistics), so a micro-batch cannot compute its part alone; expected micro-batches 1 for this model`;
      if (training && l.stochastic && !l.batchSliced) return `layer ${st.layerOffset + i} (${layer.describe()}) draws noise in training but cannot draw its rows of the whole batch's, so micro-batches would draw other noise than the batch; expected micro-batches 1 for this model`;
    }
  }
  return null;
}

function positiveInt(v: unknown, key: string): number {
  if (!Number.isInteger(v) || (v as number) <= 0) throw new ConfigError(`fitRemote: expected ${key} to be a positive integer, received ${fmtValue(v)}`);
  return v as number;
}

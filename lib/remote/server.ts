/**
 * The stage server of split learning over gRPC (issue #15): hosts the downstream stages of a split
 * model behind `proto/stage.proto`'s `Stage` service. Forward records a pass through the hosted
 * stages, each on its own tape (as `vjpChain` runs them in one process); Backward feeds the
 * cotangent `dy` in and answers `dx`, keeping the weight gradients; Apply steps the server's own
 * optimizer, once per step id however often it is asked. For the explicit way with the Jacobian
 * shipped, Jacobian answers each hosted stage's batch Jacobian dOut/dIn of the recorded pass and
 * BackwardWeights contracts the stages' weight Jacobians with the dLoss/dOut the client sends.
 * Every incoming tensor is checked before a tensor is made of it, and a refused call leaves the
 * server serving.
 * @module
 */
import * as grpc from '@grpc/grpc-js';
import { LocalStageRunner, explicitStageBackward, fromMessage, inputJacobian, toMessage } from '../chain.js';
import { estimateMemory, guardExplicitWay } from '../memory-report.js';
import { fmtBytes, getMemoryBudget } from '../memory.js';
import type { GradientTape } from '../tape.js';
import { checkShippedJacobian } from './explicit.js';
import { ConfigError, JacobianChainError, fmtShape, fmtValue } from '../errors.js';
import { type Optimizer, type OptimizerConfig, optimizerFromConfig } from '../optimizers.js';
import { Sequential } from '../sequential.js';
import { type Loss, type LossName, lossFrom } from '../losses.js';
import { type DType, type Tensor, assertFinite, assertShape, bytesOf, zeros } from '../tensor.js';
import { correctCount, takeRows } from '../train.js';
import { type CheckpointOptions, type CheckpointSlots, type CheckpointTensor, checkCheckpointOptions, listCheckpoints, paramsFromCheckpoint, paramsToCheckpoint, readCheckpoint, writeCheckpoint } from './checkpoint.js';
import type { Param } from '../layers/layer.js';
import { DEFAULT_MAX_MESSAGE_BYTES, type LoopbackAddress, RemoteError, TOKEN_KEY, type WireLayer, type WireTensor, checkLoopback, decodeTensor, encodeTensor, grpcAddress, stageService, tokenMatches } from './wire.js';

/** Options of {@link StageServer}. */
export interface StageServerOptions {
  /** A loopback host; default `127.0.0.1`. */
  host?: string;
  /** Port; 0 (the default) takes any free one ({@link StageServer.listen} says which). */
  port?: number;
  /** A shared token every call must carry (metadata `jc-token`); none by default. */
  token?: string;
  /** Largest message and largest tensor accepted, in bytes; also gRPC's `grpc.max_receive_message_length`. Default 64 MiB. */
  maxMessageBytes?: number;
  /** Where the per-step lines go (bytes in and out, compute time); default nowhere. */
  log?: (line: string) => void;
  /**
   * The labels `[N, ...out]` of the examples, when the server holds them: ForwardLoss computes the
   * loss here, from the rows the client names by index, and the labels never cross the wire.
   */
  labels?: Tensor;
  /**
   * Checkpoint the hosted weights, the optimizer's state and the applied-step record every
   * `every` applied steps into `dir` (atomically); a server started on a folder that holds
   * checkpoints resumes from the newest, and a resuming client can roll it back to an older one.
   */
  checkpoint?: CheckpointOptions;
  /** TLS: the server's certificate chain and private key, PEM; without it the wire is plaintext. */
  tls?: {
    /** The certificate chain, PEM. */
    cert: string | Buffer;
    /** Its private key, PEM. */
    key: string | Buffer
  };
}

/** What the server has recorded of the step in progress. */
interface StepState {
  stepId: number;
  training: boolean;
  seed: number;
  /** The input's bytes, to tell a retry (same bytes) from a client that reuses an id. */
  xBytes: Buffer;
  runners: LocalStageRunner[];
  forward: ForwardReply;
  dyBytes?: Buffer;
  backward?: BackwardReply;
  /** Per hosted layer, its parameters' gradients. */
  grads?: (Tensor | null)[][];
  nonFinite?: string;
  /** ForwardLoss: the example ids (joined) and the answer. */
  ids?: string;
  lossReply?: {
    step_id: number;
    loss: number;
    correct: number;
    dx: WireTensor;
    compute_ms: number;
    gradients_finite: boolean;
    non_finite: string;
  };
  /** The explicit way with the Jacobian shipped: Jacobian's answer, BackwardWeights' dLoss/dOut bytes and answer. */
  jacobianReply?: JacobianReply;
  doutBytes?: Buffer;
  weightsReply?: BackwardWeightsReply;
}

interface JacobianReply {
  step_id: number;
  stages: { dout_din: WireTensor; samples_coupled: boolean }[];
  compute_ms: number;
  residual_bytes: number;
  jacobian_bytes: number;
}

interface BackwardWeightsReply {
  step_id: number;
  compute_ms: number;
  gradients_finite: boolean;
  non_finite: string;
  residual_bytes: number;
  jacobian_bytes: number;
  gradient_bytes: number;
}

interface ForwardReply {
  step_id: number;
  y: WireTensor;
  compute_ms: number;
}

interface BackwardReply {
  step_id: number;
  dx: WireTensor;
  compute_ms: number;
  gradients_finite: boolean;
  non_finite: string;
  residual_bytes: number;
  cotangent_bytes: number;
  gradient_bytes: number;
}

/** Bytes in and out and milliseconds computed since the last step was applied, for the log line. */
interface Traffic {
  received: number;
  sent: number;
  computeMs: number;
}

/**
 * Hosts `stages` (consecutive stages of one model, from `model.split`, so that each keeps its
 * global layer offset and Dropout draws the masks a single-process run draws) on a loopback port.
 * @example
 * const stages = loadModelFile('m.json').split([3]);
 * const server = new StageServer(stages.slice(1), { token: 's3cret' });
 * const { port } = await server.listen(); // 127.0.0.1:port
 * // ... RemoteStageRunner.connect({ address: `127.0.0.1:${port}`, token: 's3cret' }, { name: 'adam' })
 * await server.close();
 */
export class StageServer {
  private readonly server: grpc.Server;
  private readonly maxBytes: number;
  private readonly dtype: DType;
  private optimizerJson: string | null = null;
  private optimizer: Optimizer | null = null;
  private loss: Loss | null = null;
  private lossName = '';
  private lastApplied = -1;
  private appliedSteps = 0;
  private current: StepState | null = null;
  private traffic: Traffic = { received: 0, sent: 0, computeMs: 0 };
  private bound: LoopbackAddress | null = null;
  private readonly checkpoint: Required<CheckpointOptions> | null;
  /** The step count of the checkpoint this server was started from, or null. */
  readonly resumedFrom: number | null = null;

  constructor(
    /** The hosted stages, in order. */
    readonly stages: readonly Sequential[],
    private readonly opts: StageServerOptions = {},
  ) {
    if (!Array.isArray(stages) || stages.length === 0 || stages.some((s) => !(s instanceof Sequential))) {
      throw new ConfigError(`StageServer: expected a non-empty array of stages (Sequential), received ${fmtValue(stages)}`);
    }
    stages.forEach((st, s) => {
      if (s === 0) return;
      const prev = stages[s - 1];
      if (prev.layerOffset + prev.layers.length !== st.layerOffset || fmtShape(prev.outputShape) !== fmtShape(st.inputShape)) {
        throw new ConfigError(`StageServer: expected consecutive stages, received ${prev.name} (layers from ${prev.layerOffset}, output ${fmtShape(prev.outputShape)}) then ${st.name} (layers from ${st.layerOffset}, input ${fmtShape(st.inputShape)})`);
      }
    });
    this.dtype = stages[0].dtype;
    const max = opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    if (!Number.isSafeInteger(max) || max <= 0 || max > 2 ** 31 - 1) throw new ConfigError(`StageServer: expected maxMessageBytes to be an integer in [1, 2^31 - 1], received ${fmtValue(opts.maxMessageBytes)}`);
    this.maxBytes = max;
    if (opts.token !== undefined && (typeof opts.token !== 'string' || opts.token === '')) throw new ConfigError(`StageServer: expected token to be a non-empty string, received ${fmtValue(opts.token)}`);
    checkLoopback(opts.host ?? '127.0.0.1', 'StageServer host');
    if (opts.labels !== undefined) {
      const out = stages[stages.length - 1].outputShape;
      assertShape(opts.labels, [null, ...out], 'StageServer labels');
      assertFinite(opts.labels, 'StageServer labels');
    }
    // The limit is gRPC's too, so an oversized message is refused from its length prefix, before it is read.
    this.checkpoint = opts.checkpoint === undefined ? null : checkCheckpointOptions(opts.checkpoint, 'StageServer');
    if (this.checkpoint) {
      const saved = listCheckpoints(this.checkpoint.dir, 'server');
      if (saved.length > 0) {
        this.restore(saved[saved.length - 1]);
        this.resumedFrom = saved[saved.length - 1];
      }
    }
    // The token is checked on the call's metadata, before gRPC reads a byte of the message: a caller
    // without it never gets a message parsed, a tensor decoded, or a size judged.
    const interceptors = opts.token === undefined ? [] : [tokenInterceptor(opts.token)];
    this.server = new grpc.Server({ 'grpc.max_receive_message_length': max, 'grpc.max_send_message_length': max, interceptors });
    this.server.addService(this.countingService(), {
      Open: this.unary('Open', (r) => this.open(r)),
      Forward: this.unary('Forward', (r) => this.forward(r)),
      Backward: this.unary('Backward', (r) => this.backward(r)),
      ForwardLoss: this.unary('ForwardLoss', (r) => this.forwardLoss(r)),
      Apply: this.unary('Apply', (r) => this.apply(r)),
      Gradients: this.unary('Gradients', (r) => this.gradients(r)),
      Weights: this.unary('Weights', (r) => this.weights(r)),
      Jacobian: this.unary('Jacobian', (r) => this.jacobian(r)),
      BackwardWeights: this.unary('BackwardWeights', (r) => this.backwardWeights(r)),
    });
  }

  /** Binds the loopback port; resolves to the address actually bound (port 0 picks a free one). */
  listen(): Promise<LoopbackAddress> {
    const host = this.opts.host ?? '127.0.0.1';
    return new Promise((resolve, reject) => {
      const tls = this.opts.tls;
      const creds = tls ? grpc.ServerCredentials.createSsl(null, [{ cert_chain: Buffer.from(tls.cert), private_key: Buffer.from(tls.key) }], false) : grpc.ServerCredentials.createInsecure();
      this.server.bindAsync(grpcAddress(host, this.opts.port ?? 0), creds, (err, port) => {
        if (err) return reject(new ConfigError(`StageServer: cannot listen on ${grpcAddress(host, this.opts.port ?? 0)} (${err.message})`));
        this.bound = { host, port };
        resolve(this.bound);
      });
    });
  }

  /** Stops serving: waits up to `graceMs` for calls in flight, then cuts them. */
  close(graceMs = 1000): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, graceMs);
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /** Steps applied so far. */
  get steps(): number {
    return this.appliedSteps;
  }

  /** Every hosted parameter, in order: what the optimizer's slots and a checkpoint are keyed by. */
  private get params(): Param[] {
    return this.stages.flatMap((s) => s.layers.flatMap((l) => l.params));
  }

  /** Writes the checkpoint of the steps applied so far. */
  private saveCheckpoint(): void {
    const cp = this.checkpoint!;
    writeCheckpoint(cp, 'server', this.appliedSteps, {
      stages: this.stages.map((s) => s.name),
      lastApplied: this.lastApplied,
      optimizer: this.optimizerJson,
      loss: this.lossName,
      ...paramsToCheckpoint(this.params, this.optimizer!),
    });
  }

  /** Restores the checkpoint at `steps`: weights, optimizer state, the applied-step record; the step in progress is dropped. */
  private restore(steps: number): void {
    const j = readCheckpoint<{ stages: string[]; lastApplied: number; optimizer: string; loss: string; weights: CheckpointTensor[]; slots: (CheckpointSlots | null)[] }>(this.checkpoint!.dir, 'server', steps);
    const names = this.stages.map((s) => s.name).join('+');
    if (!Array.isArray(j.stages) || j.stages.join('+') !== names) throw new ConfigError(`StageServer checkpoint at step ${steps}: expected stages ${names}, received ${fmtValue(j.stages)}`);
    if (this.optimizerJson !== null && this.optimizerJson !== j.optimizer) throw new ConfigError(`StageServer checkpoint at step ${steps}: saved with optimizer ${j.optimizer}, the session runs ${this.optimizerJson}`);
    const optimizer = optimizerFromConfig(JSON.parse(j.optimizer) as OptimizerConfig);
    paramsFromCheckpoint(this.params, optimizer, j, `StageServer checkpoint at step ${steps}`);
    this.optimizer = optimizer;
    this.optimizerJson = j.optimizer;
    this.lossName = j.loss;
    this.loss = j.loss === '' ? null : lossFrom(j.loss as LossName);
    this.lastApplied = j.lastApplied;
    this.appliedSteps = steps;
    this.current = null;
  }

  /** The service with byte counters around its (de)serializers: what crossed the wire, message by message. */
  private countingService(): grpc.ServiceDefinition {
    const out: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
    for (const [name, def] of Object.entries(stageService())) {
      out[name] = {
        ...def,
        // +5: gRPC's length-prefixed framing of every message.
        requestDeserialize: (b: Buffer) => {
          this.traffic.received += b.length + 5;
          return def.requestDeserialize(b);
        },
        responseSerialize: (v: unknown) => {
          const b = def.responseSerialize(v);
          this.traffic.sent += b.length + 5;
          return b;
        },
      };
    }
    return out;
  }

  /** A handler (the token was checked before the request was read, see {@link tokenInterceptor}): any error of `fn` becomes a status whose details quote it. */
  private unary<Req, Rep>(method: string, fn: (req: Req) => Rep | Promise<Rep>): grpc.handleUnaryCall<Req, Rep> {
    return (call, callback) => {
      Promise.resolve()
        .then(() => fn(call.request))
        .then(
          (rep) => callback(null, rep),
          (e: unknown) => {
            const code = e instanceof RemoteError ? e.code : e instanceof JacobianChainError ? grpc.status.INVALID_ARGUMENT : grpc.status.INTERNAL;
            const msg = e instanceof Error ? e.message : String(e);
            this.opts.log?.(`refused ${method}: ${msg}`);
            callback({ code, details: `${method}: ${msg}` });
          },
        );
    };
  }

  private stepIdOf(req: { step_id?: unknown }, method: string): number {
    const id = req?.step_id;
    if (typeof id !== 'number' || !Number.isSafeInteger(id) || id < 0) throw new RemoteError(`expected step_id to be a non-negative integer, received ${fmtValue(id)}`, grpc.status.INVALID_ARGUMENT);
    if (!this.optimizer) throw new RemoteError(`${method} of step ${id} before Open: expected Open (with the optimizer) first`, grpc.status.FAILED_PRECONDITION);
    return id;
  }

  private open(req: { step_id: number; optimizer_json: string; loss: string; resume: boolean; resume_steps: number }) {
    let config: unknown;
    try {
      config = JSON.parse(req.optimizer_json);
    } catch {
      throw new RemoteError(`expected optimizer_json to be JSON like {"name": "adam", "learning_rate": 0.001}, received ${fmtValue(req.optimizer_json)}`, grpc.status.INVALID_ARGUMENT);
    }
    const canonical = JSON.stringify(config);
    if (this.opts.labels && req.loss === '') throw new RemoteError('this server holds the labels: expected Open to name the loss, received none', grpc.status.INVALID_ARGUMENT);
    if (this.lossName !== '' && req.loss !== this.lossName) throw new RemoteError(`the session was opened with loss ${this.lossName}, received ${fmtValue(req.loss)}`, grpc.status.FAILED_PRECONDITION);
    if (req.loss !== '') this.loss = lossFrom(req.loss as LossName);
    this.lossName = req.loss;
    if (this.optimizerJson === null) {
      this.optimizer = optimizerFromConfig(config as OptimizerConfig);
      this.optimizerJson = canonical;
    } else if (this.optimizerJson !== canonical) {
      // Another optimizer would silently change the moments the applied steps built up.
      throw new RemoteError(`the session was opened with optimizer ${this.optimizerJson}, received ${canonical}`, grpc.status.FAILED_PRECONDITION);
    }
    let restored = false;
    if (req.resume && req.resume_steps !== this.appliedSteps) {
      const saved = this.checkpoint ? listCheckpoints(this.checkpoint.dir, 'server') : [];
      if (!saved.includes(req.resume_steps)) {
        throw new RemoteError(`cannot resume at step ${req.resume_steps}: this server has applied ${this.appliedSteps} steps and ${this.checkpoint ? `holds checkpoints at ${saved.length ? saved.join(', ') : 'none'}` : 'keeps no checkpoints (serve --checkpoint)'}`, grpc.status.FAILED_PRECONDITION);
      }
      this.restore(req.resume_steps);
      restored = true;
      this.opts.log?.(`restored the checkpoint at step ${req.resume_steps} for a resuming client`);
    }
    // The state at the session's start, so that a client resuming from scratch can roll the server back to it.
    if (this.checkpoint && listCheckpoints(this.checkpoint.dir, 'server').length === 0) this.saveCheckpoint();
    return {
      restored,
      step_id: req.step_id,
      stages: this.stages.map((s) => ({ name: s.name, first_layer: s.layerOffset, layers: s.layers.length, input_shape: s.inputShape.slice(), output_shape: s.outputShape.slice() })),
      dtype: this.dtype,
      max_message_bytes: this.maxBytes,
      labels: this.opts.labels?.shape[0] ?? 0,
      applied_steps: this.appliedSteps,
      last_applied: this.lastApplied,
    };
  }

  private async forward(req: { step_id: number; training: boolean; seed: number; x: WireTensor }): Promise<ForwardReply> {
    const id = this.stepIdOf(req, 'Forward');
    if (id <= this.lastApplied) throw new RemoteError(`step ${id} was already applied (steps applied through ${this.lastApplied}); expected a step id above ${this.lastApplied}`, grpc.status.FAILED_PRECONDITION);
    const cur = this.current;
    if (cur && cur.stepId === id) {
      // A retry gets the recorded answer; the same id with another input is a client's bug, not a retry.
      if (cur.seed !== req.seed || cur.training !== req.training || !cur.xBytes.equals(Buffer.from(req.x?.data ?? []))) {
        throw new RemoteError(`step ${id} was recorded with another input, seed or mode; expected a retry to resend the same, or a new step id`, grpc.status.FAILED_PRECONDITION);
      }
      return cur.forward;
    }
    if (cur && id < cur.stepId) throw new RemoteError(`step ${id} is older than the step in progress (${cur.stepId}); expected a step id of at least ${cur.stepId}`, grpc.status.FAILED_PRECONDITION);
    const x = decodeTensor(req.x, { shape: [null, ...this.stages[0].inputShape], dtype: this.dtype, maxBytes: this.maxBytes }, `Forward x of step ${id} (${this.stages[0].name})`);
    const t0 = performance.now();
    const runners = this.stages.map((s) => new LocalStageRunner(s, { training: req.training, seed: req.seed >>> 0 }));
    let h = toMessage(x);
    for (const r of runners) h = await r.forward(h);
    const y = encodeTensor(fromMessage(h, 'hosted output'));
    const compute = performance.now() - t0;
    this.traffic.computeMs += compute;
    const forward = { step_id: id, y, compute_ms: compute };
    this.current = { stepId: id, training: req.training, seed: req.seed, xBytes: Buffer.from(req.x.data), runners, forward };
    return forward;
  }

  private async backward(req: { step_id: number; dy: WireTensor }): Promise<BackwardReply> {
    const id = this.stepIdOf(req, 'Backward');
    const cur = this.current;
    if (!cur || cur.stepId !== id) {
      throw new RemoteError(`Backward of step ${id}, but ${cur ? `the step recorded is ${cur.stepId}` : 'no step is recorded'}; expected Forward of step ${id} first`, grpc.status.FAILED_PRECONDITION);
    }
    if (cur.weightsReply) throw new RemoteError(`step ${id}'s weight gradients were computed by BackwardWeights (the explicit way); expected one way per step`, grpc.status.FAILED_PRECONDITION);
    if (cur.backward) {
      if (!cur.dyBytes!.equals(Buffer.from(req.dy?.data ?? []))) throw new RemoteError(`step ${id}'s Backward was run with another dy; expected a retry to resend the same`, grpc.status.FAILED_PRECONDITION);
      return cur.backward;
    }
    const last = this.stages[this.stages.length - 1];
    const B = cur.forward.y.shape[0];
    const dy = decodeTensor(req.dy, { shape: [B, ...last.outputShape], dtype: this.dtype, maxBytes: this.maxBytes }, `Backward dy of step ${id} (${last.name})`);
    const t0 = performance.now();
    let g = toMessage(dy);
    for (let s = cur.runners.length - 1; s >= 0; s--) g = await cur.runners[s].backward(g);
    const grads: (Tensor | null)[][] = [];
    // A non-trainable parameter (BatchNormalization's statistics) has no gradient: null.
    for (const r of cur.runners) for (const layer of await r.gradients()) grads.push(layer.map((m) => (m === null ? null : fromMessage(m, 'hosted gradient'))));
    const nonFinite = firstNonFinite(this.stages, grads);
    let residual = 0;
    let cotangent = 0;
    for (const r of cur.runners) {
      const m = await r.memory();
      residual += m.residualBytes;
      cotangent += m.cotangentBytes;
    }
    const dx = encodeTensor(fromMessage(g, 'hosted dx'));
    const compute = performance.now() - t0;
    this.traffic.computeMs += compute;
    cur.grads = grads;
    cur.nonFinite = nonFinite ?? undefined;
    cur.dyBytes = Buffer.from(req.dy.data);
    cur.backward = {
      step_id: id,
      dx,
      compute_ms: compute,
      gradients_finite: nonFinite === null,
      non_finite: nonFinite ?? '',
      residual_bytes: residual,
      cotangent_bytes: cotangent,
      gradient_bytes: grads.flat().reduce((n, t) => n + (t === null ? 0 : bytesOf(t)), 0),
    };
    return cur.backward;
  }

  /** Forward, the loss on the held labels of `example_ids`, and Backward from dLoss/dY, answered once per step id. */
  private async forwardLoss(req: { step_id: number; training: boolean; seed: number; x: WireTensor; example_ids: number[] }) {
    const id = this.stepIdOf(req, 'ForwardLoss');
    const labels = this.opts.labels;
    if (!labels || !this.loss) throw new RemoteError(`ForwardLoss of step ${id}, but this server holds no labels; expected Forward and Backward, with the loss computed by the client`, grpc.status.FAILED_PRECONDITION);
    const cur = this.current;
    if (cur && cur.stepId === id && cur.lossReply) {
      if (!cur.xBytes.equals(Buffer.from(req.x?.data ?? [])) || cur.ids !== (req.example_ids ?? []).join(',')) throw new RemoteError(`step ${id} was recorded with another input or other examples; expected a retry to resend the same`, grpc.status.FAILED_PRECONDITION);
      return cur.lossReply;
    }
    const ids = req.example_ids ?? [];
    const B = req.x?.shape?.[0];
    if (ids.length !== B) throw new RemoteError(`expected one example id per row of x (${fmtValue(B)}), received ${ids.length}`, grpc.status.INVALID_ARGUMENT);
    const N = labels.shape[0];
    const bad = ids.findIndex((i) => !Number.isInteger(i) || i < 0 || i >= N);
    if (bad >= 0) throw new RemoteError(`expected example ids in [0, ${N - 1}] (the labels held), received ${ids[bad]} at position ${bad}`, grpc.status.INVALID_ARGUMENT);
    const t0 = performance.now();
    const fwd = await this.forward(req);
    const yPred = decodeTensor(fwd.y, { shape: fwd.y.shape, dtype: this.dtype, maxBytes: this.maxBytes }, 'hosted output');
    const yTrue = takeRows(labels, ids);
    const loss = this.loss.value(yTrue, yPred);
    if (!Number.isFinite(loss)) throw new RemoteError(`step ${id}: the loss is ${loss} on the held labels; the weights are left as they were`, grpc.status.FAILED_PRECONDITION);
    const back = await this.backward({ step_id: id, dy: encodeTensor(this.loss.gradient(yTrue, yPred)) });
    const cur2 = this.current!;
    cur2.ids = ids.join(',');
    cur2.lossReply = {
      step_id: id,
      loss,
      correct: correctCount(yTrue, yPred),
      dx: back.dx,
      compute_ms: performance.now() - t0,
      gradients_finite: back.gradients_finite,
      non_finite: back.non_finite,
    };
    return cur2.lossReply;
  }

  private apply(req: { step_id: number }) {
    const id = this.stepIdOf(req, 'Apply');
    if (id <= this.lastApplied) return { step_id: id, applied: false, applied_steps: this.appliedSteps, compute_ms: 0 };
    const cur = this.current;
    if (!cur || cur.stepId !== id || !cur.grads) {
      throw new RemoteError(`Apply of step ${id}, but ${!cur || cur.stepId !== id ? `the step recorded is ${cur ? cur.stepId : 'none'}` : 'its Backward has not run'}; expected Forward and Backward of step ${id} first`, grpc.status.FAILED_PRECONDITION);
    }
    if (cur.nonFinite) throw new RemoteError(`step ${id} has a non-finite gradient (${cur.nonFinite}); the weights are left as they were`, grpc.status.FAILED_PRECONDITION);
    const t0 = performance.now();
    let k = 0;
    for (const stage of this.stages) for (const l of stage.layers) this.optimizer!.step(l.params, cur.grads[k++]);
    this.lastApplied = id;
    this.appliedSteps++;
    // Written before the reply: the client checkpoints after it, so the server's newest checkpoint is never older than the client's.
    if (this.checkpoint && this.appliedSteps % this.checkpoint.every === 0) this.saveCheckpoint();
    const compute = performance.now() - t0;
    this.traffic.computeMs += compute;
    const t = this.traffic;
    this.opts.log?.(`step ${id}: received ${t.received} B, sent ${t.sent} B (messages), compute ${t.computeMs.toFixed(2)} ms, ${heldLine(cur)}`);
    this.traffic = { received: 0, sent: 0, computeMs: 0 };
    return { step_id: id, applied: true, applied_steps: this.appliedSteps, compute_ms: compute };
  }

  /** The step `id` recorded by Forward, or FAILED_PRECONDITION naming what is recorded instead. */
  private recordedStep(id: number, method: string): { cur: StepState; tapes: GradientTape[] } {
    const cur = this.current;
    if (!cur || cur.stepId !== id) throw new RemoteError(`${method} of step ${id}, but ${cur ? `the step recorded is ${cur.stepId}` : 'no step is recorded'}; expected Forward of step ${id} first`, grpc.status.FAILED_PRECONDITION);
    return { cur, tapes: cur.runners.map((r) => r.recordedTape!) };
  }

  /** The explicit way's Jacobians (the shipped ones and those w.r.t. the weights) against the memory budget, before any is built. */
  private guardExplicit(batch: number, training: boolean): void {
    try {
      guardExplicitWay(estimateMemory([...this.stages], batch, { dtype: this.dtype, training, firstStageInput: true }), getMemoryBudget());
    } catch (e) {
      throw new RemoteError((e as Error).message, grpc.status.RESOURCE_EXHAUSTED);
    }
  }

  /**
   * Each hosted stage's batch Jacobian dOut_s/dIn_s of the recorded pass, dense (the full one for a
   * stage that couples its samples), answered once per step id; refused from the shapes, before
   * one is built, when the reply would exceed the maximum message.
   */
  private jacobian(req: { step_id: number }): JacobianReply {
    const id = this.stepIdOf(req, 'Jacobian');
    const { cur, tapes } = this.recordedStep(id, 'Jacobian');
    if (cur.jacobianReply) return cur.jacobianReply;
    if (cur.backward) throw new RemoteError(`step ${id}'s Backward already ran (the VJP way); expected one way per step`, grpc.status.FAILED_PRECONDITION);
    const B = cur.forward.y.shape[0];
    checkShippedJacobian(this.stages.map((st, s) => ({ name: st.name, inputShape: st.inputShape, outputShape: st.outputShape, coupled: tapes[s].samplesCoupled })), B, this.dtype, this.maxBytes, "the server's");
    this.guardExplicit(B, cur.training);
    const t0 = performance.now();
    const stages = tapes.map((tape) => {
      const { J, coupled } = inputJacobian(tape);
      return { dout_din: encodeTensor(J.toDense()), samples_coupled: coupled };
    });
    const compute = performance.now() - t0;
    this.traffic.computeMs += compute;
    cur.jacobianReply = {
      step_id: id,
      stages,
      compute_ms: compute,
      residual_bytes: tapes.reduce((n, t) => n + t.residualBytes(), 0),
      jacobian_bytes: stages.reduce((n, j) => n + j.dout_din.data.byteLength, 0),
    };
    return cur.jacobianReply;
  }

  /**
   * The hosted weights' gradients from dLoss/dOut_s of every hosted stage, by the seed's method:
   * each stage's Jacobians w.r.t. its weights built from the recorded pass and contracted with its
   * dLoss/dOut_s (`explicitStageBackward`). Kept for Apply, as Backward's are; answered once per step id.
   */
  private backwardWeights(req: { step_id: number; dout: WireTensor[] }): BackwardWeightsReply {
    const id = this.stepIdOf(req, 'BackwardWeights');
    const { cur, tapes } = this.recordedStep(id, 'BackwardWeights');
    const douts = Array.isArray(req.dout) ? req.dout : [];
    const bytes = Buffer.concat(douts.map((t) => Buffer.from(t?.data ?? [])));
    if (cur.weightsReply) {
      if (!cur.doutBytes!.equals(bytes)) throw new RemoteError(`step ${id}'s BackwardWeights was run with another dLoss/dOut; expected a retry to resend the same`, grpc.status.FAILED_PRECONDITION);
      return cur.weightsReply;
    }
    if (cur.backward) throw new RemoteError(`step ${id}'s Backward already ran (the VJP way); expected one way per step`, grpc.status.FAILED_PRECONDITION);
    if (douts.length !== this.stages.length) {
      throw new RemoteError(`expected one dLoss/dOut per hosted stage (${this.stages.length}: ${this.stages.map((st) => st.name).join(', ')}), received ${douts.length}`, grpc.status.INVALID_ARGUMENT);
    }
    const B = cur.forward.y.shape[0];
    const g = douts.map((t, s) => decodeTensor(t, { shape: [B, ...this.stages[s].outputShape], dtype: this.dtype, maxBytes: this.maxBytes }, `BackwardWeights dout[${s}] of step ${id} (${this.stages[s].name})`));
    this.guardExplicit(B, cur.training);
    const t0 = performance.now();
    const grads: (Tensor | null)[][] = [];
    let residual = 0;
    let jacobian = 0;
    this.stages.forEach((st, s) => {
      const step = explicitStageBackward(st, tapes[s], g[s], s, false);
      grads.push(...step.dLoss_dWeights);
      residual += step.memory.residualBytes;
      jacobian += step.memory.jacobians.reduce((n, j) => n + j.bytes, 0);
    });
    const nonFinite = firstNonFinite(this.stages, grads);
    const compute = performance.now() - t0;
    this.traffic.computeMs += compute;
    cur.grads = grads;
    cur.nonFinite = nonFinite ?? undefined;
    cur.doutBytes = bytes;
    cur.weightsReply = {
      step_id: id,
      compute_ms: compute,
      gradients_finite: nonFinite === null,
      non_finite: nonFinite ?? '',
      residual_bytes: residual,
      jacobian_bytes: jacobian,
      gradient_bytes: grads.flat().reduce((n, t) => n + (t === null ? 0 : bytesOf(t)), 0),
    };
    return cur.weightsReply;
  }

  private gradients(req: { step_id: number }): { step_id: number; layers: WireLayer[]; applied_steps: number } {
    const id = this.stepIdOf(req, 'Gradients');
    const cur = this.current;
    if (!cur || cur.stepId !== id || !cur.grads) throw new RemoteError(`Gradients of step ${id}, but ${cur?.stepId === id ? 'its Backward has not run' : `the step recorded is ${cur ? cur.stepId : 'none'}`}`, grpc.status.FAILED_PRECONDITION);
    // A non-trainable parameter has no gradient: on the wire, an empty float64 tensor of shape [0] stands for it (no gradient is ever empty).
    return { step_id: id, layers: cur.grads.map((ps) => ({ params: ps.map((t) => encodeTensor(t ?? zeros([0]))) })), applied_steps: this.appliedSteps };
  }

  private weights(req: { step_id: number }): { step_id: number; layers: WireLayer[]; applied_steps: number } {
    const id = this.stepIdOf(req, 'Weights');
    return { step_id: id, layers: this.stages.flatMap((s) => s.layers.map((l) => ({ params: l.params.map((p) => encodeTensor(p.value)) }))), applied_steps: this.appliedSteps };
  }
}

/**
 * A server interceptor that refuses, with UNAUTHENTICATED, a call whose metadata lacks `token`
 * (compared in constant time) as soon as the metadata arrives: the call's stream stays paused, so
 * its message is never read, parsed nor size-checked, and a caller without the token learns
 * nothing about what the server would have made of it.
 */
function tokenInterceptor(token: string): grpc.ServerInterceptor {
  return (method, call) =>
    new grpc.ServerInterceptingCall(call, {
      start: (next) =>
        next({
          onReceiveMetadata: (metadata, pass) => {
            const name = method.path.slice(method.path.lastIndexOf('/') + 1);
            const got = metadata.get(TOKEN_KEY);
            if (got.length === 0) return call.sendStatus({ code: grpc.status.UNAUTHENTICATED, details: `${name}: this server needs a token (metadata ${TOKEN_KEY}), received none` });
            if (!tokenMatches(token, got[0].toString())) return call.sendStatus({ code: grpc.status.UNAUTHENTICATED, details: `${name}: wrong token` });
            pass(metadata);
          },
        }),
    });
}

/** `held 10.2 KiB (residuals 8.1 KiB, cotangents 0.4 KiB, Jacobians 0 B, gradients 1.7 KiB)`: what the hosted stages held for a step. */
function heldLine(cur: StepState): string {
  const b = cur.backward;
  const j = cur.jacobianReply;
  const w = cur.weightsReply;
  const residual = b?.residual_bytes ?? w?.residual_bytes ?? j?.residual_bytes ?? 0;
  const cotangent = b?.cotangent_bytes ?? 0;
  const jacobian = (j?.jacobian_bytes ?? 0) + (w?.jacobian_bytes ?? 0);
  const gradient = b?.gradient_bytes ?? w?.gradient_bytes ?? 0;
  return `held ${fmtBytes(residual + cotangent + jacobian + gradient)} (residuals ${fmtBytes(residual)}, cotangents ${fmtBytes(cotangent)}, Jacobians ${fmtBytes(jacobian)}, gradients ${fmtBytes(gradient)})`;
}

/** `dense_1.kernel: NaN at flat index 3`, for the first non-finite gradient of the hosted layers, or null. */
function firstNonFinite(stages: readonly Sequential[], grads: readonly (readonly (Tensor | null)[])[]): string | null {
  const layers = stages.flatMap((s) => s.layers);
  for (let i = 0; i < grads.length; i++) {
    for (let k = 0; k < grads[i].length; k++) {
      const g = grads[i][k];
      if (g === null) continue;
      const d = g.data;
      for (let j = 0; j < d.length; j++) {
        const v = d[j];
        if (v - v !== 0) return `${layers[i].name}.${layers[i].params[k].name}: ${v} at flat index ${j}`;
      }
    }
  }
  return null;
}

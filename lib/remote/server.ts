/**
 * The stage server of split learning over gRPC (issue #15): hosts the downstream stages of a split
 * model behind `proto/stage.proto`'s `Stage` service. Forward records a pass through the hosted
 * stages, each on its own tape (as `vjpChain` runs them in one process); Backward feeds the
 * cotangent `dy` in and answers `dx`, keeping the weight gradients; Apply steps the server's own
 * optimizer, once per step id however often it is asked. Every incoming tensor is checked before a
 * tensor is made of it, and a refused call leaves the server serving. Many clients (each its own
 * `model_0`, step ids and applied-step record) share the hosted stages one step at a time; a
 * pipelined step's micro-batches each have their own tapes, summed at Apply. For the explicit way
  * with the Jacobian shipped, Jacobian answers each hosted stage's batch Jacobian dOut/dIn of the
  * recorded pass and BackwardWeights contracts the stages' weight Jacobians with the dLoss/dOut the
  * client sends.
 * @module
 */
import type { EventEmitter } from 'node:events';
import type { Http2Session } from 'node:http2';
import * as grpc from '@grpc/grpc-js';
import { LocalStageRunner, explicitStageBackward, fromMessage, inputJacobian, toMessage } from '../chain.js';
import { estimateMemory, guardExplicitWay } from '../memory-report.js';
import { fmtBytes, getMemoryBudget } from '../memory.js';
import type { GradientTape } from '../tape.js';
import { checkShippedJacobian } from './explicit.js';
import { stagesSignature } from './signature.js';
import { ConfigError, JacobianChainError, fmtShape, fmtValue } from '../errors.js';
import { type Optimizer, type OptimizerConfig, optimizerFromConfig } from '../optimizers.js';
import { Sequential } from '../sequential.js';
import { type Loss, type LossName, lossFrom } from '../losses.js';
import { type DType, type Tensor, assertFinite, assertShape, axpy, bytesOf, copy, zeros } from '../tensor.js';
import { correctCount, takeRows } from '../train.js';
import { microBatchRefusal } from './fit.js';
import { type CheckpointOptions, type CheckpointSlots, type CheckpointTensor, checkCheckpointOptions, listCheckpoints, paramsFromCheckpoint, paramsToCheckpoint, readCheckpoint, writeCheckpoint } from './checkpoint.js';
import type { Param } from '../layers/layer.js';
import { DEFAULT_MAX_MESSAGE_BYTES, FLOW_WINDOW_BYTES, type LoopbackAddress, RemoteError, TOKEN_KEY, type WireLayer, type WireTensor, checkLoopback, decodeTensor, encodeTensor, grpcAddress, stageService, tokenMatches } from './wire.js';

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
  /**
   * Many clients: how long, in milliseconds, a client holding the shared stages for its step may
   * stay silent while another client waits for them; past it, its step is dropped (its later calls
   * of that step are refused with ABORTED) and the next client goes on. Default 10000.
   */
  leaseMs?: number;
  /** Most sessions (client ids) at once; an Open beyond them is refused with RESOURCE_EXHAUSTED. Default 64. */
  maxClients?: number;
}

/** What {@link StageServer.clients} reports of one client's session. */
export interface ClientSessionInfo {
  /** The client's id (empty: the single-client session). */
  clientId: string;
  /** Steps applied for this client. */
  appliedSteps: number;
  /** The id of the first step applied for it (-1 when none). */
  firstApplied: number;
  /** The id of the last step applied for it (-1 when none). */
  lastApplied: number;
  /** Apply calls of steps already applied (retries), answered `applied: false` and not applied again. */
  repeatedApplies: number;
}

/** One micro-batch of the step in progress (the whole batch when the step is not pipelined), on its own tapes. */
interface Part {
  /** The input's bytes, to tell a retry (same bytes) from a client that reuses an id. */
  xBytes: Buffer;
  rowOffset: number;
  runners: LocalStageRunner[];
  forward: ForwardReply;
  dyBytes?: Buffer;
  backward?: BackwardReply;
  /** Per hosted layer, its parameters' gradients. */
  grads?: (Tensor | null)[][];
  /** The explicit way with the Jacobian shipped: Jacobian's answer, BackwardWeights' dLoss/dOut bytes and answer. */
  jacobianReply?: JacobianReply;
  doutBytes?: Buffer;
  weightsReply?: BackwardWeightsReply;
}

/** What the server has recorded of a client's step in progress. */
interface StepState {
  stepId: number;
  training: boolean;
  seed: number;
  /** Micro-batches of the step (1: not pipelined) and the rows of its whole batch (0: not pipelined). */
  microBatches: number;
  batchRows: number;
  parts: (Part | undefined)[];
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

/** One client's session: its step ids and applied-step record are its own; the hosted stages are everyone's. */
interface Session {
  clientId: string;
  lastApplied: number;
  firstApplied: number;
  appliedSteps: number;
  repeatedApplies: number;
  current: StepState | null;
  /** The id of the step the lease took away (-1: none), so that its later calls are told so. */
  dropped: number;
}

/** A Forward's place in its step: micro-batch `index` of `count`, rows from `rowOffset` of a batch of `batchRows`. */
interface PartRequest {
  index: number;
  count: number;
  rowOffset: number;
  batchRows: number;
}

interface ForwardRequest {
  step_id: number;
  client_id?: string;
  training: boolean;
  seed: number;
  x: WireTensor;
  micro_batch?: number;
  micro_batches?: number;
  row_offset?: number;
  batch_rows?: number;
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
  /** The hosted stages' architecture, as {@link stagesSignature} states it, for Open to compare. */
  private readonly signature: string;
  private readonly dtype: DType;
  private readonly leaseMs: number;
  private readonly maxClients: number;
  private optimizerJson: string | null = null;
  private optimizer: Optimizer | null = null;
  private loss: Loss | null = null;
  private lossName = '';
  /** Steps applied for all clients together. */
  private appliedSteps = 0;
  private readonly sessions = new Map<string, Session>();
  /** The session whose step holds the shared stages, when it last called, and who waits for them, in order. */
  private holder: Session | null = null;
  private holderSeen = 0;
  private waiters: { session: Session; grant: () => void; refuse: (e: Error) => void }[] = [];
  private leaseTimer: NodeJS.Timeout | null = null;
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
    this.signature = stagesSignature(stages);
    const max = opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    if (!Number.isSafeInteger(max) || max <= 0 || max > 2 ** 31 - 1) throw new ConfigError(`StageServer: expected maxMessageBytes to be an integer in [1, 2^31 - 1], received ${fmtValue(opts.maxMessageBytes)}`);
    this.maxBytes = max;
    const lease = opts.leaseMs ?? 10_000;
    if (!Number.isSafeInteger(lease) || lease <= 0) throw new ConfigError(`StageServer: expected leaseMs to be a positive integer, received ${fmtValue(opts.leaseMs)}`);
    this.leaseMs = lease;
    const clients = opts.maxClients ?? 64;
    if (!Number.isSafeInteger(clients) || clients <= 0) throw new ConfigError(`StageServer: expected maxClients to be a positive integer, received ${fmtValue(opts.maxClients)}`);
    this.maxClients = clients;
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
        this.restore(saved[saved.length - 1], null);
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
    widenFlowControl(this.server, this.maxBytes);
    return new Promise((resolve, reject) => {
      const tls = this.opts.tls;
      const creds = tls ? grpc.ServerCredentials.createSsl(null, [{ cert_chain: Buffer.from(tls.cert), private_key: Buffer.from(tls.key) }], false) : grpc.ServerCredentials.createInsecure();
      this.server.bindAsync(grpcAddress(host, this.opts.port ?? 0), creds, (err, port) => {
        if (err) return reject(new ConfigError(`StageServer: cannot listen on ${grpcAddress(host, this.opts.port ?? 0)} (${err.message})`));
        this.bound = { host, port };
        widenSessions(this.server, this.maxBytes);
        resolve(this.bound);
      });
    });
  }

  /** Stops serving: waits up to `graceMs` for calls in flight, then cuts them. */
  close(graceMs = 1000): Promise<void> {
    if (this.leaseTimer) clearTimeout(this.leaseTimer);
    this.leaseTimer = null;
    for (const w of this.waiters.splice(0)) w.refuse(new RemoteError(`client ${fmtValue(w.session.clientId)} waited for the shared stages, but the server is closing`, grpc.status.UNAVAILABLE));
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

  /** Steps applied so far, for all clients together. */
  get steps(): number {
    return this.appliedSteps;
  }

  /** Every client's session as it stands: its applied steps, the first and last applied ids, the repeated Applies answered. */
  clients(): ClientSessionInfo[] {
    return [...this.sessions.values()].map((s) => ({ clientId: s.clientId, appliedSteps: s.appliedSteps, firstApplied: s.firstApplied, lastApplied: s.lastApplied, repeatedApplies: s.repeatedApplies }));
  }

  /** Every hosted parameter, in order: what the optimizer's slots and a checkpoint are keyed by. */
  private get params(): Param[] {
    return this.stages.flatMap((s) => s.layers.flatMap((l) => l.params));
  }

  /** Writes the checkpoint of `s`, the one session a checkpointing server holds. */
  private saveCheckpoint(s: Session): void {
    const cp = this.checkpoint!;
    writeCheckpoint(cp, 'server', s.appliedSteps, {
      stages: this.stages.map((st) => st.name),
      client: s.clientId,
      lastApplied: s.lastApplied,
      firstApplied: s.firstApplied,
      optimizer: this.optimizerJson,
      loss: this.lossName,
      ...paramsToCheckpoint(this.params, this.optimizer!),
    });
  }

  /**
   * Restores the checkpoint at `steps`: weights, optimizer state, the applied-step record of its
   * one session (for `clientId`, or whoever it was saved for when null); the step in progress is dropped.
   */
  private restore(steps: number, clientId: string | null): Session {
    const j = readCheckpoint<{ stages: string[]; client?: string; lastApplied: number; firstApplied?: number; optimizer: string; loss: string; weights: CheckpointTensor[]; slots: (CheckpointSlots | null)[] }>(this.checkpoint!.dir, 'server', steps);
    const names = this.stages.map((s) => s.name).join('+');
    if (!Array.isArray(j.stages) || j.stages.join('+') !== names) throw new ConfigError(`StageServer checkpoint at step ${steps}: expected stages ${names}, received ${fmtValue(j.stages)}`);
    const saved = j.client ?? '';
    if (clientId !== null && clientId !== saved) throw new RemoteError(`StageServer checkpoint at step ${steps}: saved for client ${fmtValue(saved)}, received a resume from client ${fmtValue(clientId)}`, grpc.status.FAILED_PRECONDITION);
    if (this.optimizerJson !== null && this.optimizerJson !== j.optimizer) throw new ConfigError(`StageServer checkpoint at step ${steps}: saved with optimizer ${j.optimizer}, the session runs ${this.optimizerJson}`);
    const optimizer = optimizerFromConfig(JSON.parse(j.optimizer) as OptimizerConfig);
    paramsFromCheckpoint(this.params, optimizer, j, `StageServer checkpoint at step ${steps}`);
    this.optimizer = optimizer;
    this.optimizerJson = j.optimizer;
    this.lossName = j.loss;
    this.loss = j.loss === '' ? null : lossFrom(j.loss as LossName);
    this.appliedSteps = steps;
    const s = newSession(saved);
    s.lastApplied = j.lastApplied;
    s.appliedSteps = steps;
    s.firstApplied = j.firstApplied ?? (steps > 0 ? 0 : -1);
    this.sessions.clear();
    this.sessions.set(saved, s);
    this.holder = null;
    return s;
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

  /** The session of the request's client, which must have opened one. */
  private sessionOf(req: { client_id?: unknown }, method: string, id: number): Session {
    const c = checkClientId(req?.client_id);
    const s = this.sessions.get(c);
    if (!s) throw new RemoteError(`${method} of step ${id} from client ${fmtValue(c)}, which has opened no session; expected Open with client_id ${fmtValue(c)} first`, grpc.status.FAILED_PRECONDITION);
    return s;
  }

  /**
   * Resolves once `s` holds the shared stages, first come, first served: one client's step runs
   * Forward to Apply on them alone, so that its gradient is computed on the weights its forward
   * used and applied to those same weights (interleaved steps would apply stale gradients).
   */
  private admit(s: Session): Promise<void> {
    if (this.holder === s) {
      this.holderSeen = performance.now();
      return Promise.resolve();
    }
    if (this.holder === null) {
      this.holder = s;
      this.holderSeen = performance.now();
      return Promise.resolve();
    }
    return new Promise((grant, refuse) => {
      const entry = { session: s, grant, refuse };
      // A client retrying while its first try still waits keeps its place, with the retry in it.
      const prior = this.waiters.findIndex((w) => w.session === s);
      if (prior >= 0) {
        this.waiters[prior].refuse(new RemoteError(`client ${fmtValue(s.clientId)}: this call was superseded by a retry while it waited for the shared stages`, grpc.status.ABORTED));
        this.waiters[prior] = entry;
      } else {
        this.waiters.push(entry);
      }
      this.armLease();
    });
  }

  /** Records that the holder is alive, so its lease runs from now. */
  private touch(s: Session): void {
    if (this.holder === s) this.holderSeen = performance.now();
  }

  /** Hands the shared stages to the next waiting client once `s` has no step in progress. */
  private releaseIfIdle(s: Session): void {
    if (this.holder !== s || (s.current && s.current.stepId > s.lastApplied)) return;
    this.holder = null;
    const next = this.waiters.shift();
    if (next) {
      this.holder = next.session;
      this.holderSeen = performance.now();
      next.grant();
      this.armLease();
    }
  }

  /** While a client waits, the holder's lease: silent for `leaseMs`, its step is dropped and the stages go on. */
  private armLease(): void {
    if (this.leaseTimer || !this.holder || this.waiters.length === 0) return;
    this.leaseTimer = setTimeout(() => {
      this.leaseTimer = null;
      const h = this.holder;
      if (!h || this.waiters.length === 0) return;
      if (performance.now() - this.holderSeen >= this.leaseMs) {
        const step = h.current && h.current.stepId > h.lastApplied ? h.current.stepId : -1;
        this.opts.log?.(`client ${fmtValue(h.clientId)}: step ${step} dropped, silent for ${this.leaseMs} ms while ${this.waiters.length} waited`);
        h.dropped = step;
        h.current = null;
        this.releaseIfIdle(h);
      }
      this.armLease();
    }, Math.max(1, this.holderSeen + this.leaseMs - performance.now()));
    this.leaseTimer.unref();
  }

  /** The refusal of a call for step `id` of `s` when that step is not the one recorded. */
  private notRecorded(s: Session, id: number, method: string): RemoteError {
    if (s.dropped === id) return new RemoteError(`${method} of step ${id}${clientLabel(s)}: the step was dropped, its client silent for over ${this.leaseMs} ms while another waited; expected the step again from its Forward`, grpc.status.ABORTED);
    const cur = s.current;
    return new RemoteError(`${method} of step ${id}${clientLabel(s)}, but ${cur ? `the step recorded is ${cur.stepId}` : 'no step is recorded'}; expected Forward of step ${id} first`, grpc.status.FAILED_PRECONDITION);
  }

  private open(req: { step_id: number; optimizer_json: string; loss: string; resume: boolean; resume_steps: number; client_id?: string }) {
    const clientId = checkClientId(req.client_id);
    let config: unknown;
    try {
      config = JSON.parse(req.optimizer_json);
    } catch {
      throw new RemoteError(`expected optimizer_json to be JSON like {"name": "adam", "learning_rate": 0.001}, received ${fmtValue(req.optimizer_json)}`, grpc.status.INVALID_ARGUMENT);
    }
    const canonical = JSON.stringify(config);
    if (this.opts.labels && req.loss === '') throw new RemoteError('this server holds the labels: expected Open to name the loss, received none', grpc.status.INVALID_ARGUMENT);
    if (this.lossName !== '' && req.loss !== this.lossName) throw new RemoteError(`the session was opened with loss ${this.lossName}, received ${fmtValue(req.loss)}`, grpc.status.FAILED_PRECONDITION);
    if (this.optimizerJson !== null && this.optimizerJson !== canonical) {
      // Another optimizer would silently change the moments the applied steps built up.
      throw new RemoteError(`the session was opened with optimizer ${this.optimizerJson}, received ${canonical}`, grpc.status.FAILED_PRECONDITION);
    }
    let s = this.sessions.get(clientId);
    if (!s) {
      const others = [...this.sessions.keys()];
      if (this.checkpoint && others.length > 0) {
        // A checkpoint of one session would roll the others' steps back with it on a resume.
        throw new RemoteError(`this server keeps checkpoints (serve --checkpoint), which hold one client's session, and client ${fmtValue(others[0])} has it; expected one client, or serve without --checkpoint for many, received client ${fmtValue(clientId)}`, grpc.status.FAILED_PRECONDITION);
      }
      if (others.length >= this.maxClients) throw new RemoteError(`this server takes at most ${this.maxClients} clients and has ${others.length}; received another, client ${fmtValue(clientId)}`, grpc.status.RESOURCE_EXHAUSTED);
    }
    if (req.loss !== '') this.loss = lossFrom(req.loss as LossName);
    this.lossName = req.loss;
    if (this.optimizerJson === null) {
      this.optimizer = optimizerFromConfig(config as OptimizerConfig);
      this.optimizerJson = canonical;
    }
    if (!s) {
      s = newSession(clientId);
      this.sessions.set(clientId, s);
    }
    let restored = false;
    if (req.resume && req.resume_steps !== s.appliedSteps) {
      const saved = this.checkpoint ? listCheckpoints(this.checkpoint.dir, 'server') : [];
      if (!saved.includes(req.resume_steps)) {
        throw new RemoteError(`cannot resume at step ${req.resume_steps}: this server has applied ${s.appliedSteps} steps${clientLabel(s)} and ${this.checkpoint ? `holds checkpoints at ${saved.length ? saved.join(', ') : 'none'}` : 'keeps no checkpoints (serve --checkpoint)'}`, grpc.status.FAILED_PRECONDITION);
      }
      s = this.restore(req.resume_steps, clientId);
      restored = true;
      this.opts.log?.(`restored the checkpoint at step ${req.resume_steps} for a resuming client`);
    }
    // The state at the session's start, so that a client resuming from scratch can roll the server back to it.
    if (this.checkpoint && listCheckpoints(this.checkpoint.dir, 'server').length === 0) this.saveCheckpoint(s);
    return {
      restored,
      step_id: req.step_id,
      stages: this.stages.map((st) => ({ name: st.name, first_layer: st.layerOffset, layers: st.layers.length, input_shape: st.inputShape.slice(), output_shape: st.outputShape.slice() })),
      dtype: this.dtype,
      max_message_bytes: this.maxBytes,
      labels: this.opts.labels?.shape[0] ?? 0,
      applied_steps: s.appliedSteps,
      last_applied: s.lastApplied,
      server_applied_steps: this.appliedSteps,
      clients: this.sessions.size,
      stages_signature: this.signature,
    };
  }

  private async forward(req: ForwardRequest): Promise<ForwardReply> {
    const id = this.stepIdOf(req, 'Forward');
    const s = this.sessionOf(req, 'Forward', id);
    const part = partOf(req, id);
    const refusal = part.count > 1 ? microBatchRefusal(this.stages, req.training) : null;
    if (refusal) throw new RemoteError(`Forward of step ${id} in ${part.count} micro-batches: ${refusal}`, grpc.status.INVALID_ARGUMENT);
    // Checked before waiting for the stages: a bad tensor is refused at once, not after others' steps.
    const x = decodeTensor(req.x, { shape: [null, ...this.stages[0].inputShape], dtype: this.dtype, maxBytes: this.maxBytes }, `Forward x of step ${id} (${this.stages[0].name})`);
    if (part.count > 1 && part.rowOffset + x.shape[0] > part.batchRows) {
      throw new RemoteError(`Forward of step ${id}, micro-batch ${part.index}: expected rows within the batch's ${part.batchRows}, received ${x.shape[0]} rows from row ${part.rowOffset}`, grpc.status.INVALID_ARGUMENT);
    }
    await nextTurn();
    await this.admit(s);
    try {
      return await this.record(s, id, req, part, x);
    } finally {
      this.touch(s);
      this.releaseIfIdle(s);
    }
  }

  /** Forward of micro-batch `part` of step `id` on the shared stages, which `s` holds; a retry gets the recorded answer. */
  private async record(s: Session, id: number, req: ForwardRequest, part: PartRequest, x: Tensor): Promise<ForwardReply> {
    if (id <= s.lastApplied) throw new RemoteError(`step ${id}${clientLabel(s)} was already applied (steps applied through ${s.lastApplied}); expected a step id above ${s.lastApplied}`, grpc.status.FAILED_PRECONDITION);
    const cur = s.current;
    const xBytes = Buffer.from(req.x.data);
    if (cur && cur.stepId === id) {
      // A retry gets the recorded answer; the same id with another input is a client's bug, not a retry.
      const done = cur.parts[part.index];
      if (cur.seed !== req.seed || cur.training !== req.training || cur.microBatches !== part.count || cur.batchRows !== part.batchRows || (done && (done.rowOffset !== part.rowOffset || !done.xBytes.equals(xBytes)))) {
        throw new RemoteError(`step ${id}${clientLabel(s)} was recorded with another input, seed, mode or micro-batching; expected a retry to resend the same, or a new step id`, grpc.status.FAILED_PRECONDITION);
      }
      if (done) return done.forward;
    } else if (cur && id < cur.stepId) {
      throw new RemoteError(`step ${id} is older than the step in progress (${cur.stepId})${clientLabel(s)}; expected a step id of at least ${cur.stepId}`, grpc.status.FAILED_PRECONDITION);
    }
    const t0 = performance.now();
    // A micro-batch draws its rows of the whole batch's Dropout masks: the masks of the unpipelined step.
    const slice = part.count > 1 ? { batchSlice: { start: part.rowOffset, total: part.batchRows } } : {};
    const runners = this.stages.map((st) => new LocalStageRunner(st, { training: req.training, seed: req.seed >>> 0, ...slice }));
    let h = toMessage(x);
    for (const r of runners) h = await r.forward(h);
    const y = encodeTensor(fromMessage(h, 'hosted output'));
    const compute = performance.now() - t0;
    this.traffic.computeMs += compute;
    const forward = { step_id: id, y, compute_ms: compute };
    let step = s.current;
    if (!step || step.stepId !== id) {
      step = { stepId: id, training: req.training, seed: req.seed, microBatches: part.count, batchRows: part.batchRows, parts: [] };
      s.current = step;
      s.dropped = -1;
    }
    step.parts[part.index] = { xBytes, rowOffset: part.rowOffset, runners, forward };
    return forward;
  }

  private async backward(req: { step_id: number; client_id?: string; micro_batch?: number; dy: WireTensor }): Promise<BackwardReply> {
    const id = this.stepIdOf(req, 'Backward');
    const s = this.sessionOf(req, 'Backward', id);
    await nextTurn();
    this.touch(s);
    const cur = s.current;
    if (!cur || cur.stepId !== id) throw this.notRecorded(s, id, 'Backward');
    const k = req.micro_batch ?? 0;
    if (!Number.isSafeInteger(k) || k < 0 || k >= cur.microBatches) throw new RemoteError(`Backward of step ${id}: expected micro_batch in [0, ${cur.microBatches - 1}] (the step's ${cur.microBatches}), received ${fmtValue(k)}`, grpc.status.INVALID_ARGUMENT);
    const part = cur.parts[k];
    if (!part) throw new RemoteError(`Backward of step ${id}, micro-batch ${k}, before its Forward; expected Forward of micro-batch ${k} first`, grpc.status.FAILED_PRECONDITION);
    if (part.weightsReply) throw new RemoteError(`step ${id}'s weight gradients were computed by BackwardWeights (the explicit way); expected one way per step`, grpc.status.FAILED_PRECONDITION);
    if (part.backward) {
      if (!part.dyBytes!.equals(Buffer.from(req.dy?.data ?? []))) throw new RemoteError(`step ${id}'s Backward was run with another dy; expected a retry to resend the same`, grpc.status.FAILED_PRECONDITION);
      return part.backward;
    }
    const last = this.stages[this.stages.length - 1];
    const B = part.forward.y.shape[0];
    const dy = decodeTensor(req.dy, { shape: [B, ...last.outputShape], dtype: this.dtype, maxBytes: this.maxBytes }, `Backward dy of step ${id} (${last.name})`);
    const t0 = performance.now();
    let g = toMessage(dy);
    for (let st = part.runners.length - 1; st >= 0; st--) g = await part.runners[st].backward(g);
    const grads: (Tensor | null)[][] = [];
    // A non-trainable parameter (BatchNormalization's statistics) has no gradient: null.
    for (const r of part.runners) for (const layer of await r.gradients()) grads.push(layer.map((m) => (m === null ? null : fromMessage(m, 'hosted gradient'))));
    const nonFinite = firstNonFinite(this.stages, grads);
    let residual = 0;
    let cotangent = 0;
    for (const r of part.runners) {
      const m = await r.memory();
      residual += m.residualBytes;
      cotangent += m.cotangentBytes;
    }
    const dx = encodeTensor(fromMessage(g, 'hosted dx'));
    const compute = performance.now() - t0;
    this.traffic.computeMs += compute;
    part.grads = grads;
    part.dyBytes = Buffer.from(req.dy.data);
    part.backward = {
      step_id: id,
      dx,
      compute_ms: compute,
      gradients_finite: nonFinite === null,
      non_finite: nonFinite ?? '',
      residual_bytes: residual,
      cotangent_bytes: cotangent,
      gradient_bytes: gradientBytes(grads),
    };
    this.touch(s);
    return part.backward;
  }

  /** Forward, the loss on the held labels of `example_ids`, and Backward from dLoss/dY, answered once per step id. */
  private async forwardLoss(req: ForwardRequest & { example_ids: number[] }) {
    const id = this.stepIdOf(req, 'ForwardLoss');
    const s = this.sessionOf(req, 'ForwardLoss', id);
    const labels = this.opts.labels;
    if (!labels || !this.loss) throw new RemoteError(`ForwardLoss of step ${id}, but this server holds no labels; expected Forward and Backward, with the loss computed by the client`, grpc.status.FAILED_PRECONDITION);
    if ((req.micro_batches ?? 0) > 1) throw new RemoteError(`ForwardLoss of step ${id}: expected the whole batch (micro_batches 0 or 1), received micro_batches ${req.micro_batches}; the loss on held labels is not pipelined`, grpc.status.INVALID_ARGUMENT);
    const cur = s.current;
    if (cur && cur.stepId === id && cur.lossReply) {
      if (!cur.parts[0]!.xBytes.equals(Buffer.from(req.x?.data ?? [])) || cur.ids !== (req.example_ids ?? []).join(',')) throw new RemoteError(`step ${id} was recorded with another input or other examples; expected a retry to resend the same`, grpc.status.FAILED_PRECONDITION);
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
    const back = await this.backward({ step_id: id, client_id: req.client_id, dy: encodeTensor(this.loss.gradient(yTrue, yPred)) });
    const cur2 = s.current!;
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

  /** The step's weight gradients: its micro-batches' summed in micro-batch order, or the message naming those without a Backward. */
  private stepGradients(cur: StepState): (Tensor | null)[][] | string {
    const missing = Array.from({ length: cur.microBatches }, (_, k) => k).filter((k) => !cur.parts[k]?.grads);
    if (missing.length > 0) return cur.microBatches === 1 ? 'its Backward has not run' : `micro-batch ${missing.join(', ')} of ${cur.microBatches} has no Backward`;
    const parts = cur.parts as Part[];
    if (parts.length === 1) return parts[0].grads!;
    return parts[0].grads!.map((ps, i) =>
      ps.map((g, k) => {
        if (g === null) return null;
        const sum = copy(g);
        for (let m = 1; m < parts.length; m++) axpy(sum, 1, parts[m].grads![i][k]!);
        return sum;
      }),
    );
  }

  private apply(req: { step_id: number; client_id?: string }) {
    const id = this.stepIdOf(req, 'Apply');
    const s = this.sessionOf(req, 'Apply', id);
    if (id <= s.lastApplied) {
      s.repeatedApplies++;
      return { step_id: id, applied: false, applied_steps: s.appliedSteps, compute_ms: 0, server_applied_steps: this.appliedSteps };
    }
    const cur = s.current;
    if (!cur || cur.stepId !== id) throw this.notRecorded(s, id, 'Apply');
    const grads = this.stepGradients(cur);
    if (typeof grads === 'string') throw new RemoteError(`Apply of step ${id}${clientLabel(s)}, but ${grads}; expected Forward and Backward of step ${id} first`, grpc.status.FAILED_PRECONDITION);
    const nonFinite = firstNonFinite(this.stages, grads);
    if (nonFinite) throw new RemoteError(`step ${id} has a non-finite gradient (${nonFinite}); the weights are left as they were`, grpc.status.FAILED_PRECONDITION);
    const t0 = performance.now();
    let k = 0;
    for (const stage of this.stages) for (const l of stage.layers) this.optimizer!.step(l.params, grads[k++]);
    if (s.firstApplied < 0) s.firstApplied = id;
    s.lastApplied = id;
    s.appliedSteps++;
    this.appliedSteps++;
    // Written before the reply: the client checkpoints after it, so the server's newest checkpoint is never older than the client's.
    if (this.checkpoint && s.appliedSteps % this.checkpoint.every === 0) this.saveCheckpoint(s);
    const compute = performance.now() - t0;
    this.traffic.computeMs += compute;
    const t = this.traffic;
    this.opts.log?.(`step ${id}${clientLabel(s)}: received ${t.received} B, sent ${t.sent} B (messages), compute ${t.computeMs.toFixed(2)} ms, ${heldLine(cur)}`);
    this.traffic = { received: 0, sent: 0, computeMs: 0 };
    this.releaseIfIdle(s);
    return { step_id: id, applied: true, applied_steps: s.appliedSteps, compute_ms: compute, server_applied_steps: this.appliedSteps };
  }

  /** The whole-batch step `id` recorded by Forward, or FAILED_PRECONDITION naming what is recorded instead. */
  private recordedStep(req: { client_id?: string }, id: number, method: string): { cur: StepState; part: Part; tapes: GradientTape[] } {
    const s = this.sessionOf(req, method, id);
    this.touch(s);
    const cur = s.current;
    if (!cur || cur.stepId !== id) throw this.notRecorded(s, id, method);
    // The shipped Jacobians are per step: a pipelined step's micro-batches have no Jacobian call of their own.
    if (cur.microBatches !== 1) throw new RemoteError(`${method} of step ${id}, a step of ${cur.microBatches} micro-batches; expected the explicit way's steps unpipelined (micro_batches 1)`, grpc.status.FAILED_PRECONDITION);
    const part = cur.parts[0];
    if (!part) throw this.notRecorded(s, id, method);
    return { cur, part, tapes: part.runners.map((r) => r.recordedTape!) };
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
  private jacobian(req: { step_id: number; client_id?: string }): JacobianReply {
    const id = this.stepIdOf(req, 'Jacobian');
    const { cur, part, tapes } = this.recordedStep(req, id, 'Jacobian');
    if (part.jacobianReply) return part.jacobianReply;
    if (part.backward) throw new RemoteError(`step ${id}'s Backward already ran (the VJP way); expected one way per step`, grpc.status.FAILED_PRECONDITION);
    const B = part.forward.y.shape[0];
    checkShippedJacobian(this.stages.map((st, s) => ({ name: st.name, inputShape: st.inputShape, outputShape: st.outputShape, coupled: tapes[s].samplesCoupled })), B, this.dtype, this.maxBytes, "the server's");
    this.guardExplicit(B, cur.training);
    const t0 = performance.now();
    const stages = tapes.map((tape) => {
      const { J, coupled } = inputJacobian(tape);
      return { dout_din: encodeTensor(J.toDense()), samples_coupled: coupled };
    });
    const compute = performance.now() - t0;
    this.traffic.computeMs += compute;
    part.jacobianReply = {
      step_id: id,
      stages,
      compute_ms: compute,
      residual_bytes: tapes.reduce((n, t) => n + t.residualBytes(), 0),
      jacobian_bytes: stages.reduce((n, j) => n + j.dout_din.data.byteLength, 0),
    };
    return part.jacobianReply;
  }

  /**
   * The hosted weights' gradients from dLoss/dOut_s of every hosted stage, by the seed's method:
   * each stage's Jacobians w.r.t. its weights built from the recorded pass and contracted with its
   * dLoss/dOut_s (`explicitStageBackward`). Kept for Apply, as Backward's are; answered once per step id.
   */
  private backwardWeights(req: { step_id: number; client_id?: string; dout: WireTensor[] }): BackwardWeightsReply {
    const id = this.stepIdOf(req, 'BackwardWeights');
    const { cur, part, tapes } = this.recordedStep(req, id, 'BackwardWeights');
    const douts = Array.isArray(req.dout) ? req.dout : [];
    const bytes = Buffer.concat(douts.map((t) => Buffer.from(t?.data ?? [])));
    if (part.weightsReply) {
      if (!part.doutBytes!.equals(bytes)) throw new RemoteError(`step ${id}'s BackwardWeights was run with another dLoss/dOut; expected a retry to resend the same`, grpc.status.FAILED_PRECONDITION);
      return part.weightsReply;
    }
    if (part.backward) throw new RemoteError(`step ${id}'s Backward already ran (the VJP way); expected one way per step`, grpc.status.FAILED_PRECONDITION);
    if (douts.length !== this.stages.length) {
      throw new RemoteError(`expected one dLoss/dOut per hosted stage (${this.stages.length}: ${this.stages.map((st) => st.name).join(', ')}), received ${douts.length}`, grpc.status.INVALID_ARGUMENT);
    }
    const B = part.forward.y.shape[0];
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
    part.grads = grads;
    part.doutBytes = bytes;
    part.weightsReply = {
      step_id: id,
      compute_ms: compute,
      gradients_finite: nonFinite === null,
      non_finite: nonFinite ?? '',
      residual_bytes: residual,
      jacobian_bytes: jacobian,
      gradient_bytes: gradientBytes(grads),
    };
    return part.weightsReply;
  }

  private gradients(req: { step_id: number; client_id?: string }): { step_id: number; layers: WireLayer[]; applied_steps: number } {
    const id = this.stepIdOf(req, 'Gradients');
    const s = this.sessionOf(req, 'Gradients', id);
    const cur = s.current;
    if (!cur || cur.stepId !== id) throw new RemoteError(`Gradients of step ${id}, but the step recorded is ${cur ? cur.stepId : 'none'}`, grpc.status.FAILED_PRECONDITION);
    const grads = this.stepGradients(cur);
    if (typeof grads === 'string') throw new RemoteError(`Gradients of step ${id}, but ${grads}`, grpc.status.FAILED_PRECONDITION);
    // A non-trainable parameter has no gradient: on the wire, an empty float64 tensor of shape [0] stands for it (no gradient is ever empty).
    return { step_id: id, layers: grads.map((ps) => ({ params: ps.map((t) => encodeTensor(t ?? zeros([0]))) })), applied_steps: s.appliedSteps };
  }

  private weights(req: { step_id: number }): { step_id: number; layers: WireLayer[]; applied_steps: number } {
    const id = this.stepIdOf(req, 'Weights');
    return { step_id: id, layers: this.stages.flatMap((s) => s.layers.map((l) => ({ params: l.params.map((p) => encodeTensor(p.value)) }))), applied_steps: this.appliedSteps };
  }
}

/**
 * HTTP/2's default 64 KiB flow-control window makes a sender of a larger message wait for the
 * receiver's WINDOW_UPDATEs, which a client busy with its next micro-batch's forward cannot read:
 * the message would sit half sent and the pipeline would not overlap. gRPC-js has no server option
 * for the window, so its HTTP/2 server settings are widened before binding (the stream window);
 * {@link widenSessions} widens each connection's. {@link FLOW_WINDOW_BYTES} holds a micro-batch's
 * activations of the seed's CNN, and is still small enough that a caller without the token can
 * push no more than that before it is refused.
 */
function widenFlowControl(server: grpc.Server, maxBytes: number): void {
  const common = (server as unknown as { commonServerOptions?: { settings?: Record<string, unknown> } }).commonServerOptions;
  if (common) common.settings = { ...common.settings, initialWindowSize: Math.min(maxBytes, FLOW_WINDOW_BYTES) };
}

/** The connection-level window of every HTTP/2 session the server accepts, widened as {@link widenFlowControl} says why. */
function widenSessions(server: grpc.Server, maxBytes: number): void {
  const servers = (server as unknown as { http2Servers?: Map<EventEmitter, unknown> }).http2Servers;
  for (const h of servers?.keys() ?? []) h.on('session', (session: Http2Session) => session.setLocalWindowSize(Math.min(maxBytes, FLOW_WINDOW_BYTES)));
}

/**
 * Resolves on the event loop's next turn. A pipelined client sends every micro-batch's Backward at
 * once; computing the next one straight after answering one would hold that answer in gRPC's
 * write queue until the next is computed too, and the client would get both together instead of
 * working on the first meanwhile.
 */
function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** A client's session before its first step. */
function newSession(clientId: string): Session {
  return { clientId, lastApplied: -1, firstApplied: -1, appliedSteps: 0, repeatedApplies: 0, current: null, dropped: -1 };
}

/** ` of client "a"` for a named client's messages; nothing for the single-client session. */
function clientLabel(s: Session): string {
  return s.clientId === '' ? '' : ` of client ${fmtValue(s.clientId)}`;
}

/** A client id as the wire carries it: empty (the single-client session) or 1 to 64 of `[A-Za-z0-9._-]`. */
function checkClientId(id: unknown): string {
  const c = id ?? '';
  if (typeof c !== 'string' || (c !== '' && !/^[A-Za-z0-9._-]{1,64}$/.test(c))) throw new RemoteError(`expected client_id to be empty or 1 to 64 of [A-Za-z0-9._-], received ${fmtValue(c)}`, grpc.status.INVALID_ARGUMENT);
  return c;
}

/** Most micro-batches a step may be cut into. */
const MAX_MICRO_BATCHES = 4096;

/** A Forward's micro-batch fields checked: 0 or 1 micro-batches is the whole batch. */
function partOf(req: ForwardRequest, id: number): PartRequest {
  const count = Math.max(1, req.micro_batches ?? 0);
  const index = req.micro_batch ?? 0;
  if (count > MAX_MICRO_BATCHES) throw new RemoteError(`Forward of step ${id}: expected micro_batches in [0, ${MAX_MICRO_BATCHES}], received ${count}`, grpc.status.INVALID_ARGUMENT);
  if (index >= count) throw new RemoteError(`Forward of step ${id}: expected micro_batch in [0, ${count - 1}] (micro_batches ${count}), received ${index}`, grpc.status.INVALID_ARGUMENT);
  if (count === 1) return { index: 0, count: 1, rowOffset: 0, batchRows: 0 };
  const batchRows = req.batch_rows ?? 0;
  if (batchRows < count) throw new RemoteError(`Forward of step ${id}: expected batch_rows of at least micro_batches (${count}), received ${batchRows}`, grpc.status.INVALID_ARGUMENT);
  return { index, count, rowOffset: req.row_offset ?? 0, batchRows };
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
  let residual = 0;
  let cotangent = 0;
  let jacobian = 0;
  let gradient = 0;
  // A pipelined step holds every micro-batch's tapes and gradients until Apply sums them.
  for (const part of cur.parts) {
    if (!part) continue;
    const b = part.backward;
    const j = part.jacobianReply;
    const w = part.weightsReply;
    residual += b?.residual_bytes ?? w?.residual_bytes ?? j?.residual_bytes ?? 0;
    cotangent += b?.cotangent_bytes ?? 0;
    jacobian += (j?.jacobian_bytes ?? 0) + (w?.jacobian_bytes ?? 0);
    gradient += b?.gradient_bytes ?? w?.gradient_bytes ?? 0;
  }
  return `held ${fmtBytes(residual + cotangent + jacobian + gradient)} (residuals ${fmtBytes(residual)}, cotangents ${fmtBytes(cotangent)}, Jacobians ${fmtBytes(jacobian)}, gradients ${fmtBytes(gradient)})`;
}

/** Bytes of the weight gradients a step holds (a frozen parameter's null counts none). */
function gradientBytes(grads: readonly (readonly (Tensor | null)[])[]): number {
  return grads.flat().reduce((n, t) => n + (t === null ? 0 : bytesOf(t)), 0);
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

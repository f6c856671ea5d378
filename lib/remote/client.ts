/**
 * The stage client of split learning over gRPC (issue #15): a {@link StageRunner} whose stages
 * live in a {@link StageServer}, so that `vjpChain([localStage, remote], x, y, loss)` trains across
 * the wire unchanged. Only the activation (forward) and the cotangents `dy`/`dx` (backward) cross;
 * the weight gradients stay on the server, whose optimizer {@link RemoteStageRunner.apply} steps.
 * For the explicit way with the Jacobian shipped, {@link RemoteStageRunner.jacobians} and
 * {@link RemoteStageRunner.backwardWeights} take the server's batch Jacobians instead of `dx`.
 * Every call has a deadline; every reply's tensor is checked as the server checks the client's.
 * @module
 */
import * as grpc from '@grpc/grpc-js';
import type { StageRunner, TensorMessage } from '../chain.js';
import { fromMessage, toMessage } from '../chain.js';
import { ConfigError, PeerError, fmtShape, fmtValue } from '../errors.js';
import type { OptimizerConfig } from '../optimizers.js';
import type { LossName } from '../losses.js';
import type { DType, Tensor } from '../tensor.js';
import type { Sequential } from '../sequential.js';
import { checkShippedJacobian, shippedJacobianShape } from './explicit.js';
import { signatureMismatch, stagesSignature } from './signature.js';
import { DEFAULT_MAX_MESSAGE_BYTES, FLOW_WINDOW_BYTES, RemoteError, TOKEN_KEY, type WireLayer, type WireTensor, decodeTensor, encodeTensor, grpcAddress, parseAddress, stageService, statusName } from './wire.js';

/** Options of {@link RemoteStageRunner.connect}. */
export interface RemoteStageOptions {
  /** `host:port` of the server, a loopback host: `127.0.0.1:50051`. */
  address: string;
  /** The server's shared token, if it has one. */
  token?: string;
  /** Deadline of every call, in milliseconds; default 30000. */
  timeoutMs?: number;
  /** Largest message received or sent, in bytes (gRPC's limits too); default 64 MiB. */
  maxMessageBytes?: number;
  /** Retries of a call the transport could not deliver (UNAVAILABLE), with the same step id; default 2. */
  retries?: number;
  /**
   * Whether {@link RemoteStageRunner.gradients} fetches the server's weight gradients (for checks):
   * false (the default) keeps them where the weights are and answers one empty list per layer.
   */
  fetchGradients?: boolean;
  /**
   * Many clients: this data holder's id on a server shared with others (1 to 64 of
   * `[A-Za-z0-9._-]`): its step ids and applied steps are its own, the server's stages everyone's.
   * Default none: the single-client session.
   */
  clientId?: string;
  /**
   * The client's copy of the whole split model (`model.split(points)`): the architecture of the
   * stages the server says it hosts (from its first layer on) is checked against this copy at
   * connect, and another model is refused before any step, naming the first layer that differs.
   * Default: not checked.
   */
  model?: readonly Sequential[];
  /** The loss by its Keras name, sent to a server that holds the labels (see {@link RemoteStageRunner.forwardLoss}). */
  loss?: LossName;
  /** TLS: the PEM certificate (or CA) the server's certificate must chain to, and name `localhost`; without it the wire is plaintext. */
  tls?: {
    /** The trusted certificate, PEM. */
    ca: string | Buffer
  };
}

/** One stage the server hosts, as its Open answered. */
export interface RemoteStageInfo {
  /** `model_1`. */
  name: string;
  /** Global index of its first layer. */
  firstLayer: number;
  /** Its layer count. */
  layers: number;
  /** Per-sample input shape. */
  inputShape: number[];
  /** Per-sample output shape. */
  outputShape: number[];
}

/** What crossed the wire since the last {@link RemoteStageRunner.takeTraffic}. */
export interface WireTraffic {
  /** Calls made. */
  calls: number;
  /** Bytes of the messages sent (protobuf payload plus gRPC's 5-byte framing; HTTP/2 headers not counted). */
  sentBytes: number;
  /** Bytes of the messages received, counted alike. */
  receivedBytes: number;
  /** Round-trip milliseconds less what the server said it computed: the wire's share (summed over calls; overlapping calls each count theirs). */
  wireMs: number;
  /** Milliseconds the server computed. */
  remoteComputeMs: number;
  /** The most calls that were in flight at once (1 for sequential steps; up to the micro-batches when pipelined). */
  maxInFlight: number;
}

/** Where a micro-batch sits in its step's batch (see {@link RemoteStageRunner.forwardPart}). */
export interface MicroBatch {
  /** Its index, 0-based, and how many the step's batch is cut into. */
  index: number;
  /** Micro-batches in the step. */
  count: number;
  /** Its first row in the whole batch. */
  rowOffset: number;
  /** Rows of the whole batch. */
  batchRows: number;
}

/** What the hosted stages held for the current step, as the server reported it. */
export interface ServerHeld {
  /** Bytes of the residuals its tapes saved. */
  residualBytes: number;
  /** Bytes of the cotangents `dy` in and `dx` out (the VJP way). */
  cotangentBytes: number;
  /** Bytes of the Jacobians it built (the explicit way with the Jacobian shipped: those shipped and those w.r.t. its weights). */
  jacobianBytes: number;
  /** Bytes of its weight gradients. */
  gradientBytes: number;
}

/** One hosted stage's Jacobian w.r.t. its input, as {@link RemoteStageRunner.jacobians} answers it. */
export interface ShippedJacobian {
  /** dOut/dIn `[B, ...out, ...in]`, or `[B, ...out, B, ...in]` when `coupled`. */
  J: Tensor;
  /** True for a stage whose samples are coupled (the full Jacobian). */
  coupled: boolean;
}

/** Whether the gradients a server holds for a step are finite. */
export interface GradientsFinite {
  /** True when every one is finite. */
  ok: boolean;
  /** Where the first non-finite one is (`dense_1.kernel: NaN at flat index 3`), or empty. */
  where: string;
}

/** What {@link RemoteStageRunner.apply} answers. */
export interface ApplyResult {
  /** True when this call moved the server's weights; false when the step had already been applied (a retry). */
  applied: boolean;
  /** Steps the server has applied in all. */
  appliedSteps: number;
}

type Callback = (err: grpc.ServiceError | null, rep?: unknown) => void;
type UnaryMethod = (req: unknown, md: grpc.Metadata, opts: grpc.CallOptions, cb: Callback) => grpc.ClientUnaryCall;

const none = (): WireTraffic => ({ calls: 0, sentBytes: 0, receivedBytes: 0, wireMs: 0, remoteComputeMs: 0, maxInFlight: 0 });

/**
 * The downstream stages on a {@link StageServer}, as one {@link StageRunner}. Before each step's
 * `forward`, {@link beginStep} gives the step id and the step's seed (the masks are drawn on the
 * server, from the seed, as a single-process run draws them).
 * @example
 * const remote = await RemoteStageRunner.connect({ address: '127.0.0.1:50051' }, { name: 'adam', learning_rate: 1e-3 });
 * remote.beginStep(0, { training: true, seed: stepSeed(0, 0) });
 * const res = await vjpChain([new LocalStageRunner(model_0, opts), remote], x, y, 'binary_crossentropy', opts);
 * await remote.apply(); // the server's optimizer steps its weights, once for step 0
 * remote.close();
 */
export class RemoteStageRunner implements StageRunner {
  private step: { id: number; training: boolean; seed: number } | null = null;
  private batch = 0;
  private lastMemory = { residualBytes: 0, cotangentBytes: 0, gradientBytes: 0 };
  private finite: GradientsFinite = { ok: true, where: '' };
  private traffic: WireTraffic = none();
  private held: ServerHeld = { residualBytes: 0, cotangentBytes: 0, jacobianBytes: 0, gradientBytes: 0 };
  private inFlight = 0;
  private taken = { sent: 0, received: 0 };
  private readonly timeoutMs: number;
  /** How many labelled examples the server holds (0: none; the loss is computed by the caller). */
  labels = 0;
  private readonly retries: number;

  private constructor(
    private readonly client: grpc.Client,
    private readonly counters: { sent: number; received: number },
    private readonly opts: RemoteStageOptions,
    /** The stages the server hosts, in order. */
    readonly stages: readonly RemoteStageInfo[],
    /** Their dtype, that of every tensor on the wire. */
    readonly dtype: DType,
    /** The server's largest message. */
    readonly maxMessageBytes: number,
    /** The last step id the server had applied when this runner connected (-1 for none). */
    readonly lastApplied: number,
  ) {
    this.timeoutMs = opts.timeoutMs ?? 30000;
    this.retries = opts.retries ?? 2;
  }

  /**
   * Connects and opens the session: sends the optimizer of the hosted stages, learns what they
   * are. The server must be listening already; a silent one fails at the deadline.
   */
  static async connect(opts: RemoteStageOptions, optimizer: OptimizerConfig, firstStep = 0): Promise<RemoteStageRunner> {
    if (!opts || typeof opts !== 'object') throw new ConfigError(`RemoteStageRunner.connect: expected options {address, ...}, received ${fmtValue(opts)}`);
    const { host, port } = parseAddress(opts.address, 'RemoteStageRunner address');
    const timeoutMs = opts.timeoutMs ?? 30000;
    if (!Number.isSafeInteger(timeoutMs) || timeoutMs <= 0) throw new ConfigError(`RemoteStageRunner: expected timeoutMs to be a positive integer, received ${fmtValue(opts.timeoutMs)}`);
    const retries = opts.retries ?? 2;
    if (!Number.isSafeInteger(retries) || retries < 0 || retries > 10) throw new ConfigError(`RemoteStageRunner: expected retries to be an integer in [0, 10], received ${fmtValue(opts.retries)}`);
    const max = opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    if (opts.clientId !== undefined && (typeof opts.clientId !== 'string' || !/^[A-Za-z0-9._-]{1,64}$/.test(opts.clientId))) throw new ConfigError(`RemoteStageRunner: expected clientId to be 1 to 64 of [A-Za-z0-9._-], received ${fmtValue(opts.clientId)}`);
    const counters = { sent: 0, received: 0 };
    const def: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
    for (const [name, m] of Object.entries(stageService())) {
      def[name] = {
        ...m,
        requestSerialize: (v: unknown) => {
          const b = m.requestSerialize(v);
          counters.sent += b.length + 5;
          return b;
        },
        responseDeserialize: (b: Buffer) => {
          counters.received += b.length + 5;
          return m.responseDeserialize(b);
        },
      };
    }
    const Client = grpc.makeGenericClientConstructor(def, 'Stage');
    const creds = opts.tls ? grpc.credentials.createSsl(Buffer.from(opts.tls.ca)) : grpc.credentials.createInsecure();
    const client = new Client(grpcAddress(host, port), creds, {
      'grpc.max_receive_message_length': max,
      'grpc.max_send_message_length': max,
      // A reply as large as the largest message flows without waiting for this side's WINDOW_UPDATEs, which a busy pipelined step could not send in time.
      'grpc-node.flow_control_window': Math.min(max, FLOW_WINDOW_BYTES),
      // The loopback certificate is checked for the name localhost: an IP address is not a TLS server name (RFC 6066).
      ...(opts.tls ? { 'grpc.ssl_target_name_override': 'localhost' } : {}),
    }) as unknown as grpc.Client;
    const probe = new RemoteStageRunner(client, counters, { ...opts, timeoutMs, retries }, [], 'float64', max, -1);
    try {
      const rep = (await probe.call('Open', firstStep, { step_id: firstStep, optimizer_json: JSON.stringify(optimizer), loss: opts.loss ?? '' })) as {
        stages: { name: string; first_layer: number; layers: number; input_shape: number[]; output_shape: number[] }[];
        dtype: string;
        max_message_bytes: number;
        last_applied: number;
        labels: number;
        stages_signature: string;
      };
      if (opts.model) {
        // Shapes on the wire can agree while the models do not (another --units behind the same input): one model or none.
        const first = rep.stages[0]?.first_layer;
        const mine = opts.model.filter((st) => st.layerOffset >= first);
        const why = signatureMismatch(rep.stages_signature ?? '', stagesSignature(mine));
        if (why) throw new ConfigError(`stage server ${opts.address} hosts another model than this client's: ${why}; expected both sides started from the same model (the same --model file and --split, or --cnn with the same --filters, --units and --dtype)`);
      }
      if (rep.dtype !== 'float64' && rep.dtype !== 'float32') throw new RemoteError(`stage server ${opts.address}: expected dtype float64 or float32, received ${fmtValue(rep.dtype)}`, grpc.status.INTERNAL);
      const stages = rep.stages.map((s) => ({ name: s.name, firstLayer: s.first_layer, layers: s.layers, inputShape: s.input_shape, outputShape: s.output_shape }));
      if (stages.length === 0) throw new RemoteError(`stage server ${opts.address}: hosts no stage`, grpc.status.INTERNAL);
      const runner = new RemoteStageRunner(client, counters, { ...opts, timeoutMs, retries }, stages, rep.dtype, Math.min(max, rep.max_message_bytes), rep.last_applied);
      runner.labels = rep.labels;
      return runner;
    } catch (e) {
      client.close();
      throw e;
    }
  }

  /**
   * Tells the server this client resumes after `steps` steps (from its own checkpoint): a server
   * that has applied another number restores its checkpoint at `steps`, or refuses with
   * FAILED_PRECONDITION when it has none. Answers whether it restored and where it stands.
   */
  async resume(steps: number, optimizer: OptimizerConfig): Promise<{
    /** True when the server rolled back to its checkpoint at `steps`. */
    restored: boolean;
    /** Steps the server has applied now (`steps`). */
    appliedSteps: number
  }> {
    if (!Number.isSafeInteger(steps) || steps < 0) throw new ConfigError(`RemoteStageRunner.resume: expected a non-negative integer step count, received ${fmtValue(steps)}`);
    const rep = (await this.call('Open', steps, { step_id: steps, optimizer_json: JSON.stringify(optimizer), loss: this.opts.loss ?? '', resume: true, resume_steps: steps })) as { restored: boolean; applied_steps: number };
    return { restored: rep.restored, appliedSteps: rep.applied_steps };
  }

  /** The hosted stages' names, `model_1+model_2`. */
  get name(): string {
    return this.stages.map((s) => s.name).join('+');
  }

  /** Per-sample input shape of the first hosted stage. */
  get inputShape(): number[] {
    return this.stages[0].inputShape;
  }

  /** Per-sample output shape of the last hosted stage. */
  get outputShape(): number[] {
    return this.stages[this.stages.length - 1].outputShape;
  }

  /** Sets the step the next forward, backward and apply belong to, and the forward's mode and seed. */
  beginStep(id: number, opts: { training?: boolean; seed?: number } = {}): void {
    if (!Number.isSafeInteger(id) || id < 0) throw new ConfigError(`RemoteStageRunner.beginStep: expected a non-negative integer step id, received ${fmtValue(id)}`);
    this.step = { id, training: opts.training ?? false, seed: (opts.seed ?? 0) >>> 0 };
    this.finite = { ok: true, where: '' };
  }

  private current(what: string): { id: number; training: boolean; seed: number } {
    if (!this.step) throw new ConfigError(`${this.name}: ${what} before beginStep; call beginStep(stepId, { training, seed }) first`);
    return this.step;
  }

  async forward(x: TensorMessage): Promise<TensorMessage> {
    const s = this.current('forward');
    const xt = fromMessage(x, `${this.name} forward x`);
    if (fmtShape(xt.shape.slice(1)) !== fmtShape(this.inputShape)) throw new ConfigError(`${this.name} forward x: expected shape [B, ${this.inputShape.join(', ')}], received ${fmtShape(xt.shape)}`);
    const rep = (await this.call('Forward', s.id, { step_id: s.id, training: s.training, seed: s.seed, x: encodeTensor(xt) })) as { y: WireTensor };
    this.batch = xt.shape[0];
    this.held = { residualBytes: 0, cotangentBytes: 0, jacobianBytes: 0, gradientBytes: 0 };
    return toMessage(this.decode(rep.y, this.outputShape, `Forward y of step ${s.id}`));
  }

  async backward(dy: TensorMessage): Promise<TensorMessage> {
    const s = this.current('backward');
    const dyt = fromMessage(dy, `${this.name} backward dy`);
    const rep = (await this.call('Backward', s.id, { step_id: s.id, dy: encodeTensor(dyt) })) as {
      dx: WireTensor;
      gradients_finite: boolean;
      non_finite: string;
      residual_bytes: number;
      cotangent_bytes: number;
      gradient_bytes: number;
    };
    this.finite = { ok: rep.gradients_finite, where: rep.non_finite };
    this.lastMemory = { residualBytes: rep.residual_bytes, cotangentBytes: rep.cotangent_bytes, gradientBytes: rep.gradient_bytes };
    this.held = { ...this.lastMemory, jacobianBytes: 0 };
    return toMessage(this.decode(rep.dx, this.inputShape, `Backward dx of step ${s.id}`));
  }

  /**
   * Pipelining: the forward pass of one micro-batch of the current step, `x` its rows
   * `[part.rowOffset, part.rowOffset + b)` of a batch of `part.batchRows` (Dropout on the server
   * draws those rows of the whole batch's masks). Several may be in flight at once; the server
   * records each on its own tapes. Resolves to its output `[b, ...out]`.
   */
  async forwardPart(x: Tensor, part: MicroBatch): Promise<Tensor> {
    const s = this.current('forwardPart');
    if (fmtShape(x.shape.slice(1)) !== fmtShape(this.inputShape)) throw new ConfigError(`${this.name} forwardPart x: expected shape [b, ${this.inputShape.join(', ')}], received ${fmtShape(x.shape)}`);
    const req = { step_id: s.id, training: s.training, seed: s.seed, x: encodeTensor(x), micro_batch: part.index, micro_batches: part.count, row_offset: part.rowOffset, batch_rows: part.batchRows };
    const rep = (await this.call('Forward', s.id, req)) as { y: WireTensor };
    return this.decodeRows(rep.y, x.shape[0], this.outputShape, `Forward y of step ${s.id}, micro-batch ${part.index}`);
  }

  /**
   * Pipelining: the backward pass of micro-batch `index` of the current step, `dy` its rows of the
   * batch's cotangent. Resolves to its `dx` and whether the weight gradients it left on the server
   * are finite; Apply then sums every micro-batch's and steps once.
   */
  async backwardPart(dy: Tensor, index: number): Promise<{
    /** dLoss/dX of the micro-batch's rows. */
    dx: Tensor;
    /** Whether its weight gradients are finite. */
    finite: GradientsFinite
  }> {
    const s = this.current('backwardPart');
    const rep = (await this.call('Backward', s.id, { step_id: s.id, dy: encodeTensor(dy), micro_batch: index })) as { dx: WireTensor; gradients_finite: boolean; non_finite: string };
    const finite = { ok: rep.gradients_finite, where: rep.non_finite };
    if (!finite.ok && this.finite.ok) this.finite = finite;
    return { dx: this.decodeRows(rep.dx, dy.shape[0], this.inputShape, `Backward dx of step ${s.id}, micro-batch ${index}`), finite };
  }

  /**
   * For a server that holds the labels: the forward pass, the loss on the labels of `exampleIds`
   * (one index per row of `x`) and the backward pass, in one call. Returns the loss, how many
   * examples were right, and the input's cotangent `dx` (`[B, ...in]`); the labels stay there.
   */
  async forwardLoss(x: TensorMessage, exampleIds: readonly number[]): Promise<{
    /** The batch's loss. */
    loss: number;
    /** Examples the prediction got right. */
    correct: number;
    /** dLoss/dX `[B, ...in]`. */
    dx: TensorMessage
  }> {
    const s = this.current('forwardLoss');
    const xt = fromMessage(x, `${this.name} forwardLoss x`);
    const rep = (await this.call('ForwardLoss', s.id, { step_id: s.id, training: s.training, seed: s.seed, x: encodeTensor(xt), example_ids: exampleIds.slice() })) as {
      loss: number;
      correct: number;
      dx: WireTensor;
      gradients_finite: boolean;
      non_finite: string;
    };
    this.batch = xt.shape[0];
    this.finite = { ok: rep.gradients_finite, where: rep.non_finite };
    return { loss: rep.loss, correct: rep.correct, dx: toMessage(this.decode(rep.dx, this.inputShape, `ForwardLoss dx of step ${s.id}`)) };
  }

  /**
   * The explicit way with the Jacobian shipped: each hosted stage's batch Jacobian dOut_s/dIn_s
   * (`[B, ...out_s, ...in_s]`) of this step's forward, in order, for the caller to contract with
   * dLoss/dOut_s. Refused here, from the shapes and before the call, when the reply could not fit
   * in the largest message this client and the server accept.
   * @throws RemoteError RESOURCE_EXHAUSTED naming the size, the limit and how to raise it.
   */
  async jacobians(): Promise<ShippedJacobian[]> {
    const s = this.current('jacobians');
    const B = this.batch;
    if (B === 0) throw new ConfigError(`${this.name}: jacobians before forward; run forward(x) for step ${s.id} first`);
    checkShippedJacobian(this.stages, B, this.dtype, this.maxMessageBytes, "the connection's");
    const rep = (await this.call('Jacobian', s.id, { step_id: s.id })) as { stages: { dout_din: WireTensor; samples_coupled: boolean }[]; residual_bytes: number; jacobian_bytes: number };
    if (!Array.isArray(rep.stages) || rep.stages.length !== this.stages.length) throw new RemoteError(`stage server ${this.opts.address} Jacobian of step ${s.id}: expected one Jacobian per hosted stage (${this.stages.length}), received ${Array.isArray(rep.stages) ? rep.stages.length : fmtValue(rep.stages)}`, grpc.status.INTERNAL);
    this.held = { ...this.held, residualBytes: rep.residual_bytes, jacobianBytes: this.held.jacobianBytes + rep.jacobian_bytes };
    return rep.stages.map((j, k) => {
      const st = this.stages[k];
      const coupled = j.samples_coupled === true;
      return { J: decodeTensor(j.dout_din, { shape: shippedJacobianShape({ ...st, coupled }, B), dtype: this.dtype, maxBytes: this.maxMessageBytes }, `stage server ${this.opts.address} Jacobian ${st.name} dOut/dIn of step ${s.id}`), coupled };
    });
  }

  /**
   * The explicit way with the Jacobian shipped: sends dLoss/dOut_s of every hosted stage
   * (`[B, ...out_s]`, in order; the last is dLoss/dY), from which the server builds and contracts
   * its weights' Jacobians; the gradients stay there for {@link RemoteStageRunner.apply}.
   */
  async backwardWeights(douts: readonly Tensor[]): Promise<void> {
    const s = this.current('backwardWeights');
    if (!Array.isArray(douts) || douts.length !== this.stages.length) throw new ConfigError(`${this.name} backwardWeights: expected one dLoss/dOut per hosted stage (${this.stages.length}), received ${Array.isArray(douts) ? douts.length : fmtValue(douts)}`);
    const rep = (await this.call('BackwardWeights', s.id, { step_id: s.id, dout: douts.map((t) => encodeTensor(t)) })) as { gradients_finite: boolean; non_finite: string; residual_bytes: number; jacobian_bytes: number; gradient_bytes: number };
    this.finite = { ok: rep.gradients_finite, where: rep.non_finite };
    this.lastMemory = { residualBytes: rep.residual_bytes, cotangentBytes: 0, gradientBytes: rep.gradient_bytes };
    this.held = { residualBytes: rep.residual_bytes, cotangentBytes: 0, jacobianBytes: this.held.jacobianBytes + rep.jacobian_bytes, gradientBytes: rep.gradient_bytes };
  }

  /** What the hosted stages held for the current step, as the server reported it (zeros before its backward). */
  get serverHeld(): ServerHeld {
    return { ...this.held };
  }

  /** With `fetchGradients`, the server's weight gradients of this step; else one empty list per hosted layer (they stay on the server). */
  async gradients(): Promise<(TensorMessage | null)[][]> {
    const s = this.current('gradients');
    const layers = this.stages.reduce((n, st) => n + st.layers, 0);
    if (!this.opts.fetchGradients) return Array.from({ length: layers }, () => []);
    // The server's empty [0] tensor stands for a non-trainable parameter's absent gradient.
    return (await this.layers('Gradients', s.id)).map((ps) => ps.map((t) => (t.shape.length === 1 && t.shape[0] === 0 ? null : toMessage(t))));
  }

  async memory(): Promise<{
    /** Bytes of the residuals the server's tapes saved. */
    residualBytes: number;
    /** Bytes of the cotangents `dy` in and `dx` out, on the server. */
    cotangentBytes: number;
    /** Bytes of the weight gradients the server holds. */
    gradientBytes: number
  }> {
    return { ...this.lastMemory };
  }

  /** Whether every weight gradient the server holds for this step is finite, and if not, where the first is not. */
  get gradientsFinite(): GradientsFinite {
    return { ...this.finite };
  }

  /** The server's optimizer step for the current step id; `applied` is false when the server had already applied it (a retry). */
  async apply(): Promise<ApplyResult> {
    const s = this.current('apply');
    const rep = (await this.call('Apply', s.id, { step_id: s.id })) as { applied: boolean; applied_steps: number };
    return { applied: rep.applied, appliedSteps: rep.applied_steps };
  }

  /** The hosted weights as they are now, per hosted layer per parameter. */
  async weights(): Promise<Tensor[][]> {
    return this.layers('Weights', this.step?.id ?? 0);
  }

  /** What crossed the wire since the last call, and resets the count. */
  takeTraffic(): WireTraffic {
    // Bytes from the channel's counters, not per call: calls in flight at once would each count the others'.
    const t = { ...this.traffic, sentBytes: this.counters.sent - this.taken.sent, receivedBytes: this.counters.received - this.taken.received };
    this.taken = { ...this.counters };
    this.traffic = none();
    return t;
  }

  /** Closes the channel. */
  close(): void {
    this.client.close();
  }

  private async layers(method: 'Gradients' | 'Weights', id: number): Promise<Tensor[][]> {
    const rep = (await this.call(method, id, { step_id: id })) as { layers: WireLayer[] };
    // Shapes come from the server's own stages here; the checks that remain are dtype, length, finiteness.
    return rep.layers.map((l, i) => l.params.map((p, k) => decodeTensor(p, { shape: p.shape ?? [], dtype: this.dtype, maxBytes: this.maxMessageBytes }, `${method} layer ${i} param ${k}`)));
  }

  private decode(m: WireTensor, perSample: readonly number[], what: string): Tensor {
    return this.decodeRows(m, this.batch || null, perSample, what);
  }

  private decodeRows(m: WireTensor, rows: number | null, perSample: readonly number[], what: string): Tensor {
    return decodeTensor(m, { shape: [rows, ...perSample], dtype: this.dtype, maxBytes: this.maxMessageBytes }, `stage server ${this.opts.address} ${what}`);
  }

  /** One unary call with a deadline; UNAVAILABLE is retried (same request, same step id), anything else is reported. */
  private async call(method: string, stepId: number, req: unknown): Promise<unknown> {
    const fn = (this.client as unknown as Record<string, UnaryMethod>)[method].bind(this.client);
    // Every request names its client: the server keeps each one's step ids apart.
    if (this.opts.clientId !== undefined) req = { ...(req as object), client_id: this.opts.clientId };
    const md = new grpc.Metadata();
    if (this.opts.token !== undefined) md.set(TOKEN_KEY, this.opts.token);
    for (let attempt = 0; ; attempt++) {
      const t0 = performance.now();
      this.inFlight++;
      this.traffic.maxInFlight = Math.max(this.traffic.maxInFlight, this.inFlight);
      try {
        const rep = await new Promise<unknown>((resolve, reject) => {
          fn(req, md, { deadline: Date.now() + this.timeoutMs }, (err, r) => {
            this.inFlight--;
            if (err) reject(err);
            else resolve(r);
          });
        });
        const ms = performance.now() - t0;
        const compute = (rep as { compute_ms?: number }).compute_ms ?? 0;
        this.traffic.calls++;
        this.traffic.remoteComputeMs += compute;
        this.traffic.wireMs += Math.max(0, ms - compute);
        return rep;
      } catch (e) {
        const err = e as grpc.ServiceError;
        const where = `stage server ${this.opts.address}`;
        if (err.code === grpc.status.DEADLINE_EXCEEDED) {
          throw new PeerError(`${where}: ${method} of step ${stepId} got no answer within the deadline of ${this.timeoutMs} ms (DEADLINE_EXCEEDED); the server is stalled, overloaded or gone`, this.opts.address, this.timeoutMs);
        }
        if (err.code === grpc.status.UNAVAILABLE && attempt < this.retries) {
          // Bounded: at most `retries` more tries, 100 ms then 200 ms... apart.
          await new Promise((r) => setTimeout(r, 100 * 2 ** attempt));
          continue;
        }
        if (err.code === grpc.status.UNAVAILABLE) {
          throw new PeerError(`${where}: ${method} of step ${stepId} could not reach it (${attempt + 1} ${attempt === 0 ? 'try' : 'tries'}, deadline ${this.timeoutMs} ms each): UNAVAILABLE: ${err.details || err.message}`, this.opts.address, this.timeoutMs);
        }
        if (typeof err.code === 'number') {
          throw new RemoteError(`${where} refused ${method} of step ${stepId}${attempt > 0 ? ` after ${attempt + 1} tries` : ''}: ${statusName(err.code)}: ${err.details || err.message}`, err.code);
        }
        throw e;
      }
    }
  }
}

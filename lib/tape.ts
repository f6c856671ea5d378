/**
 * GradientTape: records one forward pass of a model (a stage) and answers derivative questions
 * about it, named after TensorFlow's `tf.GradientTape`: `batchJacobian`, `jacobian` and
 * `gradient` (with `outputGradients`, the VJP).
 *
 * The pass is recorded once: every layer's output and every layer's saved residuals (the Dropout
 * mask included), so each later question differentiates the very function that ran. Jacobians are
 * built by forward-mode dual numbers from the recorded residuals (no second forward pass);
 * gradients are one reverse sweep over them. The tape is persistent (ask as often as you like),
 * and it refuses to answer once the model's weights have changed, since its residuals then
 * describe a function that no longer exists.
 * @module
 */
import { JacobianChainError, fmtShape } from './errors.js';
import { DenseJacobian, type Jacobian, type JacobianOptions, type SparseJacobianOptions, fullJacobianWrtInput, jacobianWrtInput, jacobianWrtWeights } from './jacobian.js';
import { type Cotangents, type Differentiable, type Forward, type Layer, type Param, type Tangents, isTrainable } from './layers/layer.js';
import { type Loss, type LossSpec, lossFrom } from './losses.js';
import { recycleBuffer } from './buffer-pool.js';
import { type SequentialForwardOptions, type SequentialSaved, Sequential } from './sequential.js';
import { type StreamedContraction, type StreamedOptions, streamedInputGradient, streamedWeightGradients } from './streamed.js';
import { type Tensor, assertShape, contiguous, dtypeOf, tensor, zeros } from './tensor.js';

/** A tape was misused: nothing recorded, a tensor it never saw, or weights changed since recording. */
export class TapeError extends JacobianChainError {}

/** What a gradient or Jacobian may be taken with respect to: a recorded tensor, or a parameter (or its value). */
export type Source = Tensor | Param;

/** Options of {@link GradientTape.gradient}. */
export interface GradientOptions {
  /**
   * The cotangent of the target (`[B, ...out]`): `gradient` then returns the VJP
   * `outputGradients · ∂target/∂source`. Default all ones, as TensorFlow.
   */
  outputGradients?: Tensor;
}

/** The weights a pass was recorded with: which values, and a bitwise fingerprint of each. */
interface Stamp {
  params: Param[];
  values: Tensor[];
  hashes: number[];
  /** The recorded input's fingerprint: an input edited in place after the pass would make its residuals lie. */
  input: number;
}

/**
 * A tape over one model (a stage): records one forward pass, then answers `batchJacobian`,
 * `jacobian` and `gradient` about the tensors of that pass.
 * @example
 * const tape_2 = new GradientTape(layer_2);
 * const out_layer_2 = tape_2.forward(out_layer_1);
 * const loss = tape_2.loss('mse', y);
 * const dOut2_dOut1 = tape_2.batchJacobian(out_layer_2, out_layer_1);   // [3, 1, 8, 8, 6]
 * const dOut2_dWeights2 = tape_2.jacobian(out_layer_2, layer_2.params); // [3, 1, 384, 1], [3, 1, 1]
 * const [dLoss_dOut2] = tape_2.gradient(loss, [out_layer_2]);           // [3, 1]
 * const [dLoss_dOut1, ...dLoss_dWeights2] = tape_2.gradient(out_layer_2, [out_layer_1, ...layer_2.params], { outputGradients: dLoss_dOut2 });
 */
export class GradientTape {
  /** The model (stage) whose pass this tape records. */
  readonly model: Sequential;
  private pass: Forward<SequentialSaved> | null = null;
  private stamp: Stamp | null = null;
  private recordedLoss: { value: Tensor; loss: Loss; yTrue: Tensor } | null = null;
  /** Whether the recorded pass ran in training mode: the Jacobian builders must know (a coupling layer is refused by the batch Jacobian). */
  private training = false;

  constructor(model: Sequential) {
    if (!(model instanceof Sequential)) throw new TapeError(`GradientTape: expected a Sequential model (a stage), received ${describeValue(model)}`);
    this.model = model;
  }

  /** Records a forward pass and returns the tape with the output: `const { tape, y } = GradientTape.record(stage, x)`. */
  static record(model: Sequential, x: Tensor, opts: SequentialForwardOptions = {}): {
    /** The new tape, holding the pass. */
    tape: GradientTape;
    /** The recorded output `[B, ...out]`. */
    y: Tensor
  } {
    const tape = new GradientTape(model);
    return { tape, y: tape.forward(x, opts) };
  }

  /**
   * Runs and records the model's forward pass on `x` (`[B, ...in]`); returns its output `[B, ...out]`.
   * A tape records one pass: make a new tape for another.
   *
   * The recording commits the pass: each layer's state update that a training forward computed
   * (BatchNormalization's moving statistics) is applied here, once, as Keras' training call does.
   * Forward itself never mutates, so the Jacobian builders and finite differences, which run it
   * again, leave the state alone. `commit: false` records without applying.
   */
  forward(x: Tensor, opts: SequentialForwardOptions & {
    /** Apply the state updates of a training pass (default true). */
    commit?: boolean
  } = {}): Tensor {
    if (this.pass) throw new TapeError(`${this.describe()}: already recorded a forward pass; a tape records one pass, make a new GradientTape for another`);
    const { commit = true, ...fo } = opts;
    const pass = this.model.forward(x, fo);
    if (commit) this.model.applyUpdates(pass.saved);
    // Stamped after the commit: a training pass does not read the state it updates.
    this.stamp = stampOf(this.model.params, x);
    this.pass = pass;
    this.training = fo.training ?? false;
    return this.pass.y;
  }

  /** The recorded input `[B, ...in]`. */
  get input(): Tensor {
    return this.recorded().saved.input;
  }

  /** The recorded output `[B, ...out]`. */
  get output(): Tensor {
    return this.recorded().y;
  }

  /** `[input, output of layer 0, …, output of layer L-1]`: every tensor the tape can differentiate. */
  get activations(): readonly Tensor[] {
    const { saved } = this.recorded();
    return [saved.input, ...saved.outputs];
  }

  /**
   * Records the loss of the recorded output against `yTrue` and returns it as a scalar tensor
   * (shape `[]`), which {@link GradientTape.gradient} accepts as its target.
   */
  loss(loss: LossSpec, yTrue: Tensor): Tensor {
    const fn = lossFrom(loss);
    const value = fn.value(yTrue, this.output);
    this.recordedLoss = { value: tensor([value], [], dtypeOf(this.output)), loss: fn, yTrue };
    return this.recordedLoss.value;
  }

  /** The recorded loss value. */
  get lossValue(): number {
    if (!this.recordedLoss) throw new TapeError(`${this.describe()}: no loss recorded; call tape.loss(lossName, yTrue) first`);
    return this.recordedLoss.value.data[0];
  }

  /**
   * Jacobian of a recorded tensor w.r.t. an earlier one, per sample, built by forward-mode dual
   * numbers over the recorded residuals: `[B, ...out, ...in]`, TensorFlow's `batch_jacobian`.
   * @example
   * const J = tape.batchJacobian(tape.output, tape.input); // [B, ...outputShape, ...inputShape]
   */
  batchJacobian(output: Tensor, input: Tensor, opts: JacobianOptions | SparseJacobianOptions = {}): Jacobian {
    this.assertFresh();
    const k = this.indexOf(output, 'last', 'batchJacobian output');
    const j = this.indexOf(input, 'first', 'batchJacobian input');
    if (j >= k) {
      throw new TapeError(`${this.describe()} batchJacobian: expected the output to be recorded after the input, received output = ${this.nameOf(k)} and input = ${this.nameOf(j)}`);
    }
    const view = this.segment(j, k, []);
    return jacobianWrtInput(view, input, { ...opts, training: this.training });
  }

  /**
   * The full Jacobian of a recorded tensor w.r.t. an earlier one, cross-sample terms included:
   * `[B, ...out, B, ...in]`, built by forward-mode dual numbers over the recorded residuals (always
   * dense). What a stage whose samples are coupled (BatchNormalization in training) needs, where
   * {@link GradientTape.batchJacobian} refuses.
   */
  fullJacobian(output: Tensor, input: Tensor, opts: JacobianOptions | SparseJacobianOptions = {}): DenseJacobian {
    this.assertFresh();
    const k = this.indexOf(output, 'last', 'fullJacobian output');
    const j = this.indexOf(input, 'first', 'fullJacobian input');
    if (j >= k) {
      throw new TapeError(`${this.describe()} fullJacobian: expected the output to be recorded after the input, received output = ${this.nameOf(k)} and input = ${this.nameOf(j)}`);
    }
    return fullJacobianWrtInput(this.segment(j, k, []), input, { tangents: opts.tangents, memoryBudget: opts.memoryBudget, onProgress: opts.onProgress, training: this.training });
  }

  /** Whether the recorded pass couples the samples of its batch (a training BatchNormalization): then ask {@link GradientTape.fullJacobian}. */
  get samplesCoupled(): boolean {
    this.recorded();
    return this.model.layers.some((l: Differentiable) => l.samplesIndependent?.({ training: this.training }) === false);
  }

  /**
   * Jacobian of a recorded tensor w.r.t. each of `weights`, built by forward-mode dual numbers over
   * the recorded residuals: one `[B, ...out, ...param]` per weight, TensorFlow's `jacobian` of the
   * batched output. A weight the output does not depend on (a later layer's) gets zeros.
   * @example
   * const [dOut_dKernel, dOut_dBias] = tape.jacobian(tape.output, conv.params); // [B, ...out, 2, 2, 1, 6], [B, ...out, 6]
   */
  jacobian(output: Tensor, weights: Source | readonly Source[], opts: JacobianOptions | SparseJacobianOptions = {}): Jacobian[] {
    this.assertFresh();
    const k = this.indexOf(output, 'last', 'jacobian output');
    const list = Array.isArray(weights) ? (weights as readonly Source[]) : [weights as Source];
    const owners = list.map((w, n) => this.paramOf(w, `jacobian weights[${n}]`));
    const connected = owners.filter((o) => o.layer < k);
    const { saved } = this.recorded();
    const view = this.segment(0, k, connected.map((o) => o.flat));
    const built: Jacobian[] = connected.length > 0 ? jacobianWrtWeights(view, saved.input, { ...opts, training: this.training }) : [];
    const B = saved.batch;
    const outShape = this.shapeOf(k);
    let c = 0;
    return owners.map((o) => {
      if (o.layer < k) return built[c++];
      const shape = o.param.value.shape;
      return new DenseJacobian(zeros([B, ...outShape, ...shape], saved.dtype), B, outShape, shape, `w.r.t. ${o.param.name} (unconnected: zeros)`);
    });
  }

  /**
   * The contraction of the Jacobian of a recorded tensor w.r.t. each of `weights` with
   * `dLoss_dOut`, streamed (`lib/streamed.ts`): block by block of `T` columns by dual numbers over
   * the recorded residuals, each block contracted at once and dropped; never more than one block
   * held. One {@link StreamedContraction} per weight, its `gradient` shaped like the weight (zeros
   * for a weight the output does not depend on).
   * @param dLoss_dOut `[B, ...out]`, the upstream gradient at `output`.
   * @example
   * const [dKernel, dBias] = tape.streamedJacobian(tape.output, conv.params, dLoss_dOut).map((c) => c.gradient);
   */
  streamedJacobian(output: Tensor, weights: readonly Source[], dLoss_dOut: Tensor, opts: StreamedOptions = {}): StreamedContraction[] {
    this.assertFresh();
    const k = this.indexOf(output, 'last', 'streamedJacobian output');
    const owners = weights.map((w, n) => this.paramOf(w, `streamedJacobian weights[${n}]`));
    const connected = owners.filter((o) => o.layer < k);
    const { saved } = this.recorded();
    const view = this.segment(0, k, connected.map((o) => o.flat));
    const built = connected.length > 0 ? streamedWeightGradients(view, saved.input, dLoss_dOut, { ...opts, training: this.training }) : [];
    const outShape = this.shapeOf(k);
    let c = 0;
    return owners.map((o) => {
      if (o.layer < k) return built[c++];
      const shape = o.param.value.shape;
      return { gradient: zeros(shape, saved.dtype), shape: [saved.batch, ...outShape, ...shape], tangents: 0, blockBytes: 0 };
    });
  }

  /**
   * The contraction of the Jacobian of a recorded tensor w.r.t. an earlier one with `dLoss_dOut`,
   * streamed (`lib/streamed.ts`): `[B, ...in]`. Where the pass couples the samples
   * ({@link GradientTape.samplesCoupled}), the full Jacobian `[B, ...out, B, ...in]` is streamed,
   * so the result stays exact.
   * @param dLoss_dOut `[B, ...out]`, the upstream gradient at `output`.
   * @example
   * const { gradient: dLoss_dIn } = tape.streamedBatchJacobian(tape.output, tape.input, dLoss_dOut);
   */
  streamedBatchJacobian(output: Tensor, input: Tensor, dLoss_dOut: Tensor, opts: StreamedOptions = {}): StreamedContraction {
    this.assertFresh();
    const k = this.indexOf(output, 'last', 'streamedBatchJacobian output');
    const j = this.indexOf(input, 'first', 'streamedBatchJacobian input');
    if (j >= k) {
      throw new TapeError(`${this.describe()} streamedBatchJacobian: expected the output to be recorded after the input, received output = ${this.nameOf(k)} and input = ${this.nameOf(j)}`);
    }
    const view = this.segment(j, k, []);
    const samplesCoupled = this.model.layers.slice(j, k).some((l: Differentiable) => l.samplesIndependent?.({ training: this.training }) === false);
    return streamedInputGradient(view, input, dLoss_dOut, { ...opts, training: this.training, samplesCoupled });
  }

  /**
   * Gradients by one reverse sweep over the recorded residuals (the model's own backward loop,
   * `Sequential.backward`, over the layers between the sources and the target). With the recorded loss as target:
   * `dLoss/dsource`. With a recorded tensor as target: the VJP `outputGradients · ∂target/∂source`
   * (`outputGradients` defaults to ones, as TensorFlow). Each result has its source's shape; a
   * source the target does not depend on gets zeros.
   * @example
   * const [dLoss_dOut1, dLoss_dKernel] = tape.gradient(loss, [out_layer_1, dense.params[0]]);
   * const [dx, ...dW] = tape.gradient(tape.output, [tape.input, ...stage.params], { outputGradients: dy }); // the VJP
   */
  gradient(target: Tensor, sources: readonly Source[], opts?: GradientOptions): Tensor[];
  gradient(target: Tensor, sources: Source, opts?: GradientOptions): Tensor;
  gradient(target: Tensor, sources: Source | readonly Source[], opts: GradientOptions = {}): Tensor | Tensor[] {
    this.assertFresh();
    const { saved } = this.recorded();
    const layers = this.model.layers;
    let k: number;
    let dy: Tensor;
    if (this.recordedLoss && target === this.recordedLoss.value) {
      if (opts.outputGradients) throw new TapeError(`${this.describe()} gradient: outputGradients is for a tensor target; the loss is a scalar, received outputGradients ${fmtShape(opts.outputGradients.shape)}`);
      k = layers.length;
      dy = this.recordedLoss.loss.gradient(this.recordedLoss.yTrue, saved.outputs[k - 1]);
    } else {
      k = this.indexOf(target, 'last', 'gradient target');
      const shape = target.shape;
      if (opts.outputGradients) {
        assertShape(opts.outputGradients, shape, `${this.describe()} gradient outputGradients`);
        dy = opts.outputGradients;
      } else {
        dy = zeros(shape, dtypeOf(target));
        dy.data.fill(1);
      }
    }
    const list = Array.isArray(sources) ? (sources as readonly Source[]) : [sources as Source];
    // Each source is an activation index (≤ k to be connected) or a parameter of a layer before k.
    const wanted = list.map((s, n) => this.resolveSource(s, k, `gradient sources[${n}]`));
    const lowest = Math.min(k, ...wanted.map((w) => (w.kind === 'act' ? w.index : w.layer < k ? w.layer : k)));
    // The lowest activation's cotangent is computed only when it is a source (a training step asks for the weights alone).
    const needInputCotangent = wanted.some((w) => w.kind === 'act' && w.index === lowest);
    const { activations, perLayer } = this.model.backward(saved, dy, lowest, k, { needInputCotangent });
    const out = wanted.map((w) => {
      if (w.kind === 'act') return w.index <= k ? activations[w.index - lowest]! : zeros(this.shapeOf(w.index), saved.dtype);
      return w.layer < k ? perLayer[w.layer - lowest][w.param] : zeros(w.shape, saved.dtype);
    });
    // The cotangents met on the way down and not returned are dropped here: those a layer declared its own go back to the pool for the next step.
    const kept = new Set<unknown>([dy.data, ...out.map((t) => t.data), ...perLayer.flat().map((t) => t.data)]);
    for (let i = lowest; i < k; i++) {
      const ct = activations[i - lowest];
      if (ct && layers[i].freshCotangent && !kept.has(ct.data)) recycleBuffer(ct.data);
    }
    return Array.isArray(sources) ? out : out[0];
  }

  /**
   * Bytes the tape holds for the derivatives: every distinct buffer reachable from the layers'
   * saved residuals (inputs, outputs, masks, argmax indices), each counted once; optionally only
   * those of layers `fromLayer..toLayer-1`.
   */
  residualBytes(fromLayer = 0, toLayer = this.model.layers.length): number {
    return bytesReachable(this.recorded().saved.perLayer.slice(fromLayer, toLayer));
  }

  /** `GradientTape("model_0")`: how errors name this tape. */
  describe(): string {
    return `GradientTape("${this.model.name}")`;
  }

  private recorded(): Forward<SequentialSaved> {
    if (!this.pass) throw new TapeError(`${this.describe()}: nothing recorded yet; call tape.forward(x) first`);
    return this.pass;
  }

  /** Throws if any weight was replaced or changed in place since the pass was recorded. */
  private assertFresh(): void {
    this.recorded();
    const stamp = this.stamp!;
    const now = this.model.params;
    if (now.length !== stamp.params.length || now.some((p, i) => p !== stamp.params[i])) {
      throw new TapeError(`${this.describe()}: the model's parameter list changed since the pass was recorded (${stamp.params.length} then, ${now.length} now); record a new pass with a new tape`);
    }
    now.forEach((p, i) => {
      if (p.value !== stamp.values[i] || fingerprint(p.value) !== stamp.hashes[i]) {
        const owner = this.model.paramOwners[i];
        throw new TapeError(
          `${this.describe()}: the weights changed since the pass was recorded (${this.model.layers[owner.layer].describe()} ${p.name} ${fmtShape(p.value.shape)}); ` +
            `its residuals describe the old weights, so record a new pass with a new tape`,
        );
      }
    });
    if (fingerprint(this.recorded().saved.input) !== stamp.input) {
      throw new TapeError(`${this.describe()}: the input x ${fmtShape(this.recorded().saved.input.shape)} was changed in place since the pass was recorded; its residuals describe the old input, so record a new pass with a new tape (or pass a copy)`);
    }
  }

  /** Index in {@link GradientTape.activations} of a recorded tensor (identity, not value). */
  private indexOf(t: Tensor, prefer: 'first' | 'last', what: string): number {
    const acts = this.activations;
    // An identity layer (Dropout at inference) returns its input object: then prefer decides.
    const idx = prefer === 'first' ? acts.indexOf(t) : acts.lastIndexOf(t);
    if (idx < 0) throw this.notRecorded(t, what);
    this.assertRecorded(idx, what);
    return idx;
  }

  /** Refuses activation `i` when a fused pass did not record it: its slot holds the fused activation's output, not that layer's. */
  private assertRecorded(i: number, what: string): void {
    const unrecorded = this.recorded().saved.unrecorded;
    if (unrecorded?.includes(i - 1)) {
      throw new TapeError(`${this.describe()} ${what}: received the ${this.nameOf(i)}, which a fused pass (forward with { fuse: true }) did not record: ${this.model.layers[i - 1].name} and the activation after it ran as one pass; record without fuse to differentiate w.r.t. it`);
    }
  }

  private notRecorded(t: unknown, what: string): TapeError {
    const acts = this.activations;
    const seen = acts.map((a, i) => `${this.nameOf(i)} ${fmtShape(a.shape)}`).join(', ');
    const lossNote = this.recordedLoss ? ', the loss []' : '';
    const params = this.model.params.length ? `, and the ${this.model.params.length} parameters of its layers` : '';
    return new TapeError(`${this.describe()} ${what}: received ${describeValue(t)}, which this tape did not record (tensors are matched by identity; it recorded ${seen}${lossNote}${params})`);
  }

  /** `input` or `output of conv2d_1`. */
  private nameOf(i: number): string {
    return i === 0 ? 'input' : `output of ${this.model.layers[i - 1].name}`;
  }

  private shapeOf(i: number): number[] {
    return this.model.layers[i - 1]?.outputShape.slice() ?? this.model.inputShape.slice();
  }

  /** A parameter of the model: given as the Param object or as its current value tensor. */
  private paramOf(w: Source, what: string): { layer: number; param: Param; index: number; flat: number } {
    const params = this.model.params;
    const flat = params.findIndex((p) => p === w || p.value === w);
    if (flat < 0) throw this.notRecorded(w, what);
    const { layer, param } = this.model.paramOwners[flat];
    if (!isTrainable(params[flat])) {
      throw new TapeError(
        `${this.describe()} ${what}: received ${this.model.layers[layer].describe()} ${params[flat].name}, a non-trainable parameter (state, or a frozen layer); expected a trainable one: no gradient or Jacobian is taken w.r.t. state (ask for trainableParams(stage))`,
      );
    }
    return { layer, param: params[flat], index: param, flat };
  }

  private resolveSource(s: Source, k: number, what: string): { kind: 'act'; index: number } | { kind: 'param'; layer: number; param: number; shape: number[] } {
    const acts = this.activations;
    // The latest recording at or before the target (identity layers record one object twice).
    for (let i = Math.min(k, acts.length - 1); i >= 0; i--) {
      if (acts[i] !== s) continue;
      this.assertRecorded(i, what);
      return { kind: 'act', index: i };
    }
    const later = acts.indexOf(s as Tensor);
    if (later >= 0) {
      this.assertRecorded(later, what);
      return { kind: 'act', index: later };
    }
    const p = this.paramOf(s, what);
    return { kind: 'param', layer: p.layer, param: p.index, shape: p.param.value.shape.slice() };
  }

  /**
   * Layers `j..k-1` of the recorded pass as a {@link Differentiable} whose forward returns the
   * recording (so the Jacobian builders reuse the residuals, masks included) and whose parameters
   * are the chosen flat parameters of the model.
   */
  private segment(j: number, k: number, flatParams: number[]): Differentiable<SequentialSaved> & { layers: readonly Layer[] } {
    const { saved } = this.recorded();
    const seg = new Sequential(this.model.layers.slice(j, k), { name: `${this.model.name}[${j}:${k}]`, layerOffset: this.model.layerOffset + j });
    const offset = this.model.layers.slice(0, j).reduce((s, l) => s + l.params.length, 0);
    const segSaved: SequentialSaved = {
      perLayer: saved.perLayer.slice(j, k),
      input: j === 0 ? saved.input : saved.outputs[j - 1],
      outputs: saved.outputs.slice(j, k),
      batch: saved.batch,
      dtype: saved.dtype,
    };
    const recording: Forward<SequentialSaved> = { y: saved.outputs[k - 1], saved: segSaved };
    const all = this.model.params;
    const local = flatParams.map((f) => f - offset);
    const nSeg = seg.params.length;
    const describe = () => this.describe();
    return {
      inputShape: seg.inputShape,
      outputShape: seg.outputShape,
      // The layer list lets the sparse `propagate` engine see the structure behind the recording.
      layers: seg.layers,
      params: flatParams.map((f) => all[f]),
      forward(x: Tensor): Forward<SequentialSaved> {
        if (x !== segSaved.input) throw new TapeError(`${describe()}: expected the recorded input of this segment, received another tensor ${fmtShape(x.shape)}`);
        return recording;
      },
      jvp(s: SequentialSaved, t: Tangents): Tensor {
        let paramDots: (Tensor | null)[] | null = null;
        if (t.paramDots) {
          paramDots = new Array<Tensor | null>(nSeg).fill(null);
          local.forEach((l, n) => (paramDots![l] = t.paramDots![n]));
        }
        return seg.jvp(s, { xDot: t.xDot, paramDots, T: t.T, rows: t.rows });
      },
      vjp(s: SequentialSaved, dy: Tensor): Cotangents {
        const ct = seg.vjp(s, dy);
        return { dx: ct.dx, dParams: local.map((l) => ct.dParams[l]) };
      },
    };
  }
}

function stampOf(params: Param[], x: Tensor): Stamp {
  return { params: params.slice(), values: params.map((p) => p.value), hashes: params.map((p) => fingerprint(p.value)), input: fingerprint(x) };
}

/**
 * A bitwise fingerprint of a tensor's values (FNV-1a over its 32-bit words): any change, however
 * small, to any value changes it (but for a 2⁻³² chance), which a sum of floats would not promise.
 */
export function fingerprint(t: Tensor): number {
  const c = contiguous(t);
  const bytes = c.data.BYTES_PER_ELEMENT;
  const words = new Uint32Array(c.data.buffer, c.data.byteOffset + c.offset * bytes, (c.size * bytes) / 4);
  let h = 0x811c9dc5;
  for (let i = 0; i < words.length; i++) {
    h ^= words[i];
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** Bytes of every distinct buffer (typed array storage) reachable from `root`, each counted once. */
export function bytesReachable(root: unknown): number {
  const buffers = new Map<ArrayBufferLike, number>();
  const seen = new Set<object>();
  const visit = (v: unknown): void => {
    if (v === null || typeof v !== 'object' || seen.has(v)) return;
    seen.add(v);
    if (ArrayBuffer.isView(v)) {
      buffers.set(v.buffer, v.buffer.byteLength);
      return;
    }
    for (const key of Object.keys(v)) visit((v as Record<string, unknown>)[key]);
  };
  visit(root);
  let total = 0;
  for (const b of buffers.values()) total += b;
  return total;
}

function describeValue(v: unknown): string {
  if (v && typeof v === 'object' && Array.isArray((v as Tensor).shape)) {
    const t = v as Tensor;
    return Array.isArray(t.stride) ? `a tensor of shape ${fmtShape(t.shape)}` : `an object of shape ${fmtShape(t.shape)}`;
  }
  if (v && typeof v === 'object' && 'value' in v && 'name' in v) return `a parameter "${(v as Param).name}" ${fmtShape((v as Param).value.shape)}`;
  return v === undefined ? 'undefined' : typeof v === 'object' ? `an object (${(v as object).constructor?.name ?? 'Object'})` : String(v);
}

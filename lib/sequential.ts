/**
 * Sequential: a stack of layers that is itself a {@link Differentiable}, and splits into stages.
 *
 * Forward runs the layers in order and saves each layer's residuals; the JVP composes the layers'
 * dual-number rules front to back, the VJP composes their cotangent rules back to front. A stage
 * made by {@link Sequential.split} holds the very same layer objects as its model, so weights are
 * shared: an optimizer step on a stage is a step on the model.
 * @module
 */
import { ConfigError, ShapeError, fmtShape, fmtValue } from './errors.js';
import type { Cotangents, Differentiable, Forward, ForwardOptions, Layer, Param, Tangents } from './layers/layer.js';
import { deliverTangent } from './layers/out.js';
import { Rng } from './rng.js';
import { type DType, type Tensor, assertShape, dtypeOf, sizeOf, zeros } from './tensor.js';

/** Where flat parameter `k` of a model lives: layer `layer` (index in this model), its parameter `param`. */
export interface ParamOwner {
  /** Index of the layer in this model. */
  layer: number;
  /** Index of the parameter in that layer's `params` (0 kernel, 1 bias). */
  param: number;
}

/** Options of the {@link Sequential} constructor. */
export interface SequentialOptions {
  /** Per-sample input shape; needed when the first layer is not built yet. */
  inputShape?: readonly number[];
  /** Where unbuilt layers draw their initial weights from (Glorot uniform); default `new Rng(0)`. */
  rng?: Rng;
  /** dtype of the layers built here (default float64). */
  dtype?: DType;
  /** A name for errors and reports (`model_0`). */
  name?: string;
  /** Index of this model's first layer in the model it was split from (0 for a whole model). */
  layerOffset?: number;
  /** Draw fresh weights for unbuilt layers (default true); false leaves zeros for weights about to be loaded, so that an initializer a file names need not be implemented. */
  initialize?: boolean;
}

/**
 * Forward options of a model: a layer's own options, plus `seed`, which gives every layer its own
 * generator keyed by `(seed, global layer index)`. Dropout then draws the same mask however the
 * model is split, even when the stages run in different processes and share no generator.
 */
export interface SequentialForwardOptions extends ForwardOptions {
  /** Seed of the per-layer generators (used instead of `rng` when both are given). */
  seed?: number;
  /**
   * Run a layer and the activation layer after it as one pass where both offer it (the layer
   * contract's `fusedForward` and `absorbable`): the same values, bit for bit, with a buffer and a
   * pass over it fewer. The first layer's own output is then not recorded (`saved.unrecorded`
   * lists it): the pass serves the derivatives w.r.t. its input and weights, what a training step
   * asks, not w.r.t. that activation. Default false.
   */
  fuse?: boolean;
}

/** What a Sequential forward pass saves: every layer's own residuals, and every layer's output. */
export interface SequentialSaved {
  /** `Saved` of layer `i`, as its forward returned it. */
  perLayer: unknown[];
  /** The input `[B, ...in]` of the pass. */
  input: Tensor;
  /** `outputs[i]`: the output of layer `i` (references, not copies; the last is the model output). */
  outputs: Tensor[];
  /** Batch extent of the pass. */
  batch: number;
  /** dtype of the pass. */
  dtype: DType;
  /**
   * Layers run fused with the activation after them ({@link SequentialForwardOptions.fuse}),
   * whose own output was never kept: `outputs[i]` holds the activation's output there (the one
   * tensor the pair gives), and each layer's residuals are its own. Absent: none.
   */
  unrecorded?: readonly number[];
}

/**
 * A stack of layers, run in order: `y = f_{L-1}(… f_1(f_0(x)))`.
 * @example
 * const model = new Sequential([new Dense({ units: 8, activation: 'tanh' }), new Dense({ units: 1 })], { inputShape: [5], rng: new Rng(1) });
 * const [model_0, model_1] = model.split([1]); // stages sharing the model's layers
 * const { y } = model_1.forward(model_0.forward(x).y); // same as model.forward(x).y
 */
export class Sequential implements Differentiable<SequentialSaved> {
  /** The layers, in order (shared with every stage split from this model). */
  readonly layers: readonly Layer[];
  /** Per-sample input shape. */
  readonly inputShape: readonly number[];
  /** Per-sample output shape. */
  readonly outputShape: readonly number[];
  /** For reports and errors. */
  readonly name: string;
  /** Index of the first layer in the model this one was split from. */
  readonly layerOffset: number;

  constructor(layers: readonly Layer[], opts: SequentialOptions = {}) {
    if (!Array.isArray(layers) || layers.length === 0) {
      throw new ConfigError(`Sequential${opts.name ? ` "${opts.name}"` : ''}: expected at least one layer, received ${Array.isArray(layers) ? 'an empty list' : fmtValue(layers)}`);
    }
    this.name = opts.name ?? 'sequential';
    this.layerOffset = opts.layerOffset ?? 0;
    const first = layers[0];
    let shape: readonly number[] | undefined = opts.inputShape ?? (first.built ? first.inputShape : undefined);
    if (!shape) throw new ConfigError(`Sequential "${this.name}": the first layer (${first.describe()}) is not built; give { inputShape }`);
    this.inputShape = shape.slice();
    const rng = opts.rng ?? new Rng(0);
    const taken = new Set(layers.filter((l) => l.name).map((l) => l.name));
    layers.forEach((layer, i) => {
      if (!layer.name) layer.name = uniqueName(snake(layer.className), taken);
      if (layer.built) {
        if (!sameShape(layer.inputShape, shape!)) {
          throw new ShapeError(`Sequential "${this.name}" layer ${i} (${layer.describe()}): built for input ${fmtShape(layer.inputShape)}, but the layer before it gives ${fmtShape(shape!)}`);
        }
      } else {
        try {
          layer.build(shape!, { rng, dtype: opts.dtype, initialize: opts.initialize });
        } catch (e) {
          throw prefixError(e, `Sequential "${this.name}" layer ${i} (${layer.describe()})`);
        }
      }
      shape = layer.outputShape;
    });
    this.layers = layers.slice();
    this.outputShape = shape.slice();
  }

  /** All layers' parameters flattened in order (the same {@link Param} objects the layers hold). */
  get params(): Param[] {
    return this.layers.flatMap((l) => l.params);
  }

  /** `paramOwners[k]`: which layer (index in this model) and which of its parameters flat parameter `k` is. */
  get paramOwners(): ParamOwner[] {
    return this.layers.flatMap((l, layer) => l.params.map((_, param) => ({ layer, param })));
  }

  /** dtype of the first layer's parameters and outputs. */
  get dtype(): DType {
    return this.layers[0].dtype;
  }

  /** Total number of scalar parameters. */
  get paramCount(): number {
    return this.params.reduce((s, p) => s + p.value.size, 0);
  }

  /**
   * Primal pass, layer by layer. Saves each layer's residuals and output.
   * @example
   * const { y, saved } = model.forward(x, { training: true, seed: 7 }); // Dropout masks keyed by (7, layer index)
   */
  forward(x: Tensor, opts: SequentialForwardOptions = {}): Forward<SequentialSaved> {
    assertShape(x, [null, ...this.inputShape], `${this.describe()} input`);
    const perLayer: unknown[] = [];
    const outputs: Tensor[] = [];
    const unrecorded: number[] = [];
    const L = this.layers.length;
    let h = x;
    for (let i = 0; i < L; i++) {
      const layer: Differentiable = this.layers[i];
      const lo = this.layerOptions(opts, i);
      // The layer and the activation after it in one pass when both say they can; else (and always without `fuse`) layer by layer.
      const next: Differentiable | undefined = opts.fuse && i + 1 < L ? this.layers[i + 1] : undefined;
      const act = next?.absorbable?.() ?? null;
      const fused = act && layer.fusedForward ? layer.fusedForward(h, act.activation, lo) : null;
      if (act && fused) {
        perLayer.push(fused.saved, act.saved(fused.y));
        outputs.push(fused.y, fused.y);
        unrecorded.push(i);
        h = fused.y;
        i++;
        continue;
      }
      const fwd = layer.forward(h, lo);
      perLayer.push(fwd.saved);
      outputs.push(fwd.y);
      h = fwd.y;
    }
    return { y: h, saved: { perLayer, input: x, outputs, batch: x.shape[0], dtype: dtypeOf(x), ...(unrecorded.length ? { unrecorded } : {}) } };
  }

  /** The forward options layer `i` sees: a generator of its own when a `seed` is given. */
  layerOptions(opts: SequentialForwardOptions, i: number): ForwardOptions {
    if (opts.seed === undefined) return opts;
    return { training: opts.training, rng: layerRng(opts.seed, this.layerOffset + i), ...(opts.batchSlice ? { batchSlice: opts.batchSlice } : {}) };
  }

  /**
   * Dual-number rule: pushes a block of `T` tangents through every layer, `[B, ...in, T]` →
   * `[B, ...out, T]`. A null tangent stays null (no allocation) until the first layer whose input
   * or parameter tangent is non-null: with only a deep layer's weights seeded, the layers before
   * it are skipped.
   */
  jvp(saved: SequentialSaved, { xDot, paramDots, T, rows, pool }: Tangents, out?: Tensor): Tensor {
    if (paramDots && paramDots.length !== this.params.length) {
      throw new ShapeError(`${this.describe()} jvp: expected ${this.params.length} parameter tangents (or null), received ${paramDots.length}`);
    }
    let tangent: Tensor | null = xDot;
    let k = 0;
    // The caller's `rows` hint describes the caller's tangents only: it goes to the first layer
    // that receives them, never to a layer fed by another layer's output tangent.
    let hint = rows;
    // With a pool, each layer but the last writes into a pooled buffer, and the buffer it read is
    // given back once it is read (unless the layer returned a view of it); the last writes into `out`.
    let pooled: Tensor | null = null;
    const last = this.layers.length - 1;
    this.layers.forEach((layer, i) => {
      const n = layer.params.length;
      const mine = paramDots ? paramDots.slice(k, k + n) : null;
      k += n;
      const anyParam = mine !== null && mine.some((t) => t !== null);
      if (tangent === null && !anyParam) return;
      const into = i === last ? out : pool?.acquire([saved.batch, ...layer.outputShape, T], saved.dtype);
      const next: Tensor = layer.jvp(saved.perLayer[i], { xDot: tangent, paramDots: anyParam ? mine : null, T, rows: hint, pool }, into);
      if (pool && into && next.data !== into.data) pool.release(into);
      if (pool && pooled && next.data !== pooled.data) pool.release(pooled);
      pooled = pool && into && next.data === into.data ? into : pooled && next.data === pooled.data ? pooled : null;
      tangent = next;
      hint = undefined;
    });
    if (tangent === null) return out ?? zeros([saved.batch, ...this.outputShape, T], saved.dtype);
    return deliverTangent(out, tangent);
  }

  /** VJP rule: pulls `dy` (`[B, ...out]`) back through every layer; parameter cotangents in `params` order. */
  vjp(saved: SequentialSaved, dy: Tensor): Cotangents {
    assertShape(dy, [saved.batch, ...this.outputShape], `${this.describe()} vjp dy`);
    const { activations, perLayer } = this.backward(saved, dy, 0, this.layers.length);
    return { dx: activations[0]!, dParams: perLayer.flat() };
  }

  /**
   * The one backward loop: the cotangent `dy` of the output of layer `to - 1` pulled back through
   * layers `to - 1` down to `from`, each by its own VJP rule on its recorded residuals. Returns the
   * cotangent of every activation met (`activations[i - from]` is that of layer `i`'s input) and
   * each layer's parameter cotangents (`perLayer[i - from]`). {@link Sequential.vjp} is the whole
   * range; a tape's `gradient` asks for the part between its target and its sources. With
   * `needInputCotangent: false` the caller promises not to read `activations[0]` (dLoss/d(input of
   * layer `from`)): it is then null, and layer `from` gives only its parameter cotangents
   * ({@link Differentiable.vjpParams} where it has one), as a training step's first layer.
   * @example
   * const { perLayer } = model.backward(saved, dLoss_dY, 0, model.layers.length, { needInputCotangent: false });
   */
  backward(saved: SequentialSaved, dy: Tensor, from: number, to: number, opts: { /** False: `activations[0]` is not wanted (default true). */ needInputCotangent?: boolean } = {}): {
    /** `activations[i - from]`: dLoss/d(input of layer i), for `from <= i <= to` (the last is `dy`); `activations[0]` null with `needInputCotangent: false`. */
    activations: (Tensor | null)[];
    /** `perLayer[i - from]`: the parameter cotangents of layer `i`, in Keras order. */
    perLayer: Tensor[][];
  } {
    const activations: (Tensor | null)[] = new Array(to - from + 1);
    const perLayer: Tensor[][] = new Array(to - from);
    activations[to - from] = dy;
    for (let i = to - 1; i >= from; i--) {
      const layer = this.layers[i];
      const dyi = activations[i + 1 - from]!;
      if (i === from && opts.needInputCotangent === false) {
        perLayer[0] = layer.vjpParams ? layer.vjpParams(saved.perLayer[i], dyi) : layer.vjp(saved.perLayer[i], dyi).dParams;
        activations[0] = null;
        break;
      }
      const ct = layer.vjp(saved.perLayer[i], dyi);
      perLayer[i - from] = ct.dParams;
      activations[i - from] = ct.dx;
    }
    return { activations, perLayer };
  }

  /** Commits a recorded training pass: each layer applies the state update its forward computed (BatchNormalization's moving statistics). */
  applyUpdates(saved: SequentialSaved): void {
    this.layers.forEach((l: Differentiable, i) => l.applyUpdates?.(saved.perLayer[i]));
  }

  /**
   * Splits at layer boundaries into stages that share this model's layers (and so its weights).
   * `points` are the indices of the layers that start a new stage, strictly increasing in `(0, L)`.
   * @example
   * const [model_0, model_1] = cnn.split([9]); // layers 0..8 and 9..L-1
   */
  split(points: readonly number[]): Sequential[] {
    const L = this.layers.length;
    if (!Array.isArray(points) || points.some((p) => !Number.isInteger(p))) {
      throw new ConfigError(`${this.describe()} split: expected an array of layer indices, received ${fmtValue(points)}`);
    }
    points.forEach((p, j) => {
      if (p <= 0 || p >= L || (j > 0 && p <= points[j - 1])) {
        throw new ConfigError(`${this.describe()} split: expected strictly increasing layer indices in 1..${L - 1} (where a new stage starts), received ${fmtValue(points)}`);
      }
    });
    const bounds = [0, ...points, L];
    return bounds.slice(0, -1).map(
      (start, s) => new Sequential(this.layers.slice(start, bounds[s + 1]), { name: `model_${s}`, layerOffset: this.layerOffset + start }),
    );
  }

  /** Split points (stage start indices) from the layer index lists of the fixtures' `stages`: `[[0], [1], [2, 3, 4]]` → `[1, 2]`. */
  static pointsFromStages(stages: readonly (readonly number[])[], layerCount: number): number[] {
    const flat = stages.flat();
    if (flat.length !== layerCount || flat.some((v, i) => v !== i) || stages.some((s) => s.length === 0)) {
      throw new ConfigError(`stages: expected non-empty consecutive lists covering layers 0..${layerCount - 1} once each, received ${fmtValue(stages)}`);
    }
    return stages.slice(1).map((s) => s[0]);
  }

  /** One model made of consecutive stages (sharing their layers): the whole model again. */
  static concat(stages: readonly Sequential[], name = 'model'): Sequential {
    if (stages.length === 0) throw new ConfigError('Sequential.concat: expected at least one stage, received none');
    return new Sequential(
      stages.flatMap((s) => s.layers),
      { name, layerOffset: stages[0].layerOffset },
    );
  }

  /** Per-sample element counts of the input and output: the Jacobian's columns and rows. */
  get sizes(): {
    /** Elements of one sample's input. */
    in: number;
    /** Elements of one sample's output. */
    out: number
  } {
    return { in: sizeOf(this.inputShape), out: sizeOf(this.outputShape) };
  }

  /** A one-line summary per layer: name, class, output shape, parameter count. */
  summary(): string {
    const rows = this.layers.map((l, i) => `  ${String(this.layerOffset + i).padStart(2)}  ${l.name.padEnd(16)} ${l.className.padEnd(13)} ${`[B, ${l.outputShape.join(', ')}]`.padEnd(18)} ${l.params.reduce((s, p) => s + p.value.size, 0)}`);
    return [`${this.name}: input ${fmtShape(this.inputShape)}, ${this.paramCount} parameters`, ...rows].join('\n');
  }

  /** `Sequential "model_0"`: how errors name this model. */
  describe(): string {
    return `Sequential "${this.name}"`;
  }
}

/** A generator for one layer: its stream depends only on the seed and the layer's global index. */
export function layerRng(seed: number, layerIndex: number): Rng {
  // Mixing (not adding) keeps (seed, i+1) and (seed+1, i) on unrelated streams.
  return new Rng((Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul(layerIndex + 1, 0x85ebca77)) >>> 0);
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** `MaxPooling2D` → `max_pooling2d`, as Keras names layers. */
function snake(className: string): string {
  return className.replace(/([a-z])([A-Z])/g, '$1_$2').toLowerCase();
}

function uniqueName(base: string, taken: Set<string>): string {
  let name = base;
  for (let k = 1; taken.has(name); k++) name = `${base}_${k}`;
  taken.add(name);
  return name;
}

/** The same error class with a prefix saying where it happened. */
export function prefixError(e: unknown, where: string): Error {
  if (e instanceof Error) {
    // The same object, class and fields kept: only the message learns where it happened.
    e.message = `${where}: ${e.message}`;
    return e;
  }
  return new ConfigError(`${where}: ${String(e)}`);
}

/**
 * The layer contract: what every layer (and every stage of layers) gives, and what every engine
 * reads. A layer owns all that is known about it; no engine switches on a class name.
 *
 * Glossary, said once:
 * - **primal**: the values of the ordinary forward pass, `x` `[B, ...in]` → `y` `[B, ...out]`.
 * - **residuals** (`saved`): what `forward` keeps for the derivative rules; each layer says which.
 * - **tangent** (a dot, `ẋ`, in names: `xDot`, `paramDots`, `yDot`): a direction pushed forward by
 *   `jvp` (forward mode, dual numbers). A block of `T` tangents rides along a primal as a trailing
 *   axis: the input tangent `xDot` is `[B, ...in, T]`, a parameter tangent `[...param, T]`, and
 *   `jvp` returns the output tangent `yDot` `[B, ...out, T]`. Every scalar thus carries a vector of
 *   `T` derivative parts: a vectorized dual number.
 * - **cotangent** (a `d`, read "dLoss/d", in names: `dy`, `dx`, `dParams`): a gradient pulled back
 *   by `vjp` (reverse mode): `dy` `[B, ...out]` (dLoss/dy) in, `dx` `[B, ...in]` and one
 *   `[...param]` per parameter (summed over the batch) out. At a stage boundary the cotangent is
 *   called `dLoss_dOut` (the seed's `dLoss_dOutUpstream`): what the stage after sends back.
 * - **Jacobian layout**: `[...out, ...in]`, row-major; a batch Jacobian leads with the batch axis
 *   once, `[B, ...out, ...in]` (see `lib/jacobian.ts`).
 *
 * Required: {@link Differentiable.forward}, {@link Differentiable.jvp} and
 * {@link Differentiable.vjp}, in that order in each layer file. Optional, with generic fallbacks
 * (so a layer that gives only the three rules works in every engine and every chain, dense and
 * sparse, only slower there): the {@link StructureHooks}, which the sparse engines
 * (`lib/sparse/structure.ts`) and the memory estimate (`lib/memory/estimate.ts`) read.
 * @module
 */
import { ConfigError, ShapeError, fmtShape, fmtValue } from '../errors.js';
import { guardBytes } from '../memory.js';
import { type InitializerSpec, initialize } from '../initializers.js';
import { Rng } from '../rng.js';
import type { ActivationName } from '../activations.js';
import type { AxisStructure, KronPattern } from '../structure.js';
import type { TangentPool } from './out.js';
import { type DType, type Data, type Tensor, assertShape, bytesPerElement, dtypeOf, sizeOf, zeros } from '../tensor.js';

export { type Padding, type WindowRanges, pair, padding, windowAxis, windowRanges } from './window.js';

/** A parameter in Keras order (`kernel` then `bias`, or BatchNormalization's four). */
export interface Param {
  /** `kernel` or `bias`, as Keras names them. */
  readonly name: string;
  /** The current value; replaced (never resized) by optimizers and loaders. */
  value: Tensor;
  /**
   * False for a parameter that is state, not a weight (BatchNormalization's moving statistics, or
   * any parameter of a layer set `trainable = false`): no engine takes a gradient or a Jacobian
   * w.r.t. it, no optimizer updates it (see {@link trainableParams}). Default (absent) true.
   */
  trainable?: boolean;
}

/** True unless `p.trainable` is false: the one test every engine, chain and optimizer applies. */
export function isTrainable(p: Param): boolean {
  return p.trainable !== false;
}

/** The parameters of `f` that gradients, Jacobians and optimizer steps are taken for, in `params` order. */
export function trainableParams(f: { readonly params: readonly Param[] }): Param[] {
  return f.params.filter(isTrainable);
}

/** Indices into `f.params` of its trainable parameters (where a builder seeds its tangents), in order. */
export function trainableIndices(f: { readonly params: readonly Param[] }): number[] {
  const out: number[] = [];
  f.params.forEach((p, k) => {
    if (isTrainable(p)) out.push(k);
  });
  return out;
}

/** Options of a forward pass. */
export interface ForwardOptions {
  /** Training mode: Dropout draws a fresh mask. Default false (inference). */
  training?: boolean;
  /** Where Dropout draws its mask from in training; a layer falls back to its own seeded generator. */
  rng?: Rng;
  /**
   * This pass computes rows `[start, start + B)` of a batch of `total` rows (a shard of a
   * data-parallel step). A stochastic layer that honours it ({@link Differentiable.batchSliced})
   * draws its noise for the whole `[total, ...]` batch and keeps these rows, so that a sharded
   * pass draws exactly what the whole batch would. Absent: the pass is the whole batch.
   */
  batchSlice?: {
    /** First row of the whole batch that this pass computes. */
    start: number;
    /** Rows of the whole batch. */
    total: number;
  };
}

/** A forward pass's primal output and the residuals it saved for the derivative rules. */
export interface Forward<S> {
  /** The primal output, `[B, ...out]`. */
  y: Tensor;
  /** The residuals: what `jvp` and `vjp` need from this pass (documented per layer). */
  saved: S;
}

/** A block of tangents pushed into `jvp`; `null` means a zero tangent (skipped, not allocated). */
export interface Tangents {
  /** Tangent of the input, `ẋ`, `[B, ...in, T]`, or null. */
  xDot: Tensor | null;
  /** Tangent of each parameter, `θ̇`, `[...param, T]` each (in `params` order), or null for all-zero. */
  paramDots: (Tensor | null)[] | null;
  /** How many tangents ride in this block. */
  T: number;
  /**
   * Optional promise from the caller: every non-null tangent of this block is zero outside rows
   * `[lo, hi)` of its flattened index (per sample for `xDot`). The Jacobian builders seed basis
   * columns `c0..c0+T` and say so here, so that a layer may skip the zero rows; a layer that
   * ignores it is still right.
   */
  rows?: {
    /** First row that may be non-zero. */
    lo: number;
    /** One past the last row that may be non-zero. */
    hi: number;
  };
  /**
   * Optional: where a stage takes its intermediate tangent blocks from and gives them back, so
   * that successive blocks of one Jacobian build reuse them (see `TangentPool` in
   * `lib/layers/out.ts`). A single layer may ignore it.
   */
  pool?: TangentPool;
}

/** What `vjp` returns: the cotangent of the input and of each parameter. */
export interface Cotangents {
  /** dLoss/dx, `[B, ...in]`. */
  dx: Tensor;
  /** dLoss/dθ per parameter, in `params` order, summed over the batch. */
  dParams: Tensor[];
}

/** Which Jacobian a hook speaks of: w.r.t. the input, or w.r.t. `params[k]`. */
export type Wrt = 'input' | number;

/**
 * A buffer `forward` saves, from shapes alone: its input `x`, its output `y` (shared with the
 * activations, so counted once), or a buffer of its own of `perSample` elements per sample (or,
 * with `shared`, one buffer for the whole batch).
 */
export type ResidualBuffer = 'x' | 'y' | {
  /** What it is, for reports: `argmax`, `mask`. */
  what: string;
  /** Its shape per sample (or the whole shape with `shared`). */
  perSample: readonly number[];
  /** Its element type. */
  dtype: DType | 'int32' | 'uint8';
  /** One buffer for the batch, not one per sample. */
  shared?: boolean;
};

/** What one forward pass of a layer holds and which of its results are views, from shapes alone. */
export interface Residuals {
  /** The buffers `forward` saves for the derivative rules. */
  saves: readonly ResidualBuffer[];
  /** The output is a view of the input (Flatten; Dropout at inference): no new buffer. */
  outputIsView?: boolean;
  /** The JVP returns a view of (or the very) input tangent. */
  jvpIsView?: boolean;
  /** The VJP returns a view of (or the very) output cotangent. */
  vjpIsView?: boolean;
}

/** One layer of a recorded forward pass: the layer, its residuals, its input and its output. */
export interface LayerPass {
  /** The layer. */
  layer: Differentiable;
  /** What its forward pass saved. */
  saved: unknown;
  /** Its input `[B, ...in]`. */
  x: Tensor;
  /** Its output `[B, ...out]`. */
  y: Tensor;
}

/**
 * A layer's local Jacobian at a recorded pass, by rows, for every sample: what the propagate
 * engine chains, `J = L_n ⋯ L_1`, carrying only non-zeros.
 */
export interface LocalJacobian {
  /** Per-sample rows (the layer's outputs). */
  readonly rows: number;
  /** Per-sample columns (the layer's inputs, or a parameter's entries). */
  readonly cols: number;
  /** Every row has at most one entry: composed as an index map with a scale, never materialized. */
  readonly single: boolean;
  /** Most entries any row may have (sizes the row buffers). */
  readonly maxRowNnz: number;
  /** Writes row `o` of sample `b` as columns and coefficients; returns the count. */
  row(b: number, o: number, idx: Int32Array, coef: Float64Array): number;
}

/**
 * A layer's own Jacobian of its linear output `z` (before a fused activation) w.r.t. one of its
 * parameters, when it has the form "patches ⊗ identity": `∂z[b, p, u] / ∂θ[q, u'] = δ(u, u') ·
 * P[b, p, q]`, for `positions` output positions `p` of `units` units `u` each (`z` per sample
 * `[positions · units]`, unit innermost), and `θ` flat as `[width, units]` (unit innermost).
 * Conv2D's kernel: `P` its im2col patches, `[B · Ho · Wo, kh · kw · cin]`; Dense's kernel: `x`;
 * either bias: all ones, `width` 1. Stored once, not once per unit, and without indices.
 */
export interface PatchFactor {
  /** Output positions per sample (Conv2D: `Ho · Wo`; Dense: the leading positions, 1 for a vector). */
  readonly positions: number;
  /** Units per position (Conv2D: `cout`; Dense: `units`): the extent of the identity. */
  readonly units: number;
  /** Entries of `θ` per unit: the length of a patch row (`kh · kw · cin`, `in`, or 1 for a bias). */
  readonly width: number;
  /** `[B, positions, width]`, row-major; null for all ones (a bias: nothing stored). */
  readonly patches: Data | null;
}

/** The shape of a {@link PatchFactor}, from shapes alone (for the memory bound before any pass). */
export interface PatchFactorShape {
  /** As {@link PatchFactor.positions}. */
  readonly positions: number;
  /** As {@link PatchFactor.units}. */
  readonly units: number;
  /** As {@link PatchFactor.width}. */
  readonly width: number;
  /** False for all ones (nothing stored). */
  readonly stored: boolean;
  /** Most entries a row of the layer's factors after `z` spreads one entry of `z` to (1 for an element-wise activation, `units` for softmax). */
  readonly spread: number;
}

/**
 * What {@link StructureHooks.paramFactor} returns: the structured factor, and the local factors of
 * the rest of the layer (its fused activation's), through which the stage's Jacobian w.r.t. `z`
 * starts.
 */
export interface ParamFactorization {
  /** `∂z/∂θ` as patches ⊗ identity. */
  factor: PatchFactor;
  /** The layer's local Jacobians after `z`, first to last (empty for a linear activation); the same for each of its parameters. */
  then: LocalJacobian[];
}

/**
 * Optional hooks through which a layer states its structure. Each has a generic fallback
 * (`lib/sparse/structure.ts`, `lib/memory/estimate.ts`) that is right for any layer, only slower
 * or coarser: a layer without hooks has a dense pattern, one colour per column, residuals counted
 * from what a probe `forward` saved, and a local Jacobian built by its own `jvp`.
 */
export interface StructureHooks {
  /**
   * The structural pattern of `∂y/∂x` per sample, one map per input axis (identity, full, or a
   * small window matrix). Fallback: one full map (every output depends on every input).
   */
  inputStructure?(): AxisStructure;
  /** The structural pattern of `∂y/∂params[k]` per sample, as Kronecker factors. Fallback: full. */
  paramStructure?(k: number): KronPattern;
  /**
   * False when a forward pass couples the samples (BatchNormalization in training), so that the
   * batch Jacobian `[B, ...out, ...in]` would drop cross-sample terms. Fallback: true.
   */
  samplesIndependent?(opts: ForwardOptions): boolean;
  /** What `forward` saves, from shapes alone. Fallback: counted from a probe pass of one sample. */
  residuals?(opts: ForwardOptions): Residuals;
  /** Multiply-adds per sample of one `jvp` tangent. Fallback: the structural non-zeros per sample. */
  macsPerTangent?(wrt: Wrt): number;
  /** The fewest colours of the Jacobian's columns, in closed form. Fallback: the product colouring of the pattern. */
  colourCount?(wrt: Wrt): number;
  /**
   * Most entries in a row of the local Jacobian at a recorded pass (a selection, like a max-pooling
   * winner, has 1 although its window has more). Fallback: the structural largest row.
   */
  localRowNnz?(): number;
  /**
   * The local Jacobian at a recorded pass, as factors applied first to last (Conv2D: the kernel's
   * entries, then its fused activation's diagonal). Fallback: compressed forward mode through the
   * layer's own `jvp` with its pattern's colouring.
   */
  localJacobian?(pass: LayerPass, wrt: Wrt): LocalJacobian[];
  /**
   * Its Jacobian w.r.t. `params[k]` at a recorded pass as a {@link ParamFactorization} (patches ⊗
   * identity, then the activation's factors), or null when it has not that form. The factored
   * format (`format: 'factored'`) stores a stage's weight Jacobian as the stage's sparse Jacobian
   * w.r.t. `z` times this factor. Fallback: none (the weight Jacobian is stored as CSR).
   */
  paramFactor?(pass: LayerPass, k: number): ParamFactorization | null;
  /** The shape of what {@link StructureHooks.paramFactor} returns for `params[k]`, from shapes alone; null where it returns null. Given with it. */
  paramFactorShape?(k: number): PatchFactorShape | null;
}

/**
 * What a layer that is one activation offers the layer before it, so that the two run as one
 * pass (see {@link Differentiable.fusedForward}).
 */
export interface AbsorbableActivation {
  /** The activation, as `activations.ts` names it. */
  activation: ActivationName;
  /** The residuals this layer's own `forward` would have saved, from its output `y` alone. */
  saved(y: Tensor): unknown;
}

/**
 * Anything with a forward pass and both derivative rules: a layer, or a stage of layers. The
 * Jacobian builders, the chains and the memory accounting work on this.
 */
export interface Differentiable<S = unknown> extends StructureHooks {
  /** Per-sample input shape (without the batch axis). */
  readonly inputShape: readonly number[];
  /** Per-sample output shape (without the batch axis). */
  readonly outputShape: readonly number[];
  /** Parameters, in Keras order. */
  readonly params: readonly Param[];
  /** Primal pass; returns the output and the residuals saved for the derivatives. */
  forward(x: Tensor, opts?: ForwardOptions): Forward<S>;
  /**
   * Pushes a block of tangents through: returns the output tangent `[B, ...out, T]`. With `out`
   * (a view `[B, ...out, T]`, possibly strided, e.g. a column block of the Jacobian being built,
   * holding zeros on entry) the layer may write `yDot` straight there and return `out`; a layer
   * that returns anything else has it copied into `out` by the caller (`deliverTangent`).
   */
  jvp(saved: S, tangents: Tangents, out?: Tensor): Tensor;
  /** Pulls an output cotangent `dy` of shape `[B, ...out]` back to the input and parameters. */
  vjp(saved: S, dy: Tensor): Cotangents;
  /**
   * Optional: the parameter cotangents of {@link Differentiable.vjp} alone (`dParams`, the same
   * values), without `dx`. A layer whose `dx` costs real work (Conv2D, Dense) gives it, so that a
   * backward pass that discards `dx` (the first layer of a model in training) skips that work.
   * Fallback: `vjp(saved, dy).dParams`.
   */
  vjpParams?(saved: S, dy: Tensor): Tensor[];
  /**
   * True when `vjp` always returns `dx` in a new buffer of its own (no view of `dy`, of a residual
   * or of anything else): a tape may then give that buffer back for reuse once the next layer
   * down has consumed it. Default (absent) false.
   */
  readonly freshCotangent?: boolean;
  /**
   * Optional: this layer is one activation that the layer before it may apply in its own
   * epilogue ({@link Differentiable.fusedForward}); null or absent: it runs on its own. The
   * fallback, two passes, is always right: fusing only saves a buffer and a pass over it.
   */
  absorbable?(): AbsorbableActivation | null;
  /**
   * Optional: this layer's forward pass followed by `activation` in one pass (the activation
   * applied in place to this layer's output, which is not kept): returns the activation's output,
   * the same values as the two passes apart, and residuals that this layer's own rules run on.
   * Null when it cannot (its rules would read the output it overwrites): then the two run apart.
   */
  fusedForward?(x: Tensor, activation: ActivationName, opts?: ForwardOptions): Forward<S> | null;
  /** True for a layer that draws random numbers in training (Dropout's mask): the same seed must reach it in every way. */
  readonly stochastic?: boolean;
  /**
   * True when a stochastic forward honours {@link ForwardOptions.batchSlice} (draws for the whole
   * batch, keeps its rows). A data-parallel pool refuses a stochastic layer without it, since its
   * shards would draw other noise than one pass over the batch.
   */
  readonly batchSliced?: boolean;
  /** The layers of a stage, first to last; absent on a single layer. */
  readonly layers?: readonly Differentiable[];
  /** How errors name it: `Conv2D "conv2d_1"`. */
  describe?(): string;
  /**
   * Applies the state a training forward pass computed but did not apply (BatchNormalization's
   * moving statistics, kept in `saved`). `forward` never mutates, so that the Jacobian builders
   * and finite-difference checks may run it again; the one caller that commits a pass (the
   * `GradientTape` that records it, in `lib/tape.ts`) calls this once. Absent on stateless layers.
   */
  applyUpdates?(saved: S): void;
}

/** The residuals of a layer that applies an activation of its own (Conv2D, Dense): what {@link fuseIntoLinear} keeps. */
export interface ActivatedSaved {
  /** The input, contiguous. */
  x: Tensor;
  /** The output after the activation. */
  y: Tensor;
  /** The pre-activation, for an activation whose rules read it; else null. */
  z?: Tensor | null;
}

/**
 * {@link Differentiable.fusedForward} of a layer that applies an activation of its own (Conv2D,
 * Dense): null unless its own is linear; else its forward `run` with `activation` in place of it,
 * residuals `{ x, y, z: null }` (a linear layer's rules read `x` alone; `y` holds the activation's
 * output, the pre-activation is not kept).
 */
export function fuseIntoLinear<S extends ActivatedSaved>(own: ActivationName, activation: ActivationName, run: (activation: ActivationName) => Forward<S>): Forward<S> | null {
  if (own !== 'linear') return null;
  const f = run(activation);
  return { y: f.y, saved: { ...f.saved, z: null } };
}

/** The single layers of a layer or a stage (a stage's `layers`, recursively), first to last. */
export function leavesOf(f: Differentiable): Differentiable[] {
  return f.layers ? f.layers.flatMap((l) => leavesOf(l)) : [f];
}

/** How errors and reports name `f`. */
export function describeOf(f: Differentiable): string {
  return typeof f.describe === 'function' ? f.describe() : `a Differentiable of input ${fmtShape(f.inputShape)}`;
}

/** Shared setup of a layer: name, dtype, the input shape it was built for, its parameters. */
export abstract class Layer<S = unknown> implements Differentiable<S> {
  /** The Keras class name (`Conv2D`, `Dense`, ...), as in model files. */
  abstract readonly className: string;
  /** A name unique within its model (`conv2d_1`), for errors and reports. */
  name: string;
  /** Parameters in Keras order; empty for parameter-free layers. */
  params: Param[] = [];
  /** The dtype of parameters and outputs. */
  dtype: DType = 'float64';
  /**
   * How each parameter is initialized in a fresh build, by name (`kernel`, `bias`), as the config's
   * `kernel_initializer`, `bias_initializer`… gave it (any Keras form, recorded as received).
   * Unset: Keras' defaults, Glorot uniform for kernels and zeros for biases. Resolved only when a
   * fresh build draws weights, so that a file whose weights are given loads whatever it names.
   */
  initializers: Record<string, InitializerSpec> = {};
  private _trainable = true;
  private _inputShape: number[] | null = null;
  private _outputShape: number[] | null = null;

  /**
   * Names the layer and reads what every Keras layer config may carry besides the layer's own
   * options: `trainable` (false freezes every parameter; the layer's constructor checks the other keys).
   */
  constructor(name?: string, config?: unknown) {
    this.name = name ?? '';
    if (config !== null && typeof config === 'object' && Object.hasOwn(config, 'trainable')) {
      const t = (config as { trainable: unknown }).trainable;
      if (typeof t !== 'boolean') throw new ConfigError(`${this.describeConfig()}: expected trainable to be true or false, received ${fmtValue(t)}`);
      this._trainable = t;
    }
  }

  /** How a config error names the layer before `className` is set (subclass fields come after `super`). */
  private describeConfig(): string {
    return this.name ? `layer "${this.name}"` : 'layer';
  }

  /** Per-sample input shape; set by {@link Layer.build}. */
  get inputShape(): readonly number[] {
    if (!this._inputShape) throw new ConfigError(`layer ${this.describe()}: not built yet; call build(inputShape) or put it in a Sequential with an input shape`);
    return this._inputShape;
  }

  /** Per-sample output shape; set by {@link Layer.build}. */
  get outputShape(): readonly number[] {
    if (!this._outputShape) throw new ConfigError(`layer ${this.describe()}: not built yet`);
    return this._outputShape;
  }

  /**
   * Keras' `layer.trainable`: false freezes every parameter (no gradient, no Jacobian, no update).
   * Setting it true makes trainable only the parameters that are weights by nature
   * (`paramTrainable`): BatchNormalization's moving statistics stay state.
   */
  get trainable(): boolean {
    return this._trainable;
  }

  /** Freezes (false) or unfreezes (true) every parameter that is a weight by nature. */
  set trainable(v: boolean) {
    if (typeof v !== 'boolean') throw new ConfigError(`layer ${this.describe()}: expected trainable to be true or false, received ${fmtValue(v)}`);
    this._trainable = v;
    for (const p of this.params) p.trainable = v && this.paramTrainable(p.name);
  }

  /** Whether a parameter of this name is a weight (true) or state (false) when the layer is trainable. Default: every one is a weight. */
  protected paramTrainable(_name: string): boolean {
    return true;
  }

  /** True once {@link Layer.build} has run. */
  get built(): boolean {
    return this._inputShape !== null;
  }

  /**
   * Fixes the per-sample input shape, validates it against the configuration and creates the
   * parameters from `rng` with their {@link Layer.initializers} (Keras' defaults: Glorot-uniform
   * kernels, zero biases), or zeros with `initialize: false` (weights about to be loaded); their
   * bytes are checked against the memory budget before anything is allocated.
   */
  build(inputShape: readonly number[], opts: { rng?: Rng; dtype?: DType; initialize?: boolean } = {}): this {
    if (!Array.isArray(inputShape) || inputShape.some((d) => !Number.isSafeInteger(d) || d <= 0)) {
      throw new ShapeError(`layer ${this.describe()}: expected an input shape of positive integers, received ${fmtValue(inputShape)}`);
    }
    const dtype = opts.dtype ?? this.dtype;
    const out = this.computeOutputShape(inputShape);
    const shapes = this.paramShapes(inputShape);
    const elements = shapes.reduce((n, p) => n + sizeOf(p.shape), 0);
    guardBytes(`the parameters of ${this.describe()} (${elements} values)`, elements * bytesPerElement(dtype), undefined, 'use a smaller layer');
    this.dtype = dtype;
    this._inputShape = inputShape.slice();
    this._outputShape = out;
    const rng = opts.rng ?? new Rng(0);
    this.params = shapes.map(({ name, shape, fanIn, fanOut }) => {
      const trainable = this._trainable && this.paramTrainable(name);
      if (opts.initialize === false) return { name, value: zeros(shape, this.dtype), trainable };
      // A config's initializer wins; else the layer's own default (BatchNormalization's ones), else Keras' (Glorot-uniform kernels, zero biases).
      const own = Object.hasOwn(this.initializers, name);
      const init = own ? null : this.initialValue(name, shape);
      if (init) return { name, value: init, trainable };
      const spec = own ? this.initializers[name] : name === 'bias' ? 'zeros' : 'glorot_uniform';
      return { name, value: initialize(spec, shape, fanIn, fanOut, rng, this.dtype), trainable };
    });
    return this;
  }

  /** The per-sample output shape for an input shape; throws if the configuration cannot take it. */
  abstract computeOutputShape(inputShape: readonly number[]): number[];

  /** Shapes (and fans, for Glorot) of the parameters for an input shape. Default: none. */
  protected paramShapes(_inputShape: readonly number[]): { name: string; shape: number[]; fanIn: number; fanOut: number }[] {
    return [];
  }

  /** A parameter's initial value other than Glorot-uniform (kernels) or zeros (`bias`), or null for those: BatchNormalization's ones and zeros. */
  protected initialValue(_name: string, _shape: number[]): Tensor | null {
    return null;
  }

  /** The Keras config (snake_case keys) that rebuilds this layer. */
  abstract getConfig(): Record<string, unknown>;

  abstract forward(x: Tensor, opts?: ForwardOptions): Forward<S>;
  abstract jvp(saved: S, tangents: Tangents, out?: Tensor): Tensor;
  abstract vjp(saved: S, dy: Tensor): Cotangents;
  /** Optional: the parameter cotangents alone (see {@link Differentiable.vjpParams}). */
  vjpParams?(saved: S, dy: Tensor): Tensor[];
  /** Optional: an activation the layer before may apply (see {@link Differentiable.absorbable}). */
  absorbable?(): AbsorbableActivation | null;
  /** Optional: forward with the next layer's activation in its epilogue (see {@link Differentiable.fusedForward}). */
  fusedForward?(x: Tensor, activation: ActivationName, opts?: ForwardOptions): Forward<S> | null;
  /** `vjp`'s `dx` is always a new buffer of its own (see {@link Differentiable.freshCotangent}). */
  readonly freshCotangent?: boolean;

  /**
   * Records the `<param>_initializer` keys of a Keras config (`kernel_initializer` → `kernel`),
   * as received; the layer's constructor calls it for the parameters it has.
   */
  protected recordInitializers(config: Record<string, unknown>, names: readonly string[]): void {
    for (const n of names) {
      const key = `${n}_initializer`;
      if (Object.hasOwn(config, key) && config[key] !== null && config[key] !== undefined) this.initializers[n] = config[key] as InitializerSpec;
    }
  }

  /** The recorded initializers as Keras config keys, for `getConfig`. */
  protected initializerConfig(): Record<string, unknown> {
    return Object.fromEntries(Object.entries(this.initializers).map(([n, spec]) => [`${n}_initializer`, spec]));
  }

  /** Checks a batch against the built input shape; quotes both on mismatch. */
  protected checkInput(x: Tensor): void {
    assertShape(x, [null, ...this.inputShape], `${this.describe()} input`);
    if (dtypeOf(x) !== this.dtype) {
      throw new ShapeError(`${this.describe()} input: expected dtype ${this.dtype}, received ${dtypeOf(x)}`);
    }
  }

  /** Checks a cotangent against the output shape of the saved pass. */
  protected checkCotangent(dy: Tensor, batch: number): void {
    assertShape(dy, [batch, ...this.outputShape], `${this.describe()} vjp dy`);
  }

  /** `Conv2D "conv2d_1"`: how errors name this layer. */
  describe(): string {
    return this.name ? `${this.className} "${this.name}"` : this.className;
  }
}

/** Glorot (Xavier) uniform: `U(-l, l)` with `l = sqrt(6 / (fanIn + fanOut))`, as Keras (`initialize('glorot_uniform', …)`). */
export function glorotUniform(shape: readonly number[], fanIn: number, fanOut: number, rng: Rng, dtype: DType = 'float64'): Tensor {
  return initialize('glorot_uniform', shape, fanIn, fanOut, rng, dtype);
}

/**
 * Throws if a config has keys the layer does not know: a typo must not be silently ignored.
 * Keys that Keras writes into every saved model (`data_format`, `groups`, initializers,
 * regularizers, constraints...) are accepted when they hold the value this library implements,
 * and refused, quoting the value, when they ask for something it does not.
 */
export function checkKeys(config: unknown, known: readonly string[], layer: string): asserts config is Record<string, unknown> {
  if (config === null || typeof config !== 'object' || Array.isArray(config)) {
    throw new ConfigError(`${layer}: expected a config object, received ${fmtValue(config)}`);
  }
  // Own keys only, looked up in Maps: a key named `__proto__` or `constructor` is a key like any other.
  for (const k of Object.keys(config)) {
    if (known.includes(k)) continue;
    const v = (config as Record<string, unknown>)[k];
    const accepts = KERAS_DEFAULTS.get(k);
    if (!accepts) throw new ConfigError(`${layer}: unknown option ${JSON.stringify(k)}; expected one of ${known.join(', ')}`);
    if (!accepts.ok(v)) throw new ConfigError(`${layer}: option ${JSON.stringify(k)} must be ${accepts.expected} (the only one implemented), received ${fmtValue(v)}`);
  }
}

const isNull = (v: unknown): boolean => v === null || v === undefined;
const NULL_OK = { ok: isNull, expected: 'null' };
// Any initializer config is recorded by the layers that have the parameter (see Layer.recordInitializers), and resolved only by a fresh build.
const INITIALIZER_OK = { ok: (v: unknown) => isNull(v) || typeof v === 'string' || (typeof v === 'object' && !Array.isArray(v)), expected: 'an initializer name or config' };

/** Keras keys accepted at the values implemented here; initializers in any form. */
const KERAS_DEFAULTS = new Map<string, { ok: (v: unknown) => boolean; expected: string }>([
  ['data_format', { ok: (v) => isNull(v) || v === 'channels_last', expected: '"channels_last"' }],
  ['groups', { ok: (v) => v === 1, expected: '1' }],
  ['kernel_initializer', INITIALIZER_OK],
  ['bias_initializer', INITIALIZER_OK],
  ['kernel_regularizer', NULL_OK],
  ['bias_regularizer', NULL_OK],
  ['activity_regularizer', NULL_OK],
  ['kernel_constraint', NULL_OK],
  ['bias_constraint', NULL_OK],
  ['lora_rank', NULL_OK],
]);

export { fmtShape };

/** Keys any Keras layer config may carry besides its own options. */
export const BASE_KEYS = ['name', 'trainable', 'dtype', 'input_shape', 'batch_input_shape'] as const;

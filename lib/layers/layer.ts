/**
 * The contract every layer keeps: `forward` (saving what the derivatives need), `jvp` (the
 * dual-number rule: tangents pushed forward) and `vjp` (the cotangent pulled back), in that order.
 *
 * Tangent layout, said once: a block of `T` tangents rides along a primal as a trailing axis, so
 * the tangent of an input `x` of shape `[B, ...in]` has shape `[B, ...in, T]`, the tangent of a
 * parameter of shape `[...param]` has shape `[...param, T]`, and `jvp` returns `[B, ...out, T]`.
 * Every scalar thus carries a vector of `T` derivative parts: a vectorized dual number.
 * @module
 */
import { ConfigError, ShapeError, fmtShape, fmtValue } from '../errors.js';
import { Rng } from '../rng.js';
import { type DType, type Tensor, assertShape, dtypeOf, tensor, zeros, sizeOf } from '../tensor.js';
import type { JacobianOptions, DenseJacobian, SparseJacobianOptions } from '../jacobian.js';
import type { SparseJacobian } from '../sparse/csr.js';
import { jacobianWrtInput, jacobianWrtWeights } from '../jacobian.js';

/** A trainable parameter in Keras order (`kernel` then `bias`). */
export interface Param {
  /** `kernel` or `bias`, as Keras names them. */
  readonly name: string;
  /** The current value; replaced (never resized) by optimizers and loaders. */
  value: Tensor;
}

/** Options of a forward pass. */
export interface ForwardOptions {
  /** Training mode: Dropout draws a fresh mask. Default false (inference). */
  training?: boolean;
  /** Where Dropout draws its mask from in training; a layer falls back to its own seeded generator. */
  rng?: Rng;
}

/** A forward pass's output and the residuals it saved for the derivative rules. */
export interface Forward<S> {
  /** The primal output, `[B, ...out]`. */
  y: Tensor;
  /** What `jvp` and `vjp` need from this pass (documented per layer). */
  saved: S;
}

/** A block of tangents pushed into `jvp`; `null` means a zero tangent (skipped, not allocated). */
export interface Tangents {
  /** Tangent of the input, `[B, ...in, T]`, or null. */
  dx: Tensor | null;
  /** Tangent of each parameter, `[...param, T]` each, or null for all-zero. */
  dParams: (Tensor | null)[] | null;
  /** How many tangents ride in this block. */
  T: number;
  /**
   * Optional promise from the caller: every non-null tangent of this block is zero outside rows
   * `[lo, hi)` of its flattened index (per sample for `dx`). The Jacobian builders seed basis
   * columns `c0..c0+T` and say so here, so that a layer may skip the zero rows; a layer that
   * ignores it is still right.
   */
  rows?: {
    /** First row that may be non-zero. */
    lo: number;
    /** One past the last row that may be non-zero. */
    hi: number;
  };
}

/** What `vjp` returns: the cotangent of the input and of each parameter. */
export interface Cotangents {
  /** dLoss/dx, `[B, ...in]`. */
  dx: Tensor;
  /** dLoss/dθ per parameter, in `params` order, summed over the batch. */
  dParams: Tensor[];
}

/**
 * Anything with a forward pass and both derivative rules: a layer, or a stage of layers.
 * The Jacobian builders and the memory accounting work on this.
 */
export interface Differentiable<S = unknown> {
  /** Per-sample input shape (without the batch axis). */
  readonly inputShape: readonly number[];
  /** Per-sample output shape (without the batch axis). */
  readonly outputShape: readonly number[];
  /** Trainable parameters, in Keras order. */
  readonly params: readonly Param[];
  /** Primal pass; returns the output and the residuals saved for the derivatives. */
  forward(x: Tensor, opts?: ForwardOptions): Forward<S>;
  /** Pushes a block of tangents through: returns `[B, ...out, T]`. */
  jvp(saved: S, tangents: Tangents): Tensor;
  /** Pulls a cotangent `dy` of shape `[B, ...out]` back to the input and parameters. */
  vjp(saved: S, dy: Tensor): Cotangents;
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
  /** Whether training updates this layer's parameters (Keras' `trainable`); model files set it, `false` is saved back. */
  trainable = true;
  private _inputShape: number[] | null = null;
  private _outputShape: number[] | null = null;

  constructor(name?: string) {
    this.name = name ?? '';
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

  /** True once {@link Layer.build} has run. */
  get built(): boolean {
    return this._inputShape !== null;
  }

  /**
   * Fixes the per-sample input shape, validates it against the configuration and creates the
   * parameters (Glorot-uniform kernels, zero biases) from `rng`.
   */
  build(inputShape: readonly number[], opts: { rng?: Rng; dtype?: DType } = {}): this {
    if (!Array.isArray(inputShape) || inputShape.some((d) => !Number.isInteger(d) || d <= 0)) {
      throw new ShapeError(`layer ${this.describe()}: expected an input shape of positive integers, received ${fmtValue(inputShape)}`);
    }
    this.dtype = opts.dtype ?? this.dtype;
    const out = this.computeOutputShape(inputShape);
    this._inputShape = inputShape.slice();
    this._outputShape = out;
    this.params = this.paramShapes(inputShape).map(({ name, shape, fanIn, fanOut }) => {
      if (name === 'bias') return { name, value: zeros(shape, this.dtype) };
      return { name, value: glorotUniform(shape, fanIn, fanOut, opts.rng ?? new Rng(0), this.dtype) };
    });
    return this;
  }

  /** The per-sample output shape for an input shape; throws if the configuration cannot take it. */
  abstract computeOutputShape(inputShape: readonly number[]): number[];

  /** Shapes (and fans, for Glorot) of the parameters for an input shape. Default: none. */
  protected paramShapes(_inputShape: readonly number[]): { name: string; shape: number[]; fanIn: number; fanOut: number }[] {
    return [];
  }

  /** The Keras config (snake_case keys) that rebuilds this layer. */
  abstract getConfig(): Record<string, unknown>;

  abstract forward(x: Tensor, opts?: ForwardOptions): Forward<S>;
  abstract jvp(saved: S, tangents: Tangents): Tensor;
  abstract vjp(saved: S, dy: Tensor): Cotangents;

  /**
   * Jacobian w.r.t. the input, built column by column with forward-mode dual numbers:
   * shape `[B, ...out, ...in]` (TensorFlow's `batch_jacobian`).
   * @example
   * const dense = new Dense({ units: 2 }).build([3]);
   * const J = dense.jacobianWrtInput(tensor([1, 2, 3], [1, 3])); // J.shape = [1, 2, 3]
   */
  jacobianWrtInput(x: Tensor, opts: SparseJacobianOptions & ForwardOptions): SparseJacobian;
  jacobianWrtInput(x: Tensor, opts?: JacobianOptions & ForwardOptions): DenseJacobian;
  jacobianWrtInput(x: Tensor, opts?: (JacobianOptions | SparseJacobianOptions) & ForwardOptions): DenseJacobian | SparseJacobian {
    return jacobianWrtInput(this, x, opts);
  }

  /**
   * Jacobian w.r.t. each parameter, built column by column with forward-mode dual numbers:
   * one `[B, ...out, ...param]` per parameter (TensorFlow's `jacobian` of the batched output).
   */
  jacobianWrtWeights(x: Tensor, opts: SparseJacobianOptions & ForwardOptions): SparseJacobian[];
  jacobianWrtWeights(x: Tensor, opts?: JacobianOptions & ForwardOptions): DenseJacobian[];
  jacobianWrtWeights(x: Tensor, opts?: (JacobianOptions | SparseJacobianOptions) & ForwardOptions): DenseJacobian[] | SparseJacobian[] {
    return jacobianWrtWeights(this, x, opts);
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

/** Glorot (Xavier) uniform: `U(-l, l)` with `l = sqrt(6 / (fanIn + fanOut))`, as Keras. */
export function glorotUniform(shape: readonly number[], fanIn: number, fanOut: number, rng: Rng, dtype: DType = 'float64'): Tensor {
  const limit = Math.sqrt(6 / (fanIn + fanOut));
  const n = sizeOf(shape);
  const data = new Array<number>(n);
  for (let i = 0; i < n; i++) data[i] = rng.uniform(-limit, limit);
  return tensor(data, shape, dtype);
}

/** Reads a positive integer or a pair of them (`3` or `[3, 3]`), as Keras accepts. */
export function pair(v: unknown, what: string, layer: string): [number, number] {
  const arr = typeof v === 'number' ? [v, v] : v;
  if (!Array.isArray(arr) || arr.length !== 2 || arr.some((d) => !Number.isInteger(d) || d <= 0)) {
    throw new ConfigError(`${layer}: expected ${what} to be a positive integer or a pair of them, received ${fmtValue(v)}`);
  }
  return [arr[0], arr[1]];
}

/** Padding as Keras names it. */
export type Padding = 'valid' | 'same';

/** Validates a padding option. */
export function padding(v: unknown, layer: string): Padding {
  if (v === undefined) return 'valid';
  if (v !== 'valid' && v !== 'same') throw new ConfigError(`${layer}: expected padding "valid" or "same", received ${fmtValue(v)}`);
  return v;
}

/**
 * Output extent and leading pad of one spatial axis, TensorFlow's rule: 'valid' takes
 * `floor((n - k) / s) + 1`; 'same' takes `ceil(n / s)` and pads `max((out - 1) s + k - n, 0)` in
 * all, the smaller half before.
 */
export function windowAxis(n: number, k: number, s: number, pad: Padding, layer: string): {
  /** Output extent. */
  out: number;
  /** Padding before the first element. */
  before: number
} {
  if (pad === 'valid') {
    if (k > n) throw new ShapeError(`${layer}: expected a window of ${k} to fit an input extent of ${n} with padding "valid", received extent ${n} < ${k}`);
    return { out: Math.floor((n - k) / s) + 1, before: 0 };
  }
  const out = Math.ceil(n / s);
  const total = Math.max((out - 1) * s + k - n, 0);
  return { out, before: Math.floor(total / 2) };
}

/**
 * The windows of one spatial axis, hoisted out of the hot loops: output position `o` reads input
 * positions `start[o] + k` for kernel taps `k` in `[lo[o], hi[o])`, the taps that land inside the
 * input. The others fall in the padding: patch gathers leave them zero and the tangent loops skip them.
 */
export interface WindowRanges {
  /** Output extent. */
  out: number;
  /** `o · stride − padBefore`: the input position of tap 0 (negative inside the leading pad). */
  start: Int32Array;
  /** First tap inside the input. */
  lo: Int32Array;
  /** One past the last tap inside the input. */
  hi: Int32Array;
}

/** Valid tap ranges of every window along an axis of extent `n`, window `k`, stride `s` (TensorFlow's padding rule via {@link windowAxis}). */
export function windowRanges(n: number, k: number, s: number, pad: Padding, layer: string): WindowRanges {
  const { out, before } = windowAxis(n, k, s, pad, layer);
  const start = new Int32Array(out);
  const lo = new Int32Array(out);
  const hi = new Int32Array(out);
  for (let o = 0; o < out; o++) {
    start[o] = o * s - before;
    lo[o] = Math.max(0, -start[o]);
    hi[o] = Math.min(k, n - start[o]);
  }
  return { out, start, lo, hi };
}

/**
 * Throws if a config has keys the layer does not know: a typo must not be silently ignored.
 * Keys that Keras writes into every saved model (`data_format`, `dilation_rate`, initializers,
 * regularizers, constraints...) are accepted when they hold the value this library implements,
 * and refused, quoting the value, when they ask for something it does not.
 */
export function checkKeys(config: Record<string, unknown>, known: readonly string[], layer: string): void {
  for (const [k, v] of Object.entries(config)) {
    if (known.includes(k)) continue;
    const accepts = KERAS_DEFAULTS[k];
    if (!accepts) throw new ConfigError(`${layer}: unknown option ${JSON.stringify(k)}; expected one of ${known.join(', ')}`);
    if (!accepts.ok(v)) throw new ConfigError(`${layer}: option ${JSON.stringify(k)} must be ${accepts.expected} (the only one implemented), received ${fmtValue(v)}`);
  }
}

const isNull = (v: unknown): boolean => v === null || v === undefined;
const initializerIs = (names: string[]) => (v: unknown): boolean => {
  const name = typeof v === 'string' ? v : (v as { class_name?: unknown } | null)?.class_name;
  return typeof name === 'string' && names.includes(name);
};
const NULL_OK = { ok: isNull, expected: 'null' };

/** Keras keys accepted at the values implemented here (weights come from the file or from Glorot-uniform / zeros). */
const KERAS_DEFAULTS: Record<string, { ok: (v: unknown) => boolean; expected: string }> = {
  data_format: { ok: (v) => isNull(v) || v === 'channels_last', expected: '"channels_last"' },
  dilation_rate: { ok: (v) => v === 1 || (Array.isArray(v) && v.every((d) => d === 1)), expected: '1 or [1, 1]' },
  groups: { ok: (v) => v === 1, expected: '1' },
  kernel_initializer: { ok: initializerIs(['GlorotUniform', 'glorot_uniform']), expected: 'GlorotUniform' },
  bias_initializer: { ok: initializerIs(['Zeros', 'zeros']), expected: 'Zeros' },
  kernel_regularizer: NULL_OK,
  bias_regularizer: NULL_OK,
  activity_regularizer: NULL_OK,
  kernel_constraint: NULL_OK,
  bias_constraint: NULL_OK,
  lora_rank: NULL_OK,
};

export { fmtShape };

/** Keys any Keras layer config may carry besides its own options. */
export const BASE_KEYS = ['name', 'trainable', 'dtype', 'input_shape', 'batch_input_shape'] as const;

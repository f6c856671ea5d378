/**
 * Activation: applies one activation of `activations.ts` (element-wise; softmax over the last axis).
 * Its rules are the primitives of `activations.ts`; this file gives them a layer's shape.
 * @module
 */
import { type ActivationName, activationForward, activationJvp, activationName, activationNeeds, activationVjp } from '../activations.js';
import { type Tensor, assertShape, contiguous, copy, dtypeOf, zeros } from '../tensor.js';
import { BASE_KEYS, type Cotangents, type Forward, Layer, type Tangents, checkKeys } from './layer.js';

/** Keras config of {@link Activation}. */
export interface ActivationConfig {
  /** One of {@link ACTIVATIONS} (softmax over the last axis). */
  activation: ActivationName;
}

/** What Activation's forward pass saves: its output `y`, and its input `z` when the activation's rules need it ({@link activationNeeds}). */
export interface ActivationSaved {
  /** The output, `[B, ...shape]`, contiguous. */
  y: Tensor;
  /** A contiguous copy of the input, `[B, ...shape]`, for gelu, swish/silu and softsign; else null. */
  z: Tensor | null;
}

/**
 * An activation applied element-wise (softmax: over the last axis).
 * @example
 * const act = new Activation({ activation: 'sigmoid' }).build([1]);
 */
export class Activation extends Layer<ActivationSaved> {
  readonly className = 'Activation';
  /** The activation applied. */
  readonly activation: ActivationName;

  constructor(config: ActivationConfig, name?: string) {
    super(name);
    checkKeys(config as unknown as Record<string, unknown>, ['activation', ...BASE_KEYS], 'Activation');
    this.activation = activationName(config.activation, 'Activation');
  }

  computeOutputShape(inputShape: readonly number[]): number[] {
    return inputShape.slice();
  }

  getConfig(): Record<string, unknown> {
    return { activation: this.activation };
  }

  private get rowLength(): number {
    return this.inputShape[this.inputShape.length - 1];
  }

  /** Primal pass. Saves `y` (and `z`, a copy of the input, when the activation needs it). */
  forward(x: Tensor): Forward<ActivationSaved> {
    this.checkInput(x);
    const y = copy(x);
    const z = activationNeeds(this.activation) === 'z' ? copy(x) : null;
    activationForward(this.activation, y.data, y.data, y.size, this.rowLength);
    return { y, saved: { y, z } };
  }

  /** Dual-number rule: `dy = act'(x) · dx` (softmax: `y ⊙ (dx − ⟨y, dx⟩)` per row). No parameters. */
  jvp({ y, z }: ActivationSaved, { dx, T }: Tangents): Tensor {
    const dy = zeros([...y.shape, T], dtypeOf(y));
    if (!dx) return dy;
    assertShape(dx, [...y.shape, T], `${this.describe()} jvp dx`);
    dy.data.set(contiguous(dx).data.subarray(0, dy.size));
    activationJvp(this.activation, z?.data ?? null, y.data, dy.data, y.size, T, this.rowLength);
    return dy;
  }

  /** VJP rule: `dx = act'(x)ᵀ dy`. */
  vjp({ y, z }: ActivationSaved, dy: Tensor): Cotangents {
    this.checkCotangent(dy, y.shape[0]);
    const dx = zeros(y.shape, dtypeOf(y));
    activationVjp(this.activation, z?.data ?? null, y.data, contiguous(dy).data, dx.data, y.size, this.rowLength);
    return { dx, dParams: [] };
  }
}

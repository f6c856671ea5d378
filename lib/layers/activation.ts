/**
 * Activation: applies one activation (linear, relu, sigmoid, tanh, softmax over the last axis).
 * Its rules are the primitives of `activations.ts`; this file gives them a layer's shape.
 * @module
 */
import { ACTIVATIONS, type ActivationName, activationForward, activationJvp, activationName, activationVjp } from '../activations.js';
import { ConfigError, fmtValue } from '../errors.js';
import { type Tensor, assertShape, contiguous, copy, dtypeOf, zeros } from '../tensor.js';
import { BASE_KEYS, type Cotangents, type Forward, Layer, type Tangents, checkKeys } from './layer.js';

/** Keras config of {@link Activation}. */
export interface ActivationConfig {
  /** `linear`, `relu`, `sigmoid`, `tanh` or `softmax` (over the last axis). */
  activation: ActivationName;
}

/** What Activation's forward pass saves: only its output `y`, from which every rule here derives `act'`. */
export interface ActivationSaved {
  /** The output, `[B, ...shape]`, contiguous. */
  y: Tensor;
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
    // A missing activation is a mistake here, not a request for linear (as activationName reads
    // `undefined` for Dense and Conv2D): an Activation layer exists only to apply one.
    if (!config || typeof config !== 'object' || config.activation === undefined) {
      throw new ConfigError(`Activation: expected config.activation, one of ${ACTIVATIONS.join(', ')}, received ${fmtValue(config)}`);
    }
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

  /** Primal pass. Saves `y`. */
  forward(x: Tensor): Forward<ActivationSaved> {
    this.checkInput(x);
    const y = copy(x);
    activationForward(this.activation, y.data, y.data, y.size, this.rowLength);
    return { y, saved: { y } };
  }

  /** Dual-number rule: `dy = act'(x) · dx` (softmax: `y ⊙ (dx − ⟨y, dx⟩)` per row). No parameters. */
  jvp({ y }: ActivationSaved, { dx, T }: Tangents): Tensor {
    const dy = zeros([...y.shape, T], dtypeOf(y));
    if (!dx) return dy;
    assertShape(dx, [...y.shape, T], `${this.describe()} jvp dx`);
    dy.data.set(contiguous(dx).data.subarray(0, dy.size));
    activationJvp(this.activation, y.data, dy.data, y.size, T, this.rowLength);
    return dy;
  }

  /** VJP rule: `dx = act'(x)ᵀ dy`. */
  vjp({ y }: ActivationSaved, dy: Tensor): Cotangents {
    this.checkCotangent(dy, y.shape[0]);
    const dx = zeros(y.shape, dtypeOf(y));
    activationVjp(this.activation, y.data, contiguous(dy).data, dx.data, y.size, this.rowLength);
    return { dx, dParams: [] };
  }
}

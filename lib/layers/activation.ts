/**
 * Activation: applies one activation (linear, relu, sigmoid, tanh, softmax over the last axis).
 * Its rules are the primitives of `activations.ts`; this file gives them a layer's shape.
 * @module
 */
import { type ActivationName, activationForward, activationJvp, activationName, activationVjp, couplesRow } from '../activations.js';
import { type Tensor, assertShape, contiguous, copy, dtypeOf, zeros } from '../tensor.js';
import type { AxisStructure } from '../structure.js';
import { BASE_KEYS, type Cotangents, type Forward, Layer, type LayerPass, type LocalJacobian, type Residuals, type Tangents, checkKeys } from './layer.js';
import { elementwiseLocal } from './local.js';

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

  // Structure hooks: what the sparse engines and the memory estimate know of an activation.

  /** Diagonal, or, for an activation that couples a row (softmax), full along the last axis. */
  inputStructure(): AxisStructure {
    const dims = this.inputShape.slice();
    const last = dims.length - 1;
    return { inDims: dims, maps: dims.map((d, i) => (i === last && couplesRow(this.activation) ? { kind: 'full', rows: d } : { kind: 'identity' })) };
  }

  /** Forward saves its output (see {@link ActivationSaved}). */
  residuals(): Residuals {
    return { saves: ['y'] };
  }

  /** The local Jacobian at a recorded pass, read off the activation's own dual-number rule. */
  localJacobian(pass: LayerPass): LocalJacobian[] {
    const { y } = pass.saved as ActivationSaved;
    const n = y.size / y.shape[0];
    const block = couplesRow(this.activation) ? this.rowLength : 1;
    return [elementwiseLocal(y.shape[0], n, block, (dz, count, T) => activationJvp(this.activation, y.data, dz, count, T, this.rowLength))];
  }
}

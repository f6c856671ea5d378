/**
 * Jacobians, and how they are built: the one entry point that routes a request to the dense engine
 * (`lib/dense-jacobian.ts`: forward-mode dual numbers column by column, or stacked VJPs row by row)
 * or to the structured engines (`lib/sparse`: colourings, sparse propagation, CSR storage).
 *
 * Layout, said once and kept everywhere: a Jacobian of `y = f(x)` is `[...outShape, ...inShape]`,
 * row-major; a batch Jacobian leads with the batch axis once: `[B, ...out, ...in]` holds
 * `∂y[b, o] / ∂x[b, i]` (samples are independent, so cross-sample blocks are zero and not stored);
 * a Jacobian w.r.t. a parameter is `[B, ...out, ...param]` (TensorFlow's `jacobian` of the batched
 * output w.r.t. a weight shared by the batch).
 * @module
 */
import { type DenseJacobian, type DenseJacobianOptions, forwardJacobianWrtInput, forwardJacobianWrtWeights } from './dense-jacobian.js';
import { ConfigError } from './errors.js';
import type { Differentiable, ForwardOptions } from './layers/layer.js';
import { type JacobianEngine, type JacobianMode, type StructuredJacobianOptions, structuredJacobianWrtInput, structuredJacobianWrtWeights } from './sparse/auto.js';
import type { SparseJacobian } from './sparse/csr.js';
import type { FactoredJacobian } from './sparse/factored.js';
import type { Tensor } from './tensor.js';

export * from './dense-jacobian.js';

/** Options of the Jacobian builders. */
export interface JacobianOptions extends DenseJacobianOptions {
  /** Unset or `forward`: dense forward mode (the design card's); `reverse`: rows from VJPs; `auto`: the cheapest engine (`lib/sparse/auto.ts`). */
  mode?: JacobianMode;
  /** With `mode`: force an engine (`propagate`, `compressed` or `dense`; see `lib/sparse/auto.ts`). */
  engine?: JacobianEngine;
  /** `dense` (the default); `{ format: 'sparse' }` (see {@link SparseJacobianOptions}) returns a `SparseJacobian`. */
  format?: 'dense';
}

/** Options asking for a sparse Jacobian (per-sample CSR), built by `lib/sparse` with the mode `auto` by default. */
export interface SparseJacobianOptions extends Omit<JacobianOptions, 'format'>, Omit<StructuredJacobianOptions, keyof JacobianOptions> {
  /**
   * `sparse`: a `SparseJacobian` (structurally zero entries not stored); `factored`: w.r.t. a weight
   * whose layer states a `paramFactor` (Conv2D, Dense), a `FactoredJacobian` (`lib/sparse/factored.ts`),
   * elsewhere a `SparseJacobian`.
   */
  format: 'sparse' | 'factored';
}

/** True when the options ask for more than the dense forward builder: a format, a mode or an engine. */
function structured(opts: JacobianOptions | SparseJacobianOptions): boolean {
  const asked = opts.format === 'sparse' || opts.format === 'factored' || (opts.mode !== undefined && opts.mode !== 'forward') || opts.engine !== undefined;
  if (asked && opts.into !== undefined) {
    throw new ConfigError(`jacobian: expected into only with the dense forward builder (no format, mode or engine), received into with ${JSON.stringify({ format: opts.format, mode: opts.mode, engine: opts.engine })}`);
  }
  return asked;
}

/**
 * Jacobian w.r.t. the input, built column by column with forward-mode dual numbers:
 * `[B, ...out, ...in]`, TensorFlow's `batch_jacobian`. With `mode`, `engine` or
 * `format: 'sparse'`, the structured engines build it instead (`lib/sparse/auto.ts`).
 * @example
 * const dense = new Dense({ units: 2 }).build([3]);
 * const J = jacobianWrtInput(dense, tensor([1, 2, 3], [1, 3])); // J.shape = [1, 2, 3], J = Wᵀ
 * const S = jacobianWrtInput(dense, tensor([1, 2, 3], [1, 3]), { format: 'sparse' }); // a SparseJacobian
 */
export function jacobianWrtInput<S>(f: Differentiable<S>, x: Tensor, opts: SparseJacobianOptions & ForwardOptions): SparseJacobian;
export function jacobianWrtInput<S>(f: Differentiable<S>, x: Tensor, opts?: JacobianOptions & ForwardOptions): DenseJacobian;
export function jacobianWrtInput<S>(f: Differentiable<S>, x: Tensor, opts?: (JacobianOptions | SparseJacobianOptions) & ForwardOptions): DenseJacobian | SparseJacobian;
export function jacobianWrtInput<S>(f: Differentiable<S>, x: Tensor, opts: (JacobianOptions | SparseJacobianOptions) & ForwardOptions = {}): DenseJacobian | SparseJacobian {
  if (structured(opts)) return structuredJacobianWrtInput(f, x, { ...opts, format: opts.format ?? 'dense' }) as DenseJacobian | SparseJacobian;
  return forwardJacobianWrtInput(f, x, opts);
}

/**
 * Jacobian w.r.t. each parameter, built column by column with forward-mode dual numbers:
 * `[B, ...out, ...param]` per parameter, in `params` order. Options as {@link jacobianWrtInput}.
 * @example
 * const [dKernel, dBias] = jacobianWrtWeights(dense, x); // [1, 2, 3, 2], [1, 2, 2]
 */
export function jacobianWrtWeights<S>(f: Differentiable<S>, x: Tensor, opts: SparseJacobianOptions & { format: 'factored' } & ForwardOptions): (SparseJacobian | FactoredJacobian)[];
export function jacobianWrtWeights<S>(f: Differentiable<S>, x: Tensor, opts: SparseJacobianOptions & { format: 'sparse' } & ForwardOptions): SparseJacobian[];
export function jacobianWrtWeights<S>(f: Differentiable<S>, x: Tensor, opts?: JacobianOptions & ForwardOptions): DenseJacobian[];
export function jacobianWrtWeights<S>(f: Differentiable<S>, x: Tensor, opts?: (JacobianOptions | SparseJacobianOptions) & ForwardOptions): DenseJacobian[] | (SparseJacobian | FactoredJacobian)[];
export function jacobianWrtWeights<S>(f: Differentiable<S>, x: Tensor, opts: (JacobianOptions | SparseJacobianOptions) & ForwardOptions = {}): DenseJacobian[] | (SparseJacobian | FactoredJacobian)[] {
  if (structured(opts)) return structuredJacobianWrtWeights(f, x, { ...opts, format: opts.format ?? 'dense' }) as DenseJacobian[] | (SparseJacobian | FactoredJacobian)[];
  return forwardJacobianWrtWeights(f, x, opts);
}

/**
 * jacobian-chain: the chain rule between split neural-network stages, explicit and exact.
 * Batch Jacobians by forward-mode dual numbers beside VJPs, proven equal and measured.
 * @module
 */
export * from './errors.js';
export * from './rng.js';
export * from './tensor.js';
export * from './memory.js';
export * from './jacobian.js';
export * from './allclose.js';
export * from './activations.js';
export * from './layers/layer.js';
export * from './layers/dense.js';
export * from './layers/activation.js';

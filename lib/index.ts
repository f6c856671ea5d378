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
export * from './erf.js';
export * from './initializers.js';
export * from './layers/layer.js';
export * from './layers/window.js';
export * from './layers/local.js';
export * from './structure.js';
export * from './layers/registry.js';
export * from './losses.js';
export * from './dual.js';
export * from './sequential.js';
export * from './model-io.js';
export * from './tape.js';
export * from './helpers.js';
export * from './chain.js';
export * from './models.js';
export * from './optimizers.js';
export * from './train.js';
export * from './forensics.js';
export * from './plot.js';
export * from './data/mnist.js';
export * from './sparse/index.js';
export * from './memory-report.js';
export * from './remote/index.js';

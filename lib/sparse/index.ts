/**
 * Structured Jacobians: sparsity patterns from the layers' structure hooks, colourings, compressed and propagated
 * builders, sparse (per-sample CSR) storage, and the automatic choice of mode.
 * @module
 */
export * from './csr.js';
export * from './factored.js';
export * from './pattern.js';
export * from './colouring.js';
export * from './hooks.js';
export * from './compressed.js';
export * from './propagate.js';
export * from './auto.js';

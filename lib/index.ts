/**
 * jacobian-chain: the chain rule between split neural-network stages, explicit and exact.
 * Batch Jacobians by forward-mode dual numbers beside VJPs, proven equal and measured.
 *
 * This entry imports no Node.js module, so it bundles for a browser: models are parsed and written
 * from strings, objects and ArrayBuffers. Files on disk and the MNIST loader are in
 * `jacobian-chain/node`, SVG charts in `jacobian-chain/plot` (with the optional peers vega and
 * vega-lite), the chai assertion in `jacobian-chain/chai`.
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
export * from './layers/out.js';
export { type Epilogue, type GemmOperands, gemm, gemmJs, gemmWasm, setGemmBackend } from './kernels/gemm.js';
export * from './structure.js';
export * from './layers/registry.js';
export * from './losses.js';
export * from './dual.js';
export * from './sequential.js';
export * from './model-format.js';
export { type DecodedWeight, type EncodedWeights, type NamedValues, type ShardBytes, type ShardSource, type WeightQuantization, type WeightSpec, type WeightsGroup, decodeWeights, encodeWeights, halfToFloat, parseWeightsManifest, weightByteLength } from './tfjs-format.js';
export * from './tape.js';
export * from './helpers.js';
export * from './chain.js';
export * from './models.js';
export * from './optimizers.js';
export * from './train.js';
export * from './forensics.js';
export * from './sparse/index.js';
export * from './memory-report.js';
export * from './streamed.js';

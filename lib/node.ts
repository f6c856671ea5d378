/**
 * jacobian-chain/node: the parts that need Node.js, kept out of the main entry so that it bundles
 * for a browser: model files on disk ({@link loadModelFile} reads a model and its TF.js shards from
 * a folder, {@link saveModelFile} writes them atomically) and the MNIST digits of the `mnist`
 * package ({@link loadMnistBinary}), and the `worker_threads` training pool ({@link createPool},
 * {@link fitParallel}: data-parallel VJP steps, bit-identical for any thread count). The main entry parses and writes the same formats from strings,
 * objects and ArrayBuffers (`loadModel`, `saveModel`, `saveTfjsModel`).
 * @example
 * import { jacobianChain } from 'jacobian-chain';
 * import { loadModelFile } from 'jacobian-chain/node';
 * const model = loadModelFile('exported/model.json');
 * @module
 */
export { type SaveOptions, loadModelFile, saveModelFile, writeFileAtomic } from './model-io.js';
export * from './data/mnist.js';
export { DEFAULT_POOL_SHARDS, MAX_POOL_THREADS, type PoolOptions, PoolError, TrainingPool, createPool, fitParallel } from './pool/pool.js';
export { type ParamLayout, type ShardBounds, ShardRunner, checkShardable, paramLayout, reduceShards, shardBounds } from './pool/shard.js';

/**
 * Model files on disk: {@link loadModelFile} reads this library's JSON files, the golden fixtures,
 * Keras `to_json()` topologies and TF.js Layers `model.json` files (whose binary weight shards it
 * reads from the same folder); {@link saveModelFile} writes this library's JSON or the TF.js
 * format, atomically (a temporary file in the same folder, fsynced, renamed over the target: {@link writeFileAtomic}), so a
 * failed save leaves the previous file as it was.
 *
 * The parsing itself is in `model-format.ts` and `tfjs-format.ts`, which use no Node modules;
 * everything they export is re-exported here. The package exports the parsers from its main entry
 * and this module's disk functions from `jacobian-chain/node`, so that the main entry bundles for a
 * browser.
 * @module
 */
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, isAbsolute, join } from 'node:path';
import { ConfigError } from './errors.js';
import { type LoadOptions, loadModel, saveModel, saveTfjsModel } from './model-format.js';
import { Sequential, prefixError } from './sequential.js';

export * from './model-format.js';
export { type DecodedWeight, type EncodedWeights, type NamedValues, type ShardBytes, type ShardSource, type WeightQuantization, type WeightSpec, type WeightsGroup, decodeWeights, encodeWeights, halfToFloat, parseWeightsManifest, weightByteLength } from './tfjs-format.js';

/**
 * Reads and loads a model file from disk; a TF.js `weightsManifest`'s shards are read from the
 * file's folder. Errors name the path (and the shard, for a shard that cannot be read).
 * @example
 * const model = loadModelFile('exported/model.json'); // reads exported/weights.bin as the manifest says
 * const fresh = loadModelFile('keras_topology.json', { weights: 'initialize' });
 */
export function loadModelFile(path: string, opts: LoadOptions = {}): Sequential {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError(`model file ${JSON.stringify(path)}: cannot read it (${(e as Error).message})`);
  }
  const dir = dirname(path);
  const shards = opts.shards ?? ((p: string) => {
    // Shards sit beside model.json: a path that leaves the folder is not one tfjs would write.
    if (isAbsolute(p) || p.split(/[\\/]/).includes('..')) throw new ConfigError(`weights file ${JSON.stringify(p)}: expected a path relative to the model file's folder, inside it`);
    const full = join(dir, p);
    try {
      return readFileSync(full);
    } catch (e) {
      throw new ConfigError(`weights file ${JSON.stringify(full)}: cannot read it (${(e as Error).message})`);
    }
  });
  try {
    return loadModel(text, { ...opts, shards });
  } catch (e) {
    throw prefixError(e, `model file ${JSON.stringify(path)}`);
  }
}

/** Options of {@link saveModelFile}. */
export interface SaveOptions {
  /**
   * `'json'` (default): this library's file, topology and float64 weights in one JSON text.
   * `'tfjs'`: a TF.js Layers `model.json` at `path` and its float32 shard beside it
   * (`weights.bin` for `model.json`, else `<name>.weights.bin`).
   */
  format?: 'json' | 'tfjs';
}

/**
 * Writes a model to disk, atomically: each file goes to a temporary file in the same folder, is
 * fsynced, then renamed over the target. In the TF.js format the shard is written first, so a
 * model.json never names a shard that is not there.
 * @throws ShapeError on a NaN or infinite weight (nothing is written); the write's own error when the disk refuses (the previous file stays).
 * @example
 * saveModelFile(model, 'model.json');
 * saveModelFile(model, 'web/model.json', { format: 'tfjs' }); // web/model.json + web/weights.bin
 */
export function saveModelFile(model: Sequential, path: string, opts: SaveOptions = {}): void {
  const format = opts.format ?? 'json';
  if (format === 'json') {
    writeFileAtomic(path, JSON.stringify(saveModel(model)));
    return;
  }
  if (format !== 'tfjs') throw new ConfigError(`saveModelFile: expected format "json" or "tfjs", received ${JSON.stringify(format)}`);
  const base = basename(path);
  const shard = base === 'model.json' ? 'weights.bin' : `${base.replace(/\.json$/, '')}.weights.bin`;
  const { modelJson, weightData } = saveTfjsModel(model, shard);
  writeFileAtomic(join(dirname(path), shard), new Uint8Array(weightData));
  writeFileAtomic(path, JSON.stringify(modelJson));
}

/**
 * Writes `data` to `path` atomically: a temporary file in the same folder (so the rename stays on
 * one file system), every byte written (a short write is retried until it fails: `ulimit -f` or a
 * full disk gives EFBIG/ENOSPC), fsynced, then renamed over `path`. On any error the temporary file
 * is removed and `path` keeps its previous contents.
 * @example
 * writeFileAtomic('model.json', JSON.stringify(saveModel(model)));
 */
export function writeFileAtomic(path: string, data: string | Uint8Array): void {
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${Math.random().toString(36).slice(2, 10)}.tmp`);
  const fd = openSync(tmp, 'wx');
  let done = false;
  try {
    // write-file-atomic 7's sync path ignores writeSync's count and renames a truncated file: loop.
    for (let off = 0; off < bytes.byteLength; ) off += writeSync(fd, bytes, off, bytes.byteLength - off);
    fsyncSync(fd);
    closeSync(fd);
    done = true;
    renameSync(tmp, path);
  } catch (e) {
    if (!done) closeSync(fd);
    try {
      unlinkSync(tmp);
    } catch {
      // Already gone: nothing to clean.
    }
    throw e;
  }
  try {
    // The rename is durable once the folder's entry is: best effort (not every platform opens folders).
    const dfd = openSync(dirname(path), 'r');
    try {
      fsyncSync(dfd);
    } finally {
      closeSync(dfd);
    }
  } catch {
    // A folder that cannot be fsynced (Windows) still has the renamed file.
  }
}

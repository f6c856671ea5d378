/**
 * Model files: the Keras-style topology and weights of the golden fixtures, loaded into a
 * {@link Sequential} and saved back. Layers are made by a registry keyed by Keras' `class_name`.
 *
 * The format: `{"modelTopology": {"class_name": "Sequential", "config": {"layers": [{"class_name",
 * "config"}, …], "input_shape": [...]}}, "weights": [[{"name", "shape", "data"}, …] per layer]}`;
 * layer configs use Keras' snake_case keys. Anything the loader does not understand (malformed
 * JSON, an unknown layer, activation or option, a weight of the wrong shape) is a
 * {@link ConfigError} or {@link ShapeError} naming the layer index, what was expected and what
 * was received, thrown before a model is returned.
 * @module
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { ConfigError, ShapeError, fmtShape, fmtValue } from './errors.js';
import type { Layer } from './layers/layer.js';
import { knownLayers, layerFactory } from './layers/registry.js';
import { Rng } from './rng.js';
import { Sequential, prefixError } from './sequential.js';
import { type DType, type TensorJSON, assertFinite, fromJSON, toJSON } from './tensor.js';

/** One layer in a topology: Keras' `{"class_name", "config"}`. */
export interface LayerSpec {
  /** Keras class name: `Conv2D`, `Dense`, ... (see `knownLayers` in `layers/registry.ts`). */
  class_name: string;
  /** Keras layer config, snake_case keys (`filters`, `kernel_size`, `activation`, ...). */
  config?: Record<string, unknown>;
}

/** Keras' Sequential topology. */
export interface ModelTopology {
  /** Only `Sequential` models. */
  class_name: 'Sequential';
  /** The model's name, its layers in order, and its per-sample input shape (no batch axis). */
  config: {
    /** The model's name. */
    name?: string;
    /** The layers, in order. */
    layers: LayerSpec[];
    /** Per-sample input shape, e.g. `[10, 10, 1]`. */
    input_shape?: number[]
  };
}

/** One saved parameter: `{"name": "kernel", "shape": [...], "data": [...]}`. */
export interface WeightJSON extends TensorJSON {
  /** `kernel` or `bias`, as Keras names them. */
  name: string;
}

/** A model file: topology and per-layer weights (other keys, like a fixture's `x`, are kept by callers). */
export interface ModelFile {
  /** The layers and their configs. */
  modelTopology: ModelTopology;
  /** `weights[i]`: the parameters of layer `i` in Keras order (empty for layers without). */
  weights: WeightJSON[][];
}

/**
 * A layer from its Keras spec, `{"class_name": "Conv2D", "config": {...}}`.
 * @throws ConfigError naming the layer index, e.g. `layer 2: unknown layer class_name "Conv3D"; expected one of Conv2D, …`.
 * @example
 * const conv = layerFromConfig({ class_name: 'Conv2D', config: { filters: 6, kernel_size: 2, activation: 'relu' } });
 */
export function layerFromConfig(spec: LayerSpec, index = 0): Layer {
  const where = `layer ${index}`;
  if (!spec || typeof spec !== 'object' || typeof spec.class_name !== 'string') {
    throw new ConfigError(`${where}: expected {"class_name": string, "config": {...}}, received ${fmtValue(spec)}`);
  }
  const found = layerFactory(spec.class_name);
  if (!found) throw new ConfigError(`${where}: unknown layer class_name ${JSON.stringify(spec.class_name)}; expected one of ${knownLayers().join(', ')}`);
  const { className: cls, factory } = found;
  const config = spec.config ?? {};
  if (typeof config !== 'object' || Array.isArray(config)) throw new ConfigError(`${where} (${cls}): expected config to be an object, received ${fmtValue(config)}`);
  const name = typeof config.name === 'string' ? config.name : undefined;
  try {
    return factory(config, name);
  } catch (e) {
    throw prefixError(e, `${where} (${cls})`);
  }
}

/** Options of {@link loadModel}. */
export interface LoadOptions {
  /** dtype of the loaded weights and of the model (default float64). */
  dtype?: DType;
  /** Per-sample input shape, when the topology does not give one. */
  inputShape?: number[];
  /** Where weights come from when the file has none (Glorot uniform, seeded). */
  rng?: Rng;
}

/**
 * Loads a model from a model file's text or parsed object (a fixture works as is).
 * @example
 * const model = loadModel(readFileSync('spec/fixtures/seed_reference.json', 'utf8'));
 * model.layers.map((l) => l.className); // ['Conv2D', 'Conv2D', 'Flatten', 'Dense', 'Activation']
 */
export function loadModel(source: string | object, opts: LoadOptions = {}): Sequential {
  let obj: unknown = source;
  if (typeof source === 'string') {
    try {
      obj = JSON.parse(source);
    } catch (e) {
      throw new ConfigError(`model file: malformed JSON (${(e as Error).message}); received ${fmtValue(source.slice(0, 60))}`);
    }
  }
  if (!obj || typeof obj !== 'object' || Array.isArray(obj)) throw new ConfigError(`model file: expected a JSON object with "modelTopology", received ${fmtValue(obj)}`);
  const file = obj as Partial<ModelFile> & Partial<ModelTopology>;
  // A bare Keras topology (model.to_json()) is accepted too.
  const topology = (file.modelTopology ?? (file.class_name ? file : undefined)) as ModelTopology | undefined;
  if (!topology || typeof topology !== 'object') throw new ConfigError(`model file: expected a "modelTopology" object, received keys ${Object.keys(file).join(', ') || '(none)'}`);
  if (topology.class_name !== 'Sequential') throw new ConfigError(`model file: expected modelTopology.class_name "Sequential", received ${fmtValue(topology.class_name)}`);
  const config = topology.config;
  if (!config || !Array.isArray(config.layers)) throw new ConfigError(`model file: expected modelTopology.config.layers to be an array, received ${fmtValue(config?.layers)}`);
  let specs = config.layers;
  let inputShape = opts.inputShape ?? config.input_shape;
  // Keras writes the input as an InputLayer, or as the first layer's (batch_)input_shape.
  if (specs[0]?.class_name === 'InputLayer') {
    const c = specs[0].config ?? {};
    const batchShape = (c.batch_input_shape ?? c.batch_shape) as (number | null)[] | undefined;
    inputShape ??= batchShape?.slice(1) as number[] | undefined;
    specs = specs.slice(1);
  }
  inputShape ??= (specs[0]?.config?.input_shape as number[] | undefined) ?? ((specs[0]?.config?.batch_input_shape as number[] | undefined)?.slice(1));
  if (!Array.isArray(inputShape) || inputShape.some((d) => !Number.isInteger(d) || d <= 0)) {
    throw new ConfigError(`model file: expected modelTopology.config.input_shape to be a list of positive integers (per sample, no batch axis), received ${fmtValue(inputShape)}`);
  }
  const layers = specs.map((spec, i) => layerFromConfig(spec, i));
  const model = new Sequential(layers, { inputShape, dtype: opts.dtype, rng: opts.rng, name: config.name ?? 'sequential' });
  if (file.weights !== undefined) setWeights(model, file.weights, opts.dtype ?? 'float64');
  return model;
}

/**
 * Sets every layer's parameters from a file's `weights` (per layer, Keras order), checking count,
 * name, shape and finiteness of each before changing anything.
 */
export function setWeights(model: Sequential, weights: unknown, dtype: DType = model.dtype): void {
  if (!Array.isArray(weights) || weights.length !== model.layers.length) {
    throw new ShapeError(`model file: expected "weights" to hold one list per layer (${model.layers.length}), received ${Array.isArray(weights) ? `${weights.length} lists` : fmtValue(weights)}`);
  }
  const values = model.layers.map((layer, i) => {
    const where = `layer ${i} (${layer.describe()})`;
    const ws = weights[i] as unknown;
    const expectedNames = layer.params.map((p) => p.name);
    if (!Array.isArray(ws) || ws.length !== layer.params.length) {
      throw new ShapeError(`${where}: expected ${layer.params.length} weights [${expectedNames.join(', ')}], received ${Array.isArray(ws) ? ws.length : fmtValue(ws)}`);
    }
    return layer.params.map((p, k) => {
      const w = ws[k] as WeightJSON;
      const what = `${where} weight ${k} "${p.name}"`;
      if (w && typeof w.name === 'string' && w.name !== p.name) throw new ConfigError(`${what}: expected name "${p.name}", received ${JSON.stringify(w.name)}`);
      if (!w || !Array.isArray(w.shape) || w.shape.length !== p.value.shape.length || w.shape.some((d, a) => d !== p.value.shape[a])) {
        throw new ShapeError(`${what}: expected shape ${fmtShape(p.value.shape)}, received ${w && Array.isArray(w.shape) ? fmtShape(w.shape) : fmtValue(w)}`);
      }
      const t = fromJSON(w, dtype, what);
      assertFinite(t, what);
      return t;
    });
  });
  model.layers.forEach((layer, i) => layer.params.forEach((p, k) => (p.value = values[i][k])));
}

/**
 * The model as a model file: topology (Keras class names and snake_case configs) and weights.
 * `loadModel(saveModel(m))` rebuilds `m` with identical weights.
 * @example
 * writeFileSync('model.json', JSON.stringify(saveModel(model)));
 */
export function saveModel(model: Sequential): ModelFile {
  return {
    modelTopology: {
      class_name: 'Sequential',
      config: {
        name: model.name,
        layers: model.layers.map((l) => ({ class_name: l.className, config: { name: l.name, ...l.getConfig() } })),
        input_shape: model.inputShape.slice(),
      },
    },
    weights: model.layers.map((l) => l.params.map((p) => ({ name: p.name, ...toJSON(p.value) }))),
  };
}

/** Reads and loads a model file from disk; errors name the path. */
export function loadModelFile(path: string, opts: LoadOptions = {}): Sequential {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError(`model file ${JSON.stringify(path)}: cannot read it (${(e as Error).message})`);
  }
  try {
    return loadModel(text, opts);
  } catch (e) {
    throw prefixError(e, `model file ${JSON.stringify(path)}`);
  }
}

/** Writes {@link saveModel}'s output to disk as JSON. */
export function saveModelFile(model: Sequential, path: string): void {
  writeFileSync(path, JSON.stringify(saveModel(model)));
}

/**
 * Model files parsed and written without Node (a browser can use this module): the topology
 * (Keras 2 `to_json()`, Keras 3 `to_json()`, tfjs-layers' `model.json`, this library's own
 * files), the weights (this library's JSON `weights`, or a TF.js `weightsManifest` with its binary
 * shards as `ArrayBuffer`s), into a {@link Sequential}; and back.
 *
 * Read with own-property lookups only, every key checked against what the reader knows: a key it
 * does not act on is refused, never dropped; a wrong JSON type is a {@link ConfigError} or
 * {@link ShapeError} naming the layer and key, what was expected and what was received. A file
 * without weights loads only when the caller asks for fresh ones (`{ weights: 'initialize' }`).
 *
 * Supported topologies: `Sequential`, and `Functional`/`Model` graphs that form a single chain
 * (one input, one output, every layer called once on one tensor), in Keras 2's list form of
 * `inbound_nodes` and Keras 3's `{args, kwargs}` form. A graph that branches is refused, naming
 * the first layer where it does.
 * @module
 */
import { ConfigError, MemoryBudgetError, ShapeError, fmtShape, fmtValue } from './errors.js';
import { fmtBytes, getMemoryBudget } from './memory.js';
import type { Layer } from './layers/layer.js';
import { knownLayers, layerFactory } from './layers/registry.js';
import { Rng } from './rng.js';
import { Sequential, prefixError } from './sequential.js';
import { type DType, type TensorJSON, assertFinite, contiguous, tensor } from './tensor.js';
import { type ShardSource, type WeightsGroup, decodeWeights, encodeWeights, parseWeightsManifest } from './tfjs-format.js';

/** One layer in a topology: Keras' `{"class_name", "config"}`. */
export interface LayerSpec {
  /** Keras class name: `Conv2D`, `Dense`, ... (see `knownLayers` in `layers/registry.ts`). */
  class_name: string;
  /** Keras layer config, snake_case keys (`filters`, `kernel_size`, `activation`, ...). */
  config?: Record<string, unknown>;
}

/** Keras' Sequential topology. */
export interface ModelTopology {
  /** `Sequential` when written by this library (`Functional`/`Model` chains are read too). */
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

/** A TF.js Layers `model.json` (`format: "layers-model"`) as {@link saveTfjsModel} writes it. */
export interface TfjsModelJSON {
  /** Always `layers-model`. */
  format: 'layers-model';
  /** Who wrote it. */
  generatedBy: string;
  /** Null: not converted from another format. */
  convertedBy: null;
  /** Keras-style topology with the input as the first layer's `batch_input_shape`. */
  modelTopology: {
    /** Always `Sequential`. */
    class_name: 'Sequential';
    /** The model's name and layers (the first carries `batch_input_shape`). */
    config: {
      /** The model's name. */
      name: string;
      /** The layers, in order. */
      layers: LayerSpec[]
    };
    /** The tfjs-layers version whose reader this targets. */
    keras_version: string;
    /** `tensor_flow.js`, as tfjs-layers writes it. */
    backend: string
  };
  /** One group: the shard file and its tensors, `<layer>/<param>`. */
  weightsManifest: WeightsGroup[];
}

/** What {@link saveTfjsModel} returns: the two files' contents. */
export interface TfjsArtifacts {
  /** The `model.json` object. */
  modelJson: TfjsModelJSON;
  /** The shard's bytes, float32 little-endian. */
  weightData: ArrayBuffer;
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
/** Own property or undefined: `{"toString": 1}` has a key toString, `{}` has none. */
const own = (o: Record<string, unknown>, k: string): unknown => (Object.hasOwn(o, k) ? o[k] : undefined);

/** Top-level keys of a model file: this library's, TF.js', and the golden fixtures' (read by the commands). */
const FILE_KEYS = ['modelTopology', 'weights', 'weightsManifest', 'format', 'generatedBy', 'convertedBy', 'trainingConfig', 'userDefinedMetadata', 'signature', 'modelInitializer', 'initializerSignature'];
const FIXTURE_KEYS = ['name', 'generator', 'conventions', 'x', 'y', 'loss', 'stages', 'expected', 'training', 'forwardTraining'];
/** Keys of a Keras topology (`to_json()`), Keras 2, Keras 3 and tfjs-layers alike. */
const TOPOLOGY_KEYS = ['class_name', 'config', 'keras_version', 'backend', 'module', 'registered_name', 'build_config', 'compile_config'];
const MODEL_CONFIG_KEYS = ['name', 'layers', 'input_shape', 'build_input_shape', 'trainable', 'dtype', 'input_layers', 'output_layers'];
const LAYER_SPEC_KEYS = ['class_name', 'config', 'module', 'registered_name', 'build_config', 'name', 'inbound_nodes'];
const INPUT_LAYER_KEYS = ['name', 'batch_input_shape', 'batch_shape', 'input_shape', 'dtype', 'sparse', 'ragged', 'optional', 'trainable'];

function checkOwnKeys(o: Record<string, unknown>, known: readonly string[], where: string): void {
  for (const k of Object.keys(o)) {
    if (!known.includes(k)) throw new ConfigError(`${where}: unknown key ${JSON.stringify(k)}; expected only ${known.join(', ')}`);
  }
}

/** Keras' dtype (a name, or Keras 3's `DTypePolicy` object): float32 or float64, the dtypes computed here. */
function checkDtype(v: unknown, where: string): void {
  if (v === undefined || v === null) return;
  const name = isRecord(v) ? (isRecord(own(v, 'config')) ? own(own(v, 'config') as Record<string, unknown>, 'name') : undefined) : v;
  if (name !== 'float32' && name !== 'float64') {
    throw new ConfigError(`${where}: expected dtype "float32" or "float64" (or a DTypePolicy naming one), received ${fmtValue(v)}`);
  }
}

/** tfjs writes Glorot uniform as the variance scaling it is. */
function isGlorotVarianceScaling(v: unknown): boolean {
  if (!isRecord(v) || own(v, 'class_name') !== 'VarianceScaling') return false;
  const c = own(v, 'config');
  return isRecord(c) && own(c, 'scale') === 1 && own(c, 'mode') === 'fan_avg' && own(c, 'distribution') === 'uniform';
}

/**
 * A layer from its Keras spec, `{"class_name": "Conv2D", "config": {...}}`; `trainable` is read.
 * With `weightsFromFile`, initializer options are not acted on (the file's weights replace what
 * they would draw), so any value is accepted; otherwise the layer checks them.
 * @throws ConfigError naming the layer index, e.g. `layer 2: unknown layer class_name "Conv3D"; expected one of Conv2D, …`.
 * @example
 * const conv = layerFromConfig({ class_name: 'Conv2D', config: { filters: 6, kernel_size: 2, activation: 'relu' } });
 */
export function layerFromConfig(spec: LayerSpec, index = 0, weightsFromFile = false): Layer {
  const where = `layer ${index}`;
  if (!isRecord(spec) || typeof own(spec, 'class_name') !== 'string') {
    throw new ConfigError(`${where}: expected {"class_name": string, "config": {...}}, received ${fmtValue(spec)}`);
  }
  const className = own(spec, 'class_name') as string;
  const found = layerFactory(className);
  if (!found) throw new ConfigError(`${where}: unknown layer class_name ${JSON.stringify(className)}; expected one of ${knownLayers().join(', ')}`);
  const { className: cls, factory } = found;
  const raw = own(spec, 'config') ?? {};
  if (!isRecord(raw)) throw new ConfigError(`${where} (${cls}): expected config to be an object, received ${fmtValue(raw)}`);
  const config: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(raw)) {
    // Keys that name Object.prototype members would be looked up there by option tables.
    if (k in Object.prototype) throw new ConfigError(`${where} (${cls}): unknown option ${JSON.stringify(k)}`);
    config[k] = v;
  }
  const name = own(config, 'name');
  if (name !== undefined && typeof name !== 'string') throw new ConfigError(`${where} (${cls}): expected config.name to be a string, received ${fmtValue(name)}`);
  const trainable = own(config, 'trainable');
  if (trainable !== undefined && typeof trainable !== 'boolean') throw new ConfigError(`${where} (${cls}): expected config.trainable to be true or false, received ${fmtValue(trainable)}`);
  checkDtype(own(config, 'dtype'), `${where} (${cls})`);
  for (const k of ['kernel_initializer', 'bias_initializer']) {
    if (!Object.hasOwn(config, k)) continue;
    if (k === 'kernel_initializer' && isGlorotVarianceScaling(config[k])) config[k] = 'GlorotUniform';
    else if (weightsFromFile) delete config[k];
  }
  let layer: Layer;
  try {
    layer = factory(config, name as string | undefined);
  } catch (e) {
    throw prefixError(e, `${where} (${cls})`);
  }
  if (trainable === false) layer.trainable = false;
  return layer;
}

/** Options of {@link loadModel}. */
export interface LoadOptions {
  /** dtype of the loaded weights and of the model (default float64). */
  dtype?: DType;
  /** Per-sample input shape, when the topology does not give one. */
  inputShape?: number[];
  /**
   * `'file'` (default): the weights must come from the file; a file without any is an error.
   * `'initialize'`: fresh weights (Glorot-uniform kernels, zero biases, drawn from `rng`); the
   * file's weights, if any, are not read.
   */
  weights?: 'file' | 'initialize';
  /** Where fresh weights are drawn from with `weights: 'initialize'` (default `new Rng(0)`). */
  rng?: Rng;
  /** The bytes of the shards a TF.js `weightsManifest` names, by path (`loadModelFile` reads them from disk). */
  shards?: ShardSource;
}

/** What a topology says: the model's name, its layer specs in order (no InputLayer) and input shape. */
interface ParsedTopology {
  name: string;
  specs: Record<string, unknown>[];
  inputShape: number[] | undefined;
}

/**
 * A per-sample shape from a Keras key: `batch` keys (`batch_input_shape`, `batch_shape`) lead with
 * the batch axis (null or a number), which is dropped.
 */
function readShape(shape: unknown, key: string, where: string, batch: boolean): number[] {
  // tf.keras' metadata writes a shape as {"class_name": "TensorShape", "items": [...]}.
  const v = isRecord(shape) && own(shape, 'class_name') === 'TensorShape' ? own(shape, 'items') : shape;
  const ok = Array.isArray(v) && v.length >= (batch ? 2 : 1) && (!batch || v[0] === null || (Number.isInteger(v[0]) && v[0] > 0));
  const dims = ok ? (v as unknown[]).slice(batch ? 1 : 0) : [];
  if (!ok || dims.some((d) => !Number.isSafeInteger(d) || (d as number) <= 0)) {
    throw new ConfigError(`${where}: expected ${key} to be a list of positive integers${batch ? ' after a leading batch axis (null)' : ' (per sample, no batch axis)'}, received ${fmtValue(v)}`);
  }
  return dims as number[];
}

function parseTopology(topology: unknown): ParsedTopology {
  if (!isRecord(topology)) throw new ConfigError(`model file: expected "modelTopology" to be an object, received ${fmtValue(topology)}`);
  checkOwnKeys(topology, TOPOLOGY_KEYS, 'modelTopology');
  const cls = own(topology, 'class_name');
  if (cls !== 'Sequential' && cls !== 'Functional' && cls !== 'Model') {
    throw new ConfigError(`model file: expected modelTopology.class_name "Sequential" (or a single-chain "Functional"/"Model"), received ${fmtValue(cls)}`);
  }
  const config = own(topology, 'config');
  if (!isRecord(config)) throw new ConfigError(`model file: expected modelTopology.config to be an object, received ${fmtValue(config)}`);
  checkOwnKeys(config, MODEL_CONFIG_KEYS, 'modelTopology.config');
  const layers = own(config, 'layers');
  if (!Array.isArray(layers)) throw new ConfigError(`model file: expected modelTopology.config.layers to be an array, received ${fmtValue(layers)}`);
  const name = own(config, 'name') ?? 'sequential';
  if (typeof name !== 'string') throw new ConfigError(`model file: expected modelTopology.config.name to be a string, received ${fmtValue(name)}`);
  checkDtype(own(config, 'dtype'), 'modelTopology.config');
  layers.forEach((l, i) => {
    if (!isRecord(l)) throw new ConfigError(`layer ${i}: expected {"class_name": string, "config": {...}}, received ${fmtValue(l)}`);
    checkOwnKeys(l, LAYER_SPEC_KEYS, `layer ${i}`);
  });
  let specs = (cls === 'Sequential' ? layers : chainOrder(layers as Record<string, unknown>[], config)) as Record<string, unknown>[];

  let inputShape: number[] | undefined;
  const own_ = own(config, 'input_shape');
  if (own_ !== undefined) inputShape = readShape(own_, 'modelTopology.config.input_shape', 'model file', false);
  if (specs[0] && own(specs[0], 'class_name') === 'InputLayer') {
    const c = own(specs[0], 'config') ?? {};
    if (!isRecord(c)) throw new ConfigError(`layer 0 (InputLayer): expected config to be an object, received ${fmtValue(c)}`);
    checkOwnKeys(c, INPUT_LAYER_KEYS, 'layer 0 (InputLayer) config');
    // Keras 3.9+ writes `optional`: an input that may be None, which a chain cannot run without.
    for (const k of ['sparse', 'ragged', 'optional']) {
      const v = own(c, k);
      if (v !== undefined && v !== null && v !== false) throw new ConfigError(`layer 0 (InputLayer): option ${JSON.stringify(k)} must be false (dense, required inputs only), received ${fmtValue(v)}`);
    }
    checkDtype(own(c, 'dtype'), 'layer 0 (InputLayer)');
    const bs = own(c, 'batch_input_shape') ?? own(c, 'batch_shape');
    if (bs !== undefined) inputShape ??= readShape(bs, Object.hasOwn(c, 'batch_input_shape') ? 'batch_input_shape' : 'batch_shape', 'layer 0 (InputLayer)', true);
    else if (own(c, 'input_shape') !== undefined) inputShape ??= readShape(own(c, 'input_shape'), 'input_shape', 'layer 0 (InputLayer)', false);
    specs = specs.slice(1);
  }
  const first = specs[0] ? own(specs[0], 'config') : undefined;
  if (isRecord(first)) {
    if (own(first, 'batch_input_shape') !== undefined) inputShape ??= readShape(first.batch_input_shape, 'batch_input_shape', 'layer 0', true);
    if (own(first, 'input_shape') !== undefined) inputShape ??= readShape(first.input_shape, 'input_shape', 'layer 0', false);
  }
  const bis = own(config, 'build_input_shape');
  if (bis !== undefined && bis !== null) inputShape ??= readShape(bis, 'modelTopology.config.build_input_shape', 'model file', true);
  const bc = own(topology, 'build_config');
  if (isRecord(bc) && own(bc, 'input_shape') !== undefined && own(bc, 'input_shape') !== null) inputShape ??= readShape(own(bc, 'input_shape'), 'modelTopology.build_config.input_shape', 'model file', true);
  return { name, specs, inputShape };
}

/** `["dense", 0, 0]` or Keras 3's `{"config": {"keras_history": ["dense", 0, 0]}}`: the layer a tensor comes from. */
function historyLayer(t: unknown): string | undefined {
  if (Array.isArray(t) && typeof t[0] === 'string') return t[0];
  if (isRecord(t)) {
    const c = own(t, 'config');
    const h = isRecord(c) ? own(c, 'keras_history') : undefined;
    if (Array.isArray(h) && typeof h[0] === 'string') return h[0];
  }
  return undefined;
}

/** The input tensors of one call (node) of a layer, Keras 2 (`[[name, 0, 0, {}], …]`) or Keras 3 (`{args, kwargs}`). */
function nodeInputs(node: unknown, layer: string): unknown[] {
  // Some Keras 2 writers drop one level: the node is the one tensor `[name, 0, 0]` itself.
  if (Array.isArray(node)) return typeof node[0] === 'string' ? [node] : node;
  if (isRecord(node)) {
    const args = own(node, 'args');
    if (!Array.isArray(args)) throw new ConfigError(`layer "${layer}": expected inbound node {"args": [...], "kwargs": {...}}, received ${fmtValue(node)}`);
    const kwargs = own(node, 'kwargs');
    if (kwargs !== undefined && JSON.stringify(kwargs)?.includes('__keras_tensor__')) {
      throw new ConfigError(`layer "${layer}": a tensor passed by keyword (${fmtValue(kwargs)}) is a second input, so the graph branches here; only single-chain graphs load as a Sequential`);
    }
    // A list argument is several tensors (Add, Concatenate): flatten it so the count tells.
    return args.flatMap((a) => (Array.isArray(a) ? a : [a]));
  }
  throw new ConfigError(`layer "${layer}": expected an inbound node (a list, or {"args", "kwargs"}), received ${fmtValue(node)}`);
}

/** `[["input_1", 0, 0]]` or `["input_1", 0, 0]`: the layer names of `input_layers` / `output_layers`. */
function endpointNames(v: unknown, key: string): string[] {
  const list = Array.isArray(v) && typeof v[0] === 'string' ? [v] : v;
  if (!Array.isArray(list) || list.some((e) => historyLayer(e) === undefined)) {
    throw new ConfigError(`model file: expected modelTopology.config.${key} to be a list of [layer name, node, tensor], received ${fmtValue(v)}`);
  }
  return list.map((e) => historyLayer(e)!);
}

/**
 * The layers of a Functional graph in chain order (input first), or a ConfigError naming the first
 * layer where the graph is not a single chain.
 */
function chainOrder(layers: Record<string, unknown>[], config: Record<string, unknown>): Record<string, unknown>[] {
  const byName = new Map<string, Record<string, unknown>>();
  const inputOf = new Map<string, string | null>();
  layers.forEach((l, i) => {
    const c = own(l, 'config');
    const name = own(l, 'name') ?? (isRecord(c) ? own(c, 'name') : undefined);
    if (typeof name !== 'string') throw new ConfigError(`layer ${i}: expected a string "name" (a Functional model's layers are named), received ${fmtValue(name)}`);
    if (byName.has(name)) throw new ConfigError(`layer ${i}: the name ${JSON.stringify(name)} is used by two layers; expected unique layer names`);
    byName.set(name, l);
    const nodes = own(l, 'inbound_nodes') ?? [];
    if (!Array.isArray(nodes)) throw new ConfigError(`layer "${name}": expected inbound_nodes to be a list, received ${fmtValue(nodes)}`);
    if (nodes.length > 1) throw new ConfigError(`layer "${name}": called ${nodes.length} times (a shared layer); only single-chain graphs load as a Sequential`);
    if (nodes.length === 0) {
      inputOf.set(name, null);
      return;
    }
    const ins = nodeInputs(nodes[0], name);
    if (ins.length !== 1) throw new ConfigError(`layer "${name}" (${fmtValue(own(l, 'class_name'))}): takes ${ins.length} inputs, so the graph branches here; only single-chain graphs load as a Sequential`);
    const src = historyLayer(ins[0]);
    if (src === undefined) throw new ConfigError(`layer "${name}": expected an inbound tensor [layer name, node, tensor], received ${fmtValue(ins[0])}`);
    inputOf.set(name, src);
  });
  const inputs = endpointNames(own(config, 'input_layers'), 'input_layers');
  const outputs = endpointNames(own(config, 'output_layers'), 'output_layers');
  if (inputs.length !== 1) throw new ConfigError(`model file: expected one input (a single-chain graph), received input_layers ${fmtValue(inputs)}`);
  if (outputs.length !== 1) throw new ConfigError(`model file: expected one output (a single-chain graph), received output_layers ${fmtValue(outputs)}`);
  const consumers = new Map<string, string[]>();
  for (const [name, src] of inputOf) {
    if (src === null) continue;
    if (!byName.has(src)) throw new ConfigError(`layer "${name}": its input comes from ${JSON.stringify(src)}, which is not a layer of this model`);
    consumers.set(src, [...(consumers.get(src) ?? []), name]);
  }
  for (const [name, src] of inputOf) {
    if (src === null && name !== inputs[0]) throw new ConfigError(`layer "${name}": a second input of the graph (besides ${JSON.stringify(inputs[0])}); only single-chain graphs load as a Sequential`);
  }
  if (!byName.has(inputs[0])) throw new ConfigError(`model file: input_layers names ${JSON.stringify(inputs[0])}, which is not a layer of this model`);
  const order: Record<string, unknown>[] = [];
  let cur: string | undefined = inputs[0];
  while (cur !== undefined) {
    order.push(byName.get(cur)!);
    const next: string[] = consumers.get(cur) ?? [];
    if (next.length > 1) throw new ConfigError(`layer "${cur}": its output feeds ${next.length} layers (${next.join(', ')}), so the graph branches here; only single-chain graphs load as a Sequential`);
    if (next.length === 0 && cur !== outputs[0]) throw new ConfigError(`layer "${cur}": the chain ends here, but output_layers names ${JSON.stringify(outputs[0])}`);
    cur = next[0];
    if (order.length > layers.length) throw new ConfigError('model file: expected an acyclic chain of layers, received a graph with a cycle');
  }
  if (order[order.length - 1] !== byName.get(outputs[0])) throw new ConfigError(`model file: the chain ends at ${JSON.stringify(own(order[order.length - 1], 'name'))}, but output_layers names ${JSON.stringify(outputs[0])}`);
  if (order.length !== layers.length) {
    const left = [...byName.keys()].filter((n) => !order.includes(byName.get(n)!));
    throw new ConfigError(`model file: layers ${left.join(', ')} are not on the chain from ${JSON.stringify(inputs[0])} to ${JSON.stringify(outputs[0])}`);
  }
  return order;
}

/**
 * Loads a model from a model file's text or parsed object: this library's files and the golden
 * fixtures (`modelTopology` + `weights`), a TF.js Layers `model.json` (`modelTopology` +
 * `weightsManifest`, with the shards' bytes in `opts.shards`), or a bare Keras `to_json()`
 * topology (with `{ weights: 'initialize' }`, since it holds no weights).
 * @throws ConfigError / ShapeError naming the layer, key, tensor or file, what was expected and what was received.
 * @example
 * const model = loadModel(readFileSync('spec/fixtures/seed_reference.json', 'utf8'));
 * model.layers.map((l) => l.className); // ['Conv2D', 'Conv2D', 'Flatten', 'Dense', 'Activation']
 * const fresh = loadModel(keras.to_json_text, { weights: 'initialize', rng: new Rng(1) });
 */
export function loadModel(source: string | object, opts: LoadOptions = {}): Sequential {
  let obj: unknown = source;
  if (typeof source === 'string') {
    try {
      obj = JSON.parse(source);
    } catch (e) {
      throw new ConfigError(`model file: malformed JSON (${(e as Error).message}); expected a JSON object, received ${fmtValue(source.slice(0, 60))}`);
    }
  }
  if (!isRecord(obj)) throw new ConfigError(`model file: expected a JSON object with "modelTopology", received ${fmtValue(obj)}`);
  const file = obj;
  if (opts.weights !== undefined && opts.weights !== 'file' && opts.weights !== 'initialize') {
    throw new ConfigError(`loadModel: expected option weights "file" or "initialize", received ${fmtValue(opts.weights)}`);
  }
  // A bare Keras topology (model.to_json()) is accepted too.
  const bare = !Object.hasOwn(file, 'modelTopology') && Object.hasOwn(file, 'class_name');
  if (bare) checkOwnKeys(file, TOPOLOGY_KEYS, 'model file');
  else {
    if (!Object.hasOwn(file, 'modelTopology')) throw new ConfigError(`model file: expected a "modelTopology" object, received keys ${Object.keys(file).join(', ') || '(none)'}`);
    checkOwnKeys(file, [...FILE_KEYS, ...FIXTURE_KEYS], 'model file');
  }
  const format = own(file, 'format');
  if (format !== undefined && format !== 'layers-model') throw new ConfigError(`model file: expected format "layers-model" (TF.js Layers), received ${fmtValue(format)}`);
  const topo = parseTopology(bare ? file : own(file, 'modelTopology'));
  const hasJson = own(file, 'weights') !== undefined;
  const hasManifest = own(file, 'weightsManifest') !== undefined;
  if (hasJson && hasManifest) throw new ConfigError('model file: has both "weights" and "weightsManifest"; expected one source of weights');
  const initialize = opts.weights === 'initialize';
  if (!initialize && !hasJson && !hasManifest) {
    throw new ConfigError('model file: has a topology but no weights ("weights" or "weightsManifest"); to start from freshly initialized weights (each layer\'s initializers, by default Glorot-uniform kernels and zero biases, seeded), pass { weights: \'initialize\' } (on the command line: --init-weights)');
  }
  let inputShape = opts.inputShape;
  if (inputShape !== undefined) inputShape = readShape(inputShape, 'inputShape', 'loadModel options', false);
  inputShape ??= topo.inputShape;
  if (inputShape === undefined) {
    throw new ConfigError('model file: expected modelTopology.config.input_shape to be a list of positive integers (per sample, no batch axis), or an InputLayer / first-layer batch_input_shape, received undefined');
  }
  if (topo.specs.length === 0) throw new ConfigError('model file: expected at least one layer besides the InputLayer, received none');
  const fromFile = !initialize;
  const layers = topo.specs.map((spec, i) => layerFromConfig(spec as unknown as LayerSpec, i, fromFile));
  nameLayers(layers);
  preflight(layers, inputShape, initialize ? null : fileWeightCounts(file, layers), opts.dtype ?? 'float64');
  // Weights from the file: nothing is drawn, so an initializer the file names (Orthogonal, say) needs no implementation here.
  const model = new Sequential(layers, { inputShape, dtype: opts.dtype, rng: opts.rng, name: topo.name, initialize });
  if (initialize) return model;
  if (hasJson) setWeights(model, own(file, 'weights'), opts.dtype ?? 'float64');
  else setManifestWeights(model, own(file, 'weightsManifest'), opts.shards, opts.dtype ?? 'float64');
  return model;
}

/** How many weight values the file holds for each layer (from JSON data lengths or manifest shapes); NaN where it cannot tell. */
function fileWeightCounts(file: Record<string, unknown>, layers: readonly Layer[]): number[] {
  const counts = layers.map(() => NaN);
  const sizeOfShape = (shape: unknown): number => (Array.isArray(shape) && shape.every((d) => Number.isSafeInteger(d) && d >= 0) ? shape.reduce((n: number, d: number) => n * d, 1) : NaN);
  const weights = own(file, 'weights');
  if (Array.isArray(weights)) {
    weights.forEach((ws, i) => {
      if (i < counts.length && Array.isArray(ws)) counts[i] = ws.reduce((n: number, w) => n + (isRecord(w) && Array.isArray(own(w, 'data')) ? (own(w, 'data') as unknown[]).length : NaN), 0);
    });
    return counts;
  }
  const manifest = own(file, 'weightsManifest');
  if (!Array.isArray(manifest)) return counts;
  const index = new Map(layers.map((l, i) => [l.name, i]));
  for (const g of manifest) {
    const ws = isRecord(g) ? own(g, 'weights') : undefined;
    for (const w of Array.isArray(ws) ? ws : []) {
      const name = isRecord(w) ? own(w, 'name') : undefined;
      const i = typeof name === 'string' ? index.get(manifestTarget(name)?.layer ?? '') : undefined;
      if (i !== undefined) counts[i] = (Number.isNaN(counts[i]) ? 0 : counts[i]) + sizeOfShape(own(w as Record<string, unknown>, 'shape'));
    }
  }
  return counts;
}

/**
 * Walks the layers' output shapes and parameter shapes before anything is allocated: a layer
 * whose parameter tensor outnumbers the values its file holds for it (a `units: 1e9` typo) is
 * refused here when it is larger than 2^20 values, and weights that would not fit the memory budget are refused before Glorot
 * draws them. Smaller disagreements are left to the weight checks, whose messages are precise.
 */
/** Parameter tensors up to this many values are allocated without asking: a mismatch there costs at most 8 MiB. */
const PREFLIGHT_FREE = 2 ** 20;

function preflight(layers: readonly Layer[], inputShape: readonly number[], counts: number[] | null, dtype: DType): void {
  let shape: readonly number[] = inputShape;
  let total = 0;
  let largest = { elements: 0, where: '' };
  layers.forEach((layer, i) => {
    const where = `layer ${i} (${layer.describe()})`;
    let params: { name: string; shape: number[] }[];
    const input = shape;
    // One sample's activations must fit before a layer is asked about them (Conv2D's geometry allocates per row).
    const sampleBytes = input.reduce((n, d) => n * d, 1) * (dtype === 'float32' ? 4 : 8);
    if (sampleBytes > getMemoryBudget()) {
      throw new MemoryBudgetError(`${where}: one sample of its input ${fmtShape(input)} would take ${fmtBytes(sampleBytes)}, over the memory budget of ${fmtBytes(getMemoryBudget())}; expected an input shape that fits`, sampleBytes, getMemoryBudget());
    }
    try {
      // paramShapes is the layer's own contract (protected so that callers go through build); it allocates nothing.
      params = (layer as unknown as { paramShapes(s: readonly number[]): { name: string; shape: number[] }[] }).paramShapes(shape);
      shape = layer.computeOutputShape(shape);
    } catch (e) {
      throw prefixError(e, where);
    }
    const sizes = params.map((p) => p.shape.reduce((m, d) => m * d, 1));
    const elements = sizes.reduce((n, m) => n + m, 0);
    const held = counts ? counts[i] : NaN;
    const big = Math.max(0, ...sizes);
    // Small tensors are built and left to the weight checks, whose messages say more (which name, which shape).
    if (!Number.isNaN(held) && big > held && big > PREFLIGHT_FREE) {
      throw new ShapeError(`${where}: for input ${fmtShape(input)} the topology needs ${params.map((p) => `${p.name} ${fmtShape(p.shape)}`).join(', ')} (${elements} values), but the file holds ${held} values for this layer`);
    }
    total += elements;
    if (elements > largest.elements) largest = { elements, where: `${where}: ${params.map((p) => `${p.name} ${fmtShape(p.shape)}`).join(', ')}` };
  });
  const bytes = total * (dtype === 'float32' ? 4 : 8);
  if (bytes > getMemoryBudget()) {
    throw new MemoryBudgetError(`model file: the weights would take ${fmtBytes(bytes)} (${total} values; the largest, ${largest.where}), over the memory budget of ${fmtBytes(getMemoryBudget())}; expected a topology that fits (or raise the budget with setMemoryBudget)`, bytes, getMemoryBudget());
  }
}

/** `MaxPooling2D` → `max_pooling2d`, `conv2d_1` for the second: the names Sequential would give, given here so that errors and manifests can use them before it runs. */
function nameLayers(layers: readonly Layer[]): void {
  const taken = new Set(layers.filter((l) => l.name).map((l) => l.name));
  for (const l of layers) {
    if (l.name) continue;
    const base = l.className.replace(/([a-z])([A-Z])/g, '$1_$2').toLowerCase();
    let name = base;
    for (let k = 1; taken.has(name); k++) name = `${base}_${k}`;
    taken.add(name);
    l.name = name;
  }
}

/** Values of a JSON weight, every one a finite number (a null or a string is refused, not read as 0 or NaN). */
function readValues(data: unknown, shape: readonly number[], n: number, what: string): number[] {
  if (!Array.isArray(data)) throw new ShapeError(`${what}: expected "data" to be a list of numbers, received ${fmtValue(data)}`);
  if (data.length !== n) throw new ShapeError(`${what}: shape ${fmtShape(shape)} needs ${n} values, received ${data.length}`);
  for (let i = 0; i < n; i++) {
    const v = data[i];
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new ShapeError(`${what}: expected finite numbers, received ${fmtValue(v)} at flat index ${i}`);
  }
  return data as number[];
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
      const w = ws[k] as unknown;
      const what = `${where} weight ${k} "${p.name}"`;
      if (!isRecord(w)) throw new ShapeError(`${what}: expected {"name", "shape", "data"}, received ${fmtValue(w)}`);
      checkOwnKeys(w, ['name', 'shape', 'data'], what);
      const name = own(w, 'name');
      if (name !== undefined && name !== p.name) throw new ConfigError(`${what}: expected name "${p.name}", received ${fmtValue(name)}`);
      const shape = own(w, 'shape');
      if (!Array.isArray(shape) || shape.length !== p.value.shape.length || shape.some((d, a) => d !== p.value.shape[a])) {
        throw new ShapeError(`${what}: expected shape ${fmtShape(p.value.shape)}, received ${fmtValue(shape)}`);
      }
      return tensor(readValues(own(w, 'data'), p.value.shape, p.value.size, what), p.value.shape.slice(), dtype);
    });
  });
  model.layers.forEach((layer, i) => layer.params.forEach((p, k) => (p.value = values[i][k])));
}

/**
 * The `<layer>/<param>` a manifest name ends with: `conv2d_1/kernel`, `sequential/conv2d_1/kernel`
 * (a model scope in front), Keras 3's `…/kernel:0` suffix dropped.
 */
function manifestTarget(name: string): { layer: string; param: string } | null {
  const parts = name.replace(/:\d+$/, '').split('/');
  return parts.length >= 2 ? { layer: parts[parts.length - 2], param: parts[parts.length - 1] } : null;
}

/** Sets every parameter from a TF.js manifest and its shards; everything is checked before anything changes. */
function setManifestWeights(model: Sequential, manifest: unknown, shards: ShardSource | undefined, dtype: DType): void {
  const groups = parseWeightsManifest(manifest);
  if (!shards) {
    throw new ConfigError(`model file: its weightsManifest names ${groups.flatMap((g) => g.paths).map((p) => JSON.stringify(p)).join(', ')}; pass their bytes as { shards: { path: ArrayBuffer } }, or read the file with loadModelFile (from jacobian-chain/node), which reads them from its folder`);
  }
  const decoded = decodeWeights(groups, shards);
  const byLayer = new Map(model.layers.map((l, i) => [l.name, i]));
  const found = model.layers.map(() => new Map<string, (typeof decoded)[number]>());
  for (const d of decoded) {
    const t = manifestTarget(d.name);
    const i = t ? byLayer.get(t.layer) : undefined;
    const files = d.files.map((f) => JSON.stringify(f)).join(' + ');
    if (!t || i === undefined) throw new ConfigError(`weights file ${files}: tensor ${JSON.stringify(d.name)} matches no layer; expected <layer>/<param> with a layer among ${[...byLayer.keys()].join(', ')}`);
    const layer = model.layers[i];
    if (!layer.params.some((p) => p.name === t.param)) throw new ConfigError(`weights file ${files}: tensor ${JSON.stringify(d.name)} names parameter ${JSON.stringify(t.param)} of layer ${i} (${layer.describe()}), expected one of: ${layer.params.map((p) => p.name).join(', ') || '(none, it has no parameters)'}`);
    if (found[i].has(t.param)) throw new ConfigError(`weights file ${files}: tensor ${JSON.stringify(d.name)} is a second value for ${layer.name}/${t.param} (first: ${JSON.stringify(found[i].get(t.param)!.name)}); expected one tensor per parameter`);
    found[i].set(t.param, d);
  }
  const values = model.layers.map((layer, i) =>
    layer.params.map((p) => {
      const d = found[i].get(p.name);
      const what = `layer ${i} (${layer.describe()}) weight "${p.name}"`;
      if (!d) throw new ConfigError(`${what}: missing from the weightsManifest (expected a tensor "${layer.name}/${p.name}" of shape ${fmtShape(p.value.shape)}; it has ${decoded.map((x) => x.name).join(', ') || 'none'})`);
      const where = `${what} (tensor ${JSON.stringify(d.name)} in ${d.files.map((f) => JSON.stringify(f)).join(' + ')})`;
      if (d.shape.length !== p.value.shape.length || d.shape.some((n, a) => n !== p.value.shape[a])) {
        throw new ShapeError(`${where}: expected shape ${fmtShape(p.value.shape)}, received ${fmtShape(d.shape)}`);
      }
      const t = tensor(Array.from(d.values), p.value.shape.slice(), dtype);
      assertFinite(t, where);
      return t;
    }),
  );
  model.layers.forEach((layer, i) => layer.params.forEach((p, k) => (p.value = values[i][k])));
}

/** Every parameter finite, or a ShapeError naming the layer, the parameter and the index. */
function assertModelFinite(model: Sequential): void {
  model.layers.forEach((l, i) => l.params.forEach((p) => assertFinite(p.value, `saving layer ${i} (${l.describe()}) weight "${p.name}"`)));
}

function layerSpec(l: Layer): LayerSpec {
  return { class_name: l.className, config: { name: l.name, ...l.getConfig(), ...(l.trainable === false ? { trainable: false } : {}) } };
}

/**
 * The model as a model file: topology (Keras class names and snake_case configs) and weights.
 * `loadModel(saveModel(m))` rebuilds `m` with identical weights.
 * @throws ShapeError on a NaN or infinite weight, naming the layer, the parameter and the index.
 * @example
 * writeFileSync('model.json', JSON.stringify(saveModel(model)));
 */
export function saveModel(model: Sequential): ModelFile {
  assertModelFinite(model);
  return {
    modelTopology: {
      class_name: 'Sequential',
      config: { name: model.name, layers: model.layers.map(layerSpec), input_shape: model.inputShape.slice() },
    },
    weights: model.layers.map((l) => l.params.map((p) => ({ name: p.name, shape: p.value.shape.slice(), data: Array.from(contiguous(p.value).data.subarray(0, p.value.size)) }))),
  };
}

/**
 * The model in the TF.js Layers format: `model.json` (as an object) and the bytes of its one
 * shard, float32 little-endian (`tf.loadLayersModel` reads both). Weights are rounded to float32,
 * the format's float dtype.
 * @throws ShapeError on a NaN or infinite weight, naming the layer, the parameter and the index.
 * @example
 * const { modelJson, weightData } = saveTfjsModel(model); // write model.json and weights.bin side by side
 * const again = loadModel(modelJson, { shards: { 'weights.bin': weightData } });
 */
export function saveTfjsModel(model: Sequential, weightsPath = 'weights.bin'): TfjsArtifacts {
  assertModelFinite(model);
  const layers = model.layers.map(layerSpec);
  layers[0].config = { ...layers[0].config, batch_input_shape: [null, ...model.inputShape] };
  const { specs, data } = encodeWeights(model.layers.flatMap((l) => l.params.map((p) => ({ name: `${l.name}/${p.name}`, shape: p.value.shape, values: contiguous(p.value).data.subarray(0, p.value.size) }))));
  return {
    modelJson: {
      format: 'layers-model',
      generatedBy: 'jacobian-chain',
      convertedBy: null,
      modelTopology: { class_name: 'Sequential', config: { name: model.name, layers }, keras_version: 'tfjs-layers 4.22.0', backend: 'tensor_flow.js' },
      weightsManifest: [{ paths: [weightsPath], weights: specs }],
    },
    weightData: data,
  };
}

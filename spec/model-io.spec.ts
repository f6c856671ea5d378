import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, JacobianChainError, MemoryBudgetError, ShapeError } from '../lib/errors.js';
import { Dense } from '../lib/layers/dense.js';
import { knownLayers, registerLayer } from '../lib/layers/registry.js';
import { type ModelFile, layerFromConfig, loadModel, loadModelFile, saveModel, saveModelFile, saveTfjsModel } from '../lib/model-io.js';
import { catsVsDogsCnn, seedReferenceModel } from '../lib/models.js';
import { getMemoryBudget, setMemoryBudget } from '../lib/memory.js';
import { Rng } from '../lib/rng.js';
import { fromJSON, randomNormal } from '../lib/tensor.js';
import { expect } from './helpers/setup.js';

const fixtureText = (name: string) => readFileSync(new URL(`./fixtures/${name}`, import.meta.url), 'utf8');
const fixture = (name: string) => JSON.parse(fixtureText(name)) as ModelFile & { x: never; expected: { stageOutputs: never[] } };

/** A fresh copy of the seed fixture's topology and weights, to break on purpose. */
const seedFile = () => {
  const f = fixture('seed_reference.json');
  return { modelTopology: f.modelTopology, weights: f.weights };
};

describe('model files', () => {
  for (const name of ['seed_reference.json', 'dense_mlp.json']) {
    it(`loads ${name}: layers, shapes and weights as written, and its forward pass matches the fixture`, () => {
      const f = fixture(name);
      const model = loadModel(fixtureText(name));
      expect(model.layers.map((l) => l.className)).to.deep.equal(f.modelTopology.config.layers.map((l) => l.class_name));
      expect(model.inputShape).to.deep.equal(f.modelTopology.config.input_shape);
      model.layers.forEach((l, i) => l.params.forEach((p, k) => expect(p.value).to.be.allclose(f.weights[i][k], { rtol: 0, atol: 0 })));
      const { y } = model.forward(fromJSON(f.x));
      expect(y).to.be.allclose(f.expected.stageOutputs.at(-1), { rtol: 1e-12, atol: 1e-15 });
    });
  }

  it('save then load gives the same topology and bit-identical weights (and so the same outputs)', () => {
    const cnn = catsVsDogsCnn({ side: 22, channels: 2, seed: 3 });
    const saved = saveModel(cnn);
    const again = loadModel(JSON.stringify(saved));
    expect(saveModel(again)).to.deep.equal(saved);
    const x = randomNormal([1, 22, 22, 2], new Rng(1));
    expect(again.forward(x).y).to.be.allclose(cnn.forward(x).y, { rtol: 0, atol: 0 });
    expect(saved.modelTopology.config.layers[0]).to.deep.equal({
      class_name: 'Conv2D',
      config: { name: 'conv2d', filters: 32, kernel_size: [3, 3], strides: [1, 1], padding: 'valid', activation: 'linear', use_bias: true },
    });
  });

  it('saveModelFile / loadModelFile on disk, and float32 on request', () => {
    const dir = mkdtempSync(join(tmpdir(), 'jc-model-io-'));
    try {
      const path = join(dir, 'seed.json');
      saveModelFile(loadModel(seedFile()), path);
      const m32 = loadModelFile(path, { dtype: 'float32' });
      expect(m32.dtype).to.equal('float32');
      expect(m32.params[0].value.data).to.be.instanceOf(Float32Array);
      expect(() => loadModelFile(join(dir, 'missing.json'))).to.throw(ConfigError, /missing.json": cannot read it/);
      writeFileSync(join(dir, 'bad.json'), '{"modelTopology": ');
      expect(() => loadModelFile(join(dir, 'bad.json'))).to.throw(ConfigError, /bad.json": model file: malformed JSON/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('accepts a bare Keras topology with an InputLayer, and seeds the weights only when asked to', () => {
    const bare = {
      class_name: 'Sequential',
      config: {
        layers: [
          { class_name: 'InputLayer', config: { batch_input_shape: [null, 4] } },
          { class_name: 'Dense', config: { units: 2, activation: 'relu', name: 'hidden' } },
        ],
      },
    };
    expect(() => loadModel(bare)).to.throw(ConfigError, /has a topology but no weights .*pass \{ weights: 'initialize' \} \(on the command line: --init-weights\)/);
    const m = loadModel(bare, { weights: 'initialize' });
    expect(m.inputShape).to.deep.equal([4]);
    expect(m.layers[0].name).to.equal('hidden');
    expect(m.params[0].value.shape).to.deep.equal([4, 2]);
  });

  it('the old no-weights path is gone: a fixture topology alone is refused, not filled with random weights', () => {
    expect(() => loadModel({ modelTopology: seedFile().modelTopology })).to.throw(ConfigError, /no weights/);
    const m0 = loadModel({ modelTopology: seedFile().modelTopology }, { weights: 'initialize', rng: new Rng(5) });
    const m1 = loadModel({ modelTopology: seedFile().modelTopology }, { weights: 'initialize', rng: new Rng(5) });
    expect(m0.params[0].value).to.be.allclose(m1.params[0].value, { rtol: 0, atol: 0 });
  });

  it('a registered layer class can be named by model files', () => {
    registerLayer('Linear', (c, n) => new Dense({ units: c.out_features as number }, n));
    expect(knownLayers()).to.include('Linear');
    expect(layerFromConfig({ class_name: 'Linear', config: { out_features: 3 } })).to.be.instanceOf(Dense);
  });

  describe('bad files are clear errors naming the layer index, expected and received', () => {
    it('malformed JSON', () => {
      expect(() => loadModel('{"modelTopology": {"class_name": "Sequential",')).to.throw(ConfigError, /model file: malformed JSON \(.*\); expected a JSON object, received "\{\\"modelTopology/);
      expect(() => loadModel('[1, 2]')).to.throw(ConfigError, /expected a JSON object with "modelTopology", received \[1, 2\]/);
      expect(() => loadModel({ weights: [] })).to.throw(ConfigError, /expected a "modelTopology" object, received keys weights/);
      expect(() => loadModel({ modelTopology: { class_name: 'Subclassed', config: { layers: [] } } })).to.throw(ConfigError, /expected modelTopology.class_name "Sequential" \(or a single-chain "Functional"\/"Model"\), received "Subclassed"/);
    });

    it('an unknown layer class', () => {
      const f = seedFile();
      f.modelTopology.config.layers[2].class_name = 'Conv3D';
      expect(() => loadModel(f)).to.throw(ConfigError, /layer 2: unknown layer class_name "Conv3D"; expected one of Conv2D, MaxPooling2D, Flatten, Dense, Dropout, Activation/);
    });

    it('an unknown activation', () => {
      const f = seedFile();
      f.modelTopology.config.layers[4].config = { activation: 'mish' };
      expect(() => loadModel(f)).to.throw(ConfigError, /layer 4 \(Activation\): Activation: unknown activation "mish"; expected one of linear, relu, sigmoid, tanh, softmax/);
    });

    it('an unknown option, and a bad option value', () => {
      const f = seedFile();
      f.modelTopology.config.layers[1].config = { ...f.modelTopology.config.layers[1].config, kernel_sizes: 2 };
      expect(() => loadModel(f)).to.throw(ConfigError, /layer 1 \(Conv2D\): Conv2D: unknown option "kernel_sizes"/);
      const d = seedFile();
      d.modelTopology.config.layers[1].config = { ...d.modelTopology.config.layers[1].config, groups: 2 };
      expect(() => loadModel(d)).to.throw(ConfigError, /layer 1 \(Conv2D\): Conv2D: option "groups" must be 1.*received 2/);
      const g = seedFile();
      g.modelTopology.config.layers[3].config = { units: -1 };
      expect(() => loadModel(g)).to.throw(ConfigError, /layer 3 \(Dense\): Dense: expected units to be a positive integer, received -1/);
    });

    it('a weight of the wrong shape, count or name', () => {
      const f = seedFile();
      f.weights[3][0] = { name: 'kernel', shape: [384, 2], data: new Array(768).fill(0) };
      expect(() => loadModel(f)).to.throw(ShapeError, /layer 3 \(Dense "dense"\) weight 0 "kernel": expected shape \[384, 1\], received \[384, 2\]/);
      const g = seedFile();
      g.weights[0] = g.weights[0].slice(0, 1);
      expect(() => loadModel(g)).to.throw(ShapeError, /layer 0 \(Conv2D "conv2d"\): expected 2 weights \[kernel, bias\], received 1/);
      const h = seedFile();
      h.weights[1].reverse();
      expect(() => loadModel(h)).to.throw(ConfigError, /layer 1 \(Conv2D "conv2d_1"\) weight 0 "kernel": expected name "kernel", received "bias"/);
      const k = seedFile();
      k.weights[0][1] = { name: 'bias', shape: [6], data: [1, 2, 3] };
      expect(() => loadModel(k)).to.throw(ShapeError, /layer 0 .*weight 1 "bias": shape \[6\] needs 6 values, received 3/);
      const n = seedFile();
      n.weights.pop();
      expect(() => loadModel(n)).to.throw(ShapeError, /expected "weights" to hold one list per layer \(5\), received 4 lists/);
    });

    it('a missing input shape, and layers that cannot take it', () => {
      const f = seedFile();
      delete (f.modelTopology.config as { input_shape?: number[] }).input_shape;
      expect(() => loadModel(f)).to.throw(ConfigError, /expected modelTopology.config.input_shape to be a list of positive integers .*received undefined/);
      const g = seedFile();
      g.modelTopology.config.input_shape = [1, 1, 1];
      expect(() => loadModel(g)).to.throw(ShapeError, /layer 0 \(Conv2D "conv2d"\): .*kernel_size \[2, 2\].*\[1, 1\]/);
    });
  });
});

/** Keras 2 (tf.keras) `model.to_json()` of Dense(3, relu, input 4) · Dense(2): initializers, dtype and batch_input_shape as tf.keras writes them. */
const keras2Sequential = () => ({
  class_name: 'Sequential',
  config: {
    name: 'sequential',
    layers: [
      { class_name: 'InputLayer', config: { batch_input_shape: [null, 4], dtype: 'float32', sparse: false, ragged: false, name: 'dense_input' } },
      { class_name: 'Dense', config: { name: 'dense', trainable: true, dtype: 'float32', units: 3, activation: 'relu', use_bias: true, kernel_initializer: { class_name: 'GlorotUniform', config: { seed: null } }, bias_initializer: { class_name: 'Zeros', config: {} }, kernel_regularizer: null, bias_regularizer: null, activity_regularizer: null, kernel_constraint: null, bias_constraint: null } },
      { class_name: 'Dense', config: { name: 'dense_1', trainable: false, dtype: 'float32', units: 2, activation: 'linear', use_bias: true } },
    ],
  },
  keras_version: '2.15.0',
  backend: 'tensorflow',
});

const policy = { module: 'keras', class_name: 'DTypePolicy', config: { name: 'float32' }, registered_name: null };
const k3tensor = (layer: string) => ({ class_name: '__keras_tensor__', config: { shape: [null, 4], dtype: 'float32', keras_history: [layer, 0, 0] } });
const k3layer = (class_name: string, name: string, config: Record<string, unknown>, inbound: string[] | null) => ({
  module: 'keras.layers', class_name, config: { name, trainable: true, dtype: policy, ...config }, registered_name: null,
  build_config: { input_shape: [null, 4] }, name, inbound_nodes: inbound === null ? [] : [{ args: inbound.map(k3tensor), kwargs: {} }],
});

/** Keras 3 Functional `to_json()` of the same chain, `{args, kwargs}` nodes. */
const keras3Functional = () => ({
  module: 'keras.src.models.functional', class_name: 'Functional', registered_name: 'Functional',
  config: {
    name: 'functional', trainable: true,
    layers: [
      { module: 'keras.layers', class_name: 'InputLayer', config: { batch_shape: [null, 4], dtype: 'float32', sparse: false, name: 'input_layer' }, registered_name: null, name: 'input_layer', inbound_nodes: [] },
      k3layer('Dense', 'dense', { units: 3, activation: 'relu', use_bias: true, kernel_initializer: { module: 'keras.initializers', class_name: 'GlorotUniform', config: { seed: null }, registered_name: null }, bias_initializer: { module: 'keras.initializers', class_name: 'Zeros', config: {}, registered_name: null }, kernel_regularizer: null, bias_regularizer: null, kernel_constraint: null, bias_constraint: null, lora_rank: null }, ['input_layer']),
      k3layer('Dense', 'dense_1', { units: 2, activation: 'linear', use_bias: true }, ['dense']),
    ],
    input_layers: [['input_layer', 0, 0]],
    output_layers: [['dense_1', 0, 0]],
  },
  build_config: { input_shape: null },
});

describe('Keras and TF.js model files', () => {
  it('tf.keras 2 Sequential to_json(): loads with fresh weights on request, trainable: false honoured and saved back', () => {
    expect(() => loadModel(keras2Sequential())).to.throw(ConfigError, /no weights.*--init-weights/);
    const m = loadModel(keras2Sequential(), { weights: 'initialize' });
    expect(m.inputShape).to.deep.equal([4]);
    expect(m.layers.map((l) => [l.name, l.trainable])).to.deep.equal([['dense', true], ['dense_1', false]]);
    const saved = saveModel(m);
    expect(saved.modelTopology.config.layers[1].config).to.have.property('trainable', false);
    expect(saved.modelTopology.config.layers[0].config).to.not.have.property('trainable');
    expect(loadModel(saved).layers[1].trainable).to.equal(false);
  });

  it('Keras 3 Sequential (InputLayer batch_shape, module/registered_name, DTypePolicy) and Keras 3 / Keras 2 Functional chains load alike', () => {
    const k3 = keras3Functional();
    const seq = { module: 'keras', class_name: 'Sequential', registered_name: null, config: { name: 'sequential', trainable: true, dtype: policy, layers: k3.config.layers.map(({ name: _n, inbound_nodes: _i, ...l }) => l) }, build_config: { input_shape: [null, 4] } };
    const k2 = { class_name: 'Model', config: { name: 'model', layers: [
      { class_name: 'InputLayer', name: 'input_1', config: { batch_input_shape: [null, 4], name: 'input_1' }, inbound_nodes: [] },
      { class_name: 'Dense', name: 'dense', config: { name: 'dense', units: 3, activation: 'relu' }, inbound_nodes: [[['input_1', 0, 0, {}]]] },
      { class_name: 'Dense', name: 'dense_1', config: { name: 'dense_1', units: 2 }, inbound_nodes: [[['dense', 0, 0, {}]]] },
    ], input_layers: [['input_1', 0, 0]], output_layers: [['dense_1', 0, 0]] } };
    // The layers listed out of order: the chain comes from inbound_nodes, not from the list.
    const shuffled = keras3Functional();
    shuffled.config.layers.reverse();
    for (const topo of [seq, k3, k2, shuffled]) {
      const m = loadModel(topo, { weights: 'initialize', rng: new Rng(2) });
      expect(m.layers.map((l) => `${l.className}:${l.name}`)).to.deep.equal(['Dense:dense', 'Dense:dense_1']);
      expect(m.inputShape).to.deep.equal([4]);
      expect(m.outputShape).to.deep.equal([2]);
    }
    const optional = keras3Functional();
    (optional.config.layers[0].config as Record<string, unknown>).optional = true;
    expect(() => loadModel(optional, { weights: 'initialize' })).to.throw(ConfigError, /layer 0 \(InputLayer\): option "optional" must be false \(dense, required inputs only\), received true/);
    (optional.config.layers[0].config as Record<string, unknown>).optional = false;
    expect(loadModel(optional, { weights: 'initialize' }).layers).to.have.length(2);
    const mixed = keras3Functional();
    (mixed.config.layers[1].config as Record<string, unknown>).dtype = { ...policy, config: { name: 'mixed_float16' } };
    expect(() => loadModel(mixed, { weights: 'initialize' })).to.throw(ConfigError, /layer 0 \(Dense\): expected dtype "float32" or "float64".*mixed_float16/);
  });

  it('a graph that branches is refused, naming the first branching layer', () => {
    const add = keras3Functional();
    add.config.layers.push(k3layer('Add', 'add', {}, []));
    (add.config.layers[3] as { inbound_nodes: unknown[] }).inbound_nodes = [{ args: [[k3tensor('dense'), k3tensor('dense_1')]], kwargs: {} }];
    add.config.output_layers = [['add', 0, 0]];
    expect(() => loadModel(add, { weights: 'initialize' })).to.throw(ConfigError, /layer "add" \("Add"\): takes 2 inputs, so the graph branches here/);
    const fork = keras3Functional();
    fork.config.layers.push(k3layer('Dense', 'dense_2', { units: 1 }, ['dense']));
    expect(() => loadModel(fork, { weights: 'initialize' })).to.throw(ConfigError, /layer "dense": its output feeds 2 layers \(dense_1, dense_2\), so the graph branches here/);
    const shared = keras3Functional();
    const nodes = (shared.config.layers[2] as { inbound_nodes: unknown[] }).inbound_nodes;
    nodes.push(nodes[0]);
    expect(() => loadModel(shared, { weights: 'initialize' })).to.throw(ConfigError, /layer "dense_1": called 2 times \(a shared layer\)/);
    const twoInputs = keras3Functional();
    twoInputs.config.input_layers.push(['input_2', 0, 0]);
    expect(() => loadModel(twoInputs, { weights: 'initialize' })).to.throw(ConfigError, /expected one input \(a single-chain graph\), received input_layers \["input_layer", "input_2"\]/);
  });

  describe('TF.js weights: every way a shard can disagree with its manifest is an error naming the file, the tensor and the bytes', () => {
    const tfjs = () => {
      const model = seedReferenceModel({ seed: 3 });
      const { modelJson, weightData } = saveTfjsModel(model);
      return { model, json: JSON.parse(JSON.stringify(modelJson)), bin: new Uint8Array(weightData) };
    };

    it('round trip: the same layers, weights rounded to float32, a model scope in the names accepted', () => {
      const { model, json, bin } = tfjs();
      const again = loadModel(json, { shards: { 'weights.bin': bin } });
      again.params.forEach((p, k) => expect(p.value).to.be.allclose({ shape: p.value.shape, data: Array.from(Float32Array.from(model.params[k].value.data)) }, { rtol: 0, atol: 0 }));
      for (const w of json.weightsManifest[0].weights) w.name = `sequential/${w.name}`;
      expect(loadModel(json, { shards: { 'weights.bin': bin } }).params[0].value).to.be.allclose(again.params[0].value, { rtol: 0, atol: 0 });
    });

    it('missing shard, bytes short or left over, unknown dtype, names matching no layer, missing weights', () => {
      const { json, bin } = tfjs();
      const total = bin.byteLength;
      expect(() => loadModel(json)).to.throw(ConfigError, /weightsManifest names "weights.bin"; pass their bytes as \{ shards/);
      expect(() => loadModel(json, { shards: {} })).to.throw(ConfigError, /weights file "weights.bin" \(weightsManifest\[0\]\): missing; it holds conv2d\/kernel/);
      expect(() => loadModel(json, { shards: { 'weights.bin': bin.subarray(0, total - 4) } })).to.throw(ShapeError, new RegExp(`weights file "weights.bin": tensor "dense/bias" \\[1\\] needs bytes ${total - 4}..${total} \\(4 bytes\\), but the file holds ${total - 4} bytes; the manifest describes ${total}`));
      expect(() => loadModel(json, { shards: { 'weights.bin': new Uint8Array(total + 8) } })).to.throw(ShapeError, new RegExp(`hold ${total + 8} bytes, but the manifest's tensors .* take ${total}`));
      const f16 = tfjs();
      f16.json.weightsManifest[0].weights[1].dtype = 'float16';
      expect(() => loadModel(f16.json, { shards: { 'weights.bin': f16.bin } })).to.throw(ConfigError, /weightsManifest\[0\].weights\[1\] "conv2d\/bias": expected "dtype" float32 or int32.*received "float16"/);
      const stray = tfjs();
      stray.json.weightsManifest[0].weights[0].name = 'conv2d_9/kernel';
      expect(() => loadModel(stray.json, { shards: { 'weights.bin': stray.bin } })).to.throw(ConfigError, /tensor "conv2d_9\/kernel" matches no layer; expected <layer>\/<param> with a layer among conv2d, conv2d_1/);
      const gone = tfjs();
      const last = gone.json.weightsManifest[0].weights.pop();
      expect(last.name).to.equal('dense/bias');
      expect(() => loadModel(gone.json, { shards: { 'weights.bin': gone.bin.subarray(0, total - 4) } })).to.throw(ConfigError, /layer 3 \(Dense "dense"\) weight "bias": missing from the weightsManifest \(expected a tensor "dense\/bias" of shape \[1\]/);
    });

    it('NaN or infinity in a shard, and on save, names the layer, the parameter and the index', () => {
      const { json, bin } = tfjs();
      const view = new DataView(bin.buffer, bin.byteOffset, bin.byteLength);
      view.setFloat32(4 * 5, NaN, true); // conv2d/kernel [2, 2, 1, 6], flat index 5
      expect(() => loadModel(json, { shards: { 'weights.bin': bin } })).to.throw(ShapeError, /layer 0 \(Conv2D "conv2d"\) weight "kernel" \(tensor "conv2d\/kernel" in "weights.bin"\): expected finite values, received NaN at index \[0, 0, 0, 5\]/);
      const model = seedReferenceModel({ seed: 1 });
      model.layers[3].params[0].value.data[7] = Infinity;
      expect(() => saveModel(model)).to.throw(ShapeError, /saving layer 3 \(Dense "dense"\) weight "kernel": expected finite values, received Infinity at index \[7, 0\]/);
      expect(() => saveTfjsModel(model)).to.throw(ShapeError, /saving layer 3 .*Infinity at index \[7, 0\]/);
    });

    it('on disk: shards beside model.json, several per group, a missing one named with its path', () => {
      const dir = mkdtempSync(join(tmpdir(), 'jc-tfjs-'));
      try {
        const model = seedReferenceModel({ seed: 2 });
        saveModelFile(model, join(dir, 'model.json'), { format: 'tfjs' });
        const bin = readFileSync(join(dir, 'weights.bin'));
        const json = JSON.parse(readFileSync(join(dir, 'model.json'), 'utf8'));
        // Two shards cut mid-tensor: the group is their concatenation.
        writeFileSync(join(dir, 'a.bin'), bin.subarray(0, 37));
        writeFileSync(join(dir, 'b.bin'), bin.subarray(37));
        json.weightsManifest[0].paths = ['a.bin', 'b.bin'];
        writeFileSync(join(dir, 'split.json'), JSON.stringify(json));
        const a = loadModelFile(join(dir, 'model.json'));
        const b = loadModelFile(join(dir, 'split.json'));
        b.params.forEach((p, k) => expect(p.value).to.be.allclose(a.params[k].value, { rtol: 0, atol: 0 }));
        rmSync(join(dir, 'b.bin'));
        expect(() => loadModelFile(join(dir, 'split.json'))).to.throw(ConfigError, /split.json": weights file ".*b.bin": cannot read it \(ENOENT/);
        json.weightsManifest[0].paths = ['../a.bin'];
        writeFileSync(join(dir, 'escape.json'), JSON.stringify(json));
        expect(() => loadModelFile(join(dir, 'escape.json'))).to.throw(ConfigError, /weights file "..\/a.bin": expected a path relative to the model file's folder, inside it/);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  });

  describe('hardening (issue #12): wrong keys and JSON types are clear errors, never a TypeError', () => {
    const cases: [string, (f: Record<string, any>) => void, RegExp][] = [
      ['a layer config key "__proto__"', (f) => { f.modelTopology.config.layers[3].config = JSON.parse('{"units": 1, "__proto__": {"x": 1}}'); }, /layer 3 \(Dense\): unknown option "__proto__"/],
      ['a layer config key "constructor"', (f) => { f.modelTopology.config.layers[3].config.constructor = 1; }, /layer 3 \(Dense\): unknown option "constructor"/],
      ['a layer config key "toString"', (f) => { f.modelTopology.config.layers[0].config.toString = 'x'; }, /layer 0 \(Conv2D\): unknown option "toString"/],
      ['a layer config key "hasOwnProperty"', (f) => { f.modelTopology.config.layers[2].config = { hasOwnProperty: 1 }; }, /layer 2 \(Flatten\): unknown option "hasOwnProperty"/],
      ['a class_name "constructor"', (f) => { f.modelTopology.config.layers[2].class_name = 'constructor'; }, /layer 2: unknown layer class_name "constructor"/],
      ['a top-level key "__proto__"', (f) => { Object.defineProperty(f, '__proto__', { value: {}, enumerable: true }); }, /model file: unknown key "__proto__"/],
      ['a top-level typo', (f) => { f.weigths = f.weights; }, /model file: unknown key "weigths"; expected only modelTopology, weights/],
      ['layers: {}', (f) => { f.modelTopology.config.layers = {}; }, /expected modelTopology.config.layers to be an array, received \{\}/],
      ['input_shape: 5', (f) => { f.modelTopology.config.input_shape = 5; }, /expected modelTopology.config.input_shape to be a list of positive integers .*received 5/],
      ['batch_input_shape: 5', (f) => { delete f.modelTopology.config.input_shape; f.modelTopology.config.layers[0].config.batch_input_shape = 5; }, /layer 0: expected batch_input_shape to be a list of positive integers after a leading batch axis \(null\), received 5/],
      ['weights: null', (f) => { f.weights = null; }, /expected "weights" to hold one list per layer \(5\), received null/],
      ['a weight "data": null', (f) => { f.weights[3][1].data = null; }, /layer 3 \(Dense "dense"\) weight 1 "bias": expected "data" to be a list of numbers, received null/],
      ['a null in a weight', (f) => { f.weights[3][1].data = [null]; }, /weight 1 "bias": expected finite numbers, received null at flat index 0/],
      ['a number as a string in a weight', (f) => { f.weights[0][0].data[2] = '0.5'; }, /weight 0 "kernel": expected finite numbers, received "0.5" at flat index 2/],
      ['a weight entry that is a number', (f) => { f.weights[0][0] = 5; }, /weight 0 "kernel": expected \{"name", "shape", "data"\}, received 5/],
      ['units as a string', (f) => { f.modelTopology.config.layers[3].config.units = '1'; }, /layer 3 \(Dense\): Dense: expected units to be a positive integer, received "1"/],
      ['trainable as a string', (f) => { f.modelTopology.config.layers[3].config.trainable = 'no'; }, /layer 3 \(Dense\): expected config.trainable to be true or false, received "no"/],
      ['modelTopology: 5', (f) => { f.modelTopology = 5; }, /expected "modelTopology" to be an object, received 5/],
    ];
    for (const [label, mutate, message] of cases) {
      it(label, () => {
        const f = JSON.parse(JSON.stringify(seedFile()));
        mutate(f);
        const load = () => loadModel(f);
        expect(load).to.throw(JacobianChainError, message);
        expect(() => loadModel(JSON.stringify(f))).to.throw(JacobianChainError, message);
      });
    }
  });

  it('a failed save (the file-size limit hit mid-write) leaves the previous file intact and no temporary file behind', function () {
    const dir = mkdtempSync(join(tmpdir(), 'jc-atomic-'));
    try {
      const path = join(dir, 'model.json');
      saveModelFile(seedReferenceModel({ seed: 0 }), path);
      const before = readFileSync(path, 'utf8');
      const script = `import { saveModelFile } from ${JSON.stringify(new URL('../lib/model-io.ts', import.meta.url).href)};
import { catsVsDogsCnn } from ${JSON.stringify(new URL('../lib/models.ts', import.meta.url).href)};
try { saveModelFile(catsVsDogsCnn({ side: 22, channels: 2, seed: 1 }), ${JSON.stringify(path)}); console.log('saved'); } catch (e) { console.log('refused', e.code); process.exit(3); }`;
      writeFileSync(join(dir, 'save.mts'), script);
      // SIGXFSZ ignored, so the oversized write fails with EFBIG instead of killing the process.
      const r = spawnSync('bash', ['-c', `trap '' XFSZ; ulimit -f 64; exec node --import tsx ${JSON.stringify(join(dir, 'save.mts'))}`], { encoding: 'utf8', cwd: new URL('..', import.meta.url).pathname });
      expect(r.stdout.trim(), r.stderr).to.equal('refused EFBIG');
      expect(r.status).to.equal(3);
      expect(readFileSync(path, 'utf8')).to.equal(before);
      expect(readdirSync(dir).sort()).to.deep.equal(['model.json', 'save.mts']);
      // Without the limit the same save goes through, so the limit was what refused it.
      const ok = spawnSync('node', ['--import', 'tsx', join(dir, 'save.mts')], { encoding: 'utf8', cwd: new URL('..', import.meta.url).pathname });
      expect(ok.stdout.trim(), ok.stderr).to.equal('saved');
      expect(loadModelFile(path).layers).to.have.length(catsVsDogsCnn({ side: 22, channels: 2 }).layers.length);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('sizes are checked before anything is allocated', () => {
  it('units: 1e9 in a file with weights is refused from the shapes, naming the layer and both counts', () => {
    const f = JSON.parse(fixtureText('seed_reference.json'));
    f.modelTopology.config.layers[3].config.units = 1e9;
    const t0 = Date.now();
    expect(() => loadModel(f)).to.throw(ShapeError, /layer 3 \(Dense "dense"\): for input \[384\] the topology needs kernel \[384, 1000000000\], bias \[1000000000\] \(385000000000 values\), but the file holds 385 values for this layer/);
    expect(Date.now() - t0).to.be.below(2000);
  });

  it('fresh weights over the memory budget are a MemoryBudgetError before Glorot draws them', () => {
    const f = JSON.parse(fixtureText('seed_reference.json'));
    f.modelTopology.config.layers[3].config.units = 1e6;
    const budget = getMemoryBudget();
    setMemoryBudget(256 * 1024 ** 2);
    try {
      // 384·1e6 + 1e6 (Dense) + 30 + 150 (the two Conv2D layers) values.
      expect(() => loadModel({ modelTopology: f.modelTopology }, { weights: 'initialize' })).to.throw(MemoryBudgetError, /the weights would take 2.87 GiB \(385000180 values; the largest, layer 3 \(Dense "dense"\): kernel \[384, 1000000\], bias \[1000000\]\), over the memory budget of 256.00 MiB/);
    } finally {
      setMemoryBudget(budget);
    }
  });
});

describe('input sizes are checked before a layer is asked about them', () => {
  it('an input of 1e9 × 6 × 2 per sample is a MemoryBudgetError naming the layer, not a 12 GB window table', () => {
    const f = JSON.parse(fixtureText('seed_reference.json'));
    f.modelTopology.config.input_shape = [1e9, 6, 2];
    const t0 = Date.now();
    expect(() => loadModel(f)).to.throw(MemoryBudgetError, /layer 0 \(Conv2D "conv2d"\): one sample of its input \[1000000000, 6, 2\] would take 89.41 GiB, over the memory budget/);
    expect(Date.now() - t0).to.be.below(2000);
  });
});

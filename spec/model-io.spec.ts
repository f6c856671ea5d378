import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, ShapeError } from '../lib/errors.js';
import { Dense } from '../lib/layers/dense.js';
import { knownLayers, registerLayer } from '../lib/layers/registry.js';
import { type ModelFile, layerFromConfig, loadModel, loadModelFile, saveModel, saveModelFile } from '../lib/model-io.js';
import { catsVsDogsCnn } from '../lib/models.js';
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
      expect(() => loadModel('{"modelTopology": {"class_name": "Sequential",')).to.throw(ConfigError, /model file: malformed JSON \(.*\); received "\{\\"modelTopology/);
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
      f.modelTopology.config.layers[4].config = { activation: 'gelu' };
      expect(() => loadModel(f)).to.throw(ConfigError, /layer 4 \(Activation\): Activation: unknown activation "gelu"; expected one of linear, relu, sigmoid, tanh, softmax/);
    });

    it('an unknown option, and a bad option value', () => {
      const f = seedFile();
      f.modelTopology.config.layers[1].config = { ...f.modelTopology.config.layers[1].config, kernel_sizes: 2 };
      expect(() => loadModel(f)).to.throw(ConfigError, /layer 1 \(Conv2D\): Conv2D: unknown option "kernel_sizes"/);
      const d = seedFile();
      d.modelTopology.config.layers[1].config = { ...d.modelTopology.config.layers[1].config, dilation_rate: 2 };
      expect(() => loadModel(d)).to.throw(ConfigError, /layer 1 \(Conv2D\): Conv2D: option "dilation_rate" must be 1 or \[1, 1\].*received 2/);
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

/**
 * A live peer for the model files: tfjs-layers 4.22 builds models, saves them through its own save
 * path (an IOHandler that writes model.json and weights.bin into a temporary folder, as tfjs-node's
 * `file://` handler lays them out), and ours loads them from disk; predictions and input gradients
 * must agree to float32 tolerance. Then the reverse: a model saved by ours in the TF.js format is
 * loaded by `tf.loadLayersModel` and predicts the same.
 *
 * One row of MODELS per architecture, covering every layer both libraries have (BatchNormalization
 * with perturbed statistics, dilated Conv2D, ZeroPadding2D, Cropping2D, average and global pooling,
 * LeakyReLU, ReLU, Reshape); tfjs cannot take a dilated convolution's gradient, so that row
 * compares predictions only.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import * as tfl from '@tensorflow/tfjs-layers';
import { loadModel, loadModelFile, saveModelFile, saveTfjsModel } from '../../lib/model-io.js';
import { catsVsDogsCnn, seedReferenceModel } from '../../lib/models.js';
import { Rng } from '../../lib/rng.js';
import type { Sequential } from '../../lib/sequential.js';
import { type Tensor, contiguous, randomNormal, tensor } from '../../lib/tensor.js';
import { expect } from '../helpers/setup.js';

createRequire(import.meta.url)('@tensorflow/tfjs-core/dist/register_all_gradients.js');

const TOL = { rtol: 1e-4, atol: 1e-5 };

interface Row {
  label: string;
  /** Per-sample input shape. */
  input: number[];
  /** The layers, the first given the input shape. */
  layers: (inputShape: number[]) => tfl.layers.Layer[];
  /** tfjs cannot take this model's gradient (its conv2d gradient refuses dilations): compare predictions only. */
  noGradient?: boolean;
  /** Redraw every weight uniformly in [0.5, 1.5] (fresh BatchNormalization statistics are the identity). */
  perturb?: boolean;
}

const MODELS: Row[] = [
  {
    label: "Conv2D 'same' strides 2 relu · MaxPooling2D · Flatten · Dense softmax",
    input: [9, 8, 2],
    layers: (inputShape) => [
      tfl.layers.conv2d({ inputShape, filters: 3, kernelSize: 3, strides: 2, padding: 'same', activation: 'relu' }),
      tfl.layers.maxPooling2d({ poolSize: 2, strides: 1, padding: 'valid' }),
      tfl.layers.flatten(),
      tfl.layers.dense({ units: 4, activation: 'softmax' }),
    ],
  },
  {
    label: "Conv2D 'valid' strides [1, 2] tanh no bias · Dropout · Conv2D 'same' · Flatten · Dense sigmoid",
    input: [7, 9, 3],
    layers: (inputShape) => [
      tfl.layers.conv2d({ inputShape, filters: 4, kernelSize: [2, 3], strides: [1, 2], padding: 'valid', activation: 'tanh', useBias: false }),
      tfl.layers.dropout({ rate: 0.3 }),
      tfl.layers.conv2d({ filters: 2, kernelSize: 2, padding: 'same' }),
      tfl.layers.flatten(),
      tfl.layers.dense({ units: 2, activation: 'sigmoid' }),
    ],
  },
  {
    label: "MaxPooling2D 'same' strides 2 · Conv2D · Flatten · Dense · Activation softmax",
    input: [6, 6, 1],
    layers: (inputShape) => [
      tfl.layers.maxPooling2d({ inputShape, poolSize: 3, strides: 2, padding: 'same' }),
      tfl.layers.conv2d({ filters: 2, kernelSize: 2, activation: 'relu' }),
      tfl.layers.flatten(),
      tfl.layers.dense({ units: 3 }),
      tfl.layers.activation({ activation: 'softmax' }),
    ],
  },
  {
    label: 'Dense tanh · Dropout · Dense relu · Dense linear',
    input: [5],
    layers: (inputShape) => [
      tfl.layers.dense({ inputShape, units: 8, activation: 'tanh' }),
      tfl.layers.dropout({ rate: 0.5 }),
      tfl.layers.dense({ units: 4, activation: 'relu' }),
      tfl.layers.dense({ units: 3 }),
    ],
  },
  {
    label: "ZeroPadding2D · Conv2D dilated (2, 1) 'same' gelu · BatchNormalization · AveragePooling2D 'same' · GlobalMaxPooling2D · Dense · LeakyReLU",
    input: [9, 8, 2],
    noGradient: true,
    perturb: true,
    layers: (inputShape) => [
      tfl.layers.zeroPadding2d({ inputShape, padding: [[2, 0], [1, 1]] }),
      tfl.layers.conv2d({ filters: 3, kernelSize: [3, 2], padding: 'same', dilationRate: [2, 1], activation: 'gelu' }),
      tfl.layers.batchNormalization({ epsilon: 1e-3 }),
      tfl.layers.averagePooling2d({ poolSize: [3, 2], strides: 2, padding: 'same' }),
      tfl.layers.globalMaxPooling2d({}),
      tfl.layers.dense({ units: 4, activation: 'softplus' }),
      tfl.layers.leakyReLU({ alpha: 0.1 }),
    ],
  },
  {
    label: 'Conv2D relu · BatchNormalization · GlobalAveragePooling2D · Dense softmax',
    input: [6, 5, 3],
    perturb: true,
    layers: (inputShape) => [
      tfl.layers.conv2d({ inputShape, filters: 4, kernelSize: 2, activation: 'relu' }),
      tfl.layers.batchNormalization({}),
      tfl.layers.globalAveragePooling2d({}),
      tfl.layers.dense({ units: 3, activation: 'softmax' }),
    ],
  },
  {
    label: 'Cropping2D · Conv2D elu · ReLU (max_value 1) · Reshape · Flatten · Dense',
    input: [7, 6, 2],
    layers: (inputShape) => [
      tfl.layers.cropping2D({ inputShape, cropping: [[1, 0], [0, 2]] }),
      tfl.layers.conv2d({ filters: 2, kernelSize: 2, activation: 'elu' }),
      tfl.layers.reLU({ maxValue: 1 }),
      tfl.layers.reshape({ targetShape: [5, 6] }),
      tfl.layers.flatten(),
      tfl.layers.dense({ units: 2 }),
    ],
  },
];

/** Writes tfjs' artifacts as model.json + shards (split into `shards` files, to cross tensor boundaries). */
function artifactsToDisk(a: tf.io.ModelArtifacts, dir: string, shards = 1): string {
  const bytes = new Uint8Array(tf.io.CompositeArrayBuffer.join(a.weightData!));
  const paths: string[] = [];
  // Cut points that are not multiples of 4, so that some tensor straddles two files.
  const cuts = Array.from({ length: shards + 1 }, (_, k) => (k === shards ? bytes.byteLength : Math.floor((k * bytes.byteLength) / shards) + (k ? 1 : 0)));
  for (let k = 0; k < shards; k++) {
    const p = shards === 1 ? 'weights.bin' : `group1-shard${k + 1}of${shards}.bin`;
    writeFileSync(join(dir, p), bytes.subarray(cuts[k], cuts[k + 1]));
    paths.push(p);
  }
  const json = { modelTopology: a.modelTopology, format: a.format, generatedBy: a.generatedBy, convertedBy: a.convertedBy, weightsManifest: [{ paths, weights: a.weightSpecs }] };
  writeFileSync(join(dir, 'model.json'), JSON.stringify(json));
  return join(dir, 'model.json');
}

async function saveWithTfjs(model: tfl.LayersModel, dir: string, shards = 1): Promise<string> {
  let path = '';
  await model.save(tf.io.withSaveHandler(async (artifacts) => {
    path = artifactsToDisk(artifacts, dir, shards);
    return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
  }));
  return path;
}

function f32(t: Tensor): Tensor {
  const d = t.data;
  for (let i = 0; i < d.length; i++) d[i] = Math.fround(d[i]);
  return t;
}

const toTf = (t: Tensor): tf.Tensor => tf.tensor(Float32Array.from(contiguous(t).data.subarray(0, t.size)), t.shape.slice());
const fromTf = (t: tf.Tensor): Tensor => tensor(Array.from(t.dataSync()), t.shape.slice());

/** tfjs' prediction and input gradient of ⟨model(x), dy⟩. */
function tfjsPredictAndGrad(model: tfl.LayersModel, x: Tensor, dy: Tensor): { y: Tensor; dx: Tensor } {
  const xt = toTf(x);
  const dyt = toTf(dy);
  const y = model.predict(xt) as tf.Tensor;
  const dx = tf.grad((v: tf.Tensor) => tf.sum(tf.mul(model.apply(v, { training: false }) as tf.Tensor, dyt)))(xt);
  const out = { y: fromTf(y), dx: fromTf(dx) };
  tf.dispose([xt, dyt, y, dx]);
  return out;
}

function oursPredictAndGrad(model: Sequential, x: Tensor, dy: Tensor): { y: Tensor; dx: Tensor } {
  const { y, saved } = model.forward(x);
  return { y, dx: model.vjp(saved, dy).dx };
}

describe('peer: model files shared with tfjs-layers 4.22 (CPU backend, float32)', () => {
  let dir: string;
  before(async () => {
    await tf.setBackend('cpu');
    dir = mkdtempSync(join(tmpdir(), 'jc-tfjs-layers-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  MODELS.forEach((row, r) => {
    for (const shards of r === 0 ? [1, 3] : [1]) {
      it(`tfjs saves, we load and agree (prediction and input gradient): ${row.label}${shards > 1 ? `, weights in ${shards} shards` : ''}`, async () => {
        const peer = tfl.sequential({ layers: row.layers(row.input) });
        if (row.perturb) peer.setWeights(peer.getWeights().map((w, k) => tf.randomUniform(w.shape, 0.5, 1.5, 'float32', 100 + k)));
        const sub = mkdtempSync(join(dir, 'row-'));
        const path = await saveWithTfjs(peer, sub, shards);
        const ours = loadModelFile(path);
        expect(ours.layers.map((l) => l.className)).to.deep.equal(peer.layers.map((l) => l.getClassName()));
        expect(ours.inputShape).to.deep.equal(row.input);
        // The very same weights, layer by layer in Keras order (a model's getWeights() lists the non-trainable ones, BatchNormalization's moving statistics, last).
        ours.layers.forEach((l, i) => {
          const theirs = peer.layers[i].getWeights().map(fromTf);
          expect(theirs.length, `layer ${i} weights`).to.equal(l.params.length);
          l.params.forEach((p, k) => expect(p.value, `layer ${i} ${p.name}`).to.be.allclose(theirs[k], { rtol: 0, atol: 0 }));
        });
        const rng = new Rng(10 + r);
        const x = f32(randomNormal([3, ...row.input], rng));
        const dy = f32(randomNormal([3, ...ours.outputShape], rng));
        const a = oursPredictAndGrad(ours, x, dy);
        if (row.noGradient) {
          expect(a.y).to.be.allclose(fromTf(peer.predict(toTf(x)) as tf.Tensor), TOL);
          return;
        }
        const b = tfjsPredictAndGrad(peer, x, dy);
        expect(a.y).to.be.allclose(b.y, TOL);
        expect(a.dx).to.be.allclose(b.dx, TOL);
      });
    }
  });

  it('a tfjs Functional model ("Model", Keras 2 inbound_nodes) that is a single chain loads as a Sequential and agrees', async () => {
    const input = tfl.input({ shape: [6, 6, 2] });
    let h = tfl.layers.conv2d({ filters: 3, kernelSize: 3, padding: 'same', activation: 'tanh' }).apply(input) as tfl.SymbolicTensor;
    h = tfl.layers.maxPooling2d({ poolSize: 2 }).apply(h) as tfl.SymbolicTensor;
    h = tfl.layers.flatten().apply(h) as tfl.SymbolicTensor;
    const peer = tfl.model({ inputs: input, outputs: tfl.layers.dense({ units: 3, activation: 'softmax' }).apply(h) as tfl.SymbolicTensor });
    const path = await saveWithTfjs(peer, mkdtempSync(join(dir, 'functional-')));
    expect(JSON.parse(readFileSync(path, 'utf8')).modelTopology.class_name).to.equal('Model');
    const ours = loadModelFile(path);
    expect(ours.layers.map((l) => l.className)).to.deep.equal(['Conv2D', 'MaxPooling2D', 'Flatten', 'Dense']);
    const rng = new Rng(21);
    const x = f32(randomNormal([2, 6, 6, 2], rng));
    const dy = f32(randomNormal([2, 3], rng));
    const a = oursPredictAndGrad(ours, x, dy);
    const b = tfjsPredictAndGrad(peer, x, dy);
    expect(a.y).to.be.allclose(b.y, TOL);
    expect(a.dx).to.be.allclose(b.dx, TOL);
  });

  const OURS: { label: string; make: () => Sequential; noGradient?: boolean }[] = [
    { label: "the seed's reference model", make: () => seedReferenceModel({ seed: 4 }) },
    { label: 'a narrow cats-vs-dogs CNN (Conv2D, MaxPooling2D, Dropout, Flatten, Dense, Activation)', make: () => catsVsDogsCnn({ side: 22, channels: 2, seed: 5 }) },
    {
      label: 'the keras_layers fixture (ZeroPadding2D, dilated Conv2D gelu, BatchNormalization, AveragePooling2D, elu, GlobalMaxPooling2D, softplus, LeakyReLU, softmax)',
      make: () => loadModel(readFileSync(new URL('../fixtures/keras_layers.json', import.meta.url), 'utf8')),
      // tfjs' conv2d gradient refuses dilations: predictions only.
      noGradient: true,
    },
  ];

  for (const { label, make, noGradient } of OURS) {
    it(`we save in the TF.js format (on disk), tf.loadLayersModel loads it and predicts the same: ${label}`, async () => {
      const model = make();
      const sub = mkdtempSync(join(dir, 'ours-'));
      const path = join(sub, 'model.json');
      saveModelFile(model, path, { format: 'tfjs' });
      const json = JSON.parse(readFileSync(path, 'utf8'));
      expect(json.format).to.equal('layers-model');
      expect(json.weightsManifest[0].paths).to.deep.equal(['weights.bin']);
      const bin = readFileSync(join(sub, 'weights.bin'));
      const peer = await tfl.loadLayersModel(tf.io.fromMemory({
        modelTopology: json.modelTopology,
        weightSpecs: json.weightsManifest[0].weights,
        weightData: bin.buffer.slice(bin.byteOffset, bin.byteOffset + bin.byteLength),
      }));
      expect(peer.layers.map((l) => l.getClassName())).to.deep.equal(model.layers.map((l) => l.className));
      // The format holds float32: ours reloaded from the same files is what tfjs must match exactly.
      const reloaded = loadModelFile(path);
      const rng = new Rng(3);
      const x = f32(randomNormal([2, ...model.inputShape], rng));
      const dy = f32(randomNormal([2, ...model.outputShape], rng));
      const a = oursPredictAndGrad(reloaded, x, dy);
      if (noGradient) expect(a.y).to.be.allclose(fromTf(peer.predict(toTf(x)) as tf.Tensor), TOL);
      else {
        const b = tfjsPredictAndGrad(peer, x, dy);
        expect(a.y).to.be.allclose(b.y, TOL);
        expect(a.dx).to.be.allclose(b.dx, TOL);
      }
      // And the float64 original differs from its float32 copy only by that rounding.
      expect(model.forward(x).y).to.be.allclose(a.y, TOL);
      peer.dispose();
    });
  }

  it('our in-memory TF.js artifacts load through tf.io.fromMemory too', async () => {
    const model = seedReferenceModel({ seed: 9 });
    const { modelJson, weightData } = saveTfjsModel(model);
    const peer = await tfl.loadLayersModel(tf.io.fromMemory({ modelTopology: modelJson.modelTopology, weightSpecs: modelJson.weightsManifest[0].weights, weightData }));
    const w = peer.getWeights().map(fromTf);
    model.params.forEach((p, k) => expect(w[k]).to.be.allclose(f32(tensor(Array.from(p.value.data), p.value.shape)), { rtol: 0, atol: 0 }));
  });
});

// A model from a Keras tutorial, built and saved by TensorFlow.js itself (model.json and its binary
// weight shard, through tfjs-layers' own save path), then loaded here with its own weights: the
// summary, what the explicit way would cost on it, and its predictions against TensorFlow.js'.
// Run: npx tsx examples/tfjs-model.ts   (then: npx tsx bin/cli.ts inspect out/tfjs-cnn/model.json)
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import * as tfl from '@tensorflow/tfjs-layers';
import { allcloseReport, contiguous, estimateMemory, fmtBytes, seededBatch } from 'jacobian-chain';
import { loadModelFile } from 'jacobian-chain/node';

// Production mode: TF.js' pure-JS backend without its banner on stderr suggesting the native one.
tf.enableProdMode();
const dir = 'out/tfjs-cnn';
const cnn = tfl.sequential({
  layers: [
    tfl.layers.conv2d({ inputShape: [16, 16, 3], filters: 8, kernelSize: 3, padding: 'same', activation: 'relu', kernelInitializer: tfl.initializers.heNormal({ seed: 1 }) }),
    tfl.layers.batchNormalization(),
    tfl.layers.maxPooling2d({ poolSize: 2 }),
    tfl.layers.conv2d({ filters: 16, kernelSize: 3, activation: 'relu', kernelInitializer: tfl.initializers.glorotUniform({ seed: 2 }) }),
    tfl.layers.globalAveragePooling2d({}),
    tfl.layers.dense({ units: 10, activation: 'softmax', kernelInitializer: tfl.initializers.glorotUniform({ seed: 3 }) }),
  ],
});
// TensorFlow.js' own save path: model.json (topology and weightsManifest) and weights.bin.
await cnn.save(
  tf.io.withSaveHandler(async (a) => {
    mkdirSync(dir, { recursive: true });
    const manifest = [{ paths: ['weights.bin'], weights: a.weightSpecs! }];
    writeFileSync(join(dir, 'model.json'), JSON.stringify({ format: 'layers-model', generatedBy: 'TensorFlow.js tfjs-layers', convertedBy: null, modelTopology: a.modelTopology, weightsManifest: manifest }));
    writeFileSync(join(dir, 'weights.bin'), new Uint8Array(a.weightData as ArrayBuffer));
    return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
  }),
);

const model = loadModelFile(join(dir, 'model.json')); // the file's own weights, read from weights.bin
console.log(model.summary());
const est = estimateMemory(model.split([3]), 8, { training: true });
console.log(`split after the pooling layer, batch 8: the explicit way holds ${fmtBytes(est.explicit.jacobianBytes)} of Jacobians, the VJP way ${fmtBytes(est.vjp.bytes)}`);
const { x } = seededBatch(model.inputShape, { batch: 4, seed: 0 });
const ours = model.forward(x).y;
const theirs = (cnn.predict(tf.tensor(Float32Array.from(contiguous(x).data), x.shape.slice())) as tf.Tensor).dataSync();
const r = allcloseReport(Array.from(contiguous(ours).data), Array.from(theirs), { rtol: 1e-4, atol: 1e-5 });
console.log(`predictions equal to TensorFlow.js' (float32 tolerance): ${r.pass} (largest relative difference ${r.maxRelError.toExponential(1)})`);

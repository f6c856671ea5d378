// Loading a model file (Keras-style topology and weights; here a golden fixture computed by PyTorch
// in float64), splitting it as the file says, and checking both ways against the file's gradients.
// Then saving it and loading it back.
// Run: npx tsx examples/load-model.ts
import { readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  Sequential, allcloseReport, fromJSON, jacobianChain, loadModel, vjpChain, type TensorJSON,
} from 'jacobian-chain';
import { loadModelFile, saveModelFile } from 'jacobian-chain/node'; // files on disk: the Node-only entry

const path = fileURLToPath(new URL('../spec/fixtures/dense_mlp.json', import.meta.url));
const file = JSON.parse(readFileSync(path, 'utf8'));
const model = loadModel(file);
console.log(model.summary());

const stages = model.split(Sequential.pointsFromStages(file.stages, model.layers.length)); // [[0], [1], [2, 3]]
const x = fromJSON(file.x);
const y = fromJSON(file.y);
const expected: TensorJSON[][] = file.expected.dLoss_dWeights;

const results = [jacobianChain(stages, x, y, file.loss), await vjpChain(stages, x, y, file.loss)];
for (const res of results) {
  let worst = 0;
  const ok = expected.every((layer, i) =>
    layer.every((w, k) => {
      const r = allcloseReport(res.dLoss_dWeights[i][k], fromJSON(w), { rtol: 1e-10, atol: 1e-12 });
      worst = Math.max(worst, r.maxRelError);
      return r.pass;
    }),
  );
  console.log(`${res.method.padEnd(8)} loss ${res.loss.toFixed(12)} (file: ${file.expected.loss.toFixed(12)}), gradients match the file: ${ok} (max relative difference ${worst.toExponential(1)})`);
}

// Save and load back: the same predictions, bit for bit.
const saved = join(tmpdir(), `jacobian-chain-example-${process.pid}.json`);
saveModelFile(model, saved);
const again = loadModelFile(saved);
rmSync(saved);
console.log(`saved and reloaded: identical predictions ${allcloseReport(again.forward(x).y, model.forward(x).y, { rtol: 0, atol: 0 }).pass}`);

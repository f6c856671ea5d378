// Training a split model as one model, on a few real MNIST digits (3 against 8): model_0 (convolution
// and pooling) and model_1 (the classifier) on their own tapes, the backward pass crossing the split
// by VJP or by explicit Jacobians. From the same start, both ways take the same steps.
// Run: npx tsx examples/split-training.ts
import {
  Conv2D, Dense, Flatten, MaxPooling2D, Rng, Sequential, allcloseReport, evaluate, fit,
  type BackwardMethod, type Tensor,
} from 'jacobian-chain';
import { loadMnistBinary } from 'jacobian-chain/node'; // files on disk: the Node-only entry

const { train, test } = loadMnistBinary({ positive: 3, negative: 8, limit: 60, seed: 0 });
console.log(`train ${train.x.shape[0]} images, test ${test.x.shape[0]} held-out images`);

// A small CNN; split at layer 2: model_0 = Conv2D, MaxPooling2D; model_1 = Flatten, Dense.
const build = () =>
  new Sequential(
    [new Conv2D({ filters: 4, kernel_size: 3, activation: 'relu' }), new MaxPooling2D({ pool_size: 2 }), new Flatten(), new Dense({ units: 1, activation: 'sigmoid' })],
    { inputShape: [28, 28, 1], rng: new Rng(0) },
  );

const trained: Tensor[][] = [];
for (const method of ['vjp', 'jacobian'] as BackwardMethod[]) {
  const model = build(); // the same initial weights for both ways
  const t0 = performance.now();
  const { history } = await fit(model, train, {
    split: [2], method, loss: 'binary_crossentropy', optimizer: { name: 'adam', learning_rate: 0.01 },
    epochs: 4, batchSize: 16, seed: 0,
  });
  const ms = performance.now() - t0;
  for (const h of history) console.log(`${method.padEnd(8)} epoch ${h.epoch}: loss ${h.loss.toFixed(4)}, accuracy ${h.accuracy.toFixed(3)}`);
  const t = evaluate(model, test, 'binary_crossentropy');
  console.log(`${method.padEnd(8)} test: loss ${t.loss.toFixed(4)}, accuracy ${t.accuracy.toFixed(3)} (${(ms / 1000).toFixed(1)} s)`);
  trained.push(model.params.map((p) => p.value));
}

const worst = Math.max(...trained[0].map((w, k) => allcloseReport(trained[1][k], w).maxRelError));
console.log(`same weights after training: ${trained[0].every((w, k) => allcloseReport(trained[1][k], w, { rtol: 1e-9 }).pass)} (max relative difference ${worst.toExponential(1)})`);

// The question's attempt: model_0 and model_1 on separate tapes, each asked for the gradient of its
// own output. Neither is the gradient of the loss: grads_1 never sees the loss, and grads_0 never
// sees model_1 or the loss. So "training them separately" follows the wrong directions.
// Run: npx tsx examples/naive-split.ts
import { GradientTape, allclose, catsVsDogsCnn, dot, seededBatch, splitAfterLastPooling, type Tensor } from 'jacobian-chain';

const model = catsVsDogsCnn({ side: 32, channels: 3, seed: 0 });
const [model_0, model_1] = model.split(splitAfterLastPooling(model));
const { x: x_batch, y: y_batch } = seededBatch(model.inputShape, { batch: 8, seed: 1 });
const fwd = { training: true, seed: 7 }; // Dropout's mask depends on (seed, layer index): every tape sees the same one

// model 0
const tape_0 = new GradientTape(model_0);
const y_pred_0 = tape_0.forward(x_batch, fwd);
// model 1
const tape_1 = new GradientTape(model_1);
const y_pred_1 = tape_1.forward(y_pred_0, fwd);
const loss_value = tape_1.loss('binary_crossentropy', y_batch);

// As in the question: the gradient of each stage's output (summed), not of the loss.
const grads_1 = tape_1.gradient(y_pred_1, model_1.params);
const grads_0 = tape_0.gradient(y_pred_0, model_0.params);

// What training as one model needs: dLoss/dWeights from one tape over the whole model.
const tape = new GradientTape(model);
tape.forward(x_batch, fwd);
const truth = tape.gradient(tape.loss('binary_crossentropy', y_batch), model.params);

const cosine = (a: Tensor, b: Tensor) => dot(a, b) / Math.sqrt(dot(a, a) * dot(b, b));
console.log(`loss ${loss_value.data[0].toFixed(6)}`);
[...grads_0, ...grads_1].forEach((g, k) => {
  const p = model.params[k];
  const owner = model.layers[model.paramOwners[k].layer].name;
  console.log(`${`${owner}.${p.name}`.padEnd(18)} naive valid: ${allclose(g, truth[k])}  cosine with dLoss/dW: ${cosine(g, truth[k]).toFixed(3)}`);
});

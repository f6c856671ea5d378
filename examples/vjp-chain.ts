// The answer to the question, the VJP way: model_1's tape returns dLoss/dy_pred_0 along with its own
// weight gradients, and that tensor is the output gradient (cotangent) that seeds model_0's reverse
// pass. Two tapes, no Jacobian, and the gradients of one model; then each stage takes its step.
// Run: npx tsx examples/vjp-chain.ts
import {
  Adam, GradientTape, allcloseReport, catsVsDogsCnn, fmtShape, seededBatch, splitAfterLastPooling,
} from 'jacobian-chain';

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

// Backward, model_1 first. The trick: ask tape_1 for dLoss/dy_pred_0 too, and hand it to tape_0.
const [dLoss_dOut0, ...grads_1] = tape_1.gradient(loss_value, [y_pred_0, ...model_1.params]);
const grads_0 = tape_0.gradient(y_pred_0, model_0.params, { outputGradients: dLoss_dOut0 });

console.log(`x_batch ${fmtShape(x_batch.shape)} -> y_pred_0 ${fmtShape(y_pred_0.shape)} -> y_pred_1 ${fmtShape(y_pred_1.shape)}`);
console.log(`dLoss_dOut0 ${fmtShape(dLoss_dOut0.shape)} (the only tensor crossing back from model_1 to model_0)`);

// The check: one tape over the whole model, with the same weights, batch and Dropout mask.
const tape = new GradientTape(model);
tape.forward(x_batch, fwd);
const reference = tape.gradient(tape.loss('binary_crossentropy', y_batch), model.params);
[...grads_0, ...grads_1].forEach((g, k) => {
  const name = `${model.layers[model.paramOwners[k].layer].name}.${model.params[k].name}`;
  const r = allcloseReport(g, reference[k]);
  console.log(`${name.padEnd(16)} ${fmtShape(g.shape).padEnd(16)} valid: ${r.pass} (max relative difference ${r.maxRelError.toExponential(1)})`);
});

// optimizer.apply_gradients, per stage.
const optimizer = new Adam({ learning_rate: 1e-3 });
optimizer.step(model_1.params, grads_1);
optimizer.step(model_0.params, grads_0);
const after = new GradientTape(model);
after.forward(x_batch, fwd);
console.log(`loss before the step ${loss_value.data[0].toFixed(6)}, after ${after.loss('binary_crossentropy', y_batch).data[0].toFixed(6)}`);

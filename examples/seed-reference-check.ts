// The seed's reference check, line for line: a model split into three stages, each with its own
// tape; each stage's Jacobians (by forward-mode dual numbers) contracted with the upstream
// gradient by the seed's helpers, and every gradient compared with one tape over the whole model.
// Run: npx tsx examples/seed-reference-check.ts
import {
  GradientTape, SEED_REFERENCE_SPLIT, allcloseReport, fmtShape, seedReferenceModel, seededBatch,
  upstreamGradientLossOut, upstreamGradientLossWeights, type Tensor,
} from 'jacobian-chain';

// 3 batches, 10x10 images, 1 channel. layer_0 = Conv2D(6, 2, relu), layer_1 = Conv2D(6, 2, relu),
// layer_2 = Flatten, Dense(1), Activation(sigmoid). The stages share the model's weights.
const model = seedReferenceModel({ seed: 0 });
const { x, y } = seededBatch(model.inputShape, { batch: 3, seed: 0 });
const [layer_0, layer_1, layer_2] = model.split(SEED_REFERENCE_SPLIT);

// The reference: one tape over the whole model.
const tape = new GradientTape(model);
tape.forward(x);
const refLoss = tape.loss('mse', y);
const [ref_dW0, ref_db0, ref_dW1, ref_db1, ref_dW2, ref_db2] = tape.gradient(refLoss, model.params);

// The split: every stage records its own pass on its own tape.
const tape_0 = new GradientTape(layer_0);
const out_layer_0 = tape_0.forward(x);
const tape_1 = new GradientTape(layer_1);
const out_layer_1 = tape_1.forward(out_layer_0);
const tape_2 = new GradientTape(layer_2);
const out_layer_2 = tape_2.forward(out_layer_1);
const loss = tape_2.loss('mse', y);

// Each stage's Jacobians: w.r.t. its weights [B, ...out, ...param], w.r.t. its input [B, ...out, ...in].
const dOut0_dWeights0 = tape_0.jacobian(out_layer_0, layer_0.params);
const dOut1_dOut0 = tape_1.batchJacobian(out_layer_1, out_layer_0);
const dOut1_dWeights1 = tape_1.jacobian(out_layer_1, layer_1.params);
const dOut2_dOut1 = tape_2.batchJacobian(out_layer_2, out_layer_1);
const dOut2_dWeights2 = tape_2.jacobian(out_layer_2, layer_2.params);
const dLoss_dOut2 = tape_2.gradient(loss, out_layer_2); // or dL/dY

// The chain rule, from the loss back to the input.
const dLoss_dWeights2 = upstreamGradientLossWeights(dOut2_dWeights2[0], dLoss_dOut2);
const dLoss_dBias2 = upstreamGradientLossWeights(dOut2_dWeights2[1], dLoss_dOut2);
const dLoss_dOut1 = upstreamGradientLossOut(dOut2_dOut1, dLoss_dOut2);
const dLoss_dWeights1 = upstreamGradientLossWeights(dOut1_dWeights1[0], dLoss_dOut1);
const dLoss_dBias1 = upstreamGradientLossWeights(dOut1_dWeights1[1], dLoss_dOut1);
const dLoss_dOut0 = upstreamGradientLossOut(dOut1_dOut0, dLoss_dOut1);
const dLoss_dWeights0 = upstreamGradientLossWeights(dOut0_dWeights0[0], dLoss_dOut0);
const dLoss_dBias0 = upstreamGradientLossWeights(dOut0_dWeights0[1], dLoss_dOut0);

const shapes: [string, { shape: readonly number[] }][] = [
  ['x', x], ['out_layer_0', out_layer_0], ['out_layer_1', out_layer_1], ['out_layer_2', out_layer_2],
  ['dOut0_dWeights0[0]', dOut0_dWeights0[0]], ['dOut0_dWeights0[1]', dOut0_dWeights0[1]],
  ['dOut1_dOut0', dOut1_dOut0], ['dOut1_dWeights1[0]', dOut1_dWeights1[0]], ['dOut1_dWeights1[1]', dOut1_dWeights1[1]],
  ['dOut2_dOut1', dOut2_dOut1], ['dOut2_dWeights2[0]', dOut2_dWeights2[0]], ['dOut2_dWeights2[1]', dOut2_dWeights2[1]],
  ['dLoss_dOut2', dLoss_dOut2], ['dLoss_dOut1', dLoss_dOut1], ['dLoss_dOut0', dLoss_dOut0],
  ['dLoss_dWeights2', dLoss_dWeights2], ['dLoss_dWeights1', dLoss_dWeights1], ['dLoss_dWeights0', dLoss_dWeights0],
];
for (const [name, t] of shapes) console.log(`${name.padEnd(20)} ${fmtShape(t.shape)}`);

console.log(`loss ${loss.data[0]} (one tape: ${refLoss.data[0]})`);
const checks: [string, Tensor, Tensor][] = [
  ['dLoss_dWeights2', ref_dW2, dLoss_dWeights2], ['dLoss_dBias2', ref_db2, dLoss_dBias2],
  ['dLoss_dWeights1', ref_dW1, dLoss_dWeights1], ['dLoss_dBias1', ref_db1, dLoss_dBias1],
  ['dLoss_dWeights0', ref_dW0, dLoss_dWeights0], ['dLoss_dBias0', ref_db0, dLoss_dBias0],
];
let worst = 0;
for (const [name, ref, got] of checks) {
  const r = allcloseReport(got, ref); // NumPy's allclose: rtol 1e-5, atol 1e-8, as the seed
  worst = Math.max(worst, r.maxRelError);
  console.log(`${name} valid: ${r.pass}`);
}
console.log(`largest relative difference: ${worst.toExponential(1)}`);

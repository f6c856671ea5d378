// The seed's reference model split into three stages, each on its own tape; dLoss/dWeights by the
// explicit-Jacobian chain and by the VJP chain, both checked against one tape over the whole model.
// Run: npx tsx examples/quickstart.ts
import { SEED_REFERENCE_SPLIT, allclose, fmtBytes, jacobianChain, referenceGradients, seedReferenceModel, seededBatch, vjpChain } from 'jacobian-chain';

const model = seedReferenceModel({ seed: 0 }); // Conv2D(6, 2, relu) · Conv2D(6, 2, relu) · Flatten · Dense(1) · sigmoid
const stages = model.split(SEED_REFERENCE_SPLIT); // layer_0, layer_1, layer_2: they share the model's weights
const { x, y } = seededBatch(model.inputShape, { batch: 3, seed: 0 }); // x [3, 10, 10, 1], y [3, 1]

const reference = referenceGradients(stages, x, y, 'mse'); // one tape over the whole model
const explicit = jacobianChain(stages, x, y, 'mse'); // each stage's Jacobians · the upstream gradient
const vjp = await vjpChain(stages, x, y, 'mse'); // the upstream gradient seeds each stage's reverse pass

for (const res of [explicit, vjp]) {
  const valid = res.dLoss_dWeights.every((layer, i) => layer.every((g, k) => allclose(g, reference.dLoss_dWeights[i][k])));
  const jacobianBytes = res.memory.flatMap((m) => m.jacobians).reduce((n, J) => n + J.bytes, 0);
  console.log(`${res.method}: loss ${res.loss.toFixed(6)}, every dLoss/dWeights valid: ${valid}, Jacobians held: ${fmtBytes(jacobianBytes)}`);
}

// Why the two ways agree, on one stage: contracting the materialized Jacobian with the upstream
// gradient g (the seed's helpers) computes g·J, and the reverse pass seeded with g computes the same
// vector-Jacobian product without ever building J.
// Run: npx tsx examples/chain-rule.ts
import {
  GradientTape, SEED_REFERENCE_SPLIT, allcloseReport, bytesOf, fmtBytes, fmtShape, randomNormal, Rng, seedReferenceModel,
  seededBatch, upstreamGradientLossOut, upstreamGradientLossWeights,
} from 'jacobian-chain';

const model = seedReferenceModel({ seed: 0 });
const { x } = seededBatch(model.inputShape, { batch: 3, seed: 0 });
const [layer_0, layer_1] = model.split(SEED_REFERENCE_SPLIT);
const h = layer_0.forward(x).y; // the input of stage 1: [3, 9, 9, 6]

const tape_1 = new GradientTape(layer_1);
const out = tape_1.forward(h); // [3, 8, 8, 6]
// Any upstream gradient will do: the identity holds for every g, not only for dLoss/dOut.
const g = randomNormal(out.shape, new Rng(42));

// Explicit: J_in [B, ...out, ...in] and J_W [B, ...out, ...param], then Σ over the axes of g.
const J_in = tape_1.batchJacobian(out, h);
const [J_kernel, J_bias] = tape_1.jacobian(out, layer_1.params);
const explicit = [upstreamGradientLossOut(J_in, g), upstreamGradientLossWeights(J_kernel, g), upstreamGradientLossWeights(J_bias, g)];

// VJP: one reverse pass seeded with g.
const vjp = tape_1.gradient(out, [h, ...layer_1.params], { outputGradients: g });

['dLoss/dIn', 'dLoss/dKernel', 'dLoss/dBias'].forEach((name, k) => {
  const r = allcloseReport(explicit[k], vjp[k], { rtol: 1e-12, atol: 0 });
  console.log(`${name.padEnd(14)} ${fmtShape(vjp[k].shape).padEnd(14)} equal: ${r.pass} (max relative difference ${r.maxRelError.toExponential(1)})`);
});
console.log(`J_in ${fmtShape(J_in.shape)}: ${fmtBytes(J_in.bytes)}; g ${fmtShape(g.shape)}: ${fmtBytes(bytesOf(g))}`);

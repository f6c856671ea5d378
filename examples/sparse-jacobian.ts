// Structured sparse Jacobians: the explicit way where dense Jacobians cannot be held. model_0 of the
// cats-vs-dogs CNN (three conv-relu-pool blocks) on 64×64×3 images, batch 1: the dense Jacobian from
// shapes alone, the sparse one built and stored per sample in CSR, the colouring of one convolution,
// and the gradient chained through sparse Jacobians against the VJP chain.
// Run: npx tsx examples/sparse-jacobian.ts
import {
  GradientTape, allcloseReport, catsVsDogsCnn, colourCountOf, denseJacobianBytes, findColouringConflict,
  fmtBytes, fmtShape, jacobianChain, jacobianWrtInput, kronColumnColouring, layerInputKron, planJacobian, seededBatch, sizeOf,
  leavesOf, splitAfterLastPooling, stageKron, upstreamGradientLossOut, vjpChain,
} from 'jacobian-chain';

const model = catsVsDogsCnn({ side: 64, channels: 3, seed: 0 });
const stages = model.split(splitAfterLastPooling(model));
const model_0 = stages[0];
const { x, y } = seededBatch(model.inputShape, { batch: 1, seed: 1 });

// 1. The dense Jacobian of model_0 w.r.t. its input, from shapes alone: nothing is allocated.
const denseShape = [1, ...model_0.outputShape, ...model_0.inputShape];
const denseBytes = denseJacobianBytes(1, model_0.outputShape, model_0.inputShape);
console.log(`dense J_in ${fmtShape(denseShape)}: ${sizeOf(denseShape)} entries, ${fmtBytes(denseBytes)}`);
const big = catsVsDogsCnn({ side: 224, channels: 3 });
const [big_0] = big.split(splitAfterLastPooling(big));
const bigPlan = planJacobian(big_0, 1); // nothing is computed: the closed-form patterns and the estimates
console.log(`at 224×224×3: ${fmtShape([1, ...big_0.outputShape, ...big_0.inputShape])}, ${fmtBytes(denseJacobianBytes(1, big_0.outputShape, big_0.inputShape))} dense; at most ${stageKron(leavesOf(big_0)).nnz} non-zeros (${fmtBytes(bigPlan.estimatedBytes)} of CSR entries); auto would take ${bigPlan.mode}/${bigPlan.engine}`);

// 2. The same Jacobian, sparse: only the non-zeros, one CSR matrix per sample, by the engine `auto` picks.
const t0 = performance.now();
const J = jacobianWrtInput(model_0, x, { format: 'sparse', mode: 'auto' });
const ms = performance.now() - t0;
console.log(`sparse J_in ${fmtShape(J.shape)}: ${J.nnz} stored entries of at most ${stageKron(leavesOf(model_0)).nnz} (density ${J.density.toExponential(2)}), ${fmtBytes(J.bytes)}, ${Math.round(denseBytes / J.bytes)}× smaller than dense`);
console.log(`plan: ${J.plan!.mode}/${J.plan!.engine}`);
console.log(`why: ${J.plan!.reason}`);

// 3. Colouring: columns that share no row share a colour, and one tangent per colour recovers them all.
//    For the first convolution (3×3 on 3 channels), its own colourCount hook gives 3 · 3 · 3 = 27 colours.
const conv = model_0.layers[0];
const kron = layerInputKron(conv); // its structural pattern, as Kronecker factors per axis
const colouring = kronColumnColouring(kron);
const conflict = findColouringConflict(kron.expand(), colouring);
console.log(`${conv.describe()} w.r.t. its input ${fmtShape(conv.inputShape)}: ${kron.cols} columns in ${colouring.count} colours (closed form ${colourCountOf(conv, 'input')}, largest row ${kron.maxRowNnz()}), conflict-free: ${conflict === null}`);

// 4. The explicit chain over both stages with sparse Jacobians, against the VJP chain.
const sparse = jacobianChain(stages, x, y, 'binary_crossentropy', { jacobian: { format: 'sparse', mode: 'auto' } });
const vjp = await vjpChain(stages, x, y, 'binary_crossentropy');
for (const m of sparse.memory) {
  for (const r of m.jacobians) console.log(`${m.name} ${r.label.padEnd(22)} ${fmtShape(r.shape).padEnd(34)} ${r.format} ${fmtBytes(r.bytes)}`);
}
const reports = sparse.dLoss_dWeights.flatMap((layer, i) => layer.map((g, k) => allcloseReport(g, vjp.dLoss_dWeights[i][k], { rtol: 1e-10, atol: 0 })));
const worstW = Math.max(...reports.map((r) => r.maxRelError));
console.log(`dLoss/dWeights, sparse Jacobian chain vs VJP chain: max relative difference ${worstW.toExponential(1)}`);

// The input gradient too: the seed's helper contracts the sparse J_in with dLoss/dOut0, never densifying it.
const dLoss_dOut0 = sparse.dLoss_dOut[0];
const tape_0 = new GradientTape(model_0);
const y_pred_0 = tape_0.forward(x);
const [dLoss_dx] = tape_0.gradient(y_pred_0, [x], { outputGradients: dLoss_dOut0 });
const rx = allcloseReport(upstreamGradientLossOut(J, dLoss_dOut0), dLoss_dx, { rtol: 1e-10, atol: 0 });
console.log(`dLoss/dx ${fmtShape(dLoss_dx.shape)}, sparse J_in vs model_0's VJP: max relative difference ${rx.maxRelError.toExponential(1)}`);
console.log(`valid: ${reports.every((r) => r.pass) && rx.pass}`);
console.log(`(sparse J_in built in ${(ms / 1000).toFixed(2)} s)`);

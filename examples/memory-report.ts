// What each way costs in memory, from shapes alone (nothing allocated) and as measured (every buffer
// actually allocated, each counted once): the explicit way's Jacobians against the VJP way's
// residuals and cotangents.
// Run: npx tsx examples/memory-report.ts
import {
  MemoryBudgetError, SEED_REFERENCE_SPLIT, catsVsDogsCnn, estimateMemory, fmtBytes, formatMemoryReport, guardExplicitWay,
  measureMemory, seedReferenceModel, seededBatch, splitAfterLastPooling,
} from 'jacobian-chain';

// 1. The seed's reference model, three stages, batch 3: estimated, then measured.
const model = seedReferenceModel({ seed: 0 });
const stages = model.split(SEED_REFERENCE_SPLIT);
const { x } = seededBatch(model.inputShape, { batch: 3, seed: 0 });
const estimate = estimateMemory(stages, 3);
const measured = measureMemory(stages, x);
console.log(formatMemoryReport(measured));
console.log(`estimate = measured: Jacobians ${estimate.explicit.jacobianBytes === measured.explicit.jacobianBytes}, residuals ${estimate.vjp.residualBytes === measured.vjp.residualBytes}, cotangents ${estimate.vjp.cotangentBytes === measured.vjp.cotangentBytes}`);

// 2. The question's CNN (32×32×3 images, split after the last pooling layer) as the batch grows:
//    both ways grow linearly in B; the ratio says how many times more the explicit way holds.
const cnn = catsVsDogsCnn({ side: 32, channels: 3 });
const split = cnn.split(splitAfterLastPooling(cnn));
console.log('\n| batch | explicit-Jacobian way | VJP way | ratio |\n|---:|---:|---:|---:|');
for (const B of [1, 8, 32, 128]) {
  const r = estimateMemory(split, B, { training: true });
  console.log(`| ${B} | ${fmtBytes(r.explicit.jacobianBytes)} | ${fmtBytes(r.vjp.bytes)} | ${Math.round(r.ratio)}× |`);
}

// 3. Over the budget, the explicit way is refused before a byte is allocated.
try {
  guardExplicitWay(estimateMemory(catsVsDogsCnn({ side: 224, channels: 3 }).split([9]), 32), 4 * 1024 ** 3);
} catch (e) {
  if (!(e instanceof MemoryBudgetError)) throw e;
  console.log(`\nrefused: ${e.name}: estimate ${fmtBytes(e.estimateBytes)} > budget ${fmtBytes(e.budgetBytes)}`);
}

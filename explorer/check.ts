/**
 * The seed's `valid` lines, computed by the library wherever JavaScript runs (a page, a worker):
 * each way's gradients (`jacobianChain`, `vjpChain`) compared with one tape over the whole model by
 * NumPy's `allclose`, labelled as `npm start` labels them (`dLoss_dWeights2 valid: true`, ...,
 * `dLoss_dOut0 valid: true`, `loss valid: true`). Imports only `jacobian-chain`.
 * @example
 * const lines = await seedCheckLines(); // 18 lines: 9 for the explicit-Jacobian chain, 9 for the VJP chain
 */
import { type ChainResult, type Sequential, SEED_REFERENCE_SPLIT, allcloseReport, jacobianChain, referenceGradients, seedGradientLabels, seedReferenceModel, seededBatch, vjpChain } from 'jacobian-chain';

/** One way's `valid` lines against the single tape `ref`: every trainable parameter, every boundary cotangent, the loss. */
export function validLines(res: ChainResult, ref: ChainResult, stages: readonly Sequential[]): string[] {
  const lines = seedGradientLabels(stages).map(({ label, layer, param }) => `${label} valid: ${allcloseReport(res.dLoss_dWeights[layer][param], ref.dLoss_dWeights[layer][param]).pass}`);
  for (let s = stages.length - 2; s >= 0; s--) lines.push(`dLoss_dOut${s} valid: ${allcloseReport(res.dLoss_dOut[s], ref.dLoss_dOut[s]).pass}`);
  lines.push(`loss valid: ${Math.abs(res.loss - ref.loss) <= 1e-8 + 1e-5 * Math.abs(ref.loss)}`);
  return lines;
}

/** The first part of `npm start`: the seed's reference model, batch 3, both ways against one tape; the explicit way's lines first. */
export async function seedCheckLines(): Promise<string[]> {
  const model = seedReferenceModel({ seed: 0 });
  const { x, y } = seededBatch(model.inputShape, { batch: 3, seed: 0 });
  const stages = model.split(SEED_REFERENCE_SPLIT);
  const ref = referenceGradients(stages, x, y, 'mse');
  const explicit = jacobianChain(stages, x, y, 'mse');
  const vjp = await vjpChain(stages, x, y, 'mse');
  return [...validLines(explicit, ref, stages).map((l) => `jacobian ${l}`), ...validLines(vjp, ref, stages).map((l) => `vjp ${l}`)];
}

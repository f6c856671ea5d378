/**
 * The golden fixtures (PyTorch autograd, cross-checked by JAX; format in spec/fixtures/README.md),
 * typed and loaded: the file, the model it describes split into its stages, and its batch.
 */
import { readFileSync } from 'node:fs';
import { loadModel } from '../../lib/model-io.js';
import { Sequential } from '../../lib/sequential.js';
import { type Tensor, type TensorJSON, fromJSON } from '../../lib/tensor.js';

/** A golden fixture's batch, loss, stages and expected values (the model itself is read by `loadModel`). */
export interface GoldenFixture {
  x: TensorJSON;
  y: TensorJSON;
  loss: string;
  stages: number[][];
  expected: {
    loss: number;
    stageOutputs: TensorJSON[];
    dLoss_dStageOutput: TensorJSON[];
    dLoss_dWeights: TensorJSON[][];
    stageProbes: { v: TensorJSON; Jv: TensorJSON; u: TensorJSON; uJ: TensorJSON }[];
    stageBatchJacobianWrtInput: TensorJSON[];
    stageJacobianWrtWeights: TensorJSON[][][];
    layerBatchJacobianWrtInput: TensorJSON[];
  };
}

/** Loads `spec/fixtures/<name>` (float64): the parsed fixture, its model, the model split into the fixture's stages, and `x`, `y`. */
export function loadFixture(name: string): { fx: GoldenFixture; model: Sequential; stages: Sequential[]; x: Tensor; y: Tensor } {
  const text = readFileSync(new URL(`../fixtures/${name}`, import.meta.url), 'utf8');
  const fx = JSON.parse(text) as GoldenFixture;
  const model = loadModel(text);
  const stages = model.split(Sequential.pointsFromStages(fx.stages, model.layers.length));
  return { fx, model, stages, x: fromJSON(fx.x), y: fromJSON(fx.y) };
}

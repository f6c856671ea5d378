/**
 * What the `seed` and `jacobian` commands run: a model split into stages, a batch, its labels and
 * the loss, built from the options before any work starts, so that a bad model file costs nothing.
 */
import { readFileSync } from 'node:fs';
import { lossFrom } from '../lib/losses.js';
import { loadModel } from '../lib/model-io.js';
import { seededBatch } from '../lib/models.js';
import { Rng } from '../lib/rng.js';
import { Sequential } from '../lib/sequential.js';
import { type DType, type Tensor, asType, assertShape, fromJSON, zeros } from '../lib/tensor.js';
import { UsageError } from './args.js';

/** A model split into stages, a batch, its labels and the loss. */
export interface Case {
  title: string;
  stages: Sequential[];
  x: Tensor;
  y: Tensor;
  loss: string;
}

/** The options a model file's case depends on. */
export interface CaseOptions {
  split?: number[];
  batch?: number;
  dtype: DType;
  seed: number;
  loss?: string;
}

/**
 * A model file (Keras-style JSON: modelTopology and weights; a golden fixture works) as a case:
 * stages at `split`, else the file's `stages`, else two halves; the file's `x` and `y` (checked
 * against the model) unless `batch` is given or the file has none, else a seeded batch of
 * `batch ?? defaultBatch` with seeded labels; loss `loss`, else the file's, else mse.
 */
export function modelFileCase(path: string, o: CaseOptions, defaultBatch: number): Case {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new UsageError(`--model: cannot read ${JSON.stringify(path)} (${(e as Error).message})`);
  }
  const model = loadModel(text, { dtype: o.dtype });
  const file = JSON.parse(text) as { x?: unknown; y?: unknown; loss?: unknown; stages?: number[][] };
  const loss = o.loss ?? (typeof file.loss === 'string' ? file.loss : 'mse');
  lossFrom(loss);
  const L = model.layers.length;
  const split = o.split ?? (file.stages ? Sequential.pointsFromStages(file.stages, L) : L > 1 ? [Math.floor(L / 2)] : []);
  let x: Tensor;
  let y: Tensor;
  if (file.x && file.y && o.batch === undefined) {
    x = asType(fromJSON(file.x as never, 'float64', `${path} x`), o.dtype);
    y = asType(fromJSON(file.y as never, 'float64', `${path} y`), o.dtype);
    assertShape(x, [null, ...model.inputShape], `${path} x`);
    assertShape(y, [x.shape[0], ...model.outputShape], `${path} y`);
  } else {
    ({ x } = seededBatch(model.inputShape, { batch: o.batch ?? defaultBatch, seed: o.seed, dtype: o.dtype }));
    y = seededLabels(model, x.shape[0], loss, o);
  }
  return { title: `model file ${path}`, stages: model.split(split), x, y, loss };
}

/** Seeded labels matching the model's output: one-hot rows for categorical cross-entropy, else 0/1. */
function seededLabels(model: Sequential, B: number, loss: string, o: CaseOptions): Tensor {
  const rng = new Rng(o.seed + 2);
  const y = zeros([B, ...model.outputShape], o.dtype);
  const cols = model.outputShape[model.outputShape.length - 1];
  if (lossFrom(loss).name === 'categorical_crossentropy') {
    for (let r = 0; r < y.size / cols; r++) y.data[r * cols + rng.int(cols)] = 1;
  } else {
    for (let i = 0; i < y.size; i++) y.data[i] = rng.uniform() > 0.5 ? 1 : 0;
  }
  return y;
}

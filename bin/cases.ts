/**
 * What the `seed` and `jacobian` commands run: a model split into stages, a batch, its labels and
 * the loss, built from the options before any work starts, so that a bad model file costs nothing.
 */
import { readFileSync } from 'node:fs';
import { ConfigError, ShapeError, fmtValue } from '../lib/errors.js';
import { lossByName } from '../lib/losses.js';
import { loadModelFile } from '../lib/model-io.js';
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
  /** Lines the command prints before it runs (how the weights were obtained, when not from the file). */
  notes?: string[];
}

/** The options a model file's case depends on. */
export interface CaseOptions {
  split?: number[];
  batch?: number;
  dtype: DType;
  seed: number;
  loss?: string;
  /** Fresh seeded weights instead of the file's (`--init-weights`): a topology without weights needs it. */
  initWeights?: boolean;
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
  const model = loadModelFile(path, { dtype: o.dtype, ...(o.initWeights ? { weights: 'initialize' as const, rng: new Rng(o.seed) } : {}) });
  // loadModelFile has parsed the same text: it is a JSON object.
  const file = JSON.parse(text) as Record<string, unknown>;
  const get = (k: string): unknown => (Object.hasOwn(file, k) ? file[k] : undefined);
  const fileLoss = get('loss');
  if (fileLoss !== undefined && typeof fileLoss !== 'string') throw new ConfigError(`model file ${JSON.stringify(path)}: expected "loss" to be a loss name, received ${fmtValue(fileLoss)}`);
  const loss = o.loss ?? fileLoss ?? 'mse';
  lossByName(loss);
  const L = model.layers.length;
  const stages = get('stages');
  if (stages !== undefined && (!Array.isArray(stages) || stages.some((st) => !Array.isArray(st) || st.some((i) => !Number.isInteger(i))))) {
    throw new ConfigError(`model file ${JSON.stringify(path)}: expected "stages" to be lists of layer indices like [[0], [1, 2]], received ${fmtValue(stages)}`);
  }
  const split = o.split ?? (stages ? Sequential.pointsFromStages(stages as number[][], L) : L > 1 ? [Math.floor(L / 2)] : []);
  let x: Tensor;
  let y: Tensor;
  const fx = get('x');
  const fy = get('y');
  if (fx && fy && o.batch === undefined) {
    x = asType(readTensor(fx, `${path} x`), o.dtype);
    y = asType(readTensor(fy, `${path} y`), o.dtype);
    assertShape(x, [null, ...model.inputShape], `${path} x`);
    assertShape(y, [x.shape[0], ...model.outputShape], `${path} y`);
  } else {
    ({ x } = seededBatch(model.inputShape, { batch: o.batch ?? defaultBatch, seed: o.seed, dtype: o.dtype }));
    y = seededLabels(model, x.shape[0], loss, o);
  }
  const notes = o.initWeights ? [`weights: freshly initialized (Glorot-uniform kernels, zero biases, seed ${o.seed}; --init-weights), not read from ${path}`] : [];
  return { title: `model file ${path}`, stages: model.split(split), x, y, loss, notes };
}

/** A fixture tensor `{"shape", "data"}`, every value a finite number (a null or a string is refused, not read as 0). */
function readTensor(j: unknown, what: string): Tensor {
  const o = j as Record<string, unknown>;
  const shape = typeof j === 'object' && j !== null && Object.hasOwn(o, 'shape') ? o.shape : undefined;
  const data = typeof j === 'object' && j !== null && Object.hasOwn(o, 'data') ? o.data : undefined;
  if (!Array.isArray(shape) || shape.some((d) => !Number.isSafeInteger(d) || d < 0) || !Array.isArray(data)) {
    throw new ShapeError(`${what}: expected {"shape": [non-negative integers], "data": [numbers]}, received ${fmtValue(j)}`);
  }
  const bad = data.findIndex((v) => typeof v !== 'number' || !Number.isFinite(v));
  if (bad >= 0) throw new ShapeError(`${what}: expected finite numbers, received ${fmtValue(data[bad])} at flat index ${bad}`);
  return fromJSON({ shape, data } as never, 'float64', what);
}

/** Seeded labels matching the model's output: one-hot rows for categorical cross-entropy, else 0/1. */
function seededLabels(model: Sequential, B: number, loss: string, o: CaseOptions): Tensor {
  const rng = new Rng(o.seed + 2);
  const y = zeros([B, ...model.outputShape], o.dtype);
  const cols = model.outputShape[model.outputShape.length - 1];
  if (lossByName(loss).name === 'categorical_crossentropy') {
    for (let r = 0; r < y.size / cols; r++) y.data[r * cols + rng.int(cols)] = 1;
  } else {
    for (let i = 0; i < y.size; i++) y.data[i] = rng.uniform() > 0.5 ? 1 : 0;
  }
  return y;
}

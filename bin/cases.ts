/**
 * What the `seed` and `jacobian` commands run: a model split into stages, a batch, its labels and
 * the loss, built from the options before any work starts, so that a bad model file costs nothing.
 */
import { readFileSync, statSync } from 'node:fs';
import { getHeapStatistics } from 'node:v8';
import { ConfigError, JacobianChainError, MemoryBudgetError, ShapeError, fmtValue } from '../lib/errors.js';
import { lossFrom } from '../lib/losses.js';
import { fmtBytes } from '../lib/memory.js';
import { loadModelFile } from '../lib/model-io.js';
import { seededBatch } from '../lib/models.js';
import { Rng } from '../lib/rng.js';
import { Sequential } from '../lib/sequential.js';
import { type DType, type Tensor, asType, assertFinite, assertShape, fromJSON, zeros } from '../lib/tensor.js';
import { InputFileError } from './exit-codes.js';

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
 * @throws InputFileError (exit 3) for what is wrong with the file; ConfigError (exit 2) for what
 * the options ask of it; MemoryBudgetError (exit 4).
 */
export function modelFileCase(path: string, o: CaseOptions, defaultBatch: number): Case {
  const text = readModelText(path);
  // Everything read from the file is the file's fault (exit 3); what the options ask of it
  // (--split, --loss, --batch) is the options' (exit 2); a model too big for memory stays a
  // memory refusal (exit 4).
  const fromFile = <T>(f: () => T): T => {
    try {
      return f();
    } catch (e) {
      if (e instanceof JacobianChainError && !(e instanceof MemoryBudgetError) && !(e instanceof InputFileError)) throw new InputFileError(`--model ${JSON.stringify(path)}: ${e.message}`);
      throw e;
    }
  };
  // loadModelFile reads the TF.js weight shards beside a model.json too.
  const model = fromFile(() => loadModelFile(path, { dtype: o.dtype, ...(o.initWeights ? { weights: 'initialize' as const, rng: new Rng(o.seed) } : {}) }));
  // loadModelFile has parsed the same text: it is a JSON object.
  const file = JSON.parse(text) as Record<string, unknown>;
  const get = (k: string): unknown => (Object.hasOwn(file, k) ? file[k] : undefined);
  const fileLoss = get('loss');
  fromFile(() => {
    if (fileLoss !== undefined && typeof fileLoss !== 'string') throw new ConfigError(`expected "loss" to be a loss name, received ${fmtValue(fileLoss)}`);
    if (o.loss === undefined && fileLoss !== undefined) lossFrom(fileLoss as string);
  });
  const loss = o.loss ?? (fileLoss as string | undefined) ?? 'mse';
  lossFrom(loss);
  const L = model.layers.length;
  const fileStages = get('stages');
  const split =
    o.split ??
    (fileStages !== undefined
      ? fromFile(() => {
          if (!Array.isArray(fileStages) || fileStages.some((st) => !Array.isArray(st) || st.some((i) => !Number.isInteger(i)))) {
            throw new ConfigError(`expected "stages" to be lists of layer indices like [[0], [1, 2]], received ${fmtValue(fileStages)}`);
          }
          return Sequential.pointsFromStages(fileStages as number[][], L);
        })
      : L > 1
        ? [Math.floor(L / 2)]
        : []);
  let x: Tensor;
  let y: Tensor;
  const fx = get('x');
  const fy = get('y');
  if (fx && fy && o.batch === undefined) {
    ({ x, y } = fromFile(() => {
      const tx = asType(readTensor(fx, 'x'), o.dtype);
      const ty = asType(readTensor(fy, 'y'), o.dtype);
      assertShape(tx, [null, ...model.inputShape], 'x');
      assertShape(ty, [tx.shape[0], ...model.outputShape], 'y');
      return { x: tx, y: ty };
    }));
  } else {
    ({ x } = seededBatch(model.inputShape, { batch: o.batch ?? defaultBatch, seed: o.seed, dtype: o.dtype }));
    y = seededLabels(model, x.shape[0], loss, o);
  }
  const stages = o.split ? model.split(split) : fromFile(() => model.split(split));
  const notes = o.initWeights ? [`weights: freshly initialized (each layer's initializers, seed ${o.seed}; --init-weights), not read from ${path}`] : [];
  return { title: `model file ${path}`, stages, x, y, loss, notes };
}

/**
 * The text of a model file, or an {@link InputFileError} naming the path and why it cannot be
 * read: missing, a directory, or too large to parse in the JavaScript heap (a V8 crash otherwise).
 */
function readModelText(path: string): string {
  const fail = (why: string) => new InputFileError(`--model: cannot read ${JSON.stringify(path)} (${why}); expected a readable model file (Keras-style JSON)`);
  let size: number;
  try {
    const st = statSync(path);
    if (st.isDirectory()) throw fail('it is a directory');
    size = st.size;
  } catch (e) {
    if (e instanceof InputFileError) throw e;
    throw fail((e as NodeJS.ErrnoException).code ?? (e as Error).message);
  }
  // JSON.parse holds the text (up to 2 bytes a character) and the parsed values at once, and the
  // file is parsed twice (model, then batch): ~8 bytes of heap per byte of file, as an estimate.
  const heap = getHeapStatistics();
  const free = heap.heap_size_limit - heap.used_heap_size;
  if (size * 8 > free) {
    throw new MemoryBudgetError(`--model ${JSON.stringify(path)}: parsing its ${fmtBytes(size)} needs an estimated ${fmtBytes(size * 8)} of JavaScript heap, over the ${fmtBytes(free)} free; give node more heap (--max-old-space-size)`, size * 8, free);
  }
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    throw fail((e as NodeJS.ErrnoException).code ?? (e as Error).message);
  }
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
  if (lossFrom(loss).name === 'categorical_crossentropy') {
    for (let r = 0; r < y.size / cols; r++) y.data[r * cols + rng.int(cols)] = 1;
  } else {
    for (let i = 0; i < y.size; i++) y.data[i] = rng.uniform() > 0.5 ? 1 : 0;
  }
  return y;
}

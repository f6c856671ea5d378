/**
 * `jacobian-chain jacobian`: builds one stage's Jacobian (w.r.t. its input, or its weights) the
 * structured way, reports its shape, stored entries, bytes, colours, the engine chosen and why, and
 * the time; then chains it with the upstream gradient (the seed's helpers) and prints the largest
 * difference from the VJP gradient of the same stage.
 */
import { maxDifference } from '../../lib/allclose.js';
import { fmtShape } from '../../lib/errors.js';
import { upstreamGradientLossOut, upstreamGradientLossWeights } from '../../lib/helpers.js';
import { DenseJacobian, type Jacobian, firstCouplingLayer } from '../../lib/jacobian.js';
import { trainableParams } from '../../lib/layers/layer.js';
import { LOSSES, lossFrom } from '../../lib/losses.js';
import { fmtBytes, getMemoryBudget } from '../../lib/memory.js';
import { catsVsDogsCnn, seededBatch, splitAfterLastPooling } from '../../lib/models.js';
import type { SequentialForwardOptions } from '../../lib/sequential.js';
import { type StructuredJacobianOptions, structuredJacobianWrtInput, structuredJacobianWrtWeights } from '../../lib/sparse/auto.js';
import type { JacobianPlan } from '../../lib/sparse/csr.js';
import { type StreamedContraction, streamedInputGradient, streamedWeightGradients } from '../../lib/streamed.js';
import { type DType, type Tensor, sizeOf } from '../../lib/tensor.js';
import { UsageError, choice, dtype, nonNegativeInt, parseCommand, parseOptions, positiveInt, positiveNumber, refuse, splitPoints } from '../args.js';
import { type Case, modelFileCase } from '../cases.js';
import { EXIT } from '../exit-codes.js';

const HELP = `usage: jacobian-chain jacobian [options]

Builds one stage's Jacobian w.r.t. its input (or its weights), sparse by default, by the engine
--mode picks (auto: the cheapest estimate), and reports its shape, stored entries (nnz), bytes,
colours, the time, and the largest difference between the gradient obtained by chaining it with
the upstream gradient dLoss/dOut (the seed's upstream_gradient_loss_out / _weights) and the VJP
gradient of the same stage.

options:
  --model <file>       a model file (Keras-style JSON; a golden fixture works, with its x, loss and
                       stages; a TF.js model.json reads its shards from its folder); default:
                       the seed's cats-vs-dogs CNN
  --init-weights       start the --model file from fresh seeded weights instead of its own; needed
                       for a topology without weights
  --split <i,j,...>    layer indices where a new stage starts (default: after the last pooling
                       layer for the CNN, the file's "stages")
  --stage <s>          which stage (default 0, the CNN's conv stage model_0)
  --side <n>           CNN image side, >= 22 (default 32)
  --channels <n>       CNN image channels (default 3)
  --batch <n>          batch size of a seeded batch (default 1; a fixture's own x when not given)
  --mode <m>           auto (default), forward or reverse
  --format <f>         sparse (default), dense, or factored (a Conv2D or Dense weight's Jacobian as
                       A · (patches ⊗ I): the stage's sparse Jacobian w.r.t. the layer's linear
                       output times the layer's own; w.r.t. the input and other weights, sparse)
  --engine <e>         force an engine: propagate, compressed or dense
  --pattern <p>        what compressed engines colour: structural (default) or values
  --wrt <w>            input (default), weights, or all
  --streamed           stream the Jacobian instead of building it: blocks of columns by dual
                       numbers, each contracted with dLoss/dOut at once and dropped (the explicit
                       way in the memory of one block); reports the block and the time
  --dtype <type>       float64 (default) or float32
  --seed <n>           seed of the weights and the batch (default 0)
  --loss <name>        loss for a model file that names none: ${LOSSES.join(', ')}
  --training           Dropout in training mode (one seeded mask; default inference)
  --memory-budget <g>  memory budget in GiB (default ${(getMemoryBudget() / 1024 ** 3).toFixed(0)})
  --tol <x>            pass when max |chained - vjp| <= tol * max |vjp| (default 1e-10; 1e-4 in float32)
  --json               also print one JSON line with the measurements
  -h, --help           this text

example:
  jacobian-chain jacobian --side 224 --batch 1           # the CNN's conv stage at 224x224x3
`;

/** Parsed options. */
interface Options {
  model?: string;
  initWeights: boolean;
  split?: number[];
  stage: number;
  side: number;
  channels: number;
  batch?: number;
  mode: 'auto' | 'forward' | 'reverse';
  format: 'sparse' | 'dense' | 'factored';
  engine?: 'propagate' | 'compressed' | 'dense';
  pattern?: 'structural' | 'values';
  wrt: 'input' | 'weights' | 'all';
  dtype: DType;
  seed: number;
  loss?: string;
  training: boolean;
  memoryBudget?: number;
  tol: number;
  json: boolean;
  streamed: boolean;
}

const OPTIONS = {
  model: 'string',
  'init-weights': 'boolean',
  split: 'string',
  stage: 'string',
  side: 'string',
  channels: 'string',
  batch: 'string',
  mode: 'string',
  format: 'string',
  engine: 'string',
  pattern: 'string',
  wrt: 'string',
  dtype: 'string',
  seed: 'string',
  loss: 'string',
  training: 'boolean',
  'memory-budget': 'string',
  tol: 'string',
  json: 'boolean',
  streamed: 'boolean',
} as const;

function parse(argv: string[]): Options | 'help' {
  const v = parseOptions(argv, OPTIONS);
  if (v === 'help') return v;
  if (v.loss !== undefined) lossFrom(v.loss);
  const dt = dtype(v.dtype, '--dtype') ?? 'float64';
  const gib = positiveNumber(v['memory-budget'], '--memory-budget');
  if (v['init-weights'] && v.model === undefined) throw new UsageError('expected --init-weights together with --model <file> (the built-in CNN is always seeded), received --init-weights alone');
  return {
    model: v.model,
    initWeights: v['init-weights'] === true,
    split: splitPoints(v.split, '--split'),
    stage: nonNegativeInt(v.stage, '--stage') ?? 0,
    side: positiveInt(v.side, '--side') ?? 32,
    channels: positiveInt(v.channels, '--channels') ?? 3,
    batch: positiveInt(v.batch, '--batch'),
    mode: choice(['auto', 'forward', 'reverse'])(v.mode, '--mode') ?? 'auto',
    format: choice(['sparse', 'dense', 'factored'])(v.format, '--format') ?? 'sparse',
    engine: choice(['propagate', 'compressed', 'dense'])(v.engine, '--engine'),
    pattern: choice(['structural', 'values'])(v.pattern, '--pattern'),
    wrt: choice(['input', 'weights', 'all'])(v.wrt, '--wrt') ?? 'input',
    dtype: dt,
    seed: nonNegativeInt(v.seed, '--seed') ?? 0,
    loss: v.loss,
    training: v.training === true,
    memoryBudget: gib === undefined ? undefined : gib * 1024 ** 3,
    tol: positiveNumber(v.tol, '--tol') ?? (dt === 'float32' ? 1e-4 : 1e-10),
    json: v.json === true,
    streamed: streamedFlag(v),
  };
}

/** `--streamed` builds no Jacobian, so the options that choose how one is built or stored do not apply. */
function streamedFlag(v: { streamed?: true; mode?: string; format?: string; engine?: string; pattern?: string }): boolean {
  if (v.streamed !== true) return false;
  const clash = (['mode', 'format', 'engine', 'pattern'] as const).filter((k) => v[k] !== undefined);
  if (clash.length > 0) throw new UsageError(`expected --streamed without ${clash.map((k) => `--${k}`).join(', ')} (it streams dense blocks by dual numbers and stores no Jacobian), received ${clash.map((k) => `--${k} ${v[k]}`).join(', ')}`);
  return true;
}

function cnnCase(o: Options): Case {
  const model = catsVsDogsCnn({ side: o.side, channels: o.channels, seed: o.seed, dtype: o.dtype });
  const { x, y } = seededBatch(model.inputShape, { batch: o.batch ?? 1, seed: o.seed + 1, dtype: o.dtype });
  return { title: `the cats-vs-dogs CNN on ${o.side}×${o.side}×${o.channels}`, stages: model.split(o.split ?? splitAfterLastPooling(model)), x, y, loss: 'binary_crossentropy' };
}


/** `12.3 s` or `45 ms`. */
function fmtMs(ms: number): string {
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(1)} ms`;
}

/** One line per candidate engine of a plan. */
function planLines(plan: JacobianPlan): string[] {
  return plan.candidates.map((c) => {
    const chosen = c.mode === plan.mode && c.engine === plan.engine ? '*' : ' ';
    const what = `${c.mode}/${c.engine}`.padEnd(20);
    if (c.unavailable) return `   ${chosen} ${what} unavailable: ${c.unavailable}`;
    const colours = c.engine === 'propagate' ? 'no colours'.padEnd(14) : `${c.colours} colours`.padEnd(14);
    return `   ${chosen} ${what} ${colours} ~${c.macs.toExponential(2)} multiply-adds, working set ${fmtBytes(c.workBytes)}`;
  });
}

interface Measured {
  wrt: string;
  shape: number[];
  format: string;
  nnz: number | null;
  bytes: number;
  denseBytes: number;
  mode?: string;
  engine?: string;
  colours?: number;
  ms: number;
  maxAbsDiff: number;
  relDiff: number;
  pass: boolean;
}

function report(label: string, J: Jacobian, ms: number, chained: Tensor, ref: Tensor, tol: number, dtype: DType): Measured {
  const plan = (J as { plan?: JacobianPlan | null }).plan ?? null;
  const nnz = (J as unknown as { nnz?: unknown }).nnz;
  const denseBytes = sizeOf(J.shape) * (dtype === 'float32' ? 4 : 8);
  const d = maxDifference(chained, ref);
  const pass = d.maxAbs <= tol * d.maxRef || d.maxAbs === 0;
  console.log(`\nJacobian ${label}: shape ${fmtShape(J.shape)}, format ${J.format}`);
  if (plan) {
    console.log(`  chosen: ${plan.mode}/${plan.engine}${plan.engine === 'propagate' ? '' : `, ${plan.colours} colours in ${plan.passes} passes of up to ${plan.blockWidth}`}`);
    console.log(`  why: ${plan.reason}`);
    console.log(planLines(plan).join('\n'));
  }
  if (typeof nnz === 'number') console.log(`  nnz ${nnz} (density ${(nnz / sizeOf(J.shape)).toExponential(2)})`);
  const shared = (J as { sharedBytes?: unknown }).sharedBytes;
  console.log(`  bytes ${fmtBytes(J.bytes)}${typeof shared === 'number' && shared > 0 ? ` (+ ${fmtBytes(shared)} shared with the layer's other parameter, counted there)` : ''} (dense: ${fmtBytes(denseBytes)})`);
  console.log(`  time ${fmtMs(ms)}`);
  console.log(`  gradient chained through it vs the VJP gradient: max |difference| ${d.maxAbs.toExponential(2)}, relative to max |gradient| ${d.rel.toExponential(2)} (tol ${tol}): ${pass ? 'equal' : 'DIFFERENT'}`);
  return { wrt: label, shape: J.shape.slice(), format: J.format, nnz: typeof nnz === 'number' ? nnz : null, bytes: J.bytes, denseBytes, mode: plan?.mode, engine: plan?.engine, colours: plan?.colours, ms, maxAbsDiff: d.maxAbs, relDiff: d.rel, pass };
}

function reportStreamed(label: string, c: StreamedContraction, ms: number, ref: Tensor, tol: number, dtype: DType): Measured {
  const denseBytes = sizeOf(c.shape) * (dtype === 'float32' ? 4 : 8);
  const d = maxDifference(c.gradient, ref);
  const pass = d.maxAbs <= tol * d.maxRef || d.maxAbs === 0;
  console.log(`\nJacobian ${label}: shape ${fmtShape(c.shape)}, streamed in blocks of ${c.tangents} columns, never stored`);
  console.log(`  largest block held ${fmtBytes(c.blockBytes)} (the whole Jacobian, dense: ${fmtBytes(denseBytes)})`);
  console.log(`  time ${fmtMs(ms)}${label.startsWith('w.r.t. input') ? '' : ' (the weights\' total, shared evenly)'}`);
  console.log(`  gradient contracted block by block vs the VJP gradient: max |difference| ${d.maxAbs.toExponential(2)}, relative to max |gradient| ${d.rel.toExponential(2)} (tol ${tol}): ${pass ? 'equal' : 'DIFFERENT'}`);
  return { wrt: label, shape: c.shape.slice(), format: 'streamed', nnz: null, bytes: c.blockBytes, denseBytes, ms, maxAbsDiff: d.maxAbs, relDiff: d.rel, pass };
}

/** Entry point: returns the exit code (bin/exit-codes.ts: 0 equal, 1 a gradient differs, 2 bad options, 3 bad model file, 4 over the memory budget). */
export async function run(argv: string[]): Promise<number> {
  // The model is built with the options: a model file or a stage that does not fit is refused like a bad option.
  const parsed = parseCommand('jacobian', HELP, () => {
    const o = parse(argv);
    if (o === 'help') return o;
    const c = o.model ? modelFileCase(o.model, o, 1) : cnnCase(o);
    if (o.stage >= c.stages.length) throw new UsageError(`--stage: expected a stage index in 0..${c.stages.length - 1}, received ${o.stage}`);
    return { o, c };
  });
  if (typeof parsed === 'number') return parsed;
  const { o, c } = parsed;
  const { stages, x, y, loss } = c;
  const s = o.stage;
  const stage = stages[s];
  const fo: SequentialForwardOptions = { training: o.training, seed: o.seed };
  console.log(`${c.title}: stage ${s} of ${stages.length} (${stage.name}, layers ${stage.layerOffset}..${stage.layerOffset + stage.layers.length - 1}), batch ${x.shape[0]}, ${o.dtype}, loss ${loss}`);
  for (const note of c.notes ?? []) console.log(note);
  console.log(stage.summary());

  // The upstream gradient dLoss/dOut at the stage's output: the loss's gradient pulled back through the later stages (the VJP way).
  let h = x;
  const passes: { saved: unknown; input: Tensor }[] = [];
  for (const st of stages) {
    const fwd = st.forward(h, fo);
    passes.push({ saved: fwd.saved, input: h });
    h = fwd.y;
  }
  let g = lossFrom(loss).gradient(y, h);
  for (let k = stages.length - 1; k > s; k--) g = stages[k].vjp(passes[k].saved as never, g).dx;
  const stageInput = passes[s].input;
  const t0 = performance.now();
  const ref = stage.vjp(passes[s].saved as never, g);
  const vjpMs = performance.now() - t0;
  console.log(`\nVJP of the stage (reference): ${fmtMs(vjpMs)}; upstream gradient dLoss/dOut ${fmtShape(g.shape)}`);

  const jo: StructuredJacobianOptions = { mode: o.mode, format: o.format, engine: o.engine, pattern: o.pattern, memoryBudget: o.memoryBudget, training: o.training, seed: o.seed } as StructuredJacobianOptions;
  const results: Measured[] = [];
  try {
    if (o.streamed) {
      const so = { training: o.training, seed: o.seed };
      if (o.wrt === 'input' || o.wrt === 'all') {
        const t = performance.now();
        const c = streamedInputGradient(stage, stageInput, g, { ...so, samplesCoupled: firstCouplingLayer(stage, so) !== null });
        results.push(reportStreamed('w.r.t. input', c, performance.now() - t, ref.dx, o.tol, o.dtype));
      }
      if (o.wrt === 'weights' || o.wrt === 'all') {
        const t = performance.now();
        const cs = streamedWeightGradients(stage, stageInput, g, so);
        const ms = performance.now() - t;
        const names = trainableParams(stage).map((p) => {
          const { layer, param } = stage.paramOwners[stage.params.indexOf(p)];
          return `${stage.layers[layer].name}.${stage.layers[layer].params[param].name}`;
        });
        const grads = trainableParams(stage).map((p) => ref.dParams[stage.params.indexOf(p)]);
        cs.forEach((c, k) => results.push(reportStreamed(`w.r.t. ${names[k]}`, c, ms / cs.length, grads[k], o.tol, o.dtype)));
        console.log(`\n(all ${cs.length} weight Jacobians streamed: ${fmtMs(ms)})`);
      }
    }
    if (!o.streamed && (o.wrt === 'input' || o.wrt === 'all')) {
      const t = performance.now();
      const J = structuredJacobianWrtInput(stage, stageInput, jo);
      const ms = performance.now() - t;
      const chained = upstreamGradientLossOut(J, g);
      results.push(report('w.r.t. input', J, ms, chained, ref.dx, o.tol, o.dtype));
    }
    if (!o.streamed && (o.wrt === 'weights' || o.wrt === 'all')) {
      const t = performance.now();
      const Js = structuredJacobianWrtWeights(stage, stageInput, jo);
      const ms = performance.now() - t;
      Js.forEach((J, k) => {
        const { layer, param } = stage.paramOwners[k];
        const name = `${stage.layers[layer].name}.${stage.layers[layer].params[param].name}`;
        const plan = (J as { plan?: JacobianPlan | null }).plan;
        const share = plan?.ms ?? (J instanceof DenseJacobian ? ms / Js.length : ms);
        results.push(report(`w.r.t. ${name}`, J, share, upstreamGradientLossWeights(J, g), ref.dParams[k], o.tol, o.dtype));
      });
      console.log(`\n(all ${Js.length} weight Jacobians: ${fmtMs(ms)})`);
    }
  } catch (e) {
    return refuse('jacobian', e);
  }
  const maxRss = process.resourceUsage().maxRSS * 1024;
  console.log(`\npeak resident set size of this process: ${fmtBytes(maxRss)}`);
  const ok = results.every((r) => r.pass);
  if (o.json) console.log(JSON.stringify({ title: c.title, stage: s, batch: x.shape[0], dtype: o.dtype, vjpMs, maxRssBytes: maxRss, results }));
  console.log(ok ? 'all gradients equal' : 'SOME GRADIENTS DIFFER');
  return ok ? EXIT.ok : EXIT.checksFailed;
}

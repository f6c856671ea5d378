/**
 * `jacobian-chain seed`: the seed's reference program. For the seed's reference model (and then
 * the cats-vs-dogs CNN) it computes dLoss/dWeights three ways (one tape over the whole model, the
 * explicit-Jacobian chain, the VJP chain), prints one `dLoss_dWeights2 valid: true` line per
 * parameter for each chain against the single tape, as the original did, and a table per stage of
 * the Jacobians the explicit way materialized against the bytes the VJP way held.
 */
import { allcloseReport, describeReport } from '../../lib/allclose.js';
import { type ChainOptions, type ChainResult, jacobianChain, referenceGradients, vjpChain } from '../../lib/chain.js';
import { fmtShape } from '../../lib/errors.js';
import { leavesOf } from '../../lib/layers/layer.js';
import { LOSSES, lossFrom } from '../../lib/losses.js';
import { fmtBytes, getMemoryBudget, guardBytes } from '../../lib/memory.js';
import { estimateMemory, guardExplicitWay } from '../../lib/memory-report.js';
import { SEED_REFERENCE_SPLIT, catsVsDogsCnn, seedGradientLabels, seedReferenceModel, seededBatch, splitAfterLastPooling } from '../../lib/models.js';
import { Sequential } from '../../lib/sequential.js';
import type { DType } from '../../lib/tensor.js';
import { UsageError, dtype, nonNegativeInt, nonNegativeNumber, parseCommand, parseOptions, positiveInt, positiveNumber, splitPoints } from '../args.js';
import { type Case, modelFileCase } from '../cases.js';
import { EXIT } from '../exit-codes.js';

const HELP = `usage: jacobian-chain seed [options]

The seed's reference check: dLoss/dWeights by the explicit-Jacobian chain (stage Jacobians
contracted with the seed's helpers) and by the VJP chain (output gradients fed stage to stage),
each compared with one tape over the whole model; then, per stage, the Jacobians the explicit way
materialized against the bytes the VJP way held. Runs the seed's reference model, then the
cats-vs-dogs CNN split after its last pooling layer (or only the model of --model).

options:
  --model <file>       a model file (Keras-style JSON: modelTopology and weights; a golden fixture
                       works, and its x, y, loss and stages are used; a TF.js model.json reads
                       its weight shards from the same folder)
  --init-weights       start the --model file from fresh seeded weights (Glorot-uniform kernels,
                       zero biases) instead of its own; needed for a topology without weights
  --split <i,j,...>    layer indices where a new stage starts (default: 1,2 for the reference model,
                       after the last pooling layer for the CNN, the file's "stages")
  --batch <n>          batch size of a seeded batch (default: 3 for the reference model, 2 for the CNN,
                       the file's x)
  --side <n>           CNN image side, >= 22 (default 32)
  --channels <n>       CNN image channels (default 3)
  --dtype <type>       float64 (default) or float32
  --seed <n>           seed of the weights, the batch and the Dropout masks (default 0)
  --loss <name>        loss for a model file that names none: ${LOSSES.join(', ')} (default mse)
  --inference          run Dropout in inference mode (default: training, one seeded mask that all
                       three ways share)
  --rtol <x>           relative tolerance of "valid" (default 1e-5, NumPy's allclose as in the
                       seed; 1e-4 in float32, whose rounding the seed saw as errors near 1e-7)
  --atol <x>           absolute tolerance of "valid" (default 1e-8; 1e-6 in float32)
  --streamed           stream the explicit way: each Jacobian block of columns is built by dual
                       numbers, contracted with the upstream gradient at once and dropped, so it
                       holds one block (plus residuals and gradients) instead of every Jacobian;
                       as slow as the dense forward builder, one tangent per column
  --memory-budget <g>  memory budget in GiB (default ${(getMemoryBudget() / 1024 ** 3).toFixed(0)}): the explicit-Jacobian chain's
                       Jacobians (estimated from the shapes) and the VJP way's buffers must fit,
                       checked before anything runs
  -h, --help           this text
`;

/** Parsed options. */
interface Options {
  model?: string;
  initWeights: boolean;
  split?: number[];
  batch?: number;
  side: number;
  channels: number;
  dtype: DType;
  seed: number;
  loss?: string;
  training: boolean;
  rtol: number;
  atol: number;
  memoryBudget: number;
  streamed: boolean;
}

const OPTIONS = { model: 'string', 'init-weights': 'boolean', split: 'string', batch: 'string', side: 'string', channels: 'string', dtype: 'string', seed: 'string', loss: 'string', inference: 'boolean', rtol: 'string', atol: 'string', 'memory-budget': 'string', streamed: 'boolean' } as const;

function parse(argv: string[]): Options | 'help' {
  const v = parseOptions(argv, OPTIONS);
  if (v === 'help') return v;
  if (v.loss !== undefined) lossFrom(v.loss);
  const dt = dtype(v.dtype, '--dtype') ?? 'float64';
  if (v['init-weights'] && v.model === undefined) throw new UsageError('expected --init-weights together with --model <file> (the built-in models are always seeded), received --init-weights alone');
  return {
    model: v.model,
    initWeights: v['init-weights'] === true,
    split: splitPoints(v.split, '--split'),
    batch: positiveInt(v.batch, '--batch'),
    side: positiveInt(v.side, '--side') ?? 32,
    channels: positiveInt(v.channels, '--channels') ?? 3,
    dtype: dt,
    seed: nonNegativeInt(v.seed, '--seed') ?? 0,
    loss: v.loss,
    training: !v.inference,
    // float32 carries ~7 significant digits: NumPy's float64 defaults would flag its rounding.
    rtol: nonNegativeNumber(v.rtol, '--rtol') ?? (dt === 'float32' ? 1e-4 : 1e-5),
    atol: nonNegativeNumber(v.atol, '--atol') ?? (dt === 'float32' ? 1e-6 : 1e-8),
    memoryBudget: (positiveNumber(v['memory-budget'], '--memory-budget') ?? getMemoryBudget() / 1024 ** 3) * 1024 ** 3,
    streamed: v.streamed === true,
  };
}

function seedCase(o: Options): Case {
  const model = seedReferenceModel({ seed: o.seed, dtype: o.dtype });
  const { x, y } = seededBatch(model.inputShape, { batch: o.batch ?? 3, seed: o.seed, dtype: o.dtype });
  return { title: "the seed's reference model", stages: model.split(o.split ?? SEED_REFERENCE_SPLIT), x, y, loss: 'mse' };
}

function cnnCase(o: Options): Case {
  const model = catsVsDogsCnn({ side: o.side, channels: o.channels, seed: o.seed, dtype: o.dtype });
  const { x, y } = seededBatch(model.inputShape, { batch: o.batch ?? 2, seed: o.seed + 1, dtype: o.dtype });
  return { title: "the seed's cats-vs-dogs CNN", stages: model.split(o.split ?? splitAfterLastPooling(model)), x, y, loss: 'binary_crossentropy' };
}

/** Prints the seed's `valid` lines of one chain against the reference; returns whether all hold. */
function printValid(title: string, res: Timed, ref: ChainResult, stages: Sequential[], o: Options): boolean {
  const tol = { rtol: o.rtol, atol: o.atol };
  console.log(`\n${title} vs one tape over the whole model (${res.ms.toFixed(0)} ms; valid = allclose with rtol ${fmtTol(tol.rtol)}, atol ${fmtTol(tol.atol)}):`);
  let ok = true;
  let worst = 0;
  for (const { label, layer, param } of seedGradientLabels(stages)) {
    const r = allcloseReport(res.dLoss_dWeights[layer][param], ref.dLoss_dWeights[layer][param], tol);
    worst = Math.max(worst, r.maxRelError);
    ok &&= r.pass;
    console.log(`${label} valid: ${r.pass}${r.pass ? '' : ` (${describeReport(r, tol)})`}`);
  }
  for (let s = stages.length - 2; s >= 0; s--) {
    const r = allcloseReport(res.dLoss_dOut[s], ref.dLoss_dOut[s], tol);
    worst = Math.max(worst, r.maxRelError);
    ok &&= r.pass;
    console.log(`dLoss_dOut${s} valid: ${r.pass}${r.pass ? '' : ` (${describeReport(r, tol)})`}`);
  }
  const lossOk = Math.abs(res.loss - ref.loss) <= tol.atol + tol.rtol * Math.abs(ref.loss);
  ok &&= lossOk;
  console.log(`loss valid: ${lossOk}`);
  console.log(`(largest relative difference from the single tape: ${worst.toExponential(2)})`);
  return ok;
}

/** The memory table: per stage, each Jacobian the explicit way materialized, against what the VJP way held. */
function printMemory(jac: ChainResult, vjp: ChainResult, stages: Sequential[], B: number, streamed: boolean): void {
  console.log(`\nmemory per stage: Jacobians the explicit way ${streamed ? 'streamed (bytes: the largest block held)' : 'materialized'} vs what the VJP way held`);
  const w0 = 34;
  const w1 = 36;
  stages.forEach((st, s) => {
    const mj = jac.memory[s];
    const mv = vjp.memory[s];
    console.log(`\n${st.name} (layers ${st.layerOffset}..${st.layerOffset + st.layers.length - 1}): input ${fmtShape([B, ...st.inputShape])} -> output ${fmtShape([B, ...st.outputShape])}`);
    console.log(`  ${'explicit-Jacobian way'.padEnd(w0)}${'shape'.padEnd(w1)}bytes`);
    for (const J of mj.jacobians) console.log(`    ${J.label.padEnd(w0 - 2)}${fmtShape(J.shape).padEnd(w1)}${fmtBytes(J.bytes)}`);
    if (s === 0) console.log(`    ${'(dOut/dIn: not needed at stage 0)'.padEnd(w0 - 2)}`);
    // Streamed, one block at a time is alive: the stage's peak is its largest block, not a sum.
    const jBytes = streamed ? Math.max(0, ...mj.jacobians.map((J) => J.bytes)) : mj.jacobians.reduce((n, J) => n + J.bytes, 0);
    console.log(`    ${(streamed ? 'largest block held' : 'Jacobians in all').padEnd(w0 - 2)}${''.padEnd(w1)}${fmtBytes(jBytes)}`);
    console.log(`  ${'VJP way'.padEnd(w0)}`);
    console.log(`    ${'cotangents (dy in, dx out)'.padEnd(w0 - 2)}${`${fmtShape([B, ...st.outputShape])}, ${fmtShape([B, ...st.inputShape])}`.padEnd(w1)}${fmtBytes(mv.cotangentBytes)}`);
    console.log(`  ${'both ways'.padEnd(w0)}`);
    console.log(`    ${'residuals saved by the tape'.padEnd(w0 - 2)}${''.padEnd(w1)}${fmtBytes(mv.residualBytes)}`);
    console.log(`    ${'weight gradients'.padEnd(w0 - 2)}${''.padEnd(w1)}${fmtBytes(mv.gradientBytes)}`);
    const ratio = mv.cotangentBytes > 0 ? jBytes / mv.cotangentBytes : 0;
    console.log(`  ${streamed ? 'largest block' : 'Jacobians'} / cotangents: ${ratio >= 10 ? ratio.toFixed(0) : ratio.toFixed(1)}x`);
  });
}

/** `1e-5`, not `0.00001`. */
function fmtTol(v: number): string {
  return v !== 0 && v < 1e-3 ? v.toExponential() : String(v);
}

type Timed = ChainResult & { ms: number };

async function timed(f: () => ChainResult | Promise<ChainResult>): Promise<Timed> {
  const t0 = performance.now();
  const r = await f();
  return { ...r, ms: performance.now() - t0 };
}

async function runCase(c: Case, o: Options): Promise<boolean> {
  const opts: ChainOptions = { training: o.training, seed: o.seed, jacobian: { memoryBudget: o.memoryBudget }, streamed: o.streamed };
  const hasDropout = c.stages.some((s) => leavesOf(s).some((l) => l.stochastic));
  const stageList = c.stages.map((s) => `[${s.layers.map((_, i) => s.layerOffset + i).join(', ')}]`).join(' ');
  console.log(`\n=== ${c.title}: input ${fmtShape(c.x.shape)}, stages ${stageList}, loss ${c.loss}, ${o.dtype}${hasDropout ? `, Dropout in ${o.training ? 'training (one seeded mask, shared by all three ways)' : 'inference'}` : ''} ===`);
  for (const note of c.notes ?? []) console.log(note);
  console.log(c.stages.map((s) => s.summary()).join('\n'));
  const ref = await timed(() => referenceGradients(c.stages, c.x, c.y, c.loss, opts));
  console.log(`\nloss ${ref.loss} (one tape over the whole model, ${ref.ms.toFixed(0)} ms)`);
  const jac = await timed(() => jacobianChain(c.stages, c.x, c.y, c.loss, opts));
  const okJ = printValid(o.streamed ? 'explicit-Jacobian chain, streamed' : 'explicit-Jacobian chain', jac, ref, c.stages, o);
  const vjp = await timed(() => vjpChain(c.stages, c.x, c.y, c.loss, opts));
  const okV = printValid('VJP chain', vjp, ref, c.stages, o);
  printMemory(jac, vjp, c.stages, c.x.shape[0], o.streamed);
  return okJ && okV;
}

/**
 * Refuses a case before anything of it runs when the explicit-Jacobian chain's Jacobians (the
 * estimate jacobianChain itself checks, but only after the single tape has run) or the VJP way's
 * residuals and cotangents would exceed the budget: a refused `--side 1000` costs no forward pass.
 */
function guardCase(c: Case, o: Options): void {
  const report = estimateMemory([...c.stages], c.x.shape[0], { dtype: o.dtype, training: o.training });
  guardBytes(`${c.title}: the single tape and the VJP way at batch ${c.x.shape[0]} (residuals and cotangents)`, report.vjp.bytes, o.memoryBudget, 'use a smaller batch or image side');
  guardExplicitWay(report, o.memoryBudget, { streamed: o.streamed });
}

/** Entry point: returns the exit code (bin/exit-codes.ts: 0 all valid, 1 some invalid, 2 bad options, 3 bad model file, 4 over the memory budget). */
export async function run(argv: string[]): Promise<number> {
  // Every case is built (models, splits, batches) and checked against the memory budget before
  // any runs: a bad option, a bad file or a refused size costs no work.
  const parsed = parseCommand('seed', HELP, () => {
    const o = parse(argv);
    if (o === 'help') return o;
    const makers: (() => Case)[] = o.model ? [() => modelFileCase(o.model!, o, 3)] : [() => seedCase(o), () => cnnCase(o)];
    const cases = makers.map((make) => make());
    for (const c of cases) guardCase(c, o);
    return { o, cases };
  });
  if (typeof parsed === 'number') return parsed;
  const { o, cases } = parsed;
  let ok = true;
  for (const c of cases) ok = (await runCase(c, o)) && ok;
  console.log(`\n${ok ? 'all valid' : 'SOME CHECKS FAILED'}`);
  return ok ? EXIT.ok : EXIT.checksFailed;
}

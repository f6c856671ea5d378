/**
 * The bench's sparse rows: structured Jacobians (lib/sparse) against the dense forward-mode
 * builder, on the cats-vs-dogs conv stage (model_0) and single layers. Run alone with
 * `npm run bench:sparse` (add `--quick` for CI), or from the suite's runner:
 * `const { rows, targets } = await runSparseCases({ quick }); results.md += sparseMarkdown(rows, targets)`.
 *
 * In-process rows are timed by benchmark.js (mean of its samples, after its warm-up). Rows marked
 * `child` run `jacobian-chain jacobian` in a process of their own, so that its peak resident set
 * size is its own: a single cold run, timed and measured by that process (the dense Jacobian
 * there would take 48.5 GiB at B = 1 and is never attempted).
 *
 * Targets (issue 7, float64): model_0 at 32×32×3, B=1: the sparse input Jacobian at least 10×
 * faster than the dense forward-mode one and faster than 339 ms; at 224×224×3, B=1: peak RSS
 * under 2 GiB, under 60 s, gradient chained through it equal to the VJP gradient within 1e-10.
 * @module
 */
import Benchmark from 'benchmark';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { maxDifference } from '../lib/allclose.js';
import { upstreamGradientLossOut } from '../lib/helpers.js';
import { jacobianWrtInput } from '../lib/jacobian.js';
import { Conv2D } from '../lib/layers/conv2d.js';
import { MaxPooling2D } from '../lib/layers/max-pooling2d.js';
import { fmtBytes } from '../lib/memory.js';
import { catsVsDogsCnn, seededBatch, splitAfterLastPooling } from '../lib/models.js';
import { Rng } from '../lib/rng.js';
import { Sequential } from '../lib/sequential.js';
import { type StructuredJacobianOptions, sparseJacobianWrtInput } from '../lib/sparse/auto.js';
import { type Tensor, randomNormal, sizeOf } from '../lib/tensor.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** How a row builds its Jacobian. */
export type SparseEngine = 'dense forward (dual numbers)' | 'sparse auto' | 'sparse forward/compressed' | 'sparse reverse/compressed';

/** One case: a differentiable, a batch, the engines timed on it. */
export interface SparseBenchCase {
  id: string;
  title: string;
  /** Builds the stage (or one-layer Sequential) and its input. */
  build?: () => { f: Sequential; x: Tensor };
  engines: SparseEngine[];
  /** Run `jacobian-chain jacobian` with these arguments in a child process instead (one cold run, peak RSS measured). */
  child?: string[];
}

/** One measured row. */
export interface SparseRow {
  id: string;
  title: string;
  engine: string;
  shape: number[];
  nnz: number | null;
  bytes: number;
  denseBytes: number;
  colours: number | null;
  /** Mean milliseconds per build (benchmark.js), or the single cold run of a child. */
  ms: number;
  /** Relative margin of error of the mean, percent (benchmark.js); null for a child run. */
  rme: number | null;
  samples: number;
  /** max |chained − VJP| / max |VJP| of dLoss/dIn, with a seeded upstream gradient. */
  gradRelDiff: number;
  /** Peak resident set size of the child process (child rows only). */
  maxRssBytes: number | null;
}

/** A target of the issue, checked. */
export interface SparseTarget {
  name: string;
  pass: boolean;
  detail: string;
}

function cnnStage(side: number, batch = 1): { f: Sequential; x: Tensor } {
  const cnn = catsVsDogsCnn({ side });
  const [model_0] = cnn.split(splitAfterLastPooling(cnn));
  return { f: model_0, x: seededBatch([side, side, 3], { batch, seed: 0 }).x };
}

function layerStage(make: () => Conv2D | MaxPooling2D, shape: number[], batch: number): { f: Sequential; x: Tensor } {
  const f = new Sequential([make()], { inputShape: shape, rng: new Rng(1) });
  return { f, x: randomNormal([batch, ...shape], new Rng(2)) };
}

/** The sparse rows: `quick` keeps the cases that finish in seconds. */
export function sparseCases(quick = false): SparseBenchCase[] {
  const all: SparseEngine[] = ['dense forward (dual numbers)', 'sparse auto', 'sparse forward/compressed', 'sparse reverse/compressed'];
  const cases: SparseBenchCase[] = [
    { id: 'sparse-conv2d-24-b1', title: 'Conv2D 32·3×3 on 24×24×3, B=1', build: () => layerStage(() => new Conv2D({ filters: 32, kernel_size: 3, activation: 'relu' }), [24, 24, 3], 1), engines: all },
    { id: 'sparse-maxpool-24-b1', title: 'MaxPooling2D 2×2 on 24×24×32, B=1', build: () => layerStage(() => new MaxPooling2D({ pool_size: 2 }), [24, 24, 32], 1), engines: ['dense forward (dual numbers)', 'sparse auto', 'sparse forward/compressed'] },
    { id: 'sparse-model0-32-b1', title: 'cats-vs-dogs model_0 on 32×32×3, B=1', build: () => cnnStage(32), engines: quick ? ['dense forward (dual numbers)', 'sparse auto'] : all },
  ];
  if (!quick) {
    cases.push({ id: 'sparse-model0-64-b1', title: 'cats-vs-dogs model_0 on 64×64×3, B=1', build: () => cnnStage(64), engines: ['dense forward (dual numbers)', 'sparse auto'] });
    cases.push({ id: 'sparse-model0-224-b1', title: 'cats-vs-dogs model_0 on 224×224×3, B=1 (child process)', engines: ['sparse auto'], child: ['--side', '224', '--batch', '1', '--json'] });
  }
  return cases;
}

function optionsOf(e: SparseEngine): StructuredJacobianOptions | null {
  switch (e) {
    case 'dense forward (dual numbers)':
      return null;
    case 'sparse auto':
      return {};
    case 'sparse forward/compressed':
      return { mode: 'forward', engine: 'compressed' };
    case 'sparse reverse/compressed':
      return { mode: 'reverse', engine: 'compressed' };
  }
}


function runInProcess(c: SparseBenchCase, quick: boolean): SparseRow[] {
  const { f, x } = c.build!();
  const fwd = f.forward(x);
  const g = randomNormal(fwd.y.shape, new Rng(5));
  const ref = f.vjp(fwd.saved, g).dx;
  const rows: SparseRow[] = [];
  for (const engine of c.engines) {
    const o = optionsOf(engine);
    const build = () => (o === null ? jacobianWrtInput(f, x) : sparseJacobianWrtInput(f, x, o));
    const t0 = performance.now();
    const J = build();
    // A build of seconds needs few samples to be measured; many would make the suite take an hour.
    const slow = performance.now() - t0 > 2000;
    const bench = new Benchmark(`${c.id} ${engine}`, () => void build(), { minSamples: quick || slow ? 2 : 5, maxTime: quick || slow ? 1 : 4, initCount: 1 });
    bench.run();
    const plan = 'plan' in J ? J.plan : null;
    rows.push({
      id: c.id,
      title: c.title,
      engine: plan ? `${engine} → ${plan.mode}/${plan.engine}` : engine,
      shape: J.shape.slice(),
      nnz: 'nnz' in J ? J.nnz : null,
      bytes: J.bytes,
      denseBytes: sizeOf(J.shape) * 8,
      colours: plan ? (plan.engine === 'propagate' ? 0 : plan.colours) : sizeOf(f.inputShape),
      ms: bench.stats.mean * 1000,
      rme: bench.stats.rme,
      samples: bench.stats.sample.length,
      gradRelDiff: maxDifference(upstreamGradientLossOut(J, g), ref).rel,
      maxRssBytes: null,
    });
  }
  return rows;
}

function runChild(c: SparseBenchCase): SparseRow[] {
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(root, 'bin', 'cli.ts'), 'jacobian', ...c.child!], { cwd: root, encoding: 'utf8', maxBuffer: 64 * 1024 ** 2 });
  const line = (r.stdout ?? '').split('\n').find((l) => l.startsWith('{'));
  if (r.status !== 0 || !line) throw new Error(`sparse bench ${c.id}: jacobian-chain jacobian ${c.child!.join(' ')} exited ${r.status}: ${(r.stderr || r.stdout || '').slice(-2000)}`);
  const out = JSON.parse(line) as { maxRssBytes: number; results: { wrt: string; shape: number[]; nnz: number | null; bytes: number; denseBytes: number; mode?: string; engine?: string; colours?: number; ms: number; relDiff: number }[] };
  return out.results.map((m) => ({
    id: c.id,
    title: c.title,
    engine: `sparse auto → ${m.mode}/${m.engine}`,
    shape: m.shape,
    nnz: m.nnz,
    bytes: m.bytes,
    denseBytes: m.denseBytes,
    colours: m.engine === 'propagate' ? 0 : (m.colours ?? null),
    ms: m.ms,
    rme: null,
    samples: 1,
    gradRelDiff: m.relDiff,
    maxRssBytes: out.maxRssBytes,
  }));
}

/** Runs the sparse cases (in process, or in a child where marked) and checks the targets. */
export async function runSparseCases(opts: { quick?: boolean; only?: RegExp | null; log?: (s: string) => void } = {}): Promise<{ rows: SparseRow[]; targets: SparseTarget[] }> {
  const quick = opts.quick ?? false;
  const rows: SparseRow[] = [];
  for (const c of sparseCases(quick)) {
    if (opts.only && !opts.only.test(c.id)) continue;
    opts.log?.(`sparse bench: ${c.id}`);
    rows.push(...(c.child ? runChild(c) : runInProcess(c, quick)));
  }
  return { rows, targets: checkSparseTargets(rows) };
}

/** The targets, from the rows that were run. */
export function checkSparseTargets(rows: SparseRow[]): SparseTarget[] {
  const targets: SparseTarget[] = [];
  const at32 = rows.filter((r) => r.id === 'sparse-model0-32-b1');
  const dense = at32.find((r) => r.engine.startsWith('dense'));
  const sparse = at32.find((r) => r.engine.startsWith('sparse auto'));
  if (dense && sparse) {
    const speedup = dense.ms / sparse.ms;
    targets.push({ name: 'model_0 32×32×3 B=1: sparse ≥ 10× faster than dense forward mode', pass: speedup >= 10, detail: `${sparse.ms.toFixed(1)} ms vs ${dense.ms.toFixed(0)} ms: ${speedup.toFixed(1)}×` });
    targets.push({ name: 'model_0 32×32×3 B=1: sparse faster than 339 ms', pass: sparse.ms < 339, detail: `${sparse.ms.toFixed(1)} ms` });
    targets.push({ name: 'model_0 32×32×3 B=1: chained gradient = VJP gradient within 1e-10', pass: sparse.gradRelDiff <= 1e-10, detail: sparse.gradRelDiff.toExponential(2) });
  }
  const big = rows.find((r) => r.id === 'sparse-model0-224-b1');
  if (big) {
    targets.push({ name: 'model_0 224×224×3 B=1: peak RSS < 2 GiB', pass: (big.maxRssBytes ?? Infinity) < 2 * 1024 ** 3, detail: fmtBytes(big.maxRssBytes ?? 0) });
    targets.push({ name: 'model_0 224×224×3 B=1: < 60 s', pass: big.ms < 60_000, detail: `${(big.ms / 1000).toFixed(1)} s` });
    targets.push({ name: 'model_0 224×224×3 B=1: chained gradient = VJP gradient within 1e-10', pass: big.gradRelDiff <= 1e-10, detail: big.gradRelDiff.toExponential(2) });
  }
  return targets;
}

/** The rows and targets as a markdown section. */
export function sparseMarkdown(rows: SparseRow[], targets: SparseTarget[]): string {
  const lines = ['## Structured (sparse) Jacobians w.r.t. the input', '', '| case | engine | shape | nnz | bytes (dense) | colours | time | gradient rel. diff | peak RSS |', '|---|---|---|---|---|---|---|---|---|'];
  for (const r of rows) {
    const time = r.ms >= 1000 ? `${(r.ms / 1000).toFixed(2)} s` : `${r.ms.toFixed(2)} ms`;
    const rme = r.rme === null ? ' (1 cold run)' : ` ±${r.rme.toFixed(1)}% (${r.samples})`;
    lines.push(`| ${r.title} | ${r.engine} | [${r.shape.join(', ')}] | ${r.nnz ?? '—'} | ${fmtBytes(r.bytes)} (${fmtBytes(r.denseBytes)}) | ${r.colours === 0 ? 'none (propagated)' : (r.colours ?? '—')} | ${time}${rme} | ${r.gradRelDiff.toExponential(1)} | ${r.maxRssBytes === null ? '—' : fmtBytes(r.maxRssBytes)} |`);
  }
  if (targets.length) {
    lines.push('', '| target | result | |', '|---|---|---|');
    for (const t of targets) lines.push(`| ${t.name} | ${t.detail} | ${t.pass ? 'met' : 'MISSED'} |`);
  }
  return lines.join('\n');
}

// Run alone: `tsx bench/sparse-cases.ts [--quick] [--only REGEX]`.
if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const argv = process.argv.slice(2);
  const quick = argv.includes('--quick');
  const i = argv.indexOf('--only');
  const only = i >= 0 ? new RegExp(argv[i + 1] ?? '') : null;
  runSparseCases({ quick, only, log: (s) => console.error(s) }).then(
    ({ rows, targets }) => {
      const md = sparseMarkdown(rows, targets);
      console.log(md);
      if (!quick && !only) {
        // The full run is the one the docs quote: keep it beside the dense suite's results.
        const header = `Generated by \`npm run bench:sparse\` on ${new Date().toISOString().slice(0, 10)}: Node ${process.version}, ${cpus().length} × ${cpus()[0]?.model ?? 'unknown CPU'}, float64.\n\n`;
        writeFileSync(join(root, 'docs', 'bench', 'sparse.md'), `${header}${md}\n`);
      }
      process.exit(targets.every((t) => t.pass) ? 0 : 1);
    },
    (e: unknown) => {
      console.error(e instanceof Error ? e.stack : String(e));
      process.exit(1);
    },
  );
}

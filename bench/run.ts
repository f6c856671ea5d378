/**
 * The Jacobian-vs-VJP benchmark suite: `npm run bench` (full, ~17 minutes on 2 cores, into
 * docs/bench), `npm run bench -- --targets` (only issue #14's target cases, a few minutes, into
 * bench/results/tmp/targets) or `npm run bench:quick` (CI, under a minute, into
 * bench/results/tmp/quick; no #14 jobs). Git ignores bench/results/tmp. Options: `--out DIR`,
 * `--only REGEX` (case ids). The scripts run it compiled (`tsc -p tsconfig.bench.json` into
 * dist-bench, then plain node, children too); run through tsx (`--import tsx bench/run.ts`) its
 * children run through tsx as well, and the report says which.
 *
 * Issue #14's jobs (bench/issue14.ts) run after the cases: the training steps, model_0's dense
 * Jacobians, the explicit structured and streamed steps, each beside PyTorch (bench/torch_peer.py)
 * when a python3 with torch is present, else the report says that the peer was skipped and why.
 *
 * Every case runs in a child process of its own (bench/child.ts) so that its peak memory is its
 * own: per op, one measured run (peak RSS, heap), then benchmark.js timings; tfjs-core on its CPU
 * backend runs the same model in the same child as the peer. The parent adds the analytic bytes
 * (lib/memory-report.ts, from shapes alone), writes `results.json` and `results.md`, checks the
 * targets and draws the plots.
 * @module
 */
import { spawn } from 'node:child_process';
import { cpus, totalmem, tmpdir } from 'node:os';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fmtBytes, getMemoryBudget } from '../lib/memory.js';
import { type MemoryReport, estimateMemory } from '../lib/memory-report.js';
import { catsVsDogsCnn, splitAfterLastPooling } from '../lib/models.js';
import { bytesPerElement } from '../lib/tensor.js';
import { ANALYTIC_SIDES, type BenchCase, type OpName, buildCase, fullCases, quickCases } from './cases.js';
import type { ChildJob, OpResult } from './child.js';
import { type MeasuredPoint, type SweepPoint, writePlots } from './plot.js';
import { type Issue14Settings, ROOT, RUNS_COMPILED, childCommand, runIssue14 } from './issue14.js';
import { type CaseResult, type Results, checkTargets, issue14Targets, toMarkdown } from './report.js';
import { findTorch } from './torch-peer.js';

const root = ROOT;

interface Args {
  quick: boolean;
  targets: boolean;
  out: string;
  only: RegExp | null;
  argv: string[];
}

function parseArgs(argv: string[]): Args {
  const a: Args = { quick: false, targets: false, out: '', only: null, argv };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    if (k === '--quick') a.quick = true;
    else if (k === '--targets') a.targets = true;
    else if (k === '--out') a.out = resolve(argv[++i] ?? '');
    else if (k === '--only') a.only = new RegExp(argv[++i] ?? '');
    else if (k === '--help' || k === '-h') {
      console.log('usage: npm run bench -- [--quick | --targets] [--out DIR] [--only REGEX]');
      process.exit(0);
    } else throw new Error(`bench: unknown argument ${JSON.stringify(k)}; expected --quick, --targets, --out DIR, --only REGEX`);
  }
  if (a.quick && a.targets) throw new Error('bench: expected one of --quick and --targets, received both');
  // The committed results are the full run's; a quick or targets run goes where git ignores it unless told otherwise.
  a.out ||= a.quick ? join(root, 'bench', 'results', 'tmp', 'quick') : a.targets ? join(root, 'bench', 'results', 'tmp', 'targets') : join(root, 'docs', 'bench');
  return a;
}

/** The #14 target cases among the full ones: every layer case, for its forward-mode block ratio only. */
function targetCases(): BenchCase[] {
  const blockOps: OpName[] = ['forward', 'jvpBlock', 'writeJ', 'jacobianWrtInput', 'jacobianInto'];
  return fullCases()
    .filter((c) => c.group === 'layer')
    .map((c) => ({ ...c, ops: c.ops.filter((o) => blockOps.includes(o)) }));
}

/** Repeats of the #14 jobs: the same in the full and the targets run, so that their numbers compare. */
const ISSUE14: Issue14Settings = { rounds: 9, jacRounds: 3, explicitRounds: 3, timeoutMs: 1_200_000, streamedCapMs: 900_000 };

/** The analytic bytes of each op of a case, from shapes alone, with the shapes they are products of. */
export interface Analytic {
  report: MemoryReport;
  /** Per op: the bytes it materializes by the account, and what they are. */
  ops: Partial<Record<OpName, { bytes: number; what: string; shapes: number[][]; bytesPerElement: number; tangentBlockBytes?: number }>>;
}

function analyticOf(c: BenchCase): Analytic {
  const b = buildCase(c);
  const B = c.batch;
  const report = b.single ? estimateMemory(b.single, B, { dtype: c.dtype, training: c.training }) : estimateMemory(b.stages!, B, { dtype: c.dtype, training: c.training });
  const bpe = bytesPerElement(c.dtype);
  const js = report.explicit.jacobians;
  const ops: Analytic['ops'] = {};
  ops.forward = { bytes: report.vjp.residualBytes, what: 'residuals the forward pass saves', shapes: report.vjp.residuals.map((r) => r.shape), bytesPerElement: bpe };
  ops.vjpChain = { bytes: report.vjp.bytes, what: 'residuals + cotangents', shapes: [...report.vjp.residuals, ...report.vjp.cotangents].map((r) => r.shape), bytesPerElement: bpe };
  ops.explicitChain = { bytes: report.explicit.jacobianBytes, what: 'every Jacobian the chain materializes', shapes: js.map((j) => j.shape), bytesPerElement: bpe };
  if (b.single) {
    const [jx, ...jw] = js;
    ops.jacobianWrtInput = { bytes: jx.bytes, what: 'J w.r.t. input', shapes: [jx.shape], bytesPerElement: bpe, tangentBlockBytes: jx.tangentBlockBytes };
    ops.jacobianInto = { bytes: jx.bytes, what: 'J w.r.t. input, in a reused buffer', shapes: [jx.shape], bytesPerElement: bpe, tangentBlockBytes: jx.tangentBlockBytes };
    ops.writeJ = { bytes: jx.bytes, what: 'a J-sized buffer', shapes: [jx.shape], bytesPerElement: bpe };
    ops.jvpBlock = { bytes: jx.tangentBlockBytes, what: `one block of T = ${jx.tangents} tangents`, shapes: [], bytesPerElement: bpe };
    if (jw.length) {
      ops.jacobianWrtWeights = { bytes: jw.reduce((s, j) => s + j.bytes, 0), what: 'J w.r.t. each weight', shapes: jw.map((j) => j.shape), bytesPerElement: bpe, tangentBlockBytes: Math.max(...jw.map((j) => j.tangentBlockBytes)) };
      ops.tfJacobianWrtWeights = { bytes: jw.reduce((s, j) => s + (j.bytes / bpe) * 4, 0), what: 'J w.r.t. each weight, float32', shapes: jw.map((j) => j.shape), bytesPerElement: 4 };
    }
    ops.tfJacobianWrtInput = { bytes: (jx.bytes / bpe) * 4, what: 'J w.r.t. input, float32', shapes: [jx.shape], bytesPerElement: 4 };
  }
  return { report, ops };
}

function runChild(job: ChildJob, jobFile: string, timeoutMs: number): Promise<{ code: number | null; stderr: string }> {
  writeFileSync(jobFile, JSON.stringify(job));
  return new Promise((res) => {
    const child = spawn(process.execPath, [...childCommand('child'), jobFile], { cwd: root, stdio: ['ignore', 'inherit', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => {
      const s = d.toString();
      stderr += s;
      process.stdout.write(s);
    });
    const timer = setTimeout(() => {
      stderr += `\nbench: case ${job.case.id} exceeded ${timeoutMs / 1000} s; killed\n`;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      res({ code, stderr });
    });
  });
}

/** The CNN at each analytic side and batch, accounted from shapes (nothing is run). */
function analyticSweep(): SweepPoint[] {
  const pts: SweepPoint[] = [];
  for (const side of ANALYTIC_SIDES) {
    const cnn = catsVsDogsCnn({ side, channels: 3 });
    const stages = cnn.split(splitAfterLastPooling(cnn));
    for (const batch of [1, 8]) {
      const r = estimateMemory(stages, batch);
      // What jacobianChain's guards check, one build at a time: a stage's weights together, or a stage's input.
      const builds = r.stages.flatMap((st, k) => {
        const [input, ...weights] = st.explicit.jacobians;
        return [weights.reduce((a, j) => a + j.bytes, 0), ...(k > 0 ? [input.bytes] : [])];
      });
      pts.push({ side, batch, jacobianBytes: r.explicit.jacobianBytes, vjpBytes: r.vjp.bytes, largestBuildBytes: Math.max(...builds) });
    }
  }
  return pts;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const started = Date.now();
  let cases = args.quick ? quickCases() : args.targets ? targetCases() : fullCases();
  if (args.only) cases = cases.filter((c) => args.only!.test(c.id));
  const settings = args.quick
    ? { maxTime: 0.05, minSamples: 2, heavyMs: 150, tfTimeCapMs: 200, capMs: 1_500, chainCapMs: 1_500, timeoutMs: 120_000 }
    : { maxTime: 0.5, minSamples: 5, heavyMs: 1_500, tfTimeCapMs: 5_000, capMs: 20_000, chainCapMs: 60_000, timeoutMs: 900_000 };
  const budget = getMemoryBudget();
  mkdirSync(args.out, { recursive: true });
  const work = mkdtempSync(join(tmpdir(), 'jc-bench-'));
  console.log(`bench: ${cases.length} cases${args.quick ? ' (quick)' : args.targets ? ' (#14 targets)' : ''}, one child process each; memory budget ${fmtBytes(budget)}; results into ${args.out}`);
  const results: CaseResult[] = [];
  let issue14: Results['issue14'];
  try {
    for (const [i, c] of cases.entries()) {
      const analytic = analyticOf(c);
      const t0 = Date.now();
      console.log(`[${i + 1}/${cases.length}] ${c.id}: ${c.title}, batch ${c.batch}`);
      const outFile = join(work, `${c.id}.json`);
      const job: ChildJob = { case: c, outFile, maxTime: settings.maxTime, minSamples: settings.minSamples, heavyMs: settings.heavyMs, tfTimeCapMs: settings.tfTimeCapMs, capMs: settings.capMs, chainCapMs: settings.chainCapMs, memoryBudget: c.memoryBudget ?? budget };
      const { code, stderr } = await runChild(job, join(work, `${c.id}.job.json`), settings.timeoutMs);
      let ops: OpResult[];
      let childError: string | null = null;
      try {
        ops = (JSON.parse(readFileSync(outFile, 'utf8')) as { results: OpResult[] }).results;
      } catch {
        ops = [];
        childError = `child exited with code ${code}: ${stderr.trim().split('\n').slice(-3).join(' | ')}`;
        console.log(`  ${childError}`);
      }
      results.push({ case: c, analytic: { jacobianBytes: analytic.report.explicit.jacobianBytes, vjpBytes: analytic.report.vjp.bytes, residualBytes: analytic.report.vjp.residualBytes, cotangentBytes: analytic.report.vjp.cotangentBytes, ratio: analytic.report.ratio, tangentBlockBytes: analytic.report.explicit.tangentBlockBytes, jacobians: analytic.report.explicit.jacobians, stages: analytic.report.stages.map((s) => ({ what: s.what, jacobianBytes: s.explicit.jacobianBytes, vjpBytes: s.vjp.bytes, ratio: s.ratio })), ops: analytic.ops }, ops, childError, seconds: (Date.now() - t0) / 1000 });
    }
    if (!args.quick && !args.only) issue14 = await runIssue14(ISSUE14, findTorch(), join(work, 'issue14'));
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  const sweep = analyticSweep();
  const measured: MeasuredPoint[] = [];
  for (const r of results) {
    if (r.case.group !== 'model' || r.case.target.kind !== 'cnn') continue;
    for (const op of ['explicitChain', 'vjpChain', 'tfVjp'] as const) {
      const o = r.ops.find((x) => x.op === op);
      if (!o || o.status !== 'ok' || !o.time) continue;
      // A capped run's memory is a partial build's and its time a lower bound: only its extrapolation is plotted, as such.
      const capped = o.time.method === 'capped';
      measured.push({
        side: r.case.target.side,
        batch: r.case.batch,
        op,
        peakRssDelta: !capped && o.memory && o.memory.peakRssDelta > 0 ? o.memory.peakRssDelta : null,
        timeMs: capped ? null : o.time.meanMs,
        extrapolatedMs: capped ? (o.time.extrapolatedMs ?? null) : null,
      });
    }
  }
  const out: Results = {
    meta: {
      generatedBy: args.quick ? 'npm run bench:quick' : `npm run bench${args.argv.length ? ` -- ${args.argv.join(' ')}` : ''}`,
      date: new Date().toISOString(),
      quick: args.quick,
      node: process.version,
      cpu: cpus()[0]?.model ?? 'unknown',
      cores: cpus().length,
      totalMemory: totalmem(),
      memoryBudget: budget,
      settings,
      seconds: 0,
      ours: RUNS_COMPILED ? 'compiled (tsc -p tsconfig.bench.json), plain node, children too' : 'through tsx (the TypeScript loader), children too',
    },
    cases: results,
    sweep,
    measured,
    targets: [],
    issue14,
  };
  out.targets = checkTargets(out);
  out.issue14Targets = issue14Targets(out);
  const plots = await writePlots(args.out, sweep, measured);
  out.meta.seconds = (Date.now() - started) / 1000;
  writeFileSync(join(args.out, 'results.json'), `${JSON.stringify(out, null, 1)}\n`);
  writeFileSync(join(args.out, 'results.md'), toMarkdown(out, plots.map((p) => p.slice(args.out.length + 1))));
  console.log(`\nbench: done in ${out.meta.seconds.toFixed(0)} s; wrote results.json, results.md, ${plots.map((p) => p.slice(args.out.length + 1)).join(', ')} into ${args.out}`);
  for (const t of [...(out.issue14Targets ?? []), ...out.targets]) console.log(`  ${t.status.padEnd(7)} ${t.name}: ${t.measured}`);
  // A peer that disagrees with us, or a #14 job that died, fails the run (after the report is written).
  if (issue14?.errors.length) {
    console.error(`bench: ${issue14.errors.length} #14 job(s) failed:\n  ${issue14.errors.join('\n  ')}`);
    process.exitCode = 1;
  }
}

// Only when run, not when imported (the spec imports nothing from here, but keep it inert).
if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((e: unknown) => {
    console.error(e instanceof Error ? (e.stack ?? e.message) : String(e));
    process.exit(1);
  });
}



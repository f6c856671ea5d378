/**
 * The measurements behind issue #14's targets, side by side: each job runs in a child process of
 * its own (bench/issue14-child.ts, so that its peak memory is its own), our repeats interleaved
 * with PyTorch's (bench/torch_peer.py, when a python3 with torch is present) one by one, and
 * reported as medians. The parent side: the jobs, how a child is started (compiled under plain
 * node, or through tsx when the bench itself runs from sources), and the merge of their results.
 * @example
 * const res = await runIssue14({ rounds: 9, jacRounds: 3, explicitRounds: 1, timeoutMs: 900_000 }, findTorch(), workDir);
 * res.series.find((s) => s.id === 'step64f64.ours')?.medianMs;
 * @module
 */
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TorchFound } from './torch-peer.js';

const here = dirname(fileURLToPath(import.meta.url));

/**
 * `[node flags…, script]` for a bench child: the compiled `.js` beside this file under plain node
 * when the bench runs compiled (`npm run bench`), else the `.ts` through tsx (the spec's quick run).
 */
export function childCommand(name: string): string[] {
  const compiled = fileURLToPath(import.meta.url).endsWith('.js');
  return compiled ? ['--expose-gc', join(here, `${name}.js`)] : ['--expose-gc', '--import', 'tsx', join(here, `${name}.ts`)];
}

/** How our code runs in this bench: compiled or through the TypeScript loader. */
export const RUNS_COMPILED = fileURLToPath(import.meta.url).endsWith('.js');

/** The repository root (two up from dist-bench/bench, one up from bench). */
export const ROOT = RUNS_COMPILED ? resolve(here, '..', '..') : resolve(here, '..');

/** Repeats of each job. */
export interface Issue14Settings {
  /** Interleaved rounds of the training steps (after two warm-up rounds). */
  rounds: number;
  /** Interleaved rounds of the dense Jacobians (after the checked first run). */
  jacRounds: number;
  /** At most this many runs of the explicit step (each its own peak). */
  explicitRounds: number;
  /** A job's child is killed after this long. */
  timeoutMs: number;
  /** The streamed explicit step stops after this long (the time is then a lower bound, with an extrapolation in columns beside it). Default 120 s. */
  streamedCapMs?: number;
}

/** A job of one child. */
export interface Issue14Job {
  kind: 'step' | 'jacobians' | 'explicit' | 'streamed';
  /** Image side (explicit, streamed). */
  side?: number;
  settings: Issue14Settings;
  /** The python that imports torch, or null: no peer. */
  python: string | null;
  /** Scratch folder for the files crossing to the peer. */
  work: string;
  outFile: string;
}

/** One measured series: repeats of one piece of work by one side. */
export interface Series {
  /** `step64f64.ours`, `step64f64.torch1`, `jac.input.forward`, `explicit64`… */
  id: string;
  /** What was run, in words. */
  what: string;
  /** Each repeat's time, in run order. */
  ms: number[];
  /** Their median. */
  medianMs: number;
  /** Peak RSS growth over the run (the largest of the repeats), when measured. */
  peakRssDelta?: number;
  /**
   * Stopped at the cap before the end: `ms` is then a lower bound, and the peak that of a partial
   * run (for the streamed way, whose memory is one block, reached in the first block). No
   * extrapolation: columns differ too much in cost (a first conv layer's weight column pushes a
   * tangent through the whole stage, a Dense weight's through one layer) for a count to say it.
   */
  capped?: {
    /** Jacobian columns built and contracted before the cap. */
    columnsDone: number;
    /** Columns of every Jacobian of the step. */
    columns: number;
  };
}

/** A check of the peer (or a mode) against ours, before anything was timed. */
export interface Check {
  what: string;
  /** max |ours − theirs| / max |theirs|. */
  maxRelDiff: number;
  tolerance: number;
  ok: boolean;
}

/** What the #14 jobs measured. */
export interface Issue14Results {
  /** The peer: its version and thread counts, or why it was skipped. */
  torch: { python: string | null; skipped: string | null; version?: string; jacobian?: string; threads: number[] };
  series: Series[];
  checks: Check[];
  /** Why a row is not measured, by series id (`step64f64.multicore`, `streamed64`, `jac.input.auto`…). */
  notes: Record<string, string>;
  /** Jobs that failed, with their error. */
  errors: string[];
  /** How our side ran: `compiled (node dist-bench/…)` or `tsx`. */
  ours: string;
}

/** What a child writes. */
export type ChildOut = Pick<Issue14Results, 'series' | 'checks' | 'notes'> & {
  /** The peer's version and Jacobian API, when it ran. */
  torch?: { version: string; jacobian: string };
  /** The job's error, when it failed (what it measured before is kept). */
  error?: string;
};

/** The median of some numbers (the mean of the middle two for an even count). */
export function median(v: readonly number[]): number {
  const s = [...v].sort((a, b) => a - b);
  const n = s.length;
  return n === 0 ? NaN : n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

function runJob(job: Issue14Job): Promise<{ out: ChildOut | null; error: string | null }> {
  const jobFile = `${job.outFile}.job.json`;
  writeFileSync(jobFile, JSON.stringify(job));
  return new Promise((res) => {
    const child = spawn(process.execPath, [...childCommand('issue14-child'), jobFile], { cwd: ROOT, stdio: ['ignore', 'inherit', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      process.stdout.write(d);
    });
    const timer = setTimeout(() => {
      stderr += `\nbench: #14 job ${job.kind} exceeded ${job.settings.timeoutMs / 1000} s; killed\n`;
      child.kill('SIGKILL');
    }, job.settings.timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      try {
        const out = JSON.parse(readFileSync(job.outFile, 'utf8')) as ChildOut;
        res({ out, error: out.error || code !== 0 ? `#14 job ${job.kind}${job.side ? ` ${job.side}²` : ''}: ${out.error ?? `child exited with code ${code}`}` : null });
      } catch {
        res({ out: null, error: `#14 job ${job.kind}${job.side ? ` ${job.side}²` : ''}: child exited with code ${code}: ${stderr.trim().split('\n').slice(-4).join(' | ')}` });
      }
    });
  });
}

/**
 * Runs every #14 job, one child each, in turn: the training steps (64² f64 and f32, 32² f64, B=8),
 * model_0's dense Jacobians at 32² B=1, the explicit structured step at 64² B=8, and the streamed
 * explicit step at 64² and 128² B=8.
 */
export async function runIssue14(settings: Issue14Settings, torch: TorchFound, work: string, log: (s: string) => void = console.log): Promise<Issue14Results> {
  const res: Issue14Results = { torch: { python: torch.python, skipped: torch.reason, threads: [] }, series: [], checks: [], notes: {}, errors: [], ours: RUNS_COMPILED ? 'compiled (tsc), plain node' : 'through tsx (the TypeScript loader)' };
  mkdirSync(work, { recursive: true });
  if (torch.reason) log(`bench: the PyTorch peer is skipped: ${torch.reason}`);
  const jobs: Pick<Issue14Job, 'kind' | 'side'>[] = [{ kind: 'step' }, { kind: 'jacobians' }, { kind: 'explicit', side: 64 }, { kind: 'streamed', side: 64 }, { kind: 'streamed', side: 128 }];
  for (const [i, j] of jobs.entries()) {
    log(`[#14 ${i + 1}/${jobs.length}] ${j.kind}${j.side ? ` ${j.side}²` : ''}`);
    const { out, error } = await runJob({ ...j, settings, python: torch.python, work, outFile: join(work, `issue14-${j.kind}${j.side ?? ''}.json`) });
    if (out) {
      res.series.push(...out.series);
      res.checks.push(...out.checks);
      Object.assign(res.notes, out.notes);
      if (out.torch) Object.assign(res.torch, { version: out.torch.version, jacobian: out.torch.jacobian });
    }
    if (error) res.errors.push(error);
  }
  res.torch.threads = [...new Set(res.series.map((s) => /\.torch(\d+)$/.exec(s.id)?.[1]).filter((t): t is string => !!t).map(Number))].sort();
  return res;
}

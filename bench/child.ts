/**
 * One case of the bench, in a process of its own: `node --expose-gc dist-bench/bench/child.js
 * <job.json>`. For each op: a measured run (peak memory: the kernel's RSS high-water mark, reset
 * just before, `process.resourceUsage().maxRSS`, and RSS sampled every millisecond by a thread,
 * beside the heap and ArrayBuffer bytes before and after), then its timing by benchmark.js (a
 * single timed run for ops too slow to repeat). Writes the results as JSON to the job's `outFile`.
 * @module
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import Benchmark from 'benchmark';
import { jacobianChain, vjpChain } from '../lib/chain.js';
import { MemoryBudgetError } from '../lib/errors.js';
import { upstreamGradientLossOut, upstreamGradientLossWeights } from '../lib/helpers.js';
import { jacobianWrtInput, jacobianWrtWeights, tangentBlockWidth } from '../lib/jacobian.js';
import { lossByName } from '../lib/losses.js';
import { getMemoryBudget, guardBytes } from '../lib/memory.js';
import { estimateMemory, guardExplicitWay } from '../lib/memory-report.js';
import { Rng } from '../lib/rng.js';
import type { SequentialForwardOptions } from '../lib/sequential.js';
import { GradientTape } from '../lib/tape.js';
import { bytesPerElement, randomNormal, sizeOf, zeros } from '../lib/tensor.js';
import { deliverTangent } from '../lib/layers/out.js';
import { type BenchCase, type BuiltCase, type OpName, buildCase } from './cases.js';
import { loadTfjs, tfForward, tfJacobianWrtInput, tfJacobianWrtWeights, tfVjp, toTf, toTfModel } from './tfjs-peer.js';

/** What the parent hands a child. */
export interface ChildJob {
  case: BenchCase;
  outFile: string;
  /** benchmark.js: seconds per op, minimum samples. */
  maxTime: number;
  minSamples: number;
  /** An op whose measured run took longer than this is timed by that one run alone. */
  heavyMs: number;
  /** The tfjs row-by-row Jacobians stop after this long and are extrapolated (and say so). */
  tfTimeCapMs: number;
  /** Our Jacobian builds (and chains) stop after this long: the time is then a lower bound, with a linear extrapolation in columns beside it. */
  capMs: number;
  /** The same for a split model's explicit chain (longer: its measured memory is a plotted point). */
  chainCapMs: number;
  memoryBudget: number;
}

/** Peak memory of one measured run. */
export interface MemoryMeasurement {
  /** RSS just before the run (after two full GCs). */
  baselineRss: number;
  /** The kernel's RSS high-water mark over the run (`VmHWM`, reset before it). */
  peakRss: number;
  /** `process.resourceUsage().maxRSS` after the run (same reset), in bytes. */
  maxRss: number;
  /** Largest RSS seen by the sampling thread (every ~1 ms). */
  sampledPeakRss: number;
  /** `peakRss - baselineRss`: what the run added at its peak. */
  peakRssDelta: number;
  heapUsedBefore: number;
  heapUsedAfter: number;
  arrayBuffersBefore: number;
  arrayBuffersAfter: number;
}

/** Timing of one op. */
export interface Timing {
  /** Mean time; for `capped`, the time until the cap (a lower bound). */
  meanMs: number;
  /** Relative margin of error (%), benchmark.js; null for a single run. */
  rme: number | null;
  samples: number;
  /**
   * `benchmark.js`; `single run` (too slow to repeat); `extrapolated` (tfjs row VJPs stopped at the
   * cap: time × rows / rows done); `capped` (ours stopped at the cap: see `extrapolatedMs`).
   */
  method: 'benchmark.js' | 'single run' | 'extrapolated' | 'capped';
  /** For `capped`: time × columns / columns done, linear in columns (not a measurement). */
  extrapolatedMs?: number;
}

/** Result of one op in one case. */
export interface OpResult {
  op: OpName;
  status: 'ok' | 'refused' | 'error';
  /** The error (refused: the memory guard's message, thrown before allocating). */
  message?: string;
  firstRunMs?: number;
  time?: Timing;
  memory?: MemoryMeasurement;
  /** Op details: the tangent block width T, blocks, columns; rows done for the tfjs Jacobians. */
  info?: Record<string, number | string | boolean>;
}

interface Prepared {
  run: () => unknown;
  isAsync: boolean;
  /** The op's Jacobian builds report here (and are stopped at the cap). */
  clock?: ColumnClock;
  info?: Record<string, number | string | boolean>;
  /** After the measured run: extra info (rows done) and whether the time was extrapolated. */
  after?: (result: unknown, ms: number) => { info?: Record<string, number | string | boolean>; extrapolatedMs?: number };
}

const gc = (globalThis as { gc?: () => void }).gc;

/** Thrown from a Jacobian builder's progress callback when an op reaches its time cap. */
class CapReached extends Error {
  constructor(
    readonly done: number,
    readonly total: number,
    readonly ms: number,
  ) {
    super(`stopped at the time cap after ${done} of ${total} columns`);
  }
}

/**
 * A progress callback for every Jacobian build of one op (a chain builds several): counts the
 * columns done across builds and stops the op once it has run past `capMs`.
 */
class ColumnClock {
  private completed = 0;
  private current = 0;
  private t0 = 0;
  private armed = false;
  constructor(
    /** Columns of every Jacobian the op builds. */
    readonly total: number,
    private readonly capMs: number,
  ) {}
  /** Arms the cap for the measured run. */
  start(): void {
    this.completed = 0;
    this.current = 0;
    this.t0 = performance.now();
    this.armed = true;
  }
  /** The timing runs after it are only run when the measured one finished: no cap for them. */
  disarm(): void {
    this.armed = false;
  }
  readonly onProgress = (done: number, total: number): void => {
    if (!this.armed) return;
    if (done >= total) {
      this.completed += total;
      this.current = 0;
    } else this.current = done;
    const ms = performance.now() - this.t0;
    const cols = this.completed + this.current;
    if (ms > this.capMs && cols < this.total) throw new CapReached(cols, this.total, ms);
  };
}

function status(key: 'VmRSS' | 'VmHWM'): number {
  const m = new RegExp(`${key}:\\s+(\\d+) kB`).exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}

/** Resets the RSS high-water mark (Linux `clear_refs` 5), which `VmHWM` and `getrusage` report. */
function resetPeak(): boolean {
  try {
    writeFileSync('/proc/self/clear_refs', '5');
    return true;
  } catch {
    return false;
  }
}

/** A thread that samples the process's RSS every millisecond while active. */
class RssSampler {
  private readonly cells = new Int32Array(new SharedArrayBuffer(8));
  private readonly worker: Worker;
  constructor() {
    const code = `
      const { workerData } = require('node:worker_threads');
      const a = new Int32Array(workerData);
      for (;;) {
        if (Atomics.load(a, 0) === 0) { Atomics.wait(a, 0, 0); continue; }
        const kb = Math.round(process.memoryUsage.rss() / 1024);
        if (kb > Atomics.load(a, 1)) Atomics.store(a, 1, kb);
        Atomics.wait(a, 0, 1, 1);
      }`;
    this.worker = new Worker(code, { eval: true, workerData: this.cells.buffer, execArgv: [] });
    this.worker.unref();
  }
  start(): void {
    Atomics.store(this.cells, 1, 0);
    Atomics.store(this.cells, 0, 1);
    Atomics.notify(this.cells, 0);
  }
  stop(): number {
    Atomics.store(this.cells, 0, 0);
    Atomics.notify(this.cells, 0);
    return Atomics.load(this.cells, 1) * 1024;
  }
  async close(): Promise<void> {
    await this.worker.terminate();
  }
}

async function prepare(op: OpName, c: BenchCase, b: BuiltCase, job: ChildJob): Promise<Prepared> {
  const fo: SequentialForwardOptions = { training: c.training ?? false, seed: 7 };
  const { x, dy } = b;
  const bpe = bytesPerElement(c.dtype);
  if (b.single) {
    const f = b.single;
    const B = x.shape[0];
    const nIn = sizeOf(f.inputShape);
    const nOut = sizeOf(f.outputShape);
    switch (op) {
      case 'forward':
        return { run: () => f.forward(x, fo), isAsync: false };
      case 'jvpBlock': {
        // The cost unit of a Jacobian's pass: one JVP of T dense (random) tangents, forward excluded, written into an output block
        // allocated once (as the builder writes into J's column block): a JVP that is a view (Flatten's) then copies, as it must into J,
        // and no pass pays the page faults of a fresh output, which would time the allocator rather than the rule.
        const fwd = f.forward(x, fo);
        const T = tangentBlockWidth(nIn, B * (nIn + nOut) * bpe);
        const dx = randomNormal([B, ...f.inputShape, T], new Rng(4), c.dtype);
        const out = zeros([B, ...f.outputShape, T], c.dtype);
        return {
          run: () => {
            out.data.fill(0); // the contract: `out` holds zeros on entry
            const y = f.jvp(fwd.saved, { xDot: dx, paramDots: null, T }, out);
            return y === out ? out : deliverTangent(out, y);
          },
          isAsync: false,
          info: { T, columns: nIn, blocks: Math.ceil(nIn / T) },
        };
      }
      case 'writeJ': {
        // The floor of materializing the Jacobian w.r.t. the input: its buffer allocated and every element written once.
        const n = B * nOut * nIn;
        guardBytes(`a J-sized buffer [${B}, ${nOut}, ${nIn}]`, n * bpe, job.memoryBudget);
        return {
          run: () => {
            const J = c.dtype === 'float32' ? new Float32Array(n) : new Float64Array(n);
            J.fill(1);
            return J;
          },
          isAsync: false,
        };
      }
      case 'jacobianWrtInput': {
        const T = tangentBlockWidth(nIn, B * (nIn + nOut) * bpe);
        const clock = new ColumnClock(nIn, job.capMs);
        return { run: () => jacobianWrtInput(f, x, { ...fo, memoryBudget: job.memoryBudget, onProgress: clock.onProgress }), isAsync: false, clock, info: { T, columns: nIn, blocks: Math.ceil(nIn / T) } };
      }
      case 'jacobianInto': {
        // The same build into one J allocated (and first touched) here, outside the timing: the builder's cost without a fresh J's page faults.
        const T = tangentBlockWidth(nIn, B * (nIn + nOut) * bpe);
        guardBytes(`a reused J [${B}, ${nOut}, ${nIn}]`, B * nOut * nIn * bpe, job.memoryBudget);
        const into = zeros([B, ...f.outputShape, ...f.inputShape], c.dtype);
        into.data.fill(1);
        const clock = new ColumnClock(nIn, job.capMs);
        return { run: () => jacobianWrtInput(f, x, { ...fo, into, onProgress: clock.onProgress }), isAsync: false, clock, info: { T, columns: nIn, blocks: Math.ceil(nIn / T) } };
      }
      case 'jacobianWrtWeights': {
        let blocks = 0;
        let columns = 0;
        for (const p of f.params) {
          const nP = p.value.size;
          columns += nP;
          blocks += Math.ceil(nP / tangentBlockWidth(nP, (B * nOut + nP) * bpe));
        }
        const clock = new ColumnClock(columns, job.capMs);
        return { run: () => jacobianWrtWeights(f, x, { ...fo, memoryBudget: job.memoryBudget, onProgress: clock.onProgress }), isAsync: false, clock, info: { columns, blocks } };
      }
      case 'explicitChain': {
        // One stage's explicit way: a tape, its Jacobians, contracted with the upstream gradient dy.
        const clock = new ColumnClock(nIn + f.params.reduce((a, p) => a + p.value.size, 0), job.capMs);
        return {
          clock,
          run: () => {
            // The explicit way as a whole is refused over the budget before anything is recorded.
            guardExplicitWay(estimateMemory(f, B, { dtype: c.dtype, training: c.training }), job.memoryBudget);
            const tape = new GradientTape(f);
            tape.forward(x, fo);
            const jo = { memoryBudget: job.memoryBudget, onProgress: clock.onProgress };
            const Jx = tape.batchJacobian(tape.output, tape.input, jo);
            const Jw = tape.jacobian(tape.output, f.params, jo);
            return [upstreamGradientLossOut(Jx, dy), ...Jw.map((J) => upstreamGradientLossWeights(J, dy))];
          },
          isAsync: false,
        };
      }
      case 'vjpChain':
        return {
          run: () => {
            const tape = new GradientTape(f);
            tape.forward(x, fo);
            return tape.gradient(tape.output, [tape.input, ...f.params], { outputGradients: dy });
          },
          isAsync: false,
        };
      default:
        return preparePeer(op, b, job, dy);
    }
  }
  const stages = b.stages!;
  // Every column jacobianChain builds: each stage's weights, and the input of every stage but the first.
  const chainColumns = stages.reduce((a, st, s) => a + (s > 0 ? sizeOf(st.inputShape) : 0) + st.params.reduce((q, p) => q + p.value.size, 0), 0);
  const clock = new ColumnClock(chainColumns, job.chainCapMs);
  const chainOpts = { training: c.training ?? false, seed: 7, jacobian: { memoryBudget: job.memoryBudget, onProgress: clock.onProgress } };
  switch (op) {
    case 'forward':
      return {
        run: () => {
          let h = x;
          for (const st of stages) h = st.forward(h, fo).y;
          return h;
        },
        isAsync: false,
      };
    case 'explicitChain':
      return {
        run: () => {
          // Every Jacobian the chain will build, checked against the budget before the first is (jacobianChain's own guards check one build at a time).
          guardExplicitWay(estimateMemory(stages, x.shape[0], { dtype: c.dtype, training: c.training }), job.memoryBudget);
          return jacobianChain(stages, x, b.yTrue, b.loss, chainOpts);
        },
        isAsync: false,
        clock,
        info: { columns: chainColumns },
      };
    case 'vjpChain':
      return { run: () => vjpChain(stages, x, b.yTrue, b.loss, chainOpts), isAsync: true };
    default: {
      // The peer's VJP is fed dLoss/dY of our forward pass, the same cotangent our chain starts from.
      let h = x;
      for (const st of stages) h = st.forward(h, fo).y;
      return preparePeer(op, b, job, lossByName(b.loss).gradient(b.yTrue, h));
    }
  }
}

async function preparePeer(op: OpName, b: BuiltCase, job: ChildJob, dy: BuiltCase['dy']): Promise<Prepared> {
  const tf = await loadTfjs();
  const m = toTfModel(tf, b.layers);
  const x = toTf(tf, b.x);
  const B = b.x.shape[0];
  const nIn = sizeOf(m.inputShape);
  const nOut = sizeOf(m.outputShape);
  const rowInfo = (r: unknown, ms: number) => {
    const { rowsDone, rows } = r as { rowsDone: number; rows: number };
    return { info: { rowsDone, rows }, extrapolatedMs: rowsDone < rows ? (ms * rows) / rowsDone : undefined };
  };
  switch (op) {
    case 'tfForward':
      return { run: () => tfForward(m, x), isAsync: false };
    case 'tfVjp': {
      const dyT = toTf(tf, dy);
      return { run: () => tfVjp(m, x, dyT), isAsync: false };
    }
    case 'tfJacobianWrtInput':
      guardBytes(`tfjs batch Jacobian w.r.t. the input [${B}, ${nOut}, ${nIn}] (float32)`, B * nOut * nIn * 4, job.memoryBudget);
      return { run: () => tfJacobianWrtInput(m, x, job.tfTimeCapMs), isAsync: false, info: { rows: nOut }, after: rowInfo };
    case 'tfJacobianWrtWeights': {
      const cols = m.weights.reduce((s, w) => s + w.size, 0);
      guardBytes(`tfjs Jacobians w.r.t. ${m.weights.length} weights (float32)`, B * nOut * cols * 4, job.memoryBudget);
      return { run: () => tfJacobianWrtWeights(m, x, job.tfTimeCapMs), isAsync: false, info: { rows: B * nOut, columns: cols }, after: rowInfo };
    }
    default:
      throw new Error(`bench child: op ${op} does not apply to this case`);
  }
}

async function measure(p: Prepared, sampler: RssSampler): Promise<{ ms: number; memory: MemoryMeasurement; result: unknown; capped: CapReached | null }> {
  gc?.();
  gc?.();
  const before = process.memoryUsage();
  const baselineRss = status('VmRSS');
  resetPeak();
  sampler.start();
  p.clock?.start();
  const t0 = performance.now();
  let result: unknown = null;
  let capped: CapReached | null = null;
  try {
    result = p.run();
    if (p.isAsync) result = await result;
  } catch (e) {
    if (!(e instanceof CapReached)) {
      sampler.stop();
      throw e;
    }
    capped = e;
  }
  const ms = performance.now() - t0;
  p.clock?.disarm();
  const sampledPeakRss = sampler.stop();
  const after = process.memoryUsage();
  const peakRss = status('VmHWM');
  const maxRss = process.resourceUsage().maxRSS * 1024;
  return {
    ms,
    result,
    capped,
    memory: {
      baselineRss,
      peakRss,
      maxRss,
      sampledPeakRss,
      peakRssDelta: peakRss - baselineRss,
      heapUsedBefore: before.heapUsed,
      heapUsedAfter: after.heapUsed,
      arrayBuffersBefore: before.arrayBuffers,
      arrayBuffersAfter: after.arrayBuffers,
    },
  };
}

function time(name: string, p: Prepared, job: ChildJob): Promise<Timing> {
  return new Promise((resolve, reject) => {
    const opts: Benchmark.Options = { minSamples: job.minSamples, maxTime: job.maxTime, initCount: 1 };
    const bench = p.isAsync
      ? new Benchmark(name, {
          ...opts,
          defer: true,
          fn: (deferred: { resolve: () => void }) => {
            (p.run() as Promise<unknown>).then(() => deferred.resolve(), reject);
          },
        })
      : new Benchmark(name, { ...opts, fn: () => p.run() });
    bench.on('complete', () => {
      const err = (bench as unknown as { error?: unknown }).error;
      if (err) reject(err);
      else resolve({ meanMs: bench.stats.mean * 1000, rme: bench.stats.rme, samples: bench.stats.sample.length, method: 'benchmark.js' });
    });
    bench.run({ async: p.isAsync });
  });
}

async function main(): Promise<void> {
  const job = JSON.parse(readFileSync(process.argv[2], 'utf8')) as ChildJob;
  const c = job.case;
  const built = buildCase(c);
  const sampler = new RssSampler();
  const results: OpResult[] = [];
  for (const op of c.ops) {
    const r: OpResult = { op, status: 'ok' };
    try {
      const p = await prepare(op, c, built, job);
      const m = await measure(p, sampler);
      const post = p.after?.(m.result, m.ms) ?? {};
      m.result = null;
      r.firstRunMs = m.ms;
      r.memory = m.memory;
      r.info = { ...p.info, ...post.info };
      if (m.capped) {
        // Stopped at the cap: the memory is that of a partial build, the time a lower bound.
        r.info = { ...r.info, capped: true, columnsDone: m.capped.done, columnsTotal: m.capped.total };
        r.time = { meanMs: m.ms, rme: null, samples: 1, method: 'capped', extrapolatedMs: (m.ms * m.capped.total) / m.capped.done };
      } else if (post.extrapolatedMs !== undefined) r.time = { meanMs: post.extrapolatedMs, rme: null, samples: 1, method: 'extrapolated' };
      else if (m.ms >= job.heavyMs) r.time = { meanMs: m.ms, rme: null, samples: 1, method: 'single run' };
      else r.time = await time(`${c.id} ${op}`, p, job);
    } catch (e) {
      r.status = e instanceof MemoryBudgetError ? 'refused' : 'error';
      r.message = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    }
    results.push(r);
    process.stderr.write(`  ${c.id} ${op}: ${r.status}${r.time ? ` ${r.time.meanMs.toFixed(2)} ms (${r.time.method})` : ''}\n`);
    gc?.();
  }
  await sampler.close();
  writeFileSync(job.outFile, JSON.stringify({ id: c.id, budget: getMemoryBudget(), peakResetWorks: resetPeak(), results }, null, 1));
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(`bench child: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  },
);

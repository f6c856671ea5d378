/**
 * One #14 job in a process of its own: `node --expose-gc dist-bench/bench/issue14-child.js
 * <job.json>` (see bench/issue14.ts). Builds the same model, weights and batch as the rest of the
 * bench (bench/cases.ts `buildCase`), hands them to the PyTorch peer when there is one, checks the
 * peer's loss, gradients and Jacobians against ours (float64: to 1e-10, relative to the largest
 * value; float32: to 1e-3) and fails loudly when they disagree, then times both sides interleaved,
 * one repeat at a time. Writes a {@link ChildOut} as JSON to the job's `outFile`.
 * @module
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { jacobianChain, vjpChain } from '../lib/chain.js';
import { jacobianWrtInput, jacobianWrtWeights } from '../lib/jacobian.js';
import { type Tensor, sizeOf } from '../lib/tensor.js';
import { trainableParams } from '../lib/layers/layer.js';
import { type BenchCase, buildCase } from './cases.js';
import { autoDenseSupport, maxRelDiff, multiCoreStep, streamedSupport } from './features.js';
import { type Check, type ChildOut, type Issue14Job, type Series, median } from './issue14.js';
import { measurePeak, timeOnce } from './peak.js';
import { TorchPeer, readFloat64, writeModel } from './torch-peer.js';

const FO = { training: false, seed: 7 };

function cnnCase(side: number, batch: number, dtype: 'float64' | 'float32', stage?: number): BenchCase {
  return { id: `issue14-cnn${side}-b${batch}-${dtype}`, group: 'model', title: '', target: { kind: 'cnn', side, channels: 3, ...(stage === undefined ? {} : { stage }) }, batch, dtype, ops: [] };
}

class Out {
  readonly series = new Map<string, Series>();
  readonly checks: Check[] = [];
  readonly notes: Record<string, string> = {};
  torch?: { version: string; jacobian: string };
  add(id: string, what: string, ms: number, peak?: number): void {
    const s = this.series.get(id) ?? { id, what, ms: [], medianMs: NaN };
    s.ms.push(ms);
    s.medianMs = median(s.ms);
    if (peak !== undefined && Number.isFinite(peak)) s.peakRssDelta = Math.max(s.peakRssDelta ?? -Infinity, peak);
    this.series.set(id, s);
  }
  check(what: string, ours: ArrayLike<number>, theirs: ArrayLike<number>, tolerance: number): void {
    const diff = maxRelDiff(ours, theirs);
    const ok = diff <= tolerance;
    this.checks.push({ what, maxRelDiff: diff, tolerance, ok });
    process.stderr.write(`  check ${what}: ${diff.toExponential(2)} (tolerance ${tolerance})${ok ? '' : ' FAILED'}\n`);
    if (!ok) throw new Error(`bench: PyTorch and ours disagree on ${what}: max relative difference ${diff} > ${tolerance}; nothing of it is timed`);
  }
  json(error?: string): ChildOut & { error?: string } {
    return { series: [...this.series.values()], checks: this.checks, notes: this.notes, torch: this.torch, ...(error ? { error } : {}) };
  }
}

const THREADS = cpus().length >= 2 ? [1, 2] : [1];

async function startPeer(job: Issue14Job, out: Out): Promise<TorchPeer | null> {
  if (!job.python) return null;
  const peer = TorchPeer.start(job.python);
  const hello = await peer.send({ cmd: 'hello' });
  out.torch = { version: String(hello.torch), jacobian: String(hello.jacrev) };
  return peer;
}

async function stepJob(job: Issue14Job, out: Out, peer: TorchPeer | null): Promise<void> {
  const configs = [
    { key: 'step64f64', c: cnnCase(64, 8, 'float64'), tol: 1e-10 },
    { key: 'step64f32', c: cnnCase(64, 8, 'float32'), tol: 1e-3 },
    { key: 'step32f64', c: cnnCase(32, 8, 'float64'), tol: 1e-10 },
  ].map((k) => ({ ...k, b: buildCase(k.c) }));
  const multi = await multiCoreStep(THREADS[THREADS.length - 1]);
  if (!multi.supported) out.notes['step64f64.multicore'] = multi.reason;
  for (const k of configs) {
    const what = `VJP training step (vjpChain: forward, loss, backward, no update), cats-vs-dogs CNN ${k.c.target.kind === 'cnn' ? k.c.target.side : 0}²×3, B=8, ${k.c.dtype}`;
    const ours = () => vjpChain(k.b.stages!, k.b.x, k.b.yTrue, k.b.loss, FO);
    const res = await ours();
    if (peer) {
      await peer.load(k.key, writeModel(job.work, k.key, k.b.layers, k.b.x, k.b.yTrue, k.b.loss));
      const g = await peer.send({ cmd: 'grads', name: k.key, out: job.work });
      out.check(`${k.key} loss`, [res.loss], [g.loss as number], k.tol);
      const mine = res.dLoss_dWeights.flat().filter((t): t is Tensor => t !== null);
      const theirs = g.grads as { file: string; shape: number[] }[];
      if (mine.length !== theirs.length) throw new Error(`bench: ${k.key}: ours has ${mine.length} gradients, the peer ${theirs.length}`);
      const flat = (arrs: ArrayLike<number>[]) => Float64Array.from(arrs.flatMap((a) => Array.from(a)));
      out.check(`${k.key} dLoss/dW (all ${mine.length} weights)`, flat(mine.map((t) => t.data)), flat(theirs.map((t) => readFloat64(t.file, t.shape))), k.tol);
    }
    if (multi.supported && k.key === 'step64f64') {
      // The pool's gradients against vjpChain's before it is timed (fixed shards: equal to rounding, not bit for bit).
      const g = (await multi.run(k.b.stages!, k.b.x, k.b.yTrue, k.b.loss)) as { loss: number; dLoss_dWeights: (Tensor | null)[][] };
      const flat = (ts: (Tensor | null)[]) => Float64Array.from(ts.filter((t): t is Tensor => t !== null).flatMap((t) => Array.from(t.data)));
      out.check(`${k.key} multi-core loss vs vjpChain`, [g.loss], [res.loss], 1e-12);
      out.check(`${k.key} multi-core dLoss/dW vs vjpChain`, flat(g.dLoss_dWeights.flat()), flat(res.dLoss_dWeights.flat()), 1e-10);
    }
    Object.assign(k, { what, ours });
  }
  const runs = configs as (typeof configs[number] & { what: string; ours: () => Promise<unknown> })[];
  // Two warm-up rounds (JIT, torch's allocator), then the measured ones, one repeat of each piece of work after the other.
  for (let r = -2; r < job.settings.rounds; r++) {
    for (const k of runs) {
      const ms = await timeOnce(k.ours);
      if (r >= 0) out.add(`${k.key}.ours`, `${k.what}, ours, 1 thread`, ms);
      if (multi.supported && k.key === 'step64f64') {
        const mc = await timeOnce(() => multi.run(k.b.stages!, k.b.x, k.b.yTrue, k.b.loss));
        if (r >= 0) out.add(`${k.key}.multicore`, `${k.what}, ours on ${THREADS[THREADS.length - 1]} worker threads (${multi.what})`, mc);
      }
      if (peer) {
        for (const t of THREADS) {
          const a = await peer.send({ cmd: 'step', name: k.key, threads: t });
          if (r >= 0) out.add(`${k.key}.torch${t}`, `the same step in PyTorch (autograd.grad of the loss w.r.t. the weights), ${t} thread${t > 1 ? 's' : ''}`, a.ms as number);
        }
      }
    }
    process.stderr.write(r < 0 ? `  step warm-up round ${r + 3}/2\n` : `  step round ${r + 1}/${job.settings.rounds}\n`);
  }
  if (multi.supported) await multi.close?.();
}

async function jacobiansJob(job: Issue14Job, out: Out, peer: TorchPeer | null): Promise<void> {
  const b = buildCase(cnnCase(32, 1, 'float64', 0));
  const f = b.single!;
  const auto = autoDenseSupport();
  if (!auto.supported) {
    out.notes['jac.input.auto'] = auto.reason;
    out.notes['jac.weights.auto'] = auto.reason;
  }
  const ours = {
    input: { forward: () => jacobianWrtInput(f, b.x, FO), auto: () => jacobianWrtInput(f, b.x, { ...FO, mode: 'auto' }) },
    weights: { forward: () => jacobianWrtWeights(f, b.x, FO), auto: () => jacobianWrtWeights(f, b.x, { ...FO, mode: 'auto' }) },
  };
  const modes = auto.supported ? (['forward', 'auto'] as const) : (['forward'] as const);
  const what = (wrt: string) => `model_0 (cats-vs-dogs CNN 32²×3 up to its last pooling) dense Jacobian w.r.t. its ${wrt}, B=1, float64`;
  if (peer) await peer.load('m0', writeModel(job.work, 'm0', b.layers, b.x, null, null));
  for (const wrt of ['input', 'weights'] as const) {
    // The first run of each is checked (forward against auto, ours against PyTorch's) and not timed.
    const first = { forward: [] as Float64Array[], auto: [] as Float64Array[] };
    for (const m of modes) {
      const r = ours[wrt][m]();
      first[m] = (Array.isArray(r) ? r : [r]).map((J) => Float64Array.from(J.values.data));
    }
    const flat = (arrs: Float64Array[]) => Float64Array.from(arrs.flatMap((a) => Array.from(a)));
    if (auto.supported) out.check(`model_0 J w.r.t. ${wrt}: mode 'auto' against forward mode`, flat(first.auto), flat(first.forward), 1e-10);
    if (peer) {
      const a = await peer.send({ cmd: 'jac', name: 'm0', wrt, out: job.work });
      const js = a.jacobians as { file: string; shape: number[] }[];
      out.check(`model_0 J w.r.t. ${wrt}: PyTorch jacrev against ours`, flat(first.forward), flat(js.map((j) => readFloat64(j.file, j.shape))), 1e-10);
    }
    first.forward = [];
    first.auto = [];
  }
  for (let r = 0; r < job.settings.jacRounds; r++) {
    for (const wrt of ['input', 'weights'] as const) {
      for (const m of modes) out.add(`jac.${wrt}.${m}`, `${what(wrt)}, ours, ${m === 'forward' ? "the design card's forward mode" : "mode: 'auto'"}`, await timeOnce(ours[wrt][m]));
      if (peer) {
        for (const t of THREADS) {
          const a = await peer.send({ cmd: 'jac', name: 'm0', wrt, threads: t });
          out.add(`jac.${wrt}.torch${t}`, `${what(wrt)}, PyTorch ${out.torch?.jacobian}, ${t} thread${t > 1 ? 's' : ''}`, a.ms as number);
        }
      }
    }
    process.stderr.write(`  jacobians round ${r + 1}/${job.settings.jacRounds}\n`);
  }
}

async function explicitJob(job: Issue14Job, out: Out, streamed: boolean): Promise<void> {
  const side = job.side!;
  const id = `${streamed ? 'streamed' : 'explicit'}${side}`;
  if (streamed) {
    const s = await streamedSupport();
    if (!s.supported) {
      out.notes[id] = s.reason;
      return;
    }
    const b = buildCase(cnnCase(side, 8, 'float64'));
    // Every column of the step: each stage's trainable weights, and its input (per sample) but the first's.
    const columns = b.stages!.reduce((n, st, k) => n + trainableParams(st).reduce((m, p) => m + p.value.size, 0) + (k > 0 ? sizeOf(st.inputShape) : 0), 0);
    const cap = job.settings.streamedCapMs ?? 120_000;
    let base = 0;
    let lastDone = 0;
    let lastTotal = 0;
    let t0 = 0;
    const progress = (done: number, total: number) => {
      if (lastDone === lastTotal) base += lastTotal; // the last Jacobian ended: this block begins the next
      lastDone = done;
      lastTotal = total;
      if (performance.now() - t0 > cap) throw new StreamCap();
    };
    const run = () => {
      t0 = performance.now();
      base = lastDone = lastTotal = 0;
      try {
        return s.run(b.stages!, b.x, b.yTrue, b.loss, { ...FO, jacobian: { onProgress: progress } });
      } catch (e) {
        if (e instanceof StreamCap) return { capped: base + lastDone };
        throw e;
      }
    };
    const m = await measurePeak(run);
    const what = `the seed's explicit step, streamed (jacobianChain, { streamed: true }), cats-vs-dogs CNN ${side}²×3, B=8, float64`;
    out.add(id, what, m.ms, m.peakRssDelta);
    const done = (m.result as { capped?: number }).capped;
    if (done !== undefined) out.series.get(id)!.capped = { columnsDone: done, columns };
    return;
  } else {
    const b = buildCase(cnnCase(side, 8, 'float64'));
    // The target's step stores the weight Jacobians factored (CSR w.r.t. the layer's linear output times its patches ⊗ identity);
    // the same step with every Jacobian in CSR runs beside it, one repeat after the other, for the comparison.
    const ways = [
      { id, format: 'factored' as const },
      { id: `${id}.csr`, format: 'sparse' as const },
    ].map((w) => ({ ...w, run: () => jacobianChain(b.stages!, b.x, b.yTrue, b.loss, { ...FO, jacobian: { format: w.format, mode: 'auto' } }), what: `the seed's explicit step (jacobianChain, { format: '${w.format}', mode: 'auto' }), cats-vs-dogs CNN ${side}²×3, B=8, float64` }));
    // Their gradients, against the VJP chain's, before their time counts.
    const ref = await vjpChain(b.stages!, b.x, b.yTrue, b.loss, FO);
    const flat = (r: typeof ref) => Float64Array.from(r.dLoss_dWeights.flat().flatMap((t) => (t ? Array.from(t.data) : [])));
    const spent = new Map<string, number>();
    for (let r = 0; r < job.settings.explicitRounds; r++) {
      for (const w of ways) {
        // Further runs only while they are short: one run of 20 s says enough, three of 5 s say it better.
        if (r > 0 && (spent.get(w.id) ?? 0) >= 30_000) continue;
        const m = await measurePeak(w.run);
        if (r === 0) out.check(`explicit ${w.format} step ${side}² dLoss/dW against the VJP chain`, flat(m.result as Awaited<typeof ref>), flat(ref), 1e-10);
        spent.set(w.id, (spent.get(w.id) ?? 0) + m.ms);
        out.add(w.id, w.what, m.ms, m.peakRssDelta);
      }
    }
    return;
  }
}

/** Thrown from the streamed step's progress callback at the time cap. */
class StreamCap extends Error {}

async function main(): Promise<void> {
  const job = JSON.parse(readFileSync(process.argv[2], 'utf8')) as Issue14Job;
  mkdirSync(job.work, { recursive: true });
  const out = new Out();
  let peer: TorchPeer | null = null;
  let error: string | undefined;
  try {
    if (job.kind === 'step' || job.kind === 'jacobians') peer = await startPeer(job, out);
    if (job.kind === 'step') await stepJob(job, out, peer);
    else if (job.kind === 'jacobians') await jacobiansJob(job, out, peer);
    else await explicitJob(job, out, job.kind === 'streamed');
  } catch (e) {
    error = e instanceof Error ? e.message : String(e);
    process.stderr.write(`bench #14 ${job.kind}: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  } finally {
    await peer?.close();
  }
  writeFileSync(job.outFile, JSON.stringify(out.json(error)));
  process.exit(error ? 1 : 0);
}

main();

/**
 * Pipelining across two processes (issue #15 item 7): steps per second of `fitRemote` with each
 * batch in M micro-batches (GPipe-style) against the sequential step (M = 1), the client here and
 * a `jacobian-chain serve` child hosting the stages after the split, on loopback. The model is the
 * seed's CNN topology cut after its first conv block, so that both sides compute about as much;
 * the configurations run interleaved, round after round, and the medians are reported.
 * Run: npx tsx bench/pipeline.ts [--rounds 3] [--steps 8] [--batch 32] [--micro 1,2,4,8] [--filters 8,32,32]
 * @module
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { saveModelFile } from '../lib/model-io.js';
import { catsVsDogsCnn, seededBatch } from '../lib/models.js';
import { loadModelFile } from '../lib/model-io.js';
import type { OptimizerConfig } from '../lib/optimizers.js';
import { RemoteStageRunner } from '../lib/remote/client.js';
import { fitRemote } from '../lib/remote/fit.js';

const ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)));
const { values: v } = parseArgs({ options: { rounds: { type: 'string' }, steps: { type: 'string' }, batch: { type: 'string' }, micro: { type: 'string' }, filters: { type: 'string' } } });
const filters = (v.filters ?? '8,32,32').split(',').map(Number) as [number, number, number];
const rounds = Number(v.rounds ?? 3);
const steps = Number(v.steps ?? 8);
const batch = Number(v.batch ?? 32);
const micro = (v.micro ?? '1,2,4,8').split(',').map(Number);
const WARMUP = 2;
const SPLIT = 3;
const optimizer: OptimizerConfig = { name: 'sgd', learning_rate: 0.01, momentum: 0.9 };

const dir = mkdtempSync(join(tmpdir(), 'jc-pipeline-'));
const file = join(dir, 'model.json');
saveModelFile(catsVsDogsCnn({ side: 32, channels: 3, filters, units: 32 }), file);
const server = spawn(process.execPath, ['--import', 'tsx', 'bin/cli.ts', 'serve', '--model', file, '--split', String(SPLIT), '--stages', '1..', '--port', '0', '--max-seconds', '1800'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
let printed = '';
const port = await new Promise<number>((ok, fail) => {
  const timer = setTimeout(() => fail(new Error(`serve did not listen within 60 s: ${printed}`)), 60_000);
  server.stdout!.on('data', (d: Buffer) => {
    printed += d.toString();
    const m = /listening on 127\.0\.0\.1:(\d+)/.exec(printed);
    if (m) {
      clearTimeout(timer);
      ok(Number(m[1]));
    }
  });
  server.on('exit', (code) => fail(new Error(`serve exited with ${code}: ${printed}`)));
});

/** One run of `steps` timed steps (after the warm-up) with `m` micro-batches; a client id of its own on the shared server. */
/** CPU milliseconds the server process has used (user + system, from /proc; 0 where there is none). */
function serverCpuMs(): number {
  try {
    const fields = readFileSync(`/proc/${server.pid}/stat`, 'utf8').split(') ')[1].split(' ');
    // utime and stime, fields 14 and 15 of stat(5), in clock ticks of 10 ms (CLK_TCK 100 on Linux).
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return 0;
  }
}

async function run(m: number, round: number): Promise<{ stepsPerSecond: number; remoteMs: number; wireMs: number; clientCpuMs: number; serverCpuMs: number }> {
  const [model_0] = loadModelFile(file).split([SPLIT]);
  const remote = await RemoteStageRunner.connect({ address: `127.0.0.1:${port}`, clientId: `m${m}-r${round}`, timeoutMs: 120_000 }, optimizer);
  const data = seededBatch(model_0.inputShape, { batch: (WARMUP + steps) * batch, seed: round });
  const ms: number[] = [];
  const remoteMs: number[] = [];
  const wireMs: number[] = [];
  let cpu0 = { client: 0, server: 0 };
  await fitRemote([model_0], remote, data, { loss: 'binary_crossentropy', optimizer, batchSize: batch, shuffle: false, microBatches: m, onStep: (s) => {
    ms.push(s.stepMs);
    remoteMs.push(s.wire.remoteComputeMs);
    wireMs.push(s.wire.wireMs);
    if (ms.length === WARMUP) cpu0 = { client: cpuMs(), server: serverCpuMs() };
  } });
  const cpu = { client: cpuMs() - cpu0.client, server: serverCpuMs() - cpu0.server };
  remote.close();
  const timed = ms.slice(WARMUP);
  const total = timed.reduce((a, b) => a + b, 0);
  const mean = (xs: number[]) => xs.slice(WARMUP).reduce((a, b) => a + b, 0) / timed.length;
  return { stepsPerSecond: (timed.length * 1000) / total, remoteMs: mean(remoteMs), wireMs: mean(wireMs), clientCpuMs: cpu.client / timed.length, serverCpuMs: cpu.server / timed.length };
}

function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const results = new Map<number, Awaited<ReturnType<typeof run>>[]>(micro.map((m) => [m, []]));
try {
  for (let r = 0; r < rounds; r++) for (const m of micro) results.get(m)!.push(await run(m, r));
} finally {
  server.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
}
const base = median(results.get(micro[0])!.map((x) => x.stepsPerSecond));
console.log(`pipelining across two processes, ${new Date().toISOString().slice(0, 10)}, ${cpus().length} cores (${cpus()[0]?.model ?? 'unknown'}), node ${process.version}`);
console.log(`model: catsVsDogsCnn 32x32x3, filters ${filters.join(',')}, units 32, split at layer ${SPLIT} (client: conv block 1; server: conv blocks 2-3 and the dense head); batch ${batch}, float64, SGD; ${rounds} interleaved rounds of ${steps} steps after ${WARMUP} warm-up, medians`);
// With calls in flight at once, wire time is summed over overlapping calls: only indicative when pipelined.
console.log('| micro-batches | steps/s | speed-up vs sequential | ms/step | CPU ms/step, client | CPU ms/step, server | server compute ms/step | wire ms/step (summed over calls) |');
console.log('| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
for (const m of micro) {
  const rs = results.get(m)!;
  const sps = median(rs.map((x) => x.stepsPerSecond));
  const med = (f: (x: (typeof rs)[number]) => number) => median(rs.map(f)).toFixed(1);
  console.log(`| ${m === 1 ? '1 (sequential)' : m} | ${sps.toFixed(2)} | ${(sps / base).toFixed(2)}x | ${(1000 / sps).toFixed(1)} | ${med((x) => x.clientCpuMs)} | ${med((x) => x.serverCpuMs)} | ${med((x) => x.remoteMs)} | ${med((x) => x.wireMs)} |`);
}

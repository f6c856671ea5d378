import { join } from 'node:path';
import { loadModelFile } from '../../lib/model-io.js';
import { StageServer } from '../../lib/remote/server.js';
import { encodeTensor } from '../../lib/remote/wire.js';
import { Sequential } from '../../lib/sequential.js';
import { modelFileFixture, script } from '../helpers/remote.js';
import { expect } from '../helpers/setup.js';

const CLIENTS = 8;
const STEPS = 50;
const RETRY_AT = 25;


/** The `q`-quantile of `xs` (nearest rank). */
function quantile(xs: readonly number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
}

describe('remote/load: 8 data holders x 50 steps on one shared stage server, on localhost', function () {
  this.timeout(300_000);
  const fixture = modelFileFixture('load_spec');

  it('every (client, step id) is applied exactly once, none lost, a retried Apply not applied again; prints throughput and p50/p99 step latency', async () => {
    const hosted = loadModelFile(fixture.file()).split([3]).slice(1);
    const before = hosted.flatMap((s) => s.layers.map((l) => l.params.map((p) => Buffer.from(encodeTensor(p.value).data).toString('hex')).join('|')));
    const applied: { client: string; step: number; at: number }[] = [];
    const server = new StageServer(hosted, {
      log: (line) => {
        const m = /^step (\d+) of client "(c\d+)": received/.exec(line);
        if (m) applied.push({ client: m[2], step: Number(m[1]), at: performance.now() });
      },
    });
    const { port } = await server.listen();
    const kids = Array.from({ length: CLIENTS }, (_, i) => script('spec/helpers/load-client.ts', ['--port', String(port), '--client', `c${i}`, '--model', fixture.file(), '--steps', String(STEPS), '--seed', String(100 + i), '--retry-at', String(RETRY_AT)]));
    try {
      const exits = await Promise.all(kids.map((k) => k.exited(240_000)));
      const reports = kids.map((k, i) => {
        expect(exits[i], `client c${i} exited cleanly; it printed: ${k.out.join('')}`).to.deep.equal({ code: 0, signal: null });
        const line = k.out.join('').trim().split('\n').pop()!;
        return JSON.parse(line) as { client: string; steps: number; stopped: string | null; stepMs: number[]; retries: { stepId: number; applied: boolean }[] };
      });

      // The clients' view: each trained all its steps, and its retried Apply moved nothing.
      for (const [i, r] of reports.entries()) {
        expect(r.client).to.equal(`c${i}`);
        expect(r.stopped).to.equal(null);
        expect(r.steps).to.equal(STEPS);
        expect(r.stepMs).to.have.length(STEPS);
        expect(r.retries).to.deep.equal([{ stepId: RETRY_AT, applied: false }]);
      }
      // The server's view: 400 steps, 50 per client, ids 0..49 each exactly once, the retry counted and not applied.
      expect(server.steps).to.equal(CLIENTS * STEPS);
      const sessions = server.clients().sort((a, b) => a.clientId.localeCompare(b.clientId, 'en', { numeric: true }));
      expect(sessions).to.deep.equal(Array.from({ length: CLIENTS }, (_, i) => ({ clientId: `c${i}`, appliedSteps: STEPS, firstApplied: 0, lastApplied: STEPS - 1, repeatedApplies: 1 })));
      expect(applied).to.have.length(CLIENTS * STEPS);
      const keys = new Set(applied.map((a) => `${a.client}/${a.step}`));
      expect(keys.size).to.equal(CLIENTS * STEPS);
      for (let i = 0; i < CLIENTS; i++) for (let s = 0; s < STEPS; s++) expect(keys.has(`c${i}/${s}`), `c${i} step ${s} applied`).to.equal(true);
      // Each client's steps in its own order, the clients' interleaved: the server served them at once, one step at a time.
      for (let i = 0; i < CLIENTS; i++) expect(applied.filter((a) => a.client === `c${i}`).map((a) => a.step)).to.deep.equal(Array.from({ length: STEPS }, (_, s) => s));
      const switches = applied.filter((a, k) => k > 0 && a.client !== applied[k - 1].client).length;
      expect(switches, 'the clients\' steps interleave').to.be.greaterThan(CLIENTS * 5);
      const after = hosted.flatMap((s) => s.layers.map((l) => l.params.map((p) => Buffer.from(encodeTensor(p.value).data).toString('hex')).join('|')));
      after.forEach((b, i) => b !== '' && expect(b, `hosted layer ${i} moved`).to.not.equal(before[i]));

      const seconds = (applied[applied.length - 1].at - applied[0].at) / 1000;
      const latencies = reports.flatMap((r) => r.stepMs);
      const p50 = quantile(latencies, 0.5);
      const p99 = quantile(latencies, 0.99);
      console.log(`      load: ${CLIENTS} clients x ${STEPS} steps = ${applied.length} steps applied in ${seconds.toFixed(2)} s (first to last Apply): ${((applied.length - 1) / seconds).toFixed(1)} steps/s; step latency p50 ${p50.toFixed(1)} ms, p99 ${p99.toFixed(1)} ms (client wall time per step)`);
      expect(p50).to.be.greaterThan(0);
      expect(p99).to.be.at.least(p50);
    } finally {
      for (const k of kids) if (k.child.exitCode === null) k.child.kill('SIGKILL');
      await server.close();
    }
  });
});

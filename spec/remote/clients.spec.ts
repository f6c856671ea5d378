import { join } from 'node:path';
import { LocalStageRunner, toMessage, vjpChain } from '../../lib/chain.js';
import { loadModelFile } from '../../lib/model-io.js';
import { seededBatch } from '../../lib/models.js';
import { type OptimizerConfig, optimizerFromConfig } from '../../lib/optimizers.js';
import { RemoteStageRunner } from '../../lib/remote/client.js';
import { fitRemote } from '../../lib/remote/fit.js';
import { StageServer } from '../../lib/remote/server.js';
import { encodeTensor } from '../../lib/remote/wire.js';
import { Sequential } from '../../lib/sequential.js';
import type { Tensor } from '../../lib/tensor.js';
import { stepSeed, takeRows } from '../../lib/train.js';
import { EXIT } from '../../bin/exit-codes.js';
import { cli, modelFileFixture, serve, stop } from '../helpers/remote.js';
import { expect, expectReject } from '../helpers/setup.js';

const LOSS = 'binary_crossentropy';
const ADAM: OptimizerConfig = { name: 'adam', learning_rate: 0.01 };


function bits(layers: readonly (readonly Tensor[])[]): string[] {
  return layers.map((ps) => ps.map((t) => Buffer.from(encodeTensor(t).data).toString('hex')).join('|'));
}

function weightsOf(s: Sequential): Tensor[][] {
  return s.layers.map((l) => l.params.map((p) => p.value));
}

describe('remote/clients: many data holders, one model_0 each, one shared server stage', function () {
  this.timeout(120_000);
  const fixture = modelFileFixture('clients_spec');

  it('three clients at once: the shared stage ends as one process running their steps in the order the server applied them, bit for bit', async () => {
    const order: { client: string; step: number }[] = [];
    const server = new StageServer(loadModelFile(fixture.file()).split([3]).slice(1), {
      log: (line) => {
        const m = /^step (\d+) of client "(\w+)": received/.exec(line);
        if (m) order.push({ client: m[2], step: Number(m[1]) });
      },
    });
    const { port } = await server.listen();
    const names = ['a', 'b', 'c'];
    const STEPS = 4;
    const BATCH = 2;
    const data = names.map((_, i) => seededBatch([5, 5, 1], { batch: STEPS * BATCH, seed: 20 + i }));
    const seeds = names.map((_, i) => 7 + i);
    const locals = names.map(() => loadModelFile(fixture.file()).split([3])[0]);
    const remotes: RemoteStageRunner[] = [];
    try {
      for (const id of names) remotes.push(await RemoteStageRunner.connect({ address: `127.0.0.1:${port}`, clientId: id, timeoutMs: 20_000 }, ADAM));
      const results = await Promise.all(names.map((_, i) => fitRemote([locals[i]], remotes[i], data[i], { loss: LOSS, optimizer: ADAM, batchSize: BATCH, shuffle: false, seed: seeds[i] })));
      results.forEach((r) => expect(r.steps).to.equal(STEPS));
      expect(order).to.have.length(names.length * STEPS);
      const switches = order.filter((o, k) => k > 0 && o.client !== order[k - 1].client).length;
      expect(switches, `the steps interleave: ${JSON.stringify(order)}`).to.be.at.least(3);

      // The replay: one process, one shared stage and its one optimizer, each client's own model_0 and optimizer.
      const replay = async (sequence: { client: string; step: number }[]) => {
        const shared = loadModelFile(fixture.file()).split([3])[1];
        const sharedOpt = optimizerFromConfig(ADAM);
        const own = names.map(() => loadModelFile(fixture.file()).split([3])[0]);
        const ownOpt = names.map(() => optimizerFromConfig(ADAM));
        for (const { client, step } of sequence) {
          const i = names.indexOf(client);
          const rows = Array.from({ length: BATCH }, (_, r) => step * BATCH + r);
          const res = await vjpChain([own[i], shared], takeRows(data[i].x, rows), takeRows(data[i].y, rows), LOSS, { training: true, seed: stepSeed(seeds[i], step) });
          own[i].layers.forEach((l, k) => ownOpt[i].step(l.params, res.dLoss_dWeights[k]));
          shared.layers.forEach((l, k) => sharedOpt.step(l.params, res.dLoss_dWeights[own[i].layers.length + k]));
        }
        return { shared: bits(weightsOf(shared)), own: own.map((m) => bits(weightsOf(m))) };
      };
      const ref = await replay(order);
      expect(bits(await remotes[0].weights())).to.deep.equal(ref.shared);
      names.forEach((_, i) => expect(bits(weightsOf(locals[i])), `client ${names[i]}'s model_0`).to.deep.equal(ref.own[i]));
      // The order matters (the shared optimizer's moments): client by client gives other weights.
      const byClient = [...order].sort((x, y) => x.client.localeCompare(y.client) || x.step - y.step);
      expect((await replay(byClient)).shared).to.not.deep.equal(ref.shared);
      expect(server.clients().map((c) => [c.clientId, c.appliedSteps, c.lastApplied])).to.deep.equal(names.map((n) => [n, STEPS, STEPS - 1]));
    } finally {
      remotes.forEach((r) => r.close());
      await server.close();
    }
  });

  it('step ids are per client; a client silent past the lease loses its step (ABORTED) and the waiting client goes on', async () => {
    const lines: string[] = [];
    const server = new StageServer(loadModelFile(fixture.file()).split([3]).slice(1), { leaseMs: 400, log: (l) => lines.push(l) });
    const { port } = await server.listen();
    const address = `127.0.0.1:${port}`;
    let a: RemoteStageRunner | null = null;
    let b: RemoteStageRunner | null = null;
    try {
      a = await RemoteStageRunner.connect({ address, clientId: 'a', timeoutMs: 20_000 }, ADAM);
      b = await RemoteStageRunner.connect({ address, clientId: 'b', timeoutMs: 20_000 }, ADAM);
      const model_0 = loadModelFile(fixture.file()).split([3])[0];
      const batch = seededBatch([5, 5, 1], { batch: 2, seed: 1 });
      // a holds the shared stages with its step 0 and goes silent.
      a.beginStep(0, { training: true, seed: 3 });
      const h = await new LocalStageRunner(model_0, { training: true, seed: 3 }).forward(toMessage(batch.x));
      const y = await a.forward(h);
      // b's step 0 (its own id 0, not a's) waits for the lease, then runs.
      const t0 = performance.now();
      const res = await fitRemote([loadModelFile(fixture.file()).split([3])[0]], b, batch, { loss: LOSS, optimizer: ADAM, batchSize: 2 });
      const waited = performance.now() - t0;
      expect(res.steps).to.equal(1);
      expect(waited, 'b waited for a\'s lease').to.be.at.least(350);
      expect(lines.join('\n')).to.match(/client "a": step 0 dropped, silent for 400 ms while 1 waited/);
      await expectReject(a.backward(y), /ABORTED: Backward: Backward of step 0 of client "a": the step was dropped, its client silent for over 400 ms while another waited; expected the step again from its Forward/);
      await expectReject(a.apply(), /ABORTED: .*step 0 of client "a": the step was dropped/);
      // From its Forward again, a's step 0 runs and is applied.
      await a.forward(h);
      await a.backward(toMessage(batch.y));
      expect(await a.apply()).to.deep.equal({ applied: true, appliedSteps: 1 });
      expect(server.steps).to.equal(2);
      expect(server.clients().map((c) => [c.clientId, c.appliedSteps, c.firstApplied, c.lastApplied])).to.deep.equal([['a', 1, 0, 0], ['b', 1, 0, 0]]);
    } finally {
      a?.close();
      b?.close();
      await server.close();
    }
  });

  it('jacobian-chain serve and two train --connect --client-id processes at once: each trains its steps, the server logs them per client', async () => {
    const server = await serve(['--model', fixture.file(), '--split', '3', '--stages', '1..', '--max-clients', '2']);
    try {
      const train = (id: string, seed: string) => cli(['train', '--connect', `127.0.0.1:${server.port}`, '--model', fixture.file(), '--split', '3', '--client-id', id, '--seed', seed, '--examples', '8', '--batch-size', '2', '--timeout-ms', '20000']);
      const kids = [train('clinic-a', '1'), train('clinic-b', '2')];
      const exits = await Promise.all(kids.map((k) => k.exited(120_000)));
      exits.forEach((e, i) => expect(e.code, kids[i].out.join('')).to.equal(EXIT.ok));
      for (const k of kids) expect(k.out.join('')).to.match(/^total: 4 steps/m);
      for (const id of ['clinic-a', 'clinic-b']) for (const step of [0, 1, 2, 3]) await server.waitFor(new RegExp(`step ${step} of client "${id}": received \\d+ B`), 5000);
      const bad = cli(['train', '--connect', `127.0.0.1:${server.port}`, '--model', fixture.file(), '--client-id', 'no spaces']);
      expect((await bad.exited(60_000)).code).to.equal(EXIT.usage);
      expect(bad.out.join('')).to.match(/expected --client-id to be 1 to 64 of \[A-Za-z0-9._-\], received "no spaces"/);
      const helps = [cli(['serve', '--help']), cli(['train', '--connect', 'x', '--help'])];
      await Promise.all(helps.map((h) => h.exited(60_000)));
      for (const o of ['--max-clients <n>', '--lease-ms <n>']) expect(helps[0].out.join('')).to.include(o);
      for (const o of ['--client-id <id>', '--micro-batches <m>']) expect(helps[1].out.join('')).to.include(o);
    } finally {
      await stop(server);
    }
  });

  it('refused: a second client on a checkpointing server, a malformed client id, more clients than --max-clients', async () => {
    const cpDir = join(fixture.dir(), 'cp');
    const server = new StageServer(loadModelFile(fixture.file()).split([3]).slice(1), { checkpoint: { dir: cpDir, every: 2 } });
    const { port } = await server.listen();
    const address = `127.0.0.1:${port}`;
    const open: RemoteStageRunner[] = [];
    try {
      open.push(await RemoteStageRunner.connect({ address, clientId: 'a' }, ADAM));
      await expectReject(RemoteStageRunner.connect({ address, clientId: 'b' }, ADAM), /FAILED_PRECONDITION: Open: this server keeps checkpoints \(serve --checkpoint\), which hold one client's session, and client "a" has it; expected one client, or serve without --checkpoint for many, received client "b"/);
      await expectReject(RemoteStageRunner.connect({ address }, ADAM), /received client ""/);
      await expectReject(RemoteStageRunner.connect({ address, clientId: 'bad id!' }, ADAM), /expected clientId to be 1 to 64 of \[A-Za-z0-9._-\], received "bad id!"/);
    } finally {
      open.forEach((r) => r.close());
      await server.close();
    }
    const few = new StageServer(loadModelFile(fixture.file()).split([3]).slice(1), { maxClients: 2 });
    const p2 = await few.listen();
    try {
      open.push(await RemoteStageRunner.connect({ address: `127.0.0.1:${p2.port}`, clientId: 'a' }, ADAM));
      open.push(await RemoteStageRunner.connect({ address: `127.0.0.1:${p2.port}` }, ADAM));
      await expectReject(RemoteStageRunner.connect({ address: `127.0.0.1:${p2.port}`, clientId: 'c' }, ADAM), /RESOURCE_EXHAUSTED: Open: this server takes at most 2 clients and has 2; received another, client "c"/);
      // A client that reconnects keeps its session (and its place among the 2).
      open.push(await RemoteStageRunner.connect({ address: `127.0.0.1:${p2.port}`, clientId: 'a' }, ADAM));
    } finally {
      open.forEach((r) => r.close());
      await few.close();
    }
  });
});

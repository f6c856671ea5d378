import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Conv2D } from '../../lib/layers/conv2d.js';
import { Dense } from '../../lib/layers/dense.js';
import { Dropout } from '../../lib/layers/dropout.js';
import { Flatten } from '../../lib/layers/flatten.js';
import { loadModelFile, saveModelFile } from '../../lib/model-io.js';
import { seededBatch } from '../../lib/models.js';
import { Adam, SGD } from '../../lib/optimizers.js';
import { listCheckpoints, paramsFromCheckpoint, paramsToCheckpoint, readCheckpoint, writeCheckpoint } from '../../lib/remote/checkpoint.js';
import { encodeTensor } from '../../lib/remote/wire.js';
import { Rng } from '../../lib/rng.js';
import { Sequential } from '../../lib/sequential.js';
import type { Tensor } from '../../lib/tensor.js';
import { fit } from '../../lib/train.js';
import { EXIT } from '../../bin/exit-codes.js';
import { type Child, cli, serve, stop } from '../helpers/remote.js';
import { expect } from '../helpers/setup.js';

function smallModel(): Sequential {
  return new Sequential(
    [new Conv2D({ filters: 3, kernel_size: 2, activation: 'relu' }), new Dropout({ rate: 0.25 }), new Flatten(), new Dense({ units: 6, activation: 'relu' }), new Dropout({ rate: 0.5 }), new Dense({ units: 1, activation: 'sigmoid' })],
    { inputShape: [5, 5, 1], rng: new Rng(11), name: 'checkpoint_spec' },
  );
}

function bits(model: Sequential): string[] {
  return model.layers.map((l) => l.params.map((p) => Buffer.from(encodeTensor(p.value).data).toString('hex')).join('|'));
}

// 40 examples, batch 2, 3 epochs: 60 steps of 20 an epoch, checkpoints every 4.
const EXAMPLES = 40;
const STEPS = 60;
const TRAIN = ['--split', '3', '--examples', String(EXAMPLES), '--batch-size', '2', '--epochs', '3', '--optimizer', 'adam', '--lr', '0.01', '--seed', '4', '--timeout-ms', '20000', '--checkpoint-every', '4'];

describe('remote/checkpoint: atomic checkpoints, and resuming after a SIGKILL', function () {
  this.timeout(180_000);
  let dir: string;
  let file: string;
  let reference: string[];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'jc-checkpoint-'));
    file = join(dir, 'model.json');
    saveModelFile(smallModel(), file);
    // The uninterrupted run: train --connect's data and options, in one process (bit-identical to two, spec/remote.spec.ts).
    const single = loadModelFile(file);
    const data = seededBatch([5, 5, 1], { batch: EXAMPLES, seed: 4, dtype: 'float64', labels: 1 });
    const res = await fit(single, data, { split: [3], loss: 'binary_crossentropy', optimizer: { name: 'adam', learning_rate: 0.01 }, epochs: 3, batchSize: 2, seed: 4 });
    expect(res.steps).to.equal(STEPS);
    reference = bits(single);
    expect(reference).to.not.deep.equal(bits(loadModelFile(file)));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('weights and optimizer slots come back bit for bit, only the newest few files are kept, and no temporary file is left', () => {
    const cp = { dir: join(dir, 'unit'), every: 1, keep: 2 };
    const model = smallModel();
    const opt = new Adam({ learning_rate: 0.01 });
    const grads = model.layers.map((l) => l.params.map((p) => p.value));
    model.layers.forEach((l, i) => opt.step(l.params, grads[i] as Tensor[]));
    for (const steps of [1, 2, 3]) writeCheckpoint(cp, 'client', steps, paramsToCheckpoint(model.params, opt));
    expect(listCheckpoints(cp.dir, 'client')).to.deep.equal([2, 3]);
    expect(readdirSync(cp.dir).sort()).to.deep.equal(['client-2.json', 'client-3.json']);
    const other = smallModel();
    const opt2 = new Adam({ learning_rate: 0.01 });
    paramsFromCheckpoint(other.params, opt2, readCheckpoint(cp.dir, 'client', 3), 'spec');
    expect(bits(other)).to.deep.equal(bits(model));
    // The slots too: one more identical step on both gives identical weights.
    model.layers.forEach((l, i) => opt.step(l.params, grads[i] as Tensor[]));
    other.layers.forEach((l, i) => opt2.step(l.params, grads[i] as Tensor[]));
    expect(bits(other)).to.deep.equal(bits(model));
    expect(() => paramsFromCheckpoint(other.params, new SGD(), readCheckpoint(cp.dir, 'client', 3), 'spec')).to.throw(/sgd\.loadState: parameter 0 \(kernel\): expected \{t, a: \d+ values, b: 0 values\}/);
  });

  /** Runs train --connect to the end, after a kill; returns its output. */
  async function finish(port: number, clientDir: string, out: string): Promise<string> {
    const again = cli(['train', '--connect', `127.0.0.1:${port}`, '--model', file, ...TRAIN, '--checkpoint', clientDir, '--out', out]);
    const r = await again.exited(120_000);
    const text = again.out.join('');
    expect(r.code, text).to.equal(0);
    return text;
  }

  it('the client SIGKILLed in the middle of an epoch: restarted, it resumes from its checkpoint, the server rolls back to the same step, and the weights end bit-identical', async () => {
    const serverDir = join(dir, 'kill-client-server');
    const clientDir = join(dir, 'kill-client-client');
    const out = join(dir, 'kill-client.json');
    const server = await serve(['--model', file, '--split', '3', '--stages', '1..', '--checkpoint', serverDir, '--checkpoint-every', '4']);
    let client: Child | null = null;
    try {
      client = cli(['train', '--connect', `127.0.0.1:${server.port}`, '--model', file, ...TRAIN, '--checkpoint', clientDir, '--out', out]);
      await client.waitFor(/step 25 \(epoch 2, batch 6\/20\)/, 90_000);
      client.child.kill('SIGKILL');
      const r = await client.exited(10_000);
      expect(r.signal).to.equal('SIGKILL');
      const saved = listCheckpoints(clientDir, 'client');
      expect(saved.length).to.be.greaterThan(0);
      const last = saved[saved.length - 1];
      expect(last).to.be.within(24, STEPS - 4);
      const text = await finish(server.port, clientDir, out);
      expect(text).to.match(new RegExp(`resuming from the checkpoint at step ${last} in`));
      expect(text).to.match(new RegExp(`step ${last} \\(epoch ${Math.floor(last / 20) + 1}, batch ${(last % 20) + 1}/20\\)`));
      expect(text).to.match(/total: 60 steps/);
      expect(bits(loadModelFile(out))).to.deep.equal(reference);
    } finally {
      if (client) await stop(client);
      await stop(server);
    }
    expect(server.out.join('')).to.match(/step 59: received/);
  });

  it('the server SIGKILLed in the middle of an epoch: the client exits with the peer code, both restart from their checkpoints, and the weights end bit-identical', async () => {
    const serverDir = join(dir, 'kill-server-server');
    const clientDir = join(dir, 'kill-server-client');
    const out = join(dir, 'kill-server.json');
    const args = ['--model', file, '--split', '3', '--stages', '1..', '--checkpoint', serverDir, '--checkpoint-every', '4'];
    const server = await serve(args);
    let client: Child | null = null;
    let restarted: (Child & { port: number }) | null = null;
    try {
      client = cli(['train', '--connect', `127.0.0.1:${server.port}`, '--model', file, ...TRAIN, '--checkpoint', clientDir, '--out', out]);
      await client.waitFor(/step 33 \(epoch 2, batch 14\/20\)/, 90_000);
      server.child.kill('SIGKILL');
      expect((await server.exited(10_000)).signal).to.equal('SIGKILL');
      const r = await client.exited(60_000);
      const text = client.out.join('');
      expect(r.code, text).to.equal(EXIT.peer);
      expect(text).to.match(new RegExp(`jacobian-chain train: stage server 127\\.0\\.0\\.1:${server.port}: .*(could not reach it|no answer within the deadline)`));
      const serverSaved = listCheckpoints(serverDir, 'server');
      const clientSaved = listCheckpoints(clientDir, 'client');
      // The server writes before it answers, the client after: the server's newest is never older.
      expect(serverSaved[serverSaved.length - 1]).to.be.at.least(clientSaved[clientSaved.length - 1]);
      expect(serverSaved[serverSaved.length - 1]).to.be.below(STEPS);
      restarted = await serve(args);
      expect(restarted.out.join('')).to.match(new RegExp(`resumed from the checkpoint at step ${serverSaved[serverSaved.length - 1]} in`));
      const done = await finish(restarted.port, clientDir, out);
      expect(done).to.match(new RegExp(`resuming from the checkpoint at step ${clientSaved[clientSaved.length - 1]} in`));
      expect(bits(loadModelFile(out))).to.deep.equal(reference);
    } finally {
      if (client) await stop(client);
      await stop(server);
      if (restarted) await stop(restarted);
    }
  });
});

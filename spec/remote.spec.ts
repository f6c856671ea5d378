import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { type Server as NetServer, type Socket, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { LocalStageRunner, fromMessage, toMessage, vjpChain } from '../lib/chain.js';
import { Conv2D } from '../lib/layers/conv2d.js';
import { Dense } from '../lib/layers/dense.js';
import { Dropout } from '../lib/layers/dropout.js';
import { Flatten } from '../lib/layers/flatten.js';
import { loadModelFile, saveModelFile } from '../lib/model-io.js';
import { seededBatch } from '../lib/models.js';
import type { OptimizerConfig } from '../lib/optimizers.js';
import { RemoteStageRunner } from '../lib/remote/client.js';
import { fitRemote } from '../lib/remote/fit.js';
import { StageServer } from '../lib/remote/server.js';
import { signatureMismatch, stagesSignature } from '../lib/remote/signature.js';
import { TOKEN_KEY, type WireTensor, encodeTensor, stageService } from '../lib/remote/wire.js';
import { Rng } from '../lib/rng.js';
import { Sequential } from '../lib/sequential.js';
import { type Tensor, tensor, zeros } from '../lib/tensor.js';
import { fit, stepSeed } from '../lib/train.js';
import { run as serveRun } from '../bin/commands/serve.js';
import { run as trainRun } from '../bin/commands/train.js';
import { EXIT } from '../bin/exit-codes.js';
import { expect, expectReject } from './helpers/setup.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SPLIT = [3];
const LOSS = 'binary_crossentropy';

/** Conv2D · Dropout · Flatten | Dense(relu) · Dropout · Dense(sigmoid): Dropout on both sides of the split, so masks are drawn in both processes. */
function smallModel(): Sequential {
  return new Sequential(
    [new Conv2D({ filters: 3, kernel_size: 2, activation: 'relu' }), new Dropout({ rate: 0.25 }), new Flatten(), new Dense({ units: 6, activation: 'relu' }), new Dropout({ rate: 0.5 }), new Dense({ units: 1, activation: 'sigmoid' })],
    { inputShape: [5, 5, 1], rng: new Rng(11), name: 'remote_spec' },
  );
}

/** The weights' bytes, layer by layer: equal strings are bit-identical weights. */
function bits(layers: readonly (readonly (Tensor | null)[])[]): string[] {
  return layers.map((ps) => ps.map((t) => (t === null ? 'null' : Buffer.from(encodeTensor(t).data).toString('hex'))).join('|'));
}

function weightsOf(model: Sequential): Tensor[][] {
  return model.layers.map((l) => l.params.map((p) => p.value));
}

/** `node --import tsx bin/cli.ts serve ...` on a free loopback port; resolves once it says where it listens. */
function startServer(args: string[]): Promise<{ child: ChildProcess; port: number; out: string[] }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'bin/cli.ts', 'serve', ...args, '--port', '0', '--max-seconds', '240'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const out: string[] = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGTERM');
      reject(new Error(`serve did not say where it listens within 60 s; it printed: ${out.join('')}`));
    }, 60_000);
    child.stdout!.on('data', (d: Buffer) => {
      out.push(d.toString());
      const m = /listening on 127\.0\.0\.1:(\d+)/.exec(out.join(''));
      if (m) {
        clearTimeout(timer);
        resolve({ child, port: Number(m[1]), out });
      }
    });
    child.stderr!.on('data', (d: Buffer) => out.push(d.toString()));
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`serve exited with ${code} before listening: ${out.join('')}`));
    });
  });
}

function stopServer(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      resolve();
    }, 5000);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

/** A raw client of the Stage service, for sending what RemoteStageRunner never would. */
function rawClient(port: number): { call: (method: string, req: unknown, token?: string) => Promise<unknown>; close: () => void } {
  const Client = grpc.makeGenericClientConstructor(stageService(), 'Stage');
  const c = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as Record<string, (req: unknown, md: grpc.Metadata, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null, r?: unknown) => void) => void> & grpc.Client;
  return {
    call: (method, req, token) =>
      new Promise((resolve, reject) => {
        const md = new grpc.Metadata();
        if (token) md.set(TOKEN_KEY, token);
        c[method](req, md, { deadline: Date.now() + 10_000 }, (e, r) => (e ? reject(Object.assign(new Error(`${grpc.status[e.code]}: ${e.details}`), { code: e.code })) : resolve(r)));
      }),
    close: () => c.close(),
  };
}

describe('remote stages over gRPC (issue #15)', function () {
  this.timeout(180_000);
  let dir: string;
  let file: string;
  const data = seededBatch([5, 5, 1], { batch: 10, seed: 3 });

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'jc-remote-'));
    file = join(dir, 'model.json');
    saveModelFile(smallModel(), file);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  describe('two processes train as one: bit-identical to the single-process fit (VJP way, Dropout in training)', () => {
    const cases: [string, OptimizerConfig][] = [
      ['SGD with momentum', { name: 'sgd', learning_rate: 0.1, momentum: 0.9 }],
      ['Adam', { name: 'adam', learning_rate: 0.01 }],
    ];
    for (const [label, optimizer] of cases) {
      it(`${label}: 6 steps, every weight bit for bit`, async () => {
        const server = await startServer(['--model', file, '--split', '3', '--stages', '1..']);
        let remote: RemoteStageRunner | null = null;
        try {
          const stages = loadModelFile(file).split(SPLIT);
          remote = await RemoteStageRunner.connect({ address: `127.0.0.1:${server.port}`, timeoutMs: 20_000 }, optimizer);
          const traffic: { sent: number; received: number }[] = [];
          const opts = { loss: LOSS, optimizer, epochs: 2, batchSize: 4, seed: 5 } as const;
          const res = await fitRemote([stages[0]], remote, data, { ...opts, onStep: (s) => traffic.push({ sent: s.wire.sentBytes, received: s.wire.receivedBytes }) });
          expect(res.stopped).to.equal(null);
          expect(res.steps).to.equal(6);
          const across = [...weightsOf(stages[0]), ...(await remote.weights())];

          const single = loadModelFile(file);
          const ref = await fit(single, data, { split: SPLIT, ...opts });
          expect(ref.steps).to.equal(6);
          expect(bits(across)).to.deep.equal(bits(weightsOf(single)));

          // Not a test that passes by doing nothing: the weights moved, and the Dropout masks mattered.
          const initial = bits(weightsOf(loadModelFile(file)));
          bits(across).forEach((b, i) => {
            if (b !== '') expect(b, `layer ${i} moved`).to.not.equal(initial[i]);
          });
          const noDropout = loadModelFile(file);
          await fit(noDropout, data, { split: SPLIT, ...opts, training: false });
          expect(bits(weightsOf(noDropout))).to.not.deep.equal(bits(across));

          // Only the activation [B, 48] and the cotangent [B, 1] cross (plus step ids and framing), never a weight gradient.
          const B = 4;
          const activation = B * 48 * 8;
          const cotangent = B * 1 * 8;
          expect(traffic[0].sent).to.be.within(activation + cotangent, activation + cotangent + 200);
          expect(traffic[0].received).to.be.within(activation + cotangent, activation + cotangent + 200);
        } finally {
          remote?.close();
          await stopServer(server.child);
        }
        expect(server.out.join('')).to.match(/step 5: received \d+ B, sent \d+ B \(messages\), compute [\d.]+ ms/);
      });
    }

    it('jacobian-chain train --connect against jacobian-chain serve prints bytes and wire time per step', async () => {
      const server = await startServer(['--model', file, '--split', '3', '--stages', '1..']);
      try {
        const client = spawn(process.execPath, ['--import', 'tsx', 'bin/cli.ts', 'train', '--connect', `127.0.0.1:${server.port}`, '--model', file, '--split', '3', '--examples', '8', '--batch-size', '4', '--optimizer', 'sgd', '--timeout-ms', '20000'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
        const out: string[] = [];
        client.stdout.on('data', (d: Buffer) => out.push(d.toString()));
        client.stderr.on('data', (d: Buffer) => out.push(d.toString()));
        const code = await new Promise<number | null>((resolve) => {
          const timer = setTimeout(() => client.kill('SIGKILL'), 90_000);
          client.on('exit', (c) => {
            clearTimeout(timer);
            resolve(c);
          });
        });
        const text = out.join('');
        expect(code, text).to.equal(0);
        expect(text).to.match(/step 0 \(epoch 1, batch 1\/2\): loss [\d.]+ \| sent [\d.]+ KiB, received [\d.]+ KiB in 3 calls \| wire [\d.]+ ms, compute [\d.]+ ms here \+ [\d.]+ ms there/);
        expect(text).to.match(/step 1 \(epoch 1, batch 2\/2\)/);
      } finally {
        await stopServer(server.child);
      }
    });
  });

  describe('in this process: checks, retries, deadlines, tokens', () => {
    let server: StageServer;
    let port: number;
    const sgd: OptimizerConfig = { name: 'sgd', learning_rate: 0.1 };
    let hosted: Sequential[];

    beforeEach(async () => {
      hosted = loadModelFile(file).split(SPLIT).slice(1);
      server = new StageServer(hosted, { maxMessageBytes: 4096 });
      ({ port } = await server.listen());
    });
    afterEach(() => server.close());

    it('vjpChain over the wire equals it in one process, gradients fetched bit for bit', async () => {
      const stages = loadModelFile(file).split(SPLIT);
      const remote = await RemoteStageRunner.connect({ address: `127.0.0.1:${port}`, fetchGradients: true }, sgd);
      try {
        const x = tensor(data.x.data.slice(0, 4 * 25), [4, 5, 5, 1]);
        const y = tensor(data.y.data.slice(0, 4), [4, 1]);
        const opts = { training: true, seed: stepSeed(5, 0) };
        remote.beginStep(0, opts);
        const across = await vjpChain([new LocalStageRunner(stages[0], opts), remote], x, y, LOSS, opts);
        const local = await vjpChain(stages, x, y, LOSS, opts);
        expect(across.loss).to.equal(local.loss);
        expect(bits(across.dLoss_dWeights)).to.deep.equal(bits(local.dLoss_dWeights));
        expect(bits([across.dLoss_dOut])).to.deep.equal(bits([local.dLoss_dOut]));
      } finally {
        remote.close();
      }
    });

    it('a client whose copy of the model differs from the hosted one (same shapes on the wire, other units) is refused at connect, naming the layer', async () => {
      const same = await RemoteStageRunner.connect({ address: `127.0.0.1:${port}`, model: loadModelFile(file).split(SPLIT) }, sgd);
      same.close();
      // Dense(7) instead of Dense(6) after the split: the activation and the output keep their shapes.
      const other = new Sequential(
        [new Conv2D({ filters: 3, kernel_size: 2, activation: 'relu' }), new Dropout({ rate: 0.25 }), new Flatten(), new Dense({ units: 7, activation: 'relu' }), new Dropout({ rate: 0.5 }), new Dense({ units: 1, activation: 'sigmoid' })],
        { inputShape: [5, 5, 1], rng: new Rng(11), name: 'remote_spec' },
      );
      await expectReject(RemoteStageRunner.connect({ address: `127.0.0.1:${port}`, model: other.split(SPLIT) }, sgd), /hosts another model than this client's: layer 3: the server has Dense \{"units":6.*the client expects Dense \{"units":7/);
      // A server that sends no signature, or junk, is refused with what it sent, not a parse error.
      const mine = stagesSignature(loadModelFile(file).split(SPLIT).slice(1));
      expect(signatureMismatch('', mine)).to.match(/^the server's signature is empty/);
      expect(signatureMismatch('{"a":', mine)).to.equal('the server\'s signature is not the JSON of an array of stages (received "{\\"a\\":")');
      expect(signatureMismatch(mine, mine)).to.equal(null);
      // Split elsewhere: the server's first hosted layer is not the client's.
      await expectReject(RemoteStageRunner.connect({ address: `127.0.0.1:${port}`, model: loadModelFile(file).split([4]) }, sgd), /hosts another model than this client's: hosted stage 0: the server's first_layer is 3, the client expects 4/);
    });

    it('labels held by the server: the loss is computed there, the weights are still fit\'s bit for bit, and bad example ids are refused', async () => {
      const adam: OptimizerConfig = { name: 'adam', learning_rate: 0.01 };
      const holder = new StageServer(loadModelFile(file).split(SPLIT).slice(1), { labels: data.y });
      const { port: p } = await holder.listen();
      try {
        const stages = loadModelFile(file).split(SPLIT);
        const remote = await RemoteStageRunner.connect({ address: `127.0.0.1:${p}`, loss: LOSS }, adam);
        try {
          expect(remote.labels).to.equal(10);
          const opts = { loss: LOSS, optimizer: adam, epochs: 2, batchSize: 4, seed: 5 } as const;
          const res = await fitRemote([stages[0]], remote, { x: data.x }, { ...opts, labels: 'server' });
          expect(res.stopped).to.equal(null);
          const single = loadModelFile(file);
          const ref = await fit(single, data, { split: SPLIT, ...opts });
          expect(res.history.map((h) => h.loss)).to.deep.equal(ref.history.map((h) => h.loss));
          expect(bits([...weightsOf(stages[0]), ...(await remote.weights())])).to.deep.equal(bits(weightsOf(single)));
          expect(bits(weightsOf(single))).to.not.deep.equal(bits(weightsOf(loadModelFile(file))));
          remote.beginStep(6, { training: true, seed: 1 });
          const h = await new LocalStageRunner(stages[0]).forward(toMessage(tensor(data.x.data.slice(0, 2 * 25), [2, 5, 5, 1])));
          await expectReject(remote.forwardLoss(h, [0, 10]), /INVALID_ARGUMENT: ForwardLoss: expected example ids in \[0, 9\] \(the labels held\), received 10 at position 1/);
          await expectReject(remote.forwardLoss(h, [0]), /expected one example id per row of x \(2\), received 1/);
        } finally {
          remote.close();
        }
        await expectReject(RemoteStageRunner.connect({ address: `127.0.0.1:${p}` }, adam), /this server holds the labels: expected Open to name the loss, received none/);
      } finally {
        await holder.close();
      }
      // A server without labels says so instead of guessing.
      const remote = await RemoteStageRunner.connect({ address: `127.0.0.1:${port}` }, sgd);
      try {
        remote.beginStep(0, { training: true, seed: 1 });
        await expectReject(remote.forwardLoss(toMessage(zeros([2, 48])), [0, 1]), /FAILED_PRECONDITION: ForwardLoss: ForwardLoss of step 0, but this server holds no labels/);
      } finally {
        remote.close();
      }
    });

    it('a retried step is applied once: the server\'s weights move once', async () => {
      const stages = loadModelFile(file).split(SPLIT);
      const remote = await RemoteStageRunner.connect({ address: `127.0.0.1:${port}` }, sgd);
      try {
        const x = await new LocalStageRunner(stages[0]).forward(toMessage(tensor(data.x.data.slice(0, 2 * 25), [2, 5, 5, 1])));
        const before = bits(await remote.weights());
        remote.beginStep(0, { training: true, seed: 9 });
        const y1 = await remote.forward(x);
        const y2 = await remote.forward(x); // a retry: the recorded answer, not a second pass
        expect(bits([[fromMessage(y2)]])).to.deep.equal(bits([[fromMessage(y1)]]));
        const dy = toMessage(tensor([0.5, -0.25], [2, 1]));
        await remote.backward(dy);
        await remote.backward(dy);
        expect(await remote.apply()).to.deep.equal({ applied: true, appliedSteps: 1 });
        const once = bits(await remote.weights());
        expect(once).to.not.deep.equal(before);
        expect(await remote.apply()).to.deep.equal({ applied: false, appliedSteps: 1 });
        expect(bits(await remote.weights())).to.deep.equal(once);
        // The same step's forward, once applied, is refused rather than recorded again.
        await expectReject(remote.forward(x), /FAILED_PRECONDITION: Forward: step 0 was already applied \(steps applied through 0\); expected a step id above 0/);
        expect(server.steps).to.equal(1);
      } finally {
        remote.close();
      }
    });

    it('wrong shapes, dtype, byte length, NaN and oversized tensors are refused with a clear status, and the server keeps serving', async () => {
      const raw = rawClient(port);
      try {
        await raw.call('Open', { step_id: 0, optimizer_json: JSON.stringify(sgd) });
        const good = encodeTensor(zeros([2, 48]));
        const send = (x: Partial<WireTensor>, id = 0) => raw.call('Forward', { step_id: id, training: true, seed: 1, x: { ...good, ...x } });
        await expectReject(send({ shape: [2, 47] }), /INVALID_ARGUMENT: Forward: Forward x of step 0 \(model_1\): expected shape \["B", 48\], received \[2, 47\]/);
        await expectReject(send({ shape: [2, 4, 4, 3] }), /expected shape \["B", 48\], received \[2, 4, 4, 3\]/);
        await expectReject(send({ dtype: 'float32' }), /expected dtype float64 \(the stage's\), received "float32"/);
        await expectReject(send({ data: good.data.subarray(0, 100) }), /shape \[2, 48\] of float64 needs 768 bytes, received 100/);
        const nan = zeros([2, 48]);
        nan.data[17] = NaN;
        await expectReject(send({ data: encodeTensor(nan).data }), /INVALID_ARGUMENT: .*expected finite values, received NaN at flat index 17 of \[2, 48\]/);
        // Over the 4096-byte maximum: refused by gRPC from the length prefix, before the message is read.
        await expectReject(send({ shape: [12, 48], data: encodeTensor(zeros([12, 48])).data }), /RESOURCE_EXHAUSTED: Received message larger than max \(\d+ vs 4096\)/);
        // Claimed big, sent small: refused on the shape's size before any buffer is made for it.
        await expectReject(send({ shape: [100000, 48] }), /RESOURCE_EXHAUSTED: .*shape \[100000, 48\] is 38400000 bytes, over the server's maximum of 4096/);
        await expectReject(raw.call('Backward', { step_id: 0, dy: encodeTensor(zeros([2, 1])) }), /FAILED_PRECONDITION: Backward: Backward of step 0, but no step is recorded/);
        // Still serving: a whole good step.
        const y = (await send({})) as { y: WireTensor };
        expect(y.y.shape).to.deep.equal([2, 1]);
        await expectReject(raw.call('Backward', { step_id: 0, dy: { ...encodeTensor(zeros([3, 1])) } }), /expected shape \[2, 1\], received \[3, 1\]/);
        await raw.call('Backward', { step_id: 0, dy: encodeTensor(tensor([1, 1], [2, 1])) });
        expect(await raw.call('Apply', { step_id: 0 })).to.include({ applied: true, applied_steps: 1 });
      } finally {
        raw.close();
      }
      // Bytes that are no protobuf message at all (a truncated field): refused by gRPC, and the server still answers.
      const def = stageService();
      const Junk = grpc.makeGenericClientConstructor({ Forward: { ...def.Forward, requestSerialize: (b: Buffer) => b } }, 'Stage');
      const junk = new Junk(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as Record<string, (req: unknown, md: grpc.Metadata, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null) => void) => void> & grpc.Client;
      try {
        const err = await new Promise<grpc.ServiceError | null>((r) => junk.Forward(Buffer.from([0x22, 0x10, 0x0a]), new grpc.Metadata(), { deadline: Date.now() + 10_000 }, r));
        expect(err?.code).to.equal(grpc.status.INTERNAL);
        expect(err?.details).to.match(/Error deserializing request/);
      } finally {
        junk.close();
      }
      const again = rawClient(port);
      try {
        expect(await again.call('Weights', { step_id: 1 })).to.include({ applied_steps: 1 });
      } finally {
        again.close();
      }
    });

    it('a server that never answers: the client\'s error names the deadline', async () => {
      const sockets: Socket[] = [];
      const silent: NetServer = createServer((s) => sockets.push(s));
      await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
      const silentPort = (silent.address() as { port: number }).port;
      try {
        const t0 = Date.now();
        await expectReject(RemoteStageRunner.connect({ address: `127.0.0.1:${silentPort}`, timeoutMs: 400 }, sgd), new RegExp(`stage server 127\\.0\\.0\\.1:${silentPort}: Open of step 0 got no answer within the deadline of 400 ms \\(DEADLINE_EXCEEDED\\)`));
        expect(Date.now() - t0).to.be.below(5000);
      } finally {
        sockets.forEach((s) => s.destroy());
        await new Promise((r) => silent.close(r));
      }
    });

    it('with --token, a client without it or with another is refused; with it, served', async () => {
      const guarded = new StageServer(hosted, { token: 's3cret' });
      const { port: p } = await guarded.listen();
      try {
        await expectReject(RemoteStageRunner.connect({ address: `127.0.0.1:${p}` }, sgd), /refused Open of step 0: UNAUTHENTICATED: Open: this server needs a token \(metadata jc-token\), received none/);
        await expectReject(RemoteStageRunner.connect({ address: `127.0.0.1:${p}`, token: 's3cret!' }, sgd), /UNAUTHENTICATED: Open: wrong token/);
        const raw = rawClient(p);
        try {
          await expectReject(raw.call('Weights', { step_id: 0 }, 'nope'), /UNAUTHENTICATED: Weights: wrong token/);
        } finally {
          raw.close();
        }
        const ok = await RemoteStageRunner.connect({ address: `127.0.0.1:${p}`, token: 's3cret' }, sgd);
        expect(ok.name).to.equal('model_1');
        ok.close();
      } finally {
        await guarded.close();
      }
    });

    it('the token is checked before any byte of the request is read: a wrong token with a bad tensor, an oversized message or junk bytes gets UNAUTHENTICATED', async () => {
      const guarded = new StageServer(hosted, { token: 's3cret', maxMessageBytes: 4096 });
      const { port: p } = await guarded.listen();
      const def = stageService();
      // Sends raw bytes as the Forward request: no protobuf encoding on the client's side.
      const Junk = grpc.makeGenericClientConstructor({ Forward: { ...def.Forward, requestSerialize: (b: Buffer) => b } }, 'Stage');
      const junk = new Junk(`127.0.0.1:${p}`, grpc.credentials.createInsecure()) as unknown as Record<string, (req: unknown, md: grpc.Metadata, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null) => void) => void> & grpc.Client;
      const sendJunk = (bytes: Buffer, token?: string) => {
        const md = new grpc.Metadata();
        if (token !== undefined) md.set(TOKEN_KEY, token);
        return new Promise<grpc.ServiceError | null>((r) => junk.Forward(bytes, md, { deadline: Date.now() + 10_000 }, r));
      };
      const raw = rawClient(p);
      try {
        await raw.call('Open', { step_id: 0, optimizer_json: JSON.stringify(sgd) }, 's3cret');
        const good = encodeTensor(zeros([2, 48]));
        const forward = (x: Partial<WireTensor>, token: string) => raw.call('Forward', { step_id: 0, training: true, seed: 1, x: { ...good, ...x } }, token);
        const nan = zeros([2, 48]);
        nan.data[3] = NaN;
        const hostile: [string, Partial<WireTensor>][] = [
          ['a wrong shape', { shape: [2, 47] }],
          ['a wrong byte length', { data: good.data.subarray(0, 100) }],
          ['a NaN', { data: encodeTensor(nan).data }],
          ['a claimed size over the maximum', { shape: [100000, 48] }],
          ['a message over the maximum', { shape: [12, 48], data: encodeTensor(zeros([12, 48])).data }],
        ];
        for (const [, x] of hostile) {
          // With the right token each is a decode or size error: the request is read...
          await expectReject(forward(x, 's3cret'), /INVALID_ARGUMENT|RESOURCE_EXHAUSTED/);
          // ...with a wrong one, it never is.
          await expectReject(forward(x, 'wrong'), /^UNAUTHENTICATED: Forward: wrong token$/);
        }
        const bytes = Buffer.from([0x22, 0x10, 0x0a]); // a truncated field: no protobuf message
        expect((await sendJunk(bytes, 's3cret'))?.details).to.match(/Error deserializing request/);
        const refused = await sendJunk(bytes, 'wrong');
        expect(refused?.code).to.equal(grpc.status.UNAUTHENTICATED);
        expect(refused?.details).to.equal('Forward: wrong token');
        const big = await sendJunk(Buffer.alloc(1 << 20, 0xff));
        expect(big?.code).to.equal(grpc.status.UNAUTHENTICATED);
        expect(big?.details).to.equal('Forward: this server needs a token (metadata jc-token), received none');
        // Still serving the client with the token.
        const y = (await forward({}, 's3cret')) as { y: WireTensor };
        expect(y.y.shape).to.deep.equal([2, 1]);
      } finally {
        raw.close();
        junk.close();
        await guarded.close();
      }
    });
  });

  describe('TLS with a throwaway certificate', () => {
    /** A self-signed certificate for 127.0.0.1 and localhost, valid one day, made by openssl. */
    function throwaway(name: string): { cert: Buffer; key: Buffer } {
      const key = join(dir, `${name}.key.pem`);
      const cert = join(dir, `${name}.cert.pem`);
      execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], { stdio: 'ignore', timeout: 20_000 });
      return { cert: readFileSync(cert), key: readFileSync(key) };
    }

    it('a client trusting the certificate trains a step; a plaintext client and one trusting another certificate are refused', async function () {
      try {
        execFileSync('openssl', ['version'], { stdio: 'ignore', timeout: 5000 });
      } catch {
        this.skip();
      }
      const mine = throwaway('server');
      const other = throwaway('other');
      const sgd: OptimizerConfig = { name: 'sgd', learning_rate: 0.1 };
      const server = new StageServer(loadModelFile(file).split(SPLIT).slice(1), { tls: mine });
      const { port } = await server.listen();
      try {
        const remote = await RemoteStageRunner.connect({ address: `127.0.0.1:${port}`, tls: { ca: mine.cert }, timeoutMs: 10_000 }, sgd);
        try {
          const stages = loadModelFile(file).split(SPLIT);
          const before = bits(await remote.weights());
          const x = tensor(data.x.data.slice(0, 2 * 25), [2, 5, 5, 1]);
          const y = tensor(data.y.data.slice(0, 2), [2, 1]);
          remote.beginStep(0, { training: true, seed: 1 });
          await vjpChain([new LocalStageRunner(stages[0], { training: true, seed: 1 }), remote], x, y, LOSS, { training: true, seed: 1 });
          expect((await remote.apply()).applied).to.equal(true);
          expect(bits(await remote.weights())).to.not.deep.equal(before);
        } finally {
          remote.close();
        }
        await expectReject(RemoteStageRunner.connect({ address: `127.0.0.1:${port}`, retries: 0, timeoutMs: 3000 }, sgd), /stage server 127\.0\.0\.1:\d+: Open of step 0 could not reach it \(1 try, deadline 3000 ms each\): UNAVAILABLE: No connection established/);
        await expectReject(RemoteStageRunner.connect({ address: `127.0.0.1:${port}`, tls: { ca: other.cert }, retries: 0, timeoutMs: 3000 }, sgd), /Open of step 0 could not reach it \(1 try, deadline 3000 ms each\): UNAVAILABLE: .*self-signed certificate/);
        expect(server.steps).to.equal(1);
      } finally {
        await server.close();
      }
    });
  });

  describe('command line: refused before listening or connecting', () => {
    /** Runs a command in this process, its stderr captured. */
    async function runQuiet(run: (argv: string[]) => Promise<number>, argv: string[]): Promise<{ code: number; err: string }> {
      const lines: string[] = [];
      const orig = console.error;
      console.error = (...a: unknown[]) => lines.push(a.join(' '));
      try {
        return { code: await run(argv), err: lines.join('\n') };
      } finally {
        console.error = orig;
      }
    }
    it('serve: a missing --model or --stages, stage 0, a host that is not loopback, a bad port', async () => {
      const cases: [string[], number, RegExp][] = [
        [['--stages', '1..'], EXIT.usage, /expected --model <file>, received none/],
        [['--model', file], EXIT.usage, /expected --stages, like "1\.\.", received none/],
        [['--model', file, '--split', '3', '--stages', '0..'], EXIT.usage, /expected --stages to leave stage 0 to the client/],
        [['--model', file, '--split', '3', '--stages', '2..'], EXIT.usage, /expected --stages within the 2 stages \(0\.\.1\) of the split, received 2\.\./],
        [['--model', file, '--split', '3', '--stages', 'one'], EXIT.usage, /expected --stages like "1\.\.", "1\.\.2" or "2", received "one"/],
        [['--model', file, '--stages', '1..', '--split', '3', '--host', '0.0.0.0'], EXIT.usage, /expected --host to be one of 127\.0\.0\.1, ::1, localhost, received "0\.0\.0\.0"/],
        [['--model', file, '--stages', '1..', '--split', '3', '--port', '70000'], EXIT.usage, /expected --port to be at most 65535, received 70000/],
        [['--model', join(dir, 'none.json'), '--stages', '1..', '--split', '3'], EXIT.badInput, /cannot read it/],
      ];
      for (const [argv, code, re] of cases) {
        const r = await runQuiet(serveRun, argv);
        expect(r.code, `${argv.join(' ')}: ${r.err}`).to.equal(code);
        expect(r.err).to.match(re);
      }
    });
    it('train --connect: a host that is not loopback and a malformed address are refused', async () => {
      const a = await runQuiet(trainRun, ['--connect', '10.0.0.1:50051', '--model', file, '--split', '3']);
      expect(a.code).to.equal(EXIT.usage);
      expect(a.err).to.match(/expected a loopback host \(127\.0\.0\.1, ::1, localhost\), received "10\.0\.0\.1"; this slice serves and reaches only this machine/);
      const b = await runQuiet(trainRun, ['--connect', 'localhost', '--model', file, '--split', '3']);
      expect(b.code).to.equal(EXIT.usage);
      expect(b.err).to.match(/expected host:port like 127\.0\.0\.1:50051, received "localhost"/);
    });
    it('train --connect: a refused, an unreachable or a stalled peer exits with the peer code and one line naming the address and the deadline', async () => {
      // A port nobody listens on: the connection is refused.
      const probe: NetServer = createServer();
      await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
      const closedPort = (probe.address() as { port: number }).port;
      await new Promise((r) => probe.close(r));
      const refused = await runQuiet(trainRun, ['--connect', `127.0.0.1:${closedPort}`, '--model', file, '--split', '3', '--timeout-ms', '2000']);
      expect(refused.code, refused.err).to.equal(EXIT.peer);
      expect(refused.err.split('\n')).to.have.length(1);
      expect(refused.err).to.match(new RegExp(`^jacobian-chain train: stage server 127\\.0\\.0\\.1:${closedPort}: Open of step 0 could not reach it \\(3 tries, deadline 2000 ms each\\): UNAVAILABLE`));
      // A peer that accepts the connection and never answers: the deadline.
      const sockets: Socket[] = [];
      const silent: NetServer = createServer((s) => sockets.push(s));
      await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
      const silentPort = (silent.address() as { port: number }).port;
      try {
        const stalled = await runQuiet(trainRun, ['--connect', `127.0.0.1:${silentPort}`, '--model', file, '--split', '3', '--timeout-ms', '500']);
        expect(stalled.code, stalled.err).to.equal(EXIT.peer);
        expect(stalled.err).to.equal(`jacobian-chain train: stage server 127.0.0.1:${silentPort}: Open of step 0 got no answer within the deadline of 500 ms (DEADLINE_EXCEEDED); the server is stalled, overloaded or gone`);
      } finally {
        sockets.forEach((s) => s.destroy());
        await new Promise((r) => silent.close(r));
      }
    });
  });
});

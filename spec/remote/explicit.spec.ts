import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { maxRelDiff as tensorRelDiff } from '../../bench/features.js';
import { LocalStageRunner, fromMessage, toMessage } from '../../lib/chain.js';
import { Conv2D } from '../../lib/layers/conv2d.js';
import { Dense } from '../../lib/layers/dense.js';
import { Dropout } from '../../lib/layers/dropout.js';
import { Flatten } from '../../lib/layers/flatten.js';
import { MaxPooling2D } from '../../lib/layers/max-pooling2d.js';
import { loadModelFile, saveModelFile } from '../../lib/model-io.js';
import { seededBatch } from '../../lib/models.js';
import type { OptimizerConfig } from '../../lib/optimizers.js';
import { RemoteStageRunner } from '../../lib/remote/client.js';
import { shippedJacobianBytes } from '../../lib/remote/explicit.js';
import { type RemoteFitOptions, type RemoteStepInfo, fitRemote } from '../../lib/remote/fit.js';
import { StageServer } from '../../lib/remote/server.js';
import { TOKEN_KEY, encodeTensor, stageService } from '../../lib/remote/wire.js';
import { Rng } from '../../lib/rng.js';
import { Sequential } from '../../lib/sequential.js';
import { type Tensor, contiguous, tensor, zeros } from '../../lib/tensor.js';
import { fit } from '../../lib/train.js';
import { cli, serve, stop } from '../helpers/remote.js';
import { EXIT } from '../../bin/exit-codes.js';
import { expect, expectReject } from '../helpers/setup.js';

const LOSS = 'binary_crossentropy';

/** Conv2D · MaxPooling2D · Dropout | Flatten | Dense(relu) · Dropout | Dense(sigmoid): masks on both sides, two local stages, up to two hosted ones. */
function cnn(): Sequential {
  return new Sequential(
    [
      new Conv2D({ filters: 2, kernel_size: 2, activation: 'relu' }),
      new MaxPooling2D({ pool_size: 2 }),
      new Dropout({ rate: 0.3 }),
      new Flatten(),
      new Dense({ units: 5, activation: 'relu' }),
      new Dropout({ rate: 0.5 }),
      new Dense({ units: 1, activation: 'sigmoid' }),
    ],
    { inputShape: [7, 7, 1], rng: new Rng(23), name: 'explicit_spec' },
  );
}

/** The worst over every tensor of bench's maxRelDiff (largest |a - b| over the largest |b|): a relative difference that a near-zero entry cannot inflate. */
function maxRelDiff(a: readonly (readonly (Tensor | null)[])[], b: readonly (readonly (Tensor | null)[])[]): number {
  let worst = 0;
  a.forEach((ps, i) =>
    ps.forEach((t, k) => {
      const u = b[i][k];
      worst = Math.max(worst, t === null || u === null ? (t === u ? 0 : Infinity) : tensorRelDiff(contiguous(t).data, contiguous(u).data));
    }),
  );
  return worst;
}

function weightsOf(model: Sequential): Tensor[][] {
  return model.layers.map((l) => l.params.map((p) => p.value));
}

describe('the explicit way across the wire (issue #15)', function () {
  this.timeout(240_000);
  let dir: string;
  let file: string;
  const data = seededBatch([7, 7, 1], { batch: 10, seed: 4 });
  const sgd: OptimizerConfig = { name: 'sgd', learning_rate: 0.1, momentum: 0.9 };
  const adam: OptimizerConfig = { name: 'adam', learning_rate: 0.01 };

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'jc-explicit-'));
    file = join(dir, 'model.json');
    saveModelFile(cnn(), file);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  /**
   * `fitRemote` with the stages before `firstHosted` here and the rest on an in-process server, and
   * `fit(method: 'jacobian')` in one process with the same split and seeds: both models' weights after training.
   */
  async function bothWays(split: number[], firstHosted: number, opts: Partial<RemoteFitOptions> & { optimizer: OptimizerConfig }, serverOpts: ConstructorParameters<typeof StageServer>[1] = {}): Promise<{ across: Tensor[][]; single: Tensor[][]; steps: RemoteStepInfo[]; stopped: string | null }> {
    const stages = loadModelFile(file).split(split);
    const server = new StageServer(stages.slice(firstHosted), serverOpts);
    const { port } = await server.listen();
    const steps: RemoteStepInfo[] = [];
    try {
      const remote = await RemoteStageRunner.connect({ address: `127.0.0.1:${port}`, timeoutMs: 20_000, loss: opts.labels === 'server' ? LOSS : undefined }, opts.optimizer);
      try {
        const common = { loss: LOSS, epochs: 2, batchSize: 4, seed: 7, ...opts } as const;
        const res = await fitRemote(stages.slice(0, firstHosted), remote, opts.labels === 'server' ? { x: data.x } : data, { ...common, onStep: (s) => steps.push(s) });
        const across = [...stages.slice(0, firstHosted).flatMap(weightsOf), ...(await remote.weights())];
        const single = loadModelFile(file);
        const ref = await fit(single, data, { split, loss: LOSS, optimizer: opts.optimizer, epochs: 2, batchSize: 4, seed: 7, method: 'jacobian', streamed: opts.streamed, training: opts.training });
        expect(ref.steps).to.equal(6);
        return { across, single: weightsOf(single), steps, stopped: res.stopped };
      } finally {
        remote.close();
      }
    } finally {
      await server.close();
    }
  }

  /** Weights that moved from the file's, so that an equality cannot come from training nothing. */
  function expectMoved(w: Tensor[][]): void {
    const initial = weightsOf(loadModelFile(file));
    expect(maxRelDiff(w, initial)).to.be.above(1e-3);
  }

  describe('two processes, the cotangent crossing: the local stages by their Jacobians, within 1e-12 of fit(method: "jacobian")', () => {
    for (const [label, optimizer] of [['SGD with momentum', sgd], ['Adam', adam]] as const) {
      it(`${label}, Dropout in training, 6 steps`, async () => {
        const server = await serve(['--model', file, '--split', '3', '--stages', '1..']);
        let remote: RemoteStageRunner | null = null;
        try {
          const stages = loadModelFile(file).split([3]);
          remote = await RemoteStageRunner.connect({ address: `127.0.0.1:${server.port}`, timeoutMs: 20_000 }, optimizer);
          const opts = { loss: LOSS, optimizer, epochs: 2, batchSize: 4, seed: 7 } as const;
          const steps: RemoteStepInfo[] = [];
          const res = await fitRemote([stages[0]], remote, data, { ...opts, method: 'jacobian', onStep: (s) => steps.push(s) });
          expect(res.stopped).to.equal(null);
          expect(res.steps).to.equal(6);
          const across = [...weightsOf(stages[0]), ...(await remote.weights())];
          const single = loadModelFile(file);
          await fit(single, data, { split: [3], ...opts, method: 'jacobian' });
          expect(maxRelDiff(across, weightsOf(single))).to.be.below(1e-12);
          expectMoved(across);
          // The masks mattered: without Dropout the weights are others.
          const plain = loadModelFile(file);
          await fit(plain, data, { split: [3], ...opts, method: 'jacobian', training: false });
          expect(maxRelDiff(across, weightsOf(plain))).to.be.above(1e-6);
          // The cotangent way's bytes: the activation [4, 18] out and the cotangent [4, 1] back, then dLoss/dOut0 [4, 18] back.
          const activation = 4 * 18 * 8;
          expect(steps[0].wire.sentBytes).to.be.within(activation + 4 * 8, activation + 4 * 8 + 200);
          expect(steps[0].wire.receivedBytes).to.be.within(activation + 4 * 8, activation + 4 * 8 + 200);
          // The local side held its Jacobians (dOut0/d kernel [4, 3, 3, 2, 2, 2, 1, 2] alone is 4·18·8·8 bytes).
          expect(steps[0].held.here).to.be.above(4 * 18 * 8 * 8);
          expect(steps[0].held.there.cotangentBytes).to.equal(4 * 8 + 4 * 18 * 8);
        } finally {
          remote?.close();
          await stop(server);
        }
        expect(server.out.join('')).to.match(/step 5: received \d+ B, sent \d+ B \(messages\), compute [\d.]+ ms, held [\d.]+ KiB \(residuals/);
      });
    }
  });

  describe('in this process', () => {
    it('two local stages (the local input Jacobian contracted too), labels held by the server, Adam: within 1e-12', async () => {
      const r = await bothWays([2, 3], 2, { optimizer: adam, method: 'jacobian', labels: 'server' }, { labels: data.y });
      expect(r.stopped).to.equal(null);
      expect(maxRelDiff(r.across, r.single)).to.be.below(1e-12);
      expectMoved(r.across);
    });

    it('streamed local Jacobians: within 1e-12 of fit(method: "jacobian", streamed)', async () => {
      const r = await bothWays([3], 1, { optimizer: sgd, method: 'jacobian', streamed: true });
      expect(maxRelDiff(r.across, r.single)).to.be.below(1e-12);
      expectMoved(r.across);
    });

    for (const [label, optimizer] of [['SGD with momentum', sgd], ['Adam', adam]] as const) {
      it(`--ship-jacobian, two hosted stages, ${label}: the server's Jacobians cross and are contracted here, within 1e-12 of fit(method: "jacobian")`, async () => {
        const r = await bothWays([3, 5], 1, { optimizer, method: 'jacobian', shipJacobian: true });
        expect(r.stopped).to.equal(null);
        expect(maxRelDiff(r.across, r.single)).to.be.below(1e-12);
        expectMoved(r.across);
        // What crossed: the activation [4, 18] out and both Jacobians back (model_1 [4, 5, 3, 3, 2], model_2 [4, 1, 5]), then dLoss/dOut1 [4, 5] and dLoss/dY [4, 1] out.
        const s = r.steps[0];
        const jacobians = (4 * 5 * 18 + 4 * 1 * 5) * 8;
        expect(s.wire.calls).to.equal(4);
        expect(s.wire.receivedBytes).to.be.within(4 * 8 + jacobians, 4 * 8 + jacobians + 300);
        expect(s.wire.sentBytes).to.be.within(4 * 18 * 8 + (4 * 5 + 4) * 8, 4 * 18 * 8 + (4 * 5 + 4) * 8 + 300);
        expect(s.held.there.jacobianBytes).to.be.above(jacobians);
        expect(s.held.there.cotangentBytes).to.equal(0);
      });
    }

    it('--ship-jacobian with the labels on the server, or without the explicit method, is refused before any step', async () => {
      const stages = loadModelFile(file).split([3]);
      const server = new StageServer(stages.slice(1), { labels: data.y });
      const { port } = await server.listen();
      const remote = await RemoteStageRunner.connect({ address: `127.0.0.1:${port}`, loss: LOSS }, sgd);
      try {
        await expectReject(fitRemote([stages[0]], remote, { x: data.x }, { loss: LOSS, optimizer: sgd, method: 'jacobian', shipJacobian: true, labels: 'server' }), /expected labels 'here' with shipJacobian, received labels 'server'/);
        await expectReject(fitRemote([stages[0]], remote, data, { loss: LOSS, optimizer: sgd, shipJacobian: true }), /shipJacobian is a way of the explicit method; expected method 'jacobian' with shipJacobian, received method "vjp"/);
        await expectReject(fitRemote([stages[0]], remote, data, { loss: LOSS, optimizer: sgd, method: 'explicit' as 'jacobian' }), /expected method to be "vjp" or "jacobian", received "explicit"/);
        expect(server.steps).to.equal(0);
      } finally {
        remote.close();
        await server.close();
      }
    });

    it('a Jacobian over the maximum message is refused from its shape, naming the size, the limit and the option, by the client before asking and by the server before building', async () => {
      const stages = loadModelFile(file).split([3]);
      // Room for the activation and the cotangent of a batch of 4, not for its Jacobian [4, 1, 18] and more.
      const server = new StageServer(stages.slice(1), { maxMessageBytes: 700 });
      const { port } = await server.listen();
      const remote = await RemoteStageRunner.connect({ address: `127.0.0.1:${port}` }, sgd);
      try {
        // The server's weights are these very layers (in this process): they must not move.
        const before = JSON.stringify(weightsOf(stages[1]).map((ps) => ps.map((t) => Array.from(t.data))));
        const need = shippedJacobianBytes([{ name: 'model_1', inputShape: [3, 3, 2], outputShape: [1] }], 4, 'float64');
        expect(need).to.be.above(700);
        await expectReject(
          fitRemote([stages[0]], remote, data, { loss: LOSS, optimizer: sgd, method: 'jacobian', shipJacobian: true, batchSize: 4 }),
          new RegExp(`the batch Jacobians at batch 4 \\(model_1 dOut/dIn \\[4, 1, 3, 3, 2\\], float64\\) need a message of ${need} bytes .*, over the connection's maximum of 700 bytes .*; raise it on both sides \\(serve --max-message-bytes and train --max-message-bytes`),
        );
        // The server's own check, for a client that asks anyway.
        const raw = rawCall(port);
        try {
          await raw('Open', { step_id: 1, optimizer_json: JSON.stringify(sgd) });
          await raw('Forward', { step_id: 1, training: true, seed: 1, x: encodeTensor(zeros([4, 3, 3, 2])) });
          await expectReject(raw('Jacobian', { step_id: 1 }), new RegExp(`RESOURCE_EXHAUSTED: Jacobian: the batch Jacobians at batch 4 .* need a message of ${need} bytes .*, over the server's maximum of 700 bytes`));
        } finally {
          raw.close();
        }
        expect(JSON.stringify(weightsOf(stages[1]).map((ps) => ps.map((t) => Array.from(t.data))))).to.equal(before);
        expect(server.steps).to.equal(0);
      } finally {
        remote.close();
        await server.close();
      }
    });

    it('Jacobian and BackwardWeights check what they receive and keep one way per step; a retry gets the same answer and the step is applied once', async () => {
      const stages = loadModelFile(file).split([3, 5]);
      const server = new StageServer(stages.slice(1));
      const { port } = await server.listen();
      const raw = rawCall(port);
      try {
        await expectReject(raw('Jacobian', { step_id: 0 }), /FAILED_PRECONDITION: Jacobian: Jacobian of step 0 before Open/);
        await raw('Open', { step_id: 0, optimizer_json: JSON.stringify(sgd) });
        await expectReject(raw('Jacobian', { step_id: 0 }), /FAILED_PRECONDITION: Jacobian: Jacobian of step 0, but no step is recorded; expected Forward of step 0 first/);
        const h = await new LocalStageRunner(stages[0], { training: true, seed: 3 }).forward(toMessage(tensor(data.x.data.slice(0, 2 * 49), [2, 7, 7, 1])));
        const x = encodeTensor(fromMessage(h));
        await raw('Forward', { step_id: 0, training: true, seed: 3, x });
        const j1 = (await raw('Jacobian', { step_id: 0 })) as { stages: { dout_din: { shape: number[] } }[] };
        expect(j1.stages.map((s) => s.dout_din.shape)).to.deep.equal([[2, 5, 3, 3, 2], [2, 1, 5]]);
        const j2 = (await raw('Jacobian', { step_id: 0 })) as typeof j1;
        expect(j2).to.deep.equal(j1);
        const douts = [encodeTensor(tensor([0.1, -0.2, 0.3, 0, 0.5, 0.2, 0.1, -0.4, 0.3, 0.1], [2, 5])), encodeTensor(tensor([0.5, -0.25], [2, 1]))];
        await expectReject(raw('BackwardWeights', { step_id: 0, dout: douts.slice(1) }), /INVALID_ARGUMENT: BackwardWeights: expected one dLoss\/dOut per hosted stage \(2: model_1, model_2\), received 1/);
        await expectReject(raw('BackwardWeights', { step_id: 0, dout: [douts[1], douts[1]] }), /INVALID_ARGUMENT: .*BackwardWeights dout\[0\] of step 0 \(model_1\): expected shape \[2, 5\], received \[2, 1\]/);
        const nan = tensor([0.5, NaN], [2, 1]);
        await expectReject(raw('BackwardWeights', { step_id: 0, dout: [douts[0], encodeTensor(nan)] }), /expected finite values, received NaN at flat index 1 of \[2, 1\]/);
        await expectReject(raw('Apply', { step_id: 0 }), /its Backward has not run/);
        const w1 = await raw('BackwardWeights', { step_id: 0, dout: douts });
        expect(await raw('BackwardWeights', { step_id: 0, dout: douts })).to.deep.equal(w1);
        await expectReject(raw('BackwardWeights', { step_id: 0, dout: [douts[0], encodeTensor(tensor([0.5, 0.25], [2, 1]))] }), /FAILED_PRECONDITION: .*was run with another dLoss\/dOut; expected a retry to resend the same/);
        await expectReject(raw('Backward', { step_id: 0, dy: douts[1] }), /FAILED_PRECONDITION: Backward: step 0's weight gradients were computed by BackwardWeights \(the explicit way\); expected one way per step/);
        expect(await raw('Apply', { step_id: 0 })).to.include({ applied: true, applied_steps: 1 });
        expect(await raw('Apply', { step_id: 0 })).to.include({ applied: false, applied_steps: 1 });
        // And the VJP way's step refuses the explicit calls.
        await raw('Forward', { step_id: 1, training: true, seed: 4, x });
        await raw('Backward', { step_id: 1, dy: douts[1] });
        await expectReject(raw('Jacobian', { step_id: 1 }), /FAILED_PRECONDITION: Jacobian: step 1's Backward already ran \(the VJP way\); expected one way per step/);
        await expectReject(raw('BackwardWeights', { step_id: 1, dout: douts }), /FAILED_PRECONDITION: BackwardWeights: step 1's Backward already ran/);
      } finally {
        raw.close();
        await server.close();
      }
    });
  });

  describe('command line: serve --cnn and train --connect --digits, as train --digits in one process', () => {
    const CNN = ['--cnn', '--filters', '2,2,2', '--units', '4'];
    const TASK = ['--digits', '3,8', '--limit', '30', '--epochs', '1', '--batch-size', '8'];

    /** `held-out test: loss L | accuracy A% (k/n)` of a run's output: what the two ways must agree on. */
    function heldOut(text: string): string {
      const m = /held-out test: loss ([\d.]+) \| accuracy ([\d.]+%) \((\d+\/\d+)\)/.exec(text);
      expect(m, text).to.not.equal(null);
      return `${m![1]} ${m![2]} ${m![3]}`;
    }

    async function single(args: string[]): Promise<string> {
      const c = cli(['train', ...TASK, ...args.filter((a) => a !== '--cnn'), '--no-progress', '--out', join(dir, 'single.json'), '--plot', join(dir, 'single.svg')]);
      const { code } = await c.exited(120_000);
      expect(code, c.out.join('')).to.equal(0);
      return heldOut(c.out.join(''));
    }

    async function across(serveArgs: string[], trainArgs: string[]): Promise<{ text: string; served: string }> {
      const server = await serve([...CNN, '--stages', '1..', ...serveArgs]);
      try {
        const c = cli(['train', '--connect', `127.0.0.1:${server.port}`, ...CNN, ...TASK, '--timeout-ms', '60000', ...trainArgs]);
        const { code } = await c.exited(150_000);
        expect(code, c.out.join('')).to.equal(0);
        return { text: c.out.join(''), served: server.out.join('') };
      } finally {
        await stop(server);
      }
    }

    it('--method jacobian --ship-jacobian: per step the bytes, wire and compute, and the bytes held on each side; the held-out accuracy of one process', async () => {
      const { text, served } = await across([], ['--method', 'jacobian', '--ship-jacobian']);
      expect(text).to.match(/training: \d+ MNIST examples, 1 epochs, batch 8, jacobian, the server's batch Jacobian shipped/);
      const bytes = String.raw`[\d.]+ (?:[KM]i)?B`;
      expect(text).to.match(new RegExp(String.raw`step 0 \(epoch 1, batch 1/\d+\): loss [\d.]+ \| sent ${bytes}, received ${bytes} in 4 calls \| wire [\d.]+ ms, compute [\d.]+ ms here \+ [\d.]+ ms there \| held ${bytes} here, ${bytes} there`));
      expect(served).to.match(new RegExp(String.raw`step 0: received \d+ B, sent \d+ B \(messages\), compute [\d.]+ ms, held ${bytes} \(residuals ${bytes}, cotangents 0 B, Jacobians ${bytes}, gradients ${bytes}\)`));
      expect(heldOut(text)).to.equal(await single([...CNN, '--method', 'jacobian']));
    });

    it('the labels held by serve --digits, the VJP way: the held-out accuracy of one process', async () => {
      const { text } = await across(['--digits', '3,8', '--limit', '30'], ['--labels-on-server']);
      expect(heldOut(text)).to.equal(await single(CNN));
    });

    it('options that do not go together are refused before connecting', async () => {
      const cases: [string[], RegExp][] = [
        [['--cnn', '--ship-jacobian'], /expected --ship-jacobian together with --method jacobian \(it is a way of the explicit method\), received --ship-jacobian with the default method vjp/],
        [['--cnn', '--method', 'jacobian', '--ship-jacobian', '--labels-on-server'], /expected --ship-jacobian without --labels-on-server/],
        [['--cnn', '--digits', '3,8', '--examples', '8'], /expected --examples \(seeded data\) or --digits \(MNIST\), received both/],
        [['--model', file, '--filters', '2,2,2'], /--filters and --units shape the CNN of --cnn; received --filters with --model/],
        [['--model', file, '--cnn'], /expected --model <file> or --cnn, received both/],
        [['--cnn', '--limit', '5'], /--validation-split, --test-fraction and --limit are options of --digits/],
        [['--cnn', '--method', 'explicit'], /expected --method vjp or jacobian, received "explicit"/],
      ];
      for (const [argv, re] of cases) {
        const c = cli(['train', '--connect', '127.0.0.1:1', ...argv]);
        const { code } = await c.exited(60_000);
        expect(code, argv.join(' ')).to.equal(EXIT.usage);
        expect(c.out.join(''), argv.join(' ')).to.match(re);
      }
    });
  });
});

/** One raw unary call to the Stage service on `port`, for what RemoteStageRunner would never send. */
function rawCall(port: number, token?: string): ((method: string, req: unknown) => Promise<unknown>) & { close: () => void } {
  const Client = grpc.makeGenericClientConstructor(stageService(), 'Stage');
  const c = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as Record<string, (req: unknown, md: grpc.Metadata, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null, r?: unknown) => void) => void> & grpc.Client;
  const call = (method: string, req: unknown) =>
    new Promise<unknown>((resolve, reject) => {
      const md = new grpc.Metadata();
      if (token) md.set(TOKEN_KEY, token);
      c[method](req, md, { deadline: Date.now() + 10_000 }, (e, r) => (e ? reject(new Error(`${grpc.status[e.code]}: ${e.details}`)) : resolve(r)));
    });
  return Object.assign(call, { close: () => c.close() });
}

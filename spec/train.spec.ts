import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from '../bin/commands/train.js';
import { allcloseReport } from '../lib/allclose.js';
import { loadMnistBinary } from '../lib/data/mnist.js';
import { Activation } from '../lib/layers/activation.js';
import { Conv2D } from '../lib/layers/conv2d.js';
import { Dense } from '../lib/layers/dense.js';
import { Dropout } from '../lib/layers/dropout.js';
import { Flatten } from '../lib/layers/flatten.js';
import { MaxPooling2D } from '../lib/layers/max-pooling2d.js';
import { loadModel, loadModelFile } from '../lib/model-io.js';
import { catsVsDogsCnn, splitAfterLastPooling } from '../lib/models.js';
import type { OptimizerConfig } from '../lib/optimizers.js';
import { Rng } from '../lib/rng.js';
import { Sequential } from '../lib/sequential.js';
import { type Tensor, type TensorJSON, fromJSON, randomUniform, tensor, zeros } from '../lib/tensor.js';
import { findNonFinite } from '../lib/forensics.js';
import { type BackwardMethod, type Dataset, type FitOptions, correctCount, evaluate, fit } from '../lib/train.js';
import { runCommand } from './helpers/cli.js';
import { expect, expectReject } from './helpers/setup.js';

/** A small cats-vs-dogs-shaped CNN with Dropout, on 8x8x1 images: seeded, so every call builds the same weights. */
function smallCnn(seed = 5): Sequential {
  return new Sequential(
    [
      new Conv2D({ filters: 3, kernel_size: [3, 3] }),
      new Activation({ activation: 'relu' }),
      new MaxPooling2D({ pool_size: [2, 2] }),
      new Flatten(),
      new Dense({ units: 6 }),
      new Activation({ activation: 'relu' }),
      new Dropout({ rate: 0.5 }),
      new Dense({ units: 1 }),
      new Activation({ activation: 'sigmoid' }),
    ],
    { inputShape: [8, 8, 1], rng: new Rng(seed), name: 'small_cnn' },
  );
}

function randomData(n: number, seed: number): Dataset {
  const rng = new Rng(seed);
  const x = randomUniform([n, 8, 8, 1], rng);
  const y = zeros([n, 1]);
  for (let i = 0; i < n; i++) y.data[i] = rng.uniform() > 0.5 ? 1 : 0;
  return { x, y };
}

const weightsOf = (m: Sequential): Tensor[] => m.params.map((p) => p.value);

/** Largest relative difference between two weight lists, element by element (`|a-b| / max(|b|, 1e-300)`). */
function maxRel(a: Tensor[], b: Tensor[]): number {
  let m = 0;
  a.forEach((t, k) => {
    const r = allcloseReport(t, b[k], { rtol: 0, atol: 0 });
    m = Math.max(m, r.maxRelError);
  });
  return m;
}

describe('train', () => {
  describe('equivalence: split by vjp, split by jacobian, whole model by one tape', () => {
    const optimizers: [string, OptimizerConfig][] = [
      ['SGD with momentum', { name: 'sgd', learning_rate: 0.1, momentum: 0.9 }],
      ['SGD with Nesterov momentum', { name: 'sgd', learning_rate: 0.1, momentum: 0.9, nesterov: true }],
      ['Adam', { name: 'adam', learning_rate: 0.01 }],
    ];
    for (const [label, optimizer] of optimizers) {
      it(`${label}: 8 steps with Dropout in training mode end with the same weights within 1e-9 relative`, async () => {
        const data = randomData(16, 11);
        const run = async (method: BackwardMethod, split: number[], extra: Partial<FitOptions> = {}) => {
          const model = smallCnn();
          const losses: number[] = [];
          const r = await fit(model, data, { split, method, loss: 'binary_crossentropy', optimizer, epochs: 2, batchSize: 4, seed: 3, onBatchEnd: (b) => losses.push(b.loss), ...extra });
          expect(r.stopped).to.equal(null);
          expect(r.steps).to.equal(8);
          return { w: weightsOf(model), losses, history: r.history };
        };
        const initial = weightsOf(smallCnn());
        const whole = await run('reference', []);
        const vjp = await run('vjp', [4]); // model_0 = conv, relu, pool, flatten; model_1 = the head with Dropout
        const jac = await run('jacobian', [4]);
        const vjp3 = await run('vjp', [2, 6]); // three stages, Dropout first in the last one
        const jac3 = await run('jacobian', [2, 6]);
        const streamed = await run('jacobian', [4], { streamed: true });
        const perStage = await run('vjp', [4], { optimizerPerStage: true });
        for (const other of [vjp, jac, vjp3, jac3, streamed, perStage]) {
          expect(maxRel(other.w, whole.w)).to.be.below(1e-9);
          expect(other.losses).to.be.allclose(whole.losses, { rtol: 1e-9, atol: 0 });
        }
        // The runs did train: every parameter moved, and the loss moved.
        whole.w.forEach((w, k) => expect(maxRel([w], [initial[k]])).to.be.above(1e-3));
        expect(whole.losses[0]).to.not.equal(whole.losses[7]);
        // Dropout masks matter (another seed gives other weights), so their agreement above is not vacuous.
        const otherMasks = await run('vjp', [4], { seed: 4, shuffle: false });
        const sameOrder = await run('vjp', [4], { seed: 3, shuffle: false });
        expect(maxRel(otherMasks.w, sameOrder.w)).to.be.above(1e-6);
      });
    }
  });

  describe('golden fixtures: the `training` blocks (full-batch SGD on (x, y))', () => {
    interface Fixture {
      x: TensorJSON;
      y: TensorJSON;
      loss: string;
      stages: number[][];
      training: { optimizer: OptimizerConfig & { steps: number }; steps?: number; losses: number[]; finalLoss: number; finalWeights: TensorJSON[][] };
    }
    for (const name of ['seed_reference', 'dense_mlp']) {
      for (const method of ['vjp', 'jacobian', 'reference'] as const) {
        it(`${name}.json by ${method}: loss per step, final loss and final weights within 1e-10 relative`, async () => {
          const text = readFileSync(new URL(`./fixtures/${name}.json`, import.meta.url), 'utf8');
          const fx = JSON.parse(text) as Fixture;
          const model = loadModel(fx);
          const split = Sequential.pointsFromStages(fx.stages, model.layers.length);
          const data = { x: fromJSON(fx.x), y: fromJSON(fx.y) };
          const { steps, ...optimizer } = fx.training.optimizer;
          const losses: number[] = [];
          const r = await fit(model, data, {
            split,
            method,
            loss: fx.loss,
            optimizer: optimizer as OptimizerConfig,
            epochs: steps,
            batchSize: data.x.shape[0],
            shuffle: false,
            training: false,
            onBatchEnd: (b) => losses.push(b.loss),
          });
          expect(r.stopped).to.equal(null);
          expect(losses).to.have.length(fx.training.losses.length);
          expect(losses).to.be.allclose(fx.training.losses, { rtol: 1e-10, atol: 0 });
          expect(evaluate(model, data, fx.loss).loss).to.be.allclose(fx.training.finalLoss, { rtol: 1e-10, atol: 0 });
          model.layers.forEach((layer, i) =>
            layer.params.forEach((p, k) => expect(p.value, `layer ${i} ${p.name}`).to.be.allclose(fx.training.finalWeights[i][k], { rtol: 1e-10, atol: 1e-15 })),
          );
        });
      }
    }
  });

  describe('real data: the seed CNN on MNIST digits', () => {
    it('a short run on a small slice (0 vs 1, 48 images a digit): the loss falls, epoch by epoch and on the training slice', async () => {
      const data = loadMnistBinary({ positive: 0, negative: 1, limit: 48, seed: 0 });
      const model = catsVsDogsCnn({ side: 28, channels: 1, seed: 0 });
      const before = evaluate(model, data.train, 'binary_crossentropy');
      const r = await fit(model, data.train, {
        split: splitAfterLastPooling(model),
        loss: 'binary_crossentropy',
        optimizer: { name: 'adam', learning_rate: 0.002 },
        epochs: 3,
        batchSize: 16,
        seed: 0,
      });
      expect(r.stopped).to.equal(null);
      expect(r.history).to.have.length(3);
      expect(r.history[2].loss).to.be.below(r.history[0].loss);
      const after = evaluate(model, data.train, 'binary_crossentropy');
      expect(after.loss).to.be.below(0.8 * before.loss);
      const test = evaluate(model, data.test, 'binary_crossentropy');
      expect(test.accuracy).to.be.above(0.5);
    });

    it('catsVsDogsCnn with other widths keeps the topology; with the seed widths it is the seed CNN weight for weight', () => {
      const a = catsVsDogsCnn({ side: 28, channels: 1, seed: 3, filters: [32, 32, 64], units: 64 });
      const b = catsVsDogsCnn({ side: 28, channels: 1, seed: 3 });
      expect(a.layers.map((l) => l.className)).to.deep.equal(b.layers.map((l) => l.className));
      a.params.forEach((p, k) => expect(Array.from(p.value.data)).to.deep.equal(Array.from(b.params[k].value.data)));
      const small = catsVsDogsCnn({ side: 28, channels: 1, filters: [4, 8, 8], units: 16 });
      expect(small.layers.filter((l) => l.className === 'Conv2D').map((l) => l.params[0].value.shape[3])).to.deep.equal([4, 8, 8]);
      expect(small.layers.find((l) => l.className === 'Dense')!.params[0].value.shape).to.deep.equal([8, 16]);
      expect(() => catsVsDogsCnn({ side: 28, channels: 1, filters: [4, 0, 8] as never })).to.throw(/filters to be three positive integers \(one per Conv2D\), received \[4, 0, 8\]/);
    });
  });

  describe('bad input: clear errors before any training starts', () => {
    const base = (): { model: Sequential; data: Dataset; opts: FitOptions; touched: () => boolean } => {
      const model = smallCnn();
      let calls = 0;
      const opts: FitOptions = { split: [4], loss: 'binary_crossentropy', optimizer: { name: 'sgd', learning_rate: 0.1 }, onEpochBegin: () => calls++, onBatchEnd: () => calls++ };
      const w0 = weightsOf(model);
      return { model, data: randomData(6, 1), opts, touched: () => calls > 0 || maxRel(weightsOf(model), w0) > 0 };
    };

    it('labels of the wrong shape', async () => {
      const { model, data, opts, touched } = base();
      await expectReject(fit(model, { x: data.x, y: zeros([6]) }, opts), /training data y \(labels\): expected shape \[6, 1\] .*received \[6\]/);
      await expectReject(fit(model, { x: data.x, y: zeros([6, 2]) }, opts), /expected shape \[6, 1\] .*received \[6, 2\]/);
      await expectReject(fit(model, { x: data.x, y: zeros([5, 1]) }, opts), /expected shape \[6, 1\] .*received \[5, 1\]/);
      await expectReject(fit(model, { x: zeros([6, 8, 8]), y: data.y }, opts), /training data x: expected shape \[N, 8, 8, 1\], received \[6, 8, 8\]/);
      expect(touched()).to.equal(false);
    });

    it('a dataset with no examples', async () => {
      const { model, opts, touched } = base();
      await expectReject(fit(model, { x: zeros([0, 8, 8, 1]), y: zeros([0, 1]) }, opts), /expected at least one example, received an empty dataset \(x \[0, 8, 8, 1\]\)/);
      await expectReject(fit(model, randomData(3, 0), { ...opts, validationSplit: 0.2 }), /validationSplit 0.2 of 3 examples leaves no validation examples/);
      expect(touched()).to.equal(false);
    });

    it('a split point outside the model', async () => {
      const { model, data, opts, touched } = base();
      for (const split of [[9], [0], [12], [5, 3], [-1]]) {
        await expectReject(fit(model, data, { ...opts, split }), new RegExp(`split: expected strictly increasing layer indices in 1\\.\\.8 .*received \\[${split.join(', ')}\\]`));
      }
      expect(touched()).to.equal(false);
    });

    it('a learning rate that is not a positive number', async () => {
      const { model, data, opts, touched } = base();
      for (const lr of [0, -0.01, Number.NaN, Number.POSITIVE_INFINITY, '0.1']) {
        await expectReject(fit(model, data, { ...opts, optimizer: { name: 'adam', learning_rate: lr as number } }), /Adam: expected learning_rate to be a positive finite number, received/);
        await expectReject(fit(model, data, { ...opts, optimizer: { name: 'sgd', learning_rate: lr as number } }), /SGD: expected learning_rate to be a positive finite number, received/);
      }
      expect(touched()).to.equal(false);
    });

    it('other options: method, epochs, batch size, loss, and a Jacobian that would not fit the memory budget', async () => {
      const { model, data, opts, touched } = base();
      await expectReject(fit(model, data, { ...opts, method: 'adjoint' as never }), /expected method to be one of vjp, jacobian, reference, received "adjoint"/);
      await expectReject(fit(model, data, { ...opts, epochs: 0 }), /expected epochs to be a positive integer, received 0/);
      await expectReject(fit(model, data, { ...opts, batchSize: 2.5 }), /expected batchSize to be a positive integer, received 2.5/);
      await expectReject(fit(model, data, { ...opts, loss: 'hinge' }), /unknown loss "hinge"/);
      await expectReject(fit(model, data, { ...opts, method: 'jacobian', memoryBudget: 1000 }), /explicit-Jacobian way for 2 stages at batch 6 .*: needs an estimated .* over the memory budget of 1000 B; use the VJP way/);
      await expectReject(fit(model, data, { ...opts, method: 'jacobian', streamed: true, memoryBudget: 1000 }), /streamed explicit-Jacobian way for 2 stages at batch 6 .*: needs an estimated .* over the memory budget of 1000 B/);
      await expectReject(fit(model, data, { ...opts, streamed: true }), /streamed is a way of the jacobian method; expected method 'jacobian' with streamed, received method "vjp"/);
      await expectReject(fit(model, data, { ...opts, method: 'jacobian', streamed: 1 as never }), /expected streamed to be a boolean, received 1/);
      expect(touched()).to.equal(false);
    });
  });

  describe('early exit on a non-finite loss, naming the stage and layer', () => {
    it('a layer whose output overflows: stopped at the first step, weights untouched, the layer named', async () => {
      const model = smallCnn();
      const dense = model.layers[4];
      dense.params[0].value.data[0] = 1e308; // finite, but x·W overflows to infinity
      const w0 = weightsOf(model).map((t) => Array.from(t.data));
      const data = randomData(8, 2);
      for (let i = 0; i < data.x.size; i++) data.x.data[i] += 10;
      const r = await fit(model, data, { split: [4], loss: 'binary_crossentropy', optimizer: { name: 'sgd', learning_rate: 0.1 }, batchSize: 4 });
      expect(r.stopped).to.not.equal(null);
      expect(r.stopped!.stage).to.equal(1);
      expect(r.stopped!.stageName).to.equal('model_1');
      expect(r.stopped!.layer).to.equal(4);
      expect(r.stopped!.message).to.match(/non-finite loss at epoch 1, batch 1: stage 1 \(model_1\), layer 4 \(Dense "dense"\) produced a non-finite output: (-?Infinity|NaN) at \[\d+, \d+\], from a finite input; training stopped before the update/);
      expect(r.steps).to.equal(0);
      expect(weightsOf(model).map((t) => Array.from(t.data))).to.deep.equal(w0);
    });

    it('a learning rate so large the weights blow up: stopped with the stage and layer whose weights went non-finite', async () => {
      const model = new Sequential([new Dense({ units: 4 }), new Dense({ units: 1 }), new Activation({ activation: 'sigmoid' })], { inputShape: [3], rng: new Rng(1) });
      const x = tensor([1, 2, 3, -1, 0.5, 2], [2, 3]);
      const y = tensor([1, 0], [2, 1]);
      const r = await fit(model, { x, y }, { split: [1], loss: 'mse', optimizer: { name: 'sgd', learning_rate: 1e306 }, epochs: 20, batchSize: 2 });
      expect(r.stopped).to.not.equal(null);
      expect(r.stopped!.message).to.match(/stage \d \(model_\d\), layer \d \(Dense "dense(_1)?"\) (has a non-finite weight|produced a non-finite output)|the gradient of stage/);
      expect(r.stopped!.layer).to.be.oneOf([0, 1]);
      expect(r.history.length).to.be.below(20);
    });

    it('findNonFinite says null when every value is finite', () => {
      const model = smallCnn();
      expect(findNonFinite(model.split([4]), randomData(2, 0).x, { training: true, seed: 1 })).to.equal(null);
    });
  });

  describe('the train command', () => {
    /** Runs the command with console output captured. */
    const cli = (argv: string[]) => runCommand(run, argv);

    it('trains a narrow seed CNN on a few real digits, writes a model file loadModel reads and an SVG plot', async () => {
      const dir = mkdtempSync(join(tmpdir(), 'train-cli-'));
      try {
        const model = join(dir, 'm', 'model.json');
        const plot = join(dir, 'p', 'plot.svg');
        const r = await cli(['--digits', '0,1', '--limit', '16', '--epochs', '2', '--filters', '2,2,2', '--units', '4', '--batch-size', '8', '--optimizer', 'sgd', '--lr', '0.1', '--nesterov', '--no-progress', '--out', model, '--plot', plot]);
        expect(r.err).to.equal('');
        expect(r.code).to.equal(0);
        expect(r.out).to.match(/data: MNIST 0 \(1\) vs 1 \(0\): train \[26, 28, 28, 1\], held-out test \[6, 28, 28, 1\]/);
        expect(r.out).to.match(/epoch 2\/2: loss \d\.\d{4} \| acc \d\.\d{4} \| val loss/);
        expect(r.out).to.match(/held-out test: loss \d\.\d{4} \| accuracy \d+\.\d\d% \(\d\/6\)/);
        const loaded = loadModelFile(model);
        expect(loaded.layers.map((l) => l.className)).to.deep.equal(catsVsDogsCnn({ side: 28, channels: 1 }).layers.map((l) => l.className));
        expect(loaded.paramCount).to.equal(2 * 9 + 2 + (2 * 9 * 2 + 2) + (2 * 9 * 2 + 2) + (2 * 4 + 4) + (4 + 1));
        expect(existsSync(plot)).to.equal(true);
        expect(readFileSync(plot, 'utf8')).to.match(/^<svg[\s\S]*>accuracy<[\s\S]*<\/svg>\s*$/);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it('--threads 1 and --threads 2 write bit-identical models (fixed shards, summed in shard order)', async () => {
      const dir = mkdtempSync(join(tmpdir(), 'train-threads-'));
      try {
        const weights: number[][] = [];
        for (const threads of ['1', '2']) {
          const out = join(dir, `t${threads}.json`);
          const r = await cli(['--digits', '0,1', '--limit', '16', '--epochs', '1', '--filters', '2,2,2', '--units', '4', '--batch-size', '8', '--threads', threads, '--no-progress', '--out', out, '--plot', join(dir, `t${threads}.svg`)]);
          expect(r.err).to.equal('');
          expect(r.code).to.equal(0);
          expect(r.out).to.match(new RegExp(`method vjp on ${threads} thread`));
          weights.push(loadModelFile(out).params.flatMap((p) => Array.from(p.value.data)));
        }
        expect(weights[1]).to.deep.equal(weights[0]);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it('refuses bad options with exit code 2 and a message, before training anything', async () => {
      const cases: [string[], RegExp][] = [
        [['--lr=-1'], /expected --lr to be a positive number, received "-1"/],
        [['--lr', '-1'], /expected --lr to be a positive number, received "-1"/],
        [['--lr', '--nesterov'], /expected a value after --lr, received "--nesterov"/],
        [['--lr', '0'], /expected --lr to be a positive number, received "0"/],
        [['--lr', 'fast'], /expected --lr to be a positive number, received "fast"/],
        [['--split', '99'], /split: expected strictly increasing layer indices in 1\.\.14 .*received \[99\]/],
        [['--digits', '3,3'], /expected positive and negative digits to differ, received \[3\] in both/],
        [['--digits', '3'], /expected --digits like "3,8"/],
        [['--method', 'adjoint'], /expected --method vjp or jacobian, received "adjoint"/],
        [['--epochs', '0'], /expected --epochs to be an integer >= 1, received "0"/],
        [['--batchsize', '3'], /unknown option "--batchsize"; expected one of --digits, --epochs, --batch-size,/],
        [['--optimizer', 'adam', '--momentum', '0.9'], /--momentum and --nesterov are sgd options/],
        [['--threads', '0'], /expected --threads to be an integer in \[1, 64\], received "0"/],
        [['--threads', '1.5'], /expected --threads to be an integer in \[1, 64\], received "1\.5"/],
        [['--threads', 'all'], /expected --threads to be an integer in \[1, 64\], received "all"/],
        [['--threads', '2', '--method', 'jacobian'], /--threads runs the vjp step; expected --method vjp with --threads, received --method jacobian/],
      ];
      for (const [argv, re] of cases) {
        const r = await cli([...argv, '--out', '/nonexistent/never-written.json']);
        expect(r.code, argv.join(' ')).to.equal(2);
        expect(r.err, argv.join(' ')).to.match(re);
        expect(r.out, argv.join(' ')).to.not.match(/epoch 1/);
      }
    });
  });

  it('accuracy as Keras: binary (p > 0.5) for one output, arg-max for several', () => {
    expect(correctCount(tensor([1, 0, 1, 0], [4, 1]), tensor([0.9, 0.2, 0.5, 0.51], [4, 1]))).to.equal(2);
    expect(correctCount(tensor([0, 1, 0, 1, 0, 0], [2, 3]), tensor([0.1, 0.7, 0.2, 0.3, 0.5, 0.2], [2, 3]))).to.equal(1);
  });
});


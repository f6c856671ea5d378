import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { allcloseReport } from '../../lib/allclose.js';
import { Activation } from '../../lib/layers/activation.js';
import { BatchNormalization } from '../../lib/layers/batch-normalization.js';
import { Conv2D } from '../../lib/layers/conv2d.js';
import { Dense } from '../../lib/layers/dense.js';
import { Dropout } from '../../lib/layers/dropout.js';
import { Flatten } from '../../lib/layers/flatten.js';
import { MaxPooling2D } from '../../lib/layers/max-pooling2d.js';
import { lossFrom } from '../../lib/losses.js';
import { loadModel, saveModel } from '../../lib/model-format.js';
import type { OptimizerConfig } from '../../lib/optimizers.js';
import { Rng } from '../../lib/rng.js';
import { Sequential } from '../../lib/sequential.js';
import { type Tensor, tensor } from '../../lib/tensor.js';
import { type Dataset, fit } from '../../lib/train.js';
import { createPool, fitParallel } from '../../lib/pool/pool.js';
import { shardBounds } from '../../lib/pool/shard.js';
import { expect, expectReject } from '../helpers/setup.js';

/** A small CNN with Dropout on 6x6x2 images: every call builds the same weights. */
function smallCnn(): Sequential {
  return new Sequential(
    [
      new Conv2D({ filters: 3, kernel_size: [3, 3] }),
      new Activation({ activation: 'relu' }),
      new MaxPooling2D({ pool_size: [2, 2] }),
      new Flatten(),
      new Dense({ units: 6, activation: 'tanh' }),
      new Dropout({ rate: 0.4 }),
      new Dense({ units: 1, activation: 'sigmoid' }),
    ],
    { inputShape: [6, 6, 2], rng: new Rng(3) },
  );
}

function clone(m: Sequential): Sequential {
  return loadModel(JSON.stringify(saveModel(m)));
}

function data(n: number): Dataset {
  const r = new Rng(5);
  return {
    x: tensor(Array.from({ length: n * 72 }, () => r.normal()), [n, 6, 6, 2]),
    y: tensor(Array.from({ length: n }, () => (r.uniform() > 0.5 ? 1 : 0)), [n, 1]),
  };
}

function weightsOf(m: Sequential): Float64Array {
  return Float64Array.from(m.params.flatMap((p) => Array.from(p.value.data.subarray(p.value.offset, p.value.offset + p.value.size))));
}

/** Bitwise equality, reporting the first index that differs. */
function expectBitIdentical(a: Float64Array, b: Float64Array, what: string): void {
  expect(a.length, what).to.equal(b.length);
  const k = a.findIndex((v, i) => !Object.is(v, b[i]));
  expect(k, `${what}: first differing weight ${k}: ${a[k]} vs ${b[k]}`).to.equal(-1);
}

const OPTIMIZERS: [string, OptimizerConfig][] = [
  ['SGD with momentum', { name: 'sgd', learning_rate: 0.05, momentum: 0.9 }],
  ['Adam', { name: 'adam', learning_rate: 0.01 }],
];

describe('pool: shardBounds', () => {
  it('cuts a batch into min(shards, B) contiguous runs that cover it, from B and the shard count alone', () => {
    expect(shardBounds(8, 3)).to.deep.equal([
      { index: 0, start: 0, count: 2 },
      { index: 1, start: 2, count: 3 },
      { index: 2, start: 5, count: 3 },
    ]);
    expect(shardBounds(3, 8).map((s) => s.count)).to.deep.equal([1, 1, 1]);
    for (const [B, S] of [[1, 1], [7, 2], [20, 8], [9, 9]]) {
      const sh = shardBounds(B, S);
      expect(sh.reduce((n, s) => n + s.count, 0)).to.equal(B);
      sh.forEach((s, k) => expect(s.start).to.equal(k === 0 ? 0 : sh[k - 1].start + sh[k - 1].count));
    }
  });
});

describe('pool: data-parallel VJP steps', function () {
  this.timeout(120000);
  const train = data(20); // batches of 8, 8 and 4: the last one is partial, its loss a mean over 4

  for (const [label, optimizer] of OPTIMIZERS) {
    it(`${label}: 1, 2 and 3 threads give bit-identical weights with Dropout in training, and agree with fit`, async () => {
      const base = smallCnn();
      const opts = { split: [], loss: 'binary_crossentropy', optimizer, epochs: 2, batchSize: 8, seed: 7 } as const;
      const ref = clone(base);
      await fit(ref, train, opts);
      const results: Float64Array[] = [];
      const losses: number[][] = [];
      for (const threads of [1, 2, 3]) {
        const m = clone(base);
        const seen: number[] = [];
        const out = await fitParallel(m, train, { ...opts, threads, shards: 4, onBatchEnd: (b) => seen.push(b.loss) });
        expect(out.steps).to.equal(6);
        expect(out.stopped).to.equal(null);
        results.push(weightsOf(m));
        losses.push(seen);
      }
      expectBitIdentical(results[1], results[0], '2 threads vs 1');
      expectBitIdentical(results[2], results[0], '3 threads vs 1');
      expect(losses[1]).to.deep.equal(losses[0]);
      expect(losses[2]).to.deep.equal(losses[0]);
      // Against one pass over the whole batch: the sums are grouped by shard, so rounding differs (measured ~1e-14 relative).
      const rep = allcloseReport(tensor(results[0], [results[0].length]), tensor(weightsOf(ref), [results[0].length]), { rtol: 1e-10, atol: 1e-12 });
      expect(rep.pass, JSON.stringify(rep.worst)).to.equal(true);
      expect(results[0].some((v, i) => v !== weightsOf(base)[i])).to.equal(true); // training moved the weights
    });
  }

  it('with one shard per batch it is the one-process fit, bit for bit (same loss, same masks, same sums)', async () => {
    const base = smallCnn();
    const opts = { split: [4], loss: 'binary_crossentropy', optimizer: { name: 'adam', learning_rate: 0.01 }, epochs: 1, batchSize: 8, seed: 3 } as const;
    const ref = clone(base);
    await fit(ref, train, opts);
    const m = clone(base);
    await fitParallel(m, train, { ...opts, threads: 2, shards: 1 });
    expectBitIdentical(weightsOf(m), weightsOf(ref), 'pool with 1 shard vs fit');
  });

  it('float32, with a frozen layer: 1 and 2 threads bit-identical, the frozen weights untouched', async () => {
    const build = () =>
      new Sequential(
        [new Flatten(), new Dense({ units: 5, activation: 'relu', trainable: false } as never), new Dropout({ rate: 0.5 }), new Dense({ units: 1, activation: 'sigmoid' })],
        { inputShape: [6, 6, 2], rng: new Rng(8), dtype: 'float32' },
      );
    const x32 = { x: tensor(Float32Array.from(train.x.data), train.x.shape, 'float32'), y: tensor(Float32Array.from(train.y.data), train.y.shape, 'float32') };
    const runs: Float64Array[] = [];
    for (const threads of [1, 2]) {
      const m = build();
      const frozen = weightsOf(new Sequential([m.layers[1]]));
      await fitParallel(m, x32, { split: [], loss: 'binary_crossentropy', optimizer: { name: 'adam', learning_rate: 0.01 }, batchSize: 8, seed: 2, threads, shards: 3 });
      expect(m.params.every((p) => p.value.data instanceof Float32Array)).to.equal(true);
      expectBitIdentical(weightsOf(new Sequential([m.layers[1]])), frozen, 'frozen layer');
      runs.push(weightsOf(m));
    }
    expectBitIdentical(runs[1], runs[0], 'float32, 2 threads vs 1');
  });

  it('in inference mode (training: false) the threads agree too', async () => {
    const base = smallCnn();
    const a = clone(base);
    const b = clone(base);
    const opts = { split: [], loss: 'mse', optimizer: { name: 'sgd' }, batchSize: 8, training: false } as const;
    await fitParallel(a, train, { ...opts, threads: 1 });
    await fitParallel(b, train, { ...opts, threads: 2 });
    expectBitIdentical(weightsOf(b), weightsOf(a), 'inference, 2 threads vs 1');
  });
});

describe('pool: bad input', function () {
  this.timeout(60000);
  const train = data(8);

  it('refuses a thread or shard count that is not an integer in range, naming what it received', async () => {
    const m = smallCnn();
    await expectReject(createPool(m, { threads: 0 }), /threads to be an integer in \[1, 64\], received 0/);
    await expectReject(createPool(m, { threads: 1.5 }), /threads to be an integer in \[1, 64\], received 1\.5/);
    await expectReject(createPool(m, { threads: '2' as unknown as number }), /threads to be an integer in \[1, 64\], received "2"/);
    await expectReject(createPool(m, { threads: 65 }), /threads to be an integer in \[1, 64\], received 65/);
    await expectReject(createPool(m, { shards: 0 }), /shards to be an integer/);
    await expectReject(createPool({} as Sequential), /expected a Sequential model/);
  });

  it('refuses BatchNormalization in training before any weight moves, and a pool built for another model or method', async () => {
    const bn = new Sequential([new Flatten(), new Dense({ units: 4 }), new BatchNormalization(), new Dense({ units: 1, activation: 'sigmoid' })], { inputShape: [6, 6, 2], rng: new Rng(1) });
    const before = weightsOf(bn);
    await expectReject(fitParallel(bn, train, { split: [], loss: 'binary_crossentropy', optimizer: { name: 'sgd' }, threads: 2 }), /BatchNormalization.*couples the samples.*threads: 1/);
    expectBitIdentical(weightsOf(bn), before, 'weights after the refused step');
    const m = smallCnn();
    const pool = await createPool(smallCnn(), { threads: 1 });
    await expectReject(fit(m, train, { split: [], loss: 'mse', optimizer: { name: 'sgd' }, pool }), /expected a pool built for this model/);
    const own = await createPool(m, { threads: 1 });
    await expectReject(fit(m, train, { split: [], loss: 'mse', optimizer: { name: 'sgd' }, pool: own, method: 'jacobian' }), /a pool runs the vjp step only/);
    await expectReject(fit(m, train, { split: [], loss: 'mse', optimizer: { name: 'sgd' }, pool: {} as never }), /expected pool to be a GradientPool/);
    await pool.close();
    await own.close();
  });

  it('refuses a step on a closed pool, a batch of the wrong shape, and a second step while one runs', async () => {
    const m = smallCnn();
    const pool = await createPool(m, { threads: 2 });
    const loss = lossFrom('mse');
    const x = train.x;
    const y = train.y;
    await expectReject(pool.gradients(tensor(new Float64Array(8 * 5), [8, 5]), y, loss, { training: true, seed: 0 }), /pool x/);
    await expectReject(pool.gradients(x, tensor(new Float64Array(3), [3, 1]), loss, { training: true, seed: 0 }), /pool yTrue: expected 8 rows/);
    const first = pool.gradients(x, y, loss, { training: true, seed: 0 });
    await expectReject(pool.gradients(x, y, loss, { training: true, seed: 0 }), /one step at a time/);
    const g = await first;
    expect(g.dLoss_dWeights.map((l) => l.length)).to.deep.equal(m.layers.map((l) => l.params.length));
    await pool.close();
    await pool.close(); // twice is fine
    await expectReject(pool.gradients(x, y, loss, { training: true, seed: 0 }), /already closed/);
  });
});

describe('pool: shutdown', function () {
  this.timeout(60000);

  it('an idle pool left open does not keep the process alive', () => {
    const pool = fileURLToPath(new URL('../../lib/pool/pool.ts', import.meta.url));
    const models = fileURLToPath(new URL('../../lib/models.ts', import.meta.url));
    const tensors = fileURLToPath(new URL('../../lib/tensor.ts', import.meta.url));
    const losses = fileURLToPath(new URL('../../lib/losses.ts', import.meta.url));
    const script = [
      `const { createPool } = await import(${JSON.stringify(pool)});`,
      `const { catsVsDogsCnn } = await import(${JSON.stringify(models)});`,
      `const { zeros } = await import(${JSON.stringify(tensors)});`,
      `const { lossFrom } = await import(${JSON.stringify(losses)});`,
      'const m = catsVsDogsCnn({ side: 22, channels: 1, filters: [2, 2, 2], units: 4 });',
      'const p = await createPool(m, { threads: 2 });',
      "const g = await p.gradients(zeros([4, 22, 22, 1]), zeros([4, 1]), lossFrom('mse'), { training: true, seed: 1 });",
      "console.log('stepped', g.dLoss_dWeights.length);",
    ].join('\n');
    const res = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 45000 });
    expect(res.error, 'the child did not exit by itself').to.equal(undefined);
    expect(res.stderr).to.equal('');
    expect(res.stdout.trim()).to.equal('stepped 15');
    expect(res.status).to.equal(0);
  });
});

import { readFileSync } from 'node:fs';
import { ConfigError, MemoryBudgetError } from '../lib/errors.js';
import { Activation } from '../lib/layers/activation.js';
import { Conv2D } from '../lib/layers/conv2d.js';
import { Dense } from '../lib/layers/dense.js';
import { Dropout } from '../lib/layers/dropout.js';
import { Flatten } from '../lib/layers/flatten.js';
import type { Layer } from '../lib/layers/layer.js';
import { MaxPooling2D } from '../lib/layers/max-pooling2d.js';
import { jacobianWrtWeights } from '../lib/jacobian.js';
import { DEFAULT_MEMORY_BUDGET, getMemoryBudget, setMemoryBudget } from '../lib/memory.js';
import { type MemoryReport, bytesHeld, estimateMemory, explicitWayBytes, formatMemoryReport, guardExplicitWay, measureMemory } from '../lib/memory-report.js';
import { SEED_REFERENCE_SPLIT, catsVsDogsCnn, seedReferenceModel, seededBatch, splitAfterLastPooling } from '../lib/models.js';
import { Rng } from '../lib/rng.js';
import { Sequential } from '../lib/sequential.js';
import { type DType, randomNormal, reshape, sizeOf } from '../lib/tensor.js';
import { expectSame } from './helpers/memory.js';
import { expect } from './helpers/setup.js';

const prod = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

describe('memory report', () => {
  const layerCases: { name: string; make: () => Layer; shape: number[]; training?: boolean }[] = [
    { name: 'Dense', make: () => new Dense({ units: 7, activation: 'tanh' }), shape: [5] },
    { name: 'Conv2D same, strided', make: () => new Conv2D({ filters: 3, kernel_size: 3, strides: 2, padding: 'same', activation: 'relu' }), shape: [7, 6, 2] },
    { name: 'MaxPooling2D', make: () => new MaxPooling2D({ pool_size: 2 }), shape: [6, 6, 3] },
    { name: 'Activation', make: () => new Activation({ activation: 'softmax' }), shape: [4] },
    { name: 'Flatten', make: () => new Flatten(), shape: [3, 2, 2] },
    { name: 'Dropout (inference)', make: () => new Dropout({ rate: 0.5 }), shape: [6] },
    { name: 'Dropout (training)', make: () => new Dropout({ rate: 0.5 }), shape: [6], training: true },
  ];

  for (const lc of layerCases) {
    for (const dtype of ['float64', 'float32'] as DType[]) {
      it(`${lc.name}, ${dtype}: the estimate from shapes equals what was allocated, alone and in a Sequential`, () => {
        const rng = new Rng(1);
        const layer = lc.make().build(lc.shape, { rng, dtype });
        const x = randomNormal([3, ...lc.shape], rng, dtype);
        const opts = { training: lc.training, rng: new Rng(2) };
        expectSame(estimateMemory(layer, 3, { training: lc.training }), measureMemory(layer, x, opts));
        const seq = new Sequential([lc.make()], { inputShape: lc.shape, dtype });
        expectSame(estimateMemory(seq, 3, { training: lc.training }), measureMemory(seq, x, opts));
      });
    }
  }

  it('Jacobian bytes are shape products: B·|out|·|in| and B·|out|·|param|, times the element size', () => {
    const conv = new Conv2D({ filters: 4, kernel_size: [2, 3] }).build([5, 6, 2], { rng: new Rng(0) });
    for (const [dtype, bpe] of [['float64', 8], ['float32', 4]] as const) {
      const r = estimateMemory(conv, 3, { dtype });
      const out = [4, 4, 4];
      expect(r.explicit.jacobians.map((j) => j.wrt)).to.deep.equal(['input', 'conv2d.kernel', 'conv2d.bias'].map((w) => (w === 'input' ? w : w.replace('conv2d', conv.name || 'Conv2D'))));
      expect(r.explicit.jacobians.map((j) => j.shape)).to.deep.equal([
        [3, ...out, 5, 6, 2],
        [3, ...out, 2, 3, 2, 4],
        [3, ...out, 4],
      ]);
      for (const j of r.explicit.jacobians) expect(j.bytes).to.equal(prod(j.shape) * bpe);
      expect(r.explicit.jacobianBytes).to.equal(3 * 64 * (60 + 48 + 4) * bpe);
      // What Conv2D saves: x and y. Cotangents: dy, dx, dKernel, dBias.
      expect(r.vjp.residualBytes).to.equal((3 * 60 + 3 * 64) * bpe);
      expect(r.vjp.cotangentBytes).to.equal((3 * 64 + 3 * 60 + 48 + 4) * bpe);
      expect(r.ratio).to.equal(r.explicit.jacobianBytes / r.vjp.bytes);
    }
  });

  it("the seed's stages: Jacobian shapes are the golden fixture's (PyTorch/JAX), and the estimate equals the measurement", () => {
    const fx = JSON.parse(readFileSync(new URL('./fixtures/seed_reference.json', import.meta.url), 'utf8'));
    const stages = seedReferenceModel().split(SEED_REFERENCE_SPLIT);
    const { x } = seededBatch([10, 10, 1], { batch: 3 });
    const est = estimateMemory(stages, 3);
    est.stages.forEach((s, k) => {
      const expected = [fx.expected.stageBatchJacobianWrtInput[k].shape, ...fx.expected.stageJacobianWrtWeights[k].flat().map((t: { shape: number[] }) => t.shape)];
      expect(s.explicit.jacobians.map((j) => j.shape), `stage ${k}`).to.deep.equal(expected);
    });
    // As jacobianChain: the first stage's Jacobian w.r.t. the model input is never built.
    expect(est.explicit.jacobians.map((j) => j.wrt)).to.not.include('stage 0 input');
    expect(est.explicit.jacobians).to.have.length(2 + 3 + 3);
    const all = estimateMemory(stages, 3, { firstStageInput: true });
    expect(all.explicit.jacobianBytes - est.explicit.jacobianBytes).to.equal(3 * 486 * 100 * 8);
    expectSame(est, measureMemory(stages, x));
    est.stages.forEach((s, k) => expectSame(s, measureMemory(stages, x).stages[k]));
    // A stage boundary's activation and cotangent are shared: the whole holds less than its stages.
    const sumStages = est.stages.reduce((a, s) => a + s.vjp.bytes, 0);
    expect(est.vjp.bytes).to.be.below(sumStages);
  });

  it('the CNN in training mode (Dropout saves its mask): estimate equals measurement, and the VJP way is far smaller', () => {
    const cnn = catsVsDogsCnn({ side: 22, channels: 2, seed: 1 });
    const stages = cnn.split(splitAfterLastPooling(cnn));
    const { x } = seededBatch([22, 22, 2], { batch: 2, seed: 3 });
    const est = estimateMemory(stages, 2, { training: true });
    // The VJP way measured (the Jacobians' bytes are checked on the seed's model above: building them here takes seconds).
    expectSame(est, measureMemory(stages, x, { training: true, rng: new Rng(5), jacobians: false }), false);
    expect(est.vjp.residuals.some((r) => /dropout.* mask/.test(r.what))).to.equal(true);
    expect(estimateMemory(stages, 2).vjp.residualBytes).to.equal(est.vjp.residualBytes - 2 * 64 * 8 * 2);
    expect(est.ratio).to.be.above(10);
    // Linear in the batch: both ways.
    const e8 = estimateMemory(stages, 8, { training: true });
    expect(e8.explicit.jacobianBytes).to.equal(4 * est.explicit.jacobianBytes);
  });

  it('the explicit way is refused over the budget before allocating, with the estimate, the budget and the VJP alternative', () => {
    const cnn = catsVsDogsCnn({ side: 224, channels: 3 });
    const stages = cnn.split(splitAfterLastPooling(cnn));
    const est = estimateMemory(stages, 32);
    let err: unknown;
    try {
      guardExplicitWay(est, 4 * 1024 ** 3);
    } catch (e) {
      err = e;
    }
    expect(err).to.be.instanceOf(MemoryBudgetError);
    const e = err as MemoryBudgetError;
    // One figure for every guard: the Jacobians, one tangent block, and the tapes' residuals.
    expect(e.estimateBytes).to.equal(est.explicit.jacobianBytes + est.explicit.tangentBlockBytes + est.vjp.residualBytes);
    expect(e.estimateBytes).to.equal(explicitWayBytes(est));
    expect(e.budgetBytes).to.equal(4 * 1024 ** 3);
    expect(e.message).to.include(`${explicitWayBytes(est)} bytes`);
    expect(e.message).to.include('4.00 GiB');
    expect(e.message).to.match(/VJP way.*holds .* \(\d+ bytes\) here/);
    expect(e.message).to.include(`(${est.vjp.bytes} bytes)`);
    // measureMemory refuses before building anything: the tiny budget is checked against the estimate.
    const small = seedReferenceModel().split(SEED_REFERENCE_SPLIT);
    const { x } = seededBatch([10, 10, 1], { batch: 3 });
    expect(() => measureMemory(small, x, { memoryBudget: 1000 })).to.throw(MemoryBudgetError, /over the memory budget of 1000 B/);
    // The VJP way alone still runs.
    expect(measureMemory(small, x, { memoryBudget: 1000, jacobians: false }).vjp.bytes).to.equal(estimateMemory(small, 3).vjp.bytes);
  });

  it('the default budget fits this machine and is overridable', () => {
    expect(getMemoryBudget()).to.equal(DEFAULT_MEMORY_BUDGET);
    expect(DEFAULT_MEMORY_BUDGET).to.be.below(24 * 1024 ** 3);
    const est = estimateMemory(seedReferenceModel().split(SEED_REFERENCE_SPLIT), 3);
    expect(() => guardExplicitWay(est)).to.not.throw();
    setMemoryBudget(est.explicit.jacobianBytes - 1);
    try {
      expect(() => guardExplicitWay(est)).to.throw(MemoryBudgetError);
    } finally {
      setMemoryBudget(DEFAULT_MEMORY_BUDGET);
    }
  });

  it('bytesHeld counts a buffer once however many views reach it', () => {
    const t = randomNormal([4, 6], new Rng(0));
    const v = reshape(t, [24]);
    expect(bytesHeld({ a: t, b: [v, { c: t }], d: t.data.subarray(3) })).to.equal(4 * 6 * 8);
    expect(bytesHeld({ a: t, b: new Int32Array(5) })).to.equal(4 * 6 * 8 + 5 * 4);
  });

  it('formats a report as a markdown table naming every Jacobian and buffer', () => {
    const dense = new Dense({ units: 2 }).build([3], { rng: new Rng(0) });
    const s = formatMemoryReport(estimateMemory(dense, 4));
    expect(s).to.include('| explicit | J w.r.t. input | [4, 2, 3] | 192 B |');
    expect(s).to.include('| explicit | J w.r.t. Dense.kernel | [4, 2, 3, 2] | 384 B |'.replace('Dense.', `${dense.name || 'Dense'}.`));
    expect(s).to.match(/\| vjp \| .*saved x .*\| \[4, 3\] float64 \| 96 B \|/);
    expect(s).to.match(/ratio \d/);
  });

  it('factored weight Jacobians: the estimate from shapes equals the bytes they hold when no value is zero, and bounds them on the CNN', () => {
    const rng = new Rng(12);
    const stage = new Sequential([new Conv2D({ filters: 4, kernel_size: 3 }), new Conv2D({ filters: 3, kernel_size: 2, strides: 2, padding: 'same' }), new Flatten(), new Dense({ units: 2 })], { inputShape: [9, 8, 2], rng });
    const x = randomNormal([3, 9, 8, 2], rng);
    const est = estimateMemory(stage, 3).explicit.jacobians.filter((j) => j.wrt !== 'input');
    const built = jacobianWrtWeights(stage, x, { format: 'factored' });
    expect(built.map((J) => J.format)).to.deep.equal(new Array(6).fill('factored'));
    expect(est.map((j) => j.factoredBytes)).to.deep.equal(built.map((J) => J.bytes));
    expect(estimateMemory(stage, 3).explicit.jacobians[0].factoredBytes, 'w.r.t. the input').to.equal(undefined);
    const cnn = catsVsDogsCnn({ side: 24, channels: 3, seed: 2 });
    const [model_0] = cnn.split(splitAfterLastPooling(cnn));
    const xs = randomNormal([2, 24, 24, 3], rng);
    const bound = estimateMemory(model_0, 2).explicit.jacobians.filter((j) => j.wrt !== 'input');
    jacobianWrtWeights(model_0, xs, { format: 'factored' }).forEach((J, k) => expect(J.bytes, bound[k].wrt).to.be.at.most(bound[k].factoredBytes!));
  });

  it('rejects bad input, quoting what it received', () => {
    const dense = new Dense({ units: 2 }).build([3]);
    expect(() => estimateMemory(dense, 0)).to.throw(ConfigError, /positive integer batch, received 0/);
    expect(() => estimateMemory(dense, 1.5)).to.throw(ConfigError, /received 1.5/);
    expect(() => estimateMemory([], 1)).to.throw(ConfigError, /non-empty list of stages, received an empty list/);
    const other = new Dense({ units: 1 }).build([5]);
    expect(() => estimateMemory([dense, other], 1)).to.throw(ConfigError, /stage 1 expects input \[5\], but stage 0 gives \[2\]/);
    const alien = { inputShape: [2], outputShape: [2], params: [], describe: () => 'Lambda "broken"', forward: () => ({}), jvp: () => ({}), vjp: () => ({}) };
    expect(() => estimateMemory(alien as never, 1)).to.throw(ConfigError, /expected Lambda "broken"'s forward pass to return \{ y: Tensor, saved \}, received an object with keys \(none\)/);
    expect(sizeOf([2, 3])).to.equal(6);
  });
});

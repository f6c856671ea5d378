import { readFileSync } from 'node:fs';
import { type ChainResult, jacobianChain, referenceGradients, vjpChain } from '../lib/chain.js';
import { ConfigError, MemoryBudgetError, ShapeError } from '../lib/errors.js';
import { upstreamGradientLossOut, upstreamGradientLossWeights } from '../lib/helpers.js';
import { fullJacobianWrtInput, jacobianWrtInput, jacobianWrtWeights } from '../lib/jacobian.js';
import { estimateMemory, explicitWayBytes, guardExplicitWay } from '../lib/memory-report.js';
import { type LayerSpec, layerFromConfig, loadModel } from '../lib/model-io.js';
import { catsVsDogsCnn, splitAfterLastPooling } from '../lib/models.js';
import { Rng } from '../lib/rng.js';
import { Sequential } from '../lib/sequential.js';
import { streamedBlockWidth, streamedInputGradient, streamedWeightGradients } from '../lib/streamed.js';
import { fromJSON, randomNormal, tensor, zeros } from '../lib/tensor.js';
import { expect } from './helpers/setup.js';

/** The tolerance of the chain specs (spec/chain.spec.ts). */
const TOL = { rtol: 1e-10, atol: 1e-14 };

function seedFixture() {
  const text = readFileSync(new URL('./fixtures/seed_reference.json', import.meta.url), 'utf8');
  const fx = JSON.parse(text) as { x: never; y: never; loss: string; stages: number[][]; expected: { dLoss_dWeights: never[][]; dLoss_dStageOutput: never[] } };
  const model = loadModel(text);
  return { fx, stages: model.split(Sequential.pointsFromStages(fx.stages, model.layers.length)), x: fromJSON(fx.x), y: fromJSON(fx.y) };
}

function expectSame(a: ChainResult, b: ChainResult, what: string): void {
  expect(a.loss, `${what}: loss`).to.be.closeTo(b.loss, TOL.atol + TOL.rtol * Math.abs(b.loss));
  expect(a.dLoss_dWeights.length).to.equal(b.dLoss_dWeights.length);
  a.dLoss_dWeights.forEach((ps, i) =>
    ps.forEach((g, k) => {
      if (b.dLoss_dWeights[i][k] === null) expect(g, `${what}: layer ${i} param ${k} has no gradient`).to.equal(null);
      else expect(g, `${what}: dLoss/dWeights layer ${i} param ${k}`).to.be.allclose(b.dLoss_dWeights[i][k]!, TOL);
    }),
  );
  a.dLoss_dOut.forEach((g, s) => expect(g, `${what}: dLoss/dOut stage ${s}`).to.be.allclose(b.dLoss_dOut[s], TOL));
}

/** Conv2D, BatchNormalization (couples the samples in training), ReLU | pooling, Dense, Dropout, BatchNormalization, Dense. */
function bnCnn(rng: Rng): Sequential {
  const specs: LayerSpec[] = [
    { class_name: 'Conv2D', config: { filters: 3, kernel_size: [2, 2] } },
    { class_name: 'BatchNormalization', config: {} },
    { class_name: 'Activation', config: { activation: 'relu' } },
    { class_name: 'MaxPooling2D', config: { pool_size: [2, 2] } },
    { class_name: 'Flatten', config: {} },
    { class_name: 'Dense', config: { units: 5, activation: 'tanh' } },
    { class_name: 'Dropout', config: { rate: 0.5 } },
    { class_name: 'BatchNormalization', config: {} },
    { class_name: 'Dense', config: { units: 1, activation: 'sigmoid' } },
  ];
  return new Sequential(specs.map((s) => layerFromConfig(s)), { inputShape: [5, 5, 2], rng });
}

describe('streamed: the explicit way, one block of columns at a time', () => {
  it('on the seed reference model: streamed = materialized = the golden fixture = the VJP chain; the records say what was streamed', async () => {
    const { fx, stages, x, y } = seedFixture();
    const mat = jacobianChain(stages, x, y, fx.loss);
    const str = jacobianChain(stages, x, y, fx.loss, { streamed: true });
    expectSame(str, mat, 'streamed vs materialized');
    expectSame(str, await vjpChain(stages, x, y, fx.loss), 'streamed vs VJP');
    fx.expected.dLoss_dWeights.forEach((ps, i) => ps.forEach((e, k) => expect(str.dLoss_dWeights[i][k], `golden dLoss_dWeights[${i}][${k}]`).to.be.allclose(e, TOL)));
    expect(str.memory.map((m) => m.jacobians.map((J) => [J.label, J.shape]))).to.deep.equal(mat.memory.map((m) => m.jacobians.map((J) => [J.label, J.shape])));
    const est = estimateMemory([...stages], x.shape[0]);
    for (const J of str.memory.flatMap((m) => m.jacobians)) {
      expect(J.format).to.equal('streamed');
      expect(J.bytes, J.label).to.be.within(1, est.explicit.streamed.blockBytes);
    }
    expect(Math.max(...str.memory.flatMap((m) => m.jacobians.map((J) => J.bytes))), 'the estimate names the largest block held').to.equal(est.explicit.streamed.blockBytes);
  });

  it('on a small CNN with BatchNormalization and Dropout in training: streamed = materialized = VJP = one tape; the coupled stage streams its full Jacobian', async () => {
    const model = bnCnn(new Rng(4));
    const stages = model.split([4]);
    const rng = new Rng(9);
    const x = randomNormal([3, 5, 5, 2], rng);
    const y = tensor([1, 0, 1], [3, 1]);
    const opts = { training: true, seed: 21 };
    const ref = referenceGradients(stages, x, y, 'binary_crossentropy', opts);
    const str = jacobianChain(stages, x, y, 'binary_crossentropy', { ...opts, streamed: true });
    expectSame(str, ref, 'streamed vs one tape');
    expectSame(str, jacobianChain(stages, x, y, 'binary_crossentropy', opts), 'streamed vs materialized');
    expectSame(str, await vjpChain(stages, x, y, 'binary_crossentropy', opts), 'streamed vs VJP');
    expect(str.memory[1].jacobians[0]).to.deep.include({ label: 'dOut/dIn (full, samples coupled)', shape: [3, 1, 3, 2, 2, 3], format: 'streamed' });
    // The coupling matters: a per-sample contraction would differ (the test could fail).
    const inference = jacobianChain(stages, x, y, 'binary_crossentropy', { streamed: true, seed: 21 });
    expect(inference.dLoss_dOut[0]).to.not.be.allclose(str.dLoss_dOut[0], { rtol: 1e-6 });
  });

  it('on the cats-vs-dogs CNN (narrow) with Dropout in training: streamed = VJP', async () => {
    const cnn = catsVsDogsCnn({ side: 24, channels: 2, filters: [2, 3, 4], units: 5 });
    const stages = cnn.split(splitAfterLastPooling(cnn));
    const x = randomNormal([2, 24, 24, 2], new Rng(2));
    const y = tensor([0, 1], [2, 1]);
    const opts = { training: true, seed: 3 };
    expectSame(jacobianChain(stages, x, y, 'binary_crossentropy', { ...opts, streamed: true }), await vjpChain(stages, x, y, 'binary_crossentropy', opts), 'streamed vs VJP');
  });

  it('block width T = 1 and T = all columns give the same gradients', () => {
    const model = bnCnn(new Rng(6));
    const stages = model.split([2, 6]);
    const x = randomNormal([2, 5, 5, 2], new Rng(8));
    const y = tensor([1, 0], [2, 1]);
    const opts = { training: true, seed: 2 };
    const one = jacobianChain(stages, x, y, 'binary_crossentropy', { ...opts, streamed: true, jacobian: { tangents: 1 } });
    const all = jacobianChain(stages, x, y, 'binary_crossentropy', { ...opts, streamed: true, jacobian: { tangents: 100000 } });
    expectSame(one, all, 'T = 1 vs T = all');
    const perTangent = one.memory.flatMap((m) => m.jacobians.map((J) => J.bytes));
    const whole = all.memory.flatMap((m) => m.jacobians.map((J) => J.bytes));
    perTangent.forEach((b, k) => expect(b, 'a one-column block is smaller').to.be.at.most(whole[k]));
    expect(perTangent.some((b, k) => b < whole[k])).to.equal(true);
  });

  it('each contraction equals the seed helpers on the materialized Jacobian, exactly, whatever the block width', () => {
    const model = bnCnn(new Rng(1));
    const [stage0, stage1] = model.split([4]);
    const x = randomNormal([3, 5, 5, 2], new Rng(5));
    const h = stage0.forward(x).y;
    const g0 = randomNormal([3, ...stage0.outputShape], new Rng(6));
    const g1 = randomNormal([3, 1], new Rng(7));
    for (const tangents of [1, 7, undefined]) {
      const Js = jacobianWrtWeights(stage0, x, { tangents });
      streamedWeightGradients(stage0, x, g0, { tangents }).forEach((c, k) => expect(c.gradient.data, `weight ${k}, T ${tangents}`).to.deep.equal(upstreamGradientLossWeights(Js[k], g0).data));
      expect(streamedInputGradient(stage0, x, g0, { tangents }).gradient.data).to.deep.equal(upstreamGradientLossOut(jacobianWrtInput(stage0, x), g0).data);
      // One seeded Dropout mask for both passes (a Sequential reads `seed`).
      const seeded = { tangents, training: true, seed: 5, samplesCoupled: true };
      const full = fullJacobianWrtInput(stage1, h, seeded);
      expect(streamedInputGradient(stage1, h, g1, seeded).gradient.data, 'coupled').to.deep.equal(upstreamGradientLossWeights(full, g1).data);
    }
  });

  describe('the memory guard', () => {
    it('a budget that refuses the materialized way lets the streamed way run, and the streamed estimate is one block + residuals + gradients', () => {
      const { fx, stages, x, y } = seedFixture();
      const est = estimateMemory([...stages], x.shape[0]);
      const s = est.explicit.streamed;
      expect(s.bytes).to.equal(s.blockBytes + s.gradientBytes + est.vjp.residualBytes);
      expect(explicitWayBytes(est, true)).to.equal(s.bytes);
      const budget = 8 * 1024 ** 2;
      expect(explicitWayBytes(est)).to.be.greaterThan(budget);
      expect(s.bytes).to.be.lessThan(budget);
      expect(() => jacobianChain(stages, x, y, fx.loss, { jacobian: { memoryBudget: budget } })).to.throw(MemoryBudgetError, /explicit-Jacobian way/);
      const str = jacobianChain(stages, x, y, fx.loss, { streamed: true, jacobian: { memoryBudget: budget } });
      expectSame(str, jacobianChain(stages, x, y, fx.loss), 'streamed under the budget vs materialized');
      expect(() => jacobianChain(stages, x, y, fx.loss, { streamed: true, jacobian: { memoryBudget: s.bytes - 1 } })).to.throw(MemoryBudgetError, /streamed explicit-Jacobian way .* over the memory budget/);
    });

    it('at 128², B=8 the cats-vs-dogs CNN: the materialized way is refused by the default budget, the streamed way fits under 1 GiB', () => {
      const cnn = catsVsDogsCnn({ side: 128, channels: 3 });
      const est = estimateMemory(cnn.split(splitAfterLastPooling(cnn)), 8, { training: true });
      expect(() => guardExplicitWay(est)).to.throw(MemoryBudgetError);
      expect(() => guardExplicitWay(est, undefined, { streamed: true })).to.not.throw();
      expect(explicitWayBytes(est, true)).to.be.lessThan(1024 ** 3);
    });
  });

  describe('bad input', () => {
    it('streamed with a structured format, mode or engine, or not a boolean, is refused before any work', () => {
      const { fx, stages, x, y } = seedFixture();
      expect(() => jacobianChain(stages, x, y, fx.loss, { streamed: true, jacobian: { format: 'sparse', mode: 'auto' } })).to.throw(ConfigError, /streamed .* takes no jacobian\.format, jacobian\.mode.*received format: "?sparse"?, mode: "?auto"?/);
      expect(() => jacobianChain(stages, x, y, fx.loss, { streamed: 'yes' as unknown as boolean })).to.throw(ConfigError, /expected streamed to be a boolean, received "?yes"?/);
    });

    it('an upstream gradient of the wrong shape, and a bad block width, are refused naming both', () => {
      const [stage0] = bnCnn(new Rng(1)).split([4]);
      const x = randomNormal([3, 5, 5, 2], new Rng(5));
      expect(() => streamedWeightGradients(stage0, x, zeros([2, ...stage0.outputShape]))).to.throw(ShapeError, /dLoss_dOut.*\[3, 2, 2, 3\].*\[2, 2, 2, 3\]|dLoss_dOut.*\[2, 2, 2, 3\].*\[3, 2, 2, 3\]/);
      expect(() => streamedBlockWidth(10, 8, 0)).to.throw(ShapeError, /positive integer block width, received 0/);
    });
  });
});

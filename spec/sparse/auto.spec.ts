import { ConfigError, MemoryBudgetError } from '../../lib/errors.js';
import { upstreamGradientLossOut, upstreamGradientLossWeights } from '../../lib/helpers.js';
import { DenseJacobian, jacobianWrtInput, jacobianWrtInputByVjp, jacobianWrtWeights } from '../../lib/jacobian.js';
import { Conv2D } from '../../lib/layers/conv2d.js';
import { Dense } from '../../lib/layers/dense.js';
import type { Differentiable } from '../../lib/layers/layer.js';
import { lossByName } from '../../lib/losses.js';
import { catsVsDogsCnn, splitAfterLastPooling } from '../../lib/models.js';
import { Rng } from '../../lib/rng.js';
import { Sequential } from '../../lib/sequential.js';
import { planJacobian, sparseJacobianWrtInput, sparseJacobianWrtWeights } from '../../lib/sparse/auto.js';
import { SparseJacobian } from '../../lib/sparse/csr.js';
import { type Tensor, fromJSON, randomUniform } from '../../lib/tensor.js';
import { loadFixture } from '../helpers/fixtures.js';
import { expect } from '../helpers/setup.js';
import { expectSameJacobian, randomTensor } from './util.js';

/** An opaque Differentiable: the same function, its structure hidden. */
function opaque<S>(f: Differentiable<S>): Differentiable<S> {
  return { inputShape: f.inputShape, outputShape: f.outputShape, params: f.params, forward: (x, o) => f.forward(x, o), jvp: (s, t) => f.jvp(s, t), vjp: (s, d) => f.vjp(s, d) };
}

describe('sparse/auto', () => {
  describe('golden fixtures (PyTorch and JAX, float64)', () => {
    for (const file of ['seed_reference.json', 'dense_mlp.json']) {
      it(`${file}: every stage's sparse Jacobians, by every engine, equal stageBatchJacobianWrtInput and stageJacobianWrtWeights to 1e-12; chained, they give dLoss_dWeights`, () => {
        const { fx, model, stages, x: batch, y } = loadFixture(file);
        let h = batch;
        const inputs: Tensor[] = [];
        for (const st of stages) {
          inputs.push(h);
          h = st.forward(h).y;
        }
        const dLoss_dY = lossByName(fx.loss).gradient(y, h);
        expect(dLoss_dY).to.be.allclose(fromJSON(fx.expected.dLoss_dStageOutput[stages.length - 1]), { rtol: 1e-10, atol: 1e-14 });
        let g = dLoss_dY;
        let flat = 0;
        const layerBase = stages.map((_, s) => stages.slice(0, s).reduce((n, st) => n + st.layers.length, 0));
        for (let s = stages.length - 1; s >= 0; s--) {
          const st = stages[s];
          const x = inputs[s];
          const expected = fromJSON(fx.expected.stageBatchJacobianWrtInput[s]);
          for (const opts of [{}, { mode: 'forward' as const, engine: 'compressed' as const }, { mode: 'reverse' as const }, { engine: 'propagate' as const }]) {
            const J = sparseJacobianWrtInput(st, x, opts);
            expectSameJacobian(J, expected, `${file} stage ${s} w.r.t. input, ${JSON.stringify(opts)} → ${J.plan?.mode}/${J.plan?.engine}`);
          }
          const Jw = sparseJacobianWrtWeights(st, x);
          let k = 0;
          st.layers.forEach((l, j) => {
            l.params.forEach((p, pi) => {
              expectSameJacobian(Jw[k], fromJSON(fx.expected.stageJacobianWrtWeights[s][j][pi]), `${file} stage ${s} layer ${j} ${p.name}`);
              // The chain: the seed's helper contracts the sparse Jacobian with dLoss/dOut.
              expect(upstreamGradientLossWeights(Jw[k], g), `${file} dLoss/d${p.name} of layer ${layerBase[s] + j}`).to.be.allclose(fromJSON(fx.expected.dLoss_dWeights[layerBase[s] + j][pi]), { rtol: 1e-10, atol: 1e-14 });
              k++;
              flat++;
            });
          });
          g = upstreamGradientLossOut(sparseJacobianWrtInput(st, x), g);
          if (s > 0) expect(g, `${file} dLoss/dOut of stage ${s - 1}`).to.be.allclose(fromJSON(fx.expected.dLoss_dStageOutput[s - 1]), { rtol: 1e-10, atol: 1e-14 });
        }
        expect(flat).to.equal(model.params.length);
      });
    }
  });

  it('routes {mode, format} from jacobianWrtInput / jacobianWrtWeights and the Layer methods; the default stays dense forward mode', () => {
    const rng = new Rng(3);
    const conv = new Conv2D({ filters: 3, kernel_size: 2, activation: 'relu' }).build([5, 5, 2], { rng });
    const x = randomTensor([2, 5, 5, 2], rng);
    const dense = jacobianWrtInput(conv, x);
    expect(dense).to.be.instanceOf(DenseJacobian);
    expect(jacobianWrtInput(conv, x, { mode: 'forward' })).to.be.instanceOf(DenseJacobian);
    const sparse = jacobianWrtInput(conv, x, { format: 'sparse' });
    expect(sparse).to.be.instanceOf(SparseJacobian);
    expect(sparse.plan?.engine).to.equal('propagate');
    expectSameJacobian(sparse, dense, 'layer method, sparse');
    const rev = jacobianWrtInput(conv, x, { mode: 'reverse' });
    expect(rev).to.be.instanceOf(DenseJacobian);
    expectSameJacobian(rev, jacobianWrtInputByVjp(conv, x), 'reverse, dense');
    const auto = jacobianWrtInput(conv, x, { mode: 'auto' });
    expect(auto).to.be.instanceOf(DenseJacobian);
    expectSameJacobian(auto, dense, 'auto, dense');
    const ws = jacobianWrtWeights(conv, x, { format: 'sparse', mode: 'reverse' });
    const wd = jacobianWrtWeights(conv, x);
    ws.forEach((J, k) => {
      expect(J).to.be.instanceOf(SparseJacobian);
      expect(J.plan?.mode).to.equal('reverse');
      expectSameJacobian(J, wd[k], `weights ${k}, reverse`);
    });
    jacobianWrtWeights(conv, x, { mode: 'auto' }).forEach((J, k) => expectSameJacobian(J, wd[k], `weights ${k}, auto dense`));
    // An engine alone routes too; the dense engine in dense format is the plain builder.
    const byEngine = jacobianWrtInput(conv, x, { mode: 'forward', engine: 'dense' });
    expect(byEngine).to.be.instanceOf(DenseJacobian);
    expectSameJacobian(byEngine, dense, 'engine dense, format dense');
    jacobianWrtWeights(conv, x, { mode: 'reverse', engine: 'dense' }).forEach((J, k) => expectSameJacobian(J, wd[k], `weights ${k}, reverse dense`));
    const prop = jacobianWrtInput(conv, x, { engine: 'propagate' });
    expect(prop).to.be.instanceOf(DenseJacobian);
    expect(prop.label).to.match(/forward\/propagate/);
  });

  it('auto picks sparse propagation for the conv stage, and says why; reverse for a wide stage whose structure it cannot see', () => {
    const cnn = catsVsDogsCnn({ side: 32 });
    const [model_0, model_1] = cnn.split(splitAfterLastPooling(cnn));
    const plan = planJacobian(model_0, 1);
    expect(plan.engine).to.equal('propagate');
    expect(plan.reason).to.match(/^cheapest estimate: forward\/propagate .* vs forward\/compressed \(1452 colours\)/);
    expect(plan.candidates.map((c) => `${c.mode}/${c.engine}`)).to.deep.equal(['forward/propagate', 'forward/compressed', 'reverse/compressed', 'forward/dense', 'reverse/dense']);
    // model_1 ends in Dense(1): one row per sample. Hidden behind an opaque wrapper without structure hooks, its pattern is dense: one row colour, so reverse needs 1 pass instead of 256.
    const hidden = opaque(model_1);
    const p1 = planJacobian(hidden, 2);
    expect([p1.mode, p1.engine, p1.colours]).to.deep.equal(['reverse', 'compressed', 1]);
    expect(p1.candidates.every((c) => !c.unavailable), 'a Differentiable without hooks is slower in every engine, never refused').to.equal(true);
    const x1 = randomUniform([2, ...model_1.inputShape], new Rng(4));
    const J = sparseJacobianWrtInput(hidden, x1);
    expect(J.plan?.passes).to.equal(1);
    expectSameJacobian(J, jacobianWrtInput(model_1, x1), 'model_1 by one stacked VJP');
  });

  it('the memory budget: the structural bound is checked before any work; blocks of tangents are sized to it', () => {
    const cnn = catsVsDogsCnn({ side: 64 });
    const [model_0] = cnn.split(splitAfterLastPooling(cnn));
    const x = randomUniform([1, 64, 64, 3], new Rng(1));
    expect(() => sparseJacobianWrtInput(model_0, x, { memoryBudget: 1e6 })).to.throw(MemoryBudgetError, /sparse batch Jacobian w\.r\.t\. the input \[1, 6, 6, 64, 64, 64, 3\] \(structural bound\).*over the memory budget/);
    const plan = planJacobian(model_0, 1, { mode: 'forward', engine: 'compressed', memoryBudget: 256 * 1024 ** 2 });
    expect(plan.blockWidth).to.be.below(1452);
    expect(plan.passes).to.equal(Math.ceil(1452 / plan.blockWidth));
    expect(() => jacobianWrtInput(model_0, x, { mode: 'auto', memoryBudget: 1e6 })).to.throw(MemoryBudgetError, /batch Jacobian w\.r\.t\. the input \[1, 6, 6, 64, 64, 64, 3\]/);
  });

  it('rejects unknown modes, formats, engines and impossible combinations, quoting them', () => {
    const rng = new Rng(5);
    const d = new Dense({ units: 2 }).build([3], { rng });
    const x = randomTensor([1, 3], rng);
    expect(() => sparseJacobianWrtInput(d, x, { mode: 'sideways' as never })).to.throw(ConfigError, /expected mode 'auto', 'forward' or 'reverse', received "sideways"/);
    expect(() => sparseJacobianWrtInput(d, x, { format: 'coo' as never })).to.throw(ConfigError, /expected format 'dense', 'sparse' or 'factored', received "coo"/);
    expect(() => sparseJacobianWrtInput(d, x, { engine: 'magic' as never })).to.throw(ConfigError, /expected engine 'propagate', 'compressed' or 'dense', received "magic"/);
    expect(() => sparseJacobianWrtInput(d, x, { mode: 'reverse', engine: 'propagate' })).to.throw(ConfigError, /engine 'propagate' is forward mode/);
    // Without hooks a Differentiable is dense to the planner, but propagate still runs, through its own jvp.
    expectSameJacobian(sparseJacobianWrtInput(opaque(d), x, { engine: 'propagate' }), jacobianWrtInput(d, x), 'propagate through an opaque Differentiable');
    expect(() => sparseJacobianWrtInput(d, randomTensor([1, 4], rng))).to.throw(/jacobianWrtInput x: expected shape \[B, 3\]/);
  });

  it('pattern "values": colours the recorded pass\'s own pattern (ReLU zeros, pooling winners), fewer colours, same Jacobian', () => {
    const rng = new Rng(6);
    const model = new Sequential([new Conv2D({ filters: 4, kernel_size: 3, activation: 'relu' }), new Conv2D({ filters: 3, kernel_size: 2 })], { inputShape: [7, 7, 2], rng });
    const x = randomTensor([2, 7, 7, 2], rng);
    const s = sparseJacobianWrtInput(model, x, { mode: 'forward', engine: 'compressed' });
    const v = sparseJacobianWrtInput(model, x, { mode: 'forward', engine: 'compressed', pattern: 'values' });
    expect(s.plan?.colours).to.equal(4 * 4 * 2);
    expect(v.plan!.colours).to.be.at.most(s.plan!.colours);
    expectSameJacobian(v, s, 'values vs structural');
    expectSameJacobian(v, jacobianWrtInput(model, x), 'values vs dense');
  });
});

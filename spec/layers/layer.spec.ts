/**
 * The layer contract (`lib/layers/layer.ts`): a layer that gives only forward, jvp and vjp works in
 * every engine and every chain, dense and sparse, and in the memory estimate, through the generic
 * fallbacks of the structure hooks; the shared checks of every layer (config keys, build budget).
 */
import { jacobianChain, referenceGradients, vjpChain } from '../../lib/chain.js';
import { ConfigError, MemoryBudgetError } from '../../lib/errors.js';
import { Dense } from '../../lib/layers/dense.js';
import { Flatten } from '../../lib/layers/flatten.js';
import { BASE_KEYS, type Cotangents, type Forward, Layer, type Tangents, checkKeys, leavesOf } from '../../lib/layers/layer.js';
import { registerLayer } from '../../lib/layers/registry.js';
import { Conv2D } from '../../lib/layers/conv2d.js';
import { estimateMemory, measureMemory } from '../../lib/memory-report.js';
import { getMemoryBudget, setMemoryBudget } from '../../lib/memory.js';
import { loadModel, saveModel } from '../../lib/model-io.js';
import { Rng } from '../../lib/rng.js';
import { Sequential } from '../../lib/sequential.js';
import { planJacobian } from '../../lib/sparse/auto.js';
import { type Tensor, assertShape, contiguous, dtypeOf, randomUniform, tensor, zeros } from '../../lib/tensor.js';
import { checkDerivatives } from '../helpers/check-derivatives.js';
import { expectSame } from '../helpers/memory.js';
import { expect } from '../helpers/setup.js';

/** What Square's forward saves: its input, for `2x`. */
interface SquareSaved {
  x: Tensor;
}

/** A user's layer, `y = x²` element-wise, written as a newcomer would: the three rules and nothing else. */
class Square extends Layer<SquareSaved> {
  readonly className = 'Square';
  constructor(config: Record<string, unknown> = {}, name?: string) {
    super(name);
    checkKeys(config, [...BASE_KEYS], 'Square');
  }
  computeOutputShape(inputShape: readonly number[]): number[] {
    return inputShape.slice();
  }
  getConfig(): Record<string, unknown> {
    return {};
  }
  forward(x: Tensor): Forward<SquareSaved> {
    this.checkInput(x);
    const xc = contiguous(x);
    const y = zeros(xc.shape, dtypeOf(x));
    for (let i = 0; i < y.size; i++) y.data[i] = xc.data[xc.offset + i] ** 2;
    return { y, saved: { x: xc } };
  }
  jvp({ x }: SquareSaved, { xDot, T }: Tangents): Tensor {
    const yDot = zeros([...x.shape, T], dtypeOf(x));
    if (!xDot) return yDot;
    assertShape(xDot, [...x.shape, T], 'Square jvp xDot');
    const d = contiguous(xDot);
    for (let i = 0; i < x.size; i++) for (let t = 0; t < T; t++) yDot.data[i * T + t] = 2 * x.data[x.offset + i] * d.data[d.offset + i * T + t];
    return yDot;
  }
  vjp({ x }: SquareSaved, dy: Tensor): Cotangents {
    const g = contiguous(dy);
    const dx = zeros(x.shape, dtypeOf(x));
    for (let i = 0; i < x.size; i++) dx.data[i] = 2 * x.data[x.offset + i] * g.data[g.offset + i];
    return { dx, dParams: [] };
  }
}

describe('layers/layer: the contract', () => {
  registerLayer('Square', (c, n) => new Square(c, n));

  it('a user-defined layer with only forward, jvp and vjp: its derivatives, four ways and through every structured engine', () => {
    const sq = new Square().build([3, 2]);
    const x = randomUniform([2, 3, 2], new Rng(1), -1, 1);
    checkDerivatives(sq, x, {
      exact: (Jx) => {
        // ∂(x²)/∂x = diag(2x).
        const J = Jx!.toDense();
        for (let b = 0; b < 2; b++) for (let i = 0; i < 6; i++) for (let j = 0; j < 6; j++) expect(J.data[(b * 6 + i) * 6 + j]).to.equal(i === j ? 2 * x.data[b * 6 + i] : 0);
      },
    });
  });

  it('a model containing it: referenceGradients, jacobianChain (dense, and sparse with mode auto), vjpChain agree; the memory estimate equals the measurement; it saves and loads by its class name', async () => {
    const rng = new Rng(2);
    const model = new Sequential([new Conv2D({ filters: 2, kernel_size: 2 }), new Square(), new Flatten(), new Dense({ units: 3, activation: 'softmax' })], { inputShape: [4, 4, 1], rng });
    const stages = model.split([2]);
    const x = randomUniform([3, 4, 4, 1], rng);
    const yTrue = tensor([1, 0, 0, 0, 1, 0, 0, 0, 1], [3, 3]);
    const ref = referenceGradients(stages, x, yTrue, 'categorical_crossentropy');
    const runs = [
      jacobianChain(stages, x, yTrue, 'categorical_crossentropy'),
      jacobianChain(stages, x, yTrue, 'categorical_crossentropy', { jacobian: { format: 'sparse', mode: 'auto' } }),
      await vjpChain(stages, x, yTrue, 'categorical_crossentropy'),
    ];
    for (const r of runs) {
      expect(r.loss).to.be.closeTo(ref.loss, 1e-14);
      r.dLoss_dWeights.forEach((g, i) => g.forEach((gk, k) => expect(gk, `${r.method}: layer ${i} param ${k}`).to.be.allclose(ref.dLoss_dWeights[i][k], { rtol: 1e-10, atol: 1e-13 })));
    }
    // Its residuals come from a probe pass: its saved x is the Conv2D's output buffer, counted once.
    expectSame(estimateMemory(stages, 3), measureMemory(stages, x));
    // Without hooks it is dense to the planner: slower, never refused.
    const plan = planJacobian(stages[0], 3);
    expect(plan.candidates.every((c) => !c.unavailable)).to.equal(true);
    const back = loadModel(saveModel(model));
    expect(back.layers.map((l) => l.className)).to.deep.equal(['Conv2D', 'Square', 'Flatten', 'Dense']);
  });

  it('leavesOf flattens stages; a config that is not an object, or an unknown key (own keys only), is refused quoting it', () => {
    const m = new Sequential([new Dense({ units: 2 }), new Dense({ units: 1 })], { inputShape: [3] });
    expect(leavesOf(m).length).to.equal(2);
    expect(leavesOf(m.layers[0])).to.deep.equal([m.layers[0]]);
    expect(() => new Dense(undefined as never)).to.throw(ConfigError, /Dense: expected a config object, received undefined/);
    expect(() => new Square(5 as never)).to.throw(ConfigError, /Square: expected a config object, received 5/);
    for (const key of ['__proto__', 'constructor', 'toString', 'hasOwnProperty']) {
      const config = JSON.parse(`{"units": 2, ${JSON.stringify(key)}: 1}`);
      expect(() => new Dense(config), key).to.throw(ConfigError, new RegExp(`unknown option "${key}"; expected one of units`));
    }
  });

  it('build checks the parameters against the memory budget before allocating anything', () => {
    const t0 = performance.now();
    const before = getMemoryBudget();
    setMemoryBudget(1024 ** 3);
    try {
      // 268 million float64 values: 2 GiB, over a 1 GiB budget.
      expect(() => new Dense({ units: 4096 }).build([65536])).to.throw(MemoryBudgetError, /the parameters of Dense \(268439552 values\): needs an estimated 2\.00 GiB .*over the memory budget of 1\.00 GiB/);
    } finally {
      setMemoryBudget(before);
    }
    expect(() => new Dense({ units: 1e9 }).build([1000])).to.throw(MemoryBudgetError, /over the memory budget of 4\.00 GiB/);
    expect(performance.now() - t0, 'refused, not attempted').to.be.below(1000);
  });

  it('initializers: any Keras config is recorded and written back; a fresh build draws from it; an unimplemented one is refused only when weights must be drawn', () => {
    const he = { class_name: 'VarianceScaling', config: { scale: 2, mode: 'fan_in', distribution: 'uniform', seed: null } };
    const d = new Dense({ units: 50, kernel_initializer: he, bias_initializer: 'ones' } as never).build([200], { rng: new Rng(4) });
    const limit = Math.sqrt(6 / 200);
    const k = Array.from(d.params[0].value.data);
    expect(Math.max(...k.map(Math.abs))).to.be.at.most(limit).and.above(0.95 * limit);
    expect(Array.from(d.params[1].value.data).every((v) => v === 1)).to.equal(true);
    expect(d.getConfig()).to.deep.include({ kernel_initializer: he, bias_initializer: 'ones' });
    const ortho = { class_name: 'Orthogonal', config: { gain: 1 } };
    const o = new Dense({ units: 2, kernel_initializer: ortho } as never);
    expect(() => o.build([3])).to.throw(ConfigError, /orthogonal/i);
    const loaded = new Dense({ units: 2, kernel_initializer: ortho } as never).build([3], { initialize: false });
    expect(Array.from(loaded.params[0].value.data)).to.deep.equal([0, 0, 0, 0, 0, 0]);
  });

  it('a config\'s trainable: false freezes the layer built directly, as a model file does; a non-boolean is refused', () => {
    const d = new Dense({ units: 2, trainable: false } as never).build([3]);
    expect([d.trainable, ...d.params.map((p) => p.trainable)]).to.deep.equal([false, false, false]);
    expect(new Dense({ units: 2, trainable: true } as never).build([3]).trainable).to.equal(true);
    expect(() => new Dense({ units: 2, trainable: 'no' } as never)).to.throw(ConfigError, /expected trainable to be true or false, received "no"/);
  });
});

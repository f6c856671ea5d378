import { ConfigError, ShapeError } from '../lib/errors.js';
import { jacobianWrtInput } from '../lib/jacobian.js';
import { Activation } from '../lib/layers/activation.js';
import { Conv2D } from '../lib/layers/conv2d.js';
import { Dense } from '../lib/layers/dense.js';
import { Dropout } from '../lib/layers/dropout.js';
import { Flatten } from '../lib/layers/flatten.js';
import type { Layer } from '../lib/layers/layer.js';
import { MaxPooling2D } from '../lib/layers/max-pooling2d.js';
import { Rng } from '../lib/rng.js';
import { Sequential, layerRng } from '../lib/sequential.js';
import { GradientTape, TapeError } from '../lib/tape.js';
import { type DType, type Tensor, randomNormal, tensor } from '../lib/tensor.js';
import { checkDerivatives } from './helpers/check-derivatives.js';
import { expect } from './helpers/setup.js';

const mlp = (seed = 1) =>
  new Sequential([new Dense({ units: 4, activation: 'tanh' }), new Dense({ units: 3, activation: 'relu' }), new Dense({ units: 2 }), new Activation({ activation: 'softmax' })], {
    inputShape: [5],
    rng: new Rng(seed),
  });

const cnn = (seed = 2) =>
  new Sequential(
    [
      new Conv2D({ filters: 3, kernel_size: 2, activation: 'relu' }),
      new MaxPooling2D({ pool_size: 2, padding: 'same' }),
      new Conv2D({ filters: 2, kernel_size: [2, 1], strides: 2, padding: 'same' }),
      new Flatten(),
      new Dense({ units: 3, activation: 'sigmoid' }),
      new Dropout({ rate: 0.4 }),
      new Dense({ units: 2 }),
    ],
    { inputShape: [6, 5, 2], rng: new Rng(seed) },
  );

describe('Sequential', () => {
  it('builds its layers in order, names them as Keras does, and flattens their parameters', () => {
    const m = cnn();
    expect(m.layers.map((l) => l.name)).to.deep.equal(['conv2d', 'max_pooling2d', 'conv2d_1', 'flatten', 'dense', 'dropout', 'dense_1']);
    expect(m.inputShape).to.deep.equal([6, 5, 2]);
    expect(m.layers.map((l) => l.outputShape)).to.deep.equal([[5, 4, 3], [3, 2, 3], [2, 1, 2], [4], [3], [3], [2]]);
    expect(m.outputShape).to.deep.equal([2]);
    // The very Param objects of the layers, in order.
    expect(m.params).to.deep.equal(m.layers.flatMap((l) => l.params));
    m.params.forEach((p, k) => expect(p).to.equal(m.layers[m.paramOwners[k].layer].params[m.paramOwners[k].param]));
    expect(m.paramOwners).to.deep.equal([
      { layer: 0, param: 0 },
      { layer: 0, param: 1 },
      { layer: 2, param: 0 },
      { layer: 2, param: 1 },
      { layer: 4, param: 0 },
      { layer: 4, param: 1 },
      { layer: 6, param: 0 },
      { layer: 6, param: 1 },
    ]);
    expect(m.paramCount).to.equal(3 * 8 + 3 + 2 * 3 * 2 + 2 + 4 * 3 + 3 + 3 * 2 + 2);
  });

  it('seeded initialization: the same seed gives the same weights, another seed others', () => {
    const a = cnn(5).params.map((p) => Array.from(p.value.data));
    expect(cnn(5).params.map((p) => Array.from(p.value.data))).to.deep.equal(a);
    expect(cnn(6).params[0].value.data).to.not.deep.equal(cnn(5).params[0].value.data);
  });

  it('forward is the composition of the layers\' forwards, and saves each layer\'s residuals and output', () => {
    const m = mlp();
    const x = randomNormal([3, 5], new Rng(4));
    const { y, saved } = m.forward(x);
    let h = x;
    for (const l of m.layers) h = l.forward(h).y;
    expect(y).to.be.allclose(h, { rtol: 0, atol: 0 });
    expect(saved.perLayer).to.have.length(4);
    expect(saved.outputs[3]).to.equal(y);
    expect(saved.input).to.equal(x);
  });

  for (const [name, make, shape] of [
    ['an MLP (Dense, tanh, relu, softmax)', mlp, [3, 5]],
    ['a CNN (Conv2D, MaxPooling2D same, strided Conv2D, Flatten, Dense, Dropout)', cnn, [2, 6, 5, 2]],
  ] as const) {
    it(`derivatives, four ways: ${name}`, () => {
      const m = make();
      checkDerivatives(m, randomNormal(shape, new Rng(9)));
    });
  }

  it('derivatives, four ways, in training mode: the seeded Dropout mask is the same on every pass', () => {
    const m = cnn();
    checkDerivatives(m, randomNormal([2, 6, 5, 2], new Rng(9)), { forwardOptions: () => ({ training: true, seed: 11 }) });
  });

  it('exact case: a linear MLP\'s Jacobian is the product of its kernels, W0ᵀ W1ᵀ in each sample', () => {
    const m = new Sequential([new Dense({ units: 3 }), new Dense({ units: 2 })], { inputShape: [4], rng: new Rng(3) });
    const x = randomNormal([2, 4], new Rng(1));
    const J = jacobianWrtInput(m, x).toDense();
    const [W0, W1] = [m.layers[0].params[0].value, m.layers[1].params[0].value];
    for (let b = 0; b < 2; b++)
      for (let o = 0; o < 2; o++)
        for (let i = 0; i < 4; i++) {
          let s = 0;
          for (let h = 0; h < 3; h++) s += W0.get(i, h) * W1.get(h, o);
          expect(J.get(b, o, i)).to.be.closeTo(s, 1e-15);
        }
  });

  it('jvp: a null tangent stays null, so layers before the first seeded one are never visited', () => {
    const m = mlp();
    const calls: string[] = [];
    for (const l of m.layers) {
      const orig = l.jvp.bind(l);
      (l as Layer).jvp = (s, t) => {
        calls.push(`${l.name}:${t.xDot === null ? 'null' : 'xDot'}`);
        return orig(s as never, t);
      };
    }
    const x = randomNormal([2, 5], new Rng(1));
    const { saved } = m.forward(x);
    // Only the last Dense's kernel carries tangents: the two first layers must not run (they would allocate zeros).
    const dK = randomNormal([3, 2, 4], new Rng(2));
    const dy = m.jvp(saved, { xDot: null, paramDots: [null, null, null, null, dK, null], T: 4 });
    expect(calls).to.deep.equal(['dense_2:null', 'activation:xDot']);
    expect(dy.shape).to.deep.equal([2, 2, 4]);
    expect(Array.from(dy.data).some((v) => v !== 0)).to.equal(true);
    // All tangents null: zeros of [B, ...out, T], and no layer visited.
    calls.length = 0;
    const z = m.jvp(saved, { xDot: null, paramDots: null, T: 3 });
    expect(z.shape).to.deep.equal([2, 2, 3]);
    expect(Array.from(z.data).every((v) => v === 0)).to.equal(true);
    expect(calls).to.deep.equal([]);
  });

  describe('split', () => {
    it('makes stages that hold the same layer objects, so weights are shared', () => {
      const m = cnn();
      const [s0, s1, s2] = m.split([2, 4]);
      expect(s0.layers[0]).to.equal(m.layers[0]);
      expect(s2.layers[2]).to.equal(m.layers[6]);
      expect([s0.layerOffset, s1.layerOffset, s2.layerOffset]).to.deep.equal([0, 2, 4]);
      expect([s0.name, s1.name, s2.name]).to.deep.equal(['model_0', 'model_1', 'model_2']);
      expect(s1.inputShape).to.deep.equal([3, 2, 3]);
      expect(s1.outputShape).to.deep.equal([4]);
      expect(s1.params).to.deep.equal(m.params.slice(2, 4));
      // A step on a stage's weight is a step on the model.
      s2.params[0].value = tensor(new Array(9).fill(0.5), [3, 3]);
      expect(m.layers[4].params[0].value.get(2, 2)).to.equal(0.5);
    });

    it('chained stages compute the model, masks included (per-layer streams keyed by the global layer index)', () => {
      const m = cnn();
      const x = randomNormal([2, 6, 5, 2], new Rng(3));
      const opts = { training: true, seed: 21 };
      const whole = m.forward(x, opts).y;
      let h = x;
      for (const s of m.split([3, 5])) h = s.forward(h, opts).y;
      expect(h).to.be.allclose(whole, { rtol: 0, atol: 0 });
      // And the mask did act: inference gives another output.
      expect(m.forward(x).y).to.not.be.allclose(whole, { rtol: 1e-6 });
      expect(layerRng(21, 5).uniform()).to.not.equal(layerRng(21, 4).uniform());
    });

    it('pointsFromStages reads the fixtures\' stage lists', () => {
      expect(Sequential.pointsFromStages([[0], [1], [2, 3, 4]], 5)).to.deep.equal([1, 2]);
      expect(() => Sequential.pointsFromStages([[0], [2]], 3)).to.throw(ConfigError, /covering layers 0..2 once each, received \[\[0\], \[2\]\]/);
    });

    it('rejects split points that are not strictly increasing inside 1..L-1', () => {
      const m = mlp();
      expect(() => m.split([0])).to.throw(ConfigError, /strictly increasing layer indices in 1..3 .*received \[0\]/);
      expect(() => m.split([2, 2])).to.throw(ConfigError, /received \[2, 2\]/);
      expect(() => m.split([4])).to.throw(ConfigError, /received \[4\]/);
      expect(() => m.split([1.5])).to.throw(ConfigError, /expected an array of layer indices, received \[1.5\]/);
    });

    it('concat joins stages back into one model over the same layers', () => {
      const m = cnn();
      const whole = Sequential.concat(m.split([1, 6]));
      expect(whole.layers).to.deep.equal(m.layers);
      expect(whole.layers.every((l, i) => l === m.layers[i])).to.equal(true);
    });
  });

  describe('bad input', () => {
    it('no layers, or an unbuilt first layer without an input shape', () => {
      expect(() => new Sequential([])).to.throw(ConfigError, /expected at least one layer, received an empty list/);
      expect(() => new Sequential([new Dense({ units: 2 })])).to.throw(ConfigError, /not built; give \{ inputShape \}/);
    });

    it('a layer that cannot take the shape before it names the layer index', () => {
      expect(() => new Sequential([new Flatten(), new Conv2D({ filters: 1, kernel_size: 2 })], { inputShape: [4, 4, 1] })).to.throw(ShapeError, /layer 1 \(Conv2D "conv2d"\): .*rank 3.*received \[16\]/);
      const built = new Dense({ units: 2 }).build([7]);
      expect(() => new Sequential([new Dense({ units: 3 }), built], { inputShape: [4] })).to.throw(ShapeError, /layer 1 .*built for input \[7\], but the layer before it gives \[3\]/);
    });

    it('an input of the wrong shape, and a cotangent of the wrong shape', () => {
      const m = mlp();
      expect(() => m.forward(tensor([1, 2, 3], [1, 3]))).to.throw(ShapeError, /expected shape \[B, 5\] \(rank 2\), received \[1, 3\]/);
      const { saved } = m.forward(randomNormal([2, 5], new Rng(1)));
      expect(() => m.vjp(saved, tensor([1, 2], [1, 2]))).to.throw(ShapeError, /vjp dy: expected shape \[2, 2\]/);
      expect(() => m.jvp(saved, { xDot: null, paramDots: [null], T: 1 })).to.throw(ShapeError, /expected 6 parameter tangents \(or null\), received 1/);
    });
  });

  describe('fused passes ({ fuse: true })', () => {
    // Every kind of pair: Conv2D and Dense absorbing relu (the GEMM's epilogue) and sigmoid (after it); gelu reads its input, so it runs on its own; a Conv2D with its own activation is not fused.
    const fusable = (dtype: DType) =>
      new Sequential(
        [
          new Conv2D({ filters: 5, kernel_size: 3 }),
          new Activation({ activation: 'relu' }),
          new MaxPooling2D({ pool_size: 2 }),
          new Conv2D({ filters: 4, kernel_size: 2, activation: 'tanh' }),
          new Activation({ activation: 'relu' }),
          new Conv2D({ filters: 6, kernel_size: 2, padding: 'same' }),
          new Activation({ activation: 'sigmoid' }),
          new Flatten(),
          new Dense({ units: 7 }),
          new Activation({ activation: 'relu' }),
          new Dense({ units: 5 }),
          new Activation({ activation: 'gelu' }),
          new Dense({ units: 3 }),
          new Activation({ activation: 'softmax' }),
        ],
        { inputShape: [12, 11, 3], rng: new Rng(7), dtype },
      );
    const bits = (ts: (Tensor | null)[]) => ts.map((t) => (t ? Array.from(t.data) : null));

    for (const dtype of ['float64', 'float32'] as const) {
      it(`forward, vjp and jvp give the unfused pass's values bit for bit (${dtype})`, () => {
        const model = fusable(dtype);
        const x = randomNormal([3, 12, 11, 3], new Rng(8), dtype);
        // A corner of zeros (negative ones): some pre-activations are exactly the bias, 0, at relu's kink (NaN and -0 are the kernels' spec).
        x.data.fill(-0, 0, 3 * 11 * 3);
        const plain = model.forward(x);
        const fused = model.forward(x, { fuse: true });
        expect(plain.saved.unrecorded).to.equal(undefined);
        expect(fused.saved.unrecorded).to.deep.equal([0, 5, 8, 12]);
        expect(Array.from(fused.y.data)).to.deep.equal(Array.from(plain.y.data));
        // Every recorded output but the unrecorded ones is the same; those hold the pair's output.
        plain.saved.outputs.forEach((t, i) => expect(Array.from(fused.saved.outputs[fused.saved.unrecorded!.includes(i) ? i + 1 : i].data)).to.deep.equal(Array.from((fused.saved.unrecorded!.includes(i) ? plain.saved.outputs[i + 1] : t).data)));
        const dy = randomNormal([3, 3], new Rng(9), dtype);
        const a = model.vjp(plain.saved, dy);
        const b = model.vjp(fused.saved, dy);
        expect(bits([b.dx, ...b.dParams])).to.deep.equal(bits([a.dx, ...a.dParams]));
        const T = 2;
        const xDot = randomNormal([3, 12, 11, 3, T], new Rng(10), dtype);
        const paramDots = model.params.map((p, k) => (k % 2 ? randomNormal([...p.value.shape, T], new Rng(11 + k), dtype) : null));
        expect(Array.from(model.jvp(fused.saved, { xDot, paramDots, T }).data)).to.deep.equal(Array.from(model.jvp(plain.saved, { xDot, paramDots, T }).data));
      });
    }

    it('a tape recording a fused pass gives the same gradients w.r.t. input and weights, and refuses the activation it did not record', () => {
      const model = fusable('float64');
      const x = randomNormal([2, 12, 11, 3], new Rng(12));
      const dy = randomNormal([2, 3], new Rng(13));
      const grads = (fuse: boolean) => {
        const tape = new GradientTape(model);
        const y = tape.forward(x, { fuse });
        return { tape, g: tape.gradient(y, [tape.input, ...model.params], { outputGradients: dy }) };
      };
      const plain = grads(false);
      const fused = grads(true);
      expect(bits(fused.g)).to.deep.equal(bits(plain.g));
      // The first Conv2D's output was overwritten by its relu: its slot holds the relu's output, which the tape finds as that (a later activation).
      const t = fused.tape;
      expect(() => t.batchJacobian(t.output, t.activations[1])).to.throw(TapeError, /output of conv2d.*did not record.*record without fuse/);
      expect(bits(t.gradient(t.output, [t.activations[2]], { outputGradients: dy }))).to.deep.equal(bits(plain.tape.gradient(plain.tape.output, [plain.tape.activations[2]], { outputGradients: dy })));
    });
  });
});

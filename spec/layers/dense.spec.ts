import { jacobianChain, referenceGradients, vjpChain } from '../../lib/chain.js';
import { jacobianWrtInput, jacobianWrtWeights } from '../../lib/jacobian.js';
import { Conv2D } from '../../lib/layers/conv2d.js';
import { Dense } from '../../lib/layers/dense.js';
import { Flatten } from '../../lib/layers/flatten.js';
import { estimateMemory, measureMemory } from '../../lib/memory-report.js';
import { Rng } from '../../lib/rng.js';
import { Sequential } from '../../lib/sequential.js';
import { findColouringConflict, greedyColumnColouring, kronColumnColouring } from '../../lib/sparse/colouring.js';
import { colourCountOf } from '../../lib/sparse/hooks.js';
import { layerInputKron, paramKron } from '../../lib/sparse/pattern.js';
import { randomNormal, reshape, tensor, zeros } from '../../lib/tensor.js';
import { checkDerivatives } from '../helpers/check-derivatives.js';
import { expectSame } from '../helpers/memory.js';
import { expect } from '../helpers/setup.js';

describe('Dense', () => {
  for (const activation of ['linear', 'relu', 'sigmoid', 'tanh', 'softmax'] as const) {
    for (const use_bias of [true, false]) {
      it(`derivatives, four ways: activation=${activation}, use_bias=${use_bias}`, () => {
        const rng = new Rng(3);
        const layer = new Dense({ units: 4, activation, use_bias }).build([5], { rng });
        checkDerivatives(layer, randomNormal([3, 5], rng));
      });
    }
  }

  describe('on inputs of rank above 2: the last axis, the leading axes one more batch (Keras)', () => {
    for (const shape of [[4, 5], [2, 3, 5], [1, 5]]) {
      for (const activation of ['linear', 'relu', 'sigmoid', 'tanh', 'softmax'] as const) {
        for (const use_bias of [true, false]) {
          it(`derivatives, four ways: input [B, ${shape.join(', ')}], activation=${activation}, use_bias=${use_bias}`, () => {
            const rng = new Rng(7);
            const layer = new Dense({ units: 3, activation, use_bias }).build(shape, { rng });
            if (use_bias) layer.params[1].value = randomNormal([3], rng);
            expect(layer.outputShape).to.deep.equal([...shape.slice(0, -1), 3]);
            expect(layer.params[0].value.shape).to.deep.equal([5, 3]);
            checkDerivatives(layer, randomNormal([2, ...shape], rng));
          });
        }
      }
    }

    it('exact case, rank 3: ∂y/∂x = I ⊗ Wᵀ (no coupling across the leading axis), ∂y/∂W = x ⊗ I, ∂y/∂b = I', () => {
      const layer = new Dense({ units: 2 }).build([3, 4], { rng: new Rng(2) });
      const x = randomNormal([2, 3, 4], new Rng(3));
      const W = layer.params[0].value;
      checkDerivatives(layer, x, {
        exact: (Jx, [Jk, Jb]) => {
          const J = Jx!.toDense();
          const K = Jk.toDense();
          const Bd = Jb.toDense();
          expect(J.shape).to.deep.equal([2, 3, 2, 3, 4]);
          for (let b = 0; b < 2; b++)
            for (let l = 0; l < 3; l++)
              for (let o = 0; o < 2; o++) {
                for (let l2 = 0; l2 < 3; l2++) for (let i = 0; i < 4; i++) expect(J.get(b, l, o, l2, i), `∂y[${b},${l},${o}]/∂x[${b},${l2},${i}]`).to.equal(l === l2 ? W.get(i, o) : 0);
                for (let i = 0; i < 4; i++) for (let p = 0; p < 2; p++) expect(K.get(b, l, o, i, p)).to.equal(o === p ? x.get(b, l, i) : 0);
                for (let p = 0; p < 2; p++) expect(Bd.get(b, l, o, p)).to.equal(o === p ? 1 : 0);
              }
        },
      });
    });

    it('a Dense on [H, W, C] is a 1x1 Conv2D with the kernel [1, 1, in, units]: forward, vjp and Jacobians agree', () => {
      const rng = new Rng(8);
      for (const activation of ['linear', 'tanh', 'softmax'] as const) {
        const dense = new Dense({ units: 4, activation }).build([3, 5, 2], { rng });
        dense.params[1].value = randomNormal([4], rng);
        const conv = new Conv2D({ filters: 4, kernel_size: 1, activation }).build([3, 5, 2]);
        conv.params[0].value = reshape(dense.params[0].value, [1, 1, 2, 4]);
        conv.params[1].value = dense.params[1].value;
        const x = randomNormal([2, 3, 5, 2], rng);
        const fd = dense.forward(x);
        const fc = conv.forward(x);
        const tol = { rtol: 1e-13, atol: 1e-14 };
        expect(fd.y, `${activation} forward`).to.be.allclose(fc.y, tol);
        const dy = randomNormal(fd.y.shape, rng);
        const gd = dense.vjp(fd.saved, dy);
        const gc = conv.vjp(fc.saved, dy);
        expect(gd.dx, `${activation} dx`).to.be.allclose(gc.dx, tol);
        expect(gd.dParams[0], `${activation} dKernel`).to.be.allclose(reshape(gc.dParams[0], [2, 4]), tol);
        expect(gd.dParams[1], `${activation} dBias`).to.be.allclose(gc.dParams[1], tol);
        expect(jacobianWrtInput(dense, x, { format: 'sparse', mode: 'forward', engine: 'propagate' }), `${activation} Jacobian`).to.be.allclose(jacobianWrtInput(conv, x), tol);
      }
    });

    it('colours: closed form = Kronecker = greedy CPR = largest row, all valid', () => {
      for (const activation of ['linear', 'softmax'] as const) {
        const layer = new Dense({ units: 3, activation }).build([2, 3, 4]);
        for (const wrt of ['input', 0, 1] as const) {
          const k = wrt === 'input' ? layerInputKron(layer) : paramKron(layer, wrt);
          const P = k.expand();
          const kc = kronColumnColouring(k);
          const what = `${activation} w.r.t. ${wrt}`;
          expect(P.rows, what).to.equal(2 * 3 * 3);
          expect(colourCountOf(layer, wrt), what).to.equal(P.maxRowNnz());
          expect(kc.count, what).to.equal(P.maxRowNnz());
          expect(greedyColumnColouring(P).count, what).to.equal(P.maxRowNnz());
          expect(findColouringConflict(P, kc), what).to.equal(null);
        }
      }
    });

    it('in a chain: Conv2D · Dense on the channels · Flatten | Dense: the three ways agree, dense and sparse, and the memory estimate is the measurement', async () => {
      const model = new Sequential([new Conv2D({ filters: 3, kernel_size: 2, activation: 'relu' }), new Dense({ units: 4, activation: 'tanh' }), new Flatten(), new Dense({ units: 2, activation: 'softmax' })], { inputShape: [4, 5, 2], rng: new Rng(4) });
      expect(model.layers[1].outputShape).to.deep.equal([3, 4, 4]);
      const stages = model.split([2]);
      const rng = new Rng(5);
      const x = randomNormal([3, 4, 5, 2], rng);
      const y = zeros([3, 2]);
      for (let b = 0; b < 3; b++) y.set(b, b % 2, 1);
      const ref = referenceGradients(stages, x, y, 'categorical_crossentropy');
      const tol = { rtol: 1e-10, atol: 1e-13 };
      for (const r of [jacobianChain(stages, x, y, 'categorical_crossentropy'), jacobianChain(stages, x, y, 'categorical_crossentropy', { jacobian: { format: 'sparse', mode: 'auto' } }), await vjpChain(stages, x, y, 'categorical_crossentropy')]) {
        expect(r.loss, `${r.method} loss`).to.be.closeTo(ref.loss, 1e-12);
        r.dLoss_dWeights.forEach((ps, i) => ps.forEach((g, k) => expect(g, `${r.method} dLoss/dWeights[${i}][${k}]`).to.be.allclose(ref.dLoss_dWeights[i][k], tol)));
        r.dLoss_dOut.forEach((g, s) => expect(g, `${r.method} dLoss/dOut[${s}]`).to.be.allclose(ref.dLoss_dOut[s], tol));
      }
      expectSame(estimateMemory(stages, 3), measureMemory(stages, x));
    });
  });

  it('exact case: the linear Jacobian w.r.t. the input is Wᵀ in every sample, and w.r.t. the kernel is x ⊗ I', () => {
    const layer = new Dense({ units: 2 }).build([3], { rng: new Rng(1) });
    const x = tensor([1, 2, 3, -1, 0, 4], [2, 3]);
    const J = jacobianWrtInput(layer, x).toDense();
    const W = layer.params[0].value;
    for (let b = 0; b < 2; b++) for (let o = 0; o < 2; o++) for (let i = 0; i < 3; i++) expect(J.get(b, o, i)).to.equal(W.get(i, o));
    const [Jk, Jb] = jacobianWrtWeights(layer, x);
    expect(Jk.shape).to.deep.equal([2, 2, 3, 2]);
    for (let b = 0; b < 2; b++) for (let o = 0; o < 2; o++) for (let i = 0; i < 3; i++) for (let p = 0; p < 2; p++) expect(Jk.toDense().get(b, o, i, p)).to.equal(o === p ? x.get(b, i) : 0);
    expect(Jb.toDense()).to.be.allclose([[[1, 0], [0, 1]], [[1, 0], [0, 1]]]);
  });

  it('rejects bad configs and inputs, quoting what it received', () => {
    expect(() => new Dense({ units: 0 })).to.throw(/expected units to be a positive integer, received 0/);
    expect(() => new Dense({ units: 2, activation: 'mish' as never })).to.throw(/unknown activation "mish"/);
    expect(() => new Dense({ units: 2, kernel: 3 } as never)).to.throw(/unknown option "kernel"/);
    expect(() => new Dense({ units: 2 }).build([])).to.throw(/expected a per-sample input of rank 1 or more .* received \[\]/);
    const layer = new Dense({ units: 2 }).build([3]);
    expect(() => layer.forward(tensor([1, 2], [1, 2]))).to.throw(/expected shape \[B, 3\] \(rank 2\), received \[1, 2\]/);
    const rank3 = new Dense({ units: 2 }).build([4, 3]);
    expect(() => rank3.forward(zeros([2, 3, 4]))).to.throw(/expected shape \[B, 4, 3\] \(rank 3\), received \[2, 3, 4\]/);
    const { saved } = rank3.forward(zeros([2, 4, 3]));
    expect(() => rank3.vjp(saved, zeros([2, 4, 3]))).to.throw(/vjp dy: expected shape \[2, 4, 2\] \(rank 3\), received \[2, 4, 3\]/);
    expect(() => rank3.jvp(saved, { xDot: zeros([2, 4, 3]), paramDots: null, T: 1 })).to.throw(/jvp xDot: expected shape \[2, 4, 3, 1\] \(rank 4\), received \[2, 4, 3\]/);
    expect(() => rank3.jvp(saved, { xDot: null, paramDots: [zeros([3, 2]), null], T: 1 })).to.throw(/jvp kernelDot: expected shape \[3, 2, 1\] \(rank 3\), received \[3, 2\]/);
  });
});

describe('Keras config keys', () => {
  it('accepts the keys Keras writes into saved models at the values implemented, and refuses others', () => {
    const keras = {
      units: 3,
      activation: 'relu',
      use_bias: true,
      kernel_initializer: { module: 'keras.initializers', class_name: 'GlorotUniform', config: { seed: null } },
      bias_initializer: 'zeros',
      kernel_regularizer: null,
      bias_constraint: null,
    };
    expect(new Dense(keras as never).units).to.equal(3);
    // Any initializer is recorded (a file's weights may follow); a fresh build draws from it.
    expect(new Dense({ ...keras, kernel_initializer: 'he_normal' } as never).initializers.kernel).to.equal('he_normal');
    expect(() => new Dense({ ...keras, kernel_initializer: 5 } as never)).to.throw(/option "kernel_initializer" must be an initializer name or config .* received 5/);
    expect(() => new Dense({ ...keras, kernel_regularizer: { class_name: 'L2' } } as never)).to.throw(/"kernel_regularizer" must be null/);
  });
});

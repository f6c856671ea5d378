import { jacobianWrtInput, jacobianWrtWeights } from '../../lib/jacobian.js';
import { Dense } from '../../lib/layers/dense.js';
import { Rng } from '../../lib/rng.js';
import { randomNormal, tensor } from '../../lib/tensor.js';
import { checkDerivatives } from '../helpers/check-derivatives.js';
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
    expect(() => new Dense({ units: 2 }).build([3, 3])).to.throw(/rank 1 .* received \[3, 3\]/);
    const layer = new Dense({ units: 2 }).build([3]);
    expect(() => layer.forward(tensor([1, 2], [1, 2]))).to.throw(/expected shape \[B, 3\] \(rank 2\), received \[1, 2\]/);
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

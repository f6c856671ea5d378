import { jacobianWrtInput, jacobianWrtWeights } from '../../lib/jacobian.js';
import { Flatten } from '../../lib/layers/flatten.js';
import { Rng } from '../../lib/rng.js';
import { randomNormal, tensor, zeros } from '../../lib/tensor.js';
import { checkDerivatives } from '../helpers/check-derivatives.js';
import { expect } from '../helpers/setup.js';

describe('Flatten', () => {
  for (const shape of [[4, 3, 2], [5], [2, 1, 3, 2]]) {
    it(`derivatives, four ways: per-sample input [${shape.join(', ')}]`, () => {
      const rng = new Rng(5);
      const layer = new Flatten().build(shape);
      checkDerivatives(layer, randomNormal([3, ...shape], rng));
    });
  }

  it('flattens NHWC row-major, as Keras: y[b, (h·W + w)·C + c] = x[b, h, w, c]', () => {
    const layer = new Flatten().build([2, 3, 2]);
    const x = randomNormal([2, 2, 3, 2], new Rng(1));
    const { y } = layer.forward(x);
    expect(y.shape).to.deep.equal([2, 12]);
    for (let b = 0; b < 2; b++) for (let h = 0; h < 2; h++) for (let w = 0; w < 3; w++) for (let c = 0; c < 2; c++) {
      expect(y.get(b, (h * 3 + w) * 2 + c)).to.equal(x.get(b, h, w, c));
    }
  });

  it('forward, jvp and vjp are views sharing the buffer (no copies)', () => {
    const layer = new Flatten().build([2, 2, 3]);
    const x = randomNormal([2, 2, 2, 3], new Rng(2));
    const { y, saved } = layer.forward(x);
    expect(y.data).to.equal(x.data);
    expect(saved).to.deep.equal({ inputShape: [2, 2, 2, 3] });
    const dx = randomNormal([2, 2, 2, 3, 4], new Rng(3));
    const dy = layer.jvp(saved, { xDot: dx, paramDots: null, T: 4 });
    expect(dy.shape).to.deep.equal([2, 12, 4]);
    expect(dy.data).to.equal(dx.data);
    const ct = randomNormal([2, 12], new Rng(4));
    const back = layer.vjp(saved, ct);
    expect(back.dx.shape).to.deep.equal([2, 2, 2, 3]);
    expect(back.dx.data).to.equal(ct.data);
    expect(back.dParams).to.deep.equal([]);
    // A zero tangent (null) comes back as explicit zeros of the output block shape.
    expect(layer.jvp(saved, { xDot: null, paramDots: null, T: 3 })).to.be.allclose(zeros([2, 12, 3]));
  });

  it('exact case: the batch Jacobian is the identity in every sample', () => {
    const layer = new Flatten().build([2, 3, 2]);
    const J = jacobianWrtInput(layer, randomNormal([3, 2, 3, 2], new Rng(6))).toDense();
    expect(J.shape).to.deep.equal([3, 12, 2, 3, 2]);
    for (let b = 0; b < 3; b++) for (let o = 0; o < 12; o++) for (let h = 0; h < 2; h++) for (let w = 0; w < 3; w++) for (let c = 0; c < 2; c++) {
      expect(J.get(b, o, h, w, c)).to.equal(o === (h * 3 + w) * 2 + c ? 1 : 0);
    }
    expect(jacobianWrtWeights(layer, randomNormal([3, 2, 3, 2], new Rng(6)))).to.deep.equal([]);
  });

  it('keeps float32', () => {
    const layer = new Flatten().build([2, 2], { dtype: 'float32' });
    const { y } = layer.forward(tensor([1, 2, 3, 4], [1, 2, 2], 'float32'));
    expect(y.data).to.be.instanceOf(Float32Array);
    expect(layer.jvp({ inputShape: [1, 2, 2] }, { xDot: null, paramDots: null, T: 2 }).data).to.be.instanceOf(Float32Array);
  });

  it('rejects bad configs and inputs, quoting what it received', () => {
    expect(() => new Flatten({ data_format: 'channels_first' } as never)).to.throw(/expected data_format "channels_last" \(NHWC\), received "channels_first"/);
    expect(() => new Flatten({ units: 3 } as never)).to.throw(/unknown option "units"/);
    expect(new Flatten({ data_format: 'channels_last', name: 'flatten' } as never).build([2, 2]).outputShape).to.deep.equal([4]);
    const layer = new Flatten().build([2, 3]);
    expect(() => layer.forward(tensor([1, 2, 3, 4, 5, 6], [1, 3, 2]))).to.throw(/expected shape \[B, 2, 3\] \(rank 3\), received \[1, 3, 2\]/);
    const { saved } = layer.forward(zeros([2, 2, 3]));
    expect(() => layer.vjp(saved, zeros([2, 5]))).to.throw(/vjp dy: expected shape \[2, 6\] \(rank 2\), received \[2, 5\]/);
    expect(() => layer.jvp(saved, { xDot: zeros([2, 2, 3]), paramDots: null, T: 1 })).to.throw(/jvp xDot: expected shape \[2, 2, 3, 1\]/);
  });
});

import { jacobianWrtInput } from '../../lib/jacobian.js';
import { MaxPooling2D, type MaxPooling2DConfig } from '../../lib/layers/max-pooling2d.js';
import { Rng } from '../../lib/rng.js';
import { asType, randomNormal, tensor, zeros } from '../../lib/tensor.js';
import { checkDerivatives } from '../helpers/check-derivatives.js';
import { expect } from '../helpers/setup.js';

/** Geometries: the default 2x2, odd sizes, strides 1 and 2, overlapping windows, non-square pools, 'same' with -∞ padding. */
const GEOMETRIES: { name: string; input: [number, number, number]; config: MaxPooling2DConfig }[] = [
  { name: 'default 2x2 on 6x6', input: [6, 6, 2], config: {} },
  { name: '2x2 valid on 7x5 (last row/col dropped)', input: [7, 5, 2], config: { pool_size: 2 } },
  { name: '2x2 same on 7x5 (pad after)', input: [7, 5, 2], config: { pool_size: 2, padding: 'same' } },
  { name: '3x3 same s2 on 7x5 (overlapping)', input: [7, 5, 3], config: { pool_size: 3, strides: 2, padding: 'same' } },
  { name: '3x3 valid s1 on 6x6 (overlapping)', input: [6, 6, 1], config: { pool_size: 3, strides: 1 } },
  { name: '[3,2] valid strides [1,2] on 7x5', input: [7, 5, 2], config: { pool_size: [3, 2], strides: [1, 2] } },
  { name: '[3,2] same strides [2,1] on 7x5', input: [7, 5, 2], config: { pool_size: [3, 2], strides: [2, 1], padding: 'same' } },
  { name: '4x4 same s1 on 3x3 (pool wider than input)', input: [3, 3, 2], config: { pool_size: 4, strides: 1, padding: 'same' } },
];

describe('MaxPooling2D', () => {
  describe('derivatives, four ways', () => {
    for (const geo of GEOMETRIES) {
      it(geo.name, () => {
        const rng = new Rng(21);
        const layer = new MaxPooling2D(geo.config).build(geo.input);
        // Random normals have no ties, so the finite differences stay on one side of every kink.
        const { Jx } = checkDerivatives(layer, randomNormal([2, ...geo.input], rng));
        // Exact case: the Jacobian is a selection matrix, exactly one 1 per row.
        const J = Jx!.toDense();
        const nIn = geo.input[0] * geo.input[1] * geo.input[2];
        const rows = J.size / nIn;
        for (let r = 0; r < rows; r++) {
          let ones = 0;
          for (let c = 0; c < nIn; c++) {
            const v = J.data[r * nIn + c];
            expect(v === 0 || v === 1, `J row ${r} col ${c} = ${v}`).to.equal(true);
            ones += v;
          }
          expect(ones, `ones in row ${r}`).to.equal(1);
        }
      });
    }
  });

  it('output shapes follow TensorFlow; strides default to pool_size', () => {
    expect(new MaxPooling2D().build([7, 5, 3]).outputShape).to.deep.equal([3, 2, 3]);
    expect(new MaxPooling2D({ padding: 'same' }).build([7, 5, 3]).outputShape).to.deep.equal([4, 3, 3]);
    expect(new MaxPooling2D({ pool_size: 3, strides: 2, padding: 'same' }).build([7, 5, 1]).outputShape).to.deep.equal([4, 3, 1]);
    expect(new MaxPooling2D({ pool_size: [3, 2], strides: null }).getConfig()).to.deep.equal({ pool_size: [3, 2], strides: [3, 2], padding: 'valid' });
  });

  it('exact case by hand: maxima, their winners, and the selection Jacobian', () => {
    const x = tensor([1, 5, 2, 0, 3, 4, 7, 6, -1, 2, 8, 9, 0, 1, 2, 3], [1, 4, 4, 1]);
    const layer = new MaxPooling2D({ pool_size: 2 }).build([4, 4, 1]);
    const { y, saved } = layer.forward(x);
    expect(y).to.be.allclose([[[[5], [7]], [[2], [9]]]], { rtol: 0, atol: 0 });
    expect(Array.from(saved.argmax)).to.deep.equal([1, 6, 9, 11]);
    const J = jacobianWrtInput(layer, x).toDense();
    // J[0, oh, ow, 0, h, w, 0] = 1 iff (h, w) is the winner of window (oh, ow).
    const winners = [[0, 1], [1, 2], [2, 1], [2, 3]];
    for (let o = 0; o < 4; o++) for (let h = 0; h < 4; h++) for (let w = 0; w < 4; w++) {
      expect(J.get(0, o >> 1, o & 1, 0, h, w, 0)).to.equal(winners[o][0] === h && winners[o][1] === w ? 1 : 0);
    }
    // The vjp scatter-adds: overlapping windows sharing a winner add their cotangents.
    const ov = new MaxPooling2D({ pool_size: 2, strides: 1 }).build([2, 3, 1]);
    const f = ov.forward(tensor([0, 9, 0, 1, 2, 3], [1, 2, 3, 1]));
    expect(ov.vjp(f.saved, tensor([10, 20], [1, 1, 2, 1])).dx).to.be.allclose([[[[0], [30], [0]], [[0], [0], [0]]]], { rtol: 0, atol: 0 });
  });

  it('a NaN anywhere in a window makes its output NaN, the first NaN its winner', () => {
    const layer = new MaxPooling2D({ pool_size: 2 }).build([2, 2, 1]);
    for (let at = 0; at < 4; at++) {
      const v = [1, 5, 2, 3];
      v[at] = NaN;
      const { y, saved } = layer.forward(tensor(v, [1, 2, 2, 1]));
      expect(Number.isNaN(y.data[0]), `NaN at ${at}`).to.equal(true);
      expect(saved.argmax[0], `the NaN at ${at} is the winner`).to.equal(at);
    }
    const two = layer.forward(tensor([1, NaN, NaN, 3], [1, 2, 2, 1]));
    expect(two.saved.argmax[0]).to.equal(1);
  });

  it('ties go to the first maximum in row-major window order', () => {
    const layer = new MaxPooling2D({ pool_size: 2 }).build([2, 4, 2]);
    // Window 0 is all 3s (channel 0) and has its max 7 at (1,0) and (1,1) (channel 1); window 1 is constant 1.
    const x = tensor([3, 0, 3, 0, 1, 1, 1, 1, 3, 7, 3, 7, 1, 1, 1, 1], [1, 2, 4, 2]);
    const { saved } = layer.forward(x);
    // Flat index = ((h * 4) + w) * 2 + c.
    expect(Array.from(saved.argmax)).to.deep.equal([0, 9, 4, 5]);
    const J = jacobianWrtInput(layer, x).toDense();
    expect(J.get(0, 0, 0, 0, 0, 0, 0)).to.equal(1);
    expect(J.get(0, 0, 0, 1, 1, 0, 1)).to.equal(1);
    expect(J.get(0, 0, 0, 1, 1, 1, 1)).to.equal(0);
  });

  it("'same' pads with -∞: an all-negative input never yields a padded 0", () => {
    const layer = new MaxPooling2D({ pool_size: 2, padding: 'same' }).build([3, 3, 1]);
    const x = tensor([-9, -8, -7, -6, -5, -4, -3, -2, -1], [1, 3, 3, 1]);
    expect(layer.forward(x).y).to.be.allclose([[[[-5], [-4]], [[-2], [-1]]]], { rtol: 0, atol: 0 });
  });

  it('float32 on request: same winners, Float32 outputs, tangents and cotangents', () => {
    const rng = new Rng(4);
    const x64 = randomNormal([2, 7, 5, 3], rng);
    const l64 = new MaxPooling2D({ pool_size: 3, strides: 2, padding: 'same' }).build([7, 5, 3]);
    const l32 = new MaxPooling2D({ pool_size: 3, strides: 2, padding: 'same' }).build([7, 5, 3], { dtype: 'float32' });
    const f64 = l64.forward(x64);
    const f32 = l32.forward(asType(x64, 'float32'));
    expect(f32.y.data).to.be.instanceOf(Float32Array);
    expect(f32.y).to.be.allclose(f64.y, { rtol: 1e-6, atol: 1e-7 });
    expect(Array.from(f32.saved.argmax)).to.deep.equal(Array.from(f64.saved.argmax));
    const dy = randomNormal(f64.y.shape, rng);
    const dx32 = l32.vjp(f32.saved, asType(dy, 'float32')).dx;
    expect(dx32.data).to.be.instanceOf(Float32Array);
    expect(dx32).to.be.allclose(l64.vjp(f64.saved, dy).dx, { rtol: 1e-6, atol: 1e-7 });
    expect(l32.jvp(f32.saved, { xDot: zeros([2, 7, 5, 3, 2], 'float32'), paramDots: null, T: 2 }).data).to.be.instanceOf(Float32Array);
  });

  describe('bad input, quoting expected and received', () => {
    it('rejects bad configs', () => {
      expect(() => new MaxPooling2D({ pool_size: 0 })).to.throw(/expected pool_size to be a positive integer or a pair of them, received 0/);
      expect(() => new MaxPooling2D({ strides: [2, 2, 2] as never })).to.throw(/expected strides .* received \[2, 2, 2\]/);
      expect(() => new MaxPooling2D({ padding: 'causal' as never })).to.throw(/expected padding "valid" or "same", received "causal"/);
      expect(() => new MaxPooling2D({ pool: 2 } as never)).to.throw(/unknown option "pool"/);
    });

    it('rejects inputs of the wrong rank or shape', () => {
      expect(() => new MaxPooling2D().build([6, 6])).to.throw(/expected a per-sample input of rank 3 .* received \[6, 6\] \(rank 2\)/);
      const layer = new MaxPooling2D().build([6, 6, 2]);
      expect(() => layer.forward(zeros([2, 6, 6, 3]))).to.throw(/expected shape \[B, 6, 6, 2\] \(rank 4\), received \[2, 6, 6, 3\]/);
    });

    it("rejects a 'valid' pool larger than the input, quoting both sizes", () => {
      expect(() => new MaxPooling2D({ pool_size: [2, 6] }).build([7, 5, 1])).to.throw(/expected pool_size \[2, 6\] to fit the input's spatial extent \[7, 5\] with padding "valid", received an input of \[7, 5\]/);
    });

    it('rejects a cotangent or tangent of the wrong shape', () => {
      const layer = new MaxPooling2D().build([6, 6, 1]);
      const { saved } = layer.forward(zeros([2, 6, 6, 1]));
      expect(() => layer.vjp(saved, zeros([2, 3, 3, 2]))).to.throw(/vjp dy: expected shape \[2, 3, 3, 1\] \(rank 4\), received \[2, 3, 3, 2\]/);
      expect(() => layer.jvp(saved, { xDot: zeros([2, 6, 6, 1, 3]), paramDots: null, T: 2 })).to.throw(/jvp xDot: expected shape \[2, 6, 6, 1, 2\] \(rank 5\), received \[2, 6, 6, 1, 3\]/);
    });
  });
});

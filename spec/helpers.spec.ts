import fc from 'fast-check';
import { ShapeError } from '../lib/errors.js';
import { addMissingAxes, broadcastTo, sumOfProducts, upstreamGradientLossOut, upstreamGradientLossWeights } from '../lib/helpers.js';
import { DenseJacobian, type Jacobian } from '../lib/jacobian.js';
import { Rng } from '../lib/rng.js';
import { type Tensor, randomNormal, sizeOf, stridesOf, tensor } from '../lib/tensor.js';
import { expect } from './helpers/setup.js';

/** The seed's formula with everything materialized, by plain loops: Σ over `axes` of J ⊙ g (g broadcast over J's trailing axes). */
function naive(J: Tensor, g: Tensor, axes: number[]): { shape: number[]; data: number[] } {
  const shape = J.shape;
  const kept = shape.map((_, i) => i).filter((i) => !axes.includes(i));
  const outShape = kept.map((i) => shape[i]);
  const out = new Array<number>(sizeOf(outShape)).fill(0);
  const js = stridesOf(shape);
  const os = stridesOf(outShape);
  const gs = stridesOf(g.shape);
  for (let flat = 0; flat < J.size; flat++) {
    const idx = js.map((s, a) => Math.floor(flat / s) % shape[a]);
    const gOff = g.shape.reduce((o, _, a) => o + idx[a] * gs[a], 0);
    const oOff = kept.reduce((o, a, n) => o + idx[a] * os[n], 0);
    out[oOff] += J.data[flat] * g.data[gOff];
  }
  return { shape: outShape, data: out };
}

describe('helpers (the seed\'s add_missing_axes, upstream_gradient_loss_weights, upstream_gradient_loss_out)', () => {
  describe('addMissingAxes', () => {
    it('appends trailing axes of extent 1 as a view of the same buffer, stride 0', () => {
      const g = tensor([1, 2, 3], [3, 1]);
      const ext = addMissingAxes(g, { shape: [3, 1, 384, 1] });
      expect(ext.shape).to.deep.equal([3, 1, 1, 1]);
      expect(ext.data).to.equal(g.data);
      expect(ext.stride.slice(2)).to.deep.equal([0, 0]);
      expect(ext.get(2, 0, 0, 0)).to.equal(3);
    });

    it('is the identity when the ranks already match, and refuses a source of higher rank', () => {
      const g = tensor([1, 2], [2]);
      expect(addMissingAxes(g, g).shape).to.deep.equal([2]);
      expect(() => addMissingAxes(tensor([1, 2], [1, 2]), { shape: [2] })).to.throw(ShapeError, /expected a source of rank <= the target's rank 1 \(\[2\]\), received \[1, 2\] \(rank 2\)/);
    });
  });

  describe('broadcastTo', () => {
    it('repeats extents of 1 through stride 0, without copying', () => {
      const row = tensor([1, 2, 3], [1, 3]);
      const b = broadcastTo(row, [4, 3]);
      expect(b.stride).to.deep.equal([0, 1]);
      expect(b.data).to.equal(row.data);
      expect(b.get(3, 2)).to.equal(3);
      expect(broadcastTo(tensor([5], [1]), [2, 2]).get(1, 1)).to.equal(5);
    });

    it('names the axis that cannot broadcast', () => {
      expect(() => broadcastTo(tensor([1, 2], [2, 1]), [3, 4])).to.throw(ShapeError, /axis 0 has extent 2, expected 1 or 3/);
    });
  });

  describe('upstreamGradientLossWeights', () => {
    it('hand-computed: J [B=2, out=2, param=3], g [2, 2] → Σ_{b,o} J[b,o,p] g[b,o]', () => {
      const J = tensor([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], [2, 2, 3]);
      const g = tensor([1, -1, 2, 0.5], [2, 2]);
      // p=0: 1·1 + 4·(−1) + 7·2 + 10·0.5 = 16; p=1: 2 − 5 + 16 + 5.5 = 18.5; p=2: 3 − 6 + 18 + 6 = 21
      const out = upstreamGradientLossWeights(J, g);
      expect(out.shape).to.deep.equal([3]);
      expect(Array.from(out.data)).to.deep.equal([16, 18.5, 21]);
    });

    it('hand-computed: a kernel-shaped parameter [2, 2] and the seed\'s Dense case [B, 1, n, 1]', () => {
      const J = tensor([1, 0, 0, 1, 2, 2, 2, 2], [2, 1, 2, 2]);
      const out = upstreamGradientLossWeights(J, tensor([3, 0.5], [2, 1]));
      expect(out.shape).to.deep.equal([2, 2]);
      expect(Array.from(out.data)).to.deep.equal([4, 1, 1, 4]);
    });

    it('accepts a DenseJacobian and keeps float32', () => {
      const J = new DenseJacobian(tensor([1, 2, 3, 4], [2, 1, 2], 'float32'), 2, [1], [2]);
      const out = upstreamGradientLossWeights(J, tensor([1, 1], [2, 1], 'float32'));
      expect(out.data).to.be.instanceOf(Float32Array);
      expect(Array.from(out.data)).to.deep.equal([4, 6]);
    });
  });

  describe('upstreamGradientLossOut', () => {
    it('hand-computed: J [B=2, out=2, in=3], g [2, 2] → [2, 3], Σ over the non-batch output axes', () => {
      const J = tensor([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], [2, 2, 3]);
      const g = tensor([1, -1, 2, 0.5], [2, 2]);
      // b=0: [1−4, 2−5, 3−6] = [−3, −3, −3]; b=1: [14+5, 16+5.5, 18+6] = [19, 21.5, 24]
      const out = upstreamGradientLossOut(J, g);
      expect(out.shape).to.deep.equal([2, 3]);
      expect(Array.from(out.data)).to.deep.equal([-3, -3, -3, 19, 21.5, 24]);
    });

    it('hand-computed: image-shaped output and input, J [1, 2, 1, 2, 1] with g [1, 2, 1]', () => {
      const J = tensor([1, 2, 3, 4], [1, 2, 1, 2, 1]);
      const out = upstreamGradientLossOut(J, tensor([10, 100], [1, 2, 1]));
      expect(out.shape).to.deep.equal([1, 2, 1]);
      expect(Array.from(out.data)).to.deep.equal([310, 420]);
    });
  });

  it('both equal the seed\'s formula with the broadcast materialized, on random shapes (fast-check)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 1, max: 3 }), { minLength: 1, maxLength: 3 }),
        fc.array(fc.integer({ min: 1, max: 3 }), { minLength: 0, maxLength: 3 }),
        fc.integer({ min: 0, max: 2 ** 31 - 1 }),
        (gShape, tail, seed) => {
          const rng = new Rng(seed);
          const J = randomNormal([...gShape, ...tail], rng);
          const g = randomNormal(gShape, rng);
          const r = gShape.length;
          expect(upstreamGradientLossWeights(J, g)).to.be.allclose(naive(J, g, [...Array(r).keys()]), { rtol: 1e-12, atol: 1e-12 });
          expect(upstreamGradientLossOut(J, g)).to.be.allclose(naive(J, g, [...Array(r).keys()].slice(1)), { rtol: 1e-12, atol: 1e-12 });
        },
      ),
      { numRuns: 60 },
    );
  });

  it('reads strided views as they are (a transposed J gives the transposed answer)', () => {
    const J = tensor([1, 2, 3, 4, 5, 6], [3, 2]).transpose(1, 0); // [2, 3], non-contiguous
    const out = upstreamGradientLossOut(J as Tensor, tensor([1, 1], [2]));
    expect(out.shape).to.deep.equal([2, 3]);
    expect(Array.from(out.data)).to.deep.equal([1, 3, 5, 2, 4, 6]);
    expect(sumOfProducts(J as Tensor, broadcastTo(tensor([1, 10], [2, 1]), [2, 3]), [0]).data).to.deep.equal(new Float64Array([21, 43, 65]));
  });

  it('a Jacobian object contracts itself through its own vjp: the helpers ask it, never its format', () => {
    const calls: boolean[] = [];
    // A diagonal Jacobian diag(2, 3), stored as its diagonal only: no dense form exists to fall back to.
    const diag = {
      shape: [1, 2, 2] as const,
      vjp(dy: Tensor, sumBatch: boolean): Tensor {
        calls.push(sumBatch);
        return tensor([2 * dy.data[0], 3 * dy.data[1]], sumBatch ? [2] : [1, 2]);
      },
    };
    const g = tensor([1, 1], [1, 2]);
    expect(Array.from(upstreamGradientLossWeights(diag, g).data)).to.deep.equal([2, 3]);
    expect(upstreamGradientLossOut(diag, g).shape).to.deep.equal([1, 2]);
    expect(calls).to.deep.equal([true, false]);
  });

  describe('misuse gives clear errors', () => {
    const J = tensor(new Array(12).fill(1), [2, 2, 3]);

    it('a Jacobian of lower rank than the upstream gradient', () => {
      expect(() => upstreamGradientLossWeights(tensor([1, 2], [2]), tensor([1, 2, 3, 4], [2, 2]))).to.throw(
        ShapeError,
        /upstreamGradientLossWeights: expected dOut_dWeights of rank >= 2 .*received \[2\] \(rank 1\)/,
      );
    });

    it('mismatched leading axes, quoting both shapes', () => {
      expect(() => upstreamGradientLossOut(J, tensor([1, 2, 3], [3, 1]))).to.throw(ShapeError, /mismatched leading axes: expected dOut_dIn to lead with \[3, 1\].*received \[2, 2, 3\] \(leading \[2, 2\]\)/);
      expect(() => upstreamGradientLossWeights(J, tensor([1, 2], [1, 2]))).to.throw(ShapeError, /lead with \[1, 2\]/);
    });

    it('a scalar upstream gradient, or a NaN in it', () => {
      expect(() => upstreamGradientLossOut(J, tensor([1], []))).to.throw(ShapeError, /rank >= 1 \(\[B, \.\.\.out\]\), received \[\] \(rank 0\)/);
      expect(() => upstreamGradientLossOut(J, tensor([1, NaN, 1, 1], [2, 2]))).to.throw(ShapeError, /expected finite values, received NaN at index \[0, 1\]/);
    });
  });
});

import { jacobianWrtInput } from '../../lib/jacobian.js';
import { Dropout } from '../../lib/layers/dropout.js';
import { Rng } from '../../lib/rng.js';
import { randomNormal, tensor, zeros } from '../../lib/tensor.js';
import { checkDerivatives } from '../helpers/check-derivatives.js';
import { expect } from '../helpers/setup.js';

/** An Rng that counts its draws, to see who draws and how often. */
class CountingRng extends Rng {
  draws = 0;
  override uniform(lo?: number, hi?: number): number {
    this.draws++;
    return super.uniform(lo, hi);
  }
}

describe('Dropout', () => {
  for (const rate of [0, 0.3, 0.75]) {
    it(`derivatives, four ways, inference: rate=${rate}`, () => {
      const layer = new Dropout({ rate }).build([4, 3]);
      checkDerivatives(layer, randomNormal([3, 4, 3], new Rng(8)));
    });

    it(`derivatives, four ways, training (one mask for every call): rate=${rate}`, () => {
      const layer = new Dropout({ rate }).build([4, 3]);
      const { Jx } = checkDerivatives(layer, randomNormal([3, 4, 3], new Rng(8)), { forwardOptions: () => ({ training: true, rng: new Rng(7) }) });
      // Exact case: the Jacobian is diag(mask), the mask this seed draws.
      const { saved } = layer.forward(zeros([3, 4, 3]), { training: true, rng: new Rng(7) });
      const J = Jx!.toDense();
      const mask = saved.mask!;
      let dropped = 0;
      for (let b = 0; b < 3; b++) for (let i = 0; i < 4; i++) for (let j = 0; j < 3; j++) {
        const m = mask.get(b, i, j);
        expect([0, 1 / (1 - rate)]).to.include(m);
        if (m === 0) dropped++;
        for (let k = 0; k < 4; k++) for (let l = 0; l < 3; l++) expect(J.get(b, i, j, k, l)).to.equal(i === k && j === l ? m : 0);
      }
      if (rate === 0) expect(dropped).to.equal(0);
      else expect(dropped).to.be.greaterThan(0);
    });
  }

  it('exact case, inference: y is x itself and the Jacobian is the identity', () => {
    const layer = new Dropout({ rate: 0.5 }).build([5]);
    const x = randomNormal([2, 5], new Rng(1));
    const { y, saved } = layer.forward(x);
    expect(y).to.equal(x);
    expect(saved.mask).to.equal(null);
    const J = jacobianWrtInput(layer, x).toDense();
    for (let b = 0; b < 2; b++) for (let o = 0; o < 5; o++) for (let i = 0; i < 5; i++) expect(J.get(b, o, i)).to.equal(o === i ? 1 : 0);
    const dy = randomNormal([2, 5], new Rng(2));
    expect(layer.vjp(saved, dy).dx).to.equal(dy);
  });

  it('training keeps each element with probability 1 - rate, scaled by 1 / (1 - rate)', () => {
    for (const rate of [0.1, 0.5, 0.8]) {
      const layer = new Dropout({ rate }).build([1000]);
      const x = tensor(new Float64Array(200_000).fill(1), [200, 1000]);
      const { y, saved } = layer.forward(x, { training: true, rng: new Rng(11) });
      let kept = 0;
      let sum = 0;
      let bad = -1;
      for (let i = 0; i < y.size; i++) {
        const v = y.data[i];
        if ((v !== 0 && v !== 1 / (1 - rate)) || v !== saved.mask!.data[i]) bad = i;
        if (v !== 0) kept++;
        sum += v;
      }
      expect(bad, `element ${bad} is ${y.data[bad]}, mask ${saved.mask!.data[bad]}`).to.equal(-1);
      // Binomial: 5 standard deviations of the kept fraction; inverted dropout keeps the mean.
      const n = y.size;
      const sd = Math.sqrt((rate * (1 - rate)) / n);
      expect(Math.abs(kept / n - (1 - rate)), `kept fraction ${kept / n} at rate ${rate}`).to.be.below(5 * sd);
      expect(Math.abs(sum / n - 1), `mean of y at rate ${rate}`).to.be.below((5 * sd) / (1 - rate));
    }
  });

  it('draws the mask once per forward pass; jvp and vjp reuse it without drawing', () => {
    const layer = new Dropout({ rate: 0.5 }).build([6]);
    const x = randomNormal([4, 6], new Rng(3));
    const rng = new CountingRng(5);
    const { y, saved } = layer.forward(x, { training: true, rng });
    expect(rng.draws).to.equal(24);
    const mask = saved.mask!;
    const T = 3;
    const dx = randomNormal([4, 6, T], new Rng(4));
    const dy = layer.jvp(saved, { xDot: dx, paramDots: null, T });
    const ct = randomNormal([4, 6], new Rng(5));
    const back = layer.vjp(saved, ct);
    expect(rng.draws, 'jvp and vjp must not draw').to.equal(24);
    for (let b = 0; b < 4; b++) for (let i = 0; i < 6; i++) {
      const m = mask.get(b, i);
      expect(y.get(b, i)).to.equal(m * x.get(b, i));
      expect(back.dx.get(b, i)).to.equal(m * ct.get(b, i));
      for (let t = 0; t < T; t++) expect(dy.get(b, i, t)).to.equal(m * dx.get(b, i, t));
    }
    // A second pass with the same generator draws a fresh mask; the first pass's saved mask is untouched.
    const before = Array.from(mask.data);
    const second = layer.forward(x, { training: true, rng }).saved.mask!;
    expect(rng.draws).to.equal(48);
    expect(Array.from(second.data)).to.not.deep.equal(before);
    expect(Array.from(mask.data)).to.deep.equal(before);
  });

  it('falls back to its own seeded generator: reproducible per seed, fresh per pass', () => {
    const x = randomNormal([8, 10], new Rng(3));
    const a = new Dropout({ rate: 0.5, seed: 42 }).build([10]);
    const b = new Dropout({ rate: 0.5, seed: 42 }).build([10]);
    const a1 = Array.from(a.forward(x, { training: true }).saved.mask!.data);
    const a2 = Array.from(a.forward(x, { training: true }).saved.mask!.data);
    expect(Array.from(b.forward(x, { training: true }).saved.mask!.data)).to.deep.equal(a1);
    expect(a2).to.not.deep.equal(a1);
    const c = new Dropout({ rate: 0.5, seed: 43 }).build([10]);
    expect(Array.from(c.forward(x, { training: true }).saved.mask!.data)).to.not.deep.equal(a1);
    expect(a.getConfig()).to.deep.equal({ rate: 0.5, noise_shape: null, seed: 42 });
  });

  it('noise_shape shares one mask value along its axes of extent 1, as Keras', () => {
    const layer = new Dropout({ rate: 0.5, noise_shape: [null, 1, 4] }).build([3, 4]);
    const x = tensor(new Float64Array(5 * 3 * 4).fill(1), [5, 3, 4]);
    const { saved } = layer.forward(x, { training: true, rng: new Rng(9) });
    const m = saved.mask!;
    let dropped = 0;
    for (let b = 0; b < 5; b++) for (let j = 0; j < 4; j++) {
      for (let i = 1; i < 3; i++) expect(m.get(b, i, j)).to.equal(m.get(b, 0, j));
      if (m.get(b, 0, j) === 0) dropped++;
    }
    expect(dropped).to.be.within(1, 19);
    checkDerivatives(layer, randomNormal([5, 3, 4], new Rng(2)), { forwardOptions: () => ({ training: true, rng: new Rng(9) }) });
  });

  it('a batchSlice pass draws its rows of the whole batch\'s mask, with and without noise_shape', () => {
    for (const noise_shape of [null, [null, 1, 4], [1, 3, 4]]) {
      const layer = new Dropout({ rate: 0.5, noise_shape }).build([3, 4]);
      const x = randomNormal([7, 3, 4], new Rng(4));
      const whole = layer.forward(x, { training: true, rng: new Rng(11) });
      const row = 12;
      for (const [start, count] of [[0, 2], [2, 4], [6, 1], [0, 7]]) {
        const xs = tensor(x.data.slice(start * row, (start + count) * row), [count, 3, 4]);
        const part = layer.forward(xs, { training: true, rng: new Rng(11), batchSlice: { start, total: 7 } });
        expect(Array.from(part.saved.mask!.data), `noise_shape ${JSON.stringify(noise_shape)} rows ${start}+${count}`).to.deep.equal(Array.from(whole.saved.mask!.data.subarray(start * row, (start + count) * row)));
        expect(Array.from(part.y.data)).to.deep.equal(Array.from(whole.y.data.subarray(start * row, (start + count) * row)));
      }
    }
    const layer = new Dropout({ rate: 0.5 }).build([3, 4]);
    expect(() => layer.forward(zeros([3, 3, 4]), { training: true, rng: new Rng(1), batchSlice: { start: 5, total: 7 } })).to.throw(/expected batchSlice rows \[start, start \+ 3\) within \[0, total\), received/);
  });

  it('keeps float32', () => {
    const layer = new Dropout({ rate: 0.5 }).build([4], { dtype: 'float32' });
    const { y, saved } = layer.forward(tensor([1, 2, 3, 4], [1, 4], 'float32'), { training: true, rng: new Rng(1) });
    expect(y.data).to.be.instanceOf(Float32Array);
    expect(saved.mask!.data).to.be.instanceOf(Float32Array);
  });

  it('rejects bad configs and inputs, quoting what it received', () => {
    expect(() => new Dropout({ rate: 1 })).to.throw(/expected rate to be a number in \[0, 1\), received 1/);
    expect(() => new Dropout({ rate: -0.1 })).to.throw(/expected rate to be a number in \[0, 1\), received -0.1/);
    expect(() => new Dropout({ rate: Number.NaN })).to.throw(/expected rate to be a number in \[0, 1\), received NaN/);
    expect(() => new Dropout({ rate: '0.5' } as never)).to.throw(/expected rate to be a number in \[0, 1\), received "0.5"/);
    expect(() => new Dropout({} as never)).to.throw(/expected rate to be a number in \[0, 1\), received undefined/);
    expect(() => new Dropout({ rate: 0.5, seed: 1.5 })).to.throw(/expected seed to be an integer, received 1.5/);
    expect(() => new Dropout({ rate: 0.5, noise_shape: [0, 2] })).to.throw(/expected noise_shape to be an array of positive integers or nulls, received \[0, 2\]/);
    expect(() => new Dropout({ rate: 0.5, noise_shape: [null, 3] }).build([4])).to.throw(/noise_shape of rank 2 .* received \[null, 3\]/);
    expect(() => new Dropout({ rate: 0.5, noise_shape: [null, 4] }).build([4, 2])).to.throw(/noise_shape of rank 3/);
    expect(() => new Dropout({ rate: 0.5, rnd: 1 } as never)).to.throw(/unknown option "rnd"/);
    const withBatch = new Dropout({ rate: 0.5, noise_shape: [2, null] }).build([4]);
    expect(() => withBatch.forward(zeros([3, 4]), { training: true })).to.throw(/noise_shape .* \[3, 4\], received \[2, null\]/);
    const layer = new Dropout({ rate: 0.5, name: 'dropout', trainable: true, noise_shape: null, seed: null } as never).build([4]);
    expect(() => layer.forward(zeros([2, 5]))).to.throw(/Dropout input: expected shape \[B, 4\] \(rank 2\), received \[2, 5\]/);
    const { saved } = layer.forward(zeros([2, 4]), { training: true });
    expect(() => layer.vjp(saved, zeros([2, 3]))).to.throw(/vjp dy: expected shape \[2, 4\] \(rank 2\), received \[2, 3\]/);
    expect(() => layer.jvp(saved, { xDot: zeros([2, 4]), paramDots: null, T: 2 })).to.throw(/jvp xDot: expected shape \[2, 4, 2\]/);
  });
});

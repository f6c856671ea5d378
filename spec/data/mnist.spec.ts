import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { MNIST_PIXELS, loadMnistBinary, mnistDigitsDir, normalizePixels, readMnistDigit } from '../../lib/data/mnist.js';
import { expect } from '../helpers/setup.js';

describe('data/mnist', () => {
  it('reads every digit file of the mnist package: whole 28x28 images in [0, 1], the 10 000 of them', () => {
    let total = 0;
    for (let d = 0; d <= 9; d++) {
      const pixels = readMnistDigit(d);
      expect(pixels.length % MNIST_PIXELS).to.equal(0);
      total += pixels.length / MNIST_PIXELS;
      let lo = Infinity;
      let hi = -Infinity;
      for (const v of pixels) {
        lo = Math.min(lo, v);
        hi = Math.max(hi, v);
      }
      expect(lo).to.equal(0);
      expect(hi).to.be.within(0.99, 1);
    }
    expect(total).to.equal(10000);
    expect(readMnistDigit(3).length / MNIST_PIXELS).to.equal(1032);
  });

  it('keeps the file\'s pixels, image by image, in row-major order', () => {
    const raw = JSON.parse(readFileSync(join(mnistDigitsDir(), '8.json'), 'utf8')).data as number[];
    const pixels = readMnistDigit(8);
    expect(Array.from(pixels.subarray(5 * MNIST_PIXELS, 6 * MNIST_PIXELS))).to.deep.equal(raw.slice(5 * MNIST_PIXELS, 6 * MNIST_PIXELS));
  });

  it('normalizes 8-bit grey levels by 255 and fractions as they are; refuses anything else', () => {
    expect(Array.from(normalizePixels([0, 51, 255], 'bytes'))).to.deep.equal([0, 0.2, 1]);
    expect(Array.from(normalizePixels([0, 0.5, 1], 'fractions'))).to.deep.equal([0, 0.5, 1]);
    expect(() => normalizePixels([0, -1], 'img')).to.throw(/img: expected pixel values in \[0, 1\] or \[0, 255\], received -1 at index 1/);
    expect(() => normalizePixels([0, 256], 'img')).to.throw(/received 256 at index 1/);
    expect(() => normalizePixels([Number.NaN], 'img')).to.throw(/received NaN at index 0/);
  });

  it('a binary problem: NHWC [N, 28, 28, 1] images, labels [N, 1] that say which digit each image is', () => {
    const { train, test, ids, positive, negative } = loadMnistBinary({ positive: 3, negative: 8, seed: 1 });
    expect(positive).to.deep.equal([3]);
    expect(negative).to.deep.equal([8]);
    const n = 1032 + 944;
    expect(train.x.shape[0] + test.x.shape[0]).to.equal(n);
    expect(train.x.shape).to.deep.equal([train.x.shape[0], 28, 28, 1]);
    expect(train.y.shape).to.deep.equal([train.x.shape[0], 1]);
    expect(test.y.shape).to.deep.equal([test.x.shape[0], 1]);
    // 20 % of each digit is held out (rounded per digit).
    expect(test.x.shape[0]).to.equal(Math.round(1032 * 0.2) + Math.round(944 * 0.2));
    // Every row's label and pixels are those of the file image its id names.
    const threes = readMnistDigit(3);
    const eights = readMnistDigit(8);
    for (const [set, names] of [[train, ids.train], [test, ids.test]] as const) {
      let ones = 0;
      names.forEach((id, row) => {
        const [digit, index] = id.split(':').map(Number);
        expect(set.y.data[row]).to.equal(digit === 3 ? 1 : 0);
        ones += set.y.data[row];
        if (row % 97 === 0) {
          const src = (digit === 3 ? threes : eights).subarray(index * MNIST_PIXELS, (index + 1) * MNIST_PIXELS);
          expect(Array.from(set.x.data.subarray(row * MNIST_PIXELS, (row + 1) * MNIST_PIXELS))).to.deep.equal(Array.from(src));
        }
      });
      expect(ones).to.be.greaterThan(0).and.lessThan(names.length);
    }
  });

  it('the held-out test split never shares an image with the training split, and is fixed by the seed', () => {
    const a = loadMnistBinary({ positive: 0, negative: 1, seed: 7 });
    const trainIds = new Set(a.ids.train);
    expect(trainIds.size).to.equal(a.ids.train.length);
    for (const id of a.ids.test) expect(trainIds.has(id), id).to.equal(false);
    const b = loadMnistBinary({ positive: 0, negative: 1, seed: 7 });
    expect(b.ids.test).to.deep.equal(a.ids.test);
    const c = loadMnistBinary({ positive: 0, negative: 1, seed: 8 });
    expect(c.ids.test).to.not.deep.equal(a.ids.test);
  });

  it('one digit against the rest, a per-digit limit for short runs, float32 on request', () => {
    const r = loadMnistBinary({ positive: 7, limit: 20, testFraction: 0.25, dtype: 'float32' });
    expect(r.negative).to.deep.equal([0, 1, 2, 3, 4, 5, 6, 8, 9]);
    expect(r.train.x.shape[0]).to.equal(10 * 15);
    expect(r.test.x.shape[0]).to.equal(10 * 5);
    expect(r.train.x.data).to.be.instanceOf(Float32Array);
    expect(Array.from(r.train.y.data).filter((v) => v === 1)).to.have.length(15);
  });

  it('refuses bad options, quoting what it received', () => {
    expect(() => loadMnistBinary({ positive: 10 })).to.throw(/expected a digit 0\.\.9, received 10/);
    expect(() => loadMnistBinary({ positive: [] })).to.throw(/expected positive to be a digit or a non-empty list of digits, received \[\]/);
    expect(() => loadMnistBinary({ positive: 3, negative: [3, 8] })).to.throw(/expected positive and negative digits to differ, received \[3\] in both/);
    expect(() => loadMnistBinary({ positive: 3, negative: 8, testFraction: 1 })).to.throw(/expected testFraction in \(0, 1\), received 1/);
    expect(() => loadMnistBinary({ positive: 3, negative: 8, limit: 0 })).to.throw(/expected limit to be an integer >= 2 .*received 0/);
    expect(() => loadMnistBinary({ positive: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] })).to.throw(/at least one negative digit/);
    expect(() => readMnistDigit(3, '/nonexistent')).to.throw(/expected a readable JSON file \/nonexistent\/3\.json/);
  });
});

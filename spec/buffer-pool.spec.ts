import { clearBufferPool, recycleBuffer, takeBuffer } from '../lib/buffer-pool.js';
import { vjpChain } from '../lib/chain.js';
import { catsVsDogsCnn, splitAfterLastPooling } from '../lib/models.js';
import { Rng } from '../lib/rng.js';
import { allocData, randomNormal, tensor } from '../lib/tensor.js';
import { expect } from './helpers/setup.js';

describe('buffer-pool', () => {
  // Other specs in the process leave buffers in the pool (builds give theirs back): each test starts from an empty one.
  beforeEach(() => clearBufferPool());
  afterEach(() => clearBufferPool());

  it('gives a recycled buffer back once, zero-filled, only for its size and type; small buffers are not pooled', () => {
    const a = new Float64Array(10000).fill(7);
    recycleBuffer(a);
    expect(takeBuffer(10000, 'float32')).to.equal(null);
    expect(takeBuffer(9999, 'float64')).to.equal(null);
    const b = takeBuffer(10000, 'float64');
    expect(b).to.equal(a);
    expect(b!.every((v) => v === 0)).to.equal(true);
    expect(takeBuffer(10000, 'float64')).to.equal(null);
    recycleBuffer(new Float64Array(100));
    expect(takeBuffer(100, 'float64')).to.equal(null);
  });

  it('hands out a buffer given back as zeroed without clearing it again (the giver\'s promise), and clears one given back without it', () => {
    const promised = new Float64Array(10000).fill(3); // a broken promise, to see that it is taken at its word
    recycleBuffer(promised, true);
    expect(takeBuffer(10000, 'float64')!.every((v) => v === 3)).to.equal(true);
    const plain = new Float64Array(10000).fill(3);
    recycleBuffer(plain);
    expect(takeBuffer(10000, 'float64')!.every((v) => v === 0)).to.equal(true);
  });

  it('never pools a view into a larger buffer', () => {
    const big = new Float64Array(20000);
    recycleBuffer(big.subarray(10000));
    expect(takeBuffer(10000, 'float64')).to.equal(null);
  });

  it('allocData draws from the pool, zeroed', () => {
    const a = new Float64Array(9000).fill(3);
    recycleBuffer(a);
    const d = allocData(9000, 'float64');
    expect(d).to.equal(a);
    expect(d.every((v) => v === 0)).to.equal(true);
  });

  it('training steps reuse cotangent buffers without touching anything a caller holds: gradients, stage outputs and dLoss/dOut of a step stay as they were after the next steps', async () => {
    const cnn = catsVsDogsCnn({ side: 24, channels: 3, filters: [16, 16, 16], units: 16 });
    const stages = cnn.split(splitAfterLastPooling(cnn));
    const x = randomNormal([4, 24, 24, 3], new Rng(1));
    const y = tensor([0, 1, 1, 0], [4, 1]);
    const first = await vjpChain(stages, x, y, 'binary_crossentropy', { training: true, seed: 3 });
    const snapshot = (r: typeof first) => [...r.dLoss_dWeights.flat(), ...r.dLoss_dOut, ...r.stageOutputs].map((t) => (t ? Array.from(t.data) : null));
    const before = snapshot(first);
    for (let s = 0; s < 3; s++) await vjpChain(stages, randomNormal([4, 24, 24, 3], new Rng(10 + s)), y, 'binary_crossentropy', { training: true, seed: 4 + s });
    expect(snapshot(first)).to.deep.equal(before);
    // And the same step again gives the same bits, from recycled buffers this time.
    const again = await vjpChain(stages, x, y, 'binary_crossentropy', { training: true, seed: 3 });
    expect(snapshot(again)).to.deep.equal(before);
  });
});

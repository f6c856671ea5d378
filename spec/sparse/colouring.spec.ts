import { Activation } from '../../lib/layers/activation.js';
import { Conv2D } from '../../lib/layers/conv2d.js';
import { Dense } from '../../lib/layers/dense.js';
import { Dropout } from '../../lib/layers/dropout.js';
import { Flatten } from '../../lib/layers/flatten.js';
import type { Layer } from '../../lib/layers/layer.js';
import { MaxPooling2D } from '../../lib/layers/max-pooling2d.js';
import { catsVsDogsCnn, splitAfterLastPooling } from '../../lib/models.js';
import { findColouringConflict, greedyColumnColouring, greedyRowColouring, kronColumnColouring, kronRowColouring } from '../../lib/sparse/colouring.js';
import { leavesOf } from '../../lib/layers/layer.js';
import { colourCountOf } from '../../lib/sparse/hooks.js';
import { layerInputKron, paramKron, stageKron } from '../../lib/sparse/pattern.js';
import { type KronPattern, SparsityPattern } from '../../lib/structure.js';
import { expect } from '../helpers/setup.js';

/** The colour counts of one Jacobian's columns: closed form = Kronecker product = greedy CPR = largest row (the lower bound), and both colourings valid. */
function checkColours(k: KronPattern, closed: number, what: string): void {
  const P = k.expand();
  const kc = kronColumnColouring(k);
  const g = greedyColumnColouring(P);
  expect(kc.count, `${what}: Kronecker colouring vs closed form`).to.equal(closed);
  expect(P.maxRowNnz(), `${what}: lower bound (largest row) vs closed form`).to.equal(closed);
  expect(g.count, `${what}: greedy CPR vs closed form`).to.equal(closed);
  expect(findColouringConflict(P, kc), `${what}: Kronecker colouring valid`).to.equal(null);
  expect(findColouringConflict(P, g), `${what}: greedy colouring valid`).to.equal(null);
  const rk = kronRowColouring(k);
  expect(findColouringConflict(P.transpose(), rk), `${what}: row colouring valid`).to.equal(null);
  expect(rk.count, `${what}: row colours, Kronecker vs greedy`).to.equal(greedyRowColouring(P).count);
}

/** One spec per layer type: [name, layer, input shape, expected colours w.r.t. input, then per parameter]. */
const CASES: [string, () => Layer, number[], number, number[]][] = [
  ['Conv2D 3×3 stride 1 on 3 channels: 27 colours, not H·W·3', () => new Conv2D({ filters: 8, kernel_size: 3 }), [12, 12, 3], 27, [27, 1]],
  ['Conv2D 3×3 stride 2 same on 2 channels', () => new Conv2D({ filters: 4, kernel_size: 3, strides: 2, padding: 'same' }), [7, 9, 2], 18, [18, 1]],
  ['Conv2D 3×2 stride 3 same: every window clipped to 2×2', () => new Conv2D({ filters: 2, kernel_size: [3, 2], strides: 3, padding: 'same' }), [4, 5, 2], 8, [8, 1]],
  ['Conv2D 5×5 same on a 3×4 input: windows clipped to the input', () => new Conv2D({ filters: 2, kernel_size: 5, padding: 'same' }), [3, 4, 1], 12, [12, 1]],
  ['Conv2D with a fused softmax: the parameters couple the channels', () => new Conv2D({ filters: 3, kernel_size: 2, activation: 'softmax' }), [4, 4, 2], 8, [24, 3]],
  ['Dense: every row full', () => new Dense({ units: 4 }), [6], 6, [6, 1]],
  ['Dense softmax', () => new Dense({ units: 4, activation: 'softmax' }), [6], 6, [24, 4]],
  ['Activation relu: diagonal', () => new Activation({ activation: 'relu' }), [3, 4, 5], 1, []],
  ['Activation softmax: a block per row', () => new Activation({ activation: 'softmax' }), [3, 4, 5], 5, []],
  ['MaxPooling2D 2×2', () => new MaxPooling2D({ pool_size: 2 }), [8, 8, 3], 4, []],
  ['MaxPooling2D 3×3 stride 2 same', () => new MaxPooling2D({ pool_size: 3, strides: 2, padding: 'same' }), [7, 8, 2], 9, []],
  ['Flatten: a permutation', () => new Flatten(), [3, 4, 2], 1, []],
  ['Dropout: diagonal', () => new Dropout({ rate: 0.5 }), [4, 5], 1, []],
];

describe('sparse/colouring', () => {
  for (const [name, make, shape, input, params] of CASES) {
    it(`${name}: ${input} colours w.r.t. the input${params.length ? `, ${params.join(' and ')} w.r.t. ${params.length === 2 ? 'kernel and bias' : 'the parameters'}` : ''}`, () => {
      const layer = make().build(shape) as unknown as Layer;
      expect(colourCountOf(layer, 'input')).to.equal(input);
      checkColours(layerInputKron(layer), input, 'input');
      expect(layer.params.length).to.equal(params.length);
      params.forEach((n, k) => {
        expect(colourCountOf(layer, k)).to.equal(n);
        checkColours(paramKron(layer, k), n, layer.params[k].name);
      });
    });
  }

  it('the cats-vs-dogs conv stage: colours = receptive field 22 × 22 × 3 channels = 1452, at any side (closed form, O(n))', () => {
    for (const side of [32, 64, 224]) {
      const cnn = catsVsDogsCnn({ side });
      const [model_0] = cnn.split(splitAfterLastPooling(cnn));
      const k = stageKron(leavesOf(model_0));
      const c = kronColumnColouring(k);
      expect(c.count, `side ${side}`).to.equal(22 * 22 * 3);
      expect(c.colours.length).to.equal(side * side * 3);
      expect(k.maxRowNnz(), 'the lower bound is met: optimal').to.equal(c.count);
      if (side === 32) expect(findColouringConflict(k.expand(), c)).to.equal(null);
    }
  });

  it('value-dependent patterns prune colours: a pooling layer\'s winners (one entry per row) need one colour, not 4', () => {
    const winners = SparsityPattern.fromRowArrays([[5], [2], [7], [0]], 8);
    expect(greedyColumnColouring(winners).count).to.equal(1);
  });
});

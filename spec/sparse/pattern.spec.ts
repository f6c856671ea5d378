import { ConfigError, MemoryBudgetError } from '../../lib/errors.js';
import { jacobianWrtInput, jacobianWrtWeights } from '../../lib/jacobian.js';
import { Activation } from '../../lib/layers/activation.js';
import { Conv2D } from '../../lib/layers/conv2d.js';
import { Dense } from '../../lib/layers/dense.js';
import { Dropout } from '../../lib/layers/dropout.js';
import { Flatten } from '../../lib/layers/flatten.js';
import type { Layer } from '../../lib/layers/layer.js';
import { MaxPooling2D } from '../../lib/layers/max-pooling2d.js';
import { catsVsDogsCnn, splitAfterLastPooling } from '../../lib/models.js';
import { Rng } from '../../lib/rng.js';
import { leavesOf } from '../../lib/layers/layer.js';
import { windowPattern } from '../../lib/layers/window.js';
import { layerInputKron, layerInputPattern, paramKron, stageKron } from '../../lib/sparse/pattern.js';
import { KronPattern, SparsityPattern } from '../../lib/structure.js';
import { type Tensor, sizeOf } from '../../lib/tensor.js';
import { expect } from '../helpers/setup.js';
import { randomStage, randomTensor } from './util.js';

/** The non-zeros of a dense batch Jacobian, per sample, as patterns. */
function patternsOf(J: Tensor, B: number, rows: number, cols: number): SparsityPattern[] {
  return Array.from({ length: B }, (_, b) => SparsityPattern.fromDense(J.data, rows, cols, b * rows * cols));
}

/** Every layer type, with configurations that exercise the closed forms' edge cases. */
function layers(): [string, Layer, number[]][] {
  return [
    ['Conv2D 3×3 stride 1 valid', new Conv2D({ filters: 4, kernel_size: 3 }), [7, 6, 3]],
    ['Conv2D 2×3 stride 2 same, tanh', new Conv2D({ filters: 3, kernel_size: [2, 3], strides: 2, padding: 'same', activation: 'tanh' }), [5, 7, 2]],
    ['Conv2D 3×2 stride 3 same (clipped windows), no bias', new Conv2D({ filters: 2, kernel_size: [3, 2], strides: 3, padding: 'same', use_bias: false }), [4, 5, 2]],
    ['Conv2D 5×5 same on a smaller input', new Conv2D({ filters: 2, kernel_size: 5, padding: 'same', activation: 'sigmoid' }), [3, 4, 1]],
    ['Conv2D with a fused softmax', new Conv2D({ filters: 3, kernel_size: 2, activation: 'softmax' }), [4, 4, 2]],
    ['Dense', new Dense({ units: 4, activation: 'tanh' }), [6]],
    ['Dense softmax', new Dense({ units: 4, activation: 'softmax' }), [5]],
    ['Activation sigmoid', new Activation({ activation: 'sigmoid' }), [3, 4, 2]],
    ['Activation softmax', new Activation({ activation: 'softmax' }), [3, 2, 5]],
    ['MaxPooling2D 2×2', new MaxPooling2D({ pool_size: 2 }), [6, 7, 3]],
    ['MaxPooling2D 3×3 stride 2 same (overlapping)', new MaxPooling2D({ pool_size: 3, strides: 2, padding: 'same' }), [7, 8, 2]],
    ['MaxPooling2D 2×2 stride 3 (gaps)', new MaxPooling2D({ pool_size: 2, strides: 3 }), [8, 7, 2]],
    ['Flatten', new Flatten(), [3, 4, 2]],
    ['Dropout', new Dropout({ rate: 0.5 }), [4, 5]],
  ];
}

describe('sparse/pattern', () => {
  it('windowPattern: each output reads its in-bounds window (TensorFlow same padding: the smaller half before)', () => {
    // n=5, k=3, s=2, same: out 3, total pad 2, 1 before: windows [-1..1], [1..3], [3..5] clipped.
    expect([0, 1, 2].map((o) => Array.from(windowPattern(5, 3, 2, 'same').row(o)))).to.deep.equal([[0, 1], [1, 2, 3], [3, 4]]);
    expect([0, 1, 2].map((o) => Array.from(windowPattern(5, 3, 2, 'same', true).row(o)))).to.deep.equal([[1, 2], [0, 1, 2], [0, 1]]);
    expect(windowPattern(7, 2, 3, 'valid').rows).to.equal(2);
    expect(Array.from(windowPattern(7, 2, 3, 'valid').row(1))).to.deep.equal([3, 4]);
  });

  it('SparsityPattern: kron, compose, transpose, union and subset agree with their definitions', () => {
    const a = SparsityPattern.fromRowArrays([[0, 2], [1]], 3);
    const b = SparsityPattern.fromRowArrays([[1], [0, 1]], 2);
    const k = SparsityPattern.kron(a, b);
    expect([0, 1, 2, 3].map((r) => Array.from(k.row(r)))).to.deep.equal([[1, 5], [0, 1, 4, 5], [3], [2, 3]]);
    const c = SparsityPattern.fromRowArrays([[0], [0, 1]], 2);
    expect([0, 1].map((r) => Array.from(c.compose(a).row(r)))).to.deep.equal([[0, 2], [0, 1, 2]]);
    expect(a.transpose().transpose().equals(a)).to.equal(true);
    expect([0, 1, 2].map((r) => Array.from(a.transpose().row(r)))).to.deep.equal([[0], [1], [0]]);
    const u = SparsityPattern.union([a, SparsityPattern.fromRowArrays([[1], []], 3)]);
    expect([0, 1].map((r) => Array.from(u.row(r)))).to.deep.equal([[0, 1, 2], [1]]);
    expect(a.subsetOf(u)).to.equal(true);
    expect(u.subsetOf(a)).to.equal(false);
  });

  for (const [name, layer, shape] of layers()) {
    it(`${name}: the closed-form pattern holds every non-zero of the dense Jacobian, and is exact for generic values`, () => {
      const rng = new Rng(5);
      layer.build(shape, { rng });
      // Generic values: no zero weights, no ReLU, inputs away from zero, so structural non-zeros are non-zero.
      const B = 2;
      const x = randomTensor([B, ...shape], rng);
      for (let i = 0; i < x.size; i++) if (x.data[i] === 0) x.data[i] = 0.5;
      const training = layer.className === 'Dropout';
      const fo = () => ({ training, rng: new Rng(9) });
      const nOut = sizeOf(layer.outputShape);
      const P = layerInputPattern(layer as never);
      const Jx = jacobianWrtInput(layer, x, fo()).toDense();
      for (const q of patternsOf(Jx, B, nOut, sizeOf(shape))) {
        expect(q.subsetOf(P), 'non-zeros within the pattern').to.equal(true);
        if (!training && layer.className !== 'MaxPooling2D') expect(q.equals(P), 'pattern exact').to.equal(true);
      }
      const kron = layerInputKron(layer as never);
      expect(kron.nnz).to.equal(P.nnz);
      expect(kron.maxRowNnz()).to.equal(P.maxRowNnz());
      const Jw = jacobianWrtWeights(layer, x, fo());
      layer.params.forEach((p, k) => {
        const Pk = paramKron(layer as never, k).expand();
        for (const q of patternsOf(Jw[k].toDense(), B, nOut, p.value.size)) {
          expect(q.subsetOf(Pk), `${p.name}: non-zeros within the pattern`).to.equal(true);
          expect(q.equals(Pk), `${p.name}: pattern exact`).to.equal(true);
        }
      });
    });
  }

  it('a stage pattern is the composition of its layers\' patterns (Kronecker factors composed = explicit boolean products)', () => {
    for (let seed = 0; seed < 30; seed++) {
      const { model } = randomStage(seed);
      const ls = leavesOf(model);
      let explicit = layerInputPattern(ls[0]);
      for (let i = 1; i < ls.length; i++) explicit = layerInputPattern(ls[i]).compose(explicit);
      expect(stageKron(ls).expand().equals(explicit), `seed ${seed}`).to.equal(true);
      ls.forEach((l, i) => {
        l.params.forEach((_, k) => {
          let e = paramKron(l, k).expand();
          for (let j = i + 1; j < ls.length; j++) e = layerInputPattern(ls[j]).compose(e);
          expect(stageKron(ls, { layer: i, param: k }).expand().equals(e), `seed ${seed} layer ${i} param ${k}`).to.equal(true);
        });
      });
    }
  });

  it('the cats-vs-dogs conv stage at 224×224×3: receptive field 22×22×3, 62.8 million structural non-zeros, from factors of at most 224×224', () => {
    const cnn = catsVsDogsCnn({ side: 224 });
    const [model_0] = cnn.split(splitAfterLastPooling(cnn));
    const k = stageKron(leavesOf(model_0));
    expect(k.rows).to.equal(26 * 26 * 64);
    expect(k.cols).to.equal(224 * 224 * 3);
    expect(k.maxRowNnz()).to.equal(22 * 22 * 3);
    expect(k.nnz).to.equal(26 * 26 * 64 * 22 * 22 * 3);
    expect(Math.max(...k.factors.map((f) => f.rows * f.cols))).to.be.at.most(224 * 224);
    expect(() => k.expand(1e8)).to.throw(MemoryBudgetError, /explicit sparsity pattern \(62819328 entries\)/);
  });

  it('a layer without structure hooks has the dense pattern; a parameter that does not exist is refused, naming the layer', () => {
    const fake = { className: 'Conv3D', inputShape: [2], outputShape: [3], params: [], describe: () => 'Conv3D', forward: () => null as never, jvp: () => null as never, vjp: () => null as never };
    const k = layerInputKron(fake);
    expect([k.rows, k.cols, k.nnz]).to.deep.equal([3, 2, 6]);
    expect(() => paramKron(new Activation({ activation: 'relu' }).build([2]) as never, 0)).to.throw(ConfigError, /has no parameter 0/);
    expect(KronPattern.identity([2, 3]).nnz).to.equal(6);
  });
});

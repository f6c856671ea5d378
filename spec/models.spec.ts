import { ConfigError } from '../lib/errors.js';
import { SEED_REFERENCE_SPLIT, catsVsDogsCnn, seedGradientLabels, seedReferenceModel, seededBatch, splitAfterLastPooling } from '../lib/models.js';
import { Sequential } from '../lib/sequential.js';
import { expect } from './helpers/setup.js';

describe('models: the seed\'s two models', () => {
  it('the reference model: Conv2D(6, 2, relu) · Conv2D(6, 2, relu) · Flatten · Dense(1) · sigmoid, split into three stages', () => {
    const m = seedReferenceModel();
    expect(m.layers.map((l) => l.className)).to.deep.equal(['Conv2D', 'Conv2D', 'Flatten', 'Dense', 'Activation']);
    const stages = m.split(SEED_REFERENCE_SPLIT);
    expect(stages.map((s) => s.outputShape)).to.deep.equal([[9, 9, 6], [8, 8, 6], [1]]);
    expect(stages.map((s) => s.params.map((p) => p.value.shape))).to.deep.equal([
      [[2, 2, 1, 6], [6]],
      [[2, 2, 6, 6], [6]],
      [[384, 1], [1]],
    ]);
  });

  it('the cats-vs-dogs CNN, layer for layer as the seed writes it, split after the last pooling layer', () => {
    const m = catsVsDogsCnn({ side: 32, channels: 3 });
    expect(m.layers.map((l) => l.className)).to.deep.equal([
      'Conv2D', 'Activation', 'MaxPooling2D',
      'Conv2D', 'Activation', 'MaxPooling2D',
      'Conv2D', 'Activation', 'MaxPooling2D',
      'Flatten', 'Dense', 'Activation', 'Dropout', 'Dense', 'Activation',
    ]);
    expect(splitAfterLastPooling(m)).to.deep.equal([9]);
    const [model_0, model_1] = m.split(splitAfterLastPooling(m));
    expect(model_0.outputShape).to.deep.equal([2, 2, 64]);
    expect(model_1.layers.map((l) => l.className)).to.deep.equal(['Flatten', 'Dense', 'Activation', 'Dropout', 'Dense', 'Activation']);
    expect(m.paramCount).to.equal(896 + 9248 + 18496 + 16448 + 65);
    expect(() => catsVsDogsCnn({ side: 21 })).to.throw(ConfigError, /expected side to be an integer >= 22 .*received 21/);
    expect(() => splitAfterLastPooling(seedReferenceModel())).to.throw(ConfigError, /expected a pooling layer followed by more layers/);
  });

  it('the seed\'s gradient names, last stage first, pointing at each trainable parameter', () => {
    const stages = seedReferenceModel().split(SEED_REFERENCE_SPLIT);
    expect(seedGradientLabels(stages)).to.deep.equal([
      { label: 'dLoss_dWeights2', layer: 3, param: 0 }, { label: 'dLoss_dBias2', layer: 3, param: 1 },
      { label: 'dLoss_dWeights1', layer: 1, param: 0 }, { label: 'dLoss_dBias1', layer: 1, param: 1 },
      { label: 'dLoss_dWeights0', layer: 0, param: 0 }, { label: 'dLoss_dBias0', layer: 0, param: 1 },
    ]);
    // Two layers with weights in one stage: the layer's name tells them apart.
    const cnn = catsVsDogsCnn({ side: 24, channels: 1 });
    const labels = seedGradientLabels(cnn.split(splitAfterLastPooling(cnn))).map((l) => l.label);
    expect(labels.filter((l) => l.startsWith('dLoss_dWeights1_'))).to.have.length(2);
    expect(labels.every((l) => /^dLoss_d(Weights|Bias)[01]_\w+$/.test(l))).to.equal(true);
  });

  it('seeded weights and batches: same seed same values; labels are 0 or 1', () => {
    expect(Array.from(seedReferenceModel({ seed: 4 }).params[0].value.data)).to.deep.equal(Array.from(seedReferenceModel({ seed: 4 }).params[0].value.data));
    const a = seededBatch([10, 10, 1], { batch: 3, seed: 1 });
    const b = seededBatch([10, 10, 1], { batch: 3, seed: 1 });
    expect(a.x).to.be.allclose(b.x, { rtol: 0, atol: 0 });
    expect(a.x.shape).to.deep.equal([3, 10, 10, 1]);
    expect(a.y.shape).to.deep.equal([3, 1]);
    expect(Array.from(a.y.data).every((v) => v === 0 || v === 1)).to.equal(true);
    expect(Array.from(a.x.data).every((v) => v >= 0 && v < 1)).to.equal(true);
    expect(seedReferenceModel({ dtype: 'float32' })).to.be.instanceOf(Sequential);
    expect(() => seededBatch([2], { batch: 0 })).to.throw(ConfigError, /expected batch to be a positive integer, received 0/);
  });
});

/**
 * The golden fixtures of the layers beyond the first six (../shared/fixtures, copied into
 * spec/fixtures): keras_layers.json (ZeroPadding2D, dilated Conv2D with gelu, BatchNormalization at
 * inference, 'same' AveragePooling2D, elu, GlobalMaxPooling2D, Dense softplus, LeakyReLU, softmax)
 * through all three chains at 1e-10, with the stage probes (J v and uᵀJ) of every stage.
 */
import { readFileSync } from 'node:fs';
import { type ChainResult, jacobianChain, referenceGradients, vjpChain } from '../lib/chain.js';
import { jvpAlong } from '../lib/jacobian.js';
import { loadModel } from '../lib/model-io.js';
import { Sequential } from '../lib/sequential.js';
import { type Tensor, type TensorJSON, fromJSON } from '../lib/tensor.js';
import { expect } from './helpers/setup.js';

interface KerasFixture {
  x: TensorJSON;
  y: TensorJSON;
  loss: string;
  stages: number[][];
  forwardTraining: boolean;
  expected: {
    loss: number;
    stageOutputs: TensorJSON[];
    dLoss_dStageOutput: TensorJSON[];
    dLoss_dWeights: (TensorJSON | null)[][];
    stageProbes: { v: TensorJSON; Jv: TensorJSON; u: TensorJSON; uJ: TensorJSON }[];
  };
}

const TOL = { rtol: 1e-10, atol: 1e-12 };

describe('golden fixtures of the Keras layers (keras_layers.json)', () => {
  const text = readFileSync(new URL('./fixtures/keras_layers.json', import.meta.url), 'utf8');
  const fx = JSON.parse(text) as KerasFixture;
  const x = fromJSON(fx.x);
  const y = fromJSON(fx.y);
  const opts = { training: fx.forwardTraining };
  let model: Sequential;
  let stages: Sequential[];
  // Loaded in a hook, so that a file this library cannot read fails these specs, not the whole run.
  before(() => {
    model = loadModel(text);
    stages = model.split(Sequential.pointsFromStages(fx.stages, model.layers.length));
  });

  const check = (r: ChainResult) => {
    expect(r.loss, `${r.method} loss`).to.be.closeTo(fx.expected.loss, 1e-10 * Math.abs(fx.expected.loss));
    fx.expected.stageOutputs.forEach((o, s) => expect(r.stageOutputs[s], `${r.method} stage ${s} output`).to.be.allclose(fromJSON(o), TOL));
    fx.expected.dLoss_dStageOutput.forEach((g, s) => expect(r.dLoss_dOut[s], `${r.method} dLoss/dOut${s}`).to.be.allclose(fromJSON(g), TOL));
    fx.expected.dLoss_dWeights.forEach((layer, i) =>
      layer.forEach((g, k) => {
        const got = r.dLoss_dWeights[i][k] as Tensor | null | undefined;
        // Non-trainable parameters (BatchNormalization's moving statistics) have no gradient.
        if (g === null) expect(got ?? null, `${r.method} layer ${i} param ${k} is non-trainable`).to.equal(null);
        else expect(got, `${r.method} dLoss/dWeights[${i}][${k}]`).to.be.allclose(fromJSON(g), TOL);
      }),
    );
  };

  it('the model loads with every layer of the fixture', () => {
    expect(model.layers.map((l) => l.className)).to.deep.equal(['ZeroPadding2D', 'Conv2D', 'BatchNormalization', 'AveragePooling2D', 'Activation', 'GlobalMaxPooling2D', 'Dense', 'LeakyReLU', 'Dense']);
  });

  it('one tape over the whole model', () => check(referenceGradients(stages, x, y, fx.loss, opts)));
  it('the explicit-Jacobian chain, dense', () => check(jacobianChain(stages, x, y, fx.loss, opts)));
  it('the explicit-Jacobian chain over structured sparse Jacobians', () => check(jacobianChain(stages, x, y, fx.loss, { ...opts, jacobian: { format: 'sparse', mode: 'auto' } })));
  it('the VJP chain', async () => check(await vjpChain(stages, x, y, fx.loss, opts)));

  it('every stage probe: J v by dual numbers and uᵀJ by the VJP, at the stage input', () => {
    let h = x;
    fx.expected.stageProbes.forEach((p, s) => {
      const { y: out, jv } = jvpAlong(stages[s], h, fromJSON(p.v), null, opts);
      expect(jv, `stage ${s} J v`).to.be.allclose(fromJSON(p.Jv), TOL);
      const fwd = stages[s].forward(h, opts);
      expect(stages[s].vjp(fwd.saved, fromJSON(p.u)).dx, `stage ${s} uᵀJ`).to.be.allclose(fromJSON(p.uJ), TOL);
      h = out;
    });
  });
});

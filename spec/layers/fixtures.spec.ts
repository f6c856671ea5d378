import { jacobianWrtInput } from '../../lib/jacobian.js';
/**
 * Per-layer golden checks: every single layer's batch Jacobian w.r.t. its input, built by forward-mode
 * dual numbers, against PyTorch autograd's (spec/fixtures, float64) within 1e-10 relative.
 * Conv2D layers (0 and 1 of seed_reference.json) are checked in spec/layers/conv2d.spec.ts.
 */
import { readFileSync } from 'node:fs';
import { allcloseReport } from '../../lib/allclose.js';
import { Activation } from '../../lib/layers/activation.js';
import { Dense } from '../../lib/layers/dense.js';
import { Flatten } from '../../lib/layers/flatten.js';
import type { Layer } from '../../lib/layers/layer.js';
import { type Tensor, type TensorJSON, fromJSON } from '../../lib/tensor.js';
import { expect } from '../helpers/setup.js';

interface Fixture {
  modelTopology: { config: { layers: { class_name: string; config: Record<string, unknown> }[]; input_shape: number[] } };
  weights: (TensorJSON & { name: string })[][];
  x: TensorJSON;
  stages: number[][];
  expected: { stageOutputs: TensorJSON[]; layerBatchJacobianWrtInput: TensorJSON[] };
}

const RTOL = 1e-10;

const cache = new Map<string, Fixture>();
function loadFixture(name: string): Fixture {
  if (!cache.has(name)) cache.set(name, JSON.parse(readFileSync(new URL(`../fixtures/${name}`, import.meta.url), 'utf8')) as Fixture);
  return cache.get(name)!;
}

/** Layer `i` of the fixture, built for `inputShape` and loaded with the fixture's weights. */
function layerFromFixture(fx: Fixture, i: number, inputShape: readonly number[]): Layer {
  const { class_name, config } = fx.modelTopology.config.layers[i];
  const make: Record<string, () => Layer> = {
    Dense: () => new Dense(config as never, `layer_${i}`),
    Activation: () => new Activation(config as never, `layer_${i}`),
    Flatten: () => new Flatten(config as never, `layer_${i}`),
  };
  if (!make[class_name]) throw new Error(`fixture layer ${i}: no builder here for ${class_name}`);
  const layer = make[class_name]().build(inputShape);
  const weights = fx.weights[i];
  expect(weights.map((w) => w.name), `layer ${i} parameter names`).to.deep.equal(layer.params.map((p) => p.name));
  weights.forEach((w, k) => {
    const value = fromJSON(w, 'float64', `weights[${i}][${k}]`);
    expect(value.shape, `layer ${i} ${w.name} shape`).to.deep.equal(layer.params[k].value.shape);
    layer.params[k].value = value;
  });
  return layer;
}

/**
 * Checks layers `from..to` of a fixture, feeding layer `from` with `input` and each later layer with
 * its predecessor's output; prints each layer's largest relative and absolute errors.
 */
function checkLayers(file: string, from: number, to: number, input: (fx: Fixture) => Tensor, lastStageOutput: number): void {
  const fx = loadFixture(file);
  let x = input(fx);
  for (let i = from; i <= to; i++) {
    const layer = layerFromFixture(fx, i, x.shape.slice(1));
    const expected = fromJSON(fx.expected.layerBatchJacobianWrtInput[i]);
    const J = jacobianWrtInput(layer, x);
    const report = allcloseReport(J, expected, { rtol: RTOL, atol: 0 });
    console.log(
      `      ${file} layer ${i} (${layer.className}) batch Jacobian ${JSON.stringify(J.shape)}: ` +
        `max rel error ${report.maxRelError.toExponential(2)}, max abs error ${report.maxAbsError.toExponential(2)}`,
    );
    expect(J, `${file} layer ${i} (${layer.className}) Jacobian w.r.t. input`).to.be.allclose(expected, { rtol: RTOL, atol: 0 });
    x = layer.forward(x).y;
  }
  // The layers' own forward passes reproduce the fixture's last stage output.
  expect(x, `${file} output of layer ${to}`).to.be.allclose(fromJSON(fx.expected.stageOutputs[lastStageOutput]), { rtol: RTOL, atol: 0 });
}

describe('golden fixtures, layer by layer', () => {
  it('dense_mlp.json: Dense(8, tanh), Dense(4, relu), Dense(3), Activation(softmax) batch Jacobians within 1e-10', () => {
    const fx = loadFixture('dense_mlp.json');
    expect(fx.stages).to.deep.equal([[0], [1], [2, 3]]);
    // Stage inputs: x for layer 0, then each stage's output; layer 3's input is layer 2's output.
    checkLayers('dense_mlp.json', 0, 0, (f) => fromJSON(f.x), 0);
    checkLayers('dense_mlp.json', 1, 1, (f) => fromJSON(f.expected.stageOutputs[0]), 1);
    checkLayers('dense_mlp.json', 2, 3, (f) => fromJSON(f.expected.stageOutputs[1]), 2);
  });

  it('seed_reference.json: Flatten, Dense(1), Activation(sigmoid) batch Jacobians within 1e-10', () => {
    const fx = loadFixture('seed_reference.json');
    expect(fx.stages).to.deep.equal([[0], [1], [2, 3, 4]]);
    expect(fx.modelTopology.config.layers.slice(2).map((l) => l.class_name)).to.deep.equal(['Flatten', 'Dense', 'Activation']);
    checkLayers('seed_reference.json', 2, 4, (f) => fromJSON(f.expected.stageOutputs[1]), 2);
  });
});

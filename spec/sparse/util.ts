/**
 * Shared by the sparse specs: random stages of the known layers, and the comparison of a
 * structured Jacobian with the dense one.
 */
import { Activation } from '../../lib/layers/activation.js';
import { Conv2D } from '../../lib/layers/conv2d.js';
import { Dense } from '../../lib/layers/dense.js';
import { Dropout } from '../../lib/layers/dropout.js';
import { Flatten } from '../../lib/layers/flatten.js';
import type { Layer } from '../../lib/layers/layer.js';
import { windowAxis } from '../../lib/layers/layer.js';
import { MaxPooling2D } from '../../lib/layers/max-pooling2d.js';
import { Rng } from '../../lib/rng.js';
import { Sequential } from '../../lib/sequential.js';
import { type Tensor, maxAbs, tensor } from '../../lib/tensor.js';
import { expect } from '../helpers/setup.js';

/** Element-wise, 1e-12 relative, with an absolute floor of 1e-12 of the largest entry (cancellations in a different summation order). */
export function expectSameJacobian(actual: unknown, expected: Tensor | { toDense(): Tensor }, what: string): void {
  const e = 'toDense' in expected ? expected.toDense() : expected;
  const scale = Math.max(maxAbs(e), 1e-300);
  expect(actual, what).to.be.allclose(e, { rtol: 1e-12, atol: 1e-12 * scale });
}

const ACTS = ['linear', 'relu', 'sigmoid', 'tanh', 'softmax'] as const;

/** A description of a random stage, for failure messages. */
export interface RandomStage {
  model: Sequential;
  x: Tensor;
  describe: string;
  training: boolean;
}

/**
 * A random stack of the known layers on a small input: image stacks (Conv2D with any kernel,
 * stride, padding and activation; MaxPooling2D; Activation; Dropout), then optionally Flatten,
 * Dense, Activation, Dropout; or a Dense stack on vectors.
 */
export function randomStage(seed: number): RandomStage {
  const rng = new Rng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[rng.int(xs.length)];
  const layers: Layer[] = [];
  let shape: number[];
  const training = rng.uniform() < 0.5;
  if (rng.uniform() < 0.75) {
    shape = [3 + rng.int(5), 3 + rng.int(5), 1 + rng.int(3)];
    const input = shape.slice();
    const n = 1 + rng.int(4);
    for (let i = 0; i < n; i++) {
      const [H, W] = shape;
      const kind = pick(['conv', 'conv', 'pool', 'act', 'drop'] as const);
      if (kind === 'conv') {
        const k: [number, number] = [1 + rng.int(3), 1 + rng.int(3)];
        const s: [number, number] = [1 + rng.int(2), 1 + rng.int(2)];
        const padding = pick(['valid', 'same'] as const);
        if (padding === 'valid' && (k[0] > H || k[1] > W)) continue;
        const filters = 1 + rng.int(4);
        layers.push(new Conv2D({ filters, kernel_size: k, strides: s, padding, activation: pick(ACTS), use_bias: rng.uniform() < 0.7 }));
        shape = [windowAxis(H, k[0], s[0], padding, '').out, windowAxis(W, k[1], s[1], padding, '').out, filters];
      } else if (kind === 'pool') {
        const p: [number, number] = [1 + rng.int(3), 1 + rng.int(3)];
        const s: [number, number] = [1 + rng.int(3), 1 + rng.int(3)];
        const padding = pick(['valid', 'same'] as const);
        if (padding === 'valid' && (p[0] > H || p[1] > W)) continue;
        layers.push(new MaxPooling2D({ pool_size: p, strides: s, padding }));
        shape = [windowAxis(H, p[0], s[0], padding, '').out, windowAxis(W, p[1], s[1], padding, '').out, shape[2]];
      } else if (kind === 'act') {
        layers.push(new Activation({ activation: pick(ACTS) }));
      } else {
        layers.push(new Dropout({ rate: 0.3 }));
      }
    }
    if (layers.length === 0 || rng.uniform() < 0.5) {
      layers.push(new Flatten());
      layers.push(new Dense({ units: 1 + rng.int(5), activation: pick(ACTS), use_bias: rng.uniform() < 0.7 }));
      if (rng.uniform() < 0.3) layers.push(new Dropout({ rate: 0.4 }));
      if (rng.uniform() < 0.3) layers.push(new Activation({ activation: pick(ACTS) }));
    }
    shape = input;
  } else {
    shape = [1 + rng.int(6)];
    const n = 1 + rng.int(3);
    for (let i = 0; i < n; i++) {
      layers.push(new Dense({ units: 1 + rng.int(6), activation: pick(ACTS), use_bias: rng.uniform() < 0.7 }));
      if (rng.uniform() < 0.3) layers.push(new Dropout({ rate: 0.3 }));
      if (rng.uniform() < 0.2) layers.push(new Activation({ activation: pick(ACTS) }));
    }
  }
  const model = new Sequential(layers, { inputShape: shape, rng: rng.fork(), name: `random_${seed}` });
  const B = 1 + rng.int(3);
  const x = randomTensor([B, ...shape], rng);
  const describe = `seed ${seed}, training ${training}: ${model.summary()}`;
  return { model, x, describe, training };
}

/** Normal entries, some exactly zero (as after a ReLU), so that value-dependent zeros occur. */
export function randomTensor(shape: number[], rng: Rng): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float64Array(n);
  for (let i = 0; i < n; i++) data[i] = rng.uniform() < 0.15 ? 0 : rng.normal();
  return tensor(data, shape);
}

/**
 * TensorFlow.js as an oracle for one layer: tfjs-core on its pure-JS CPU backend, float32.
 */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import type { Differentiable } from '../../lib/layers/layer.js';
import type { Rng } from '../../lib/rng.js';
import { type Tensor, contiguous, randomNormal } from '../../lib/tensor.js';
import { expect } from './setup.js';

/**
 * A layer against a tfjs-core function of its input: the same output shape and values, and, for a
 * random output cotangent drawn from `rng`, the same input cotangent (`tf.grad`), to float32 tolerance.
 */
export function expectLikeTfjs(layer: Differentiable, x: Tensor, f: (t: tf.Tensor) => tf.Tensor, label: string, rng: Rng, tol = { rtol: 1e-5, atol: 1e-6 }): void {
  const { y, saved } = layer.forward(x);
  const dy = randomNormal(y.shape, rng);
  const tx = tf.tensor(Float32Array.from(contiguous(x).data.subarray(0, x.size)), x.shape);
  const ty = f(tx);
  expect(ty.shape, label).to.deep.equal(y.shape);
  expect(Array.from(contiguous(y).data.subarray(0, y.size)), label).to.be.allclose(Array.from(ty.dataSync()), tol);
  const tdx = tf.grad(f)(tx, tf.tensor(Float32Array.from(contiguous(dy).data.subarray(0, dy.size)), ty.shape));
  const dx = contiguous(layer.vjp(saved, dy).dx);
  expect(Array.from(dx.data.subarray(0, dx.size)), `${label} dx`).to.be.allclose(Array.from(tdx.dataSync()), tol);
}

/**
 * The peer in the same run: TensorFlow.js (tfjs-core on its pure-JS CPU backend, float32) runs the
 * very model the bench runs, with the same weights and batch rounded to float32: its forward pass,
 * its gradient through `tf.grads` with `dy` (its VJP way), and its only way to a Jacobian, one VJP
 * per output row.
 * @module
 */
import { createRequire, register } from 'node:module';
import type * as TF from '@tensorflow/tfjs-core';
import type { ActivationName } from '../lib/activations.js';
import { ConfigError } from '../lib/errors.js';
import type { Layer } from '../lib/layers/layer.js';
import { type Tensor, contiguous, sizeOf } from '../lib/tensor.js';

type Tf = typeof TF;
let tfPromise: Promise<Tf> | null = null;

/**
 * Loads tfjs-core and the CPU backend once, with tfjs-core's own gradient definitions (its node
 * bundle registers none; the union package would), and silences the backend's banner.
 */
export function loadTfjs(): Promise<Tf> {
  tfPromise ??= (async () => {
    const log = console.log;
    const warn = console.warn;
    // The CPU backend advertises tfjs-node on load; the bench's output is not the place for it.
    console.log = () => {};
    console.warn = () => {};
    try {
      const tf = await import('@tensorflow/tfjs-core');
      await import('@tensorflow/tfjs-backend-cpu');
      if (import.meta.url.endsWith('.ts')) createRequire(import.meta.url)('@tensorflow/tfjs-core/dist/register_all_gradients.js');
      else {
        // Compiled, under plain node: tfjs-core's per-file ESM needs its extensionless imports resolved (bench/tfjs-resolve.ts).
        register('./tfjs-resolve.js', import.meta.url);
        await import('@tensorflow/tfjs-core/dist/register_all_gradients.js');
      }
      await tf.setBackend('cpu');
      await tf.ready();
      // The banner comes on the backend's first write: make it here, silenced.
      tf.tensor([0]).dispose();
      return tf;
    } finally {
      console.log = log;
      console.warn = warn;
    }
  })();
  return tfPromise;
}

/** One of our models, rebuilt as a tfjs function of the input and of its weights (float32). */
export interface TfModel {
  tf: Tf;
  /** `f(x, ...weights)`: the model's output. */
  f: (x: TF.Tensor, ...weights: TF.Tensor[]) => TF.Tensor;
  /** The weights, in our `params` order. */
  weights: TF.Tensor[];
  inputShape: number[];
  outputShape: number[];
}

/** A float32 tfjs tensor with the values of one of ours. */
export function toTf(tf: Tf, t: Tensor): TF.Tensor {
  const c = contiguous(t);
  return tf.tensor(Float32Array.from(c.data.subarray(c.offset, c.offset + c.size)), t.shape.slice(), 'float32');
}

/** Applies one of our activations with tfjs ops (softmax over the last axis). */
export function activate(tf: Tf, z: TF.Tensor, act: ActivationName): TF.Tensor {
  switch (act) {
    case 'linear':
      return z;
    case 'relu':
      return tf.relu(z);
    case 'sigmoid':
      return tf.sigmoid(z);
    case 'tanh':
      return tf.tanh(z);
    case 'softmax':
      return tf.softmax(z, -1);
    default:
      throw new ConfigError(`tfjs peer: no tfjs mapping for activation ${act}; expected linear, relu, sigmoid, tanh or softmax`);
  }
}

interface LayerFields {
  className: string;
  activation?: ActivationName;
  useBias?: boolean;
  strides?: [number, number];
  padding?: 'valid' | 'same';
  poolSize?: [number, number];
  dilationRate?: [number, number];
  inputShape?: readonly number[];
}

/** One layer as a tfjs function of its input and its weights. */
type TfStep = (h: TF.Tensor, w: TF.Tensor[]) => TF.Tensor;

/**
 * The peer's translation table: each layer class to the tfjs ops that compute it (the peer's own
 * registry, as tfjs names them). Dropout runs as at inference (the identity).
 */
const TFJS_STEPS = new Map<string, (tf: Tf, l: LayerFields) => TfStep>([
  ['Conv2D', (tf, l) => (h, w) => {
    const z = tf.conv2d(h as TF.Tensor4D, w[0] as TF.Tensor4D, l.strides!, l.padding!, 'NHWC', l.dilationRate ?? [1, 1]);
    return activate(tf, l.useBias ? tf.add(z, w[1]) : z, l.activation!);
  }],
  ['Dense', (tf, l) => {
    // tfjs' matMul is rank 2: a Dense on a higher-rank input has no one-op peer here, and a silently wrong peer is worse than none.
    if ((l.inputShape?.length ?? 1) !== 1) throw new ConfigError(`tfjs peer: expected a Dense on a rank-1 per-sample input, received input ${JSON.stringify(l.inputShape)}`);
    return (h, w) => activate(tf, l.useBias ? tf.add(tf.matMul(h as TF.Tensor2D, w[0] as TF.Tensor2D), w[1]) : tf.matMul(h as TF.Tensor2D, w[0] as TF.Tensor2D), l.activation!);
  }],
  ['Activation', (tf, l) => (h) => activate(tf, h, l.activation!)],
  ['MaxPooling2D', (tf, l) => (h) => tf.maxPool(h as TF.Tensor4D, l.poolSize!, l.strides!, l.padding!)],
  ['AveragePooling2D', (tf, l) => (h) => tf.avgPool(h as TF.Tensor4D, l.poolSize!, l.strides!, l.padding!)],
  ['Flatten', (tf) => (h) => tf.reshape(h, [h.shape[0], -1])],
  ['Dropout', () => (h) => h],
]);

/**
 * Rebuilds layers (a layer, a stage's or a model's layers, in order) as one tfjs function.
 * Dropout runs as at inference (the identity), as the bench runs every model.
 * @example
 * const peer = toTfModel(await loadTfjs(), stage.layers);
 * peer.f(toTf(peer.tf, x), ...peer.weights);
 */
export function toTfModel(tf: Tf, layers: readonly Layer[]): TfModel {
  const steps: { n: number; run: (h: TF.Tensor, w: TF.Tensor[]) => TF.Tensor }[] = [];
  const weights: TF.Tensor[] = [];
  for (const layer of layers) {
    const l = layer as unknown as LayerFields;
    weights.push(...layer.params.map((p) => toTf(tf, p.value)));
    const n = layer.params.length;
    const translate = TFJS_STEPS.get(l.className);
    if (!translate) throw new ConfigError(`tfjs peer: no tfjs equivalent of layer class ${JSON.stringify(l.className)}; expected one of ${[...TFJS_STEPS.keys()].join(', ')}`);
    steps.push({ n, run: translate(tf, l) });
  }
  const f = (x: TF.Tensor, ...w: TF.Tensor[]): TF.Tensor => {
    let h = x;
    let k = 0;
    for (const s of steps) {
      h = s.run(h, w.slice(k, k + s.n));
      k += s.n;
    }
    return h;
  };
  return { tf, f, weights, inputShape: layers[0].inputShape.slice(), outputShape: layers[layers.length - 1].outputShape.slice() };
}

/** The forward pass, read back to the host. */
export function tfForward(m: TfModel, x: TF.Tensor): Float32Array {
  const y = m.tf.tidy(() => m.f(x, ...m.weights));
  const d = y.dataSync() as Float32Array;
  y.dispose();
  return d;
}

/** tfjs' VJP way: `tf.grads` of the model w.r.t. the input and every weight, with output gradient `dy`. */
export function tfVjp(m: TfModel, x: TF.Tensor, dy: TF.Tensor): Float32Array[] {
  const { tf } = m;
  return readAll(tf.tidy(() => tf.grads((xi: TF.Tensor, ...w: TF.Tensor[]) => m.f(xi, ...w))([x, ...m.weights], dy)));
}

/** Reads tensors back to the host and frees them. */
function readAll(ts: TF.Tensor[]): Float32Array[] {
  const out = ts.map((t) => t.dataSync() as Float32Array);
  ts.forEach((t) => t.dispose());
  return out;
}

/** How far a row-by-row Jacobian got. */
export interface RowJacobian {
  /** The Jacobian's values, `[B, ...out, ...in]` (rows not reached stay zero). */
  values: Float32Array[];
  /** VJPs run, and VJPs the whole Jacobian needs. */
  rowsDone: number;
  rows: number;
}

/**
 * The batch Jacobian w.r.t. the input, tfjs' only way: one VJP per output element, its basis
 * cotangent set in every sample at once (samples are independent), `[B, ...out, ...in]`. Stops
 * after `timeCapMs` (the caller extrapolates, and says so).
 */
export function tfJacobianWrtInput(m: TfModel, x: TF.Tensor, timeCapMs = Infinity): RowJacobian {
  const { tf } = m;
  const B = x.shape[0];
  const nIn = sizeOf(m.inputShape);
  const nOut = sizeOf(m.outputShape);
  const J = new Float32Array(B * nOut * nIn);
  const grad = tf.grad((xi: TF.Tensor) => m.f(xi, ...m.weights));
  const seed = new Float32Array(B * nOut);
  const t0 = performance.now();
  let o = 0;
  for (; o < nOut; o++) {
    if (o > 0 && performance.now() - t0 > timeCapMs) break;
    seed.fill(0);
    for (let b = 0; b < B; b++) seed[b * nOut + o] = 1;
    const [dx] = readAll([tf.tidy(() => grad(x, tf.tensor(seed, [B, ...m.outputShape])))]);
    for (let b = 0; b < B; b++) J.set(dx.subarray(b * nIn, (b + 1) * nIn), (b * nOut + o) * nIn);
  }
  return { values: [J], rowsDone: o, rows: nOut };
}

/**
 * The Jacobians w.r.t. every weight, tfjs' only way: one VJP per (sample, output element), since a
 * weight is shared by the batch; `[B, ...out, ...param]` each. Stops after `timeCapMs`.
 */
export function tfJacobianWrtWeights(m: TfModel, x: TF.Tensor, timeCapMs = Infinity): RowJacobian {
  const { tf } = m;
  const B = x.shape[0];
  const nOut = sizeOf(m.outputShape);
  const rows = B * nOut;
  const Js = m.weights.map((w) => new Float32Array(rows * w.size));
  const grads = tf.grads((...w: TF.Tensor[]) => m.f(x, ...w));
  const seed = new Float32Array(rows);
  const t0 = performance.now();
  let r = 0;
  for (; r < rows; r++) {
    if (r > 0 && performance.now() - t0 > timeCapMs) break;
    seed.fill(0);
    seed[r] = 1;
    const gs = readAll(tf.tidy(() => grads(m.weights, tf.tensor(seed, [B, ...m.outputShape]))));
    gs.forEach((g, k) => Js[k].set(g, r * g.length));
  }
  return { values: Js, rowsDone: r, rows };
}

/**
 * An independent peer in the same run: TensorFlow.js (tfjs-core on the CPU backend, float32)
 * computes the forward pass and the gradients of random Conv2D, MaxPooling2D and Dense layers,
 * and of dilated Conv2D layers, and ours must agree to float32 tolerance. Inputs, weights and cotangents are rounded to float32
 * first, so that both sides see the very same numbers.
 */
import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import type { ActivationName } from '../../lib/activations.js';
import { Conv2D } from '../../lib/layers/conv2d.js';
import { Dense } from '../../lib/layers/dense.js';
import type { Layer, Padding } from '../../lib/layers/layer.js';
import { MaxPooling2D } from '../../lib/layers/max-pooling2d.js';
import { Rng } from '../../lib/rng.js';
import { type Tensor, contiguous, randomNormal, zeros } from '../../lib/tensor.js';
import { activate } from '../../bench/tfjs-peer.js';
import { expect } from '../helpers/setup.js';

// tfjs-core's node bundle registers no gradients (the @tensorflow/tfjs union package does); load
// tfjs-core's own gradient definitions, which register into the global registry tf.grads reads.
createRequire(import.meta.url)('@tensorflow/tfjs-core/dist/register_all_gradients.js');

const TOL = { rtol: 1e-4, atol: 1e-5 };
const ACTS: ActivationName[] = ['linear', 'relu', 'sigmoid', 'tanh', 'softmax'];

/** Rounds every value to float32 in place (the tensor stays float64), so tfjs and we start equal. */
function f32(t: Tensor): Tensor {
  const d = t.data;
  for (let i = 0; i < d.length; i++) d[i] = Math.fround(d[i]);
  return t;
}

function toTf(t: Tensor): tf.Tensor {
  return tf.tensor(Float32Array.from(contiguous(t).data.subarray(0, t.size)), t.shape.slice());
}

function fromTf(t: tf.Tensor): { shape: number[]; data: Float32Array } {
  return { shape: t.shape.slice(), data: t.dataSync() as Float32Array };
}

interface Case {
  label: string;
  kind: 'Conv2D' | 'MaxPooling2D' | 'Dense';
  pad: Padding;
  strides: [number, number];
  layer: Layer;
  input: number[];
  /** The same function in tfjs, of `(x, ...params)`. */
  peer: (x: tf.Tensor, ...params: tf.Tensor[]) => tf.Tensor;
}

function convCase(input: [number, number, number], filters: number, win: [number, number], s: [number, number], pad: Padding, activation: ActivationName, use_bias: boolean, rng: Rng): Case {
  const layer = new Conv2D({ filters, kernel_size: win, strides: s, padding: pad, activation, use_bias }).build(input, { rng });
  return {
    kind: 'Conv2D',
    pad,
    strides: s,
    label: `Conv2D ${filters} ${win.join('x')} strides ${s.join('x')} ${pad} ${activation} bias=${use_bias} on ${input.join('x')}`,
    layer,
    input,
    peer: (x, kernel, bias) => {
      const z = tf.conv2d(x as tf.Tensor4D, kernel as tf.Tensor4D, s, pad);
      return activate(tf, bias ? tf.add(z, bias) : z, activation);
    },
  };
}

function poolCase(input: [number, number, number], win: [number, number], s: [number, number], pad: Padding): Case {
  return {
    kind: 'MaxPooling2D',
    pad,
    strides: s,
    label: `MaxPooling2D ${win.join('x')} strides ${s.join('x')} ${pad} on ${input.join('x')}`,
    layer: new MaxPooling2D({ pool_size: win, strides: s, padding: pad }).build(input),
    input,
    peer: (x) => tf.maxPool(x as tf.Tensor4D, win, s, pad),
  };
}

function denseCase(nIn: number, units: number, activation: ActivationName, use_bias: boolean, rng: Rng): Case {
  return {
    kind: 'Dense',
    pad: 'valid',
    strides: [1, 1],
    label: `Dense ${nIn}→${units} ${activation} bias=${use_bias}`,
    layer: new Dense({ units, activation, use_bias }).build([nIn], { rng }),
    input: [nIn],
    peer: (x, kernel, bias) => {
      const z = tf.matMul(x as tf.Tensor2D, kernel as tf.Tensor2D);
      return activate(tf, bias ? tf.add(z, bias) : z, activation);
    },
  };
}

/** Dense on `[B, ...lead, in]`: tfjs' matMul on the input reshaped to rows `[B · prod(lead), in]`, reshaped back. */
function denseLeadCase(lead: number[], nIn: number, units: number, activation: ActivationName, use_bias: boolean, rng: Rng): Case {
  return {
    kind: 'Dense',
    pad: 'valid',
    strides: [1, 1],
    label: `Dense [${[...lead, nIn].join(', ')}]→[${[...lead, units].join(', ')}] ${activation} bias=${use_bias}`,
    layer: new Dense({ units, activation, use_bias }).build([...lead, nIn], { rng }),
    input: [...lead, nIn],
    peer: (x, kernel, bias) => {
      const z = tf.reshape(tf.matMul(tf.reshape(x, [-1, nIn]) as tf.Tensor2D, kernel as tf.Tensor2D), [x.shape[0], ...lead, units]);
      return activate(tf, bias ? tf.add(z, bias) : z, activation);
    },
  };
}

/** A random configuration: kind, odd sizes, strides 1 or 2, 'same' or 'valid'. */
function randomCase(k: number, rng: Rng): Case {
  const pick = <T>(xs: readonly T[]): T => xs[rng.int(xs.length)];
  // Paddings alternate by blocks of four, so that each kind meets both.
  const pad: Padding = Math.floor(k / 4) % 2 === 0 ? 'same' : 'valid';
  const input: [number, number, number] = [3 + rng.int(7), 3 + rng.int(7), 1 + rng.int(4)];
  const s: [number, number] = [1 + rng.int(2), 1 + rng.int(2)];
  const win: [number, number] = [Math.min(1 + rng.int(3), input[0]), Math.min(1 + rng.int(3), input[1])];
  switch ((['Conv2D', 'MaxPooling2D', 'Conv2D', 'Dense'] as const)[k % 4]) {
    case 'Conv2D':
      return convCase(input, 1 + rng.int(5), win, s, pad, pick(ACTS), rng.uniform() < 0.7, rng);
    case 'MaxPooling2D':
      return poolCase(input, win, s, pad);
    case 'Dense':
      return denseCase(2 + rng.int(9), 1 + rng.int(6), pick(ACTS), rng.uniform() < 0.7, rng);
  }
}

describe('peer: TensorFlow.js (tfjs-core, CPU backend, float32)', () => {
  before(async () => {
    // Production mode: skips tfjs' debug checks and its advice to install tfjs-node.
    tf.enableProdMode();
    await tf.setBackend('cpu');
    await tf.ready();
  });

  const rng = new Rng(2024);
  const cases = [
    ...Array.from({ length: 12 }, (_, k) => randomCase(k, rng)),
    // The cases where TensorFlow's 'same' rule bites: odd extents, stride 2, an even kernel (all the pad after).
    convCase([7, 5, 2], 3, [3, 3], [2, 2], 'same', 'relu', true, rng),
    convCase([7, 5, 2], 3, [2, 2], [1, 1], 'same', 'linear', true, rng),
    poolCase([7, 5, 3], [3, 3], [2, 2], 'same'),
    poolCase([7, 5, 3], [2, 2], [2, 2], 'same'),
    // Dense on the last axis of a higher-rank input, the leading axes one more batch.
    denseLeadCase([3], 5, 4, 'tanh', true, rng),
    denseLeadCase([2, 3], 4, 3, 'softmax', true, rng),
    denseLeadCase([3, 1, 2], 3, 2, 'relu', false, rng),
  ];
  for (const c of cases) {
    it(`${c.label}: forward and vjp (dx and every parameter) match tf.grads`, () => {
      const caseRng = new Rng(c.label.length * 7919);
      const { layer } = c;
      for (const p of layer.params) p.value = f32(randomNormal(p.value.shape, caseRng));
      const x = f32(randomNormal([2, ...c.input], caseRng));
      const fwd = layer.forward(x);
      const dy = f32(randomNormal(fwd.y.shape, caseRng));
      const ours = layer.vjp(fwd.saved, dy);

      tf.tidy(() => {
        const args = [toTf(x), ...layer.params.map((p) => toTf(p.value))];
        const y = c.peer(args[0], ...args.slice(1));
        expect(fwd.y, 'forward').to.be.allclose(fromTf(y), TOL);
        const grads = tf.grads((...a: tf.Tensor[]) => c.peer(a[0], ...a.slice(1)))(args, toTf(dy));
        expect(ours.dx, 'dx').to.be.allclose(fromTf(grads[0]), TOL);
        layer.params.forEach((p, k) => expect(ours.dParams[k], `d${p.name}`).to.be.allclose(fromTf(grads[k + 1]), TOL));
      });
    });
  }

  describe('dilated Conv2D', () => {
    // tfjs-core takes the forward pass of a dilated conv2d but not its gradient (Conv2D_grad asserts
    // dilations of 1). The gradients come instead from the same convolution written without a
    // dilation: the kernel stuffed with zeros to its effective extent (k-1)·d+1, taps d apart. The
    // stuffed forward is checked against tfjs' own dilated forward first, so the stand-in is vouched for.
    const DILATED: { input: [number, number, number]; filters: number; win: [number, number]; d: [number, number]; pad: Padding; activation: ActivationName; use_bias: boolean }[] = [
      { input: [7, 6, 2], filters: 3, win: [3, 3], d: [2, 2], pad: 'valid', activation: 'relu', use_bias: true },
      { input: [7, 5, 3], filters: 2, win: [3, 3], d: [2, 2], pad: 'same', activation: 'tanh', use_bias: true },
      { input: [7, 5, 2], filters: 3, win: [3, 2], d: [2, 1], pad: 'same', activation: 'linear', use_bias: false },
      { input: [6, 7, 2], filters: 4, win: [2, 2], d: [3, 1], pad: 'same', activation: 'softmax', use_bias: true },
      { input: [5, 9, 1], filters: 2, win: [2, 3], d: [1, 3], pad: 'valid', activation: 'sigmoid', use_bias: true },
      { input: [2, 5, 2], filters: 3, win: [2, 3], d: [3, 3], pad: 'same', activation: 'linear', use_bias: true },
    ];
    for (const c of DILATED) {
      const label = `Conv2D ${c.filters} ${c.win.join('x')} dilation ${c.d.join('x')} ${c.pad} ${c.activation} bias=${c.use_bias} on ${c.input.join('x')}`;
      it(`${label}: forward matches tf.conv2d with dilations; vjp matches tf.grads of the zero-stuffed kernel`, () => {
        const caseRng = new Rng(label.length * 7919);
        const layer = new Conv2D({ filters: c.filters, kernel_size: c.win, dilation_rate: c.d, padding: c.pad, activation: c.activation, use_bias: c.use_bias }).build(c.input, { rng: caseRng });
        for (const p of layer.params) p.value = f32(randomNormal(p.value.shape, caseRng));
        const x = f32(randomNormal([2, ...c.input], caseRng));
        const fwd = layer.forward(x);
        const dy = f32(randomNormal(fwd.y.shape, caseRng));
        const ours = layer.vjp(fwd.saved, dy);
        const [kh, kw] = c.win;
        const [dh, dw] = c.d;
        const cin = c.input[2];
        const kernel = layer.params[0].value;
        const stuffed = zeros([(kh - 1) * dh + 1, (kw - 1) * dw + 1, cin, c.filters]);
        for (let i = 0; i < kh; i++) for (let j = 0; j < kw; j++) for (let ci = 0; ci < cin; ci++) for (let co = 0; co < c.filters; co++) stuffed.set(i * dh, j * dw, ci, co, kernel.get(i, j, ci, co));
        const withBias = (z: tf.Tensor, bias?: tf.Tensor) => activate(tf, bias ? tf.add(z, bias) : z, c.activation);
        const dilated = (xt: tf.Tensor, k: tf.Tensor, bias?: tf.Tensor) => withBias(tf.conv2d(xt as tf.Tensor4D, k as tf.Tensor4D, 1, c.pad, 'NHWC', c.d), bias);
        const plain = (xt: tf.Tensor, k: tf.Tensor, bias?: tf.Tensor) => withBias(tf.conv2d(xt as tf.Tensor4D, k as tf.Tensor4D, 1, c.pad), bias);

        tf.tidy(() => {
          const bias = c.use_bias ? [toTf(layer.params[1].value)] : [];
          const xt = toTf(x);
          const y = dilated(xt, toTf(kernel), ...bias);
          expect(fwd.y, 'forward vs tf.conv2d with dilations').to.be.allclose(fromTf(y), TOL);
          expect(fromTf(plain(xt, toTf(stuffed), ...bias)), 'the zero-stuffed stand-in vs tf.conv2d with dilations').to.be.allclose(fromTf(y), TOL);
          expect(() => tf.grads((a: tf.Tensor, k: tf.Tensor) => dilated(a, k))([xt, toTf(kernel)], y), 'tfjs still refuses the dilated gradient: use it directly if this fails').to.throw(/dilation rates greater than 1/);
          const grads = tf.grads((...a: tf.Tensor[]) => plain(a[0], a[1], a[2]))([xt, toTf(stuffed), ...bias], toTf(dy));
          expect(ours.dx, 'dx').to.be.allclose(fromTf(grads[0]), TOL);
          const dStuffed = grads[1].arraySync() as number[][][][];
          const dKernel = { shape: [kh, kw, cin, c.filters], data: new Float32Array(kh * kw * cin * c.filters) };
          for (let i = 0; i < kh; i++) for (let j = 0; j < kw; j++) for (let ci = 0; ci < cin; ci++) for (let co = 0; co < c.filters; co++) dKernel.data[((i * kw + j) * cin + ci) * c.filters + co] = dStuffed[i * dh][j * dw][ci][co];
          expect(ours.dParams[0], 'dkernel at the taps').to.be.allclose(dKernel, TOL);
          if (c.use_bias) expect(ours.dParams[1], 'dbias').to.be.allclose(fromTf(grads[2]), TOL);
        });
      });
    }
  });

  it("the random cases cover 'same' and 'valid', and stride 2, for both Conv2D and MaxPooling2D, and Dense", () => {
    for (const kind of ['Conv2D', 'MaxPooling2D'] as const) {
      for (const pad of ['same', 'valid'] as const) expect(cases.some((c) => c.kind === kind && c.pad === pad), `${kind} ${pad}`).to.equal(true);
      expect(cases.some((c) => c.kind === kind && c.strides.includes(2)), `${kind} stride 2`).to.equal(true);
    }
    expect(cases.some((c) => c.kind === 'Dense')).to.equal(true);
  });
});

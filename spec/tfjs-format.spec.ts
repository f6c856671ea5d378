/**
 * The TF.js weight decoder against tfjs-core 4.22's own `tf.io.decodeWeights`, the reference for
 * what a manifest means: plain float32 and int32, uint8/uint16 affine quantization (float32 and
 * int32 weights) and float16, one group of several tensors, the same bytes to both.
 */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { ConfigError } from '../lib/errors.js';
import { type WeightSpec, decodeWeights, halfToFloat, parseWeightsManifest } from '../lib/tfjs-format.js';
import { Rng } from '../lib/rng.js';
import { expect } from './helpers/setup.js';

/** Random bytes for a list of specs, in order, little-endian as tfjs writes them. */
function bytesFor(specs: WeightSpec[], rng: Rng): Uint8Array {
  const sizes = specs.map((s) => s.shape.reduce((n, d) => n * d, 1));
  const widths = specs.map((s) => (s.quantization ? (s.quantization.dtype === 'uint8' ? 1 : 2) : 4));
  const out = new Uint8Array(sizes.reduce((n, k, i) => n + k * widths[i], 0));
  const view = new DataView(out.buffer);
  let off = 0;
  specs.forEach((s, i) => {
    for (let k = 0; k < sizes[i]; k++) {
      if (!s.quantization) {
        if (s.dtype === 'int32') view.setInt32(off, rng.int(2000) - 1000, true);
        else view.setFloat32(off, rng.uniform(-3, 3), true);
      } else if (s.quantization.dtype === 'uint8') view.setUint8(off, rng.int(256));
      // float16: finite halves only (exponent < 31), uint16: the full range.
      else view.setUint16(off, s.quantization.dtype === 'float16' ? rng.int(0x7c00) | (rng.int(2) << 15) : rng.int(65536), true);
      off += widths[i];
    }
  });
  return out;
}

describe('TF.js weight decoding agrees with tfjs-core decodeWeights', () => {
  before(async () => {
    await tf.setBackend('cpu');
  });

  it('float32, int32, uint8/uint16 quantized (float32 and int32) and float16, in one group', () => {
    const specs: WeightSpec[] = [
      { name: 'a/kernel', shape: [3, 5], dtype: 'float32' },
      { name: 'b/kernel', shape: [7], dtype: 'int32' },
      { name: 'c/kernel', shape: [4, 3], dtype: 'float32', quantization: { dtype: 'uint8', scale: 0.0137, min: -1.25 } },
      { name: 'd/kernel', shape: [9], dtype: 'float32', quantization: { dtype: 'uint16', scale: 3.1e-5, min: -0.7 } },
      { name: 'e/kernel', shape: [5], dtype: 'int32', quantization: { dtype: 'uint8', scale: 0.5, min: -3 } },
      { name: 'f/kernel', shape: [2, 11], dtype: 'float32', quantization: { dtype: 'float16' } },
      { name: 'g/bias', shape: [3], dtype: 'float32' },
    ];
    const bytes = bytesFor(specs, new Rng(7));
    const ours = decodeWeights(parseWeightsManifest([{ paths: ['w.bin'], weights: specs }]), { 'w.bin': bytes });
    const theirs = tf.io.decodeWeights(bytes.buffer.slice(0) as ArrayBuffer, specs as tf.io.WeightsManifestEntry[]);
    expect(ours.map((w) => w.name)).to.deep.equal(specs.map((s) => s.name));
    for (const w of ours) {
      const t = theirs[w.name];
      expect(w.shape).to.deep.equal(t.shape);
      expect(w.values.constructor.name, w.name).to.equal((t.dataSync() as Float32Array | Int32Array).constructor.name);
      expect(Array.from(w.values), w.name).to.deep.equal(Array.from(t.dataSync() as Float32Array));
    }
  });

  it('halfToFloat is exact at the edges: zero, subnormals, the largest half, infinities, NaN', () => {
    expect(halfToFloat(0x0000)).to.equal(0);
    expect(Object.is(halfToFloat(0x8000), -0)).to.equal(true);
    expect(halfToFloat(0x0001)).to.equal(2 ** -24);
    expect(halfToFloat(0x03ff)).to.equal(1023 * 2 ** -24);
    expect(halfToFloat(0x3c00)).to.equal(1);
    expect(halfToFloat(0x7bff)).to.equal(65504);
    expect(halfToFloat(0x7c00)).to.equal(Infinity);
    expect(halfToFloat(0xfc00)).to.equal(-Infinity);
    expect(halfToFloat(0x7e00)).to.be.NaN;
  });

  it('a quantization tfjs would misread is refused: no scale/min, float16 of int32, an unknown quantized dtype', () => {
    const m = (q: unknown, dtype = 'float32') => [{ paths: ['w.bin'], weights: [{ name: 'a/kernel', shape: [2], dtype, quantization: q }] }];
    expect(() => parseWeightsManifest(m({ dtype: 'uint8' }))).to.throw(ConfigError, /uint8 quantization needs finite numbers "scale" and "min", received scale undefined, min undefined/);
    expect(() => parseWeightsManifest(m({ dtype: 'float16' }, 'int32'))).to.throw(ConfigError, /float16 quantization holds float32 weights only \(as tfjs\), received dtype int32/);
    expect(() => parseWeightsManifest(m({ dtype: 'int4', scale: 1, min: 0 }))).to.throw(ConfigError, /expected quantization dtype uint8, uint16 or float16 \(as tfjs\), received "int4"/);
  });
});

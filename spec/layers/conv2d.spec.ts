import { jacobianWrtInput, jacobianWrtWeights } from '../../lib/jacobian.js';
import { readFileSync } from 'node:fs';
import { ConfigError } from '../../lib/errors.js';
import { Conv2D, type Conv2DConfig } from '../../lib/layers/conv2d.js';
import { loadModel, saveModel } from '../../lib/model-io.js';
import { Rng } from '../../lib/rng.js';
import { Sequential } from '../../lib/sequential.js';
import { type Tensor, type TensorJSON, asType, fromJSON, randomNormal, sizeOf, tensor, zeros } from '../../lib/tensor.js';
import { windowPattern, windowRanges } from '../../lib/layers/window.js';
import { findColouringConflict, greedyColumnColouring, kronColumnColouring } from '../../lib/sparse/colouring.js';
import { colourCountOf } from '../../lib/sparse/hooks.js';
import { layerInputKron, paramKron } from '../../lib/sparse/pattern.js';
import { checkDerivatives } from '../helpers/check-derivatives.js';
import { expect } from '../helpers/setup.js';

/** Geometries that exercise TensorFlow's padding rule: odd sizes, strides 1 and 2, even and non-square kernels, a kernel wider than a 'same' input. */
const GEOMETRIES: { name: string; input: [number, number, number]; config: Omit<Conv2DConfig, 'activation' | 'use_bias'> }[] = [
  { name: '3x3 valid s1 on 6x6', input: [6, 6, 2], config: { filters: 3, kernel_size: 3 } },
  { name: '3x3 same s1 on 6x6', input: [6, 6, 2], config: { filters: 3, kernel_size: 3, padding: 'same' } },
  { name: '3x3 valid s2 on 7x5', input: [7, 5, 2], config: { filters: 3, kernel_size: 3, strides: 2 } },
  { name: '3x3 same s2 on 7x5', input: [7, 5, 2], config: { filters: 3, kernel_size: 3, strides: 2, padding: 'same' } },
  { name: '2x2 same s1 on 7x5 (pad only after)', input: [7, 5, 2], config: { filters: 5, kernel_size: 2, padding: 'same' } },
  { name: '2x2 valid s2 on 7x5', input: [7, 5, 1], config: { filters: 4, kernel_size: [2, 2], strides: [2, 2] } },
  { name: '[3,2] same strides [2,1] on 7x5', input: [7, 5, 2], config: { filters: 3, kernel_size: [3, 2], strides: [2, 1], padding: 'same' } },
  { name: '[3,2] valid strides [1,2] on 6x6', input: [6, 6, 3], config: { filters: 2, kernel_size: [3, 2], strides: [1, 2] } },
  { name: '1x1 valid s1 on 4x3', input: [4, 3, 3], config: { filters: 4, kernel_size: 1 } },
  { name: '5x4 kernel same s2 on 3x4 (kernel wider than input)', input: [3, 4, 2], config: { filters: 3, kernel_size: [5, 4], strides: 2, padding: 'same' } },
];

/**
 * Dilated geometries (strides 1, as Keras requires): odd sizes, 'same' and 'valid', one axis
 * dilated only, an even effective kernel (the smaller half of the pad before), and an effective
 * kernel wider than a 'same' input, where whole windows fall in the padding.
 */
const DILATED: typeof GEOMETRIES = [
  { name: '3x3 d2 valid on 7x6', input: [7, 6, 2], config: { filters: 3, kernel_size: 3, dilation_rate: 2 } },
  { name: '3x3 d2 same on 7x5', input: [7, 5, 2], config: { filters: 3, kernel_size: 3, dilation_rate: 2, padding: 'same' } },
  { name: '[3,2] d(2,1) same on 7x5', input: [7, 5, 2], config: { filters: 2, kernel_size: [3, 2], dilation_rate: [2, 1], padding: 'same' } },
  { name: '[2,3] d(1,2) valid on 5x7, one channel', input: [5, 7, 1], config: { filters: 4, kernel_size: [2, 3], dilation_rate: [1, 2] } },
  { name: '[2,3] d3 same on 2x5 (windows entirely in the padding)', input: [2, 5, 2], config: { filters: 3, kernel_size: [2, 3], dilation_rate: 3, padding: 'same' } },
];

const ACTS = ['linear', 'relu', 'sigmoid', 'tanh', 'softmax'] as const;

describe('Conv2D', () => {
  describe('derivatives, four ways', () => {
    for (const geo of GEOMETRIES) {
      for (const activation of ACTS) {
        for (const use_bias of [true, false]) {
          it(`${geo.name}, activation=${activation}, use_bias=${use_bias}`, () => {
            const rng = new Rng(11);
            const layer = new Conv2D({ ...geo.config, activation, use_bias }).build(geo.input, { rng });
            // A nonzero bias, so that its derivative path is exercised away from the initializer's zeros.
            if (use_bias) layer.params[1].value = randomNormal(layer.params[1].value.shape, rng);
            checkDerivatives(layer, randomNormal([2, ...geo.input], rng));
          });
        }
      }
    }
  });

  describe('dilated, derivatives four ways', () => {
    for (const geo of DILATED) {
      for (const activation of ACTS) {
        for (const use_bias of [true, false]) {
          it(`${geo.name}, activation=${activation}, use_bias=${use_bias}`, () => {
            const rng = new Rng(13);
            const layer = new Conv2D({ ...geo.config, activation, use_bias }).build(geo.input, { rng });
            if (use_bias) layer.params[1].value = randomNormal(layer.params[1].value.shape, rng);
            checkDerivatives(layer, randomNormal([2, ...geo.input], rng));
          });
        }
      }
    }

    it("exact case: 'valid' d2, one channel, by hand: y[oh,ow] = Σ W[i,j] x[oh+2i, ow+2j]", () => {
      // x[h, w] = 5h + w + 1 on 5x5, W = [[1, 2], [3, 4]]: y = 1·x + 2·(x+2) + 3·(x+10) + 4·(x+12) = 10·x[oh, ow] + 82.
      const layer = new Conv2D({ filters: 1, kernel_size: 2, dilation_rate: 2, use_bias: false }).build([5, 5, 1]);
      layer.params[0].value = tensor([1, 2, 3, 4], [2, 2, 1, 1]);
      const x = tensor(Array.from({ length: 25 }, (_, i) => i + 1), [1, 5, 5, 1]);
      expect(layer.outputShape).to.deep.equal([3, 3, 1]);
      expect(layer.forward(x).y).to.be.allclose([[[[92], [102], [112]], [[142], [152], [162]], [[192], [202], [212]]]], { rtol: 0, atol: 0 });
      const W = [[1, 2], [3, 4]];
      checkDerivatives(layer, x, {
        exact: (Jx, [Jk]) => {
          const J = Jx!.toDense();
          const K = Jk.toDense();
          for (let oh = 0; oh < 3; oh++)
            for (let ow = 0; ow < 3; ow++) {
              for (let h = 0; h < 5; h++)
                for (let w = 0; w < 5; w++) {
                  const [i, j] = [(h - oh) / 2, (w - ow) / 2];
                  const tap = [0, 1].includes(i) && [0, 1].includes(j);
                  expect(J.get(0, oh, ow, 0, h, w, 0), `∂y[${oh},${ow}]/∂x[${h},${w}]`).to.equal(tap ? W[i][j] : 0);
                }
              for (let i = 0; i < 2; i++) for (let j = 0; j < 2; j++) expect(K.get(0, oh, ow, 0, i, j, 0, 0)).to.equal(5 * (oh + 2 * i) + ow + 2 * j + 1);
            }
        },
      });
    });

    it("exact case: 'same' pads by the effective kernel, the smaller half before: a single tap is a shift", () => {
      // Rows: k = 3 at d = 2 spans 5, pad 4, 2 before; tap row i reads oh - 2 + 2i (an undilated 3 would pad 1 before).
      // Columns: k = 2 at d = 3 spans 4, pad 3, 1 before (the smaller half); tap column j reads ow - 1 + 3j.
      for (const [tap, dRow, dCol] of [[[0, 0], -2, -1], [[2, 1], 2, 2], [[1, 0], 0, -1]] as const) {
        const layer = new Conv2D({ filters: 1, kernel_size: [3, 2], dilation_rate: [2, 3], padding: 'same', use_bias: false }).build([5, 4, 1]);
        const K = zeros([3, 2, 1, 1]);
        K.set(tap[0], tap[1], 0, 0, 1);
        layer.params[0].value = K;
        const x = randomNormal([2, 5, 4, 1], new Rng(4));
        const inside = (h: number, w: number) => h >= 0 && h < 5 && w >= 0 && w < 4;
        const { y } = layer.forward(x);
        expect(y.shape).to.deep.equal([2, 5, 4, 1]);
        for (let b = 0; b < 2; b++) for (let h = 0; h < 5; h++) for (let w = 0; w < 4; w++) expect(y.get(b, h, w, 0)).to.equal(inside(h + dRow, w + dCol) ? x.get(b, h + dRow, w + dCol, 0) : 0);
        checkDerivatives(layer, x, {
          exact: (Jx) => {
            const J = Jx!.toDense();
            for (let b = 0; b < 2; b++)
              for (let h = 0; h < 5; h++)
                for (let w = 0; w < 4; w++)
                  for (let h2 = 0; h2 < 5; h2++) for (let w2 = 0; w2 < 4; w2++) expect(J.get(b, h, w, 0, h2, w2, 0)).to.equal(h2 === h + dRow && w2 === w + dCol ? 1 : 0);
          },
        });
      }
    });

    it('window geometry: taps d apart, the in-bounds taps a contiguous range of tap indices', () => {
      // n = 5, k = 3, d = 2, 'same': spans 5, pad 4, 2 before; window o reads o - 2, o, o + 2 where inside.
      expect([0, 1, 2, 3, 4].map((o) => Array.from(windowPattern(5, 3, 1, 'same', false, 'w', 2).row(o)))).to.deep.equal([[0, 2], [1, 3], [0, 2, 4], [1, 3], [2, 4]]);
      expect([0, 1, 2, 3, 4].map((o) => Array.from(windowPattern(5, 3, 1, 'same', true, 'w', 2).row(o)))).to.deep.equal([[1, 2], [1, 2], [0, 1, 2], [0, 1], [0, 1]]);
      const r = windowRanges(5, 3, 1, 'same', 'w', 2);
      expect([Array.from(r.start), Array.from(r.lo), Array.from(r.hi), r.step]).to.deep.equal([[-2, -1, 0, 1, 2], [1, 1, 0, 0, 0], [3, 3, 3, 2, 2], 2]);
      // n = 2, k = 2, d = 3, 'same': spans 4, pad 3, 1 before; window 0 reads -1 and 2, both outside: an empty range.
      const e = windowRanges(2, 2, 1, 'same', 'w', 3);
      expect([Array.from(e.lo), Array.from(e.hi)]).to.deep.equal([[1, 0], [1, 1]]);
      // 'valid': floor((n - (k-1)d - 1) / s) + 1 outputs.
      expect(windowPattern(7, 3, 1, 'valid', false, 'w', 3).rows).to.equal(1);
      expect(Array.from(windowPattern(7, 3, 1, 'valid', false, 'w', 3).row(0))).to.deep.equal([0, 3, 6]);
    });

    for (const geo of DILATED) {
      it(`colours of ${geo.name}: closed form = Kronecker = greedy CPR = largest row, all valid`, () => {
        for (const activation of ['linear', 'softmax'] as const) {
          const layer = new Conv2D({ ...geo.config, activation }).build(geo.input);
          for (const wrt of ['input', 0, 1] as const) {
            const k = wrt === 'input' ? layerInputKron(layer) : paramKron(layer, wrt);
            const P = k.expand();
            const kc = kronColumnColouring(k);
            const what = `${activation} w.r.t. ${wrt}`;
            expect(colourCountOf(layer, wrt), what).to.equal(P.maxRowNnz());
            expect(kc.count, what).to.equal(P.maxRowNnz());
            expect(greedyColumnColouring(P).count, what).to.equal(P.maxRowNnz());
            expect(findColouringConflict(P, kc), what).to.equal(null);
          }
        }
      });
    }
  });

  it('output shapes follow TensorFlow: valid floor((n-k)/s)+1, same ceil(n/s)', () => {
    expect(new Conv2D({ filters: 2, kernel_size: 3, strides: 2 }).build([7, 5, 1]).outputShape).to.deep.equal([3, 2, 2]);
    expect(new Conv2D({ filters: 2, kernel_size: 3, strides: 2, padding: 'same' }).build([7, 5, 1]).outputShape).to.deep.equal([4, 3, 2]);
    expect(new Conv2D({ filters: 6, kernel_size: 2 }).build([10, 10, 1]).outputShape).to.deep.equal([9, 9, 6]);
    // Dilated, on the effective kernel (k-1)·d+1: 'valid' 3 at d 2 spans 5 (7 → 3), at d 3 spans 7 (7 → 1); 'same' keeps n.
    expect(new Conv2D({ filters: 2, kernel_size: 3, dilation_rate: [2, 3] }).build([7, 7, 1]).outputShape).to.deep.equal([3, 1, 2]);
    expect(new Conv2D({ filters: 2, kernel_size: 3, dilation_rate: 4, padding: 'same' }).build([7, 5, 1]).outputShape).to.deep.equal([7, 5, 2]);
  });

  it("exact case: 'same' stride 2 pads the smaller half before (TensorFlow's rule), by hand", () => {
    // 4x4 input 1..16, 3x3 kernel of ones, stride 2: total pad 1, all of it after, so windows start at rows/cols 0 and 2.
    const layer = new Conv2D({ filters: 1, kernel_size: 3, strides: 2, padding: 'same', use_bias: false }).build([4, 4, 1]);
    layer.params[0].value = tensor(new Array(9).fill(1), [3, 3, 1, 1]);
    const x = tensor(Array.from({ length: 16 }, (_, i) => i + 1), [1, 4, 4, 1]);
    expect(layer.forward(x).y).to.be.allclose([[[[54], [45]], [[72], [54]]]], { rtol: 0, atol: 0 });
    // 'valid' on a 3x3 input with a 2x2 kernel of ones.
    const v = new Conv2D({ filters: 1, kernel_size: 2, use_bias: false }).build([3, 3, 1]);
    v.params[0].value = tensor([1, 1, 1, 1], [2, 2, 1, 1]);
    expect(v.forward(tensor([1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 3, 3, 1])).y).to.be.allclose([[[[12], [16]], [[24], [28]]]], { rtol: 0, atol: 0 });
  });

  it('exact case: a 1x1 linear conv has ∂y[b,h,w,:]/∂x[b,h,w,:] = Wᵀ at every pixel and 0 across pixels; ∂y/∂W = x ⊗ I', () => {
    const rng = new Rng(5);
    const layer = new Conv2D({ filters: 3, kernel_size: 1 }).build([3, 2, 2], { rng });
    const x = randomNormal([2, 3, 2, 2], rng);
    const J = jacobianWrtInput(layer, x).toDense();
    expect(J.shape).to.deep.equal([2, 3, 2, 3, 3, 2, 2]);
    const W = layer.params[0].value;
    for (let b = 0; b < 2; b++)
      for (let h = 0; h < 3; h++)
        for (let w = 0; w < 2; w++)
          for (let co = 0; co < 3; co++)
            for (let h2 = 0; h2 < 3; h2++)
              for (let w2 = 0; w2 < 2; w2++)
                for (let ci = 0; ci < 2; ci++) expect(J.get(b, h, w, co, h2, w2, ci)).to.equal(h === h2 && w === w2 ? W.get(0, 0, ci, co) : 0);
    const [Jk, Jb] = jacobianWrtWeights(layer, x).map((j) => j.toDense());
    for (let b = 0; b < 2; b++)
      for (let h = 0; h < 3; h++)
        for (let w = 0; w < 2; w++)
          for (let co = 0; co < 3; co++)
            for (let ci = 0; ci < 2; ci++)
              for (let co2 = 0; co2 < 3; co2++) {
                expect(Jk.get(b, h, w, co, 0, 0, ci, co2)).to.equal(co === co2 ? x.get(b, h, w, ci) : 0);
                expect(Jb.get(b, h, w, co, co2)).to.equal(co === co2 ? 1 : 0);
              }
  });

  it("exact case: an identity 3x3 'same' kernel passes the input through and its Jacobian is the identity", () => {
    const C = 2;
    const layer = new Conv2D({ filters: C, kernel_size: 3, padding: 'same', use_bias: false }).build([4, 3, C]);
    const K = zeros([3, 3, C, C]);
    for (let c = 0; c < C; c++) K.set(1, 1, c, c, 1);
    layer.params[0].value = K;
    const x = randomNormal([2, 4, 3, C], new Rng(2));
    expect(layer.forward(x).y).to.be.allclose(x, { rtol: 0, atol: 0 });
    const J = jacobianWrtInput(layer, x).toDense();
    const n = 4 * 3 * C;
    for (let b = 0; b < 2; b++) for (let r = 0; r < n; r++) for (let c = 0; c < n; c++) expect(J.data[(b * n + r) * n + c]).to.equal(r === c ? 1 : 0);
  });

  describe('dual-number rule: the GEMM, row-driven and scalar paths give the direct sum\'s bits', () => {
    /** `conv(xDot, W) + conv(x, kernelDot)` summed from zero over the taps in (i, j, ci) order, the input term first: the order every path must keep. */
    function directJvp(layer: Conv2D, x: Tensor, xDot: Tensor | null, kernelDot: Tensor | null, T: number): Float64Array {
      const [B, H, W, Cin] = x.shape;
      const [kh, kw] = layer.kernelSize;
      const Cout = layer.filters;
      const pad = (layer.getConfig().padding ?? 'valid') as 'valid' | 'same';
      const rows = windowRanges(H, kh, layer.strides[0], pad, 'spec', layer.dilationRate[0]);
      const cols = windowRanges(W, kw, layer.strides[1], pad, 'spec', layer.dilationRate[1]);
      const k = layer.params[0].value.data;
      const out = new Float64Array(B * rows.out * cols.out * Cout * T);
      const terms: [Tensor | null, boolean][] = [[xDot, true], [kernelDot, false]];
      for (let b = 0; b < B; b++) for (let oh = 0; oh < rows.out; oh++) for (let ow = 0; ow < cols.out; ow++) for (let co = 0; co < Cout; co++) for (let t = 0; t < T; t++) {
        let sum = 0;
        for (const [tan, byInput] of terms) {
          if (!tan) continue;
          for (let i = rows.lo[oh]; i < rows.hi[oh]; i++) for (let j = cols.lo[ow]; j < cols.hi[ow]; j++) for (let ci = 0; ci < Cin; ci++) {
            const xi = ((b * H + rows.start[oh] + i * rows.step) * W + cols.start[ow] + j * cols.step) * Cin + ci;
            const wi = ((i * kw + j) * Cin + ci) * Cout + co;
            sum += byInput ? k[wi] * tan.data[xi * T + t] : x.data[xi] * tan.data[wi * T + t];
          }
        }
        out[(((b * rows.out + oh) * cols.out + ow) * Cout + co) * T + t] = sum;
      }
      return out;
    }
    const seeded = (shape: number[], T: number, at: (t: number) => number): Tensor => {
      const z = zeros([...shape, T]);
      for (let t = 0; t < T; t++) z.data[at(t) * T + t] = 1;
      return z;
    };
    for (const geo of [...GEOMETRIES, ...DILATED]) {
      it(`${geo.name}: dense, one-channel and basis tangents of the input and the kernel, T = 1, 3, 6`, () => {
        const rng = new Rng(21);
        const layer = new Conv2D({ ...geo.config, use_bias: false }).build(geo.input, { rng });
        const x = randomNormal([2, ...geo.input], rng);
        const { saved } = layer.forward(x);
        const kShape = layer.params[0].value.shape;
        const nIn = 2 * geo.input[0] * geo.input[1] * geo.input[2];
        for (const T of [1, 3, 6]) {
          const dense = randomNormal([2, ...geo.input, T], rng);
          const oneChannel = zeros([2, ...geo.input, T]);
          for (let r = 0; r < nIn; r += geo.input[2]) for (let t = 0; t < T; t++) oneChannel.data[r * T + t] = rng.normal();
          const cases: [string, Tensor | null, Tensor | null][] = [
            ['dense input tangent (the GEMM path)', dense, null],
            ['one-channel input tangent (the GEMM path over the live channel)', oneChannel, null],
            ['basis input seeds (the scalar walk)', seeded([2, ...geo.input], T, (t) => (t * 7) % nIn), null],
            ['basis kernel seeds (the row-driven walk)', null, seeded(kShape, T, (t) => (t * 5) % sizeOf(kShape))],
            ['dense kernel tangent (the scalar walk)', null, randomNormal([...kShape, T], rng)],
            ['both at once', dense, seeded(kShape, T, (t) => t % sizeOf(kShape))],
          ];
          for (const [what, xDot, kernelDot] of cases) {
            const got = layer.jvp(saved, { xDot, paramDots: [kernelDot], T });
            expect(Array.from(got.data), `${what}, T=${T}`).to.deep.equal(Array.from(directJvp(layer, x, xDot, kernelDot, T)));
          }
          const l32 = new Conv2D({ ...geo.config, use_bias: false }).build(geo.input, { rng: new Rng(1), dtype: 'float32' });
          l32.params[0].value = asType(layer.params[0].value, 'float32');
          const f32 = l32.forward(asType(x, 'float32'));
          const got32 = l32.jvp(f32.saved, { xDot: asType(dense, 'float32'), paramDots: [null], T });
          expect(got32.data).to.be.instanceOf(Float32Array);
          expect(got32, `float32 dense input tangent, T=${T}`).to.be.allclose(tensor(Array.from(directJvp(layer, x, dense, null, T)), got32.shape), { rtol: 1e-5, atol: 1e-5 });
        }
      });
    }
  });

  it('float32 on request: the forward pass and the vjp agree with float64 to float32 precision', () => {
    const rng = new Rng(9);
    const cfg: Conv2DConfig = { filters: 4, kernel_size: 3, strides: 2, padding: 'same', activation: 'tanh' };
    const l64 = new Conv2D(cfg).build([7, 5, 3], { rng: new Rng(1) });
    const l32 = new Conv2D(cfg).build([7, 5, 3], { rng: new Rng(1), dtype: 'float32' });
    l64.params[1].value = randomNormal([4], rng);
    l32.params[1].value = asType(l64.params[1].value, 'float32');
    const x64 = randomNormal([2, 7, 5, 3], rng);
    const x32 = asType(x64, 'float32');
    const f64 = l64.forward(x64);
    const f32 = l32.forward(x32);
    expect(f32.y.data).to.be.instanceOf(Float32Array);
    expect(f32.y).to.be.allclose(f64.y, { rtol: 1e-5, atol: 1e-6 });
    const dy = randomNormal(f64.y.shape, rng);
    const g64 = l64.vjp(f64.saved, dy);
    const g32 = l32.vjp(f32.saved, asType(dy, 'float32'));
    expect(g32.dx.data).to.be.instanceOf(Float32Array);
    expect(g32.dx).to.be.allclose(g64.dx, { rtol: 1e-5, atol: 1e-5 });
    g32.dParams.forEach((g, k) => expect(g, `dParams[${k}]`).to.be.allclose(g64.dParams[k], { rtol: 1e-5, atol: 1e-5 }));
    const Jx32 = jacobianWrtInput(l32, x32);
    expect(Jx32.toDense().data).to.be.instanceOf(Float32Array);
    expect(Jx32).to.be.allclose(jacobianWrtInput(l64, x64), { rtol: 1e-5, atol: 1e-6 });
  });

  describe('golden fixture seed_reference.json (PyTorch + JAX, float64)', () => {
    // The fixture is 11 MB; read it once for the two Conv2D layers.
    let fx: {
      x: TensorJSON;
      weights: { name: string; shape: number[]; data: number[] }[][];
      modelTopology: { config: { layers: { class_name: string; config: Conv2DConfig }[] } };
      expected: {
        stageOutputs: TensorJSON[];
        dLoss_dStageOutput: TensorJSON[];
        dLoss_dWeights: TensorJSON[][];
        layerBatchJacobianWrtInput: TensorJSON[];
        stageJacobianWrtWeights: TensorJSON[][][];
      };
    };
    before(() => {
      fx = JSON.parse(readFileSync(new URL('../fixtures/seed_reference.json', import.meta.url), 'utf8'));
    });

    for (const i of [0, 1]) {
      it(`layer ${i} (Conv2D 6, 2x2, relu): forward, Jacobians w.r.t. input and weights, and vjp match within 1e-10`, () => {
        const spec = fx.modelTopology.config.layers[i];
        expect(spec.class_name).to.equal('Conv2D');
        const x = i === 0 ? fromJSON(fx.x) : fromJSON(fx.expected.stageOutputs[0]);
        const layer = new Conv2D(spec.config).build(x.shape.slice(1));
        fx.weights[i].forEach((w, k) => {
          expect(layer.params[k].name).to.equal(w.name);
          layer.params[k].value = fromJSON(w, 'float64', `weights[${i}][${k}]`);
        });
        const tol = { rtol: 1e-10, atol: 1e-14 };
        const fwd = layer.forward(x);
        expect(fwd.y, 'stage output').to.be.allclose(fromJSON(fx.expected.stageOutputs[i]), tol);
        expect(jacobianWrtInput(layer, x), 'batch Jacobian w.r.t. input').to.be.allclose(fromJSON(fx.expected.layerBatchJacobianWrtInput[i]), tol);
        jacobianWrtWeights(layer, x).forEach((J, k) => expect(J, `Jacobian w.r.t. ${layer.params[k].name}`).to.be.allclose(fromJSON(fx.expected.stageJacobianWrtWeights[i][0][k]), tol));
        const { dParams } = layer.vjp(fwd.saved, fromJSON(fx.expected.dLoss_dStageOutput[i]));
        dParams.forEach((g, k) => expect(g, `dLoss/d${layer.params[k].name}`).to.be.allclose(fromJSON(fx.expected.dLoss_dWeights[i][k]), tol));
      });
    }
  });

  describe('bad input, quoting expected and received', () => {
    it('rejects bad configs', () => {
      expect(() => new Conv2D({ filters: 0, kernel_size: 3 })).to.throw(/expected filters to be a positive integer, received 0/);
      expect(() => new Conv2D({ filters: 2, kernel_size: [3, 0] })).to.throw(/expected kernel_size to be a positive integer or a pair of them, received \[3, 0\]/);
      expect(() => new Conv2D({ filters: 2, kernel_size: 3, strides: 1.5 })).to.throw(/expected strides .* received 1.5/);
      expect(() => new Conv2D({ filters: 2, kernel_size: 3, padding: 'full' as never })).to.throw(/expected padding "valid" or "same", received "full"/);
      expect(() => new Conv2D({ filters: 2, kernel_size: 3, activation: 'mish' as never })).to.throw(/unknown activation "mish"/);
      expect(() => new Conv2D({ filters: 2, kernel_size: 3, use_bias: 1 as never })).to.throw(/expected use_bias to be a boolean, received 1/);
      expect(() => new Conv2D({ filters: 2, kernel_size: 3, dilation_rate: [2, 0] })).to.throw(/expected dilation_rate to be a positive integer or a pair of them, received \[2, 0\]/);
      expect(() => new Conv2D({ filters: 2, kernel_size: 3, strides: [1, 2], dilation_rate: [2, 1] })).to.throw(ConfigError, /expected strides 1 with a dilation_rate above 1 .* received strides \[1, 2\] with dilation_rate \[2, 1\]/);
      expect(() => new Conv2D({ filters: 2, kernel_size: 3, strides: 2, dilation_rate: 1 })).not.to.throw();
    });

    it('rejects a per-sample input that is not rank 3, and a batch of the wrong rank', () => {
      expect(() => new Conv2D({ filters: 2, kernel_size: 3 }).build([10, 10])).to.throw(/expected a per-sample input of rank 3 .* received \[10, 10\] \(rank 2\)/);
      const layer = new Conv2D({ filters: 2, kernel_size: 3 }).build([6, 6, 1]);
      expect(() => layer.forward(zeros([6, 6, 1]))).to.throw(/expected shape \[B, 6, 6, 1\] \(rank 4\), received \[6, 6, 1\] \(rank 3\)/);
    });

    it('rejects a channel mismatch, quoting expected Cin and the received channels', () => {
      const layer = new Conv2D({ filters: 2, kernel_size: 3 }).build([6, 6, 3]);
      expect(() => layer.forward(zeros([2, 6, 6, 4]))).to.throw(/expected 3 input channels .* received 4 in shape \[2, 6, 6, 4\]/);
      // A loaded kernel built for another channel count.
      layer.params[0].value = zeros([3, 3, 4, 2]);
      expect(() => layer.forward(zeros([2, 6, 6, 3]))).to.throw(/kernel: expected shape \[3, 3, 3, 2\] .* received \[3, 3, 4, 2\]/);
    });

    it("rejects a 'valid' kernel larger than the input, quoting both sizes", () => {
      expect(() => new Conv2D({ filters: 2, kernel_size: [3, 6] }).build([7, 5, 1])).to.throw(/expected kernel_size \[3, 6\] to fit the input's spatial extent \[7, 5\] with padding "valid", received an input of \[7, 5\]/);
      expect(() => new Conv2D({ filters: 2, kernel_size: [3, 6], padding: 'same' }).build([7, 5, 1])).not.to.throw();
      // Dilated: the effective kernel must fit, and the message says what it spans.
      expect(() => new Conv2D({ filters: 2, kernel_size: 3, dilation_rate: [3, 1] }).build([6, 5, 1])).to.throw(/expected kernel_size \[3, 3\] at dilation_rate \[3, 1\] \(spanning \[7, 3\]\) to fit the input's spatial extent \[6, 5\]/);
      expect(() => new Conv2D({ filters: 2, kernel_size: 3, dilation_rate: [3, 1] }).build([7, 5, 1])).not.to.throw();
    });

    it('rejects a cotangent or tangent of the wrong shape', () => {
      const layer = new Conv2D({ filters: 2, kernel_size: 3 }).build([6, 6, 1]);
      const { saved } = layer.forward(zeros([2, 6, 6, 1]));
      expect(() => layer.vjp(saved, zeros([2, 4, 4, 3]))).to.throw(/vjp dy: expected shape \[2, 4, 4, 2\] \(rank 4\), received \[2, 4, 4, 3\]/);
      expect(() => layer.jvp(saved, { xDot: zeros([2, 6, 6, 1]), paramDots: null, T: 1 })).to.throw(/jvp xDot: expected shape \[2, 6, 6, 1, 1\] \(rank 5\), received \[2, 6, 6, 1\]/);
      expect(() => layer.jvp(saved, { xDot: null, paramDots: [zeros([3, 3, 1, 2, 2]), null], T: 1 })).to.throw(/jvp kernelDot: expected shape \[3, 3, 1, 2, 1\]/);
    });
  });
});

describe('Conv2D Keras config keys', () => {
  it('accepts data_format "channels_last" and dilation_rate as Keras saves them, and writes a dilation other than 1 back', () => {
    const base = { filters: 2, kernel_size: [3, 3], data_format: 'channels_last', dilation_rate: [1, 1], groups: 1 };
    expect(new Conv2D(base as unknown as Conv2DConfig).getConfig()).not.to.have.property('dilation_rate');
    const dilated = new Conv2D({ ...base, dilation_rate: [2, 3] } as unknown as Conv2DConfig);
    expect(dilated.getConfig()).to.deep.include({ dilation_rate: [2, 3], strides: [1, 1] });
    expect(new Conv2D(dilated.getConfig() as unknown as Conv2DConfig).dilationRate).to.deep.equal([2, 3]);
    expect(new Conv2D({ filters: 1, kernel_size: 2, dilation_rate: 2 }).getConfig().dilation_rate).to.deep.equal([2, 2]);
    // Through a model file: the dilation survives, and so the outputs.
    const model = new Sequential([new Conv2D({ filters: 2, kernel_size: [3, 2], dilation_rate: [2, 1], padding: 'same', activation: 'tanh' })], { inputShape: [5, 4, 2], rng: new Rng(3) });
    const again = loadModel(JSON.stringify(saveModel(model)));
    expect((again.layers[0] as Conv2D).dilationRate).to.deep.equal([2, 1]);
    const x = randomNormal([2, 5, 4, 2], new Rng(6));
    expect(again.forward(x).y).to.be.allclose(model.forward(x).y, { rtol: 0, atol: 0 });
    expect(() => new Conv2D({ ...base, data_format: 'channels_first' } as unknown as Conv2DConfig)).to.throw(/"data_format" must be "channels_last"/);
  });
});

/**
 * Conv2D: `y = act(conv(x, W) + b)` on NHWC images `[B, H, W, Cin]` with a kernel `W` of shape
 * `[kh, kw, cin, cout]` (Keras' layout), a bias `[cout]`, strides and TensorFlow's padding.
 * @module
 */
import { type ActivationName, activationForward, activationJvp, activationName, activationVjp } from '../activations.js';
import { ConfigError, ShapeError, fmtShape, fmtValue } from '../errors.js';
import { type Data, type Tensor, assertShape, contiguous, dtypeOf, zeros } from '../tensor.js';
import { BASE_KEYS, type Cotangents, type Forward, Layer, type Padding, type Tangents, checkKeys, pair, padding, windowAxis } from './layer.js';

/** Keras config of {@link Conv2D}. */
export interface Conv2DConfig {
  /** Output channels (`cout`). */
  filters: number;
  /** Window `[kh, kw]`, or one number for both. */
  kernel_size: number | [number, number];
  /** Steps `[sh, sw]`, or one number for both; default 1. */
  strides?: number | [number, number];
  /** `'valid'` (default, no padding) or `'same'` (TensorFlow's: the smaller half before). */
  padding?: Padding;
  /** Activation applied after the bias; default `'linear'`. */
  activation?: ActivationName | null;
  /** Add a bias `[cout]`; default true. */
  use_bias?: boolean;
}

/** What Conv2D's forward pass saves for its derivatives: the input (for `dW` and the kernel tangent) and the output (for the activation rule). */
export interface Conv2DSaved {
  /** The input, `[B, H, W, Cin]`, contiguous. */
  x: Tensor;
  /** The output after the activation, `[B, Ho, Wo, Cout]`. */
  y: Tensor;
}

/**
 * The windows of one spatial axis, hoisted out of the hot loops: output position `o` reads input
 * positions `start[o] + k` for kernel taps `k` in `[lo[o], hi[o])`, the taps that land inside the
 * input. The others fall in the padding: patch gathers leave them zero and the tangent loops skip them.
 */
export interface WindowRanges {
  /** Output extent. */
  out: number;
  /** `o · stride − padBefore`: the input position of tap 0 (negative inside the leading pad). */
  start: Int32Array;
  /** First tap inside the input. */
  lo: Int32Array;
  /** One past the last tap inside the input. */
  hi: Int32Array;
}

/** Valid tap ranges of every window along an axis of extent `n`, window `k`, stride `s` (TensorFlow's padding rule via {@link windowAxis}). */
export function windowRanges(n: number, k: number, s: number, pad: Padding, layer: string): WindowRanges {
  const { out, before } = windowAxis(n, k, s, pad, layer);
  const start = new Int32Array(out);
  const lo = new Int32Array(out);
  const hi = new Int32Array(out);
  for (let o = 0; o < out; o++) {
    start[o] = o * s - before;
    lo[o] = Math.max(0, -start[o]);
    hi[o] = Math.min(k, n - start[o]);
  }
  return { out, start, lo, hi };
}

/** Everything the loops index by, derived once per call from the input shape. */
interface Geometry {
  B: number;
  H: number;
  W: number;
  Cin: number;
  Cout: number;
  kh: number;
  kw: number;
  rows: WindowRanges;
  cols: WindowRanges;
}

/**
 * A 2-D convolution (cross-correlation, as Keras) on NHWC images, with a fused activation.
 * Padding `'same'` is TensorFlow's: `ceil(n / s)` outputs, the smaller half of the pad before.
 * @example
 * const conv = new Conv2D({ filters: 6, kernel_size: 2, activation: 'relu' }).build([10, 10, 1], { rng: new Rng(0) });
 * const x = randomNormal([3, 10, 10, 1], new Rng(1));
 * const { y } = conv.forward(x); // y: [3, 9, 9, 6]
 * const J = conv.jacobianWrtInput(x); // [3, 9, 9, 6, 10, 10, 1]
 * const { dx, dParams } = conv.vjp(conv.forward(x).saved, y); // dx: [3, 10, 10, 1]; dParams: [dKernel, dBias]
 */
export class Conv2D extends Layer<Conv2DSaved> {
  readonly className = 'Conv2D';
  /** Output channels (`cout`). */
  readonly filters: number;
  /** Window `[kh, kw]`. */
  readonly kernelSize: [number, number];
  /** Steps `[sh, sw]`. */
  readonly strides: [number, number];
  /** `'valid'` or `'same'`. */
  readonly padding: Padding;
  /** Activation applied after the bias. */
  readonly activation: ActivationName;
  /** Whether the layer has a bias. */
  readonly useBias: boolean;

  constructor(config: Conv2DConfig, name?: string) {
    super(name);
    checkKeys(config as unknown as Record<string, unknown>, ['filters', 'kernel_size', 'strides', 'padding', 'activation', 'use_bias', ...BASE_KEYS], 'Conv2D');
    if (!Number.isInteger(config.filters) || config.filters <= 0) {
      throw new ConfigError(`Conv2D: expected filters to be a positive integer, received ${fmtValue(config.filters)}`);
    }
    if (config.use_bias !== undefined && typeof config.use_bias !== 'boolean') {
      throw new ConfigError(`Conv2D: expected use_bias to be a boolean, received ${fmtValue(config.use_bias)}`);
    }
    this.filters = config.filters;
    this.kernelSize = pair(config.kernel_size, 'kernel_size', 'Conv2D');
    this.strides = pair(config.strides ?? 1, 'strides', 'Conv2D');
    this.padding = padding(config.padding, 'Conv2D');
    this.activation = activationName(config.activation, 'Conv2D');
    this.useBias = config.use_bias ?? true;
  }

  computeOutputShape(inputShape: readonly number[]): number[] {
    if (inputShape.length !== 3) {
      throw new ShapeError(`${this.describe()}: expected a per-sample input of rank 3 ([H, W, C], NHWC), received ${fmtShape(inputShape)} (rank ${inputShape.length})`);
    }
    const g = this.geometry([1, ...inputShape]);
    return [g.rows.out, g.cols.out, this.filters];
  }

  protected override paramShapes(inputShape: readonly number[]) {
    const [kh, kw] = this.kernelSize;
    const cin = inputShape[2];
    const fanIn = kh * kw * cin;
    const fanOut = kh * kw * this.filters;
    const shapes = [{ name: 'kernel', shape: [kh, kw, cin, this.filters], fanIn, fanOut }];
    if (this.useBias) shapes.push({ name: 'bias', shape: [this.filters], fanIn, fanOut });
    return shapes;
  }

  getConfig(): Record<string, unknown> {
    return { filters: this.filters, kernel_size: this.kernelSize.slice(), strides: this.strides.slice(), padding: this.padding, activation: this.activation, use_bias: this.useBias };
  }

  /**
   * Primal pass, as a product of patch matrices: chunks of output pixels gather their input
   * windows into rows `P` (`[n, kh·kw·cin]`, zeros at padded taps), then `z = P W + b`. Saves `x`
   * (contiguous) and `y`.
   */
  forward(x: Tensor): Forward<Conv2DSaved> {
    this.checkInput(x);
    const xc = contiguous(x);
    const g = this.geometry(xc.shape);
    const { B, Cin, Cout, rows, cols } = g;
    const K = g.kh * g.kw * Cin;
    const Wk = this.kernelData(Cin);
    // The kernel transposed to [cout, K]: each output channel's weights become one contiguous row for the dot products below.
    const Wt = new Float64Array(Cout * K);
    for (let q = 0; q < K; q++) for (let co = 0; co < Cout; co++) Wt[co * K + q] = Wk[q * Cout + co];
    const bias = this.useBias ? this.biasData() : null;
    const y = zeros([B, rows.out, cols.out, Cout], dtypeOf(x));
    const yd = y.data;
    const nPix = B * rows.out * cols.out;
    const chunk = chunkPixels(K);
    const P = new Float64Array(chunk * K);
    for (let p0 = 0; p0 < nPix; p0 += chunk) {
      const n = Math.min(chunk, nPix - p0);
      gatherPatches(xc.data, g, p0, n, P);
      for (let p = 0; p < n; p++) {
        const pr = p * K;
        const yo = (p0 + p) * Cout;
        let co = 0;
        // Four output channels at once: four accumulators stay in registers and each patch value is loaded once for four multiply-adds.
        for (; co + 4 <= Cout; co += 4) {
          const w0 = co * K;
          const w1 = w0 + K;
          const w2 = w1 + K;
          const w3 = w2 + K;
          let a0 = 0;
          let a1 = 0;
          let a2 = 0;
          let a3 = 0;
          for (let q = 0; q < K; q++) {
            const v = P[pr + q];
            a0 += v * Wt[w0 + q];
            a1 += v * Wt[w1 + q];
            a2 += v * Wt[w2 + q];
            a3 += v * Wt[w3 + q];
          }
          if (bias) {
            a0 += bias[co];
            a1 += bias[co + 1];
            a2 += bias[co + 2];
            a3 += bias[co + 3];
          }
          yd[yo + co] = a0;
          yd[yo + co + 1] = a1;
          yd[yo + co + 2] = a2;
          yd[yo + co + 3] = a3;
        }
        for (; co < Cout; co++) {
          const w0 = co * K;
          let a = 0;
          for (let q = 0; q < K; q++) a += P[pr + q] * Wt[w0 + q];
          yd[yo + co] = bias ? a + bias[co] : a;
        }
      }
    }
    activationForward(this.activation, yd, yd, y.size, Cout);
    return { y, saved: { x: xc, y } };
  }

  /**
   * Dual-number rule: `dy = act'(z) · (conv(dx, W) + conv(x, dW) + db)`, for a block of `T`
   * tangents; the tangent axis is innermost, so every multiply-add runs over `T` contiguous values.
   */
  jvp(saved: Conv2DSaved, { dx, dParams, T }: Tangents): Tensor {
    const { x, y } = saved;
    const { B, H, W, Cin, Cout, kh, kw, rows, cols } = this.geometry(x.shape);
    const nOut = B * rows.out * cols.out * Cout;
    const dz = zeros([B, rows.out, cols.out, Cout, T], dtypeOf(x));
    const d = dz.data;
    const kStride = Cin * Cout;
    if (dx) {
      assertShape(dx, [B, H, W, Cin, T], `${this.describe()} jvp dx`);
      const Wk = this.kernelData(Cin);
      const dxd = contiguous(dx).data;
      // Jacobian seeds are basis directions: each input's tangent row is zero but for at most one t, so visiting only each row's nonzero span makes a block cost its T seeded columns, not T times the image.
      const span = tangentSupport(dxd, B * H * W * Cin, T);
      for (let b = 0; b < B; b++) {
        for (let oh = 0; oh < rows.out; oh++) {
          const ih0 = rows.start[oh];
          for (let ow = 0; ow < cols.out; ow++) {
            const iw0 = cols.start[ow];
            const yo = ((b * rows.out + oh) * cols.out + ow) * Cout;
            for (let i = rows.lo[oh]; i < rows.hi[oh]; i++) {
              const xRow = ((b * H + ih0 + i) * W + iw0) * Cin;
              const wRow = i * kw * kStride;
              for (let j = cols.lo[ow]; j < cols.hi[ow]; j++) {
                const xo = xRow + j * Cin;
                const wo = wRow + j * kStride;
                for (let ci = 0; ci < Cin; ci++) {
                  const t0 = span.lo[xo + ci];
                  const t1 = span.hi[xo + ci];
                  if (t0 === t1) continue;
                  const src = (xo + ci) * T;
                  const wc = wo + ci * Cout;
                  for (let co = 0; co < Cout; co++) {
                    const w = Wk[wc + co];
                    if (w === 0) continue;
                    const dst = (yo + co) * T;
                    for (let t = t0; t < t1; t++) d[dst + t] += w * dxd[src + t];
                  }
                }
              }
            }
          }
        }
      }
    }
    const dW = dParams?.[0];
    if (dW) {
      assertShape(dW, [kh, kw, Cin, Cout, T], `${this.describe()} jvp dKernel`);
      const dWd = contiguous(dW).data;
      const span = tangentSupport(dWd, kh * kw * kStride, T);
      const xd = x.data;
      for (let b = 0; b < B; b++) {
        for (let oh = 0; oh < rows.out; oh++) {
          const ih0 = rows.start[oh];
          for (let ow = 0; ow < cols.out; ow++) {
            const iw0 = cols.start[ow];
            const yo = ((b * rows.out + oh) * cols.out + ow) * Cout;
            for (let i = rows.lo[oh]; i < rows.hi[oh]; i++) {
              const xRow = ((b * H + ih0 + i) * W + iw0) * Cin;
              const wRow = i * kw * kStride;
              for (let j = cols.lo[ow]; j < cols.hi[ow]; j++) {
                const xo = xRow + j * Cin;
                const wo = wRow + j * kStride;
                for (let ci = 0; ci < Cin; ci++) {
                  const xv = xd[xo + ci];
                  if (xv === 0) continue;
                  const wc = wo + ci * Cout;
                  for (let co = 0; co < Cout; co++) {
                    const t0 = span.lo[wc + co];
                    const t1 = span.hi[wc + co];
                    if (t0 === t1) continue;
                    const src = (wc + co) * T;
                    const dst = (yo + co) * T;
                    for (let t = t0; t < t1; t++) d[dst + t] += xv * dWd[src + t];
                  }
                }
              }
            }
          }
        }
      }
    }
    const db = this.useBias ? dParams?.[1] : null;
    if (db) {
      assertShape(db, [Cout, T], `${this.describe()} jvp dBias`);
      const dbd = contiguous(db).data;
      const row = Cout * T;
      for (let p = 0; p < nOut * T; p += row) for (let k = 0; k < row; k++) d[p + k] += dbd[k];
    }
    activationJvp(this.activation, y.data, d, nOut, T, Cout);
    return dz;
  }

  /**
   * VJP rule: `dz = act'ᵀ dy`, then per chunk of output pixels with patch rows `P`:
   * `dP = dz Wᵀ` scattered back onto the windows (`dx`, the transposed convolution),
   * `dW += Pᵀ dz`, and `db = Σ_{b,h,w} dz`.
   */
  vjp(saved: Conv2DSaved, dy: Tensor): Cotangents {
    const { x, y } = saved;
    const g = this.geometry(x.shape);
    const { B, H, W, Cin, Cout, kh, kw, rows, cols } = g;
    this.checkCotangent(dy, B);
    const K = kh * kw * Cin;
    const nPix = B * rows.out * cols.out;
    const nOut = nPix * Cout;
    const dz = new Float64Array(nOut);
    activationVjp(this.activation, y.data, contiguous(dy).data, dz, nOut, Cout);
    const Wk = this.kernelData(Cin);
    const dx = zeros([B, H, W, Cin], dtypeOf(x));
    // Summed over every window of the batch: float64 keeps a float32 layer's gradient accurate.
    const dWacc = new Float64Array(K * Cout);
    const chunk = chunkPixels(K);
    const P = new Float64Array(chunk * K);
    const dP = new Float64Array(chunk * K);
    for (let p0 = 0; p0 < nPix; p0 += chunk) {
      const n = Math.min(chunk, nPix - p0);
      gatherPatches(x.data, g, p0, n, P);
      // dP = dz Wᵀ: row p of dP holds the cotangent of every tap of pixel p's window.
      for (let p = 0; p < n; p++) {
        const zo = (p0 + p) * Cout;
        const pr = p * K;
        let q = 0;
        for (; q + 4 <= K; q += 4) {
          const w0 = q * Cout;
          const w1 = w0 + Cout;
          const w2 = w1 + Cout;
          const w3 = w2 + Cout;
          let a0 = 0;
          let a1 = 0;
          let a2 = 0;
          let a3 = 0;
          for (let co = 0; co < Cout; co++) {
            const v = dz[zo + co];
            a0 += v * Wk[w0 + co];
            a1 += v * Wk[w1 + co];
            a2 += v * Wk[w2 + co];
            a3 += v * Wk[w3 + co];
          }
          dP[pr + q] = a0;
          dP[pr + q + 1] = a1;
          dP[pr + q + 2] = a2;
          dP[pr + q + 3] = a3;
        }
        for (; q < K; q++) {
          const w0 = q * Cout;
          let a = 0;
          for (let co = 0; co < Cout; co++) a += dz[zo + co] * Wk[w0 + co];
          dP[pr + q] = a;
        }
      }
      scatterPatches(dP, g, p0, n, dx.data);
      // dW += Pᵀ dz, four output channels at a time over the chunk's pixels.
      for (let q = 0; q < K; q++) {
        let co = 0;
        for (; co + 4 <= Cout; co += 4) {
          let a0 = 0;
          let a1 = 0;
          let a2 = 0;
          let a3 = 0;
          for (let p = 0, pq = q, zo = p0 * Cout + co; p < n; p++, pq += K, zo += Cout) {
            const v = P[pq];
            a0 += v * dz[zo];
            a1 += v * dz[zo + 1];
            a2 += v * dz[zo + 2];
            a3 += v * dz[zo + 3];
          }
          const wo = q * Cout + co;
          dWacc[wo] += a0;
          dWacc[wo + 1] += a1;
          dWacc[wo + 2] += a2;
          dWacc[wo + 3] += a3;
        }
        for (; co < Cout; co++) {
          let a = 0;
          for (let p = 0, pq = q, zo = p0 * Cout + co; p < n; p++, pq += K, zo += Cout) a += P[pq] * dz[zo];
          dWacc[q * Cout + co] += a;
        }
      }
    }
    const dW = zeros([kh, kw, Cin, Cout], dtypeOf(x));
    dW.data.set(dWacc);
    const dParams = [dW];
    if (this.useBias) {
      const dbAcc = new Float64Array(Cout);
      for (let p = 0; p < nOut; p += Cout) for (let co = 0; co < Cout; co++) dbAcc[co] += dz[p + co];
      const db = zeros([Cout], dtypeOf(x));
      db.data.set(dbAcc);
      dParams.push(db);
    }
    return { dx, dParams };
  }

  /** Checks the channel count first (the usual mistake), quoting expected and received, then rank, extents and dtype. */
  protected override checkInput(x: Tensor): void {
    const cin = this.inputShape[2];
    if (x.shape.length === 4 && x.shape[3] !== cin) {
      throw new ShapeError(`${this.describe()} input: expected ${cin} input channels (last axis of NHWC [B, H, W, C]), received ${x.shape[3]} in shape ${fmtShape(x.shape)}`);
    }
    super.checkInput(x);
  }

  /** The kernel's values, after checking that a loaded kernel still fits this layer. */
  private kernelData(cin: number): Data {
    const [kh, kw] = this.kernelSize;
    const k = this.params[0].value;
    if (k.shape.length !== 4 || k.shape[0] !== kh || k.shape[1] !== kw || k.shape[2] !== cin || k.shape[3] !== this.filters) {
      throw new ShapeError(`${this.describe()} kernel: expected shape ${fmtShape([kh, kw, cin, this.filters])} ([kh, kw, cin, cout] for ${cin} input channels), received ${fmtShape(k.shape)}`);
    }
    return contiguous(k).data;
  }

  private biasData(): Data {
    const b = this.params[1].value;
    assertShape(b, [this.filters], `${this.describe()} bias`);
    return contiguous(b).data;
  }

  /** Window ranges for an input `[B, H, W, Cin]`; throws, quoting both, when a 'valid' kernel does not fit. */
  private geometry(shape: readonly number[]): Geometry {
    const [B, H, W, Cin] = shape;
    const [kh, kw] = this.kernelSize;
    const [sh, sw] = this.strides;
    if (this.padding === 'valid' && (kh > H || kw > W)) {
      throw new ShapeError(`${this.describe()}: expected kernel_size ${fmtShape(this.kernelSize)} to fit the input's spatial extent ${fmtShape([H, W])} with padding "valid", received an input of ${fmtShape([H, W])} (use padding "same" or a smaller kernel)`);
    }
    const rows = windowRanges(H, kh, sh, this.padding, this.describe());
    const cols = windowRanges(W, kw, sw, this.padding, this.describe());
    return { B, H, W, Cin, Cout: this.filters, kh, kw, rows, cols };
  }
}

/** Output pixels per chunk: enough to amortize the loops, few enough that a chunk's patch rows (`n · K` values) stay in cache. */
function chunkPixels(K: number): number {
  return Math.max(8, Math.min(256, Math.floor(8192 / K)));
}

/**
 * Writes the input windows of the `n` output pixels `p0 .. p0 + n` (flat over `[B, Ho, Wo]`) as
 * rows of `P` (`[n, kh·kw·cin]`, row-major over `(i, j, ci)` like the kernel's first axes); taps
 * in the padding are left zero.
 */
function gatherPatches(xd: Data, g: Geometry, p0: number, n: number, P: Float64Array): void {
  const { H, W, Cin, kh, kw, rows, cols } = g;
  const K = kh * kw * Cin;
  const rowLen = kw * Cin;
  const perImage = rows.out * cols.out;
  P.fill(0, 0, n * K);
  let b = Math.floor(p0 / perImage);
  let oh = Math.floor((p0 - b * perImage) / cols.out);
  let ow = p0 - b * perImage - oh * cols.out;
  for (let p = 0; p < n; p++) {
    const ih0 = rows.start[oh];
    const iw0 = cols.start[ow];
    const q0 = cols.lo[ow] * Cin;
    const q1 = cols.hi[ow] * Cin;
    for (let i = rows.lo[oh]; i < rows.hi[oh]; i++) {
      const src = ((b * H + ih0 + i) * W + iw0) * Cin;
      const dst = p * K + i * rowLen;
      for (let q = q0; q < q1; q++) P[dst + q] = xd[src + q];
    }
    if (++ow === cols.out) {
      ow = 0;
      if (++oh === rows.out) {
        oh = 0;
        b++;
      }
    }
  }
}

/** The transpose of {@link gatherPatches}: adds each row of `dP` back onto its window of `dx` (taps in the padding are dropped). */
function scatterPatches(dP: Float64Array, g: Geometry, p0: number, n: number, dx: Data): void {
  const { H, W, Cin, kh, kw, rows, cols } = g;
  const K = kh * kw * Cin;
  const rowLen = kw * Cin;
  const perImage = rows.out * cols.out;
  let b = Math.floor(p0 / perImage);
  let oh = Math.floor((p0 - b * perImage) / cols.out);
  let ow = p0 - b * perImage - oh * cols.out;
  for (let p = 0; p < n; p++) {
    const ih0 = rows.start[oh];
    const iw0 = cols.start[ow];
    const q0 = cols.lo[ow] * Cin;
    const q1 = cols.hi[ow] * Cin;
    for (let i = rows.lo[oh]; i < rows.hi[oh]; i++) {
      const dst = ((b * H + ih0 + i) * W + iw0) * Cin;
      const src = p * K + i * rowLen;
      for (let q = q0; q < q1; q++) dx[dst + q] += dP[src + q];
    }
    if (++ow === cols.out) {
      ow = 0;
      if (++oh === rows.out) {
        oh = 0;
        b++;
      }
    }
  }
}

/**
 * The nonzero span of each of `n` tangent rows of `T` values: row `r` is zero outside
 * `[lo[r], hi[r])` (`lo = hi = 0` for an all-zero row). Dense tangents cost one look at each end.
 */
function tangentSupport(d: Data, n: number, T: number): { lo: Int32Array; hi: Int32Array } {
  const lo = new Int32Array(n);
  const hi = new Int32Array(n);
  for (let r = 0; r < n; r++) {
    const o = r * T;
    let a = 0;
    while (a < T && d[o + a] === 0) a++;
    if (a === T) continue;
    let e = T;
    while (d[o + e - 1] === 0) e--;
    lo[r] = a;
    hi[r] = e;
  }
  return { lo, hi };
}

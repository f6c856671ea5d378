/**
 * Conv2D: `y = act(conv(x, W) + b)` on NHWC images `[B, H, W, Cin]` with a kernel `W` of shape
 * `[kh, kw, cin, cout]` (Keras' layout), a bias `[cout]`, strides or a dilation, and TensorFlow's
 * padding.
 * @module
 */
import { type ActivationName, activationForward, activationJvp, activationName, activationNeeds, activationVjp, couplesRow } from '../activations.js';
import { ConfigError, ShapeError, fmtShape, fmtValue } from '../errors.js';
import { type Data, type Tensor, assertShape, contiguous, copy, dtypeOf, zeros } from '../tensor.js';
import { type AxisStructure, KronPattern, SparsityPattern } from '../structure.js';
import { BASE_KEYS, type Cotangents, type Forward, Layer, fuseIntoLinear, type LayerPass, type LocalJacobian, type ParamFactorization, type PatchFactorShape, type Residuals, type Tangents, type Wrt, checkKeys } from './layer.js';
import { finishTangent, tangentBuffer } from './out.js';
import { elementwiseLocal } from './local.js';
import { columnSums, staging } from '../kernels/elementwise.js';
import { type GemmModule, gemm, simdModule } from '../kernels/gemm.js';
import { type Padding, type WindowRanges, effectiveWindow, maxWindow, pair, padding, windowPattern, windowRanges, windowRun } from './window.js';

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
  /** Taps `[dh, dw]` positions apart, or one number for both; default 1. Above 1 only with strides 1 (as Keras). */
  dilation_rate?: number | [number, number];
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
  /** The pre-activation, `[B, Ho, Wo, Cout]`, saved only for an activation whose rules read it (gelu, swish/silu, softsign); else null. */
  z?: Tensor | null;
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
  /** Tap `i` of the kernel's rows reads image row `rows.start[oh] + i · rows.step`; likewise the columns. */
  rows: WindowRanges;
  cols: WindowRanges;
}

/**
 * A 2-D convolution (cross-correlation, as Keras) on NHWC images, with a fused activation.
 * Padding `'same'` is TensorFlow's: `ceil(n / s)` outputs, the smaller half of the pad before.
 * With a `dilation_rate` `d`, the taps of a window are `d` positions apart and the padding rule
 * sees the effective kernel `(k - 1) d + 1`, as Keras.
 * @example
 * const conv = new Conv2D({ filters: 6, kernel_size: 2, activation: 'relu' }).build([10, 10, 1], { rng: new Rng(0) });
 * const x = randomNormal([3, 10, 10, 1], new Rng(1));
 * const { y } = conv.forward(x); // y: [3, 9, 9, 6]
 * const J = jacobianWrtInput(conv, x); // [3, 9, 9, 6, 10, 10, 1]
 * const { dx, dParams } = conv.vjp(conv.forward(x).saved, y); // dx: [3, 10, 10, 1]; dParams: [dKernel, dBias]
 */
export class Conv2D extends Layer<Conv2DSaved> {
  readonly className = 'Conv2D';
  /** `vjp` returns `dx` in a new buffer of its own. */
  override readonly freshCotangent = true;
  /** Output channels (`cout`). */
  readonly filters: number;
  /** Window `[kh, kw]`. */
  readonly kernelSize: [number, number];
  /** Steps `[sh, sw]`. */
  readonly strides: [number, number];
  /** `'valid'` or `'same'`. */
  readonly padding: Padding;
  /** Taps `[dh, dw]` positions apart. */
  readonly dilationRate: [number, number];
  /** Activation applied after the bias. */
  readonly activation: ActivationName;
  /** Whether the layer has a bias. */
  readonly useBias: boolean;

  constructor(config: Conv2DConfig, name?: string) {
    super(name, config);
    checkKeys(config as unknown as Record<string, unknown>, ['filters', 'kernel_size', 'strides', 'padding', 'dilation_rate', 'activation', 'use_bias', ...BASE_KEYS], 'Conv2D');
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
    this.dilationRate = pair(config.dilation_rate ?? 1, 'dilation_rate', 'Conv2D');
    // Keras refuses the combination (TensorFlow's dilated convolutions take strides of 1): no Keras model asks for it.
    if (this.strides.some((v) => v > 1) && this.dilationRate.some((v) => v > 1)) {
      throw new ConfigError(`Conv2D: expected strides 1 with a dilation_rate above 1 (as Keras and TensorFlow), received strides ${fmtShape(this.strides)} with dilation_rate ${fmtShape(this.dilationRate)}`);
    }
    this.activation = activationName(config.activation, 'Conv2D');
    this.useBias = config.use_bias ?? true;
    this.recordInitializers(config as unknown as Record<string, unknown>, ['kernel', 'bias']);
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

  /** The Keras config; `dilation_rate` only when it is not 1, so that an undilated layer's saved model stays as before. */
  getConfig(): Record<string, unknown> {
    const dilated = this.dilationRate.some((d) => d !== 1) ? { dilation_rate: this.dilationRate.slice() } : {};
    return { filters: this.filters, kernel_size: this.kernelSize.slice(), strides: this.strides.slice(), padding: this.padding, ...dilated, activation: this.activation, use_bias: this.useBias, ...this.initializerConfig() };
  }

  /**
   * Primal pass, as a product of patch matrices: chunks of output pixels gather their input
   * windows into rows `P` (`[n, kh·kw·cin]`, zeros at padded taps), then `z = P W + b` by the
   * shared register-blocked {@link gemm} straight into `y` (the kernel `[K, cout]` read as stored),
   * and the activation applied in place. A float32 layer stays float32: patches, kernel and `y`
   * (each dot product summed in a JS number, then rounded once). Saves `x` (contiguous), `y`, and
   * `z` only for an activation whose rules read it.
   */
  forward(x: Tensor): Forward<Conv2DSaved> {
    return this.convolve(x, this.activation);
  }

  /** {@link Conv2D.forward} and the activation layer after it in one pass, for a layer without an activation of its own: the same values as the two passes (see {@link fuseIntoLinear}). */
  override fusedForward(x: Tensor, activation: ActivationName): Forward<Conv2DSaved> | null {
    return fuseIntoLinear(this.activation, activation, (a) => this.convolve(x, a));
  }

  /** {@link Conv2D.forward} with `activation` in place of the layer's own; the bias and relu are applied in the GEMM's epilogue, other activations after. */
  private convolve(x: Tensor, activation: ActivationName): Forward<Conv2DSaved> {
    this.checkInput(x);
    const xc = contiguous(x);
    const g = this.geometry(xc.shape);
    const { B, Cout, rows, cols } = g;
    const K = g.kh * g.kw * g.Cin;
    const Wk = this.kernelData(g.Cin);
    const y = zeros([B, rows.out, cols.out, Cout], dtypeOf(x));
    const yd = y.data;
    const nPix = B * rows.out * cols.out;
    const chunk = chunkPixels(K, yd);
    const gathered = GatherStage.open(xc.data, g, chunk, chunk * K, gemmScratch(g, chunk, K, yd.BYTES_PER_ELEMENT));
    const jsRows = gathered ? null : newLike(yd, chunk * K);
    // The bias and relu in the GEMM's epilogue (a layer without a bias accumulates onto the zeros of `y`, as before there was one).
    const epilogue = { bias: this.useBias ? this.biasData() : undefined, relu: activation === 'relu' };
    for (let p0 = 0; p0 < nPix; p0 += chunk) {
      const n = Math.min(chunk, nPix - p0);
      const P = jsRows ?? gathered!.gather(p0, n);
      if (jsRows) movePatches('gather', xc.data, g, p0, n, jsRows);
      gemm({ n, m: Cout, k: K, a: P, a0: 0, ai: K, at: 1, b: Wk, b0: 0, bt: Cout, bj: 1, c: yd, c0: p0 * Cout, ci: Cout }, !this.useBias, epilogue);
    }
    const zSaved = activationNeeds(activation) === 'z' ? copy(y) : null;
    if (!epilogue.relu) activationForward(activation, yd, yd, y.size, Cout);
    return { y, saved: { x: xc, y, z: zSaved } };
  }

  /**
   * Dual-number rule: `yDot = act'(z) · (conv(xDot, W) + conv(x, kernelDot) + biasDot)`, for a block of `T`
   * tangents; the tangent axis is innermost, so every multiply-add runs over `T` contiguous values.
   */
  jvp(saved: Conv2DSaved, { xDot, paramDots, T, pool }: Tangents, out?: Tensor): Tensor {
    const { x, y } = saved;
    const g = this.geometry(x.shape);
    const { B, H, W, Cin, Cout, kh, kw, rows, cols } = g;
    const nOut = B * rows.out * cols.out * Cout;
    // A pooled (zero, contiguous) `out` is accumulated in directly; any other is copied into at the end.
    const zDot = tangentBuffer(out, [B, rows.out, cols.out, Cout, T], dtypeOf(x), pool);
    const d = zDot.data;
    if (xDot) {
      assertShape(xDot, [B, H, W, Cin, T], `${this.describe()} jvp xDot`);
      const tangent = contiguous(xDot).data;
      const span = tangentSupport(tangent, B * H * W * Cin, T);
      const live = gemmChannels(span, Cin, T);
      if (live) addInputTangentByGemm(g, this.kernelData(Cin), tangent, T, d, live);
      else addTangentTerm('input', g, this.kernelData(Cin), tangent, T, d, span);
    }
    const kernelDot = paramDots?.[0];
    if (kernelDot) {
      assertShape(kernelDot, [kh, kw, Cin, Cout, T], `${this.describe()} jvp kernelDot`);
      addKernelTangent(g, x.data, contiguous(kernelDot).data, T, d);
    }
    const biasDot = this.useBias ? paramDots?.[1] : null;
    if (biasDot) {
      assertShape(biasDot, [Cout, T], `${this.describe()} jvp biasDot`);
      const biasDotData = contiguous(biasDot).data;
      const row = Cout * T;
      for (let p = 0; p < nOut * T; p += row) for (let k = 0; k < row; k++) d[p + k] += biasDotData[k];
    }
    activationJvp(this.activation, saved.z?.data ?? null, y.data, d, nOut, T, Cout);
    return finishTangent(out, zDot, pool);
  }

  /**
   * VJP rule: `dz = act'ᵀ dy` (for `'linear'`, `dy` itself, read only), then per chunk of output
   * pixels with patch rows `P`: `dP = dz Wᵀ` scattered back onto the windows (`dx`, the
   * transposed convolution), `dW += Pᵀ dz`, and `db = Σ_{b,h,w} dz`; both products by the shared
   * {@link gemm}. `dW` and `db` are summed over the whole batch in float64 (a float32 layer's
   * gradient stays accurate), then rounded once to the layer's dtype.
   */
  vjp(saved: Conv2DSaved, dy: Tensor): Cotangents {
    const { dx, dParams } = this.pullBack(saved, dy, true);
    return { dx: dx!, dParams };
  }

  /** {@link Conv2D.vjp} without the input cotangent: the parameter cotangents only, skipping `dP = dz Wᵀ` and its scatter (a first layer in training). */
  override vjpParams(saved: Conv2DSaved, dy: Tensor): Tensor[] {
    return this.pullBack(saved, dy, false).dParams;
  }

  // Structure hooks: what the sparse engines and the memory estimate know of a convolution.

  /** Each output row reads a window of input rows (`dh` apart), each column a window of columns, every channel. */
  inputStructure(): AxisStructure {
    const [H, W] = this.inputShape;
    const [kh, kw] = this.kernelSize;
    const [sh, sw] = this.strides;
    const [dh, dw] = this.dilationRate;
    return {
      inDims: this.inputShape.slice(),
      maps: [
        { kind: 'matrix', pattern: windowPattern(H, kh, sh, this.padding, false, this.describe(), dh) },
        { kind: 'matrix', pattern: windowPattern(W, kw, sw, this.padding, false, this.describe(), dw) },
        { kind: 'full', rows: this.filters },
      ],
    };
  }

  /** Output `(oh, ow, co)` depends on the kernel column of `co` at its window's in-bounds taps, and on bias `co`; a row-coupling activation spreads both over the channels. */
  paramStructure(k: number): KronPattern {
    const [H, W, Cin] = this.inputShape;
    const [kh, kw] = this.kernelSize;
    const [sh, sw] = this.strides;
    const [dh, dw] = this.dilationRate;
    const Cout = this.filters;
    const chan = couplesRow(this.activation) ? SparsityPattern.full(Cout, Cout) : SparsityPattern.identity(Cout);
    const th = windowPattern(H, kh, sh, this.padding, true, this.describe(), dh);
    const tw = windowPattern(W, kw, sw, this.padding, true, this.describe(), dw);
    if (k === 0) return new KronPattern([th, tw, SparsityPattern.full(1, Cin), chan]);
    return new KronPattern([SparsityPattern.full(th.rows, 1), SparsityPattern.full(tw.rows, 1), chan]);
  }

  /** Forward saves its input and its output, and the pre-activation for an activation whose rules read it (see {@link Conv2DSaved}). */
  residuals(): Residuals {
    return { saves: activationNeeds(this.activation) === 'z' ? ['x', 'y', { what: 'z', perSample: this.outputShape.slice(), dtype: this.dtype }] : ['x', 'y'] };
  }

  /**
   * The largest row of the pattern, a lower bound on any colouring and met by the product
   * colouring: `wh · ww · cin` (the largest in-bounds window) for the input and the kernel, 1 for
   * the bias; times `cout` for a parameter under a row-coupling activation. A dilation `d` (stride
   * 1) splits an axis's columns into `d` residue classes that never share a row, each an interval
   * pattern, so the bound is met there too.
   */
  colourCount(wrt: Wrt): number {
    const [H, W, Cin] = this.inputShape;
    const [kh, kw] = this.kernelSize;
    const [sh, sw] = this.strides;
    const [dh, dw] = this.dilationRate;
    const coupled = wrt !== 'input' && couplesRow(this.activation) ? this.filters : 1;
    if (wrt === 1) return coupled;
    return maxWindow(H, kh, sh, this.padding, dh) * maxWindow(W, kw, sw, this.padding, dw) * Cin * coupled;
  }

  /**
   * The local Jacobian at a recorded pass, as two factors: the convolution's own matrix (a
   * kernel column per output row w.r.t. the input, the window's inputs w.r.t. the kernel, one 1
   * w.r.t. the bias), then the activation's, read off its dual-number rule.
   */
  localJacobian(pass: LayerPass, wrt: Wrt): LocalJacobian[] {
    const { x, y, z } = pass.saved as Conv2DSaved;
    const g = this.geometry(x.shape);
    const linear = convMatrixLocal(g, wrt === 'input' ? 'input' : wrt === 0 ? 'kernel' : 'bias', this.kernelData(g.Cin), x.data.subarray(x.offset, x.offset + x.size));
    if (this.activation === 'linear') return [linear];
    const n = g.rows.out * g.cols.out * g.Cout;
    const act = elementwiseLocal(g.B, n, couplesRow(this.activation) ? g.Cout : 1, (dz, count, T) => activationJvp(this.activation, z ? z.data.subarray(z.offset, z.offset + z.size) : null, y.data.subarray(y.offset, y.offset + y.size), dz, count, T, g.Cout));
    return [linear, act];
  }

  /**
   * `∂z/∂kernel` at a recorded pass as patches ⊗ identity over `cout`: the im2col patches of the
   * whole batch, `[B · Ho · Wo, kh · kw · cin]` (zeros at padded taps), gathered as the forward pass
   * does; `∂z/∂bias` as ones. Then the activation's factor, as in {@link Conv2D.localJacobian}.
   */
  paramFactor(pass: LayerPass, k: number): ParamFactorization {
    const x = contiguous((pass.saved as Conv2DSaved).x);
    const g = this.geometry(x.shape);
    const positions = g.rows.out * g.cols.out;
    const then = this.localJacobian(pass, k).slice(1);
    if (k !== 0) return { factor: { positions, units: g.Cout, width: 1, patches: null }, then };
    const K = g.kh * g.kw * g.Cin;
    const P = newLike(x.data, g.B * positions * K);
    const chunk = chunkPixels(K, x.data);
    const rows = newLike(x.data, chunk * K);
    for (let p0 = 0; p0 < g.B * positions; p0 += chunk) {
      const n = Math.min(chunk, g.B * positions - p0);
      movePatches('gather', x.data, g, p0, n, rows);
      P.set(rows.subarray(0, n * K), p0 * K);
    }
    return { factor: { positions, units: g.Cout, width: K, patches: P }, then };
  }

  /** The shape of {@link Conv2D.paramFactor}'s factor: `Ho · Wo` positions of `cout` units, patches of `kh · kw · cin` (the kernel) or ones (the bias). */
  paramFactorShape(k: number): PatchFactorShape {
    const [Ho, Wo, Cout] = this.outputShape;
    const [kh, kw] = this.kernelSize;
    return { positions: Ho * Wo, units: Cout, width: k === 0 ? kh * kw * this.inputShape[2] : 1, stored: k === 0, spread: couplesRow(this.activation) ? Cout : 1 };
  }

  /** The VJP's work; the input cotangent only when `withInput`. */
  private pullBack(saved: Conv2DSaved, dy: Tensor, withInput: boolean): { dx: Tensor | null; dParams: Tensor[] } {
    const { x, y } = saved;
    const g = this.geometry(x.shape);
    const { B, H, W, Cin, Cout, kh, kw, rows, cols } = g;
    this.checkCotangent(dy, B);
    const K = kh * kw * Cin;
    const nPix = B * rows.out * cols.out;
    const nOut = nPix * Cout;
    const dyd = contiguous(dy).data;
    let dz = dyd;
    if (this.activation !== 'linear') {
      dz = newLike(y.data, nOut);
      activationVjp(this.activation, saved.z?.data ?? null, y.data, dyd, dz, nOut, Cout);
    }
    const Wk = this.kernelData(Cin);
    const dx = withInput ? zeros([B, H, W, Cin], dtypeOf(x)) : null;
    // The kernel transposed to [cout, K] (small, once per call): dz Wᵀ then reads B's columns contiguously, as the SIMD kernels need.
    const Wt = withInput ? newLike(Wk, K * Cout) : null;
    if (Wt) for (let q = 0; q < K; q++) for (let co = 0; co < Cout; co++) Wt[co * K + q] = Wk[q * Cout + co];
    // dW is summed over the batch in float64; a float32 pass sums each chunk in float32 (dWc) first, then adds it in.
    // Its rows, the K taps, are rounded up to Kr, whole 4-row blocks of the SIMD kernel (a 3×3×3 kernel's 27 would leave 3 rows to the scalar edge); rows past K read the next patch row and are dropped.
    const Kr = K + ((4 - (K % 4)) % 4);
    const chunk = chunkPixels(K, x.data);
    const base = gemmScratch(g, chunk, Kr, x.data.BYTES_PER_ELEMENT);
    const staged = dx ? ScatterStage.open(dx.data, g, chunk, base) : null;
    const dP = withInput && !staged ? newLike(x.data, chunk * K) : null;
    const gathered = GatherStage.open(x.data, g, chunk, chunk * K + Kr - K, staged?.end ?? base);
    const sums = x.data instanceof Float32Array ? ChunkSums.open(Kr * Cout, gathered?.end ?? base) : null;
    let dWacc = sums ? sums.total() : new Float64Array(Kr * Cout);
    const dWc = x.data instanceof Float32Array && !sums ? new Float32Array(Kr * Cout) : null;
    const jsRows = gathered ? null : newLike(x.data, chunk * K + Kr - K);
    for (let p0 = 0; p0 < nPix; p0 += chunk) {
      const n = Math.min(chunk, nPix - p0);
      const P = jsRows ?? gathered!.gather(p0, n);
      if (jsRows) movePatches('gather', x.data, g, p0, n, jsRows);
      if (dx && Wt) {
        // dP = dz Wᵀ: row p of dP holds the cotangent of every tap of pixel p's window; a staged scatter's rows are written where it reads them.
        gemm({ n, m: K, k: Cout, a: dz, a0: p0 * Cout, ai: Cout, at: 1, b: Wt, b0: 0, bt: K, bj: 1, c: dP ?? staged!.rows(), c0: 0, ci: K }, false);
        if (dP) movePatches('scatter', dx.data, g, p0, n, dP);
        else staged!.scatter(p0, n);
      }
      // dW += Pᵀ dz: four taps by four output channels, both read four contiguous values per pixel.
      if (sums) {
        gemm({ n: Kr, m: Cout, k: n, a: P, a0: 0, ai: 1, at: K, b: dz, b0: p0 * Cout, bt: Cout, bj: 1, c: sums.chunk(), c0: 0, ci: Cout }, false);
        sums.add();
      } else if (dWc) {
        gemm({ n: Kr, m: Cout, k: n, a: P, a0: 0, ai: 1, at: K, b: dz, b0: p0 * Cout, bt: Cout, bj: 1, c: dWc, c0: 0, ci: Cout }, false);
        for (let q = 0; q < K * Cout; q++) dWacc[q] += dWc[q];
      } else {
        gemm({ n: Kr, m: Cout, k: n, a: P, a0: 0, ai: 1, at: K, b: dz, b0: p0 * Cout, bt: Cout, bj: 1, c: dWacc, c0: 0, ci: Cout }, true);
      }
    }
    staged?.close();
    if (sums) dWacc = sums.total();
    const dW = zeros([kh, kw, Cin, Cout], dtypeOf(x));
    dW.data.set(dWacc.subarray(0, K * Cout));
    const dParams = [dW];
    if (this.useBias) {
      const dbAcc = new Float64Array(Cout);
      columnSums(dz, nPix, Cout, dbAcc);
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

  /** Window ranges for an input `[B, H, W, Cin]`; throws, quoting both, when a 'valid' kernel (dilated: its effective extent) does not fit. */
  private geometry(shape: readonly number[]): Geometry {
    const [B, H, W, Cin] = shape;
    const [kh, kw] = this.kernelSize;
    const [sh, sw] = this.strides;
    const [dh, dw] = this.dilationRate;
    const eh = effectiveWindow(kh, dh);
    const ew = effectiveWindow(kw, dw);
    if (this.padding === 'valid' && (eh > H || ew > W)) {
      const kernel = dh === 1 && dw === 1 ? `kernel_size ${fmtShape(this.kernelSize)}` : `kernel_size ${fmtShape(this.kernelSize)} at dilation_rate ${fmtShape(this.dilationRate)} (spanning ${fmtShape([eh, ew])})`;
      throw new ShapeError(`${this.describe()}: expected ${kernel} to fit the input's spatial extent ${fmtShape([H, W])} with padding "valid", received an input of ${fmtShape([H, W])} (use padding "same" or a smaller kernel)`);
    }
    const rows = windowRanges(H, kh, sh, this.padding, this.describe(), dh);
    const cols = windowRanges(W, kw, sw, this.padding, this.describe(), dw);
    return { B, H, W, Cin, Cout: this.filters, kh, kw, rows, cols };
  }
}

/**
 * Output pixels per chunk: enough to amortize the loops (`dW`'s dot products run over a chunk's
 * pixels, and a float32 pass adds each chunk's `dW` into its float64 sum), few enough that a
 * chunk's patch rows (`n · K` values, 256 KiB) stay in cache: twice as many float32 values as
 * float64 ones, a multiple of 4 of them.
 */
function chunkPixels(K: number, like: Data): number {
  // float64's chunks stay as they were (their dW sums, chunk by chunk, are the golden fixtures' bits); float32's are whole 4-row SIMD blocks, leaving no rows to the scalar edge.
  if (like instanceof Float64Array) return Math.max(16, Math.min(512, Math.floor(32768 / K)));
  return Math.max(16, Math.min(1024, Math.floor(65536 / K))) & ~3;
}

/** A zero-filled buffer of `n` elements of `like`'s element type: a float32 pass stays float32. */
function newLike(like: Data, n: number): Data {
  return like instanceof Float32Array ? new Float32Array(n) : new Float64Array(n);
}

/** A run of at least this many values is gathered by `set` (a block copy): below, the view it needs costs more than a loop. */
const BLOCK_COPY = 48;

/**
 * Moves the input windows of the `n` output pixels `p0 .. p0 + n` (flat over `[B, Ho, Wo]`)
 * between the image `xd` (`[B, H, W, Cin]`) and the rows of `P` (`[n, kh·kw·cin]`, row-major over
 * `(i, j, ci)` like the kernel's first axes); tap `(i, j)` reads image pixel
 * `(start + i·dh, start + j·dw)`. `'gather'` copies each window into its row, taps in
 * the padding left zero; `'scatter'`, its transpose, adds each row back onto its window, taps in
 * the padding dropped.
 */
function movePatches(direction: 'gather' | 'scatter', xd: Data, g: Geometry, p0: number, n: number, P: Data): void {
  const { H, W, Cin, kh, kw, rows, cols } = g;
  const K = kh * kw * Cin;
  const rowLen = kw * Cin;
  const gather = direction === 'gather';
  const dh = rows.step;
  const dw = cols.step;
  const at = new PixelCursor(g, p0);
  for (let p = 0; p < n; p++, at.next()) {
    const { b, oh, ow } = at;
    const ih0 = rows.start[oh];
    const iw0 = cols.start[ow];
    const j0 = cols.lo[ow];
    const j1 = cols.hi[ow];
    // Only a window that reaches into the padding has taps left zero; a full one is overwritten whole.
    if (gather && (j0 !== 0 || j1 !== kw || rows.lo[oh] !== 0 || rows.hi[oh] !== kh)) P.fill(0, p * K, p * K + K);
    for (let i = rows.lo[oh]; i < rows.hi[oh]; i++) {
      const xo = ((b * H + ih0 + i * dh) * W + iw0) * Cin;
      const po = p * K + i * rowLen;
      if (dw === 1) {
        // Undilated columns: the window's row is one contiguous run of the image, copied in one loop (a long one as a block copy, whose bytes halve in float32).
        if (gather && (j1 - j0) * Cin >= BLOCK_COPY) P.set(xd.subarray(xo + j0 * Cin, xo + j1 * Cin), po + j0 * Cin);
        else if (gather) for (let q = j0 * Cin; q < j1 * Cin; q++) P[po + q] = xd[xo + q];
        else for (let q = j0 * Cin; q < j1 * Cin; q++) xd[xo + q] += P[po + q];
        continue;
      }
      for (let j = j0; j < j1; j++) {
        const xj = xo + j * dw * Cin;
        const pj = po + j * Cin;
        if (gather) for (let ci = 0; ci < Cin; ci++) P[pj + ci] = xd[xj + ci];
        else for (let ci = 0; ci < Cin; ci++) xd[xj + ci] += P[pj + ci];
      }
    }
  }
}

/** Output pixel `p` (flat over `[B, Ho, Wo]`) as `(b, oh, ow)`, stepped through in row-major order by {@link PixelCursor.next}. */
class PixelCursor {
  b: number;
  oh: number;
  ow: number;
  constructor(
    private readonly g: Geometry,
    p: number,
  ) {
    ({ b: this.b, oh: this.oh, ow: this.ow } = pixelAt(g, p));
  }
  /** The next pixel: along the row, then down the image, then to the next image. */
  next(): void {
    if (++this.ow < this.g.cols.out) return;
    this.ow = 0;
    if (++this.oh < this.g.rows.out) return;
    this.oh = 0;
    this.b++;
  }
}

/**
 * Bytes of the module's memory, from 0, that a Conv2D pass's GEMMs may copy their operands into
 * (`A`, `B`, `C` and a bias row of either, with room to spare): the stages of the pass lie above.
 */
function gemmScratch(g: Geometry, chunk: number, Kr: number, esz: number): number {
  const K = g.kh * g.kw * g.Cin;
  return pageAlign((2 * chunk * K + chunk * g.Cout + g.Cout * K + Kr * g.Cout + Kr + g.Cout + 64) * esz);
}

/** Rounded up to a whole 4 KiB, so that each staged region starts on its own page. */
function pageAlign(bytes: number): number {
  return (bytes + 4095) & ~4095;
}

/**
 * A stage of a Conv2D pass in the SIMD module's memory: an image staged there, a chunk's patch
 * rows `P` beside it (`[n, kh·kw·cin]`, as {@link movePatches}), and a table of runs between the
 * two for a kernel to walk. Each stage places itself from a byte it is given, so that a pass's
 * stages and its GEMMs' operands do not overlap.
 */
abstract class WindowStage {
  /** Byte offsets of the staged image, the chunk's patch rows and the runs. */
  protected readonly at: { image: number; P: number; runs: number };
  /** Bytes per value. */
  protected readonly esz: number;
  /** Values of the patch rows. */
  protected readonly patchLength: number;
  /** The first byte above the stage: where a further stage of the pass may begin. */
  readonly end: number;

  /** A stage from byte `base` for an image of `imageLength` values (`like`'s type) and chunks of up to `chunk` pixels in `patchLength` values; the memory grown to hold it. */
  protected constructor(
    protected readonly g: Geometry,
    protected readonly mod: GemmModule,
    like: Data,
    base: number,
    imageLength: number,
    patchLength: number,
    chunk: number,
  ) {
    this.esz = like.BYTES_PER_ELEMENT;
    this.patchLength = patchLength;
    const image = pageAlign(base);
    const P = pageAlign(image + imageLength * this.esz);
    const runs = pageAlign(P + patchLength * this.esz);
    this.at = { image, P, runs };
    // At most one run (six int32 at the most) per window row of every pixel, or per tap for dilated columns.
    this.end = runs + chunk * g.kh * (g.cols.step === 1 ? 1 : g.kw) * 24;
    staging(mod.memory, this.end);
  }

  /** A view of `length` values of the module's memory at byte `at`, of the stage's element type (made anew: growing the memory detaches the old buffer). */
  protected view(at: number, length: number): Data {
    return new (this.esz === 8 ? Float64Array : Float32Array)(this.mod.memory.buffer, at, length);
  }

  /** The runs table as int32. */
  protected table(): Int32Array {
    return new Int32Array(this.mod.memory.buffer, this.at.runs, (this.end - this.at.runs) / 4);
  }
}

/** Pixel `p0`'s place in the flat `[B, Ho, Wo]` order: its image, output row and column. */
function pixelAt(g: Geometry, p0: number): { b: number; oh: number; ow: number } {
  const perImage = g.rows.out * g.cols.out;
  const b = Math.floor(p0 / perImage);
  const oh = Math.floor((p0 - b * perImage) / g.cols.out);
  return { b, oh, ow: p0 - b * perImage - oh * g.cols.out };
}

/**
 * {@link movePatches}' gather by the SIMD module: the image staged in the module's memory once
 * per pass, each chunk's windows copied from it into patch rows beside it (`copyruns`, the
 * values' bits), and those rows handed to {@link gemm} as a view of the memory, which it reads
 * where they lie: neither the JS loop's per-value copies nor the GEMM's copy of `P` are made.
 */
class GatherStage extends WindowStage {
  private constructor(g: Geometry, mod: GemmModule, xd: Data, base: number, patchLength: number, chunk: number) {
    super(g, mod, xd, base, xd.length, patchLength, chunk);
    this.view(this.at.P, patchLength).fill(0);
    this.view(this.at.image, xd.length).set(xd);
  }

  /** A stage from byte `base` for the image `xd` and chunks of up to `chunk` pixels in `patchLength` values, or null where the module does not run or its memory cannot grow to hold the stage (the JS gather then runs). */
  static open(xd: Data, g: Geometry, chunk: number, patchLength: number, base: number): GatherStage | null {
    const mod = simdModule();
    try {
      return mod ? new GatherStage(g, mod, xd, base, patchLength, chunk) : null;
    } catch (e) {
      // A wasm32 memory stops at 4 GiB (or below, as the engine allows): a larger image keeps the JS gather, a copy less in memory.
      if (e instanceof RangeError) return null;
      throw e;
    }
  }

  /**
   * The patch rows of the `n` pixels `p0 ..` (see {@link movePatches}), a view of the stage valid
   * until the next gather. A run of windows along an output row (see {@link windowRun}) is one
   * group per window row (per tap, dilated): a row of a valid convolution is a handful of groups,
   * not a run per pixel and window row.
   */
  gather(p0: number, n: number): Data {
    const { H, W, Cin, kh, kw, rows, cols } = this.g;
    const { esz } = this;
    const K = kh * kw * Cin;
    const P = this.view(this.at.P, this.patchLength);
    const runs = this.table();
    const perTap = cols.step !== 1;
    let r = 0;
    let { b, oh, ow } = pixelAt(this.g, p0);
    for (let p = 0; p < n; ) {
      const j0 = cols.lo[ow];
      const j1 = cols.hi[ow];
      const { q, step } = windowRun(cols, ow, n - p);
      // Only windows that reach into the padding have taps left zero; full ones are overwritten whole.
      if (j0 !== 0 || j1 !== kw || rows.lo[oh] !== 0 || rows.hi[oh] !== kh) P.fill(0, p * K, (p + q) * K);
      const len = (perTap ? 1 : j1 - j0) * Cin * esz;
      for (let i = rows.lo[oh]; i < rows.hi[oh]; i++) {
        const xo = this.at.image + ((b * H + rows.start[oh] + i * rows.step) * W + cols.start[ow]) * Cin * esz;
        const po = this.at.P + (p * K + i * kw * Cin) * esz;
        for (let j = j0; j < (perTap ? j1 : j0 + 1); j++) {
          runs[r] = po + j * Cin * esz;
          runs[r + 1] = xo + j * cols.step * Cin * esz;
          runs[r + 2] = len;
          runs[r + 3] = q;
          runs[r + 4] = K * esz;
          runs[r + 5] = step * Cin * esz;
          r += 6;
        }
      }
      p += q;
      ow += q;
      if (ow === cols.out) {
        ow = 0;
        if (++oh === rows.out) {
          oh = 0;
          b++;
        }
      }
    }
    this.mod.copyruns(this.at.runs, r / 6);
    return P;
  }
}

/**
 * The transposed convolution's scatter (`movePatches('scatter')`) by the SIMD module: `dx` staged
 * in the module's memory, each chunk's `dP` written beside it by the GEMM (see {@link gemmWasm}'s
 * operands in the module's memory), and every window row (every tap, dilated) added onto the
 * image as one run (`addruns`), in the JS loop's order, so the same bits.
 */
class ScatterStage extends WindowStage {
  private constructor(g: Geometry, mod: GemmModule, private readonly dx: Data, base: number, chunk: number) {
    super(g, mod, dx, base, dx.length, chunk * g.kh * g.kw * g.Cin, chunk);
    this.view(this.at.image, dx.length).fill(0);
  }

  /** A stage from byte `base` for `dx` (zero on entry) over chunks of up to `chunk` pixels, or null where the module does not run. */
  static open(dx: Data, g: Geometry, chunk: number, base: number): ScatterStage | null {
    const mod = simdModule();
    return mod ? new ScatterStage(g, mod, dx, base, chunk) : null;
  }

  /** The chunk's patch rows `dP`, a view of the stage for the GEMM to write, valid until the memory grows. */
  rows(): Data {
    return this.view(this.at.P, this.patchLength);
  }

  /** Adds the `n` patch rows of `dP` (pixels `p0 ..`, written to {@link ScatterStage.rows}) onto their windows in the staged `dx`. */
  scatter(p0: number, n: number): void {
    const { H, W, Cin, kh, kw, rows, cols } = this.g;
    const { esz } = this;
    const K = kh * kw * Cin;
    const runs = this.table();
    const perTap = cols.step !== 1;
    let r = 0;
    const at = new PixelCursor(this.g, p0);
    for (let p = 0; p < n; p++, at.next()) {
      const { b, oh, ow } = at;
      const j0 = cols.lo[ow];
      const j1 = cols.hi[ow];
      const len = (perTap ? 1 : j1 - j0) * Cin;
      for (let i = rows.lo[oh]; i < rows.hi[oh]; i++) {
        const xo = this.at.image + ((b * H + rows.start[oh] + i * rows.step) * W + cols.start[ow]) * Cin * esz;
        const po = this.at.P + (p * K + i * kw * Cin) * esz;
        for (let j = j0; j < (perTap ? j1 : j0 + 1); j++) {
          runs[r++] = xo + j * cols.step * Cin * esz;
          runs[r++] = po + j * Cin * esz;
          runs[r++] = len;
        }
      }
    }
    (esz === 8 ? this.mod.addruns64 : this.mod.addruns32)(this.at.runs, r / 3);
  }

  /** Copies the staged `dx` back. */
  close(): void {
    this.dx.set(this.view(this.at.image, this.dx.length));
  }
}

/**
 * A float32 pass's `dW` sums in the SIMD module's memory: each chunk's float32 `dW` (the GEMM's
 * `C`, written where it lies) added into the float64 sum there by `colsum32` over one row, the
 * same float64 adds as the JS loop `dWacc[q] += dWc[q]`, without copying either in or out.
 */
class ChunkSums {
  private constructor(
    private readonly mod: GemmModule,
    private readonly length: number,
    /** Byte offsets of the float64 sum and of the chunk's float32 values. */
    private readonly at: { total: number; chunk: number },
  ) {}

  /** Sums of `length` values (a multiple of 4) from byte `base`, zero; null where the module does not run. */
  static open(length: number, base: number): ChunkSums | null {
    const mod = simdModule();
    if (!mod) return null;
    const total = pageAlign(base);
    const at = { total, chunk: total + length * 8 };
    staging(mod.memory, at.chunk + length * 4);
    new Float64Array(mod.memory.buffer, total, length).fill(0);
    return new ChunkSums(mod, length, at);
  }

  /** The chunk's values, for the GEMM to write (a view made anew: growing the memory detaches the old buffer). */
  chunk(): Float32Array {
    return new Float32Array(this.mod.memory.buffer, this.at.chunk, this.length);
  }

  /** Adds the chunk into the sum. */
  add(): void {
    this.mod.colsum32(this.at.chunk, 1, this.length, this.at.total);
  }

  /** The float64 sum, a view valid until the memory grows. */
  total(): Float64Array {
    return new Float64Array(this.mod.memory.buffer, this.at.total, this.length);
  }
}

/**
 * Adds one term of the dual-number rule to `d` (`[B, Ho, Wo, Cout, T]`): `conv(dx, W)` when
 * `wrt = 'input'` (`primal` the kernel, `tangent` dx `[B, H, W, Cin, T]`), `conv(x, dW)` when
 * `'kernel'` (`primal` the input, `tangent` dW `[kh, kw, Cin, Cout, T]`). Both walk every tap of
 * every window and skip the tangent's zero rows and the primal's zero values.
 */
function addTangentTerm(wrt: 'input' | 'kernel', g: Geometry, primal: Data, tangent: Data, T: number, d: Data, support?: Support): void {
  const { B, H, W, Cin, Cout, kh, kw, rows, cols } = g;
  const kStride = Cin * Cout;
  const byInput = wrt === 'input';
  const dh = rows.step;
  const dwCin = cols.step * Cin;
  // Jacobian seeds are basis directions: each tangent row is zero but for at most one t, so visiting only each row's nonzero span makes a block cost its T seeded columns, not T times the image.
  const span = support ?? tangentSupport(tangent, byInput ? B * H * W * Cin : kh * kw * kStride, T);
  for (let b = 0; b < B; b++) {
    for (let oh = 0; oh < rows.out; oh++) {
      const ih0 = rows.start[oh];
      for (let ow = 0; ow < cols.out; ow++) {
        const iw0 = cols.start[ow];
        const yo = ((b * rows.out + oh) * cols.out + ow) * Cout;
        for (let i = rows.lo[oh]; i < rows.hi[oh]; i++) {
          const xRow = ((b * H + ih0 + i * dh) * W + iw0) * Cin;
          const wRow = i * kw * kStride;
          for (let j = cols.lo[ow]; j < cols.hi[ow]; j++) {
            const xo = xRow + j * dwCin;
            const wo = wRow + j * kStride;
            for (let ci = 0; ci < Cin; ci++) {
              const wc = wo + ci * Cout;
              if (byInput) {
                const t0 = span.lo[xo + ci];
                const t1 = span.hi[xo + ci];
                if (t0 === t1) continue;
                const src = (xo + ci) * T;
                for (let co = 0; co < Cout; co++) {
                  const w = primal[wc + co];
                  if (w === 0) continue;
                  const dst = (yo + co) * T;
                  for (let t = t0; t < t1; t++) d[dst + t] += w * tangent[src + t];
                }
              } else {
                const xv = primal[xo + ci];
                if (xv === 0) continue;
                for (let co = 0; co < Cout; co++) {
                  const t0 = span.lo[wc + co];
                  const t1 = span.hi[wc + co];
                  if (t0 === t1) continue;
                  const src = (wc + co) * T;
                  const dst = (yo + co) * T;
                  for (let t = t0; t < t1; t++) d[dst + t] += xv * tangent[src + t];
                }
              }
            }
          }
        }
      }
    }
  }
}

/**
 * The nonzero span of each of `n` tangent rows of `T` values: row `r` is zero outside
 * `[lo[r], hi[r])` (`lo = hi = 0` for an all-zero row). Dense tangents cost one look at each end.
 */
/**
 * `conv(x, dW)` added to `d` (`[B, Ho, Wo, Cout, T]`) for a kernel tangent `dW`
 * (`[kh, kw, Cin, Cout, T]`). A Jacobian's basis seeds leave all but a few kernel rows zero: then
 * each nonzero row `(i, j, ci, co)` is walked over every window that reads its tap (the rows in
 * order, so each value gets its terms in the scalar walk's order: the same bits), at a cost of
 * the seeded rows rather than the whole kernel per window. A dense `dW` takes the scalar walk.
 */
function addKernelTangent(g: Geometry, x: Data, tangent: Data, T: number, d: Data): void {
  const { B, H, W, Cin, Cout, kh, kw, rows, cols } = g;
  const span = tangentSupport(tangent, kh * kw * Cin * Cout, T);
  const live: number[] = [];
  for (let r = 0; r < span.lo.length; r++) if (span.hi[r] > span.lo[r]) live.push(r);
  if (live.length * 8 > span.lo.length) {
    addTangentTerm('kernel', g, x, tangent, T, d, span);
    return;
  }
  const dh = rows.step;
  const dw = cols.step;
  for (const r of live) {
    const co = r % Cout;
    const ci = Math.floor(r / Cout) % Cin;
    const tap = Math.floor(r / (Cout * Cin));
    const i = Math.floor(tap / kw);
    const j = tap % kw;
    const t0 = span.lo[r];
    const t1 = span.hi[r];
    const src = r * T;
    for (let b = 0; b < B; b++) {
      for (let oh = 0; oh < rows.out; oh++) {
        if (i < rows.lo[oh] || i >= rows.hi[oh]) continue;
        const xRow = (b * H + rows.start[oh] + i * dh) * W;
        for (let ow = 0; ow < cols.out; ow++) {
          if (j < cols.lo[ow] || j >= cols.hi[ow]) continue;
          const xv = x[(xRow + cols.start[ow] + j * dw) * Cin + ci];
          if (xv === 0) continue;
          const dst = (((b * rows.out + oh) * cols.out + ow) * Cout + co) * T;
          for (let t = t0; t < t1; t++) d[dst + t] += xv * tangent[src + t];
        }
      }
    }
  }
}

/** Each tangent row's nonzero span `[lo, hi)` of its `T` values (`lo = hi = 0` for a zero row). */
interface Support {
  lo: Int32Array;
  hi: Int32Array;
}

/**
 * The input channels for {@link addInputTangentByGemm}, or null where the scalar walk is cheaper.
 * A channel none of whose rows has a nonzero tangent is left out of the product (a kernel seed
 * reaches the next convolution in one channel only). The rest go to the GEMM when their rows'
 * spans cover at least an eighth of their values: the scalar walk's cost follows the spans, the
 * GEMM's the whole block at several times the rate; basis seeds (a span of one per row) stay below.
 */
function gemmChannels({ lo, hi }: Support, Cin: number, T: number): Int32Array | null {
  const seen = new Uint8Array(Cin);
  let covered = 0;
  for (let r = 0; r < lo.length; r++) {
    const w = hi[r] - lo[r];
    if (w === 0) continue;
    covered += w;
    seen[r % Cin] = 1;
  }
  const live: number[] = [];
  for (let c = 0; c < Cin; c++) if (seen[c]) live.push(c);
  if (live.length === 0 || covered * 8 < (lo.length / Cin) * live.length * T) return null;
  return Int32Array.from(live);
}

/**
 * `conv(dx, W)` added to `d` (`[B, Ho, Wo, Cout, T]`) as one GEMM per chunk of pixels, for a dense
 * tangent `dx` (`[B, H, W, Cin, T]`, after the first layer of a Jacobian build) over its `live`
 * channels: the windows of every (pixel, tangent) pair gathered as rows of `P` (`[n·T, K]`, taps
 * in `(i, j, ci)` order, the padding zero), `C = P W` (`[n·T, Cout]`, `W`'s rows of the live
 * channels), then `C` added into `d` with `T` innermost. Each value is the scalar walk's sum over
 * the same taps in the same order from zero (the padding, zero values and dead channels it skips
 * add zeros), so float64 gives the walk's bits; float32 rounds once per sum.
 */
function addInputTangentByGemm(g: Geometry, Wk: Data, tangent: Data, T: number, d: Data, live: Int32Array): void {
  const { B, Cin, Cout, kh, kw, rows, cols } = g;
  const nC = live.length;
  const K = kh * kw * nC;
  const Wl = nC === Cin ? Wk : newLike(Wk, K * Cout);
  if (Wl !== Wk) {
    for (let tap = 0; tap < kh * kw; tap++) {
      for (let c = 0; c < nC; c++) Wl.set(Wk.subarray((tap * Cin + live[c]) * Cout, (tap * Cin + live[c] + 1) * Cout), (tap * nC + c) * Cout);
    }
  }
  const nPix = B * rows.out * cols.out;
  const chunk = Math.max(1, Math.floor(chunkPixels(K, d) / T));
  const P = newLike(d, chunk * T * K);
  const C = newLike(d, chunk * T * Cout);
  for (let p0 = 0; p0 < nPix; p0 += chunk) {
    const n = Math.min(chunk, nPix - p0);
    gatherTangentPatches(tangent, g, T, live, p0, n, P);
    gemm({ n: n * T, m: Cout, k: K, a: P, a0: 0, ai: K, at: 1, b: Wl, b0: 0, bt: Cout, bj: 1, c: C, c0: 0, ci: Cout }, false);
    for (let p = 0; p < n; p++) {
      const o = (p0 + p) * Cout * T;
      for (let t = 0; t < T; t++) {
        const r = (p * T + t) * Cout;
        for (let co = 0; co < Cout; co++) d[o + co * T + t] += C[r + co];
      }
    }
  }
}

/** The windows of output pixels `p0 .. p0 + n` of a tangent `[B, H, W, Cin, T]` over its `live` channels, one row of `P` per (pixel, tangent) pair, taps in the padding zero. */
function gatherTangentPatches(xd: Data, g: Geometry, T: number, live: Int32Array, p0: number, n: number, P: Data): void {
  const { H, W, Cin, kw, rows, cols } = g;
  const nC = live.length;
  const K = g.kh * kw * nC;
  const dh = rows.step;
  const dw = cols.step;
  P.fill(0, 0, n * T * K);
  const at = new PixelCursor(g, p0);
  for (let p = 0; p < n; p++, at.next()) {
    const { b, oh, ow } = at;
    const ih0 = rows.start[oh];
    const iw0 = cols.start[ow];
    for (let i = rows.lo[oh]; i < rows.hi[oh]; i++) {
      for (let j = cols.lo[ow]; j < cols.hi[ow]; j++) {
        const src = ((b * H + ih0 + i * dh) * W + iw0 + j * dw) * Cin * T;
        const tap = (i * kw + j) * nC;
        for (let t = 0; t < T; t++) {
          const dst = (p * T + t) * K + tap;
          for (let c = 0; c < nC; c++) P[dst + c] = xd[src + live[c] * T + t];
        }
      }
    }
  }
}

function tangentSupport(d: Data, n: number, T: number): Support {
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

/**
 * The convolution's own matrix at a pass, by rows over `(oh, ow, co)` per sample: w.r.t. the
 * input, the kernel column `W[·, co]` at the window's in-bounds taps; w.r.t. the kernel, the
 * window's inputs at `(tap, co)`; w.r.t. the bias, a 1 at `co`.
 */
function convMatrixLocal(g: Geometry, wrt: 'input' | 'kernel' | 'bias', Wk: Data, x: Data): LocalJacobian {
  const { H, W, Cin, Cout, kw, rows: rA, cols: cA } = g;
  const nOut = rA.out * cA.out * Cout;
  const nIn = H * W * Cin;
  const K = g.kh * kw * Cin;
  return {
    rows: nOut,
    cols: wrt === 'input' ? nIn : wrt === 'kernel' ? K * Cout : Cout,
    single: wrt === 'bias',
    maxRowNnz: wrt === 'bias' ? 1 : K,
    row(b, o, idx, coef) {
      const co = o % Cout;
      if (wrt === 'bias') {
        idx[0] = co;
        coef[0] = 1;
        return 1;
      }
      const pix = (o - co) / Cout;
      const ow = pix % cA.out;
      const oh = (pix - ow) / cA.out;
      const ih0 = rA.start[oh];
      const iw0 = cA.start[ow];
      let n = 0;
      for (let i = rA.lo[oh]; i < rA.hi[oh]; i++) {
        for (let j = cA.lo[ow]; j < cA.hi[ow]; j++) {
          const xo = ((ih0 + i * rA.step) * W + iw0 + j * cA.step) * Cin;
          const tap0 = (i * kw + j) * Cin;
          for (let ci = 0; ci < Cin; ci++) {
            const tap = tap0 + ci;
            const v = wrt === 'input' ? Wk[tap * Cout + co] : x[b * nIn + xo + ci];
            if (v === 0) continue;
            idx[n] = wrt === 'input' ? xo + ci : tap * Cout + co;
            coef[n++] = v;
          }
        }
      }
      return n;
    },
  };
}

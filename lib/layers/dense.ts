/**
 * Dense: `y = act(x W + b)` with a kernel `W` of shape `[in, out]` (Keras' layout) and a bias
 * `[out]`, on the last axis: `[B, ...lead, in]` → `[B, ...lead, out]`, as Keras.
 * @module
 */
import { type ActivationName, activationForward, activationJvp, activationName, activationNeeds, activationVjp, couplesRow } from '../activations.js';
import { ConfigError, fmtValue } from '../errors.js';
import { type AxisMap, type AxisStructure, KronPattern, SparsityPattern } from '../structure.js';
import { type Data, type Tensor, assertShape, contiguous, copy, dtypeOf, zeros } from '../tensor.js';
import { BASE_KEYS, type Cotangents, type Forward, Layer, fuseIntoLinear, type LayerPass, type LocalJacobian, type ParamFactorization, type PatchFactorShape, type Residuals, type Tangents, type Wrt, checkKeys } from './layer.js';
import { finishTangent, tangentBuffer } from './out.js';
import { elementwiseLocal } from './local.js';
import { gemm } from '../kernels/gemm.js';

/** Keras config of {@link Dense}. */
export interface DenseConfig {
  /** Output size (`out`). */
  units: number;
  /** Activation applied after the bias; default `'linear'`. */
  activation?: ActivationName | null;
  /** Add a bias `[out]`; default true. */
  use_bias?: boolean;
}

/** What Dense's forward pass saves for its derivatives: the input (for `dW = xᵀ dz`) and the output (for the activation rule). */
export interface DenseSaved {
  /** The input, `[B, ...lead, in]`, contiguous. */
  x: Tensor;
  /** The output after the activation, `[B, ...lead, out]`. */
  y: Tensor;
  /** The pre-activation, `[B, out]`, saved only for an activation whose rules read it (gelu, swish/silu, softsign); else null. */
  z?: Tensor | null;
}

/**
 * A fully connected layer on the last axis, as Keras: `[B, in]` → `[B, out]`, and on a higher rank
 * `[B, ...lead, in]` → `[B, ...lead, out]`, the leading axes one more batch (every `[in]` row
 * through the same kernel). Flatten first to mix an image's pixels.
 * @example
 * const dense = new Dense({ units: 4, activation: 'relu' }).build([8]);
 * const { y } = dense.forward(x); // x: [B, 8] → y: [B, 4]
 * const pointwise = new Dense({ units: 4 }).build([5, 5, 3]); // x: [B, 5, 5, 3] → y: [B, 5, 5, 4], a 1x1 convolution
 */
export class Dense extends Layer<DenseSaved> {
  readonly className = 'Dense';
  /** `vjp` returns `dx` in a new buffer of its own. */
  override readonly freshCotangent = true;
  /** Output size (`out`). */
  readonly units: number;
  /** Activation applied after the bias. */
  readonly activation: ActivationName;
  /** Whether the layer has a bias. */
  readonly useBias: boolean;

  constructor(config: DenseConfig, name?: string) {
    super(name, config);
    checkKeys(config as unknown as Record<string, unknown>, ['units', 'activation', 'use_bias', ...BASE_KEYS], 'Dense');
    if (!Number.isInteger(config.units) || config.units <= 0) {
      throw new ConfigError(`Dense: expected units to be a positive integer, received ${fmtValue(config.units)}`);
    }
    if (config.use_bias !== undefined && typeof config.use_bias !== 'boolean') {
      throw new ConfigError(`Dense: expected use_bias to be a boolean, received ${fmtValue(config.use_bias)}`);
    }
    this.units = config.units;
    this.activation = activationName(config.activation, 'Dense');
    this.useBias = config.use_bias ?? true;
    this.recordInitializers(config as unknown as Record<string, unknown>, ['kernel', 'bias']);
  }

  computeOutputShape(inputShape: readonly number[]): number[] {
    if (inputShape.length === 0) {
      throw new ConfigError(`${this.describe()}: expected a per-sample input of rank 1 or more ([...lead, in]), received [] (a scalar per sample)`);
    }
    return [...inputShape.slice(0, -1), this.units];
  }

  protected override paramShapes(inputShape: readonly number[]) {
    const nIn = inputShape[inputShape.length - 1];
    const shapes = [{ name: 'kernel', shape: [nIn, this.units], fanIn: nIn, fanOut: this.units }];
    if (this.useBias) shapes.push({ name: 'bias', shape: [this.units], fanIn: nIn, fanOut: this.units });
    return shapes;
  }

  getConfig(): Record<string, unknown> {
    return { units: this.units, activation: this.activation, use_bias: this.useBias, ...this.initializerConfig() };
  }

  /** Primal pass, `z = x W + b` over the `B · prod(lead)` rows of `[in]` by the shared {@link gemm}, then the activation in place (the bias and relu in the GEMM's epilogue). Saves `x` and `y` (and `z` where the activation's rules read it). */
  forward(x: Tensor): Forward<DenseSaved> {
    return this.multiply(x, this.activation);
  }

  /** {@link Dense.forward} and the activation layer after it in one pass, for a layer without an activation of its own: the same values as the two passes (see {@link fuseIntoLinear}). */
  override fusedForward(x: Tensor, activation: ActivationName): Forward<DenseSaved> | null {
    return fuseIntoLinear(this.activation, activation, (a) => this.multiply(x, a));
  }

  /** {@link Dense.forward} with `activation` in place of the layer's own; the bias and relu are applied in the GEMM's epilogue, other activations after. */
  private multiply(x: Tensor, activation: ActivationName): Forward<DenseSaved> {
    this.checkInput(x);
    const xc = contiguous(x);
    const { B, nIn } = rowsOf(xc);
    const nOut = this.units;
    const W = contiguous(this.params[0].value).data;
    const y = zeros([...xc.shape.slice(0, -1), nOut], dtypeOf(x));
    const yd = y.data;
    // The bias and relu in the GEMM's epilogue (a layer without a bias accumulates onto the zeros of `y`, as before there was one).
    const epilogue = { bias: this.useBias ? contiguous(this.params[1].value).data : undefined, relu: activation === 'relu' };
    gemm({ n: B, m: nOut, k: nIn, a: xc.data, a0: 0, ai: nIn, at: 1, b: W, b0: 0, bt: nOut, bj: 1, c: yd, c0: 0, ci: nOut }, !this.useBias, epilogue);
    const z = activationNeeds(activation) === 'z' ? copy(y) : null;
    if (!epilogue.relu) activationForward(activation, yd, yd, y.size, nOut);
    return { y, saved: { x: xc, y, z } };
  }

  /** Dual-number rule: `dy = act'(z) · (dx W + x dW + db)`, for a block of `T` tangents, row by row as forward. */
  jvp(saved: DenseSaved, { xDot, paramDots, T, rows, pool }: Tangents, out?: Tensor): Tensor {
    const { x, y } = saved;
    const { B, nIn, lead } = rowsOf(x);
    const nOut = this.units;
    // A pooled (zero, contiguous) `out` is accumulated in directly; any other is copied into at the end.
    const zDot = tangentBuffer(out, [...x.shape.slice(0, -1), nOut, T], dtypeOf(x), pool);
    const d = zDot.data;
    if (xDot) {
      assertShape(xDot, [...x.shape, T], `${this.describe()} jvp xDot`);
      const W = contiguous(this.params[0].value).data;
      const dxd = contiguous(xDot).data;
      // The hint is per sample, over its flat `[...lead, in]`: only entries [r0, r1) of each sample contribute.
      const perSample = lead * nIn;
      const r0 = rows ? Math.max(0, rows.lo) : 0;
      const r1 = rows ? Math.min(perSample, rows.hi) : perSample;
      for (let s = 0; s < B / lead; s++) {
        for (let r = r0; r < r1; r++) {
          const l = Math.floor(r / nIn);
          const i = r - l * nIn;
          const src = (s * perSample + r) * T;
          const yRow = (s * lead + l) * nOut;
          for (let o = 0; o < nOut; o++) {
            const w = W[i * nOut + o];
            if (w === 0) continue;
            const dst = (yRow + o) * T;
            for (let t = 0; t < T; t++) d[dst + t] += w * dxd[src + t];
          }
        }
      }
    }
    const kernelDot = paramDots?.[0];
    if (kernelDot) {
      assertShape(kernelDot, [nIn, nOut, T], `${this.describe()} jvp kernelDot`);
      const dWd = contiguous(kernelDot).data;
      const xd = x.data;
      // Flat kernel rows r = i·out + o outside the hint are zero; a Jacobian block then costs B·T·T, not B·in·out·T.
      const r0 = rows ? Math.max(0, rows.lo) : 0;
      const r1 = rows ? Math.min(nIn * nOut, rows.hi) : nIn * nOut;
      for (let b = 0; b < B; b++) {
        for (let r = r0; r < r1; r++) {
          const i = Math.floor(r / nOut);
          const xi = xd[b * nIn + i];
          if (xi === 0) continue;
          const src = r * T;
          const dst = (b * nOut + (r - i * nOut)) * T;
          for (let t = 0; t < T; t++) d[dst + t] += xi * dWd[src + t];
        }
      }
    }
    const biasDot = this.useBias ? paramDots?.[1] : null;
    if (biasDot) {
      const biasDotData = contiguous(biasDot).data;
      for (let b = 0; b < B; b++) for (let k = 0; k < nOut * T; k++) d[b * nOut * T + k] += biasDotData[k];
    }
    activationJvp(this.activation, saved.z?.data ?? null, y.data, d, B * nOut, T, nOut);
    return finishTangent(out, zDot, pool);
  }

  /**
   * VJP rule: `dz = act'ᵀ dy` (for `'linear'`, `dy` itself, read only), then `dx = dz Wᵀ`,
   * `dW = xᵀ dz`, `db = Σ dz`, the sums over every row (batch and leading axes); both products by
   * the shared {@link gemm}.
   */
  vjp(saved: DenseSaved, dy: Tensor): Cotangents {
    const { dx, dParams } = this.pullBack(saved, dy, true);
    return { dx: dx!, dParams };
  }

  /** {@link Dense.vjp} without the input cotangent: `dW` and `db` only. */
  override vjpParams(saved: DenseSaved, dy: Tensor): Tensor[] {
    return this.pullBack(saved, dy, false).dParams;
  }

  /** The VJP's work; the input cotangent only when `withInput`. */
  private pullBack(saved: DenseSaved, dy: Tensor, withInput: boolean): { dx: Tensor | null; dParams: Tensor[] } {
    const { x, y } = saved;
    const { B, nIn } = rowsOf(x);
    const nOut = this.units;
    this.checkCotangent(dy, x.shape[0]);
    const dyd = contiguous(dy).data;
    let dz = dyd;
    if (this.activation !== 'linear') {
      dz = new (y.data.constructor as Float64ArrayConstructor)(B * nOut);
      activationVjp(this.activation, saved.z?.data ?? null, y.data, dyd, dz, B * nOut, nOut);
    }
    const W = contiguous(this.params[0].value).data;
    let dx: Tensor | null = null;
    if (withInput) {
      dx = zeros(x.shape, dtypeOf(x));
      gemm({ n: B, m: nIn, k: nOut, a: dz, a0: 0, ai: nOut, at: 1, b: W, b0: 0, bt: 1, bj: nOut, c: dx.data, c0: 0, ci: nIn }, false);
    }
    const dW = zeros([nIn, nOut], dtypeOf(x));
    gemm({ n: nIn, m: nOut, k: B, a: x.data, a0: 0, ai: 1, at: nIn, b: dz, b0: 0, bt: nOut, bj: 1, c: dW.data, c0: 0, ci: nOut }, false);
    const dParams = [dW];
    if (this.useBias) {
      const db = zeros([nOut], dtypeOf(x));
      for (let b = 0; b < B; b++) for (let o = 0; o < nOut; o++) db.data[o] += dz[b * nOut + o];
      dParams.push(db);
    }
    return { dx, dParams };
  }

  // Structure hooks: what the sparse engines and the memory estimate know of a dense layer.

  /** Each output row `[...lead]` depends on every input of the same row and on no other: identity on the leading axes, full on the last. */
  inputStructure(): AxisStructure {
    const lead = this.inputShape.slice(0, -1);
    return { inDims: this.inputShape.slice(), maps: [...lead.map((): AxisMap => ({ kind: 'identity' })), { kind: 'full', rows: this.units }] };
  }

  /** Output `(...lead, o)` depends on kernel column `o` and bias `o` at every leading position; a row-coupling activation spreads both over the units. */
  paramStructure(k: number): KronPattern {
    const u = this.units;
    const chan = couplesRow(this.activation) ? SparsityPattern.full(u, u) : SparsityPattern.identity(u);
    const lead = this.inputShape.slice(0, -1).map((n) => SparsityPattern.full(n, 1));
    return k === 0 ? new KronPattern([...lead, SparsityPattern.full(1, this.inputShape[this.inputShape.length - 1]), chan]) : new KronPattern([...lead, chan]);
  }

  /** Forward saves its input and its output, and the pre-activation for an activation whose rules read it (see {@link DenseSaved}). */
  residuals(): Residuals {
    return { saves: activationNeeds(this.activation) === 'z' ? ['x', 'y', { what: 'z', perSample: this.outputShape.slice(), dtype: this.dtype }] : ['x', 'y'] };
  }

  /**
   * Rows are full over the last axis: `in` colours for the input (leading positions never share a
   * row) and the kernel (units never share a row), 1 for the bias; times `units` under a
   * row-coupling activation.
   */
  colourCount(wrt: Wrt): number {
    const coupled = wrt !== 'input' && couplesRow(this.activation) ? this.units : 1;
    return (wrt === 1 ? 1 : this.inputShape[this.inputShape.length - 1]) * coupled;
  }

  /** The local Jacobian at a recorded pass: the layer's own matrix (`Wᵀ`'s row, `x`, or a 1), then the activation's, read off its dual-number rule. */
  localJacobian(pass: LayerPass, wrt: Wrt): LocalJacobian[] {
    const { x, y, z } = pass.saved as DenseSaved;
    const { B, nIn, lead } = rowsOf(x);
    const linear = denseMatrixLocal(nIn, this.units, lead, wrt === 'input' ? 'input' : wrt === 0 ? 'kernel' : 'bias', contiguous(this.params[0].value).data, x.data);
    if (this.activation === 'linear') return [linear];
    // Built over the B · lead rows as samples of `units`, then regrouped into the layer's samples of `lead · units`.
    const act = elementwiseLocal(B, this.units, couplesRow(this.activation) ? this.units : 1, (dz, count, T) => activationJvp(this.activation, z?.data ?? null, y.data, dz, count, T, this.units));
    return [linear, lead === 1 ? act : regroupRows(act, lead)];
  }

  /** The shape of {@link Dense.paramFactor}'s factor: the leading positions of `units` units, patches of `in` (the kernel) or ones (the bias). */
  paramFactorShape(k: number): PatchFactorShape {
    const lead = this.inputShape.slice(0, -1).reduce((a, b) => a * b, 1);
    return { positions: lead, units: this.units, width: k === 0 ? this.inputShape[this.inputShape.length - 1] : 1, stored: k === 0, spread: couplesRow(this.activation) ? this.units : 1 };
  }

  /** `∂z/∂kernel` at a recorded pass as `x ⊗ I` (patches: the input rows, copied), `∂z/∂bias` as ones; then the activation's factor, as in {@link Dense.localJacobian}. */
  paramFactor(pass: LayerPass, k: number): ParamFactorization {
    const x = contiguous((pass.saved as DenseSaved).x);
    const { nIn, lead } = rowsOf(x);
    const then = this.localJacobian(pass, k).slice(1);
    return { factor: { positions: lead, units: this.units, width: k === 0 ? nIn : 1, patches: k === 0 ? x.data.slice(x.offset, x.offset + x.size) : null }, then };
  }
}

/**
 * The rows of `[B, ...lead, in]`, contiguous: `B` here counts them (the batch times `lead`, the
 * product of the leading axes), each one `[in]` vector through the kernel.
 */
function rowsOf(x: Tensor): { B: number; nIn: number; lead: number } {
  const nIn = x.shape[x.shape.length - 1];
  let lead = 1;
  for (let a = 1; a < x.shape.length - 1; a++) lead *= x.shape[a];
  return { B: x.shape[0] * lead, nIn, lead };
}

/** A local Jacobian over `B · lead` samples of `n` rows, as one over `B` samples of `lead · n` rows (block-diagonal over the leading positions). */
function regroupRows(L: LocalJacobian, lead: number): LocalJacobian {
  const n = L.rows;
  return {
    rows: lead * n,
    cols: lead * L.cols,
    single: L.single,
    maxRowNnz: L.maxRowNnz,
    row(b, o, idx, coef) {
      const l = Math.floor(o / n);
      const count = L.row(b * lead + l, o - l * n, idx, coef);
      for (let k = 0; k < count; k++) idx[k] += l * L.cols;
      return count;
    },
  };
}

/**
 * A dense layer's own matrix at a pass, by rows over `(l, o)` (`lead` leading positions, `u`
 * units) per sample: `W[·, o]` at row `l`'s inputs w.r.t. the input, row `l` of `x` at `(i, o)`
 * w.r.t. the kernel, a 1 at `o` w.r.t. the bias.
 */
function denseMatrixLocal(nIn: number, u: number, lead: number, wrt: 'input' | 'kernel' | 'bias', Wk: Data, x: Data): LocalJacobian {
  return {
    rows: lead * u,
    cols: wrt === 'input' ? lead * nIn : wrt === 'kernel' ? nIn * u : u,
    single: wrt === 'bias',
    maxRowNnz: wrt === 'bias' ? 1 : nIn,
    row(b, r, idx, coef) {
      const l = Math.floor(r / u);
      const o = r - l * u;
      if (wrt === 'bias') {
        idx[0] = o;
        coef[0] = 1;
        return 1;
      }
      const xRow = (b * lead + l) * nIn;
      let n = 0;
      for (let i = 0; i < nIn; i++) {
        const v = wrt === 'input' ? Wk[i * u + o] : x[xRow + i];
        if (v === 0) continue;
        idx[n] = wrt === 'input' ? l * nIn + i : i * u + o;
        coef[n++] = v;
      }
      return n;
    },
  };
}

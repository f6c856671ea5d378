/**
 * Dense: `y = act(x W + b)` with a kernel `W` of shape `[in, out]` (Keras' layout) and a bias `[out]`.
 * @module
 */
import { type ActivationName, activationForward, activationJvp, activationName, activationNeeds, activationVjp, couplesRow } from '../activations.js';
import { ConfigError, fmtValue } from '../errors.js';
import { type AxisStructure, KronPattern, SparsityPattern } from '../structure.js';
import { type Data, type Tensor, assertShape, contiguous, copy, dtypeOf, zeros } from '../tensor.js';
import { BASE_KEYS, type Cotangents, type Forward, Layer, type LayerPass, type LocalJacobian, type Residuals, type Tangents, type Wrt, checkKeys } from './layer.js';
import { elementwiseLocal } from './local.js';

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
  /** The input, `[B, in]`, contiguous. */
  x: Tensor;
  /** The output after the activation, `[B, out]`. */
  y: Tensor;
  /** The pre-activation, `[B, out]`, saved only for an activation whose rules read it (gelu, swish/silu, softsign); else null. */
  z?: Tensor | null;
}

/**
 * A fully connected layer on `[B, in]` inputs (Flatten first for images).
 * @example
 * const dense = new Dense({ units: 4, activation: 'relu' }).build([8]);
 * const { y } = dense.forward(x); // x: [B, 8] → y: [B, 4]
 */
export class Dense extends Layer<DenseSaved> {
  readonly className = 'Dense';
  /** Output size (`out`). */
  readonly units: number;
  /** Activation applied after the bias. */
  readonly activation: ActivationName;
  /** Whether the layer has a bias. */
  readonly useBias: boolean;

  constructor(config: DenseConfig, name?: string) {
    super(name);
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
    if (inputShape.length !== 1) {
      throw new ConfigError(`${this.describe()}: expected a per-sample input of rank 1 ([in]; put a Flatten before it), received [${inputShape.join(', ')}]`);
    }
    return [this.units];
  }

  protected override paramShapes(inputShape: readonly number[]) {
    const nIn = inputShape[0];
    const shapes = [{ name: 'kernel', shape: [nIn, this.units], fanIn: nIn, fanOut: this.units }];
    if (this.useBias) shapes.push({ name: 'bias', shape: [this.units], fanIn: nIn, fanOut: this.units });
    return shapes;
  }

  getConfig(): Record<string, unknown> {
    return { units: this.units, activation: this.activation, use_bias: this.useBias, ...this.initializerConfig() };
  }

  /** Primal pass. Saves `x` and `y`. */
  forward(x: Tensor): Forward<DenseSaved> {
    this.checkInput(x);
    const xc = contiguous(x);
    const [B, nIn] = xc.shape;
    const nOut = this.units;
    const W = contiguous(this.params[0].value).data;
    const y = zeros([B, nOut], dtypeOf(x));
    const yd = y.data;
    const xd = xc.data;
    for (let b = 0; b < B; b++) {
      const yo = b * nOut;
      if (this.useBias) yd.set(contiguous(this.params[1].value).data, yo);
      for (let i = 0; i < nIn; i++) {
        const xi = xd[b * nIn + i];
        if (xi === 0) continue;
        const wo = i * nOut;
        for (let o = 0; o < nOut; o++) yd[yo + o] += xi * W[wo + o];
      }
    }
    const z = activationNeeds(this.activation) === 'z' ? copy(y) : null;
    activationForward(this.activation, yd, yd, y.size, nOut);
    return { y, saved: { x: xc, y, z } };
  }

  /** Dual-number rule: `dy = act'(z) · (dx W + x dW + db)`, for a block of `T` tangents. */
  jvp(saved: DenseSaved, { dx, dParams, T, rows }: Tangents): Tensor {
    const { x, y } = saved;
    const [B, nIn] = x.shape;
    const nOut = this.units;
    const dz = zeros([B, nOut, T], dtypeOf(x));
    const d = dz.data;
    if (dx) {
      assertShape(dx, [B, nIn, T], `${this.describe()} jvp dx`);
      const W = contiguous(this.params[0].value).data;
      const dxd = contiguous(dx).data;
      // Rows of dx outside the caller's hint are zero: only inputs [i0, i1) contribute.
      const i0 = rows ? Math.max(0, rows.lo) : 0;
      const i1 = rows ? Math.min(nIn, rows.hi) : nIn;
      for (let b = 0; b < B; b++) {
        for (let i = i0; i < i1; i++) {
          const src = (b * nIn + i) * T;
          for (let o = 0; o < nOut; o++) {
            const w = W[i * nOut + o];
            if (w === 0) continue;
            const dst = (b * nOut + o) * T;
            for (let t = 0; t < T; t++) d[dst + t] += w * dxd[src + t];
          }
        }
      }
    }
    const dW = dParams?.[0];
    if (dW) {
      const dWd = contiguous(dW).data;
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
    const db = this.useBias ? dParams?.[1] : null;
    if (db) {
      const dbd = contiguous(db).data;
      for (let b = 0; b < B; b++) for (let k = 0; k < nOut * T; k++) d[b * nOut * T + k] += dbd[k];
    }
    activationJvp(this.activation, saved.z?.data ?? null, y.data, d, B * nOut, T, nOut);
    return dz;
  }

  /** VJP rule: `dz = act'ᵀ dy`, then `dx = dz Wᵀ`, `dW = xᵀ dz`, `db = Σ_b dz`. */
  vjp(saved: DenseSaved, dy: Tensor): Cotangents {
    const { x, y } = saved;
    const [B, nIn] = x.shape;
    const nOut = this.units;
    this.checkCotangent(dy, B);
    const dz = new (y.data.constructor as Float64ArrayConstructor)(B * nOut);
    activationVjp(this.activation, saved.z?.data ?? null, y.data, contiguous(dy).data, dz, B * nOut, nOut);
    const W = contiguous(this.params[0].value).data;
    const dx = zeros([B, nIn], dtypeOf(x));
    const dW = zeros([nIn, nOut], dtypeOf(x));
    const xd = x.data;
    for (let b = 0; b < B; b++) {
      for (let i = 0; i < nIn; i++) {
        let s = 0;
        const xi = xd[b * nIn + i];
        for (let o = 0; o < nOut; o++) {
          const g = dz[b * nOut + o];
          s += g * W[i * nOut + o];
          dW.data[i * nOut + o] += xi * g;
        }
        dx.data[b * nIn + i] = s;
      }
    }
    const dParams = [dW];
    if (this.useBias) {
      const db = zeros([nOut], dtypeOf(x));
      for (let b = 0; b < B; b++) for (let o = 0; o < nOut; o++) db.data[o] += dz[b * nOut + o];
      dParams.push(db);
    }
    return { dx, dParams };
  }

  // Structure hooks: what the sparse engines and the memory estimate know of a dense layer.

  /** Every output depends on every input. */
  inputStructure(): AxisStructure {
    return { inDims: this.inputShape.slice(), maps: [{ kind: 'full', rows: this.units }] };
  }

  /** Output `o` depends on kernel column `o` and bias `o`; a row-coupling activation spreads both over the units. */
  paramStructure(k: number): KronPattern {
    const u = this.units;
    const chan = couplesRow(this.activation) ? SparsityPattern.full(u, u) : SparsityPattern.identity(u);
    return k === 0 ? new KronPattern([SparsityPattern.full(1, this.inputShape[0]), chan]) : new KronPattern([chan]);
  }

  /** Forward saves its input and its output, and the pre-activation for an activation whose rules read it (see {@link DenseSaved}). */
  residuals(): Residuals {
    return { saves: activationNeeds(this.activation) === 'z' ? ['x', 'y', { what: 'z', perSample: this.outputShape.slice(), dtype: this.dtype }] : ['x', 'y'] };
  }

  /** Rows are full: `in` colours for the input and the kernel (units never share a row), 1 for the bias; times `units` under a row-coupling activation. */
  colourCount(wrt: Wrt): number {
    const coupled = wrt !== 'input' && couplesRow(this.activation) ? this.units : 1;
    return (wrt === 1 ? 1 : this.inputShape[0]) * coupled;
  }

  /** The local Jacobian at a recorded pass: the layer's own matrix (`Wᵀ`'s row, `x`, or a 1), then the activation's, read off its dual-number rule. */
  localJacobian(pass: LayerPass, wrt: Wrt): LocalJacobian[] {
    const { x, y, z } = pass.saved as DenseSaved;
    const B = x.shape[0];
    const linear = denseMatrixLocal(this.inputShape[0], this.units, wrt === 'input' ? 'input' : wrt === 0 ? 'kernel' : 'bias', contiguous(this.params[0].value).data, x.data);
    if (this.activation === 'linear') return [linear];
    const act = elementwiseLocal(B, this.units, couplesRow(this.activation) ? this.units : 1, (dz, count, T) => activationJvp(this.activation, z?.data ?? null, y.data, dz, count, T, this.units));
    return [linear, act];
  }
}

/** A dense layer's own matrix at a pass, by rows over the `u` units: `W[·, o]` w.r.t. the input, `x` at `(i, o)` w.r.t. the kernel, a 1 at `o` w.r.t. the bias. */
function denseMatrixLocal(nIn: number, u: number, wrt: 'input' | 'kernel' | 'bias', Wk: Data, x: Data): LocalJacobian {
  return {
    rows: u,
    cols: wrt === 'input' ? nIn : wrt === 'kernel' ? nIn * u : u,
    single: wrt === 'bias',
    maxRowNnz: wrt === 'bias' ? 1 : nIn,
    row(b, o, idx, coef) {
      if (wrt === 'bias') {
        idx[0] = o;
        coef[0] = 1;
        return 1;
      }
      let n = 0;
      for (let i = 0; i < nIn; i++) {
        const v = wrt === 'input' ? Wk[i * u + o] : x[b * nIn + i];
        if (v === 0) continue;
        idx[n] = wrt === 'input' ? i : i * u + o;
        coef[n++] = v;
      }
      return n;
    },
  };
}

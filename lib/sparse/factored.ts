/**
 * Factored weight Jacobians: a stage's Jacobian w.r.t. a weight `θ` of one of its layers, stored as
 * the product of two exact factors, `J = A · (P ⊗ I)`:
 * - `A = ∂out/∂z`, the stage's Jacobian w.r.t. the layer's linear output `z`, per-sample CSR
 *   (built by sparse propagation from `z` through the layer's activation and the later layers);
 * - `∂z/∂θ = P ⊗ I`, the layer's own Jacobian w.r.t. `θ` in the form it declares through its
 *   `paramFactor` hook ({@link PatchFactor}): Conv2D's im2col patches, Dense's input rows, ones for a
 *   bias, each shared by every output unit.
 *
 * Why: the CSR form of `J` stores every product out: a patch once per output unit (`cout` copies)
 * and a 4-byte column index per entry. For conv2d_1's kernel in the cats-vs-dogs CNN at 64², B = 8,
 * that is about 0.75 GiB; the factors hold a few tens of MiB, and the kernel and bias of one
 * layer share `A`. The contraction with an upstream gradient is then one sparse pass (`gᵀ A`, which
 * is dLoss/dz) and one GEMM (`Pᵀ · dLoss/dz`), the VJP's own product.
 * @module
 */
import { ConfigError, ShapeError, fmtShape } from '../errors.js';
import type { Jacobian } from '../dense-jacobian.js';
import type { Differentiable, PatchFactor } from '../layers/layer.js';
import { gemm } from '../kernels/gemm.js';
import { getMemoryBudget, guardBytes } from '../memory.js';
import { type DType, type Data, type Tensor, allocData, assertShape, bytesPerElement, contiguous, dtypeOf, sizeOf, zeros } from '../tensor.js';
import { CsrMatrix, type JacobianPlan, SparseJacobian } from './csr.js';
import { stageKron } from './pattern.js';

/** Bytes of a patch factor's stored values (none for ones). */
export function patchFactorBytes(f: PatchFactor, dtype: DType): number {
  return f.patches ? f.patches.length * bytesPerElement(dtype) : 0;
}

/**
 * The structural bound, from shapes alone, of the factored Jacobian of a stage (`layers`, first to
 * last) w.r.t. parameter `param` of layer `layer`, at batch `B`: `left`, the bytes of `A`'s CSR (each
 * entry of `z` spread by the layer's activation, then through the later layers' structural pattern;
 * exact when no value is zero; one `A` serves all the layer's parameters), and `factor`, the
 * patches' bytes (exact). Null when the layer states no factor for it.
 * @example
 * factoredBytesBound(leavesOf(model_0), { layer: 3, param: 0 }, 8, 'float64'); // conv2d_1.kernel: { left, factor }
 */
export function factoredBytesBound(layers: readonly Differentiable[], owner: {
  /** Index of the layer in `layers`. */
  layer: number;
  /** Index of the parameter in its `params`. */
  param: number
}, B: number, dtype: DType): {
  /** Bytes of `A`, at most. */
  left: number;
  /** Bytes of the patches. */
  factor: number
} | null {
  const shape = layers[owner.layer].paramFactorShape?.(owner.param) ?? null;
  if (!shape) return null;
  const bpe = bytesPerElement(dtype);
  const rows = sizeOf(layers[layers.length - 1].outputShape);
  const nz = shape.positions * shape.units;
  let tail = nz;
  try {
    if (owner.layer + 1 < layers.length) tail = stageKron(layers.slice(owner.layer + 1)).nnz;
  } catch (e) {
    // Later layers whose patterns do not line up: every row may hold every entry of z.
    if (!(e instanceof ConfigError)) throw e;
    tail = rows * nz;
  }
  return { left: B * (4 * (rows + 1) + Math.min(rows * nz, tail * shape.spread) * (4 + bpe)), factor: shape.stored ? B * shape.positions * shape.width * bpe : 0 };
}

/**
 * A batch Jacobian w.r.t. a parameter, `[B, ...out, ...param]`, stored as `A · (P ⊗ I)` (see the
 * module). It has the meaning of the dense Jacobian and converts to it ({@link FactoredJacobian.toDense})
 * or to CSR ({@link FactoredJacobian.toSparse}); the chain helpers contract it through
 * {@link FactoredJacobian.vjp} without expanding it.
 * @example
 * const [dKernel] = jacobianWrtWeights(stage, x, { format: 'factored' }); // a FactoredJacobian for a Conv2D kernel
 * dKernel.bytes;                                                        // A's CSR plus the patches (its bias shares A)
 * upstreamGradientLossWeights(dKernel, dLoss_dOut);                    // [kh, kw, cin, cout], never expanded
 */
export class FactoredJacobian implements Jacobian {
  readonly format = 'factored' as const;
  /** The build's plan, when a builder made it. */
  plan: JacobianPlan | null = null;

  constructor(
    /** `A` per sample: `|out| × (positions · units)` CSR over the layer's linear output `z`. */
    readonly left: readonly CsrMatrix[],
    /** `∂z/∂θ` as patches ⊗ identity. */
    readonly factor: PatchFactor,
    readonly outShape: readonly number[],
    /** The parameter's shape (the columns). */
    readonly inShape: readonly number[],
    /** Element type of the stored values. */
    readonly dtype: DType = 'float64',
    /** What it differentiates, for reports: `w.r.t. kernel (factored)`. */
    readonly label = '',
    /** `left` is an earlier Jacobian's (its layer's other parameter): counted there, not in {@link FactoredJacobian.bytes}. */
    readonly sharesLeft = false,
  ) {
    const { positions, units, width, patches } = factor;
    const rows = sizeOf(outShape);
    if (width * units !== sizeOf(inShape)) {
      throw new ShapeError(`FactoredJacobian ${label}: expected a parameter of width · units = ${width} · ${units} = ${width * units} entries, received shape ${fmtShape(inShape)} (${sizeOf(inShape)})`);
    }
    left.forEach((m, b) => {
      if (m.rows !== rows || m.cols !== positions * units) {
        throw new ShapeError(`FactoredJacobian ${label}: expected sample ${b}'s left factor to be ${rows} × ${positions * units} (outputs × positions · units), received ${m.rows} × ${m.cols}`);
      }
    });
    if (patches && patches.length !== left.length * positions * width) {
      throw new ShapeError(`FactoredJacobian ${label}: expected patches of B · positions · width = ${left.length} · ${positions} · ${width} values, received ${patches.length}`);
    }
  }

  get batch(): number {
    return this.left.length;
  }

  /** `[B, ...out, ...param]`, as the dense Jacobian's. */
  get shape(): readonly number[] {
    return [this.left.length, ...this.outShape, ...this.inShape];
  }

  /**
   * Bytes it holds: the patches, and `A`'s CSR (row offsets, column indices, values) unless `A` is
   * shared with an earlier Jacobian ({@link FactoredJacobian.sharedBytes}), so that the bytes of the
   * Jacobians of a stage add up to what they hold together.
   */
  get bytes(): number {
    return patchFactorBytes(this.factor, this.dtype) + (this.sharesLeft ? 0 : this.leftBytes);
  }

  /** Bytes of `A` when it is an earlier Jacobian's (counted there), else 0. */
  get sharedBytes(): number {
    return this.sharesLeft ? this.leftBytes : 0;
  }

  private get leftBytes(): number {
    let n = 0;
    for (const m of this.left) n += m.bytes;
    return n;
  }

  /** Bytes the dense form would take. */
  get denseBytes(): number {
    return sizeOf(this.shape) * bytesPerElement(this.dtype);
  }

  /** The entry `∂out[b, r] / ∂θ[c]` with flat `r` and `c`: `Σ_p A[b, r, (p, u)] · P[b, p, q]` for `c = (q, u)`. */
  get(b: number, r: number, c: number): number {
    const { units, width, positions, patches } = this.factor;
    const u = c % units;
    const q = (c - u) / units;
    const m = this.left[b];
    let v = 0;
    for (let k = m.rowPtr[r]; k < m.rowPtr[r + 1]; k++) {
      const z = m.colIdx[k];
      if (z % units !== u) continue;
      const p = (z - u) / units;
      v += m.values[k] * (patches ? patches[(b * positions + p) * width + q] : 1);
    }
    return v;
  }

  /** Writes sample `b`'s row `r` of the product into `out` (the parameter's entries from `off`, zero on entry): the left row's entries in order, each times its patch. */
  private rowInto(b: number, r: number, out: Float64Array | Data, off: number): void {
    const { units, width, positions, patches } = this.factor;
    const m = this.left[b];
    for (let k = m.rowPtr[r]; k < m.rowPtr[r + 1]; k++) {
      const z = m.colIdx[k];
      const u = z % units;
      const a = m.values[k];
      if (!patches) {
        out[off + u] += a;
        continue;
      }
      const p0 = (b * positions + (z - u) / units) * width;
      for (let q = 0; q < width; q++) out[off + q * units + u] += a * patches[p0 + q];
    }
  }

  /**
   * The dense `[B, ...out, ...param]` tensor, each row the product of `A`'s row and the patches
   * (summed in `A`'s entry order, as {@link FactoredJacobian.toSparse}); refused before allocating
   * when over the memory budget.
   */
  toDense(opts: { memoryBudget?: number } = {}): Tensor {
    const shape = this.shape as number[];
    guardBytes(`dense form of a factored Jacobian ${fmtShape(shape)}`, this.denseBytes, opts.memoryBudget ?? getMemoryBudget(), 'keep it factored: the chain helpers contract a FactoredJacobian directly');
    const out = zeros(shape, this.dtype);
    const rows = sizeOf(this.outShape);
    const cols = sizeOf(this.inShape);
    for (let b = 0; b < this.batch; b++) for (let r = 0; r < rows; r++) this.rowInto(b, r, out.data, (b * rows + r) * cols);
    return out;
  }

  /**
   * The same Jacobian as per-sample CSR (a {@link SparseJacobian}, exact zeros dropped, columns in
   * order), for what reads CSR; refused before allocating when the structural bound of its entries
   * (each left entry fanning out to `width` columns) is over the memory budget.
   */
  toSparse(opts: { memoryBudget?: number } = {}): SparseJacobian {
    const cols = sizeOf(this.inShape);
    const rows = sizeOf(this.outShape);
    let bound = 0;
    for (const m of this.left) bound += Math.min(m.nnz * this.factor.width, rows * cols);
    guardBytes(`CSR form of a factored Jacobian ${fmtShape(this.shape)} (structural bound)`, bound * (4 + bytesPerElement(this.dtype)), opts.memoryBudget ?? getMemoryBudget(), 'keep it factored: the chain helpers contract a FactoredJacobian directly');
    const acc = new Float64Array(cols);
    const samples = this.left.map((m, b) => {
      const rowPtr = new Int32Array(rows + 1);
      // Grown by doubling from a row's worth: the bound can be far above what the values leave.
      let colIdx = new Int32Array(Math.max(16, cols));
      let values = new Float64Array(colIdx.length);
      let n = 0;
      for (let r = 0; r < rows; r++) {
        this.rowInto(b, r, acc, 0);
        if (n + cols > colIdx.length) {
          const c2 = new Int32Array(2 * colIdx.length + cols);
          c2.set(colIdx.subarray(0, n));
          const v2 = new Float64Array(c2.length);
          v2.set(values.subarray(0, n));
          colIdx = c2;
          values = v2;
        }
        for (let c = 0; c < cols; c++) {
          if (acc[c] === 0) continue;
          colIdx[n] = c;
          values[n++] = acc[c];
          acc[c] = 0;
        }
        rowPtr[r + 1] = n;
      }
      const v = allocData(n, this.dtype);
      v.set(values.subarray(0, n));
      return new CsrMatrix(m.rows, cols, rowPtr, colIdx.slice(0, n), v);
    });
    return new SparseJacobian(samples, this.outShape, this.inShape, 'param', this.dtype, this.label);
  }

  /**
   * `Σ_{b, out} g[b, out] · J[b, out, …param]` → `[...param]` (with `sumBatch`, the seed's
   * `upstream_gradient_loss_weights`), or per sample → `[B, ...param]`: first `gᵀ A` per sample
   * (dLoss/dz, `[B, positions, units]`), then `Pᵀ · dLoss/dz` by the shared {@link gemm}, summed in
   * float64. Nothing of the size of `J` is made.
   */
  vjp(dy: Tensor, sumBatch: boolean = true): Tensor {
    const B = this.batch;
    assertShape(dy, [B, ...this.outShape], `FactoredJacobian ${this.label} vjp upstream gradient`);
    const gc = contiguous(dy);
    const rows = sizeOf(this.outShape);
    const { positions, units, width, patches } = this.factor;
    const nz = positions * units;
    const gz = new Float64Array(B * nz);
    this.left.forEach((m, b) => m.addVecMat(gc.data, gc.offset + b * rows, gz, b * nz));
    const per = width * units;
    const acc = new Float64Array(sumBatch ? per : B * per);
    for (let b = 0; b < B; b++) {
      const c0 = sumBatch ? 0 : b * per;
      if (!patches) {
        for (let t = b * nz; t < (b + 1) * nz; t += units) for (let u = 0; u < units; u++) acc[c0 + u] += gz[t + u];
        continue;
      }
      // acc[q, u] += Σ_p P[b, p, q] · gz[b, p, u]: A = Pᵀ (rows q, stride 1; along p, stride width).
      gemm({ n: width, m: units, k: positions, a: patches, a0: b * positions * width, ai: 1, at: width, b: gz, b0: b * nz, bt: units, bj: 1, c: acc, c0, ci: units }, true);
    }
    const out = zeros(sumBatch ? [...this.inShape] : [B, ...this.inShape], dtypeOf(dy));
    out.data.set(acc);
    return out;
  }

  /** `J v` for one direction `v` of the parameter (`[...param]`, shared by the batch): `A · ((P ⊗ I) v)` → `[B, ...out]`. */
  jvp(v: Tensor): Tensor {
    const B = this.batch;
    assertShape(v, [...this.inShape], `FactoredJacobian ${this.label} jvp direction`);
    const vc = contiguous(v);
    const { positions, units, width, patches } = this.factor;
    const nz = positions * units;
    const tz = new Float64Array(B * nz);
    if (patches) gemm({ n: B * positions, m: units, k: width, a: patches, a0: 0, ai: width, at: 1, b: vc.data, b0: vc.offset, bt: units, bj: 1, c: tz, c0: 0, ci: units }, false);
    else for (let t = 0; t < B * nz; t += units) for (let u = 0; u < units; u++) tz[t + u] = vc.data[vc.offset + u];
    const rows = sizeOf(this.outShape);
    const acc = new Float64Array(B * rows);
    this.left.forEach((m, b) => m.matVec(tz, b * nz, acc, b * rows));
    const out = zeros([B, ...this.outShape], dtypeOf(v));
    out.data.set(acc);
    return out;
  }

  /** Fraction of the dense entries the factors hold (their stored values over the dense count). */
  get density(): number {
    const total = sizeOf(this.shape);
    let n = this.factor.patches ? this.factor.patches.length : 0;
    for (const m of this.left) n += m.nnz;
    return total === 0 ? 0 : n / total;
  }
}

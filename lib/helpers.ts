/**
 * The seed's three helpers, ported with the same semantics: `add_missing_axes`,
 * `upstream_gradient_loss_weights`, `upstream_gradient_loss_out`, as broadcast-and-reduce on
 * ndarray views.
 *
 * The seed writes `reduce_sum(J * add_missing_axes(dLoss_dOutUpstream, J), axis=…)`: it extends
 * the upstream gradient `dLoss_dOut` (`[B, ...out]`; the seed's `dLoss_dOutUpstream`) with trailing axes of extent 1, broadcasts it against
 * the Jacobian `J` (`[B, ...out, ...param]` or `[B, ...out, ...in]`) and sums the product over
 * the leading axes. Here the extension is a view, the broadcast is a view with stride 0 on the
 * broadcast axes, and the sum runs over both views at once: the broadcast copy of `dLoss_dOut` (as large as
 * `J`) is never materialized. The output is itself addressed through a stride-0 view on the
 * reduced axes, so one loop does the multiply and the reduction.
 *
 * Both contractions accept a `Tensor` or any Jacobian format (dense or sparse): a Jacobian
 * contracts itself through its own `vjp`, so a new format needs no change here.
 * @module
 */
import ndarray from 'ndarray';
import { ShapeError, fmtShape } from './errors.js';
import { type DType, type Tensor, assertFinite, dtypeOf, sizeOf, tensor } from './tensor.js';

/**
 * Appends trailing axes of extent 1 to `source` until it has the rank of `target`: NumPy's
 * `source[..., newaxis, newaxis]`. A view (stride 0 on the new axes), never a copy.
 * @throws ShapeError when `source` has a higher rank than `target`.
 * @example
 * const dLoss_dOut = tensor([1, 2, 3], [3, 1]);      // [B, 1]
 * addMissingAxes(dLoss_dOut, { shape: [3, 1, 384, 1] }).shape; // [3, 1, 1, 1]
 */
export function addMissingAxes(source: Tensor, target: { readonly shape: readonly number[] }): Tensor {
  const missing = target.shape.length - source.shape.length;
  if (missing < 0) {
    throw new ShapeError(`addMissingAxes: expected a source of rank <= the target's rank ${target.shape.length} (${fmtShape(target.shape)}), received ${fmtShape(source.shape)} (rank ${source.shape.length})`);
  }
  const ones = new Array<number>(missing).fill(1);
  const zeros = new Array<number>(missing).fill(0);
  return ndarray(source.data, [...source.shape, ...ones], [...source.stride, ...zeros], source.offset) as Tensor;
}

/**
 * Broadcasts `t` to `shape` as a view, NumPy's rule (axes aligned on the right; an extent of 1 is
 * repeated by giving it stride 0). No copy.
 * @throws ShapeError naming the first axis that cannot broadcast.
 * @example
 * const row = tensor([1, 2, 3], [1, 3]);
 * broadcastTo(row, [4, 3]).get(3, 2); // 3, read through stride 0
 */
export function broadcastTo(t: Tensor, shape: readonly number[]): Tensor {
  const lead = shape.length - t.shape.length;
  if (lead < 0) throw new ShapeError(`broadcastTo: cannot broadcast ${fmtShape(t.shape)} to the lower rank ${fmtShape(shape)}`);
  const stride = shape.map((d, a) => {
    if (a < lead) return 0;
    const e = t.shape[a - lead];
    if (e === d) return t.stride[a - lead];
    if (e === 1) return 0;
    throw new ShapeError(`broadcastTo: cannot broadcast ${fmtShape(t.shape)} to ${fmtShape(shape)}: axis ${a} has extent ${e}, expected 1 or ${d}`);
  });
  return ndarray(t.data, shape.slice(), stride, t.offset) as Tensor;
}

/**
 * `Σ_{axes} a ⊙ b` for two views of one shape: the product is never stored; the sum lands in a
 * row-major tensor of the kept axes, written through a view with stride 0 on the summed ones.
 * Accumulates in float64 and returns `dtype`.
 * @example
 * const J = tensor([1, 2, 3, 4], [2, 2]);
 * sumOfProducts(J, broadcastTo(tensor([1, 1], [2, 1]), [2, 2]), [0]).data; // [4, 6]
 */
export function sumOfProducts(a: Tensor, b: Tensor, axes: readonly number[], dtype: DType = dtypeOf(a)): Tensor {
  const shape = a.shape;
  const N = shape.length;
  if (b.shape.length !== N || b.shape.some((d, i) => d !== shape[i])) {
    throw new ShapeError(`sumOfProducts: expected two views of one shape, received ${fmtShape(a.shape)} and ${fmtShape(b.shape)}`);
  }
  const reduced = shape.map((_, i) => axes.includes(i));
  const kept = shape.filter((_, i) => !reduced[i]);
  const acc = new Float64Array(sizeOf(kept));
  // The accumulator seen with the full rank: stride 0 where an axis is summed over.
  const outStride = new Array<number>(N).fill(0);
  for (let i = N - 1, s = 1; i >= 0; i--) {
    if (reduced[i]) continue;
    outStride[i] = s;
    s *= shape[i];
  }
  if (sizeOf(shape) > 0) {
    const ad = a.data;
    const bd = b.data;
    if (N === 0) {
      acc[0] = ad[a.offset] * bd[b.offset];
    } else {
      // Odometer over the outer axes; the innermost axis is the tight loop.
      const inner = shape[N - 1];
      const sa = a.stride[N - 1];
      const sb = b.stride[N - 1];
      const so = outStride[N - 1];
      const idx = new Array<number>(N - 1).fill(0);
      let oa = a.offset;
      let ob = b.offset;
      let oo = 0;
      for (;;) {
        let pa = oa;
        let pb = ob;
        let po = oo;
        if (so === 0) {
          let s = 0;
          for (let k = 0; k < inner; k++, pa += sa, pb += sb) s += ad[pa] * bd[pb];
          acc[po] += s;
        } else {
          for (let k = 0; k < inner; k++, pa += sa, pb += sb, po += so) acc[po] += ad[pa] * bd[pb];
        }
        let ax = N - 2;
        for (; ax >= 0; ax--) {
          oa += a.stride[ax];
          ob += b.stride[ax];
          oo += outStride[ax];
          if (++idx[ax] < shape[ax]) break;
          oa -= a.stride[ax] * shape[ax];
          ob -= b.stride[ax] * shape[ax];
          oo -= outStride[ax] * shape[ax];
          idx[ax] = 0;
        }
        if (ax < 0) break;
      }
    }
  }
  return tensor(dtype === 'float64' ? acc : Float32Array.from(acc), kept, dtype);
}

/**
 * What the helpers need of a Jacobian that is not a plain tensor: its shape and its own cotangent
 * contraction (`Jacobian.vjp` in `lib/dense-jacobian.ts`).
 */
export interface ContractibleJacobian {
  /** `[B, ...out, ...in]` (or `[B, ...out, ...param]`). */
  readonly shape: readonly number[];
  /** `Σ_out dy[b, out] · J[b, out, …]` → `[B, ...in]`, or also summed over the batch when `sumBatch`. */
  vjp(dy: Tensor, sumBatch: boolean): Tensor;
}

/** A Tensor, as opposed to a Jacobian object: ndarray views carry strides. */
function isTensor(J: Tensor | ContractibleJacobian): J is Tensor {
  return Array.isArray((J as Tensor).stride) && (J as Tensor).data !== undefined;
}

/** Ranks and leading axes of `J` against `g`, checked before any work, quoting both shapes. */
function checkContraction(fn: string, jName: string, J: { readonly shape: readonly number[] }, dLoss_dOut: Tensor): void {
  const g = dLoss_dOut;
  if (!g || !Array.isArray(g.shape)) throw new ShapeError(`${fn}: expected dLoss_dOut to be a tensor, received ${String(g)}`);
  if (g.shape.length < 1) throw new ShapeError(`${fn}: expected dLoss_dOut of rank >= 1 ([B, ...out]), received ${fmtShape(g.shape)} (rank 0)`);
  if (J.shape.length < g.shape.length) {
    throw new ShapeError(
      `${fn}: expected ${jName} of rank >= ${g.shape.length} (it leads with the shape of dLoss_dOut ${fmtShape(g.shape)}), received ${fmtShape(J.shape)} (rank ${J.shape.length})`,
    );
  }
  const lead = J.shape.slice(0, g.shape.length);
  if (lead.some((d, i) => d !== g.shape[i])) {
    throw new ShapeError(
      `${fn}: mismatched leading axes: expected ${jName} to lead with ${fmtShape(g.shape)} (the shape of dLoss_dOut), received ${fmtShape(J.shape)} (leading ${fmtShape(lead)})`,
    );
  }
  assertFinite(g, `${fn} dLoss_dOut`);
}

/**
 * The seed's reduction on a dense tensor: `J` times `dy` broadcast to it, summed over all of
 * `dy`'s axes (`sumBatch`) or over all but the batch axis.
 */
export function contractDense(J: Tensor, dy: Tensor, sumBatch: boolean): Tensor {
  const dyExt = broadcastTo(addMissingAxes(dy, J), J.shape);
  const r = dy.shape.length;
  const axes = sumBatch ? range(0, r) : range(1, r);
  return sumOfProducts(J, dyExt, axes, dtypeOf(J));
}

function range(from: number, to: number): number[] {
  const out: number[] = [];
  for (let i = from; i < to; i++) out.push(i);
  return out;
}

/**
 * dLoss/dWeights from a stage's Jacobian w.r.t. one weight and the upstream gradient arriving at
 * its output: `Σ_{b, out} J[b, out, …p] · dLoss_dOut[b, out]`, summed over the leading axes of `dLoss_dOut`.
 * The seed's `upstream_gradient_loss_weights` (its arguments `dOutUpstream_dWeightsLocal`,
 * `dLoss_dOutUpstream`).
 * @param dOut_dWeights `[B, ...out, ...param]` (tensor or Jacobian).
 * @param dLoss_dOut `[B, ...out]`.
 * @returns `[...param]`.
 * @example
 * const [Jk, Jb] = tape.jacobian(y, dense.params);      // [3, 1, 384, 1], [3, 1, 1]
 * const dLoss_dKernel = upstreamGradientLossWeights(Jk, dLoss_dY); // [384, 1]
 */
export function upstreamGradientLossWeights(dOut_dWeights: Tensor | ContractibleJacobian, dLoss_dOut: Tensor): Tensor {
  const J = dOut_dWeights;
  checkContraction('upstreamGradientLossWeights', 'dOut_dWeights', J, dLoss_dOut);
  return isTensor(J) ? contractDense(J, dLoss_dOut, true) : J.vjp(dLoss_dOut, true);
}

/**
 * dLoss/dIn from a stage's batch Jacobian and the upstream gradient arriving at its output:
 * `Σ_{out} J[b, out, …in] · dLoss_dOut[b, out]`, summed over its non-batch axes. This is the
 * upstream gradient of the stage before. The seed's `upstream_gradient_loss_out` (its arguments
 * `dOutUpstream_dOutLocal`, `dLoss_dOutUpstream`).
 * @param dOut_dIn `[B, ...out, ...in]` (tensor or Jacobian).
 * @param dLoss_dOut `[B, ...out]`.
 * @returns `[B, ...in]`.
 * @example
 * const J = tape_2.batchJacobian(out_layer_2, out_layer_1); // [3, 1, 8, 8, 6]
 * const dLoss_dOut1 = upstreamGradientLossOut(J, dLoss_dOut2);  // [3, 8, 8, 6]
 */
export function upstreamGradientLossOut(dOut_dIn: Tensor | ContractibleJacobian, dLoss_dOut: Tensor): Tensor {
  const J = dOut_dIn;
  checkContraction('upstreamGradientLossOut', 'dOut_dIn', J, dLoss_dOut);
  return isTensor(J) ? contractDense(J, dLoss_dOut, false) : J.vjp(dLoss_dOut, false);
}

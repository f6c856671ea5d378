/**
 * A selection, the derivative of every max: output `o` is input `winner[o]` (the flat row-major
 * index of the winning element over the whole batch, as max pooling's `argmax`). Its dual-number
 * rule gathers the winners' tangents, its VJP scatters each cotangent onto its winner (adding,
 * since overlapping windows may share one), and its local Jacobian holds one 1 per row. MaxPooling2D
 * and GlobalMaxPooling2D differ only in how they choose the winners.
 * @module
 */
import type { LocalJacobian } from './layer.js';
import type { Tensor } from '../tensor.js';
import { contiguous } from '../tensor.js';
import { rowBlock } from './out.js';

/**
 * Dual-number rule: `dy[o, t] = dx[winner[o], t]` for a tangent block `dx` `[B, ...in, T]` into a
 * zero `dy` `[B, ...out, T]` (contiguous, or rows of `T` a uniform stride apart: a column block of
 * J). With `hint` (`nIn` inputs per sample, rows `[lo, hi)` of each sample's input the only
 * non-zero ones), outputs whose winner lies outside are left zero.
 */
export function selectTangents(winner: Int32Array, dx: Tensor, T: number, dy: Tensor, hint?: { nIn: number; lo: number; hi: number }): void {
  const s = contiguous(dx);
  const src = s.data;
  const off = s.offset;
  const r = rowBlock(dy) ?? { data: dy.data, offset: dy.offset, stride: T };
  const d = r.data;
  const nOut = hint ? winner.length / Math.max(1, Math.round(dx.size / (hint.nIn * T))) : winner.length;
  for (let o = 0; o < winner.length; o++) {
    const w = winner[o];
    if (hint) {
      const i = w - Math.floor(o / nOut) * hint.nIn;
      if (i < hint.lo || i >= hint.hi) continue;
    }
    const from = off + w * T;
    const to = r.offset + o * r.stride;
    for (let t = 0; t < T; t++) d[to + t] = src[from + t];
  }
}

/** VJP rule: `dx[winner[o]] += dy[o]` for a cotangent `dy` `[B, ...out]` into a zero `dx` `[B, ...in]`. */
export function selectCotangents(winner: Int32Array, dy: Tensor, dx: Tensor): void {
  const g = contiguous(dy);
  // The buffers in locals: a property read of the view each element is a megamorphic load (ndarray has a class per rank).
  const d = dx.data;
  const src = g.data;
  const off = g.offset;
  for (let o = 0; o < winner.length; o++) d[winner[o]] += src[off + o];
}

/** The local Jacobian of a selection at a recorded pass: per sample of `nIn` inputs and `nOut` outputs, row `o` is a 1 at its winner. */
export function selectionLocal(winner: Int32Array, nIn: number, nOut: number): LocalJacobian {
  return {
    rows: nOut,
    cols: nIn,
    single: true,
    maxRowNnz: 1,
    row(b, o, idx, coef) {
      idx[0] = winner[b * nOut + o] - b * nIn;
      coef[0] = 1;
      return 1;
    },
  };
}

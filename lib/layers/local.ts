/**
 * Local Jacobians for the propagate engine, read off the layers' own rules: a layer's hook
 * (`StructureHooks.localJacobian`) returns its local Jacobian at a recorded pass as factors built
 * here, so that no engine writes a layer's derivative a second time.
 * @module
 */
import type { LocalJacobian } from './layer.js';
import type { Data } from '../tensor.js';

/** The identity on `n` elements per sample (Flatten, Dropout at inference): one entry of 1 per row. */
export function identityLocal(n: number): LocalJacobian {
  return {
    rows: n,
    cols: n,
    single: true,
    maxRowNnz: 1,
    row(_b, o, idx, coef) {
      idx[0] = o;
      coef[0] = 1;
      return 1;
    },
  };
}

/** A diagonal on `n` elements per sample, its entries `d` (`[B, n]` flat): zeros make empty rows. */
export function diagonalLocal(d: Data, n: number): LocalJacobian {
  return {
    rows: n,
    cols: n,
    single: true,
    maxRowNnz: 1,
    row(b, o, idx, coef) {
      const v = d[b * n + o];
      if (v === 0) return 0;
      idx[0] = o;
      coef[0] = v;
      return 1;
    },
  };
}

/**
 * The local Jacobian of an element-wise map (`block = 1`) or of one that couples each run of
 * `block` consecutive elements (softmax over the last axis), for `B` samples of `n` elements,
 * read off its own dual-number rule `jvpInPlace(dz, count, T)` (which turns a tangent block
 * `dz` of `count × T` into the output tangent, in place): one pass with a unit tangent per
 * element of a block. Costs `B · n · block` values.
 */
export function elementwiseLocal(B: number, n: number, block: number, jvpInPlace: (dz: Float64Array, count: number, T: number) => void): LocalJacobian {
  const count = B * n;
  if (block === 1) {
    const d = new Float64Array(count).fill(1);
    jvpInPlace(d, count, 1);
    return diagonalLocal(d, n);
  }
  // Tangent t seeds element t of every block: dz[(e, t)] = 1 where e % block === t.
  const dz = new Float64Array(count * block);
  for (let e = 0; e < count; e++) dz[e * block + (e % block)] = 1;
  jvpInPlace(dz, count, block);
  return {
    rows: n,
    cols: n,
    single: false,
    maxRowNnz: block,
    row(b, o, idx, coef) {
      const base = o - (o % block);
      const src = (b * n + o) * block;
      let k = 0;
      for (let t = 0; t < block; t++) {
        const v = dz[src + t];
        if (v === 0) continue;
        idx[k] = base + t;
        coef[k++] = v;
      }
      return k;
    },
  };
}

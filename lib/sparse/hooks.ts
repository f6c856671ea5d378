/**
 * The structure hooks of the layer contract (`layers/layer.ts`), read with their generic
 * fallbacks: every sparse engine asks a layer through these functions, never by its class name.
 * A layer that gives only `forward`, `jvp` and `vjp` gets the fallbacks: a dense pattern, the
 * product colouring of that pattern, its non-zeros as the cost of a tangent, and a local Jacobian
 * built by compressed forward mode through its own `jvp`. Right for any layer; only slower.
 * @module
 */
import { type Differentiable, type LayerPass, type LocalJacobian, type Wrt, leavesOf } from '../layers/layer.js';
import { diagonalLocal } from '../layers/local.js';
import { contiguous, dtypeOf, sizeOf, zeros } from '../tensor.js';
import { kronColumnColouring } from './colouring.js';
import { compressedForward } from './compressed.js';
import type { SparseJacobian } from './csr.js';
import { inputStructureOf, layerInputKron, paramKron } from './pattern.js';

/** The structural pattern of one layer w.r.t. the input or `params[k]`, as Kronecker factors. */
function layerKron(l: Differentiable, wrt: Wrt) {
  return wrt === 'input' ? layerInputKron(l) : paramKron(l, wrt);
}

/**
 * The fewest colours of a layer's Jacobian columns: its `colourCount` hook, or the product
 * colouring of its structural pattern (optimal for window and diagonal patterns).
 * @example
 * colourCountOf(new Conv2D({ filters: 32, kernel_size: 3 }).build([64, 64, 3]), 'input'); // 27
 */
export function colourCountOf(l: Differentiable, wrt: Wrt): number {
  return l.colourCount ? l.colourCount(wrt) : kronColumnColouring(layerKron(l, wrt)).count;
}

/** Multiply-adds per sample of one tangent through a layer: its `macsPerTangent` hook, or its structural non-zeros per sample. */
export function macsOf(l: Differentiable, wrt: Wrt = 'input'): number {
  return l.macsPerTangent ? l.macsPerTangent(wrt) : layerKron(l, wrt).nnz;
}

/** Per-sample multiply-adds of one tangent through every layer of a stage. */
export function forwardMacs(f: Differentiable): number {
  return leavesOf(f).reduce((s, l) => s + macsOf(l), 0);
}

/** Most entries a row of a layer's local Jacobian has at a recorded pass: its `localRowNnz` hook, or its structural largest row. */
export function localRowNnzOf(l: Differentiable): number {
  return l.localRowNnz ? l.localRowNnz() : layerInputKron(l).maxRowNnz();
}

/**
 * A layer's local Jacobian at a recorded pass, as factors applied first to last: its own
 * `localJacobian` hook, or the fallback read off its `jvp`: one unit tangent for a diagonal pattern,
 * else compressed forward mode with the product colouring of its pattern.
 */
export function localJacobianOf(pass: LayerPass, wrt: Wrt): LocalJacobian[] {
  const l = pass.layer;
  if (l.localJacobian) return l.localJacobian(pass, wrt);
  if (wrt === 'input' && inputStructureOf(l).maps.every((m) => m.kind === 'identity') && sizeOf(l.inputShape) === sizeOf(l.outputShape)) {
    const seed = zeros([...pass.x.shape, 1], dtypeOf(pass.x));
    seed.data.fill(1);
    const yDot = contiguous(l.jvp(pass.saved, { xDot: seed, paramDots: null, T: 1 }));
    return [diagonalLocal(yDot.data.subarray(yDot.offset, yDot.offset + yDot.size), sizeOf(l.outputShape))];
  }
  const kron = layerKron(l, wrt);
  const J = compressedForward(l, pass.x, { wrt, forward: { y: pass.y, saved: pass.saved }, pattern: kron.expand(), colouring: kronColumnColouring(kron) });
  return [csrLocal(J)];
}

/** A local Jacobian held as per-sample CSR matrices. */
export function csrLocal(J: SparseJacobian): LocalJacobian {
  let single = true;
  let maxRowNnz = 0;
  for (const m of J.samples) {
    const r = m.maxRowNnz();
    maxRowNnz = Math.max(maxRowNnz, r);
    if (r > 1) single = false;
  }
  const rows = J.samples[0]?.rows ?? 0;
  const cols = J.samples[0]?.cols ?? 0;
  return {
    rows,
    cols,
    single,
    maxRowNnz,
    row(b, o, idx, coef) {
      const m = J.samples[b];
      const a = m.rowPtr[o];
      const n = m.rowPtr[o + 1] - a;
      for (let k = 0; k < n; k++) {
        idx[k] = m.colIdx[a + k];
        coef[k] = m.values[a + k];
      }
      return n;
    },
  };
}

/**
 * Forensics of a non-finite value: where a NaN or an infinity was born (the input, a weight, a
 * layer's output, a gradient), found by running the forward pass again layer by layer with the same
 * options. What `fit` reports when it stops before a bad update.
 * @module
 */
import type { Sequential, SequentialForwardOptions } from './sequential.js';
import { type Tensor, contiguous, sizeOf } from './tensor.js';

/** Where a non-finite value first appeared, and the message that says so. */
export interface NonFiniteReport {
  /** Epoch of the bad step, 1-based. */
  epoch: number;
  /** Batch of the bad step within its epoch, 1-based. */
  batch: number;
  /** What was found non-finite first: the loss (a forward value on the way to it) or a gradient. */
  kind: 'loss' | 'gradient';
  /** Stage index and name (`model_0`), or null when the loss itself overflowed. */
  stage: number | null;
  /** Name of that stage, or null. */
  stageName: string | null;
  /** Global layer index and name, or null. */
  layer: number | null;
  /** Name of that layer, or null. */
  layerName: string | null;
  /** What was found where, as a sentence. */
  message: string;
}

/** Where a non-finite value came from, without the epoch and batch. */
export type NonFiniteOrigin = Omit<NonFiniteReport, 'epoch' | 'batch'>;

/** The first non-finite element of a tensor, or null. */
export function firstNonFinite(t: Tensor): {
  /** The non-finite value. */
  value: number;
  /** Its index, one entry per axis. */
  index: number[]
} | null {
  const c = contiguous(t);
  for (let i = 0; i < c.size; i++) {
    const v = c.data[c.offset + i];
    if (v - v !== 0) {
      const index: number[] = [];
      let r = i;
      for (let a = 0; a < c.shape.length; a++) {
        const st = sizeOf(c.shape.slice(a + 1));
        index.push(Math.floor(r / st));
        r %= st;
      }
      return { value: v, index };
    }
  }
  return null;
}

/** The origin record of stage `s`, layer `i`. */
export function origin(stages: readonly Sequential[], s: number, i: number, message: string): NonFiniteOrigin {
  const layer = stages[s].layers[i];
  return { kind: 'loss', stage: s, stageName: stages[s].name, layer: stages[s].layerOffset + i, layerName: layer.name, message };
}

/** How a report names stage `s`, layer `i`. */
export function where(stages: readonly Sequential[], s: number, i: number): string {
  const layer = stages[s].layers[i];
  return `stage ${s} (${stages[s].name}), layer ${stages[s].layerOffset + i} (${layer.describe()})`;
}

/**
 * Finds the first stage and layer whose weights or output hold a NaN or an infinity, by running
 * the forward pass again layer by layer with the same options (the same Dropout masks): the
 * layer that turned finite inputs into a non-finite output. Null when every value is finite.
 * @example
 * const bad = findNonFinite(model.split([9]), x, { training: true, seed: 3 });
 * bad?.message; // 'stage 1 (model_1), layer 10 (Dense "dense") produced a non-finite output: Infinity at [0, 5], from a finite input'
 */
export function findNonFinite(stages: readonly Sequential[], x: Tensor, fwd: SequentialForwardOptions = {}): NonFiniteOrigin | null {
  let h = x;
  const bad = firstNonFinite(x);
  if (bad) return { kind: 'loss', stage: null, stageName: null, layer: null, layerName: null, message: `the input batch holds ${bad.value} at [${bad.index.join(', ')}]` };
  for (let s = 0; s < stages.length; s++) {
    const stage = stages[s];
    for (let i = 0; i < stage.layers.length; i++) {
      const layer = stage.layers[i];
      for (const p of layer.params) {
        const b = firstNonFinite(p.value);
        if (b) return origin(stages, s, i, `${where(stages, s, i)} has a non-finite weight: ${p.name} holds ${b.value} at [${b.index.join(', ')}]`);
      }
      h = layer.forward(h, stage.layerOptions(fwd, i)).y;
      const b = firstNonFinite(h);
      if (b) return origin(stages, s, i, `${where(stages, s, i)} produced a non-finite output: ${b.value} at [${b.index.join(', ')}], from a finite input`);
    }
  }
  return null;
}


/**
 * The first non-finite gradient of a step (`dLoss_dWeights[i][k]` per model layer, as the chains
 * return them), as an origin naming the stage, the layer and the parameter; null when all are finite.
 */
export function nonFiniteGradient(stages: readonly Sequential[], dLoss_dWeights: readonly (readonly (Tensor | null)[])[], loss: number): NonFiniteOrigin | null {
  for (let s = 0; s < stages.length; s++) {
    const stage = stages[s];
    for (let i = 0; i < stage.layers.length; i++) {
      const grads = dLoss_dWeights[stage.layerOffset - stages[0].layerOffset + i];
      for (let k = 0; k < grads.length; k++) {
        const g = grads[k];
        const b = g ? firstNonFinite(g) : null;
        if (b) return { ...origin(stages, s, i, `the gradient of ${where(stages, s, i)} ${stage.layers[i].params[k].name} holds ${b.value} at [${b.index.join(', ')}] (loss ${loss})`), kind: 'gradient' };
      }
    }
  }
  return null;
}

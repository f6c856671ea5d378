/**
 * Sparsity patterns of layers and stages: a layer states its own structural pattern through its
 * structure hooks (`inputStructure`, `paramStructure` in `layers/layer.ts`; a layer without them
 * is dense); this module composes them over a stage as Kronecker factors, from shapes alone.
 * Where the derivative depends on values (ReLU zeros, max-pooling winners, Dropout masks), the
 * recorded pass prunes further: see `lib/sparse/propagate.ts`.
 * @module
 */
import { ConfigError, fmtShape } from '../errors.js';
import { type Differentiable, describeOf } from '../layers/layer.js';
import { type AxisStructure, KronPattern, SparsityPattern } from '../structure.js';
import { sizeOf } from '../tensor.js';


/**
 * A layer's structural pattern w.r.t. its input, axis by axis: its own `inputStructure` hook, or
 * the generic fallback, one full map (every output depends on every input).
 */
export function inputStructureOf(layer: Differentiable): AxisStructure {
  if (layer.inputStructure) return layer.inputStructure();
  return { inDims: [sizeOf(layer.inputShape)], maps: [{ kind: 'full', rows: sizeOf(layer.outputShape) }] };
}

/**
 * Groups `extents` (a pattern's row factors) into consecutive runs whose products are `dims`;
 * factors of extent 1 join a neighbouring run. Null when they do not line up.
 */
function groupExtents(extents: readonly number[], dims: readonly number[]): number[][] | null {
  const groups: number[][] = [];
  let i = 0;
  for (let j = 0; j < dims.length; j++) {
    const g: number[] = [];
    let p = 1;
    do {
      if (i >= extents.length) return null;
      g.push(i);
      p *= extents[i++];
    } while (p < dims[j] || (p === dims[j] && i < extents.length && extents[i] === 1 && j === dims.length - 1));
    if (p !== dims[j]) return null;
    groups.push(g);
  }
  while (i < extents.length) {
    if (extents[i] !== 1 || groups.length === 0) return null;
    groups[groups.length - 1].push(i++);
  }
  return groups;
}

/**
 * Writes a layer's axis maps as Kronecker factors lined up with `extents` (the row factors of the
 * pattern it is applied to): an identity or a full map splits over any grouping; a window matrix
 * needs its axis to be one factor. Null when the factors do not line up.
 */
function alignMaps(s: AxisStructure, extents: readonly number[]): SparsityPattern[] | null {
  const groups = groupExtents(extents, s.inDims);
  if (!groups) return null;
  const out: SparsityPattern[] = new Array(extents.length);
  for (let j = 0; j < groups.length; j++) {
    const g = groups[j];
    const map = s.maps[j];
    if (map.kind === 'identity') {
      for (const i of g) out[i] = SparsityPattern.identity(extents[i]);
    } else if (map.kind === 'full') {
      g.forEach((i, n) => (out[i] = SparsityPattern.full(n === 0 ? map.rows : 1, extents[i])));
    } else {
      const big = g.filter((i) => extents[i] !== 1);
      if (big.length > 1) return null;
      const at = big.length === 1 ? big[0] : g[0];
      for (const i of g) out[i] = i === at ? map.pattern : SparsityPattern.identity(1);
    }
  }
  return out;
}

/**
 * Composes a layer after a Kronecker pattern (whose rows are the layer's input): factor by factor
 * when the factors line up, which holds for every stack of the known layers met in practice.
 * @throws ConfigError when they do not (the caller then falls back to explicit patterns).
 */
export function composeKron(layer: Differentiable, inner: KronPattern): KronPattern {
  const aligned = alignMaps(inputStructureOf(layer), inner.rowExtents);
  if (!aligned) {
    throw new ConfigError(`sparsity pattern: ${describeOf(layer)} on input ${fmtShape(layer.inputShape)} does not line up with the pattern's row factors ${fmtShape(inner.rowExtents)}`);
  }
  return new KronPattern(aligned.map((f, k) => f.compose(inner.factors[k])));
}

/**
 * The structural pattern of a layer's output w.r.t. its parameter `k`, per sample: its own
 * `paramStructure` hook, or the generic fallback, full (every output depends on every entry).
 */
export function paramKron(layer: Differentiable, k: number): KronPattern {
  const p = layer.params[k];
  if (!p) throw new ConfigError(`sparsity pattern: ${describeOf(layer)} has no parameter ${k}; expected an index in 0..${layer.params.length - 1}`);
  if (layer.paramStructure) return layer.paramStructure(k);
  return new KronPattern([SparsityPattern.full(sizeOf(layer.outputShape), p.value.size)]);
}

/** A layer's own structural pattern w.r.t. its input, as Kronecker factors over its input axes. */
export function layerInputKron(layer: Differentiable): KronPattern {
  return composeKron(layer, KronPattern.identity(layer.inputShape));
}

/**
 * The structural pattern of a stage (its layers composed, first to last) w.r.t. its input, or
 * w.r.t. parameter `param` of layer `fromLayer` when given.
 */
export function stageKron(layers: readonly Differentiable[], wrt: { layer: number; param: number } | null = null): KronPattern {
  let P = wrt ? paramKron(layers[wrt.layer], wrt.param) : KronPattern.identity(layers[0].inputShape);
  for (let i = wrt ? wrt.layer + 1 : 0; i < layers.length; i++) P = composeKron(layers[i], P);
  return P;
}

/** The explicit structural pattern of one layer (small shapes: specs and the compressed engine). */
export function layerInputPattern(layer: Differentiable, budgetBytes?: number): SparsityPattern {
  return layerInputKron(layer).expand(budgetBytes);
}

/** Finds which layer (index in `layers`) and which of its parameters `p` is. */
export function ownerOf(layers: readonly Differentiable[], p: unknown): {
  /** Index of the layer in `layers`. */
  layer: number;
  /** Index of the parameter in that layer's `params`. */
  param: number
} | null {
  for (let i = 0; i < layers.length; i++) {
    const k = layers[i].params.findIndex((q) => q === p);
    if (k >= 0) return { layer: i, param: k };
  }
  return null;
}

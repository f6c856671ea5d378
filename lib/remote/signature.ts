/**
 * What a stage server and its client check at Open, so that they train one model: the hosted
 * stages' architecture (each layer's class, Keras config and output shape, each stage's place and
 * input shape, the dtype) as the server holds them and as the client's copy of the model says they
 * should be. Two sides started from different model files, or from `--cnn` with other
 * `--filters` / `--units`, can agree on every tensor shape on the wire and still train different
 * models; the signature tells them apart before the first step.
 * @module
 */
import type { Sequential } from '../sequential.js';

/** One layer as the signature states it. */
interface LayerSignature {
  layer: string;
  config: Record<string, unknown>;
  output_shape: number[];
}

/** One stage as the signature states it. */
interface StageSignature {
  first_layer: number;
  input_shape: number[];
  dtype: string;
  layers: LayerSignature[];
}

/**
 * The hosted stages' architecture as canonical JSON, without weights: equal strings for equal
 * architectures whatever process built them.
 * @example
 * const stages = model.split([9]);
 * stagesSignature(stages.slice(1)); // '[{"first_layer":9,"input_shape":[1,1,64],"dtype":"float64","layers":[...]}]'
 */
export function stagesSignature(stages: readonly Sequential[]): string {
  const sig: StageSignature[] = stages.map((st) => ({
    first_layer: st.layerOffset,
    input_shape: [...st.inputShape],
    dtype: st.dtype,
    layers: st.layers.map((l) => ({ layer: l.className, config: l.getConfig(), output_shape: [...l.outputShape] })),
  }));
  return JSON.stringify(sig);
}

/**
 * Where the client's signature `theirs` first differs from the server's `mine`, in words, or null
 * when they are equal.
 * @example
 * signatureMismatch(stagesSignature(a), stagesSignature(b));
 * // 'layer 10: the server has Dense {"units":64,...} to [64], the client expects Dense {"units":32,...} to [32]'
 */
export function signatureMismatch(mine: string, theirs: string): string | null {
  if (mine === theirs) return null;
  const m = parseSignature(mine, "the server's");
  if (typeof m === 'string') return m;
  const t = parseSignature(theirs, "the client's");
  if (typeof t === 'string') return t;
  if (t.length !== m.length) return `the server hosts ${m.length} stage(s), the client expects ${t.length}`;
  for (let s = 0; s < m.length; s++) {
    const a = m[s];
    const b = t[s] ?? ({} as Partial<StageSignature>);
    for (const key of ['first_layer', 'input_shape', 'dtype'] as const) {
      if (JSON.stringify(a[key]) !== JSON.stringify(b[key])) return `hosted stage ${s}: the server's ${key} is ${JSON.stringify(a[key])}, the client expects ${JSON.stringify(b[key])}`;
    }
    const bl = Array.isArray(b.layers) ? b.layers : [];
    if (bl.length !== a.layers.length) return `hosted stage ${s}: the server's has ${a.layers.length} layers, the client expects ${bl.length}`;
    for (let i = 0; i < a.layers.length; i++) {
      const x = JSON.stringify(a.layers[i]);
      const y = JSON.stringify(bl[i]);
      if (x !== y) {
        const say = (l: LayerSignature | undefined) => `${l?.layer} ${JSON.stringify(l?.config)} to ${JSON.stringify(l?.output_shape)}`;
        return `layer ${a.first_layer + i}: the server has ${say(a.layers[i])}, the client expects ${say(bl[i])}`;
      }
    }
  }
  return 'the signatures differ in their formatting';
}

/** A signature's stages, or what is wrong with it (a peer's answer is not trusted to be JSON). */
function parseSignature(text: string, whose: string): StageSignature[] | string {
  if (text === '') return `${whose} signature is empty (a server from before signatures, or one that does not send them)`;
  try {
    const v: unknown = JSON.parse(text);
    if (Array.isArray(v) && v.every((st) => st !== null && typeof st === 'object' && Array.isArray((st as StageSignature).layers))) return v as StageSignature[];
  } catch {
    // Reported below, with what was received.
  }
  return `${whose} signature is not the JSON of an array of stages (received ${JSON.stringify(text.slice(0, 80))})`;
}

/**
 * The TF.js Layers weight format, read and written without Node: a `weightsManifest` (groups of
 * `{paths, weights: [{name, shape, dtype, quantization?}]}`) and the binary shards it names,
 * as `ArrayBuffer`s. A browser can use it as is; `model-io.ts` reads the shards from disk.
 *
 * Decoding follows tfjs-core 4.22's `io_utils.ts` `decodeWeights`: the shards of a group are
 * concatenated in order, each entry takes `size × bytes per value` bytes from there, values are
 * little-endian float32 or int32, and quantized entries are dequantized as tfjs does
 * (`uint8`/`uint16`: `v · scale + min`, rounded to float32, or `Math.round`ed for int32;
 * `float16`: the IEEE half-precision value). Where tfjs would read past the end, or leave bytes
 * unread, this refuses, naming the files, the tensor and the byte counts.
 * @module
 */
import { ConfigError, ShapeError, fmtShape, fmtValue } from './errors.js';

/** How a quantized weight is stored: `uint8`/`uint16` with an affine map, or `float16`. */
export interface WeightQuantization {
  /** The stored type. */
  dtype: 'uint8' | 'uint16' | 'float16';
  /** Step of the affine map (`uint8`/`uint16`). */
  scale?: number;
  /** Offset of the affine map (`uint8`/`uint16`). */
  min?: number;
}

/** One manifest entry: `{"name": "dense/kernel", "shape": [3, 2], "dtype": "float32"}`. */
export interface WeightSpec {
  /** `<layer name>/<param name>`, maybe behind a model scope: `sequential/conv2d_1/kernel`. */
  name: string;
  /** The tensor's shape. */
  shape: number[];
  /** The decoded dtype. */
  dtype: 'float32' | 'int32';
  /** Present when the bytes hold a quantized form. */
  quantization?: WeightQuantization;
}

/** One group of the manifest: its shard files, in order, and the tensors their bytes hold. */
export interface WeightsGroup {
  /** Shard file names, relative to model.json, concatenated in this order. */
  paths: string[];
  /** The tensors, in byte order. */
  weights: WeightSpec[];
}

/** A decoded tensor: its manifest name, shape, and values (float32 or int32 as the manifest says). */
export interface DecodedWeight {
  /** Manifest name. */
  name: string;
  /** Shape from the manifest. */
  shape: number[];
  /** Row-major values. */
  values: Float32Array | Int32Array;
  /** Which shard files held it (for errors). */
  files: string[];
}

/** Bytes of a shard: an `ArrayBuffer` or any view on one (a Node `Buffer` works). */
export type ShardBytes = ArrayBuffer | ArrayBufferView;

/** Looks shard bytes up by path: a record `{"weights.bin": bytes}` or a function. */
export type ShardSource = Readonly<Record<string, ShardBytes>> | ((path: string) => ShardBytes | undefined);

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const own = (o: Record<string, unknown>, k: string): unknown => (Object.hasOwn(o, k) ? o[k] : undefined);

const SPEC_KEYS = ['name', 'shape', 'dtype', 'quantization', 'group'];
const QUANT_BYTES = { uint8: 1, uint16: 2, float16: 2 } as const;

/** Refuses keys outside `known`, quoting them: a key this reader does not act on must not be dropped in silence. */
function checkOwnKeys(o: Record<string, unknown>, known: readonly string[], where: string): void {
  for (const k of Object.keys(o)) {
    if (!known.includes(k)) throw new ConfigError(`${where}: unknown key ${JSON.stringify(k)}; expected only ${known.join(', ')}`);
  }
}

/**
 * Validates a `weightsManifest` as JSON gave it: a list of groups with string `paths` and entries
 * with a string `name`, a shape of non-negative integers, dtype `float32` or `int32`, and a
 * well-formed `quantization`.
 * @throws ConfigError naming the group, the entry, what was expected and what was received.
 * @example
 * const groups = parseWeightsManifest([{ paths: ['weights.bin'], weights: [{ name: 'dense/kernel', shape: [3, 2], dtype: 'float32' }] }]);
 */
export function parseWeightsManifest(manifest: unknown): WeightsGroup[] {
  if (!Array.isArray(manifest)) throw new ConfigError(`weightsManifest: expected a list of {"paths", "weights"} groups, received ${fmtValue(manifest)}`);
  return manifest.map((g, gi) => {
    const where = `weightsManifest[${gi}]`;
    if (!isRecord(g)) throw new ConfigError(`${where}: expected {"paths": [...], "weights": [...]}, received ${fmtValue(g)}`);
    checkOwnKeys(g, ['paths', 'weights'], where);
    const paths = own(g, 'paths');
    if (!Array.isArray(paths) || paths.length === 0 || paths.some((p) => typeof p !== 'string' || p === '')) {
      throw new ConfigError(`${where}.paths: expected a non-empty list of shard file names, received ${fmtValue(paths)}`);
    }
    const weights = own(g, 'weights');
    if (!Array.isArray(weights)) throw new ConfigError(`${where}.weights: expected a list of {"name", "shape", "dtype"}, received ${fmtValue(weights)}`);
    return { paths: paths.slice(), weights: weights.map((w, wi) => parseSpec(w, `${where}.weights[${wi}]`)) };
  });
}

function parseSpec(w: unknown, where: string): WeightSpec {
  if (!isRecord(w)) throw new ConfigError(`${where}: expected {"name", "shape", "dtype"}, received ${fmtValue(w)}`);
  checkOwnKeys(w, SPEC_KEYS, where);
  const name = own(w, 'name');
  if (typeof name !== 'string' || name === '') throw new ConfigError(`${where}: expected "name" to be a non-empty string, received ${fmtValue(name)}`);
  const at = `${where} "${name}"`;
  const shape = own(w, 'shape');
  if (!Array.isArray(shape) || shape.some((d) => !Number.isSafeInteger(d) || d < 0)) {
    throw new ConfigError(`${at}: expected "shape" to be a list of non-negative integers, received ${fmtValue(shape)}`);
  }
  const size = shape.reduce((n: number, d: number) => n * d, 1);
  if (!Number.isSafeInteger(size)) throw new ConfigError(`${at}: shape ${fmtShape(shape)} has ${size} elements, more than any shard can hold`);
  const dtype = own(w, 'dtype');
  if (dtype !== 'float32' && dtype !== 'int32') {
    throw new ConfigError(`${at}: expected "dtype" float32 or int32 (the dtypes of layer weights), received ${fmtValue(dtype)}`);
  }
  const q = own(w, 'quantization');
  const spec: WeightSpec = { name, shape: shape.slice(), dtype };
  if (q === undefined || q === null) return spec;
  if (!isRecord(q)) throw new ConfigError(`${at}: expected "quantization" to be {"dtype", "scale", "min"}, received ${fmtValue(q)}`);
  checkOwnKeys(q, ['dtype', 'scale', 'min', 'original_dtype'], `${at} quantization`);
  const qd = own(q, 'dtype');
  if (qd !== 'uint8' && qd !== 'uint16' && qd !== 'float16') {
    throw new ConfigError(`${at}: expected quantization dtype uint8, uint16 or float16 (as tfjs), received ${fmtValue(qd)}`);
  }
  if (qd === 'float16') {
    if (dtype !== 'float32') throw new ConfigError(`${at}: float16 quantization holds float32 weights only (as tfjs), received dtype ${dtype}`);
    spec.quantization = { dtype: qd };
    return spec;
  }
  const scale = own(q, 'scale');
  const min = own(q, 'min');
  if (typeof scale !== 'number' || !Number.isFinite(scale) || typeof min !== 'number' || !Number.isFinite(min)) {
    throw new ConfigError(`${at}: ${qd} quantization needs finite numbers "scale" and "min", received scale ${fmtValue(scale)}, min ${fmtValue(min)}`);
  }
  spec.quantization = { dtype: qd, scale, min };
  return spec;
}

/** Bytes an entry occupies in its group: elements × bytes per stored value. */
export function weightByteLength(spec: WeightSpec): number {
  const size = spec.shape.reduce((n, d) => n * d, 1);
  return size * (spec.quantization ? QUANT_BYTES[spec.quantization.dtype] : 4);
}

function asBytes(b: unknown): Uint8Array | null {
  if (b instanceof ArrayBuffer) return new Uint8Array(b);
  if (ArrayBuffer.isView(b)) return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  return null;
}

/**
 * Decodes every tensor of a manifest from its shards, as tfjs-core's `decodeWeights` does, but
 * refusing what tfjs would misread.
 * @throws ConfigError when a shard is missing or not bytes; ShapeError when a group's bytes are
 * fewer or more than its entries need (naming the files, the tensor and both byte counts).
 * @example
 * const [w] = decodeWeights(groups, { 'weights.bin': new Float32Array([1, 2, 3, 4, 5, 6]).buffer });
 * w.values; // Float32Array [1, 2, 3, 4, 5, 6], w.shape [3, 2]
 */
export function decodeWeights(groups: readonly WeightsGroup[], shards: ShardSource): DecodedWeight[] {
  const lookup = (p: string): ShardBytes | undefined => (typeof shards === 'function' ? shards(p) : Object.hasOwn(shards, p) ? shards[p] : undefined);
  const out: DecodedWeight[] = [];
  for (const [gi, g] of groups.entries()) {
    const parts = g.paths.map((p) => {
      const bytes = asBytes(lookup(p));
      if (!bytes) throw new ConfigError(`weights file ${JSON.stringify(p)} (weightsManifest[${gi}]): missing; it holds ${g.weights.map((w) => w.name).join(', ') || 'no tensors'}`);
      return bytes;
    });
    const total = parts.reduce((n, b) => n + b.byteLength, 0);
    const files = `weights file${g.paths.length > 1 ? 's' : ''} ${g.paths.map((p) => JSON.stringify(p)).join(' + ')}`;
    const need = g.weights.reduce((n, w) => n + weightByteLength(w), 0);
    let offset = 0;
    for (const spec of g.weights) {
      const len = weightByteLength(spec);
      if (offset + len > total) {
        throw new ShapeError(`${files}: tensor "${spec.name}" ${fmtShape(spec.shape)} needs bytes ${offset}..${offset + len} (${len} bytes), but the file${g.paths.length > 1 ? 's hold' : ' holds'} ${total} bytes; the manifest describes ${need}`);
      }
      out.push({ name: spec.name, shape: spec.shape, values: decodeOne(spec, concatRange(parts, offset, len)), files: g.paths });
      offset += len;
    }
    if (offset !== total) throw new ShapeError(`${files}: hold ${total} bytes, but the manifest's tensors (${g.weights.map((w) => w.name).join(', ') || 'none'}) take ${need}`);
  }
  return out;
}

/** `len` bytes from `offset` of the concatenation of `parts`, copied only where a tensor crosses shards. */
function concatRange(parts: Uint8Array[], offset: number, len: number): Uint8Array {
  const out = new Uint8Array(len);
  let pos = 0;
  let base = 0;
  for (const p of parts) {
    const lo = Math.max(offset - base, 0);
    const hi = Math.min(offset + len - base, p.byteLength);
    if (hi > lo) {
      out.set(p.subarray(lo, hi), pos);
      pos += hi - lo;
    }
    base += p.byteLength;
  }
  return out;
}

function decodeOne(spec: WeightSpec, bytes: Uint8Array): Float32Array | Int32Array {
  // Explicit little-endian reads: tfjs' typed-array views assume a little-endian host.
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const q = spec.quantization;
  if (!q) {
    const n = bytes.byteLength / 4;
    if (spec.dtype === 'int32') {
      const v = new Int32Array(n);
      for (let i = 0; i < n; i++) v[i] = view.getInt32(4 * i, true);
      return v;
    }
    const v = new Float32Array(n);
    for (let i = 0; i < n; i++) v[i] = view.getFloat32(4 * i, true);
    return v;
  }
  const w = QUANT_BYTES[q.dtype];
  const n = bytes.byteLength / w;
  const raw = (i: number): number => (w === 1 ? view.getUint8(i) : view.getUint16(2 * i, true));
  if (q.dtype === 'float16') {
    const v = new Float32Array(n);
    for (let i = 0; i < n; i++) v[i] = halfToFloat(raw(i));
    return v;
  }
  const { scale = 1, min = 0 } = q;
  if (spec.dtype === 'int32') {
    const v = new Int32Array(n);
    for (let i = 0; i < n; i++) v[i] = Math.round(raw(i) * scale + min);
    return v;
  }
  const v = new Float32Array(n);
  for (let i = 0; i < n; i++) v[i] = raw(i) * scale + min;
  return v;
}

/** IEEE 754 binary16 bits → the number (exact; what tfjs' table-driven decoder gives). */
export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 0x1f) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

/** A tensor to encode: its manifest name, shape and row-major values. */
export interface NamedValues {
  /** Manifest name, `<layer>/<param>`. */
  name: string;
  /** The tensor's shape. */
  shape: readonly number[];
  /** Row-major values. */
  values: ArrayLike<number>;
}

/** What {@link encodeWeights} returns: the manifest entries and the shard they describe. */
export interface EncodedWeights {
  /** One entry per tensor, in byte order. */
  specs: WeightSpec[];
  /** The shard: every tensor, float32 little-endian, back to back. */
  data: ArrayBuffer;
}

/**
 * Encodes tensors as one float32 little-endian shard and its manifest entries (the form
 * tfjs-layers' own `model.save` writes). Values are rounded to float32, the only float dtype of the
 * format; non-finite values are refused, naming the tensor and the index.
 * @example
 * const { specs, data } = encodeWeights([{ name: 'dense/kernel', shape: [3, 2], values: kernel.data }]);
 * // specs [{ name: 'dense/kernel', shape: [3, 2], dtype: 'float32' }], data: 24 bytes
 */
export function encodeWeights(tensors: readonly NamedValues[]): EncodedWeights {
  const total = tensors.reduce((n, t) => n + 4 * t.values.length, 0);
  const data = new ArrayBuffer(total);
  const view = new DataView(data);
  let offset = 0;
  const specs = tensors.map((t) => {
    const size = t.shape.reduce((n, d) => n * d, 1);
    if (size !== t.values.length) throw new ShapeError(`tensor "${t.name}": shape ${fmtShape(t.shape)} needs ${size} values, received ${t.values.length}`);
    for (let i = 0; i < t.values.length; i++) {
      const v = t.values[i];
      if (!Number.isFinite(v)) throw new ShapeError(`tensor "${t.name}": expected finite values, received ${v} at flat index ${i}`);
      view.setFloat32(offset, v, true);
      offset += 4;
    }
    return { name: t.name, shape: t.shape.slice(), dtype: 'float32' as const };
  });
  return { specs, data };
}

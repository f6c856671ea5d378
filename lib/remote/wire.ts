/**
 * The wire of the remote stages (issue #15): `proto/stage.proto` loaded with `@grpc/proto-loader`,
 * tensors encoded as raw little-endian bytes with their shape and dtype, every incoming tensor
 * checked (shape against the stage, dtype, byte length, size against the configured maximum,
 * finite values) before a tensor is made of it, the shared token compared in constant time, and
 * the loopback addresses this slice is limited to.
 * @module
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ConfigError, JacobianChainError, fmtShape, fmtValue } from '../errors.js';
import { type DType, type Tensor, bytesPerElement, contiguous, dtypeOf, tensor } from '../tensor.js';

/** A tensor as it is on the wire (`proto/stage.proto`'s `Tensor`): shape, dtype and little-endian bytes. */
export interface WireTensor {
  /** Per-axis sizes, batch axis first. */
  shape: number[];
  /** `float64` or `float32`. */
  dtype: string;
  /** `prod(shape) · bytesPerElement(dtype)` little-endian bytes. */
  data: Uint8Array;
}

/** The parameters of one layer on the wire. */
export interface WireLayer {
  /** Kernel, bias, … in Keras order. */
  params: WireTensor[];
}

/** The default largest message (and tensor), in bytes: 64 MiB, far above a batch of the seed's CNN activations. */
export const DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

/**
 * The HTTP/2 flow-control window both sides advertise (capped at the largest message): 4 MiB
 * instead of HTTP/2's 64 KiB, so that a pipelined micro-batch's activation flows while its sender
 * computes the next one rather than waiting on WINDOW_UPDATEs the busy sender cannot read.
 */
export const FLOW_WINDOW_BYTES = 4 * 1024 * 1024;

/** Metadata key of the shared token. */
export const TOKEN_KEY = 'jc-token';

/**
 * An error meant for the peer: a gRPC status code and a message quoting what was received and
 * what was expected. The server answers with it; the client rethrows what it received as one.
 */
export class RemoteError extends JacobianChainError {
  constructor(
    message: string,
    /** The gRPC status code (`grpc.status.INVALID_ARGUMENT`, …). */
    readonly code: grpc.status,
  ) {
    super(message);
  }
}

/** Name of a gRPC status code: `INVALID_ARGUMENT`. */
export function statusName(code: number): string {
  return (grpc.status as unknown as Record<number, string>)[code] ?? `status ${code}`;
}

function protoPath(): string {
  // From the sources (lib/remote) and from the build (dist/lib/remote), the same proto/ folder.
  for (const rel of ['../../proto/stage.proto', '../../../proto/stage.proto']) {
    const p = fileURLToPath(new URL(rel, import.meta.url));
    if (existsSync(p)) return p;
  }
  throw new ConfigError(`remote stages: cannot find proto/stage.proto beside ${fileURLToPath(import.meta.url)}`);
}

/** The `Stage` service's definition, loaded once from `proto/stage.proto`. */
let service: grpc.ServiceDefinition | null = null;

/** The `jacobian_chain.remote.v1.Stage` service definition (methods, serializers) from `proto/stage.proto`. */
export function stageService(): grpc.ServiceDefinition {
  if (!service) {
    const def = protoLoader.loadSync(protoPath(), { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true });
    service = (def['jacobian_chain.remote.v1.Stage'] as unknown as grpc.ServiceDefinition);
  }
  return service;
}

/** Little-endian hosts copy the buffer as it is; a big-endian one goes value by value. */
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** A tensor's values as wire bytes: row-major, little-endian. */
export function encodeTensor(t: Tensor): WireTensor {
  const c = contiguous(t);
  const dtype = dtypeOf(c);
  const values = c.data.subarray(c.offset, c.offset + c.size);
  const bpe = bytesPerElement(dtype);
  let data: Uint8Array;
  if (LITTLE_ENDIAN) {
    data = new Uint8Array(values.buffer, values.byteOffset, values.length * bpe);
  } else {
    data = new Uint8Array(values.length * bpe);
    const view = new DataView(data.buffer);
    for (let i = 0; i < values.length; i++) dtype === 'float64' ? view.setFloat64(i * 8, values[i], true) : view.setFloat32(i * 4, values[i], true);
  }
  return { shape: c.shape.slice(), dtype, data };
}

/** What an incoming tensor must be. */
export interface TensorExpectation {
  /** `[B, ...per-sample]` with `null` where any positive extent goes (the batch axis). */
  shape: readonly (number | null)[];
  /** The stage's dtype. */
  dtype: DType;
  /** Largest byte length accepted. */
  maxBytes: number;
}

/**
 * Decodes a wire tensor after checking everything about it, cheapest first: that it is there, its
 * shape (rank and extents against `expect.shape`), its dtype, its byte length against the shape
 * and against `expect.maxBytes` (before anything is allocated), then every value finite.
 * @throws RemoteError with INVALID_ARGUMENT (or RESOURCE_EXHAUSTED for the size) quoting what was received and expected.
 * @example
 * decodeTensor(req.x, { shape: [null, 9, 9, 6], dtype: 'float64', maxBytes: 1 << 26 }, 'model_1 Forward x'); // Tensor [B, 9, 9, 6]
 */
export function decodeTensor(m: WireTensor | null | undefined, expect: TensorExpectation, what: string): Tensor {
  const bad = (msg: string, code = grpc.status.INVALID_ARGUMENT) => new RemoteError(`${what}: ${msg}`, code);
  if (!m || typeof m !== 'object') throw bad(`expected a tensor, received ${m === null || m === undefined ? 'none' : typeof m}`);
  const shape = m.shape;
  if (!Array.isArray(shape) || shape.length !== expect.shape.length || shape.some((d, i) => !Number.isSafeInteger(d) || d <= 0 || (expect.shape[i] !== null && d !== expect.shape[i]))) {
    throw bad(`expected shape ${fmtShape(expect.shape.map((d) => d ?? 'B'))}, received ${fmtShape(shape)}`);
  }
  if (m.dtype !== expect.dtype) throw bad(`expected dtype ${expect.dtype} (the stage's), received ${fmtValue(m.dtype)}`);
  const bpe = bytesPerElement(expect.dtype);
  let size = 1;
  for (const d of shape) size *= d;
  const need = size * bpe;
  if (need > expect.maxBytes) throw bad(`shape ${fmtShape(shape)} is ${need} bytes, over the server's maximum of ${expect.maxBytes}`, grpc.status.RESOURCE_EXHAUSTED);
  const bytes = m.data;
  if (!(bytes instanceof Uint8Array) || bytes.byteLength !== need) {
    throw bad(`shape ${fmtShape(shape)} of ${expect.dtype} needs ${need} bytes, received ${bytes instanceof Uint8Array ? bytes.byteLength : typeof bytes}`);
  }
  // A fresh, aligned buffer: the message's bytes may sit at any offset of a larger one.
  const values = expect.dtype === 'float64' ? new Float64Array(size) : new Float32Array(size);
  if (LITTLE_ENDIAN) {
    new Uint8Array(values.buffer).set(bytes);
  } else {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let i = 0; i < size; i++) values[i] = expect.dtype === 'float64' ? view.getFloat64(i * 8, true) : view.getFloat32(i * 4, true);
  }
  for (let i = 0; i < size; i++) {
    const v = values[i];
    if (v - v !== 0) throw bad(`expected finite values, received ${v} at flat index ${i} of ${fmtShape(shape)}`);
  }
  return tensor(values, shape, expect.dtype);
}

/**
 * Whether `received` is the token, compared in constant time: both are hashed first, so that
 * neither their contents nor their lengths shape the time of the comparison.
 */
export function tokenMatches(expected: string, received: unknown): boolean {
  if (typeof received !== 'string') return false;
  const a = createHash('sha256').update(expected, 'utf8').digest();
  const b = createHash('sha256').update(received, 'utf8').digest();
  return timingSafeEqual(a, b);
}

/** The loopback hosts this slice listens on and connects to (other hosts come with the slice that requires TLS for them). */
export const LOOPBACK_HOSTS = ['127.0.0.1', '::1', 'localhost'] as const;

/** A loopback host and a port. */
export interface LoopbackAddress {
  /** `127.0.0.1`, `::1` or `localhost`. */
  host: string;
  /** In 0..65535. */
  port: number;
}

/** `host:port` (or `[::1]:port`) parsed and checked: a loopback host and a port in 0..65535. */
export function parseAddress(text: string, what: string): LoopbackAddress {
  const m = /^\s*(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})\s*$/.exec(text);
  const host = m ? (m[1] ?? m[2]) : '';
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new ConfigError(`${what}: expected host:port like 127.0.0.1:50051, received ${fmtValue(text)}`);
  checkLoopback(host, what);
  return { host, port };
}

/** Refuses a host that is not loopback: this slice serves and reaches only this machine. */
export function checkLoopback(host: string, what: string): void {
  if (!(LOOPBACK_HOSTS as readonly string[]).includes(host)) {
    throw new ConfigError(`${what}: expected a loopback host (${LOOPBACK_HOSTS.join(', ')}), received ${fmtValue(host)}; this slice serves and reaches only this machine`);
  }
}

/** The address as gRPC writes it: `127.0.0.1:50051`, `[::1]:50051`. */
export function grpcAddress(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

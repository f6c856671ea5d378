/**
 * Checkpoints of split training (issue #15): each side writes its own state every K steps as one
 * JSON file `<side>-<steps>.json` in its checkpoint folder, atomically (a temporary file, fsync,
 * rename: a reader sees the old file or the new one, never half of one), keeping the last few so
 * that the two sides can always meet at a step both have saved. Floats are stored as base64 of
 * their little-endian bytes, so a restored weight or optimizer slot is the saved one bit for bit.
 * @module
 */
import { mkdirSync, readFileSync, readdirSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, fmtValue } from '../errors.js';
import { writeFileAtomic } from '../model-io.js';
import type { Param } from '../layers/layer.js';
import type { Optimizer, OptimizerSlots } from '../optimizers.js';
import { type DType, type Tensor, contiguous, dtypeOf, tensor } from '../tensor.js';

/** Where and how often a side checkpoints. */
export interface CheckpointOptions {
  /** The folder (created if missing); one per side: the client's and the server's must differ. */
  dir: string;
  /** Write a checkpoint after every `every` steps (a positive integer). */
  every: number;
  /** How many of the newest checkpoints to keep; default 3 (the two sides are at most one checkpoint apart). */
  keep?: number;
}

/** Floats as JSON: base64 of their little-endian bytes. */
export interface FloatsJSON {
  /** `float64` or `float32`. */
  dtype: DType;
  /** The values' bytes, base64. */
  base64: string;
}

/** A tensor as a checkpoint stores it. */
export interface CheckpointTensor extends FloatsJSON {
  /** Its shape. */
  shape: number[];
}

/** An optimizer's slots of one parameter, as a checkpoint stores them. */
export interface CheckpointSlots {
  /** Steps the parameter has taken. */
  t: number;
  /** First slot (SGD velocity, Adam's m). */
  a: string;
  /** Second slot (Adam's v; empty for SGD). */
  b: string;
}

/** Checks `opts` and returns them with the default `keep`. */
export function checkCheckpointOptions(opts: CheckpointOptions, what: string): Required<CheckpointOptions> {
  if (!opts || typeof opts !== 'object' || typeof opts.dir !== 'string' || opts.dir === '') throw new ConfigError(`${what}: expected checkpoint {dir, every}, received ${fmtValue(opts)}`);
  if (!Number.isSafeInteger(opts.every) || opts.every <= 0) throw new ConfigError(`${what}: expected checkpoint every to be a positive integer, received ${fmtValue(opts.every)}`);
  const keep = opts.keep ?? 3;
  if (!Number.isSafeInteger(keep) || keep < 2) throw new ConfigError(`${what}: expected checkpoint keep to be an integer of at least 2, received ${fmtValue(opts.keep)}`);
  return { dir: opts.dir, every: opts.every, keep };
}

function bytesOfFloats(a: Float64Array | Float32Array): string {
  // Checkpoints are written and read on little-endian hosts (every platform Node ships on but s390x).
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');
}

function floatsOf(base64: string, dtype: DType, n: number, what: string): Float64Array | Float32Array {
  const bytes = Buffer.from(base64, 'base64');
  const bpe = dtype === 'float64' ? 8 : 4;
  if (bytes.byteLength !== n * bpe) throw new ConfigError(`${what}: expected ${n} ${dtype} values (${n * bpe} bytes), received ${bytes.byteLength} bytes`);
  const out = dtype === 'float64' ? new Float64Array(n) : new Float32Array(n);
  new Uint8Array(out.buffer).set(bytes);
  return out;
}

/** A tensor's exact bytes, for a checkpoint. */
export function tensorToCheckpoint(t: Tensor): CheckpointTensor {
  const c = contiguous(t);
  return { shape: c.shape.slice(), dtype: dtypeOf(c), base64: bytesOfFloats(c.data.subarray(c.offset, c.offset + c.size)) };
}

/** The tensor a checkpoint stored, checked against the shape expected. */
export function tensorFromCheckpoint(j: CheckpointTensor, shape: readonly number[], what: string): Tensor {
  if (!j || !Array.isArray(j.shape) || j.shape.join(',') !== shape.join(',') || (j.dtype !== 'float64' && j.dtype !== 'float32')) {
    throw new ConfigError(`${what}: expected a ${JSON.stringify(shape)} tensor, received ${fmtValue(j && { shape: j.shape, dtype: j.dtype })}`);
  }
  return tensor(floatsOf(j.base64, j.dtype, shape.reduce((a, b) => a * b, 1), what), shape.slice(), j.dtype);
}

/** The weights and optimizer slots of some parameters, as a checkpoint stores them. */
export interface CheckpointParams {
  /** Each parameter's value. */
  weights: CheckpointTensor[];
  /** Each parameter's optimizer slots, null for one never stepped. */
  slots: (CheckpointSlots | null)[];
}

/** The weights of `params` and the optimizer's slots for them, for a checkpoint. */
export function paramsToCheckpoint(params: readonly Param[], optimizer: Optimizer): CheckpointParams {
  return {
    weights: params.map((p) => tensorToCheckpoint(p.value)),
    slots: optimizer.saveState(params).map((s) => (s === null ? null : { t: s.t, a: bytesOfFloats(s.a), b: bytesOfFloats(s.b) })),
  };
}

/** Restores what {@link paramsToCheckpoint} saved into `params` and `optimizer`; everything is checked before anything is replaced. */
export function paramsFromCheckpoint(params: readonly Param[], optimizer: Optimizer, saved: CheckpointParams, what: string): void {
  if (!saved || !Array.isArray(saved.weights) || saved.weights.length !== params.length || !Array.isArray(saved.slots) || saved.slots.length !== params.length) {
    throw new ConfigError(`${what}: expected weights and optimizer slots of ${params.length} parameters, received ${fmtValue(saved && { weights: saved.weights?.length, slots: saved.slots?.length })}`);
  }
  const values = params.map((p, k) => tensorFromCheckpoint(saved.weights[k], p.value.shape, `${what} ${p.name}`));
  const slots: (OptimizerSlots | null)[] = saved.slots.map((s, k) => {
    if (s === null) return null;
    const n = params[k].value.size;
    const b = Buffer.from(s.b, 'base64').byteLength / 8;
    return { t: s.t, a: floatsOf(s.a, 'float64', n, `${what} ${params[k].name} slot a`) as Float64Array, b: floatsOf(s.b, 'float64', b, `${what} ${params[k].name} slot b`) as Float64Array };
  });
  optimizer.loadState(params, slots);
  params.forEach((p, k) => (p.value = values[k]));
}

/** The steps of the checkpoints `<side>-<steps>.json` in `dir`, ascending (none when the folder does not exist). */
export function listCheckpoints(dir: string, side: string): number[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const re = new RegExp(`^${side}-(\\d+)\\.json$`);
  return names.flatMap((n) => {
    const m = re.exec(n);
    return m ? [Number(m[1])] : [];
  }).sort((a, b) => a - b);
}

/** Writes `state` as `dir/<side>-<steps>.json` atomically, then removes all but the `keep` newest. Returns the path. */
export function writeCheckpoint(opts: Required<CheckpointOptions>, side: string, steps: number, state: object): string {
  mkdirSync(opts.dir, { recursive: true });
  const path = join(opts.dir, `${side}-${steps}.json`);
  writeFileAtomic(path, JSON.stringify({ format: `jacobian-chain/${side}-checkpoint`, version: 1, steps, ...state }));
  const all = listCheckpoints(opts.dir, side);
  for (const old of all.slice(0, Math.max(0, all.length - opts.keep))) unlinkSync(join(opts.dir, `${side}-${old}.json`));
  return path;
}

/** A checkpoint as read: what was saved, and its step count. */
export type SavedCheckpoint<T> = T & {
  /** Steps done when it was written. */
  steps: number
};

/** Reads the checkpoint of `side` at `steps`, checking its format. */
export function readCheckpoint<T>(dir: string, side: string, steps: number): SavedCheckpoint<T> {
  const path = join(dir, `${side}-${steps}.json`);
  let j: { format?: unknown; version?: unknown; steps?: unknown };
  try {
    j = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new ConfigError(`checkpoint ${JSON.stringify(path)}: cannot read it (${(e as Error).message})`);
  }
  if (j?.format !== `jacobian-chain/${side}-checkpoint` || j.version !== 1 || j.steps !== steps) {
    throw new ConfigError(`checkpoint ${JSON.stringify(path)}: expected format "jacobian-chain/${side}-checkpoint" version 1 at step ${steps}, received ${fmtValue({ format: j?.format, version: j?.version, steps: j?.steps })}`);
  }
  return j as SavedCheckpoint<T>;
}

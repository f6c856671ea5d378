/**
 * PyTorch as an optional peer of the bench: finds a `python3` that imports `torch`, runs
 * bench/torch_peer.py as a long-lived child and talks to it one JSON line per command, so that our
 * repeats and PyTorch's interleave in the same minutes. Models cross as a JSON header plus raw
 * little-endian float64/float32 files in Keras layouts (the peer converts them to NCHW / OIHW /
 * Linear [out, in] once, at load).
 * @example
 * const found = findTorch(); // { python: '/usr/bin/python3', ... } or { reason: 'no python3 imports torch: ...' }
 * const peer = await TorchPeer.start(found.python!);
 * await peer.load('cnn64', writeModel(dir, 'cnn64', layers, x, y, 'binary_crossentropy'));
 * const { ms } = await peer.send({ cmd: 'step', name: 'cnn64', threads: 1 });
 * @module
 */
import { type ChildProcessWithoutNullStreams, spawn, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { endianness } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Layer } from '../lib/layers/layer.js';
import { type Tensor, dtypeOf } from '../lib/tensor.js';

const here = dirname(fileURLToPath(import.meta.url));
/** The peer script; the compiled bench (dist-bench/bench) finds it in the sources' bench/. */
export const TORCH_PEER_SCRIPT = [join(here, 'torch_peer.py'), resolve(here, '..', '..', 'bench', 'torch_peer.py')].find((p) => {
  try {
    readFileSync(p);
    return true;
  } catch {
    return false;
  }
})!;

/** Where torch was found, or why not. */
export interface TorchFound {
  /** The interpreter that imports torch, when one does. */
  python: string | null;
  /** Why the peer is skipped, when it is. */
  reason: string | null;
}

/**
 * The first of `$JC_PYTHON`, `python3` on the PATH and `/usr/bin/python3` (Debian's
 * `python3-torch` installs there, beside a pyenv python3 that lacks it) that imports torch.
 */
export function findTorch(): TorchFound {
  const candidates = [process.env.JC_PYTHON, 'python3', '/usr/bin/python3'].filter((p): p is string => !!p);
  const tried: string[] = [];
  for (const py of [...new Set(candidates)]) {
    const r = spawnSync(py, ['-c', 'import torch, sys; print(torch.__version__)'], { encoding: 'utf8', timeout: 60_000 });
    if (r.status === 0) return { python: py, reason: null };
    const why = r.error ? r.error.message : (r.stderr.trim().split('\n').pop() ?? `exit ${r.status}`);
    tried.push(`${py}: ${why}`);
  }
  return { python: null, reason: `no python3 imports torch (${tried.join('; ')}); install Debian's python3-torch or set JC_PYTHON` };
}

function rawBytes(t: Tensor): Buffer {
  if (endianness() !== 'LE') throw new Error('torch peer: expected a little-endian machine (the raw files are little-endian)');
  const d = t.data;
  return Buffer.from(d.buffer, d.byteOffset, d.byteLength);
}

/** The JSON header the peer loads: the layers' configs and weights, the batch and the loss. */
export interface ModelHeader {
  /** `float64` or `float32`. */
  dtype: string;
  /** Per layer: its class, Keras config and weights (files in Keras layouts). */
  layers: { class: string; config: Record<string, unknown>; weights: { name: string; shape: number[]; file: string }[] }[];
  /** The batch, `[B, ...in]`, NHWC for images. */
  x: { file: string; shape: number[] };
  /** The labels, when a loss is computed. */
  y: { file: string; shape: number[] } | null;
  /** The loss name (`binary_crossentropy`, `mse`), when one is computed. */
  loss: string | null;
}

/** Writes a model's weights, a batch and labels for the peer into `dir`; returns the header's path. */
export function writeModel(dir: string, name: string, layers: readonly Layer[], x: Tensor, y: Tensor | null, loss: string | null): string {
  const file = (what: string, t: Tensor) => {
    const p = join(dir, `${name}-${what}.bin`);
    writeFileSync(p, rawBytes(t));
    return { file: p, shape: t.shape.slice() };
  };
  const header: ModelHeader = {
    dtype: dtypeOf(x),
    layers: layers.map((l, i) => ({ class: l.className, config: l.getConfig(), weights: l.params.map((p) => ({ name: p.name, ...file(`l${i}-${p.name}`, p.value) })) })),
    x: file('x', x),
    y: y ? file('y', y) : null,
    loss,
  };
  const p = join(dir, `${name}.json`);
  writeFileSync(p, JSON.stringify(header));
  return p;
}

/** Reads a float64 file the peer wrote. */
export function readFloat64(file: string, shape: readonly number[]): Float64Array {
  const b = readFileSync(file);
  const n = shape.reduce((a, d) => a * d, 1);
  if (b.byteLength !== n * 8) throw new Error(`torch peer: ${file}: expected ${n} float64 values for shape [${shape.join(', ')}], received ${b.byteLength} bytes`);
  return new Float64Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}

/** One answer line of the peer. */
export type PeerAnswer = { ok: true } & Record<string, unknown>;

/** The running peer: one command at a time, answered in order. */
export class TorchPeer {
  private buffer = '';
  private waiting: { resolve: (a: PeerAnswer) => void; reject: (e: Error) => void; what: string }[] = [];
  private stderr = '';
  private exited: string | null = null;

  private constructor(private readonly child: ChildProcessWithoutNullStreams) {
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (s: string) => {
      this.buffer += s;
      let nl: number;
      while ((nl = this.buffer.indexOf('\n')) >= 0) {
        const line = this.buffer.slice(0, nl);
        this.buffer = this.buffer.slice(nl + 1);
        const w = this.waiting.shift();
        if (!w) continue;
        const a = JSON.parse(line) as { ok: boolean; error?: string };
        if (a.ok) w.resolve(a as PeerAnswer);
        else w.reject(new Error(`torch peer, ${w.what}: ${a.error}`));
      }
    });
    child.stderr.on('data', (d: Buffer) => {
      this.stderr = (this.stderr + d.toString()).slice(-4000);
    });
    child.on('exit', (code, signal) => {
      this.exited = `the torch peer exited (code ${code}, signal ${signal}): ${this.stderr.trim().split('\n').slice(-3).join(' | ')}`;
      for (const w of this.waiting.splice(0)) w.reject(new Error(this.exited));
    });
  }

  /** Starts bench/torch_peer.py under `python`. */
  static start(python: string): TorchPeer {
    // One OpenMP thread pool sized by torch.set_num_threads per command; nothing else spins.
    const env = { ...process.env, OMP_WAIT_POLICY: 'PASSIVE' };
    return new TorchPeer(spawn(python, ['-u', TORCH_PEER_SCRIPT], { stdio: ['pipe', 'pipe', 'pipe'], env }));
  }

  /** Sends one command and waits for its answer (rejects with the peer's error). */
  send(cmd: { cmd: string } & Record<string, unknown>): Promise<PeerAnswer> {
    if (this.exited) return Promise.reject(new Error(this.exited));
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject, what: `${cmd.cmd}${cmd.name ? ` ${String(cmd.name)}` : ''}` });
      this.child.stdin.write(`${JSON.stringify(cmd)}\n`);
    });
  }

  /** Loads a model written by {@link writeModel}. */
  async load(name: string, header: string): Promise<void> {
    await this.send({ cmd: 'load', name, header });
  }

  /** Ends the peer (closing its stdin ends its read loop). */
  close(): Promise<void> {
    if (this.exited) return Promise.resolve();
    return new Promise((res) => {
      this.child.once('exit', () => res());
      this.child.stdin.end();
    });
  }
}

/**
 * `jacobian-chain serve`: hosts the downstream stages of a model file behind the gRPC `Stage`
 * service (proto/stage.proto) on a loopback port, for `jacobian-chain train --connect` to train
 * across processes (by the VJP way, or by the explicit way, shipping its batch Jacobian when asked);
 * one line per step: bytes in and out, compute time, the bytes the hosted stages held.
 */
import { readFileSync } from 'node:fs';
import { loadModelFile } from '../../lib/model-io.js';
import { splitAfterLastPooling } from '../../lib/models.js';
import { StageServer } from '../../lib/remote/server.js';
import { DEFAULT_MAX_MESSAGE_BYTES, LOOPBACK_HOSTS } from '../../lib/remote/wire.js';
import type { Sequential } from '../../lib/sequential.js';
import { type Tensor, fromJSON } from '../../lib/tensor.js';
import { UsageError, check, choice, dtype, integer, nonNegativeInt, parseCommand, parseOptions, positiveInt, positiveNumber, refuse, splitPoints } from '../args.js';
import { cnnWidths, mnistCnn, mnistRows, mnistTask } from './mnist-data.js';
import { EXIT, InputFileError } from '../exit-codes.js';

const HELP = `usage: jacobian-chain serve --model <file> --stages <a..> [options]

Hosts stages of a model file, split at --split, behind the gRPC Stage service (proto/stage.proto):
a client (jacobian-chain train --connect) runs the stages before them and sends the activation;
the cotangent comes back the same way (or, with train --ship-jacobian, this server answers its
stages' batch Jacobian dOut/dIn and gets dLoss/dOut back), and this server's optimizer steps its
own weights, once per step id. Every incoming tensor is checked (shape, dtype, byte length, size,
finite values) and a refused call leaves the server serving. One line per step: bytes received
and sent, compute time, bytes held. Stops on SIGINT or SIGTERM, or after --max-seconds.

options:
  --model <file>            the model file, weights included (the client loads the same file)
  --cnn                     instead of --model: the cats-vs-dogs CNN on 28x28x1 images that
                            "train --digits" trains, its weights from --seed, --filters, --units
  --filters <a,b,c>         with --cnn: filters of the three Conv2D layers (default 32,32,64)
  --units <n>               with --cnn: units of the hidden Dense layer (default 64)
  --seed <n>                seed of --cnn's weights and of --digits' split (default 0)
  --split <i[,j...]>        layer indices where a new stage starts (default: after the last pooling layer)
  --stages <a..[b]>         the stages hosted: "1.." (stage 1 to the last), "1..2", "2"
  --port <n>                port on the host (default 50051; 0 picks a free one, printed)
  --host <h>                ${LOOPBACK_HOSTS.join(', ')} (default 127.0.0.1): this slice serves only this machine
  --token <t>               a shared token every call must carry (compared in constant time)
  --labels <file>           hold the labels here: a JSON tensor {"shape": [N, ...out], "data": [...]},
                            row i the label of example i; the client sends example ids, never labels
  --digits <a,b>            hold MNIST labels here: those of the training rows "train --connect
                            --digits" trains on (same --digits, --seed, --validation-split,
                            --test-fraction, --limit), for train --labels-on-server
  --validation-split <x>    with --digits (default 0.1)
  --test-fraction <x>       with --digits (default 0.2)
  --limit <n>               with --digits: at most n images per digit (default: all)
  --tls-cert <file>         serve TLS with this PEM certificate chain (and --tls-key)
  --tls-key <file>          the certificate's PEM private key
  --max-message-bytes <n>   largest message and tensor accepted or sent (default ${DEFAULT_MAX_MESSAGE_BYTES}); a batch
                            Jacobian that would not fit is refused from its shape, before it is built
  --checkpoint <dir>        checkpoint the hosted weights, optimizer state and applied-step record here
                            (atomically); started on a folder with checkpoints, resume from the newest
  --checkpoint-every <k>    steps between checkpoints (default 10)
  --max-clients <n>         data holders served at once, each with its own model_0 and step ids, the
                            hosted stages shared and stepped one client's step at a time (default 64;
                            with --checkpoint, one)
  --lease-ms <n>            a client holding the hosted stages for its step and silent this long while
                            another waits loses that step (default 10000)
  --max-seconds <s>         stop after s seconds (default: run until a signal)
  --dtype <type>            float64 (default) or float32
  -h, --help                this text

examples:
  npx tsx bin/cli.ts serve --model m.json --split 3 --stages 1.. --port 50051
  npx tsx bin/cli.ts serve --cnn --stages 1.. --port 50051
`;

const OPTIONS = {
  model: 'string',
  split: 'string',
  stages: 'string',
  port: 'string',
  host: 'string',
  token: 'string',
  labels: 'string',
  'tls-cert': 'string',
  'tls-key': 'string',
  'max-message-bytes': 'string',
  'max-seconds': 'string',
  checkpoint: 'string',
  'checkpoint-every': 'string',
  'max-clients': 'string',
  'lease-ms': 'string',
  dtype: 'string',
  cnn: 'boolean',
  filters: 'string',
  units: 'string',
  seed: 'string',
  digits: 'string',
  'validation-split': 'string',
  'test-fraction': 'string',
  limit: 'string',
} as const;

/** `1..`, `1..2` or `2`: a range of stage indices, the end open or inclusive. */
export const stageRange = check('like "1..", "1..2" or "2"', (text) => {
  const m = /^\s*(\d+)\s*(?:(\.\.)\s*(\d+)?)?\s*$/.exec(text);
  if (!m) return undefined;
  const from = Number(m[1]);
  const to = m[2] ? (m[3] === undefined ? null : Number(m[3])) : from;
  return to !== null && to < from ? undefined : { from, to };
});

/** The stages `range` names of `model.split(split)`, refused naming the count when out of range. */
export function pickStages(stages: Sequential[], range: { from: number; to: number | null }, flag: string): Sequential[] {
  const to = range.to ?? stages.length - 1;
  if (range.from >= stages.length || to >= stages.length) throw new UsageError(`expected ${flag} within the ${stages.length} stages (0..${stages.length - 1}) of the split, received ${range.from}..${range.to ?? ''}`);
  return stages.slice(range.from, to + 1);
}

/** `--checkpoint <dir>` and `--checkpoint-every <k>` (default 10) as checkpoint options, or undefined without `--checkpoint`. */
export function checkpointOption(dir: string | undefined, every: string | undefined): { dir: string; every: number } | undefined {
  const k = positiveInt(every, '--checkpoint-every');
  if (dir === undefined) {
    if (k !== undefined) throw new UsageError('expected --checkpoint <dir> with --checkpoint-every, received only --checkpoint-every');
    return undefined;
  }
  if (dir === '') throw new UsageError('expected --checkpoint to be a folder, received ""');
  return { dir, every: k ?? 10 };
}

/** A file's bytes, or an {@link InputFileError} naming the flag and the path. */
export function readInput(path: string, flag: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new InputFileError(`${flag}: cannot read ${JSON.stringify(path)} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
}

/** Runs the command until a signal or --max-seconds; returns the exit code (0 stopped cleanly, 2 bad options, 3 bad model file). */
export async function run(argv: string[]): Promise<number> {
  const o = parseCommand('serve', HELP, () => {
    const v = parseOptions(argv, OPTIONS);
    if (v === 'help') return v;
    if (v.model === undefined && !v.cnn) throw new UsageError('expected --model <file>, received none (or --cnn, the CNN train --digits trains)');
    if (v.model !== undefined && v.cnn) throw new UsageError('expected --model <file> or --cnn, received both');
    if (!v.cnn && (v.filters !== undefined || v.units !== undefined)) throw new UsageError(`--filters and --units shape the CNN of --cnn; received ${v.filters !== undefined ? '--filters' : '--units'} with --model`);
    if (v.digits !== undefined && v.labels !== undefined) throw new UsageError('expected --labels <file> or --digits, received both');
    if (v.digits === undefined && (v['validation-split'] !== undefined || v['test-fraction'] !== undefined || v.limit !== undefined)) throw new UsageError('--validation-split, --test-fraction and --limit are options of --digits; received them without --digits');
    const range = stageRange(v.stages, '--stages');
    if (!range) throw new UsageError('expected --stages, like "1..", received none');
    const host = choice([...LOOPBACK_HOSTS])(v.host, '--host') ?? '127.0.0.1';
    if (v.token !== undefined && v.token === '') throw new UsageError('expected --token to be non-empty, received ""');
    if ((v['tls-cert'] === undefined) !== (v['tls-key'] === undefined)) throw new UsageError(`expected --tls-cert and --tls-key together, received only ${v['tls-cert'] === undefined ? '--tls-key' : '--tls-cert'}`);
    return {
      labels: v.labels,
      tlsCert: v['tls-cert'],
      tlsKey: v['tls-key'],
      model: v.model ?? null,
      cnn: v.cnn ? cnnWidths(v) : null,
      seed: nonNegativeInt(v.seed, '--seed') ?? 0,
      mnist: v.digits === undefined ? null : mnistTask(v),
      split: splitPoints(v.split, '--split') ?? null,
      range,
      port: integer(0)(v.port, '--port') ?? 50051,
      host,
      token: v.token,
      maxBytes: positiveInt(v['max-message-bytes'], '--max-message-bytes') ?? DEFAULT_MAX_MESSAGE_BYTES,
      maxSeconds: positiveNumber(v['max-seconds'], '--max-seconds') ?? null,
      checkpoint: checkpointOption(v.checkpoint, v['checkpoint-every']),
      maxClients: positiveInt(v['max-clients'], '--max-clients') ?? 64,
      leaseMs: positiveInt(v['lease-ms'], '--lease-ms') ?? 10_000,
      dtype: dtype(v.dtype, '--dtype') ?? 'float64',
    };
  });
  if (typeof o === 'number') return o;
  if (o.port > 65535) return refuse('serve', new UsageError(`expected --port to be at most 65535, received ${o.port}`), true);

  let server: StageServer;
  let labels: Tensor | undefined;
  let hosted: Sequential[];
  try {
    let model;
    try {
      model = o.cnn ? mnistCnn({ ...o.cnn, seed: o.seed, dtype: o.dtype }) : loadModelFile(o.model!, { dtype: o.dtype });
    } catch (e) {
      throw new InputFileError((e as Error).message);
    }
    const all = model.split(o.split ?? splitAfterLastPooling(model));
    hosted = pickStages(all, o.range, '--stages');
    if (hosted[0] === all[0]) throw new UsageError('expected --stages to leave stage 0 to the client (it holds the input), received a range from 0');
    const tls = o.tlsCert !== undefined && o.tlsKey !== undefined ? { cert: readInput(o.tlsCert, '--tls-cert'), key: readInput(o.tlsKey, '--tls-key') } : undefined;
    if (o.mnist) labels = mnistRows(o.mnist, o.seed, o.dtype).train.y;
    if (o.labels !== undefined) {
      try {
        labels = fromJSON(JSON.parse(readInput(o.labels, '--labels').toString('utf8')), o.dtype);
      } catch (e) {
        throw e instanceof InputFileError ? e : new InputFileError(`--labels ${JSON.stringify(o.labels)}: expected a JSON tensor {"shape": [N, ...], "data": [...]} (${(e as Error).message})`);
      }
    }
    server = new StageServer(hosted, { host: o.host, port: o.port, token: o.token, maxMessageBytes: o.maxBytes, tls, labels, checkpoint: o.checkpoint, maxClients: o.maxClients, leaseMs: o.leaseMs, log: (line) => console.log(line) });
    if (server.resumedFrom !== null) console.log(`resumed from the checkpoint at step ${server.resumedFrom} in ${o.checkpoint!.dir}`);
  } catch (e) {
    return refuse('serve', e);
  }
  let bound;
  try {
    bound = await server.listen();
  } catch (e) {
    return refuse('serve', e);
  }
  const first = hosted[0];
  const last = hosted[hosted.length - 1];
  console.log(`serving ${hosted.map((s) => s.name).join('+')} (layers ${first.layerOffset}..${last.layerOffset + last.layers.length - 1}, [B, ${first.inputShape.join(', ')}] -> [B, ${last.outputShape.join(', ')}], ${o.dtype})${labels ? `, holding ${labels.shape[0]} labels` : ''}${o.tlsCert ? ', TLS' : ''}${o.token ? ', token required' : ''}`);
  // The spec and scripts read the port from this line (with --port 0 it is the only place it is said).
  console.log(`listening on ${bound.host}:${bound.port}`);
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    if (o.maxSeconds !== null) setTimeout(stop, o.maxSeconds * 1000);
  });
  await server.close();
  console.log(`stopped after ${server.steps} steps`);
  return EXIT.ok;
}

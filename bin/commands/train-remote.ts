/**
 * `jacobian-chain train --connect host:port`: trains the first stages of a model file (or of the
 * cats-vs-dogs CNN) here and the stages a `jacobian-chain serve` hosts there as one model, by the
 * VJP way (the activation goes, the cotangent comes back) or by the seed's explicit way (the local
 * Jacobians contracted with the dLoss/dOut that comes back, or with the server's batch Jacobian
 * shipped instead); one line per step: loss, bytes sent and received, the time on the wire against
 * the compute here and there, the bytes each side held. With the same seeds the weights are those
 * of the single-process `fit`, bit for bit by the VJP way, within 1e-12 by the explicit one.
 */
import { loadModelFile, saveModelFile } from '../../lib/model-io.js';
import { seededBatch, splitAfterLastPooling } from '../../lib/models.js';
import { fmtBytes } from '../../lib/memory.js';
import type { OptimizerConfig } from '../../lib/optimizers.js';
import { RemoteStageRunner } from '../../lib/remote/client.js';
import { fitRemote } from '../../lib/remote/fit.js';
import { listCheckpoints } from '../../lib/remote/checkpoint.js';
import { LOSSES, type LossName } from '../../lib/losses.js';
import { checkpointOption, readInput } from './serve.js';
import { cnnWidths, mnistCnn, mnistRows, mnistTask } from './mnist-data.js';
import { fmtShape } from '../../lib/errors.js';
import { DEFAULT_MAX_MESSAGE_BYTES } from '../../lib/remote/wire.js';
import type { Sequential } from '../../lib/sequential.js';
import type { DType } from '../../lib/tensor.js';
import { evaluate } from '../../lib/train.js';
import { UsageError, check, choice, dtype, nonNegativeInt, numeric, parseCommand, parseOptions, positiveInt, positiveNumber, refuse, splitPoints, writablePath } from '../args.js';
import { EXIT, InputFileError } from '../exit-codes.js';

const HELP = `usage: jacobian-chain train --connect <host:port> --model <file> [options]

Trains the stages of a model file before those a "jacobian-chain serve" hosts (started with the
same file and --split) and the server's stages as one model: the activation is sent, dLoss/dOut
comes back, and each side's optimizer steps its own weights; the server applies each step id
once, however often it is retried. Per step: the loss, the bytes sent and received, the time on
the wire against the compute here and there, and the bytes each side held. The data: --examples
seeded random examples (labels 0 or 1), the same for the same --seed; or with --digits, MNIST
digits as "jacobian-chain train --digits" loads them (the same rows, validation split and
held-out test), scored on the held-out test at the end.

options:
  --connect <host:port>  the server: 127.0.0.1:50051 or [::1]:50051 (loopback only, in this slice)
  --model <file>         the model file the server was started with
  --cnn                  instead of --model: the cats-vs-dogs CNN on 28x28x1 images that
                         "train --digits" trains, its weights from --seed, --filters, --units
                         (start the server with serve --cnn and the same three)
  --filters <a,b,c>      with --cnn: filters of the three Conv2D layers (default 32,32,64)
  --units <n>            with --cnn: units of the hidden Dense layer (default 64)
  --split <i[,j...]>     the server's --split (default: after the last pooling layer)
  --method <m>           vjp (default; the cotangent crosses, each side runs its reverse pass) or
                         jacobian (the seed's explicit way: the local stages' Jacobians, dOut/dW and
                         dOut/dIn, built and contracted with the dLoss/dOut that comes back)
  --ship-jacobian        with --method jacobian: the server ships its stages' batch Jacobian
                         dOut/dIn [B, ...out, ...in] instead of the cotangent; it is contracted here
                         with dLoss/dY, and dLoss/dOut goes back for the server's weights. What the
                         seed's method sends over a network (not with --labels-on-server)
  --streamed             with --method jacobian: stream the local Jacobians (one block at a time)
  --max-message-bytes <n> largest message received or sent (default ${DEFAULT_MAX_MESSAGE_BYTES}; a shipped
                         Jacobian over it, or over the server's, is refused before it is built)
  --token <t>            the server's --token
  --client-id <id>       this data holder's id on a server shared by many (1 to 64 of [A-Za-z0-9._-]):
                         its own model_0 and step ids, the server's stages shared; default none (one client)
  --labels-on-server     the server holds the labels (serve --labels, one per --examples example, or
                         serve --digits with the same --digits, --seed and splits): each step names
                         its examples by index, the loss is computed there
  --tls-ca <file>        connect by TLS, trusting this PEM certificate (the server's --tls-cert, or its CA)
  --timeout-ms <n>       deadline of every call (default 30000)
  --examples <n>         seeded examples to train on (default 64)
  --digits <a,b>         train on MNIST digits instead: "3,8", "7,rest", "3+5,8" (as train --digits)
  --validation-split <x> with --digits: fraction of the training rows kept for validation (default 0.1)
  --test-fraction <x>    with --digits: fraction of each digit held out for the test (default 0.2)
  --limit <n>            with --digits: at most n images per digit (default: all)
  --loss <name>          ${LOSSES.join(', ')} (default binary_crossentropy)
  --epochs <n>           passes over the examples (default 1)
  --batch-size <n>       examples per step (default 32)
  --micro-batches <m>    pipeline each step GPipe-style in m micro-batches: the local forward of one
                         overlaps the server's work on the one before; the loss on the whole batch, one
                         update per step; the weights equal the unpipelined run's to rounding (default 1)
  --optimizer <name>     adam (default) or sgd, for both sides
  --lr <x>               learning rate (default 0.001 for adam, 0.05 for sgd)
  --momentum <x>         sgd momentum in [0, 1] (default 0.9)
  --nesterov             sgd with Nesterov momentum
  --seed <n>             seed of the examples (with --digits, of the split), of --cnn's weights, of
                         the shuffles and of the Dropout masks (default 0)
  --dtype <type>         float64 (default) or float32, as the server's
  --out <path>           write the trained model (both sides' weights) here
  --checkpoint <dir>     checkpoint the local weights, optimizer state, step count and data order here
                         every --checkpoint-every steps (atomically); with checkpoints in it, resume from
                         the newest, the server (serve --checkpoint) rolled to the same step
  --checkpoint-every <k> steps between checkpoints (default 10)
  -h, --help             this text

examples:
  npx tsx bin/cli.ts serve --model m.json --split 3 --stages 1.. --port 50051 &
  npx tsx bin/cli.ts train --connect 127.0.0.1:50051 --model m.json --split 3 --epochs 2
  npx tsx bin/cli.ts serve --cnn --stages 1.. --port 50051 &
  npx tsx bin/cli.ts train --connect 127.0.0.1:50051 --cnn --digits 3,8 --method jacobian --ship-jacobian
`;

const OPTIONS = {
  connect: 'string',
  model: 'string',
  split: 'string',
  token: 'string',
  'client-id': 'string',
  'tls-ca': 'string',
  'labels-on-server': 'boolean',
  'timeout-ms': 'string',
  examples: 'string',
  loss: 'string',
  epochs: 'string',
  'batch-size': 'string',
  'micro-batches': 'string',
  optimizer: 'string',
  lr: 'string',
  momentum: 'string',
  nesterov: 'boolean',
  seed: 'string',
  dtype: 'string',
  out: 'string',
  checkpoint: 'string',
  'checkpoint-every': 'string',
  cnn: 'boolean',
  filters: 'string',
  units: 'string',
  method: 'string',
  'ship-jacobian': 'boolean',
  streamed: 'boolean',
  'max-message-bytes': 'string',
  digits: 'string',
  'validation-split': 'string',
  'test-fraction': 'string',
  limit: 'string',
} as const;

/** The model both sides start from: the file, or the CNN of `--cnn` (its weights from `--seed`). */
function modelOf(o: { model: string | null; cnn: { filters: [number, number, number]; units: number } | null; seed: number; dtype: DType }): Sequential {
  if (o.cnn) return mnistCnn({ ...o.cnn, seed: o.seed, dtype: o.dtype });
  try {
    return loadModelFile(o.model!, { dtype: o.dtype });
  } catch (e) {
    throw new InputFileError((e as Error).message);
  }
}

/** Runs the command; returns the exit code (0 trained, 2 bad options or a refusal by the server, 3 bad model file, 5 non-finite, 6 a server refused, unreachable or stalled). */
export async function run(argv: string[]): Promise<number> {
  const o = parseCommand('train', HELP, () => {
    const v = parseOptions(argv, OPTIONS);
    if (v === 'help') return v;
    if (v.connect === undefined) throw new UsageError('expected --connect <host:port>, received none');
    if (v.model === undefined && !v.cnn) throw new UsageError('expected --model <file> (the one the server was started with), received none (or --cnn, the CNN serve --cnn hosts)');
    if (v.model !== undefined && v.cnn) throw new UsageError('expected --model <file> or --cnn, received both');
    if (!v.cnn && (v.filters !== undefined || v.units !== undefined)) throw new UsageError(`--filters and --units shape the CNN of --cnn; received ${v.filters !== undefined ? '--filters' : '--units'} with --model`);
    const method = choice(['vjp', 'jacobian'])(v.method, '--method') ?? 'vjp';
    for (const flag of ['ship-jacobian', 'streamed'] as const) {
      if (v[flag] && method !== 'jacobian') throw new UsageError(`expected --${flag} together with --method jacobian (it is a way of the explicit method), received --${flag} with ${v.method === undefined ? 'the default method vjp' : `--method ${method}`}`);
    }
    if (v['ship-jacobian'] && v['labels-on-server']) throw new UsageError('expected --ship-jacobian without --labels-on-server: the shipped Jacobian is contracted with dLoss/dY where the labels are');
    const mnist = v.digits !== undefined;
    if (mnist && v.examples !== undefined) throw new UsageError('expected --examples (seeded data) or --digits (MNIST), received both');
    if (!mnist && (v['validation-split'] !== undefined || v['test-fraction'] !== undefined || v.limit !== undefined)) throw new UsageError('--validation-split, --test-fraction and --limit are options of --digits; received them without --digits');
    const optName = choice(['adam', 'sgd'])(v.optimizer, '--optimizer') ?? 'adam';
    const lr = positiveNumber(v.lr, '--lr') ?? (optName === 'adam' ? 0.001 : 0.05);
    const momentum = numeric('to be a number in [0, 1]', (n) => n >= 0 && n <= 1)(v.momentum, '--momentum') ?? 0.9;
    if (optName === 'adam' && (v.momentum !== undefined || v.nesterov)) throw new UsageError('--momentum and --nesterov are sgd options; received them with --optimizer adam');
    if (v['micro-batches'] !== undefined && v['labels-on-server'] && v['micro-batches'].trim() !== '1') throw new UsageError(`expected --micro-batches 1 with --labels-on-server (the server's loss takes the whole batch), received --micro-batches ${v['micro-batches']}`);
    const optimizer: OptimizerConfig = optName === 'adam' ? { name: 'adam', learning_rate: lr } : { name: 'sgd', learning_rate: lr, momentum, nesterov: v.nesterov === true };
    return {
      connect: v.connect,
      model: v.model ?? null,
      cnn: v.cnn ? cnnWidths(v) : null,
      method,
      shipJacobian: v['ship-jacobian'] === true,
      streamed: v.streamed === true,
      maxBytes: positiveInt(v['max-message-bytes'], '--max-message-bytes') ?? DEFAULT_MAX_MESSAGE_BYTES,
      mnist: mnist ? mnistTask(v) : null,
      split: splitPoints(v.split, '--split') ?? null,
      token: v.token,
      clientId: check('to be 1 to 64 of [A-Za-z0-9._-]', (t) => (/^[A-Za-z0-9._-]{1,64}$/.test(t) ? t : undefined))(v['client-id'], '--client-id'),
      tlsCa: v['tls-ca'],
      labelsOnServer: v['labels-on-server'] === true,
      timeoutMs: positiveInt(v['timeout-ms'], '--timeout-ms') ?? 30000,
      examples: positiveInt(v.examples, '--examples') ?? 64,
      loss: choice<LossName>(LOSSES)(v.loss, '--loss') ?? 'binary_crossentropy',
      epochs: positiveInt(v.epochs, '--epochs') ?? 1,
      batchSize: positiveInt(v['batch-size'], '--batch-size') ?? 32,
      microBatches: positiveInt(v['micro-batches'], '--micro-batches') ?? 1,
      optimizer,
      seed: nonNegativeInt(v.seed, '--seed') ?? 0,
      dtype: dtype(v.dtype, '--dtype') ?? 'float64',
      out: v.out === undefined ? null : writablePath(v.out, '--out'),
      checkpoint: checkpointOption(v.checkpoint, v['checkpoint-every']),
    };
  });
  if (typeof o === 'number') return o;

  let remote: RemoteStageRunner | null = null;
  try {
    const model = modelOf(o);
    const stages = model.split(o.split ?? splitAfterLastPooling(model));
    const mnist = o.mnist ? mnistRows(o.mnist, o.seed, o.dtype) : null;
    const tls = o.tlsCa === undefined ? undefined : { ca: readInput(o.tlsCa, '--tls-ca') };
    remote = await RemoteStageRunner.connect({ address: o.connect, model: stages, token: o.token, clientId: o.clientId, timeoutMs: o.timeoutMs, maxMessageBytes: o.maxBytes, tls, loss: o.labelsOnServer ? o.loss : undefined }, o.optimizer);
    const firstRemote = remote.stages[0].firstLayer;
    const local = stages.filter((s) => s.layerOffset < firstRemote);
    const first = local[0];
    const data = mnist ? mnist.train : seededBatch(first.inputShape, { batch: o.examples, seed: o.seed, dtype: o.dtype, labels: remote.outputShape.reduce((a, b) => a * b, 1) });
    if (remote.outputShape.length !== 1) throw new UsageError(`expected the model to output a vector per example (its labels are ${mnist ? 'MNIST 0/1 labels' : 'seeded 0/1 vectors'}), received output [B, ${remote.outputShape.join(', ')}]`);
    const way = o.method === 'vjp' ? 'vjp (the cotangent crosses)' : o.shipJacobian ? "jacobian, the server's batch Jacobian shipped" : 'jacobian (the cotangent crosses)';
    console.log(`local: ${local.map((s) => `${s.name} [B, ${s.inputShape.join(', ')}] -> [B, ${s.outputShape.join(', ')}]`).join(', ')}; remote at ${o.connect}: ${remote.stages.map((s) => `${s.name} [B, ${s.inputShape.join(', ')}] -> [B, ${s.outputShape.join(', ')}]`).join(', ')}`);
    if (mnist) console.log(`data: MNIST ${mnist.label}: train ${fmtShape(mnist.train.x.shape)}${mnist.validation ? `, validation ${fmtShape(mnist.validation.x.shape)}` : ''}, held-out test ${fmtShape(mnist.test.x.shape)}`);
    console.log(`training: ${mnist ? `${data.x.shape[0]} MNIST examples` : `${o.examples} seeded examples`}, ${o.epochs} epochs, batch ${o.batchSize}${o.microBatches > 1 ? ` in ${o.microBatches} micro-batches (pipelined)` : ''}, ${way}${o.streamed ? ', streamed' : ''}, ${JSON.stringify(o.optimizer)}, seed ${o.seed}, ${o.dtype}`);
    const saved = o.checkpoint ? listCheckpoints(o.checkpoint.dir, 'client') : [];
    if (saved.length > 0) console.log(`resuming from the checkpoint at step ${saved[saved.length - 1]} in ${o.checkpoint!.dir}`);
    const totals = { sent: 0, received: 0, wire: 0, here: 0, there: 0, heldHere: 0, heldThere: 0 };
    const res = await fitRemote(local, remote, o.labelsOnServer ? { x: data.x } : data, {
      labels: o.labelsOnServer ? 'server' : 'here',
      loss: o.loss,
      optimizer: o.optimizer,
      epochs: o.epochs,
      batchSize: o.batchSize,
      microBatches: o.microBatches,
      seed: o.seed,
      // With checkpoints, step ids are the step count both sides save; without, the server's count continues.
      firstStepId: o.checkpoint ? 0 : remote.lastApplied + 1,
      checkpoint: o.checkpoint,
      method: o.method,
      shipJacobian: o.shipJacobian,
      streamed: o.streamed,
      onStep: (s) => {
        totals.sent += s.wire.sentBytes;
        totals.received += s.wire.receivedBytes;
        totals.wire += s.wire.wireMs;
        totals.here += s.localComputeMs;
        totals.there += s.wire.remoteComputeMs;
        const there = s.held.there;
        totals.heldHere = Math.max(totals.heldHere, s.held.here);
        totals.heldThere = Math.max(totals.heldThere, there.residualBytes + there.cotangentBytes + there.jacobianBytes + there.gradientBytes);
        console.log(`step ${s.stepId} (epoch ${s.epoch}, batch ${s.batch}/${s.batches}): loss ${s.loss.toFixed(6)} | sent ${fmtBytes(s.wire.sentBytes)}, received ${fmtBytes(s.wire.receivedBytes)} in ${s.wire.calls} calls${s.wire.maxInFlight > 1 ? ` (up to ${s.wire.maxInFlight} in flight)` : ''} | wire ${s.wire.wireMs.toFixed(2)} ms, compute ${s.localComputeMs.toFixed(2)} ms here + ${s.wire.remoteComputeMs.toFixed(2)} ms there | held ${fmtBytes(s.held.here)} here, ${fmtBytes(there.residualBytes + there.cotangentBytes + there.jacobianBytes + there.gradientBytes)} there`);
      },
    });
    for (const h of res.history) console.log(`epoch ${h.epoch}/${o.epochs}: loss ${h.loss.toFixed(6)} | acc ${h.accuracy.toFixed(4)}`);
    console.log(`total: ${res.steps} steps, sent ${fmtBytes(totals.sent)} (${totals.sent} B), received ${fmtBytes(totals.received)} (${totals.received} B) | wire ${totals.wire.toFixed(1)} ms, compute ${totals.here.toFixed(1)} ms here + ${totals.there.toFixed(1)} ms there | held at most ${fmtBytes(totals.heldHere)} here, ${fmtBytes(totals.heldThere)} there`);
    if (res.stopped) {
      console.error(`jacobian-chain train: ${res.stopped}; no model written`);
      return EXIT.nonFinite;
    }
    if (o.out || mnist) {
      // The server's weights join the local ones, as a single-process run holds them.
      const remoteWeights = await remote.weights();
      const remoteLayers = model.layers.slice(firstRemote);
      remoteLayers.forEach((l, i) => l.params.forEach((p, k) => (p.value = remoteWeights[i][k])));
    }
    if (mnist) {
      const LOSS = 'binary_crossentropy';
      if (mnist.validation) {
        const v = evaluate(model, mnist.validation, LOSS);
        console.log(`validation: loss ${v.loss.toFixed(4)} | acc ${v.accuracy.toFixed(4)}`);
      }
      const test = evaluate(model, mnist.test, LOSS);
      console.log(`held-out test: loss ${test.loss.toFixed(4)} | accuracy ${(100 * test.accuracy).toFixed(2)}% (${Math.round(test.accuracy * mnist.test.x.shape[0])}/${mnist.test.x.shape[0]}) (${res.steps} steps)`);
    }
    if (o.out) {
      saveModelFile(model, o.out);
      console.log(`model: ${o.out}`);
    }
    return EXIT.ok;
  } catch (e) {
    return refuse('train', e);
  } finally {
    remote?.close();
  }
}

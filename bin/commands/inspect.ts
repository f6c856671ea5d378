/**
 * `jacobian-chain inspect <model file>`: a Keras-style summary of a model file (layer, output
 * shape, parameters, trainable), then, for a split and a batch, what each way would cost per
 * stage, from shapes alone, before anything is built: the dense Jacobians of the explicit way, the
 * structured (sparse) Jacobian the planner would build instead, the residuals the tapes save, and
 * the cotangent that crosses each stage boundary.
 */
import { JacobianChainError, MemoryBudgetError, fmtShape } from '../../lib/errors.js';
import { fmtBytes } from '../../lib/memory.js';
import { estimateMemory } from '../../lib/memory-report.js';
import { loadModelFile } from '../../lib/model-io.js';
import { InputFileError } from '../exit-codes.js';
import { Rng } from '../../lib/rng.js';
import type { Sequential } from '../../lib/sequential.js';
import { planJacobian } from '../../lib/sparse/auto.js';
import { bytesPerElement, type DType, sizeOf } from '../../lib/tensor.js';
import { UsageError, dtype, parseCommand, parseOptions, positiveInt, refuse, splitPoints } from '../args.js';

const HELP = `usage: jacobian-chain inspect <model file> [options]

A model file's layers (Keras-style summary: layer, output shape, parameters, trainable), then, per
stage of --split at --batch, what each way costs from shapes alone, before anything is built:
the dense Jacobians of the explicit way (w.r.t. the stage input and its weights), the structured
Jacobian w.r.t. the input that the planner would build instead, the residuals the stage's tape
saves, and the cotangent dLoss/dOut that crosses the stage's output boundary.

The model file is any the loader reads: this library's JSON, a golden fixture, a TF.js model.json
(its shards read from its folder), a Keras to_json() topology (with --init-weights).

options:
  --split <i,j,...>    layer indices where a new stage starts (default: one stage)
  --batch <n>          batch size of the estimate (default 1)
  --dtype <type>       float64 (default) or float32
  --training           Dropout in training mode (it saves a mask)
  --init-weights       fresh seeded weights, for a topology without any (the estimate needs only shapes)
  --json               also print one JSON line with the numbers
  -h, --help           this text

example:
  jacobian-chain inspect spec/fixtures/seed_reference.json --split 1,2 --batch 3
`;

interface Options {
  model: string;
  split: number[];
  batch: number;
  dtype: DType;
  training: boolean;
  initWeights: boolean;
  json: boolean;
}

const OPTIONS = { split: 'string', batch: 'string', dtype: 'string', training: 'boolean', 'init-weights': 'boolean', json: 'boolean' } as const;

function parse(argv: string[]): Options | 'help' {
  // The model file is the one positional; it may come before or after the options.
  const positional = argv.findIndex((a, i) => !a.startsWith('-') && (i === 0 || !/^--(split|batch|dtype)$/.test(argv[i - 1])));
  const rest = positional >= 0 ? [...argv.slice(0, positional), ...argv.slice(positional + 1)] : argv;
  const v = parseOptions(rest, OPTIONS);
  if (v === 'help') return v;
  if (positional < 0) throw new UsageError('expected a model file: jacobian-chain inspect <model file>, received none');
  return {
    model: argv[positional],
    split: splitPoints(v.split, '--split') ?? [],
    batch: positiveInt(v.batch, '--batch') ?? 1,
    dtype: dtype(v.dtype, '--dtype') ?? 'float64',
    training: v.training === true,
    initWeights: v['init-weights'] === true,
    json: v.json === true,
  };
}

/** One row of the per-stage table. */
export interface StageCost {
  stage: string;
  layers: [number, number];
  inputShape: number[];
  outputShape: number[];
  /** Dense dOut/dIn of the explicit way. */
  inputJacobianBytes: number;
  /** Dense dOut/dθ of the explicit way, every parameter of the stage. */
  weightJacobianBytes: number;
  /** The planner's structured dOut/dIn: bytes and engine; null where it has no plan. */
  structured: { bytes: number; engine: string } | null;
  /** What the stage's tape saves for its reverse pass. */
  residualBytes: number;
  /** The cotangent dLoss/dOut at the stage's output, `[B, ...out]`: what crosses the boundary. */
  boundaryCotangentBytes: number;
}

/** The Keras-style summary lines of a model. */
function summary(model: Sequential, bpe: number): string[] {
  const rows = model.layers.map((l) => [`${l.name} (${l.className})`, `(None, ${l.outputShape.join(', ')})`, String(l.params.reduce((n, p) => n + p.value.size, 0)), l.params.length === 0 ? '-' : l.trainable ? 'yes' : 'no']);
  const head = ['Layer (type)', 'Output Shape', 'Param #', 'Trainable'];
  const w = head.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c].length)) + 2);
  const line = (r: string[]) => r.map((cell, c) => (c === 2 ? cell.padStart(w[c] - 2).padEnd(w[c]) : cell.padEnd(w[c]))).join('').trimEnd();
  const total = model.paramCount;
  const trainable = model.layers.filter((l) => l.trainable).reduce((n, l) => n + l.params.reduce((m, p) => m + p.value.size, 0), 0);
  const rule = '-'.repeat(w.reduce((a, b) => a + b, 0));
  return [
    `Model: "${model.name}", input (None, ${model.inputShape.join(', ')})`,
    rule,
    line(head),
    rule,
    ...rows.map(line),
    rule,
    `Total params: ${total} (${fmtBytes(total * bpe)})`,
    `Trainable params: ${trainable} (${fmtBytes(trainable * bpe)})`,
    `Non-trainable params: ${total - trainable} (${fmtBytes((total - trainable) * bpe)})`,
  ];
}

/** Per stage: the explicit way's dense Jacobians, the planner's structured one, residuals, the crossing cotangent. */
export function stageCosts(stages: Sequential[], batch: number, dt: DType, training: boolean): StageCost[] {
  const report = estimateMemory(stages, batch, { dtype: dt, training });
  return stages.map((st, s) => {
    const r = report.stages[s];
    const inputJ = r.explicit.jacobians.find((j) => j.wrt === 'input');
    let structured: StageCost['structured'] = null;
    try {
      const plan = planJacobian(st, batch, { dtype: dt, wrt: 'input', training });
      structured = { bytes: plan.estimatedBytes, engine: `${plan.mode}/${plan.engine}` };
    } catch {
      // A stage the planner has no engine for: the table says n/a.
    }
    return {
      stage: st.name,
      layers: [st.layerOffset, st.layerOffset + st.layers.length - 1],
      inputShape: st.inputShape.slice(),
      outputShape: st.outputShape.slice(),
      inputJacobianBytes: inputJ?.bytes ?? 0,
      weightJacobianBytes: r.explicit.jacobians.filter((j) => j.wrt !== 'input').reduce((n, j) => n + j.bytes, 0),
      structured,
      residualBytes: r.vjp.residualBytes,
      boundaryCotangentBytes: batch * sizeOf(st.outputShape) * bytesPerElement(dt),
    };
  });
}

/** Entry point: returns the exit code (0 printed, 2 bad options or a model file that cannot be read). */
export async function run(argv: string[]): Promise<number> {
  const parsed = parseCommand('inspect', HELP, () => {
    const o = parse(argv);
    if (o === 'help') return o;
    let model;
    try {
      model = loadModelFile(o.model, { dtype: o.dtype, ...(o.initWeights ? { weights: 'initialize' as const, rng: new Rng(0) } : {}) });
    } catch (e) {
      // What is wrong with the file is the file's fault (exit 3), as in seed and jacobian; a memory refusal stays one.
      if (e instanceof JacobianChainError && !(e instanceof MemoryBudgetError)) throw new InputFileError(`--model ${JSON.stringify(o.model)}: ${e.message}`);
      throw e;
    }
    return { o, model, stages: model.split(o.split) };
  });
  if (typeof parsed === 'number') return parsed;
  const { o, model, stages } = parsed;
  const bpe = bytesPerElement(o.dtype);
  console.log(`model file ${o.model}${o.initWeights ? ' (weights: freshly initialized, --init-weights; the estimates need only shapes)' : ''}`);
  for (const l of summary(model, bpe)) console.log(l);
  let costs: StageCost[];
  try {
    costs = stageCosts(stages, o.batch, o.dtype, o.training);
  } catch (e) {
    return refuse('inspect', e);
  }
  console.log(`\nper stage at batch ${o.batch}, ${o.dtype}${o.training ? ', training' : ''} (from shapes; nothing built):`);
  const head = ['stage', 'layers', 'input -> output', 'dense dOut/dIn', 'dense dOut/dW', 'structured dOut/dIn', 'residuals', 'cotangent out'];
  const rows = costs.map((c) => [
    c.stage,
    `${c.layers[0]}..${c.layers[1]}`,
    `${fmtShape([o.batch, ...c.inputShape])} -> ${fmtShape([o.batch, ...c.outputShape])}`,
    fmtBytes(c.inputJacobianBytes),
    fmtBytes(c.weightJacobianBytes),
    c.structured ? `${fmtBytes(c.structured.bytes)} (${c.structured.engine})` : 'n/a',
    fmtBytes(c.residualBytes),
    fmtBytes(c.boundaryCotangentBytes),
  ]);
  const w = head.map((h, k) => Math.max(h.length, ...rows.map((r) => r[k].length)) + 2);
  for (const r of [head, ...rows]) console.log(r.map((cell, k) => (k >= 3 ? cell.padStart(w[k]) : cell.padEnd(w[k]))).join('').trimEnd());
  const dense = costs.reduce((n, c) => n + c.inputJacobianBytes + c.weightJacobianBytes, 0);
  const vjp = costs.reduce((n, c) => n + c.residualBytes + c.boundaryCotangentBytes, 0);
  console.log(`explicit way, every dense Jacobian: ${fmtBytes(dense)}; VJP way, residuals and boundary cotangents: ${fmtBytes(vjp)}`);
  if (o.json) console.log(JSON.stringify({ model: o.model, batch: o.batch, dtype: o.dtype, params: model.paramCount, stages: costs }));
  return 0;
}

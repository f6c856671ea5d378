/**
 * The explorer's Web Worker: everything the page shows is computed here by the library, so the page
 * stays responsive. It receives a {@link Request}, and posts `progress` messages, then one `result`
 * (or one `error` carrying the library's own message, e.g. the memory guard's).
 */
import {
  Activation, Conv2D, MemoryBudgetError, Dense, Flatten, GradientTape, type Jacobian, Rng, SEED_REFERENCE_SPLIT, Sequential, type SparseJacobian, type Tensor, allcloseReport,
  catsVsDogsCnn, contiguous, estimateMemory, explicitWayBytes, fmtBytes, guardExplicitWay, jacobianChain, loadModel, referenceGradients, seededBatch, sizeOf,
  splitAfterLastPooling, trainableParams, upstreamGradientLossOut, upstreamGradientLossWeights, vjpChain, type DenseJacobian,
} from 'jacobian-chain';
import { validLines } from './check.js';
import type { Heatmap, MemoryPoint, Request, Result, Step, WorkerMessage } from './protocol.js';

/** Largest heatmap side in cells: a larger Jacobian is shown downsampled (max |value| per block). */
const CELLS = 192;

function post(m: WorkerMessage, transfer: Transferable[] = []): void {
  (self as unknown as Worker).postMessage(m, transfer);
}

/** The seed's reference layers at another image side (the seed's is 10). */
function seedModel(side: number): Sequential {
  return new Sequential(
    [new Conv2D({ filters: 6, kernel_size: 2, activation: 'relu' }), new Conv2D({ filters: 6, kernel_size: 2, activation: 'relu' }), new Flatten(), new Dense({ units: 1 }), new Activation({ activation: 'sigmoid' })],
    { inputShape: [side, side, 1], rng: new Rng(0), name: 'seed_reference' },
  );
}

/** The model, its split and its loss, as the learner asked. */
function buildModel(r: Request, side: number): { model: Sequential; split: number[]; loss: 'mse' | 'binary_crossentropy' } {
  if (r.model === 'seed') return { model: seedModel(side), split: r.split ?? [...SEED_REFERENCE_SPLIT], loss: 'mse' };
  if (r.model === 'cnn') {
    const model = catsVsDogsCnn({ side, channels: 3, seed: 0 });
    return { model, split: r.split ?? splitAfterLastPooling(model), loss: 'binary_crossentropy' };
  }
  if (r.file === undefined) throw new Error('explorer: expected a dropped model file (model.json), received none');
  const hasShards = Object.keys(r.file.shards).length > 0;
  const model = loadModel(r.file.json, { weights: r.file.init || !hasShards ? 'initialize' : 'file', shards: (path) => r.file!.shards[path.split('/').pop() ?? path] });
  return { model, split: r.split ?? [Math.max(1, Math.floor(model.layers.length / 2))], loss: 'mse' };
}

/** A `[rows, cols]` view of a Jacobian downsampled to at most CELLS × CELLS: max |value| and the fraction of stored entries per cell. */
function heatmap(name: string, dense: DenseJacobian, sparse: SparseJacobian): Heatmap {
  const B = sparse.samples.length;
  const outN = sizeOf(sparse.outShape);
  const rows = B * outN;
  const cols = sizeOf(sparse.inShape);
  const h = Math.min(rows, CELLS);
  const w = Math.min(cols, CELLS);
  const values = new Float32Array(h * w);
  const pattern = new Float32Array(h * w);
  const v = contiguous(dense.values).data;
  // Rows b·|out| + o and columns i of the batch Jacobian; a cell covers a block of them.
  for (let r = 0; r < rows; r++) {
    const cr = Math.floor((r * h) / rows) * w;
    for (let c = 0; c < cols; c++) {
      const a = Math.abs(v[r * cols + c]);
      const k = cr + Math.floor((c * w) / cols);
      if (a > values[k]) values[k] = a;
    }
  }
  const perCell = (rows / h) * (cols / w);
  sparse.samples.forEach((m, b) => {
    for (let o = 0; o < m.rows; o++) {
      const cr = Math.floor(((b * outN + o) * h) / rows) * w;
      for (let p = m.rowPtr[o]; p < m.rowPtr[o + 1]; p++) pattern[cr + Math.floor((m.colIdx[p] * w) / cols)] += 1 / perCell;
    }
  });
  return {
    name, shape: [...dense.shape], rows, cols, h, w, values, pattern, downsampled: h < rows || w < cols,
    denseBytes: dense.bytes, sparseBytes: sparse.bytes, nnz: sparse.nnz, density: sparse.density,
  };
}

/** The names of a stage's trainable weights: `kernel1`, or `kernel1_dense` when several of its layers have weights. */
function weightNames(st: Sequential, s: number): string[] {
  const withParams = st.layers.filter((l) => trainableParams(l).length > 0).length;
  return st.layers.flatMap((l) => trainableParams(l).map((p) => `${p.name}${s}${withParams > 1 ? `_${l.name}` : ''}`));
}

const shapeOf = (t: { readonly shape: readonly number[] }): number[] => [...t.shape];

/** What each way holds as the image side grows, from the library's estimate (shapes alone, no weights beyond the model's). */
function memoryCurve(r: Request): MemoryPoint[] {
  const sides = r.model === 'cnn' ? [22, 32, 48, 64, 96, 128] : r.model === 'seed' ? [4, 6, 10, 16, 24, 32, 48, 64] : [];
  const out: MemoryPoint[] = [];
  for (const side of sides) {
    const { model, split } = buildModel(r, side);
    const est = estimateMemory(model.split(split), r.batch, { training: false });
    out.push({ side, way: 'explicit-Jacobian way', bytes: explicitWayBytes(est) }, { side, way: 'VJP way', bytes: est.vjp.bytes });
  }
  return out;
}

async function run(r: Request): Promise<Result> {
  const { model, split, loss } = buildModel(r, r.side);
  const stages = model.split(split);
  const outN = sizeOf(model.outputShape);
  const { x, y } = seededBatch(model.inputShape, { batch: r.batch, seed: 0, labels: loss === 'mse' ? outN : 1 });
  const est = estimateMemory(stages, r.batch, { training: false, firstStageInput: true });
  post({ type: 'progress', done: 0, total: 1, what: `estimated: the explicit way holds ${fmtBytes(explicitWayBytes(est))}, the VJP way ${fmtBytes(est.vjp.bytes)}` });
  // The library's own guard, before anything is allocated: its message is what the page shows.
  guardExplicitWay(est, r.budget);

  // Each stage on its own tape, as the seed does.
  const tapes = stages.map((st) => new GradientTape(st));
  const outs: Tensor[] = [];
  let input = x;
  for (const tape of tapes) {
    input = tape.forward(input);
    outs.push(input);
  }
  const lossT = tapes[tapes.length - 1].loss(loss, y);

  const total = stages.reduce((n, st) => n + 1 + trainableParams(st).length, 0) + stages.length + 2;
  let done = 0;
  const tick = (what: string): void => post({ type: 'progress', done: ++done, total, what });

  // Each stage's Jacobians, dense (the values) and structured sparse (the stored pattern).
  const heatmaps: Heatmap[][] = [];
  const jIn: Jacobian[] = [];
  const jW: Jacobian[][] = [];
  for (let s = 0; s < stages.length; s++) {
    const tape = tapes[s];
    const inT = s === 0 ? x : outs[s - 1];
    const params = trainableParams(stages[s]);
    const maps: Heatmap[] = [];
    const dIn = tape.batchJacobian(outs[s], inT, { memoryBudget: r.budget }) as DenseJacobian;
    maps.push(heatmap(s === 0 ? `dOut${s}_dX` : `dOut${s}_dOut${s - 1}`, dIn, tape.batchJacobian(outs[s], inT, { format: 'sparse', memoryBudget: r.budget }) as SparseJacobian));
    tick(`stage ${s}: Jacobian w.r.t. its input ${JSON.stringify(dIn.shape)}`);
    jIn.push(dIn);
    const dWs = params.length ? (tape.jacobian(outs[s], params, { memoryBudget: r.budget }) as DenseJacobian[]) : [];
    const sWs = params.length ? (tape.jacobian(outs[s], params, { format: 'sparse', memoryBudget: r.budget }) as SparseJacobian[]) : [];
    dWs.forEach((J, k) => {
      maps.push(heatmap(`dOut${s}_d${weightNames(stages[s], s)[k]}`, J, sWs[k]));
      tick(`stage ${s}: Jacobian w.r.t. ${params[k].name} ${JSON.stringify(J.shape)}`);
    });
    jW.push(dWs);
    heatmaps.push(maps);
  }

  // The seed's chain rule, one step per helper call, from the loss back to the input.
  const ref = referenceGradients(stages, x, y, loss);
  const vjp = await vjpChain(stages, x, y, loss);
  tick('the VJP way (vjpChain) and one tape over the whole model');
  const offsets = stages.map((_, s) => stages.slice(0, s).reduce((n, st) => n + st.layers.length, 0));
  /** Where parameter k of stage s sits in the chains' per-layer gradients. */
  const where = (s: number, k: number): [number, number] => {
    let n = 0;
    for (const [i, l] of stages[s].layers.entries()) for (const [j, p] of l.params.entries()) if (trainableParams(stages[s]).includes(p) && n++ === k) return [offsets[s] + i, j];
    throw new Error(`explorer: no trainable parameter ${k} in stage ${s}`);
  };
  const last = stages.length - 1;
  let dLoss_dOut = tapes[last].gradient(lossT, outs[last]);
  const steps: Step[] = [
    { call: `dLoss_dOut${last} = tape_${last}.gradient(loss, out_layer_${last})`, shapes: [['loss', shapeOf(lossT)], [`out_layer_${last}`, shapeOf(outs[last])], [`dLoss_dOut${last}`, shapeOf(dLoss_dOut)]], vjp: `the VJP way seeds its reverse pass with the same dLoss_dOut${last} ${JSON.stringify(shapeOf(vjp.dLoss_dOut[last]))}`, valid: allcloseReport(dLoss_dOut, vjp.dLoss_dOut[last]).pass },
  ];
  for (let s = last; s >= 0; s--) {
    const params = trainableParams(stages[s]);
    const names = weightNames(stages[s], s);
    params.forEach((_, k) => {
      const J = jW[s][k];
      const n = names[k];
      const g = upstreamGradientLossWeights(J, dLoss_dOut);
      const [li, pj] = where(s, k);
      steps.push({
        call: `dLoss_d${n} = upstream_gradient_loss_weights(dOut${s}_d${n}, dLoss_dOut${s})`,
        shapes: [[`dOut${s}_d${n}`, shapeOf(J)], [`add_missing_axes(dLoss_dOut${s}, J)`, [...dLoss_dOut.shape, ...new Array(J.shape.length - dLoss_dOut.shape.length).fill(1)]], [`dLoss_d${n}`, shapeOf(g)]],
        vjp: `stage ${s}'s vjp(dLoss_dOut${s}) gives dParams ${JSON.stringify(shapeOf(vjp.dLoss_dWeights[li][pj]!))} directly, no Jacobian`,
        valid: allcloseReport(g, ref.dLoss_dWeights[li][pj]).pass && allcloseReport(vjp.dLoss_dWeights[li][pj], ref.dLoss_dWeights[li][pj]).pass,
      });
    });
    if (s > 0) {
      const J = jIn[s];
      const ext = [...dLoss_dOut.shape, ...new Array(J.shape.length - dLoss_dOut.shape.length).fill(1)];
      steps.push({ call: `add_missing_axes(dLoss_dOut${s}, dOut${s}_dOut${s - 1})`, shapes: [[`dLoss_dOut${s}`, shapeOf(dLoss_dOut)], [`dOut${s}_dOut${s - 1}`, shapeOf(J)], ['extended (a view, stride 0)', ext]], vjp: 'the VJP way needs no extension: vjp takes dy as it is', valid: true });
      const next = upstreamGradientLossOut(J, dLoss_dOut);
      steps.push({
        call: `dLoss_dOut${s - 1} = upstream_gradient_loss_out(dOut${s}_dOut${s - 1}, dLoss_dOut${s})`,
        shapes: [[`dOut${s}_dOut${s - 1}`, shapeOf(J)], [`dLoss_dOut${s}`, shapeOf(dLoss_dOut)], [`dLoss_dOut${s - 1}`, shapeOf(next)]],
        vjp: `stage ${s}'s vjp(dLoss_dOut${s}) gives dx = dLoss_dOut${s - 1} ${JSON.stringify(shapeOf(vjp.dLoss_dOut[s - 1]))}: it crosses the boundary`,
        valid: allcloseReport(next, ref.dLoss_dOut[s - 1]).pass && allcloseReport(vjp.dLoss_dOut[s - 1], ref.dLoss_dOut[s - 1]).pass,
      });
      dLoss_dOut = next;
    }
  }
  const explicit = jacobianChain(stages, x, y, loss, { jacobian: { memoryBudget: r.budget } });
  tick('the explicit way (jacobianChain)');
  const memory = memoryCurve(r);
  tick('memory as the image side grows');
  return {
    type: 'result',
    summary: `${model.name}: input ${JSON.stringify([r.batch, ...model.inputShape])}, stages ${stages.map((st) => `[${st.layers.map((l) => l.name).join(', ')}]`).join(' ')}, loss ${loss}`,
    stages: stages.map((st, s) => ({ name: st.name, input: s === 0 ? shapeOf(x) : shapeOf(outs[s - 1]), output: shapeOf(outs[s]) })),
    heatmaps, steps, memory,
    valid: { jacobian: validLines(explicit, ref, stages), vjp: validLines(vjp, ref, stages) },
    estimate: { explicit: explicitWayBytes(est), vjp: est.vjp.bytes },
  };
}

self.onmessage = (e: MessageEvent<Request>) => {
  run(e.data).then(
    (res) => post(res, res.heatmaps.flat().flatMap((h) => [h.values.buffer, h.pattern.buffer])),
    // Class names do not survive minification: the guard's refusal is named by its type, not its name.
    (err: unknown) => post({ type: 'error', message: err instanceof MemoryBudgetError ? `refused by the memory guard: ${err.message}` : err instanceof Error ? err.message : String(err) }),
  );
};

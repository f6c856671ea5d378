/**
 * The bench's results: their JSON shape, the targets checked against them, and the markdown
 * table written beside them.
 * @module
 */
import type { JacobianAccount } from '../lib/memory-report.js';
import { fmtBytes } from '../lib/memory.js';
import { type BenchCase, OP_LABELS, type OpName } from './cases.js';
import type { OpResult } from './child.js';
import type { Issue14Results, Series } from './issue14.js';
import type { MeasuredPoint, SweepPoint } from './plot.js';

/** One case's results: its analytic account (from shapes) and its measured ops. */
export interface CaseResult {
  case: BenchCase;
  analytic: {
    jacobianBytes: number;
    vjpBytes: number;
    residualBytes: number;
    cotangentBytes: number;
    ratio: number;
    tangentBlockBytes: number;
    jacobians: JacobianAccount[];
    stages: { what: string; jacobianBytes: number; vjpBytes: number; ratio: number }[];
    ops: Partial<Record<OpName, { bytes: number; what: string; shapes: number[][]; bytesPerElement: number; tangentBlockBytes?: number }>>;
  };
  ops: OpResult[];
  /** Set when the child died before writing its results. */
  childError: string | null;
  seconds: number;
}

/** One target of the issue, where it stands. */
export interface Target {
  name: string;
  goal: string;
  /** The measured figure, in words. */
  measured: string;
  /** The figure compared with the goal (a ratio), null when it could not be measured. */
  value: number | null;
  status: 'met' | 'missed' | 'n/a';
}

/** Everything results.json holds. */
export interface Results {
  meta: {
    generatedBy: string;
    date: string;
    quick: boolean;
    node: string;
    cpu: string;
    cores: number;
    totalMemory: number;
    memoryBudget: number;
    settings: Record<string, number>;
    seconds: number;
    /** How our code ran: compiled under plain node, or through tsx. */
    ours?: string;
  };
  cases: CaseResult[];
  sweep: SweepPoint[];
  measured: MeasuredPoint[];
  targets: Target[];
  /** Issue #14's measurements (ours beside PyTorch), when this run made them. */
  issue14?: Issue14Results;
  /** Issue #14's targets, from `issue14` and the forward-mode block ratios. */
  issue14Targets?: Target[];
}

/** Below this, a Jacobian's bytes drown in the RSS noise of a Node process: its peak is shown, not checked. */
export const PEAK_CHECK_MIN_BYTES = 64 * 1024 ** 2;

/** An op that ran to completion (a capped one's time is only a lower bound). */
function op(results: Results, id: string, name: OpName): OpResult | null {
  const r = results.cases.find((c) => c.case.id === id)?.ops.find((o) => o.op === name);
  return r ? complete(r) : null;
}

function complete(o: OpResult | undefined): OpResult | null {
  return o && o.status === 'ok' && o.time && o.time.method !== 'capped' ? o : null;
}

function ms(v: number): string {
  if (v >= 3_600_000) return `${(v / 3_600_000).toPrecision(3)} h`;
  if (v >= 60_000) return `${(v / 60_000).toPrecision(3)} min`;
  if (v >= 1000) return `${(v / 1000).toPrecision(3)} s`;
  if (v >= 1) return `${v.toPrecision(3)} ms`;
  return `${(v * 1000).toPrecision(3)} µs`;
}

function x(v: number): string {
  return v >= 100 ? `${Math.round(v)}×` : `${v.toPrecision(3)}×`;
}

function speedup(results: Results, name: string, id: string, ours: OpName, theirs: OpName, goal: number): Target {
  const a = op(results, id, ours);
  const b = op(results, id, theirs);
  if (!a || !b) return { name, goal: `≥ ${goal}×`, measured: `not measured (case ${id} not in this run)`, value: null, status: 'n/a' };
  const v = b.time!.meanMs / a.time!.meanMs;
  const how = (o: OpResult) => (o.time!.method === 'extrapolated' ? `, extrapolated from ${o.info?.rowsDone} of ${o.info?.rows} rows` : '');
  return {
    name,
    goal: `≥ ${goal}×`,
    measured: `ours ${ms(a.time!.meanMs)} vs tfjs ${ms(b.time!.meanMs)}${how(b)}: ${x(v)}`,
    value: v,
    status: v >= goal ? 'met' : 'missed',
  };
}

/**
 * Forward-mode cost per case. `ratio` = time(J) / (ceil(n/T) · time(one JVP pass of T dense
 * tangents)); `netRatio` = time(J) / (ceil(n/T) · time(block) + time(writing a J-sized buffer
 * once)), the same with the Jacobian's unavoidable materialization counted as work.
 */
export function blockCosts(results: Results): { id: string; title: string; T: number; blocks: number; jMs: number; intoMs: number | null; blockMs: number; writeMs: number | null; forwardMs: number; ratio: number; intoRatio: number | null; netRatio: number | null; perTangentForwards: number }[] {
  const rows = [];
  for (const r of results.cases) {
    const j = complete(r.ops.find((o) => o.op === 'jacobianWrtInput'));
    const ji = complete(r.ops.find((o) => o.op === 'jacobianInto'));
    const b = complete(r.ops.find((o) => o.op === 'jvpBlock'));
    const f = complete(r.ops.find((o) => o.op === 'forward'));
    const w = complete(r.ops.find((o) => o.op === 'writeJ'));
    if (!j || !b || !f) continue;
    const blocks = Number(j.info?.blocks);
    const T = Number(j.info?.T);
    const jMs = j.time!.meanMs;
    const blockMs = b.time!.meanMs;
    const writeMs = w ? w.time!.meanMs : null;
    const columns = Number(j.info?.columns);
    rows.push({
      id: r.case.id,
      title: r.case.title,
      T,
      blocks,
      jMs,
      intoMs: ji ? ji.time!.meanMs : null,
      blockMs,
      writeMs,
      forwardMs: f.time!.meanMs,
      ratio: jMs / (blocks * blockMs),
      intoRatio: ji ? ji.time!.meanMs / (blocks * blockMs) : null,
      netRatio: writeMs === null ? null : jMs / (blocks * blockMs + writeMs),
      perTangentForwards: jMs / (columns * f.time!.meanMs),
    });
  }
  return rows;
}

/** Peak RSS growth while building a dense Jacobian, against its bytes plus one block of tangents. */
export function peakChecks(results: Results): { id: string; op: OpName; jBytes: number; blockBytes: number; peakDelta: number; ratio: number; checked: boolean }[] {
  const rows = [];
  for (const r of results.cases) {
    for (const name of ['jacobianWrtInput', 'jacobianWrtWeights'] as const) {
      const o = complete(r.ops.find((p) => p.op === name && p.memory));
      const a = r.analytic.ops[name];
      if (!o || !a) continue;
      const block = a.tangentBlockBytes ?? 0;
      const peak = o.memory!.peakRssDelta;
      rows.push({ id: r.case.id, op: name, jBytes: a.bytes, blockBytes: block, peakDelta: peak, ratio: peak / (a.bytes + block), checked: a.bytes >= PEAK_CHECK_MIN_BYTES });
    }
  }
  return rows;
}

/** Where each target of the issue stands in these results. */
export function checkTargets(results: Results): Target[] {
  const targets: Target[] = [];
  const step = speedup(results, 'VJP training step, cats-vs-dogs CNN 64×64×3, batch 8: ours (float64) vs tfjs-core CPU (float32)', 'cnn64-model-b8', 'vjpChain', 'tfVjp', 30);
  targets.push(step);
  targets.push(speedup(results, "Batch Jacobian w.r.t. input, seed's first stage (Conv2D 6·2×2 on 3×10×10×1): ours vs tfjs row-by-row VJPs", 'seed-stage0-b3', 'jacobianWrtInput', 'tfJacobianWrtInput', 50));
  targets.push(speedup(results, "Jacobians w.r.t. weights, seed's first stage: ours vs tfjs row-by-row VJPs", 'seed-stage0-b3', 'jacobianWrtWeights', 'tfJacobianWrtWeights', 500));
  const bc = blockCosts(results);
  if (bc.length) {
    const worst = bc.reduce((a, b) => (b.ratio > a.ratio ? b : a));
    const over = bc.filter((b) => b.ratio > 1.5);
    targets.push({
      name: 'Forward-mode cost: time(jacobianWrtInput) / (ceil(n/T) · time(one JVP pass of T dense tangents)), worst case',
      goal: '≤ 1.5',
      measured: `${worst.ratio.toFixed(2)} (${worst.id}); ${bc.length - over.length} of ${bc.length} cases ≤ 1.5${over.length ? `; over: ${over.map((b) => `${b.id} ${b.ratio.toFixed(2)}`).join(', ')}` : ''}`,
      value: worst.ratio,
      status: worst.ratio <= 1.5 ? 'met' : 'missed',
    });
    const net = bc.filter((b) => b.netRatio !== null);
    if (net.length) {
      const w = net.reduce((a, b) => (b.netRatio! > a.netRatio! ? b : a));
      targets.push({
        name: 'The same, counting the Jacobian’s own materialization as work: time(J) / (ceil(n/T) · time(block) + time(writing a J-sized buffer once)), worst case',
        goal: '≤ 1.5',
        measured: `${w.netRatio!.toFixed(2)} (${w.id}); ${net.filter((b) => b.netRatio! <= 1.5).length} of ${net.length} cases ≤ 1.5`,
        value: w.netRatio,
        status: w.netRatio! <= 1.5 ? 'met' : 'missed',
      });
    }
  }
  const pc = peakChecks(results).filter((p) => p.checked);
  if (pc.length) {
    const worst = pc.reduce((a, b) => (b.ratio > a.ratio ? b : a));
    targets.push({
      name: `Peak RSS growth while building a dense Jacobian / (its bytes + one tangent block), worst of the ${pc.length} Jacobians ≥ ${fmtBytes(PEAK_CHECK_MIN_BYTES)}`,
      goal: '≤ 1.5',
      measured: `${worst.ratio.toFixed(2)} (${worst.id} ${worst.op}: ${fmtBytes(worst.peakDelta)} vs ${fmtBytes(worst.jBytes)} + ${fmtBytes(worst.blockBytes)})`,
      value: worst.ratio,
      status: worst.ratio <= 1.5 ? 'met' : 'missed',
    });
  } else {
    targets.push({ name: 'Peak RSS growth while building a dense Jacobian', goal: '≤ 1.5', measured: `no Jacobian ≥ ${fmtBytes(PEAK_CHECK_MIN_BYTES)} in this run`, value: null, status: 'n/a' });
  }
  return targets;
}

function cell(o: OpResult, r: CaseResult): string[] {
  const a = r.analytic.ops[o.op];
  const bytes = a ? fmtBytes(a.bytes) : '';
  if (o.status !== 'ok') {
    const what = o.status === 'refused' ? '**refused** (memory budget, before allocating)' : '**error**';
    return [OP_LABELS[o.op], '–', '', '', '', '', '', bytes, `${what}: ${(o.message ?? '').replace(/\|/g, '/').slice(0, 800)}`];
  }
  const t = o.time!;
  const m = o.memory!;
  const notes: string[] = [];
  if (o.info?.T) notes.push(`T = ${o.info.T}, ${o.info.blocks} blocks of ${o.info.columns} columns`);
  else if (o.info?.blocks) notes.push(`${o.info.blocks} blocks, ${o.info.columns} columns`);
  if (o.info?.rows !== undefined && o.info?.rowsDone !== undefined) notes.push(`${o.info.rowsDone} of ${o.info.rows} row VJPs run${t.method === 'extrapolated' ? ': time extrapolated from them; peak memory of a partial build' : ''}`);
  if (t.method === 'capped') notes.push(`stopped at the time cap after ${o.info?.columnsDone} of ${o.info?.columnsTotal} columns: ≈ ${ms(t.extrapolatedMs!)} extrapolated linearly in columns; peak memory of a partial build`);
  return [
    OP_LABELS[o.op],
    t.method === 'capped' ? `≥ ${ms(t.meanMs)}` : ms(t.meanMs),
    t.rme === null ? '' : `±${t.rme.toFixed(1)}%`,
    String(t.samples),
    t.method,
    fmtSigned(m.peakRssDelta),
    fmtSigned(m.heapUsedAfter - m.heapUsedBefore),
    bytes,
    notes.join('; '),
  ];
}

function fmtSigned(n: number): string {
  return n < 0 ? `−${fmtBytes(-n)}` : fmtBytes(n);
}

function table(head: string[], rows: string[][], align?: string[]): string {
  return [`| ${head.join(' | ')} |`, `|${(align ?? head.map(() => '---')).join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

function torchWords(res: Results): string {
  const t = res.issue14?.torch;
  if (!t) return 'no PyTorch peer in this run (the #14 jobs did not run)';
  if (t.skipped) return `the PyTorch peer skipped: ${t.skipped}`;
  return `PyTorch ${t.version} on the CPU (${t.python}), ${t.threads.join(' and ')} thread${t.threads.length === 1 && t.threads[0] === 1 ? '' : 's'} (torch.set_num_threads)`;
}

/** The markdown report. */
export function toMarkdown(res: Results, plots: string[]): string {
  const m = res.meta;
  const out: string[] = [];
  out.push('# Jacobian way vs VJP way: time and memory, measured');
  out.push('');
  out.push(
    `Generated by \`${m.generatedBy}\` on ${m.date.slice(0, 10)} (${m.seconds.toFixed(0)} s): Node ${m.node}, ${m.cores} × ${m.cpu}, ${fmtBytes(m.totalMemory)} RAM; memory budget for a dense Jacobian ${fmtBytes(m.memoryBudget)}; ` +
      `our code ${m.ours ?? 'as it ran'}; ${torchWords(res)}. ` +
      'Ours in float64; the peer, @tensorflow/tfjs-core on its pure-JS CPU backend, in float32, on the same model, weights and batch, in the same child process. ' +
      'Each case runs in a child process of its own; per op: one measured run (peak RSS growth = the kernel’s RSS high-water mark, reset just before, minus the RSS before; heap growth = heapUsed after minus before), then timing by benchmark.js (ops slower than ' +
      `${m.settings.heavyMs} ms: that single run). The tfjs row-by-row Jacobians stop after ${(m.settings.tfTimeCapMs / 1000).toFixed(1)} s and are extrapolated from the rows done; our Jacobian builds and chains stop after ${(m.settings.capMs / 1000).toFixed(1)} s (a split model's explicit chain after ${(m.settings.chainCapMs / 1000).toFixed(1)} s): the time is then shown as a lower bound, with a linear extrapolation in columns beside it — a rough figure, since columns differ in cost (a weight's column pushes a dense tangent through every later layer, an input column a sparse one) — and the peak memory is that of a partial build; each says so. Machine-readable: results.json.`,
  );
  out.push('');
  out.push(...issue14Markdown(res));
  out.push('## Targets');
  out.push('');
  out.push(table(['target', 'goal', 'measured', 'status'], res.targets.map((t) => [t.name, t.goal, t.measured, statusCell(t)])));
  out.push('');
  const bc = blockCosts(res);
  if (bc.length) {
    out.push('### Forward-mode cost per tangent block');
    out.push('');
    out.push(
      'A Jacobian with n columns is built in ceil(n/T) passes of T tangents. **Block ratio** = time(jacobianWrtInput) / (ceil(n/T) · time(one JVP pass of T dense random tangents through the saved forward, into an output block allocated once)): what one of its blocks costs against a generic block (≤ 1.5: seeding and scattering columns add at most half a pass; below 1: the basis seeds are sparse and the layers skip their zero tangents). ' +
        '**Reused J**: J built into one buffer allocated before the timing (`jacobianWrtInput(f, x, { into })`), as a loop that builds J every step would; **fresh J**: a new J each time, which pays the first touch of its pages (about 11.6 µs per 4 KiB page on these machines, far more than writing them). ' +
        '**Net ratio** = time(J) / (ceil(n/T) · time(block) + time(allocating a J-sized buffer and writing every element once)): the same, with the Jacobian’s own materialization counted as work — for layers whose JVP is a view (Flatten) or one cheap pass (ReLU, MaxPooling2D, Dropout), writing B·|out|·|in| values costs more than pushing the tangents, and the block ratio measures that, not the dual numbers. ' +
        'Where the time goes: per block the builder clears the previous block’s ones in the seed and sets the next ones (B·T values: the seed and the tangent blocks are reused across blocks and builds), and each layer writes its output tangent straight into J’s column block, only the rows its basis seeds can reach; what remains is clearing J once (reused J) or first touching its pages (fresh J), which for a layer whose JVP is one cheap pass (ReLU, Flatten, MaxPooling2D, Dropout) is most of the build, while Dense and Conv2D (many multiply-adds per tangent entry) stay near 1 either way. ' +
        '**Forwards per column** = time(J) / (n · time(forward)): the cost of each column in primal forward passes.',
    );
    out.push('');
    out.push(
      table(
        ['case', 'T', 'blocks', 'time(J), fresh', 'time(J), reused buffer', 'time(JVP block)', 'block ratio, reused J', 'block ratio, fresh J', 'time(write J once)', 'net ratio', 'time(forward)', 'forwards per column'],
        bc.map((b) => [b.id, String(b.T), String(b.blocks), ms(b.jMs), b.intoMs === null ? '' : ms(b.intoMs), ms(b.blockMs), b.intoRatio === null ? '' : b.intoRatio.toFixed(2), b.ratio.toFixed(2), b.writeMs === null ? '' : ms(b.writeMs), b.netRatio === null ? '' : b.netRatio.toFixed(2), ms(b.forwardMs), b.perTangentForwards.toFixed(3)]),
      ),
    );
    out.push('');
  }
  const pk = peakChecks(res);
  if (pk.length) {
    out.push('### Peak memory while building a dense Jacobian');
    out.push('');
    out.push(`Peak RSS growth over the build, against the Jacobian’s bytes plus one block of tangents (the seed and every layer’s tangent output of one pass). Checked (≤ 1.5) for Jacobians of at least ${fmtBytes(PEAK_CHECK_MIN_BYTES)}; smaller ones drown in the process’s own RSS noise and are shown only.`);
    out.push('');
    out.push(table(['case', 'Jacobian', 'J bytes', 'tangent block', 'peak RSS growth', 'ratio', 'checked'], pk.map((p) => [p.id, p.op, fmtBytes(p.jBytes), fmtBytes(p.blockBytes), fmtSigned(p.peakDelta), p.ratio.toFixed(2), p.checked ? (p.ratio <= 1.5 ? 'yes, ≤ 1.5' : 'yes, > 1.5') : 'no (small)'])));
    out.push('');
  }
  out.push('## Memory against image side (cats-vs-dogs CNN, split after the last pooling layer)');
  out.push('');
  out.push('Analytic: from shapes alone (lib/memory-report.ts `estimateMemory`): the Jacobians the explicit chain materializes (every stage’s Jacobian w.r.t. its weights, and w.r.t. its input for every stage but the first), and what the VJP way holds (the residuals every forward pass saved, plus the cotangents and gradients). Measured: peak RSS growth of the whole-model runs; the explicit chain has measured points only where it ran to completion under the time cap (its extrapolated time is drawn separately in the time plot).');
  out.push('');
  out.push(...plots.map((p) => `![${p}](${p})`));
  out.push('');
  out.push(
    `Over the budget: \`guardExplicitWay\` refuses the whole explicit way when all its Jacobians together exceed the budget; jacobianChain’s own guards check one build at a time (a stage’s weight Jacobians together, or a stage’s input Jacobian), the largest of which is shown.`,
  );
  out.push('');
  out.push(
    table(
      ['side', 'batch', 'explicit: Jacobians', 'VJP: residuals + cotangents', 'ratio', 'largest single build', 'refused by guardExplicitWay / by jacobianChain'],
      res.sweep.map((p) => [String(p.side), String(p.batch), fmtBytes(p.jacobianBytes), fmtBytes(p.vjpBytes), x(p.jacobianBytes / p.vjpBytes), fmtBytes(p.largestBuildBytes), `${p.jacobianBytes > m.memoryBudget ? 'yes' : 'no'} / ${p.largestBuildBytes > m.memoryBudget ? 'yes' : 'no'}`]),
    ),
  );
  out.push('');
  for (const group of ['layer', 'stage', 'model'] as const) {
    const rs = res.cases.filter((r) => r.case.group === group);
    if (!rs.length) continue;
    out.push(`## ${group === 'layer' ? 'Layers' : group === 'stage' ? 'Stages' : 'Split models'}`);
    out.push('');
    for (const r of rs) {
      const a = r.analytic;
      out.push(`### ${r.case.title}, batch ${r.case.batch} (\`${r.case.id}\`${r.case.training ? ', training mode' : ''})`);
      out.push('');
      out.push(
        `Analytic: Jacobians ${fmtBytes(a.jacobianBytes)} (${a.jacobians.map((j) => `${j.wrt} ${fmtBytes(j.bytes)}`).join(', ')}); VJP way ${fmtBytes(a.vjpBytes)} (residuals ${fmtBytes(a.residualBytes)} + cotangents ${fmtBytes(a.cotangentBytes)}); ratio ${x(a.ratio)}.` +
          (a.stages.length ? ` Each stage alone (its Jacobian w.r.t. its own input included), Jacobians vs VJP way: ${a.stages.map((s) => `${s.what} ${fmtBytes(s.jacobianBytes)} vs ${fmtBytes(s.vjpBytes)}`).join('; ')}.` : ''),
      );
      out.push('');
      if (r.childError) out.push(`**The child process failed**: ${r.childError}`);
      else out.push(table(['op', 'time', '±', 'samples', 'how', 'peak RSS growth', 'heap growth', 'analytic bytes', 'notes'], r.ops.map((o) => cell(o, r)), ['---', '---:', '---:', '---:', '---', '---:', '---:', '---:', '---']));
      out.push('');
    }
  }
  return `${out.join('\n')}\n`;
}

/** Issue #14's table of before numbers, quoted verbatim (not measured by this run): work, ours, torch 1 thread, torch 2 threads. */
export const ISSUE14_BEFORE: readonly (readonly [string, string, string, string])[] = [
  ['VJP training step, cats-vs-dogs CNN 64²×3, B=8, float64', '297 ms (246 ms compiled, plain node)', '185 ms', '128 ms'],
  ['same step, float32', '319 ms: no faster than float64', '43 ms', '30 ms'],
  ['step at 32²×3, B=8, float64', '60 ms', '41 ms', '30 ms'],
  ['`model_0` input Jacobian at 32², B=1, dense', '5.0 s', 'jacrev 0.81 s', '0.54 s'],
  ['`model_0` weight Jacobian at 32², B=1, dense', '8.5 s', 'jacrev 1.66 s', '0.93 s'],
  ["the seed's explicit step at 64², B=8, structured", '23 s, 1.2 GiB', 'out of memory (jacrev asked for 10.9 GB more at 15.9 GiB)', '—'],
];

/** The layer classes whose block ratio #14 bounds, and how a layer case is recognized as one. */
const BLOCK_LAYERS: readonly [string, (c: BenchCase) => boolean][] = [
  ['Dense', (c) => c.target.kind === 'layer' && c.target.className === 'Dense'],
  ['Conv2D', (c) => c.target.kind === 'layer' && c.target.className === 'Conv2D'],
  ['ReLU', (c) => c.target.kind === 'layer' && c.target.className === 'Activation' && c.target.config.activation === 'relu'],
  ['MaxPooling2D', (c) => c.target.kind === 'layer' && c.target.className === 'MaxPooling2D'],
  ['Dropout', (c) => c.target.kind === 'layer' && c.target.className === 'Dropout'],
  ['Flatten', (c) => c.target.kind === 'layer' && c.target.className === 'Flatten'],
];

function why(res: Results, ...ids: string[]): string {
  const i = res.issue14;
  if (!i) return 'not measured: the #14 jobs were not part of this run (`npm run bench` or `npm run bench -- --targets` runs them)';
  for (const id of ids) if (i.notes[id]) return `not measured: ${i.notes[id]}`;
  if (ids.some((id) => /\.torch\d$/.test(id)) && i.torch.skipped) return `not measured: the PyTorch peer was skipped (${i.torch.skipped})`;
  if (i.errors.length) return `not measured: ${i.errors.join('; ').replace(/\|/g, '/').slice(0, 600)}`;
  return `not measured (${ids.join(', ')} missing from this run)`;
}

function series(res: Results, id: string): Series | undefined {
  return res.issue14?.series.find((s) => s.id === id);
}

function ratioTarget(res: Results, name: string, goal: number, a: string, b: string, la: string, lb: string): Target {
  const sa = series(res, a);
  const sb = series(res, b);
  if (!sa || !sb) return { name, goal: `≤ ${goal}×`, measured: why(res, a, b), value: null, status: 'n/a' };
  const v = sa.medianMs / sb.medianMs;
  return { name, goal: `≤ ${goal}×`, measured: `${la} ${ms(sa.medianMs)} vs ${lb} ${ms(sb.medianMs)} (medians of ${sa.ms.length} and ${sb.ms.length} interleaved runs): ${v.toFixed(2)}×`, value: v, status: v <= goal ? 'met' : 'missed' };
}

/** Issue #14's targets, each a ratio of two series of this run (or why it is not measured). */
export function issue14Targets(res: Results): Target[] {
  const t: Target[] = [];
  const T1 = 'PyTorch 1 thread';
  t.push(ratioTarget(res, 'VJP step, CNN 64²×3, B=8, float64, one core: ours / PyTorch 1 thread', 0.8, 'step64f64.ours', 'step64f64.torch1', 'ours', T1));
  t.push(ratioTarget(res, 'VJP step, same, both cores: ours multi-core / PyTorch 2 threads', 0.8, 'step64f64.multicore', 'step64f64.torch2', 'ours', 'PyTorch 2 threads'));
  t.push(ratioTarget(res, 'float32 is genuinely faster: our float32 step / our float64 step (64², B=8)', 0.5, 'step64f32.ours', 'step64f64.ours', 'float32', 'float64'));
  t.push(ratioTarget(res, 'float32 step: ours / PyTorch float32 1 thread (64², B=8)', 2, 'step64f32.ours', 'step64f32.torch1', 'ours', T1));
  for (const wrt of ['input', 'weights'] as const) {
    t.push(ratioTarget(res, `Dense Jacobian of model_0 w.r.t. its ${wrt}, 32², B=1: ours (forward mode, the design card's) / PyTorch jacrev 1 thread`, 1, `jac.${wrt}.forward`, `jac.${wrt}.torch1`, 'ours', 'jacrev'));
    t.push(ratioTarget(res, `Dense Jacobian of model_0 w.r.t. its ${wrt}, 32², B=1: ours (mode: 'auto') / PyTorch jacrev 1 thread`, 1, `jac.${wrt}.auto`, `jac.${wrt}.torch1`, 'ours', 'jacrev'));
  }
  const bc = blockCosts(res);
  const perClass = BLOCK_LAYERS.map(([name, is]) => {
    const rows = bc.filter((b) => {
      const c = res.cases.find((r) => r.case.id === b.id)?.case;
      return c !== undefined && c.group === 'layer' && is(c);
    });
    const nets = rows.filter((r) => r.netRatio !== null).map((r) => r.netRatio!);
    const intos = rows.filter((r) => r.intoRatio !== null).map((r) => r.intoRatio!);
    const fresh = rows.length ? Math.max(...rows.map((r) => r.ratio)) : null;
    // The target's ratio is the builder's against its passes: J built into a reused buffer where the run has it, else a fresh J.
    return { name, worst: intos.length === rows.length && rows.length ? Math.max(...intos) : fresh, fresh, reused: intos.length === rows.length && rows.length > 0, net: nets.length ? Math.max(...nets) : null, cases: rows.length };
  });
  const missing = perClass.filter((p) => p.worst === null).map((p) => p.name);
  const measured = perClass.filter((p) => p.worst !== null);
  const worst = measured.length ? Math.max(...measured.map((p) => p.worst!)) : null;
  const over = measured.filter((p) => p.worst! > 1.5);
  t.push({
    name: 'Forward-mode block ratio, time(J) / (ceil(n/T) · time(one JVP pass of T tangents into an output block)), every layer (worst case per class)',
    goal: '≤ 1.5 for each',
    measured: measured.length
      ? `${measured.map((p) => `${p.name} ${p.worst!.toFixed(2)}${p.reused ? ` (fresh J ${p.fresh!.toFixed(2)}${p.net === null ? '' : `, net ${p.net.toFixed(2)}`})` : p.net === null ? '' : ` (net ${p.net.toFixed(2)})`}`).join(', ')}; ${measured.length - over.length} of ${BLOCK_LAYERS.length} layer classes ≤ 1.5${missing.length ? `; not measured: ${missing.join(', ')}` : ''}. ` +
        `J is built into a reused buffer (jacobianWrtInput's into), so the ratio is the builder's against its passes; fresh J: the same with a new J each time, whose first-touch page faults (the cost of writing J once, which no pass pays) dominate the cheap layers; net: fresh J against the passes plus writing J once`
      : 'not measured (no layer case in this run)',
    value: worst,
    status: worst === null ? 'n/a' : over.length ? 'missed' : missing.length ? 'n/a' : 'met',
  });
  const ex = series(res, 'explicit64');
  if (ex) {
    const csr = series(res, 'explicit64.csr');
    const beside = csr ? `; the same step with CSR weight Jacobians ({ format: 'sparse' }), interleaved: ${ms(csr.medianMs)}, peak ${csr.peakRssDelta === undefined ? 'not measured' : fmtBytes(csr.peakRssDelta)}` : '';
    t.push({ name: "The seed's explicit step (jacobianChain, structured: { format: 'factored', mode: 'auto' }, the weight Jacobians as CSR w.r.t. each layer's linear output times its patches ⊗ identity), CNN 64²×3, B=8: time", goal: '≤ 6 s', measured: `${ms(ex.medianMs)} (median of ${ex.ms.length} run${ex.ms.length > 1 ? 's' : ''})${beside}`, value: ex.medianMs / 6000, status: ex.medianMs <= 6000 ? 'met' : 'missed' });
    const peak = ex.peakRssDelta;
    t.push({ name: "The same step: peak RSS growth", goal: '≤ 1 GiB', measured: peak === undefined ? 'not measured (the kernel refused to reset the peak)' : fmtBytes(peak), value: peak === undefined ? null : peak / 1024 ** 3, status: peak === undefined ? 'n/a' : peak <= 1024 ** 3 ? 'met' : 'missed' });
  } else t.push({ name: "The seed's explicit step, structured, 64², B=8", goal: '≤ 6 s, ≤ 1 GiB', measured: why(res, 'explicit64'), value: null, status: 'n/a' });
  for (const side of [64, 128]) {
    const s = series(res, `streamed${side}`);
    t.push(
      s
        ? { name: `The seed's explicit step, streamed, CNN ${side}²×3, B=8: time and peak RSS growth`, goal: 'reported (memory bounded by one block)', measured: `${s.capped ? `stopped at the cap after ${ms(s.medianMs)} (a lower bound: ${s.capped.columnsDone} of ${s.capped.columns} Jacobian columns done; not extrapolated, since columns differ widely in cost)` : ms(s.medianMs)}, peak ${s.peakRssDelta === undefined ? 'not measured' : fmtBytes(s.peakRssDelta)}`, value: s.medianMs, status: s.capped ? 'missed' : 'met' }
        : { name: `The seed's explicit step, streamed, CNN ${side}²×3, B=8: time and peak RSS growth`, goal: 'reported (memory bounded by one block)', measured: why(res, `streamed${side}`), value: null, status: 'n/a' },
    );
  }
  return t;
}

function statusCell(t: Target): string {
  return t.status === 'met' ? '✅ met' : t.status === 'missed' ? '❌ missed' : 'n/a';
}

/** The #14 section of the markdown: targets, the side-by-side table, the peer's checks, the issue's before numbers. */
export function issue14Markdown(res: Results): string[] {
  const out: string[] = [];
  const i = res.issue14;
  out.push('## Issue #14 targets');
  out.push('');
  if (i) {
    const th = i.torch.threads.length ? i.torch.threads.join(' and ') : '–';
    out.push(
      `Each a ratio of two medians of this run, measured side by side: our repeats and PyTorch’s interleaved one by one in the same child process (PyTorch in a python child it drives, bench/torch_peer.py). Ours ran ${i.ours}, on one thread. ` +
        (i.torch.skipped ? `**The PyTorch peer was skipped**: ${i.torch.skipped}. ` : `PyTorch ${i.torch.version} (CPU, \`${i.torch.python}\`), torch.set_num_threads ${th}; Jacobians by ${i.torch.jacobian}. `) +
        'The same model, weights and batch on both sides (Keras layouts converted to NCHW / OIHW / Linear [out, in]; Flatten in NHWC order), checked before timing: loss and every weight gradient, and the Jacobians, to 1e-10 relative to the largest value in float64 (1e-3 in float32). ' +
        'The training step is forward, loss and backward (weight gradients) on both sides, without an optimizer update; ours (vjpChain) also returns the input gradient of the first stage and copies the stage messages, PyTorch does not. Dropout runs in inference mode on both sides.',
    );
  } else out.push('The #14 jobs were not part of this run (`npm run bench` or `npm run bench -- --targets` runs them).');
  out.push('');
  out.push(table(['target', 'goal', 'measured', 'status'], (res.issue14Targets ?? []).map((t) => [t.name, t.goal, t.measured, statusCell(t)])));
  out.push('');
  if (i) {
    const cellOf = (id: string) => {
      const s = series(res, id);
      return s ? `${ms(s.medianMs)}${s.peakRssDelta !== undefined ? `, peak ${fmtBytes(s.peakRssDelta)}` : ''}` : i.notes[id] ? 'not measured' : /\.torch\d$/.test(id) && i.torch.skipped ? 'skipped' : '–';
    };
    out.push('### Side by side, this run (medians)');
    out.push('');
    const rows: [string, string, string][] = [
      ['VJP training step, CNN 64²×3, B=8, float64', 'step64f64.ours', 'step64f64'],
      ['same step, float32', 'step64f32.ours', 'step64f32'],
      ['step at 32²×3, B=8, float64', 'step32f64.ours', 'step32f64'],
      ["`model_0` input Jacobian at 32², B=1, dense, forward mode", 'jac.input.forward', 'jac.input'],
      ["`model_0` input Jacobian, mode 'auto'", 'jac.input.auto', 'jac.input'],
      ["`model_0` weight Jacobian at 32², B=1, dense, forward mode", 'jac.weights.forward', 'jac.weights'],
      ["`model_0` weight Jacobian, mode 'auto'", 'jac.weights.auto', 'jac.weights'],
    ];
    out.push(
      table(
        ['work', 'ours, 1 thread', 'ours, both cores', 'PyTorch, 1 thread', 'PyTorch, 2 threads', 'runs'],
        [
          ...rows.map(([w, o, p]) => [w, cellOf(o), o === 'step64f64.ours' ? cellOf('step64f64.multicore') : '', cellOf(`${p}.torch1`), cellOf(`${p}.torch2`), String(series(res, o)?.ms.length ?? 0)]),
          ["the seed's explicit step at 64², B=8, structured (factored weight Jacobians)", cellOf('explicit64'), '', '', '', String(series(res, 'explicit64')?.ms.length ?? 0)],
          ["the same step, every Jacobian CSR (format 'sparse')", cellOf('explicit64.csr'), '', '', '', String(series(res, 'explicit64.csr')?.ms.length ?? 0)],
          ["the seed's explicit step at 64², B=8, streamed", cellOf('streamed64'), '', '', '', String(series(res, 'streamed64')?.ms.length ?? 0)],
          ["the seed's explicit step at 128², B=8, streamed", cellOf('streamed128'), '', '', '', String(series(res, 'streamed128')?.ms.length ?? 0)],
        ],
      ),
    );
    out.push('');
    const notes = Object.entries(i.notes);
    if (notes.length) {
      out.push('Not measured:');
      out.push('');
      for (const [id, n] of notes) out.push(`- \`${id}\`: ${n}`);
      out.push('');
    }
    if (i.errors.length) {
      out.push('**Failed jobs**:');
      out.push('');
      for (const e of i.errors) out.push(`- ${e}`);
      out.push('');
    }
    if (i.checks.length) {
      out.push('Checks before timing (max |ours − theirs| / max |theirs|):');
      out.push('');
      out.push(table(['check', 'max relative difference', 'tolerance', 'ok'], i.checks.map((c) => [c.what, c.maxRelDiff.toExponential(2), String(c.tolerance), c.ok ? 'yes' : '**no**'])));
      out.push('');
    }
  }
  out.push('### Before: the numbers quoted from issue #14 (not measured by this run)');
  out.push('');
  out.push(table(['work', 'ours', 'torch, 1 thread', 'torch, 2 threads'], ISSUE14_BEFORE.map((r) => [...r])));
  out.push('');
  return out;
}

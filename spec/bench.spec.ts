/**
 * The bench suite cannot rot: its quick mode runs end to end into a temporary folder, and what it
 * writes is checked for form (never for timings): results.json parses and holds every case and op
 * with finite measurements, the analytic Jacobian bytes are the products of their shapes, the
 * markdown names every case and target, and the plots are SVG.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { quickCases } from '../bench/cases.js';
import type { Results } from '../bench/report.js';
import { expect } from './helpers/setup.js';

const prod = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);
const JACOBIAN_OPS = ['writeJ', 'jacobianWrtInput', 'jacobianWrtWeights', 'explicitChain', 'tfJacobianWrtInput', 'tfJacobianWrtWeights'];

describe('bench (quick mode)', function () {
  this.timeout(120_000);
  let dir: string;
  let res: Results;
  let stdout: string;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'jc-bench-spec-'));
    const run = spawnSync(process.execPath, ['--import', 'tsx', 'bench/run.ts', '--quick', '--out', dir], { cwd: join(import.meta.dirname, '..'), encoding: 'utf8', timeout: 110_000 });
    stdout = `${run.stdout}\n${run.stderr}`;
    expect(run.status, `bench:quick failed:\n${stdout.slice(-3000)}`).to.equal(0);
    res = JSON.parse(readFileSync(join(dir, 'results.json'), 'utf8')) as Results;
  });

  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('writes results.json with every quick case and every op, each measured or refused with a reason', () => {
    expect(res.meta.quick).to.equal(true);
    expect(res.cases.map((c) => c.case.id)).to.deep.equal(quickCases().map((c) => c.id));
    for (const r of res.cases) {
      expect(r.childError, r.case.id).to.equal(null);
      expect(r.ops.map((o) => o.op), r.case.id).to.deep.equal(r.case.ops);
      for (const o of r.ops) {
        const where = `${r.case.id} ${o.op}`;
        expect(o.status, `${where}: ${o.message}`).to.be.oneOf(['ok', 'refused']);
        if (o.status === 'refused') {
          expect(o.message, where).to.match(/MemoryBudgetError: .* over the memory budget/);
          continue;
        }
        expect(o.time!.meanMs, where).to.be.a('number').and.satisfy((v: number) => Number.isFinite(v) && v > 0);
        expect(o.time!.samples, where).to.be.at.least(1);
        expect(o.time!.method, where).to.be.oneOf(['benchmark.js', 'single run', 'extrapolated', 'capped']);
        const m = o.memory!;
        for (const k of ['baselineRss', 'peakRss', 'maxRss', 'sampledPeakRss', 'peakRssDelta', 'heapUsedBefore', 'heapUsedAfter', 'arrayBuffersBefore', 'arrayBuffersAfter'] as const) {
          expect(m[k], `${where} memory.${k}`).to.be.a('number').and.satisfy(Number.isFinite);
        }
        expect(m.baselineRss, where).to.be.above(10 * 1024 ** 2);
        // The high-water mark is reset just before the run: it cannot sit far below the RSS before it,
        // and the kernel's two readings of it (VmHWM, getrusage) agree.
        expect(m.peakRss, where).to.be.at.least(m.baselineRss - 8 * 1024 ** 2);
        expect(Math.abs(m.maxRss - m.peakRss), where).to.be.below(64 * 1024 ** 2);
        if (o.time!.method === 'capped') {
          expect(o.info!.columnsDone, where).to.be.below(o.info!.columnsTotal as number);
          expect(o.time!.extrapolatedMs, where).to.be.above(o.time!.meanMs);
        }
      }
    }
  });

  it('refuses, before allocating, a Jacobian over the budget, saying so with the estimate, the budget and the VJP way', () => {
    const r = res.cases.find((c) => c.case.id === 'seed-stage1-b3-1mib')!;
    const byOp = Object.fromEntries(r.ops.map((o) => [o.op, o]));
    expect(byOp.jacobianWrtInput.status).to.equal('refused');
    expect(byOp.jacobianWrtInput.message).to.include(`(${r.analytic.ops.jacobianWrtInput!.bytes} bytes), over the memory budget of 1.00 MiB`);
    expect(byOp.explicitChain.status).to.equal('refused');
    expect(byOp.explicitChain.message).to.match(/explicit-Jacobian way .* over the memory budget of 1.00 MiB; use the VJP way .* which holds .* here/);
    expect(byOp.vjpChain.status).to.equal('ok');
    const md = readFileSync(join(dir, 'results.md'), 'utf8');
    expect(md).to.include('**refused** (memory budget, before allocating)');
  });

  it('gives analytic Jacobian bytes that are the products of their shapes', () => {
    let checked = 0;
    for (const r of res.cases) {
      for (const [op, a] of Object.entries(r.analytic.ops)) {
        if (!JACOBIAN_OPS.includes(op)) continue;
        expect(a!.bytes, `${r.case.id} ${op}`).to.equal(a!.shapes.reduce((s, sh) => s + prod(sh) * a!.bytesPerElement, 0));
        checked++;
      }
      expect(r.analytic.jacobianBytes).to.equal(r.analytic.jacobians.reduce((s, j) => s + prod(j.shape) * 8, 0));
      expect(r.analytic.ratio).to.be.closeTo(r.analytic.jacobianBytes / r.analytic.vjpBytes, 1e-9);
    }
    expect(checked).to.be.above(10);
    // Shapes worked out by hand: [B, ...out, ...in].
    const shape = (id: string, op: string) => res.cases.find((c) => c.case.id === id)!.analytic.ops[op as 'jacobianWrtInput']!.shapes[0];
    expect(shape('dense-64x32-b4', 'jacobianWrtInput')).to.deep.equal([4, 32, 64]);
    expect(shape('conv2d-8-b2', 'jacobianWrtInput')).to.deep.equal([2, 6, 6, 8, 8, 8, 3]);
    expect(shape('maxpool-8-b2', 'jacobianWrtInput')).to.deep.equal([2, 4, 4, 8, 8, 8, 8]);
    expect(shape('seed-stage0-b3', 'jacobianWrtInput')).to.deep.equal([3, 9, 9, 6, 10, 10, 1]);
    expect(shape('seed-stage0-b3', 'tfJacobianWrtInput')).to.deep.equal([3, 9, 9, 6, 10, 10, 1]);
  });

  it('checks the targets it can, and sweeps the CNN analytically', () => {
    expect(res.targets.length).to.be.at.least(5);
    for (const t of res.targets) expect(t.status, t.name).to.be.oneOf(['met', 'missed', 'n/a']);
    const seed = res.targets.filter((t) => /seed's first stage/.test(t.name));
    expect(seed).to.have.length(2);
    for (const t of seed) expect(t.value, t.name).to.be.a('number').and.above(0);
    expect(res.sweep.length).to.be.at.least(10);
    for (const p of res.sweep) expect(p.jacobianBytes).to.be.above(p.vjpBytes);
    expect(res.measured.some((p) => p.side === 22 && p.batch === 1 && p.op === 'vjpChain')).to.equal(true);
  });

  it('writes the markdown table and the SVG plots', () => {
    const md = readFileSync(join(dir, 'results.md'), 'utf8');
    expect(md).to.include('## Targets');
    // The quick run skips issue #14's jobs and says so, with the run's own command and loader.
    expect(md).to.include('## Issue #14 targets');
    expect(md).to.include('The #14 jobs were not part of this run');
    expect(res.meta.ours).to.match(/through tsx/);
    for (const t of res.issue14Targets!.filter((x) => !/block ratio/.test(x.name))) expect(t.status, t.name).to.equal('n/a');
    for (const c of quickCases()) expect(md).to.include(`\`${c.id}\``);
    for (const t of res.targets) expect(md).to.include(t.name);
    expect(md).to.match(/\| op \| time \| ± \| samples \| how \| peak RSS growth \|/);
    for (const f of ['memory-vs-side.svg', 'time-vs-side.svg']) {
      expect(existsSync(join(dir, f)), f).to.equal(true);
      const svg = readFileSync(join(dir, f), 'utf8');
      expect(svg.startsWith('<svg'), f).to.equal(true);
      expect(svg).to.include('image side (pixels)');
      expect(md).to.include(`](${f})`);
    }
  });
});

/**
 * Issue #14's part of the bench: the targets are ratios of two measured series and say why when
 * they cannot be (a skipped peer, a missing feature, a job not run); and the PyTorch peer, when
 * python3 with torch is present, computes the same loss, weight gradients and Jacobians as ours on
 * the same model, weights and batch (the layouts converted), to 1e-10 in float64.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { vjpChain } from '../lib/chain.js';
import { jacobianWrtInput, jacobianWrtWeights } from '../lib/jacobian.js';
import { catsVsDogsCnn, seededBatch, splitAfterLastPooling } from '../lib/models.js';
import type { Tensor } from '../lib/tensor.js';
import { type Issue14Results, type Series, median } from '../bench/issue14.js';
import { type Results, issue14Targets, issue14Markdown } from '../bench/report.js';
import { TorchPeer, findTorch, readFloat64, writeModel } from '../bench/torch-peer.js';
import { expect } from './helpers/setup.js';

function results(issue14: Issue14Results | undefined): Results {
  return { meta: {} as Results['meta'], cases: [], sweep: [], measured: [], targets: [], issue14 };
}

function s(id: string, ...ms: number[]): Series {
  return { id, what: id, ms, medianMs: median(ms) };
}

function relDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).to.equal(b.length);
  let d = 0;
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i] - b[i]));
    m = Math.max(m, Math.abs(b[i]));
  }
  return d / m;
}

describe('bench: issue #14 targets', () => {
  it('takes medians, the middle two averaged for an even count', () => {
    expect(median([3, 1, 2])).to.equal(2);
    expect(median([4, 1, 3, 2])).to.equal(2.5);
    expect(median([])).to.be.NaN;
  });

  it('reports each target as the ratio of two medians of the run, met or missed against its goal', () => {
    const i: Issue14Results = {
      torch: { python: 'python3', skipped: null, version: '1.13', jacobian: 'functorch.jacrev', threads: [1, 2] },
      series: [s('step64f64.ours', 100, 300, 200), s('step64f64.torch1', 300, 250, 260), s('step64f32.ours', 150), s('step64f32.torch1', 50), s('explicit64', 7000), s('explicit64.csr', 20000)],
      checks: [],
      notes: { 'step64f64.multicore': 'no multi-core path in this build' },
      errors: [],
      ours: 'compiled',
    };
    i.series.find((x) => x.id === 'explicit64')!.peakRssDelta = 512 * 1024 ** 2;
    const t = issue14Targets(results(i));
    const by = (re: RegExp) => t.find((x) => re.test(x.name))!;
    expect(by(/one core: ours \/ PyTorch 1 thread/)).to.include({ value: 200 / 260, status: 'met' });
    expect(by(/both cores/)).to.include({ value: null, status: 'n/a' });
    expect(by(/both cores/).measured).to.equal('not measured: no multi-core path in this build');
    expect(by(/float32 step \/ our float64/)).to.include({ value: 0.75, status: 'missed' });
    expect(by(/PyTorch float32/)).to.include({ value: 3, status: 'missed' });
    expect(by(/explicit step .*: time/)).to.include({ status: 'missed' });
    expect(by(/explicit step .*: time/).measured).to.match(/^7\.00 s \(median of 1 run\); the same step with CSR weight Jacobians .*: 20\.0 s, peak not measured$/);
    expect(by(/peak RSS growth$/)).to.include({ status: 'met' });
    expect(by(/block ratio/)).to.include({ status: 'n/a' });
    expect(by(/input, 32², B=1: ours \(forward/).measured).to.match(/missing from this run/);
    const md = issue14Markdown({ ...results(i), issue14Targets: t }).join('\n');
    expect(md).to.include('## Issue #14 targets');
    expect(md).to.include('quoted from issue #14 (not measured by this run)');
    for (const x of t) expect(md).to.include(x.name);
  });

  it('says that the PyTorch peer was skipped, and why, where it did not run', () => {
    const i: Issue14Results = { torch: { python: null, skipped: 'no python3 imports torch (python3: ModuleNotFoundError)', threads: [] }, series: [s('step64f64.ours', 200)], checks: [], notes: {}, errors: [], ours: 'compiled' };
    const t = issue14Targets(results(i));
    expect(t[0]).to.include({ status: 'n/a', measured: 'not measured: the PyTorch peer was skipped (no python3 imports torch (python3: ModuleNotFoundError))' });
    expect(issue14Markdown({ ...results(i), issue14Targets: t }).join('\n')).to.include('**The PyTorch peer was skipped**: no python3 imports torch');
    expect(issue14Targets(results(undefined)).every((x) => x.status === 'n/a' && /not measured/.test(x.measured))).to.equal(true);
  });
});

describe('bench: the PyTorch peer (when python3 with torch is present)', function () {
  this.timeout(300_000);
  const found = findTorch();
  let peer: TorchPeer;
  let dir: string;

  before(function () {
    if (!found.python) this.skip();
    peer = TorchPeer.start(found.python!);
    dir = mkdtempSync(join(tmpdir(), 'jc-torch-spec-'));
  });
  after(async () => {
    await peer?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('computes our loss and weight gradients of the CNN on the same weights and batch, to 1e-10', async () => {
    const cnn = catsVsDogsCnn({ side: 24, channels: 3, filters: [4, 4, 8], units: 8, seed: 3 });
    const stages = cnn.split(splitAfterLastPooling(cnn));
    const { x, y } = seededBatch([24, 24, 3], { batch: 3, seed: 1 });
    const ours = await vjpChain(stages, x, y, 'binary_crossentropy', { seed: 7 });
    await peer.load('cnn', writeModel(dir, 'cnn', cnn.layers, x, y, 'binary_crossentropy'));
    const a = await peer.send({ cmd: 'grads', name: 'cnn', out: dir });
    expect(Math.abs((a.loss as number) - ours.loss) / ours.loss).to.be.below(1e-12);
    const mine = ours.dLoss_dWeights.flat().filter((t): t is Tensor => t !== null);
    const theirs = a.grads as { file: string; shape: number[] }[];
    expect(theirs.map((t) => t.shape)).to.deep.equal(mine.map((t) => t.shape));
    for (const [k, g] of mine.entries()) expect(relDiff(g.data, readFloat64(theirs[k].file, theirs[k].shape)), `gradient ${k}`).to.be.below(1e-10);
    const st = await peer.send({ cmd: 'step', name: 'cnn', threads: 1 });
    expect(st.ms).to.be.a('number').and.above(0);
  });

  it("computes model_0's Jacobians w.r.t. its input and its weights in our layout [B, ...out, ...in], to 1e-10", async () => {
    const cnn = catsVsDogsCnn({ side: 24, channels: 2, filters: [3, 4, 5], units: 4, seed: 5 });
    const [model_0] = cnn.split(splitAfterLastPooling(cnn));
    const { x } = seededBatch([24, 24, 2], { batch: 1, seed: 2 });
    await peer.load('m0', writeModel(dir, 'm0', model_0.layers, x, null, null));
    const jx = jacobianWrtInput(model_0, x);
    const a = await peer.send({ cmd: 'jac', name: 'm0', wrt: 'input', out: dir });
    const [tx] = a.jacobians as { file: string; shape: number[] }[];
    expect(tx.shape).to.deep.equal(jx.shape);
    expect(relDiff(jx.values.data, readFloat64(tx.file, tx.shape))).to.be.below(1e-10);
    const jw = jacobianWrtWeights(model_0, x);
    const w = (await peer.send({ cmd: 'jac', name: 'm0', wrt: 'weights', out: dir })).jacobians as { file: string; shape: number[] }[];
    expect(w.map((t) => t.shape)).to.deep.equal(jw.map((j) => j.shape));
    for (const [k, J] of jw.entries()) expect(relDiff(J.values.data, readFloat64(w[k].file, w[k].shape)), `weight ${k}`).to.be.below(1e-10);
  });

  it('fails loudly on a command it cannot do', async () => {
    let err: unknown;
    await peer.send({ cmd: 'step', name: 'nothing loaded' }).catch((e: unknown) => (err = e));
    expect(String(err)).to.match(/torch peer, step nothing loaded: ValueError: torch peer: no model named 'nothing loaded' loaded/);
  });
});

/**
 * The examples and the documents that show them cannot rot: every program in examples/ is run as a
 * newcomer runs it (`npx tsx examples/x.ts`, a child process from the repository root) and its
 * printed lines are checked; every code block of docs/guide.md and README.md is an example file,
 * verbatim; every printed-output block in them is found in what the program really prints; every
 * relative link in them points at a file that exists.
 */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fmtBytes } from '../lib/memory.js';
import { expect } from './helpers/setup.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const EXAMPLES = readdirSync(join(ROOT, 'examples'))
  .filter((f) => f.endsWith('.ts'))
  .sort()
  .map((f) => `examples/${f}`);
const DOCS = ['docs/guide.md', 'README.md'];
/** What an output block may name besides an example: the README's main job. */
const COMMANDS: Record<string, string[]> = { 'npm start': ['bin/cli.ts', 'seed'] };

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  seconds: number;
}

// ---- running programs: at most two at a time (the machine has two cores), each once ----

let slots = 2;
const waiting: (() => void)[] = [];
async function withSlot<T>(f: () => Promise<T>): Promise<T> {
  if (slots === 0) await new Promise<void>((r) => waiting.push(r));
  else slots--;
  try {
    return await f();
  } finally {
    const next = waiting.shift();
    if (next) next();
    else slots++;
  }
}

function tsx(args: string[]): Promise<Run> {
  return withSlot(
    () =>
      new Promise<Run>((done) => {
        const t0 = performance.now();
        execFile('npx', ['--no-install', 'tsx', ...args], { cwd: ROOT, maxBuffer: 64 * 1024 * 1024, env: { ...process.env, NO_COLOR: '1' } }, (err, stdout, stderr) => {
          const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 1) : 0;
          done({ code, stdout, stderr, seconds: (performance.now() - t0) / 1000 });
        });
      }),
  );
}

const runs = new Map<string, Promise<Run>>();
/** The run of an example path or of a {@link COMMANDS} key, started on first request. */
function runOf(key: string): Promise<Run> {
  let p = runs.get(key);
  if (!p) {
    p = tsx(COMMANDS[key] ?? [key]);
    runs.set(key, p);
  }
  return p;
}

/** The run's stdout, after checking it exited 0 with no error output. */
async function output(key: string): Promise<string> {
  const r = await runOf(key);
  expect(r.code, `${key} exited with ${r.code}; stderr:\n${r.stderr}\nstdout:\n${r.stdout}`).to.equal(0);
  expect(r.stderr.trim(), `${key} wrote to stderr`).to.equal('');
  return r.stdout;
}

// ---- reading printed lines ----

const linesOf = (s: string) => s.split('\n').map((l) => l.trimEnd());
/** Every line matching `re`, as its match. */
function matches(out: string, re: RegExp): RegExpMatchArray[] {
  return linesOf(out)
    .map((l) => l.match(re))
    .filter((m): m is RegExpMatchArray => m !== null);
}
/** The single line matching `re`, as its match. */
function one(out: string, re: RegExp): RegExpMatchArray {
  const ms = matches(out, re);
  expect(ms, `expected one line matching ${re}, found ${ms.length} in:\n${out}`).to.have.length(1);
  return ms[0];
}
const NUM = String.raw`(-?\d+(?:\.\d+)?(?:e[-+]?\d+)?)`;
const shapeOf = (s: string) => (s.trim() === '[]' ? [] : s.replace(/[[\]\s]/g, '').split(',').map(Number));
const prod = (xs: number[]) => xs.reduce((a, b) => a * b, 1);

// ---- the documents ----

interface Block {
  doc: string;
  /** 1-based line of the opening fence. */
  line: number;
  lang: string;
  body: string;
  /** `example: examples/x.ts` or `output: npm start`, from the HTML comment on the line before the fence. */
  tag: { kind: 'example' | 'output'; target: string } | null;
}

function blocksOf(doc: string): Block[] {
  const text = readFileSync(join(ROOT, doc), 'utf8');
  const lines = text.split('\n');
  const out: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    // Fences may be indented (inside list items): those count too.
    const open = lines[i].match(/^\s*(`{3,}|~{3,})\s*([\w-]*)/);
    if (!open) continue;
    const fence = open[1];
    let j = i + 1;
    while (j < lines.length && !lines[j].trimStart().startsWith(fence)) j++;
    if (j >= lines.length) throw new Error(`${doc}:${i + 1}: unclosed code fence`);
    let k = i - 1;
    while (k >= 0 && lines[k].trim() === '') k--;
    const m = k >= 0 ? lines[k].match(/^<!--\s*(example|output):\s*(.+?)\s*-->$/) : null;
    out.push({ doc, line: i + 1, lang: open[2], body: lines.slice(i + 1, j).join('\n') + '\n', tag: m ? { kind: m[1] as 'example' | 'output', target: m[2] } : null });
    i = j;
  }
  return out;
}

/** Relative link targets of a markdown file (inline links and images), anchors and queries cut. */
function relativeLinks(doc: string): string[] {
  const text = readFileSync(join(ROOT, doc), 'utf8').replace(/^\s*(`{3,}|~{3,})[\s\S]*?^\s*\1/gm, '');
  const targets = [...text.matchAll(/!?\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g), ...text.matchAll(/<(?:img|a)\s[^>]*(?:src|href)="([^"]+)"/g)].map((m) => m[1]);
  return targets.filter((t) => !/^[a-z]+:/i.test(t) && !t.startsWith('#')).map((t) => t.split(/[#?]/)[0]);
}

// ---- per-example checks of what they print ----

const CHECKS: Record<string, (out: string) => void> = {
  'examples/seed-reference-check.ts': (out) => {
    const valid = matches(out, /^(dLoss_d(?:Weights|Bias)\d) valid: (\w+)$/);
    expect(valid.map((m) => m[1])).to.deep.equal(['dLoss_dWeights2', 'dLoss_dBias2', 'dLoss_dWeights1', 'dLoss_dBias1', 'dLoss_dWeights0', 'dLoss_dBias0']);
    expect(valid.map((m) => m[2])).to.deep.equal(new Array(6).fill('true'));
    const shapes = Object.fromEntries(matches(out, /^(\S+)\s+(\[[\d, ]*\])$/).map((m) => [m[1], shapeOf(m[2])]));
    expect(shapes['x']).to.deep.equal([3, 10, 10, 1]);
    expect(shapes['dOut1_dOut0']).to.deep.equal([3, 8, 8, 6, 9, 9, 6]); // [B, ...out, ...in]
    expect(shapes['dOut0_dWeights0[0]']).to.deep.equal([3, 9, 9, 6, 2, 2, 1, 6]); // [B, ...out, ...kernel]
    expect(shapes['dOut2_dOut1']).to.deep.equal([3, 1, 8, 8, 6]);
    // Each upstream gradient has its stage output's shape; each weight gradient its weight's.
    for (const s of [0, 1, 2]) expect(shapes[`dLoss_dOut${s}`]).to.deep.equal(shapes[`out_layer_${s}`]);
    expect(shapes['dLoss_dWeights0']).to.deep.equal(shapes['dOut0_dWeights0[0]'].slice(shapes['out_layer_0'].length));
    const [, a, b] = one(out, new RegExp(`^loss ${NUM} \\(one tape: ${NUM}\\)$`));
    expect(Number(a)).to.be.closeTo(Number(b), 1e-12);
    expect(Number(one(out, new RegExp(`^largest relative difference: ${NUM}$`))[1])).to.be.below(1e-10);
  },

  'examples/naive-split.ts': (out) => {
    const rows = matches(out, new RegExp(`^(\\S+)\\s+naive valid: (\\w+)\\s+cosine with dLoss/dW: ${NUM}$`));
    expect(rows.map((m) => m[1])).to.deep.equal(['conv2d.kernel', 'conv2d.bias', 'conv2d_1.kernel', 'conv2d_1.bias', 'conv2d_2.kernel', 'conv2d_2.bias', 'dense.kernel', 'dense.bias', 'dense_1.kernel', 'dense_1.bias']);
    // None of the question's gradients is the loss gradient, and model_0's are far from its direction.
    expect(rows.map((m) => m[2])).to.deep.equal(new Array(10).fill('false'));
    const cos = rows.map((m) => Number(m[3]));
    cos.forEach((c) => expect(Math.abs(c)).to.be.at.most(1));
    cos.slice(0, 6).forEach((c) => expect(c).to.be.below(0.5));
  },

  'examples/vjp-chain.ts': (out) => {
    const rows = matches(out, new RegExp(`^(\\S+)\\s+(\\[[\\d, ]*\\])\\s+valid: (\\w+) \\(max relative difference ${NUM}\\)$`));
    expect(rows).to.have.length(10);
    rows.forEach((m) => {
      expect(m[3], m[0]).to.equal('true');
      expect(Number(m[4]), m[0]).to.be.below(1e-12);
    });
    expect(shapeOf(rows.find((m) => m[1] === 'dense.kernel')![2])).to.deep.equal([256, 64]);
    expect(out).to.contain('dLoss_dOut0 [8, 2, 2, 64]');
    const [, before, after] = one(out, new RegExp(`^loss before the step ${NUM}, after ${NUM}$`));
    expect(Number(after)).to.be.below(Number(before));
  },

  'examples/chain-rule.ts': (out) => {
    const rows = matches(out, new RegExp(`^(dLoss/d\\w+)\\s+(\\[[\\d, ]*\\])\\s+equal: (\\w+) \\(max relative difference ${NUM}\\)$`));
    expect(rows.map((m) => [m[1], m[3]])).to.deep.equal([['dLoss/dIn', 'true'], ['dLoss/dKernel', 'true'], ['dLoss/dBias', 'true']]);
    rows.forEach((m) => expect(Number(m[4])).to.be.below(1e-12));
    const [, jShape, jBytes, gShape, gBytes] = one(out, /^J_in (\[[\d, ]*\]): (.+); g (\[[\d, ]*\]): (.+)$/);
    expect(jBytes).to.equal(fmtBytes(prod(shapeOf(jShape)) * 8));
    expect(gBytes).to.equal(fmtBytes(prod(shapeOf(gShape)) * 8));
    // J_in is [B, ...out, ...in], g is [B, ...out]: the Jacobian is |in| times larger.
    expect(shapeOf(jShape).slice(0, shapeOf(gShape).length)).to.deep.equal(shapeOf(gShape));
  },

  'examples/dual-numbers.ts': (out) => {
    expect(linesOf(out)).to.include("f(2 + 1ε) = 4 + 10ε   (f(2) = 4, f'(2) = 3·2² − 2 = 10)");
    const [, dual, exact, fd] = one(out, new RegExp(`^sigmoid'\\(0\\.3\\): dual ${NUM}, σ\\(1−σ\\) ${NUM}, central difference ${NUM}$`)).map(Number);
    expect(dual).to.be.closeTo(exact, 1e-12);
    expect(dual).to.be.closeTo(fd, 1e-8);
    const [, da, db] = one(out, new RegExp(`^∂g/∂a at \\(1, 2\\) = ${NUM} \\(= 2 \\+ e\\), ∂g/∂b = ${NUM} \\(= 1\\)$`)).map(Number);
    expect(da).to.be.closeTo(2 + Math.E, 1e-12);
    expect(db).to.equal(1);
    const block = matches(out, new RegExp(`^  \\[${NUM}, ${NUM}, ${NUM}\\]$`)).map((m) => m.slice(1).map(Number));
    expect(block).to.have.length(2);
    const [, scalar, engine] = one(out, new RegExp(`^scalar Dual ∂y_0/∂x_1 = ${NUM}, engine block\\[0, 0, 1\\] = ${NUM}$`)).map(Number);
    expect(scalar).to.equal(engine);
    expect(engine).to.equal(block[0][1]);
    expect(linesOf(out)).to.include('T = 1 equals T = 3: true; equals the jvp block: true; equals reverse mode: true');
  },

  'examples/memory-report.ts': (out) => {
    expect(linesOf(out)).to.include('estimate = measured: Jacobians true, residuals true, cotangents true');
    // Every Jacobian row's bytes are its shape's: B·|out|·|in| float64 values.
    const jac = matches(out, /^\| explicit \| J w\.r\.t\. .+? \| (\[[\d, ]*\]) \| (.+) \|$/);
    expect(jac).to.have.length(8);
    jac.forEach((m) => expect(m[2], m[0]).to.equal(fmtBytes(prod(shapeOf(m[1])) * 8)));
    const [, total, vjpBytes, ratio] = one(out, /^Jacobians (.+) vs VJP (.+) \(residuals .+\): ratio (\d+)×$/);
    expect(Number(ratio)).to.be.above(1);
    expect(total).to.not.equal(vjpBytes);
    const toBytes = (s: string) => {
      const [v, u] = s.split(' ');
      return Number(v) * 1024 ** ['B', 'KiB', 'MiB', 'GiB', 'TiB'].indexOf(u);
    };
    const table = matches(out, /^\| (\d+) \| (.+?) \| (.+?) \| (\d+)× \|$/).map((m) => ({ B: Number(m[1]), jac: toBytes(m[2]), vjp: toBytes(m[3]), ratio: Number(m[4]) }));
    expect(table.map((r) => r.B)).to.deep.equal([1, 8, 32, 128]);
    table.forEach((r) => {
      // Both ways grow linearly in the batch (to the printing's rounding).
      expect(r.jac / table[0].jac).to.be.closeTo(r.B, r.B * 2e-3);
      expect(r.ratio).to.be.closeTo(r.jac / r.vjp, 1);
      expect(r.ratio).to.be.above(10);
    });
    const [, est, budget] = one(out, /^refused: MemoryBudgetError: estimate (.+) > budget (.+)$/);
    expect(toBytes(est)).to.be.above(toBytes(budget));
  },

  'examples/split-training.ts': (out) => {
    const epochs = matches(out, new RegExp(`^(vjp|jacobian)\\s+epoch (\\d+): loss ${NUM}, accuracy ${NUM}$`));
    const by = (m: string) => epochs.filter((e) => e[1] === m).map((e) => e[0].slice(m.length).trim());
    expect(by('vjp')).to.have.length(4);
    // The two ways take the same steps: the same losses and accuracies, printed to 4 decimals.
    expect(by('jacobian')).to.deep.equal(by('vjp'));
    const losses = epochs.filter((e) => e[1] === 'vjp').map((e) => Number(e[3]));
    expect(losses[3]).to.be.below(losses[0] * 0.5);
    const tests = matches(out, new RegExp(`^(vjp|jacobian)\\s+test: loss ${NUM}, accuracy ${NUM} \\(`));
    expect(tests).to.have.length(2);
    tests.forEach((m) => expect(Number(m[3])).to.be.at.least(0.8));
    expect(one(out, /^same weights after training: (\w+) /)[1]).to.equal('true');
    const [, n] = one(out, /^train (\d+) images, test (\d+) held-out images$/);
    expect(Number(n)).to.be.above(0);
  },

  'examples/parallel-training.ts': (out) => {
    const rows = matches(out, new RegExp(`^(\\d) threads?\\s*: loss per epoch ${NUM}, ${NUM}$`));
    expect(rows.map((m) => m[1])).to.deep.equal(['1', '2']);
    expect(rows[1].slice(2)).to.deep.equal(rows[0].slice(2));
    expect(Number(rows[0][3])).to.be.below(Number(rows[0][2]));
    expect(one(out, /^bit-identical weights, 1 and 2 threads: (\w+)$/)[1]).to.equal('true');
    expect(Number(one(out, new RegExp(`^one-thread fit: max relative difference ${NUM}$`))[1])).to.be.below(1e-9);
  },

  'examples/load-model.ts': (out) => {
    const rows = matches(out, new RegExp(`^(jacobian|vjp)\\s+loss ${NUM} \\(file: ${NUM}\\), gradients match the file: (\\w+) \\(max relative difference ${NUM}\\)$`));
    expect(rows.map((m) => m[1])).to.deep.equal(['jacobian', 'vjp']);
    rows.forEach((m) => {
      expect(Number(m[2])).to.be.closeTo(Number(m[3]), 1e-11);
      expect(m[4]).to.equal('true');
      expect(Number(m[5])).to.be.below(1e-10);
    });
    expect(linesOf(out)).to.include('saved and reloaded: identical predictions true');
    expect(out).to.contain('sequential: input [5], 99 parameters');
  },

  'examples/tfjs-model.ts': (out) => {
    // Written by tfjs-layers' own save path and read back with its own weights: the layers, and predictions equal to TensorFlow.js'.
    expect(out).to.match(/input \[16, 16, 3\], 1594 parameters/);
    for (const c of ['Conv2D', 'BatchNormalization', 'MaxPooling2D', 'GlobalAveragePooling2D', 'Dense']) expect(out).to.contain(c);
    const m = out.match(new RegExp(`^predictions equal to TensorFlow\\.js' \\(float32 tolerance\\): (\\w+) \\(largest relative difference ${NUM}\\)$`, 'm'));
    expect(m, 'the predictions line').to.not.equal(null);
    expect(m![1]).to.equal('true');
    expect(Number(m![2])).to.be.below(1e-4);
    expect(out).to.match(/the explicit way holds .* of Jacobians, the VJP way .*$/m);
  },

  'examples/sparse-jacobian.ts': (out) => {
    const [, dShape, dEntries, dBytes] = one(out, /^dense J_in (\[[\d, ]*\]): (\d+) entries, (.+)$/);
    const dense = Number(dEntries);
    expect(dense).to.equal(prod(shapeOf(dShape)));
    expect(dBytes).to.equal(fmtBytes(dense * 8));
    // The guide's number: model_0's dense input Jacobian at 224×224×3, batch 1, in float64.
    const [, bigShape, bigBytes, bigNnz, bigCsr, bigPlan] = one(out, /^at 224×224×3: (\[[\d, ]*\]), (.+) dense; at most (\d+) non-zeros \((.+) of CSR entries\); auto would take (\S+)$/);
    expect(shapeOf(bigShape)).to.deep.equal([1, 26, 26, 64, 224, 224, 3]);
    expect(bigBytes).to.equal(fmtBytes(prod(shapeOf(bigShape)) * 8));
    expect(bigBytes).to.equal('48.52 GiB');
    // The structural bound: an output of three conv-pool blocks reads a 22×22 window of input pixels,
    // all 3 channels (per axis, working back: pools 2 rows, which read 4, pool 8, read 10, pool 20, read 22).
    expect(Number(bigNnz)).to.equal(26 * 26 * 64 * 22 * 22 * 3);
    expect(bigCsr).to.equal(fmtBytes(Number(bigNnz) * 12));
    expect(bigPlan).to.equal('forward/propagate');
    const [, sShape, nnzS, boundS, density, sBytes, ratio] = one(out, new RegExp(`^sparse J_in (\\[[\\d, ]*\\]): (\\d+) stored entries of at most (\\d+) \\(density ${NUM}\\), (.+), (\\d+)× smaller than dense$`));
    expect(sShape).to.equal(dShape);
    const nnz = Number(nnzS);
    expect(nnz).to.be.above(0);
    // ReLU zeros and pooling losers leave fewer non-zeros than the structure allows.
    expect(nnz).to.be.at.most(Number(boundS));
    expect(Number(boundS)).to.be.below(dense);
    expect(Number(density)).to.be.closeTo(nnz / dense, 1e-2 * (nnz / dense));
    // Per-sample CSR at batch 1: int32 row offsets (rows + 1), an int32 column and a float64 value per entry.
    const rows = prod(shapeOf(sShape).slice(1, 4));
    const bytes = 4 * (rows + 1) + 12 * nnz;
    expect(sBytes).to.equal(fmtBytes(bytes));
    expect(bytes).to.be.below(dense * 8);
    expect(Number(ratio)).to.equal(Math.round((dense * 8) / bytes));
    // auto picks the cheapest estimate, and says so against every other candidate.
    const [, mode, engine] = one(out, /^plan: (forward|reverse)\/(propagate|compressed|dense)$/);
    expect(`${mode}/${engine}`).to.equal('forward/propagate');
    const why = one(out, /^why: cheapest estimate: (.+)$/)[1];
    const estimates = [...why.matchAll(/(forward|reverse)\/(propagate|compressed|dense)(?: \((\d+) colours\))? (\d\.\d+e\+\d+|∞)/g)].map((m) => ({ c: `${m[1]}/${m[2]}`, macs: m[4] === '∞' ? Infinity : Number(m[4]) }));
    expect(estimates.map((e) => e.c).sort()).to.deep.equal(['forward/compressed', 'forward/dense', 'forward/propagate', 'reverse/compressed', 'reverse/dense']);
    expect(estimates[0].c).to.equal('forward/propagate');
    estimates.slice(1).forEach((e) => expect(e.macs, e.c).to.be.above(estimates[0].macs));
    // A 3×3 convolution on 3 channels: 27 colours, the largest row (a lower bound), and a valid colouring.
    const [, cols, colours, closed, largest, ok] = one(out, /^Conv2D "conv2d" w\.r\.t\. its input \[64, 64, 3\]: (\d+) columns in (\d+) colours \(closed form (\d+), largest row (\d+)\), conflict-free: (\w+)$/);
    expect([cols, colours, closed, largest, ok]).to.deep.equal(['12288', '27', '27', '27', 'true']);
    // The explicit chain held only sparse Jacobians, every one per-sample CSR.
    const held = matches(out, /^(model_[01]) (dOut\/dIn|dOut\/d \S+)\s+(\[[\d, ]*\])\s+(\w+) (.+)$/);
    expect(held.map((m) => `${m[1]} ${m[2]}`)).to.deep.equal([
      'model_0 dOut/d conv2d.kernel', 'model_0 dOut/d conv2d.bias', 'model_0 dOut/d conv2d_1.kernel', 'model_0 dOut/d conv2d_1.bias', 'model_0 dOut/d conv2d_2.kernel', 'model_0 dOut/d conv2d_2.bias',
      'model_1 dOut/dIn', 'model_1 dOut/d dense.kernel', 'model_1 dOut/d dense.bias', 'model_1 dOut/d dense_1.kernel', 'model_1 dOut/d dense_1.bias',
    ]);
    const toBytes = (t: string) => {
      const [v, u] = t.split(' ');
      return Number(v) * 1024 ** ['B', 'KiB', 'MiB', 'GiB', 'TiB'].indexOf(u);
    };
    held.forEach((m) => expect(m[4], m[0]).to.equal('sparse'));
    // A CSR matrix pays 4 bytes per row and per entry for its indices: a win for the conv stage's
    // Jacobians, not for a handful of entries (dense_1.bias: 20 B against 8).
    held.filter((m) => m[1] === 'model_0').forEach((m) => expect(toBytes(m[5]), m[0]).to.be.below(prod(shapeOf(m[3])) * 8));
    const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
    expect(sum(held.map((m) => toBytes(m[5])))).to.be.below(sum(held.map((m) => prod(shapeOf(m[3])) * 8)));
    expect(shapeOf(held[6][3])).to.deep.equal([1, 1, 6, 6, 64]);
    const [, dW] = one(out, new RegExp(`^dLoss/dWeights, sparse Jacobian chain vs VJP chain: max relative difference ${NUM}$`));
    const [, dxShape, dX] = one(out, new RegExp(`^dLoss/dx (\\[[\\d, ]*\\]), sparse J_in vs model_0's VJP: max relative difference ${NUM}$`));
    expect(shapeOf(dxShape)).to.deep.equal([1, 64, 64, 3]);
    expect(Number(dW)).to.be.below(1e-10);
    expect(Number(dX)).to.be.below(1e-10);
    expect(linesOf(out)).to.include('valid: true');
  },

  'examples/chai-allclose.ts': (out) => {
    // The passing assertion printed its line; each failing one its own message, worst element named.
    expect(linesOf(out)[0]).to.equal('close: passed');
    const [, bad, n, worst, actual, wanted] = one(out, /^AssertionError: expected values to be allclose: (\d+) of (\d+) elements differ beyond rtol=0\.000001, atol=1e-8; worst at (\[[\d, ]*\]): actual (\S+), expected (\S+), abs error/);
    expect([bad, n, worst, actual, wanted]).to.deep.equal(['1', '4', '[1, 1]', '4', '4.5']);
    expect(linesOf(out)).to.include('AssertionError: expected values to be allclose: expected shape [4], received shape [2, 2]');
  },

  'examples/quickstart.ts': (out) => {
    const rows = matches(out, new RegExp(`^(jacobian|vjp): loss ${NUM}, every dLoss/dWeights valid: (\\w+), Jacobians held: (.+)$`));
    expect(rows.map((m) => [m[1], m[3]])).to.deep.equal([['jacobian', 'true'], ['vjp', 'true']]);
    expect(rows[0][2]).to.equal(rows[1][2]);
    expect(rows[1][4]).to.equal('0 B');
    expect(rows[0][4]).to.not.equal('0 B');
  },
};

// ---- the specs ----

describe('examples', function () {
  this.timeout(300_000);

  before(() => {
    // Start every program now (two at a time); each spec below waits for its own.
    for (const e of EXAMPLES) void runOf(e);
  });

  it('every example has output checks, and is shown in the guide or the README', () => {
    expect(EXAMPLES.length).to.be.at.least(8);
    const shown = new Set(DOCS.flatMap((d) => blocksOf(d)).flatMap((b) => (b.tag?.kind === 'example' ? [b.tag.target] : [])));
    for (const e of EXAMPLES) {
      expect(CHECKS, `no output checks for ${e}`).to.have.property(e);
      expect(shown.has(e), `${e} is shown in neither ${DOCS.join(' nor ')}`).to.equal(true);
    }
    expect(Object.keys(CHECKS).filter((k) => !EXAMPLES.includes(k)), 'checks for examples that do not exist').to.deep.equal([]);
  });

  for (const e of EXAMPLES) {
    it(`${e} runs and prints what it should`, async () => {
      const out = await output(e);
      const check = CHECKS[e];
      expect(check, `no output checks for ${e}`).to.be.a('function');
      check(out);
    });
  }
});

describe('docs', function () {
  this.timeout(300_000);

  for (const doc of DOCS) {
    describe(doc, () => {
      it('exists and has code', () => {
        expect(existsSync(join(ROOT, doc)), `${doc} is missing`).to.equal(true);
        expect(blocksOf(doc).length).to.be.above(0);
      });

      it('every code block is an example file, verbatim, or a tagged output, a shell command or a formula', () => {
        for (const b of blocksOf(doc)) {
          const where = `${doc}:${b.line}`;
          if (b.lang === 'math') continue; // a displayed formula (GitHub renders it), not code
          if (b.lang === 'sh' || b.lang === 'bash' || b.lang === 'shell') {
            // Commands only: every line is a command a newcomer types, nothing printed.
            b.body.trim().split('\n').forEach((l) => expect(l, `${where}: shell blocks hold commands`).to.match(/^(npm|npx|git|cd|node) /));
            continue;
          }
          expect(b.tag, `${where}: a code block must follow <!-- example: examples/x.ts --> or <!-- output: ... -->`).to.not.equal(null);
          if (b.tag!.kind === 'example') {
            expect(EXAMPLES, `${where}: ${b.tag!.target} is not an example file`).to.include(b.tag!.target);
            expect(b.lang, `${where}: an example block is TypeScript`).to.equal('ts');
            const file = readFileSync(join(ROOT, b.tag!.target), 'utf8');
            expect(b.body, `${where} differs from ${b.tag!.target}: paste the file again`).to.equal(file);
          } else {
            expect(b.lang, `${where}: an output block is text`).to.equal('text');
            expect([...EXAMPLES, ...Object.keys(COMMANDS)], `${where}: output of what?`).to.include(b.tag!.target);
          }
        }
      });

      it('every output block is printed by its program: runs of lines as printed, in order', async () => {
        for (const b of blocksOf(doc).filter((x) => x.tag?.kind === 'output')) {
          const printed = linesOf(await output(b.tag!.target));
          // A line '...' elides printed lines; the lines between elisions are printed consecutively.
          const runs: string[][] = [[]];
          for (const l of linesOf(b.body).slice(0, -1)) {
            if (l === '...') runs.push([]);
            else runs[runs.length - 1].push(l);
          }
          let from = 0;
          for (const run of runs.filter((r) => r.length > 0)) {
            let at = -1;
            for (let i = from; i + run.length <= printed.length && at < 0; i++) if (run.every((l, k) => printed[i + k] === l)) at = i;
            expect(at, `${doc}:${b.line}: these lines are not printed by ${b.tag!.target} (in this order, after the previous ones):\n${run.join('\n')}`).to.be.at.least(0);
            from = at + run.length;
          }
        }
      });

      it('every relative link points at a file that exists', () => {
        const benchRan = existsSync(join(ROOT, 'docs/bench/results.md'));
        for (const t of relativeLinks(doc)) {
          const path = resolve(ROOT, dirname(doc), decodeURI(t));
          const rel = path.slice(ROOT.length + 1);
          // Generated: docs/api by `npm run docs` (gitignored); docs/bench by `npm run bench`, all its files at once.
          if (rel.startsWith('docs/api/') || (rel.startsWith('docs/bench/') && !benchRan)) continue;
          expect(existsSync(path), `${doc} links to ${t}, which does not exist`).to.equal(true);
        }
      });
    });
  }
});

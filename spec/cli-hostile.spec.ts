/**
 * Hostile input to the command line, each case in its own child process under a memory cap
 * (`--max-old-space-size=512`, and `ulimit -v` of 8 GB where the shell allows it: lower caps make V8 and esbuild fail to reserve their address space, at random under load): the exit code must be
 * the one of bin/exit-codes.ts, the message one line naming what was expected and what was
 * received (or the estimate and the budget), nothing fatal on stderr, and no output file left
 * behind. The cases run a few at a time (each child costs about a second to load tsx).
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { run as jacobianRun } from '../bin/commands/jacobian.js';
import { run as seedRun } from '../bin/commands/seed.js';
import { run as trainRun } from '../bin/commands/train.js';
import { EXIT, EXIT_CODES } from '../bin/exit-codes.js';
import { runCommand } from './helpers/cli.js';
import { expect } from './helpers/setup.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
/** Virtual memory cap of each child, KiB. Some values make V8 fail to reserve its code range at start; this one is probed in `before`. */
const ULIMIT_KIB = 8_000_000;
/** Node options of each child: a small heap, so a heap overrun would be a FATAL crash here; no wasm trap handler, whose 10 GiB reservations a ulimit refuses. */
const NODE_OPTIONS = '--max-old-space-size=512 --disable-wasm-trap-handler';

interface Run {
  code: number | null;
  out: string;
  err: string;
  ms: number;
}

/** Runs `node --import tsx bin/cli.ts ...args` under the memory cap. */
function cli(args: string[], ulimit: boolean): Promise<Run> {
  const t0 = performance.now();
  const script = `${ulimit ? `ulimit -v ${ULIMIT_KIB} && ` : ''}exec node --import tsx bin/cli.ts "$@"`;
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['-c', script, 'cli', ...args], { cwd: ROOT, env: { ...process.env, NODE_OPTIONS, JACOBIAN_CHAIN_DEBUG: '' } });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, out, err, ms: performance.now() - t0 }));
  });
}

interface Case {
  /** A bad option alone, which cannot reach an allocation: run in this process (a child costs a second or more). */
  inProcess?: boolean;
  /** What is hostile about it. */
  what: string;
  args: string[];
  /** The exit code of bin/exit-codes.ts. */
  code: number;
  /** The one line on stderr: what was expected and what was received. */
  message: RegExp;
  /** Files that must not exist afterwards. */
  absent?: string[];
  /** Text that must not be on stdout (work that should not have started). */
  notOut?: RegExp;
}

describe('cli: hostile input (child processes under a memory cap)', function () {
  this.timeout(120_000);
  let dir: string;
  let ulimit = false;
  const cases: Case[] = [];

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'jc-hostile-'));
    const probe = spawnSync('bash', ['-c', `ulimit -v ${ULIMIT_KIB} && exec node -e 0`], { env: { ...process.env, NODE_OPTIONS } });
    ulimit = probe.status === 0;
    const fixture = JSON.parse(readFileSync(join(ROOT, 'spec/fixtures/dense_mlp.json'), 'utf8')) as { x: { data: unknown[] } };
    const file = (name: string, text: string) => {
      writeFileSync(join(dir, name), text);
      return join(dir, name);
    };
    const malformed = file('malformed.json', '{"modelTopology": {');
    const stringInX = file('string-in-x.json', JSON.stringify({ ...fixture, x: { ...fixture.x, data: ['abc', ...fixture.x.data.slice(1)] } }));
    // JSON has no Infinity, but 1e999 parses as one.
    const infInX = file('inf-in-x.json', JSON.stringify(fixture).replace(/"x":\{"shape":\[(\d+(?:,\d+)*)\],"data":\[[^,\]]+/, '"x":{"shape":[$1],"data":[1e999'));
    const notJson = file('not-an-object.json', '"abc"');
    const badStages = file('bad-stages.json', JSON.stringify({ ...fixture, stages: [[0, 1], [1, 2]] }));
    const aFile = file('a-file.txt', 'not a directory');
    const outDir = join(dir, 'out');
    mkdirSync(join(dir, 'existing-dir'));
    const out = join(outDir, 'model.json');
    const plot = join(outDir, 'plot.svg');
    const train = ['train', '--digits', '0,1', '--limit', '16', '--epochs', '2', '--filters', '2,2,2', '--units', '4', '--batch-size', '8', '--no-progress'];
    const expectedReceived = (s: string) => new RegExp(`expected .*${s}`);
    cases.push(
      // seed: sizes
      { what: 'seed --side 100000: the weights alone are terabytes', args: ['seed', '--side', '100000'], code: EXIT.memory, message: /catsVsDogsCnn on 100000×100000×3: 639795245153 weights \(float64\): needs an estimated 4\.66 TiB \(5118361961224 bytes\), over the memory budget of 4\.00 GiB/ },
      { what: 'seed --side 2000: a 252M-weight kernel would overrun the heap', args: ['seed', '--side', '2000'], code: EXIT.memory, message: /(over the memory budget|allocating .* failed \(Array buffer allocation failed\))/ },
      { what: 'seed --side 1000', args: ['seed', '--side', '1000'], code: EXIT.memory, message: /472\.78 MiB/ },
      {
        what: 'seed --side 64 under a 50 MiB budget: the explicit chain refused before the single tape runs',
        args: ['seed', '--side', '64', '--memory-budget', '0.05'],
        code: EXIT.memory,
        message: /explicit-Jacobian way for 2 stages at batch 2 \(11 Jacobians, the largest \[2, 6, 6, 64, 3, 3, 32, 64\], 1009\.16 MiB; one tangent block .*\): needs an estimated .* over the memory budget of 51\.20 MiB; use the VJP way/,
        notOut: /one tape over the whole model/,
      },
      { what: 'seed --batch 100000000: the batch tensor', args: ['seed', '--batch', '100000000'], code: EXIT.memory, message: /tensor \[100000000, 10, 10, 1\] \(float64\): needs an estimated 74\.51 GiB \(80000000000 bytes\), over the memory budget of 4\.00 GiB/ },
      // seed: bad numbers and flags
      { what: '--batch -1', args: ['seed', '--batch', '-1'], code: EXIT.usage, message: /expected --batch to be an integer >= 1, received "-1"/ },
      { what: '--batch 1e999', args: ['seed', '--batch', '1e999'], code: EXIT.usage, message: /expected --batch to be an integer >= 1, received "1e999"/ },
      { inProcess: true, what: '--batch 2.5', args: ['seed', '--batch', '2.5'], code: EXIT.usage, message: /expected --batch to be an integer >= 1, received "2\.5"/ },
      { inProcess: true, what: '--side abc', args: ['seed', '--side', 'abc'], code: EXIT.usage, message: /expected --side to be an integer >= 1, received "abc"/ },
      { inProcess: true, what: '--side 8 (too small for the CNN)', args: ['seed', '--side', '8'], code: EXIT.usage, message: /expected side to be an integer >= 22 .*, received 8/ },
      { inProcess: true, what: '--seed beyond 32 bits', args: ['seed', '--seed', '99999999999'], code: EXIT.usage, message: /Rng: expected seed to be an integer in \[-2147483648, 4294967295\], received 99999999999/ },
      { inProcess: true, what: '--memory-budget 0', args: ['seed', '--memory-budget', '0'], code: EXIT.usage, message: /expected --memory-budget to be a positive number, received "0"/ },
      { inProcess: true, what: '--rtol NaN', args: ['seed', '--rtol', 'NaN'], code: EXIT.usage, message: /expected --rtol to be a non-negative number, received "NaN"/ },
      { inProcess: true, what: 'an unknown flag', args: ['seed', '--bogus'], code: EXIT.usage, message: /unknown option "--bogus"; expected one of --model/ },
      { inProcess: true, what: 'a flag without its value', args: ['seed', '--split'], code: EXIT.usage, message: /expected a value after --split, received nothing/ },
      { what: 'an unknown command', args: ['frobnicate'], code: EXIT.usage, message: /unknown command "frobnicate"; expected one of seed, train, jacobian/ },
      // seed: model files
      { what: 'a missing --model file', args: ['seed', '--model', join(dir, 'no-such.json')], code: EXIT.badInput, message: /--model: cannot read ".*no-such\.json" \(ENOENT\); expected a readable model file/ },
      { what: 'a directory as --model', args: ['seed', '--model', dir], code: EXIT.badInput, message: /--model: cannot read ".*" \(it is a directory\); expected a readable model file/ },
      { what: 'malformed JSON', args: ['seed', '--model', malformed], code: EXIT.badInput, message: /malformed JSON .*received "\{\\"modelTopology\\": \{"/ },
      { what: 'JSON that is not an object', args: ['seed', '--model', notJson], code: EXIT.badInput, message: /expected a JSON object with "modelTopology", received "abc"/ },
      { what: 'a string among the batch values', args: ['seed', '--model', stringInX], code: EXIT.badInput, message: /x: expected finite numbers, received "abc" at flat index 0/ },
      { what: 'an infinite batch value (1e999 in the JSON)', args: ['seed', '--model', infInX], code: EXIT.badInput, message: /x: expected finite numbers, received Infinity at flat index 0/ },
      { what: "the file's stages overlap", args: ['seed', '--model', badStages], code: EXIT.badInput, message: expectedReceived('received') },
      // train: paths, checked before training starts
      { what: '--out an existing directory', args: [...train, '--out', join(dir, 'existing-dir'), '--plot', plot], code: EXIT.usage, message: /expected --out to be a writable file path, received ".*existing-dir" \(an existing directory\)/, absent: [plot], notOut: /epoch 1/ },
      { what: '--out under a regular file', args: [...train, '--out', join(aFile, 'sub', 'model.json'), '--plot', plot], code: EXIT.usage, message: /expected --out to be a writable file path, received ".*a-file\.txt\/sub\/model\.json" \(".*a-file\.txt" is not a directory\)/, absent: [plot], notOut: /epoch 1/ },
      { what: '--out and --plot the same file', args: [...train, '--out', out, '--plot', out], code: EXIT.usage, message: /expected --out and --plot to be different files, received ".*model\.json" for both/, absent: [out] },
      // train: sizes and numbers
      { what: 'train --units 1000000000', args: [...train.slice(0, -5), '--units', '1000000000', '--no-progress', '--out', out, '--plot', plot], code: EXIT.memory, message: /catsVsDogsCnn on 28×28×1: .*needs an estimated .* over the memory budget of 4\.00 GiB/, absent: [out, plot] },
      { what: 'train --filters 100000,100000,100000', args: ['train', '--filters', '100000,100000,100000', '--limit', '4', '--out', out, '--plot', plot], code: EXIT.memory, message: /catsVsDogsCnn on 28×28×1: .* needs an estimated .* over the memory budget/, absent: [out, plot] },
      { what: 'train --batch-size 1e999', args: [...train, '--batch-size', '1e999', '--out', out, '--plot', plot], code: EXIT.usage, message: /expected --batch-size to be an integer >= 1, received "1e999"/, absent: [out, plot] },
      { inProcess: true, what: 'train --lr Infinity', args: [...train, '--lr', 'Infinity', '--out', out, '--plot', plot], code: EXIT.usage, message: /expected --lr to be a positive number, received "Infinity"/, absent: [out, plot] },
      { inProcess: true, what: 'train --validation-split 1', args: [...train, '--validation-split', '1', '--out', out, '--plot', plot], code: EXIT.usage, message: /expected --validation-split to be a number in \[0, 1\), received "1"/, absent: [out, plot] },
      {
        what: 'train with a learning rate that blows float32 weights up: a non-finite stop',
        args: [...train.slice(0, -5), '--filters', '4,4,4', '--units', '8', '--limit', '32', '--epochs', '3', '--batch-size', '4', '--optimizer', 'sgd', '--momentum', '0', '--dtype', 'float32', '--lr', '1e30', '--no-progress', '--out', out, '--plot', plot],
        code: EXIT.nonFinite,
        message: /non-finite (loss|gradient) at epoch 1, batch \d+: .*(NaN|Infinity) at \[[\d, ]+\].*; training stopped before the update; no model or plot written/,
        absent: [out, plot],
      },
      // jacobian
      { what: 'jacobian --side 100000', args: ['jacobian', '--side', '100000'], code: EXIT.memory, message: /catsVsDogsCnn on 100000×100000×3: .* over the memory budget of 4\.00 GiB/ },
      { inProcess: true, what: 'jacobian --memory-budget -1', args: ['jacobian', '--memory-budget', '-1'], code: EXIT.usage, message: /expected --memory-budget to be a positive number, received "-1"/ },
      { what: 'jacobian --model a directory', args: ['jacobian', '--model', dir], code: EXIT.badInput, message: /--model: cannot read ".*" \(it is a directory\)/ },
    );
  });

  after(() => rmSync(dir, { recursive: true, force: true }));

  it('every case: its exit code, one line naming what was expected and received, nothing fatal, no output left behind', async function () {
    this.timeout(300_000);
    const failures: string[] = [];
    const results: { c: Case; r: Run }[] = [];
    const children = cases.filter((c) => !c.inProcess);
    for (const c of cases.filter((k) => k.inProcess)) {
      const t0 = performance.now();
      const commands = { seed: seedRun, train: trainRun, jacobian: jacobianRun } as Record<string, (argv: string[]) => Promise<number>>;
      const r = await runCommand(commands[c.args[0]], c.args.slice(1));
      results.push({ c, r: { ...r, ms: performance.now() - t0 } });
    }
    // A pool of four: each child mostly waits on tsx's loading, and the slow ones (MNIST) should not hold a group back.
    let next = 0;
    const worker = async () => {
      while (next < children.length) {
        const c = children[next++];
        results.push({ c, r: await cli(c.args, ulimit) });
      }
    };
    await Promise.all([worker(), worker(), worker(), worker()]);
    if (process.env.JC_HOSTILE_LOG) for (const { c, r } of results) console.log(`${c.what}\t${r.code}\t${r.ms.toFixed(0)} ms\t${r.err.trim()}`);
    for (const { c, r } of results) {
      const where = `${c.what} (${c.args.join(' ')}): exit ${r.code}, stderr ${JSON.stringify(r.err.slice(0, 400))}`;
      const lines = r.err.trim().split('\n');
      if (r.code !== c.code) failures.push(`${where}: expected exit code ${c.code}`);
      if (/FATAL|Fatal process|heap out of memory|^\s+at /m.test(r.err)) failures.push(`${where}: a crash or a stack trace on stderr`);
      if (lines.length !== 1) failures.push(`${where}: expected one line on stderr, received ${lines.length}`);
      if (!c.message.test(lines[lines.length - 1])) failures.push(`${where}: expected the message to match ${c.message}`);
      if (!/^jacobian-chain( [a-z]+)?: /.test(lines[0])) failures.push(`${where}: expected the line to start with the command`);
      for (const f of c.absent ?? []) if (existsSync(f)) failures.push(`${where}: ${f} was written`);
      if (c.notOut?.test(r.out)) failures.push(`${where}: stdout shows work that should not have started (${c.notOut})`);
    }
    // No temporary file of an atomic write is left either.
    const outDir = join(dir, 'out');
    if (existsSync(outDir)) {
      const left = readdirSync(outDir);
      if (left.length > 0) failures.push(`files left in ${outDir}: ${left.join(', ')}`);
    }
    const slowest = results.reduce((a, b) => (b.r.ms > a.r.ms ? b : a));
    expect(failures, failures.join('\n')).to.deep.equal([]);
    // Each refusal comes before the work: none takes longer than loading plus some seconds (the
    // allowance is wide because the children share the machine with each other and with the suite).
    expect(slowest.r.ms, `slowest: ${slowest.c.what}`).to.be.below(40_000);
  });

  it('a bug is exit 70 with one line, and its stack only with JACOBIAN_CHAIN_DEBUG=1', async () => {
    // A command module that throws a TypeError stands in for a bug: a stub CLI entry importing exit-codes.
    const stub = join(dir, 'bug.ts');
    writeFileSync(stub, `import { report } from ${JSON.stringify(join(ROOT, 'bin/exit-codes.ts'))};\nprocess.exit(report('seed', new TypeError("Cannot read properties of undefined (reading 'shape')")));\n`);
    const run = (debug: string) => spawnSync('node', ['--import', 'tsx', stub], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, JACOBIAN_CHAIN_DEBUG: debug } });
    const quiet = run('');
    expect(quiet.status).to.equal(EXIT.internal);
    expect(quiet.stderr.trim().split('\n')).to.deep.equal([
      "jacobian-chain seed: internal error (a bug, please report it): TypeError: Cannot read properties of undefined (reading 'shape'); set JACOBIAN_CHAIN_DEBUG=1 for the stack trace",
    ]);
    const loud = run('1');
    expect(loud.status).to.equal(EXIT.internal);
    expect(loud.stderr).to.match(/^jacobian-chain seed: internal error \(a bug, please report it\): TypeError: .*\nTypeError: .*\n\s+at /);
  });

  it('--help lists every exit code of the table', async () => {
    const r = await cli(['--help'], false);
    expect(r.code).to.equal(0);
    for (const e of EXIT_CODES) expect(r.out).to.match(new RegExp(`^ *${e.code} {2}${e.meaning.slice(0, 20).replace(/[()]/g, '\\$&')}`, 'm'));
    const seed = await cli(['seed', '--help'], false);
    expect(seed.out).to.include('exit codes:');
    expect(seed.out).to.match(/^ {2}70 {2}internal error/m);
  });
});

import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from './helpers/setup.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** Runs `npx tsx bin/cli.ts seed ...` as a user would. */
function seed(...args: string[]) {
  const r = spawnSync('npx', ['tsx', 'bin/cli.ts', 'seed', ...args], { cwd: ROOT, encoding: 'utf8', timeout: 180_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

const validLines = (out: string) => out.split('\n').filter((l) => / valid: /.test(l));

describe('cli: jacobian-chain --version', () => {
  it('prints package.json\'s version, alone, with exit code 0', () => {
    const { version } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    const r = spawnSync('npx', ['tsx', 'bin/cli.ts', '--version'], { cwd: ROOT, encoding: 'utf8', timeout: 180_000 });
    expect([r.status, r.stdout, r.stderr]).to.deep.equal([0, `${version}\n`, '']);
  });
});

describe('cli: jacobian-chain seed (npm start)', () => {
  it('prints the seed\'s lines, every one "valid: true", for both chains on both models, and the memory tables', () => {
    const { code, out, err } = seed();
    expect(err, 'stderr').to.equal('');
    expect(code).to.equal(0);
    const lines = validLines(out);
    expect(lines.length).to.be.greaterThan(0);
    expect(lines.filter((l) => !l.endsWith('valid: true')), 'lines not valid').to.deep.equal([]);
    // The seed's six lines, in the seed's order, once per chain for the reference model.
    const seedLines = ['dLoss_dWeights2', 'dLoss_dBias2', 'dLoss_dWeights1', 'dLoss_dBias1', 'dLoss_dWeights0', 'dLoss_dBias0'].map((n) => `${n} valid: true`);
    expect(lines.slice(0, 6)).to.deep.equal(seedLines);
    expect(lines.slice(9, 15)).to.deep.equal(seedLines);
    // The CNN: 5 layers with kernel and bias, per chain, plus its one boundary and the loss.
    expect(lines.filter((l) => /^dLoss_d(Weights|Bias)[01]_/.test(l))).to.have.length(20);
    expect(out).to.match(/=== the seed's cats-vs-dogs CNN: input \[2, 32, 32, 3\], stages \[0, 1, 2, 3, 4, 5, 6, 7, 8\] \[9, 10, 11, 12, 13, 14\]/);
    expect(out).to.match(/dOut\/d conv2d_2.kernel\s+\[2, 2, 2, 64, 3, 3, 32, 64\]\s+72.00 MiB/);
    expect(out).to.match(/dOut\/dIn\s+\[3, 8, 8, 6, 9, 9, 6\]\s+4.27 MiB/);
    expect(out).to.match(/cotangents \(dy in, dx out\)/);
    expect(out.trim().endsWith('all valid')).to.equal(true);
  });

  it('--streamed runs the explicit chain streamed: every line valid, the table gives the largest block held; the clashing flags of jacobian and train are refused', () => {
    const { code, out, err } = seed('--streamed', '--model', 'spec/fixtures/seed_reference.json');
    expect(err, 'stderr').to.equal('');
    expect(code).to.equal(0);
    expect(out).to.match(/explicit-Jacobian chain, streamed vs one tape/);
    expect(validLines(out).filter((l) => !l.endsWith('valid: true')), 'lines not valid').to.deep.equal([]);
    expect(out).to.match(/Jacobians the explicit way streamed \(bytes: the largest block held\)/);
    expect(out).to.match(/dOut\/dIn\s+\[3, 8, 8, 6, 9, 9, 6\]\s+5.10 MiB/);
    expect(out).to.match(/largest block held\s+5.10 MiB/);
    const run = (...a: string[]) => spawnSync('npx', ['tsx', 'bin/cli.ts', ...a], { cwd: ROOT, encoding: 'utf8', timeout: 180_000 });
    const j = run('jacobian', '--streamed', '--format', 'dense');
    expect([j.status, j.stderr]).to.deep.equal([2, 'jacobian-chain jacobian: expected --streamed without --format (it streams dense blocks by dual numbers and stores no Jacobian), received --format dense; run "jacobian-chain jacobian --help" for the options\n']);
    const t = run('train', '--streamed', '--method', 'vjp');
    expect(t.status).to.equal(2);
    expect(t.stderr).to.match(/expected --streamed together with --method jacobian .*received --streamed with --method vjp/);
  });

  it('jacobian --format factored: each Conv2D weight\'s Jacobian factored, chained to the VJP gradient, the bias sharing its kernel\'s factor', () => {
    const r = spawnSync('npx', ['tsx', 'bin/cli.ts', 'jacobian', '--wrt', 'weights', '--format', 'factored', '--side', '24'], { cwd: ROOT, encoding: 'utf8', timeout: 180_000 });
    expect([r.status, r.stderr]).to.deep.equal([0, '']);
    expect(r.stdout.match(/format factored/g)).to.have.length(6);
    expect(r.stdout).to.match(/Jacobian w\.r\.t\. conv2d\.bias: .*\n(.*\n)*? {2}bytes 0 B \(\+ [0-9.]+ KiB shared with the layer's other parameter, counted there\)/);
    expect(r.stdout.trim().endsWith('all gradients equal')).to.equal(true);
  });

  it('--model runs a model file (a golden fixture, with its own batch, loss and stages)', () => {
    const { code, out } = seed('--model', 'spec/fixtures/dense_mlp.json');
    expect(code).to.equal(0);
    expect(out).to.match(/model file spec\/fixtures\/dense_mlp.json: input \[4, 5\], stages \[0\] \[1\] \[2, 3\], loss categorical_crossentropy, float64/);
    const lines = validLines(out);
    expect(lines).to.have.length(18);
    expect(lines.every((l) => l.endsWith('valid: true'))).to.equal(true);
  });

  it('--help lists every option; bad options are clear errors with exit code 2', () => {
    const help = seed('--help');
    expect(help.code).to.equal(0);
    for (const o of ['--model', '--split', '--batch', '--side', '--channels', '--dtype', '--seed', '--loss', '--inference', '--rtol', '--atol']) expect(help.out).to.include(o);
    const cases: [string[], RegExp][] = [
      [['--bogus'], /unknown option "--bogus"; expected one of --model/],
      [['--dtype', 'float16'], /expected --dtype float64 or float32, received "float16"/],
      [['--batch', 'two'], /expected --batch to be an integer >= 1, received "two"/],
      [['--split'], /expected a value after --split, received nothing/],
      [['--model', 'spec/fixtures/dense_mlp.json', '--split', '9'], /split: expected strictly increasing layer indices in 1..3 .*received \[9\]/],
      [['--side', '8'], /catsVsDogsCnn: expected side to be an integer >= 22/],
      [['--loss', 'hinge'], /unknown loss "hinge"/],
    ];
    for (const [args, re] of cases) {
      const r = seed(...args);
      expect(r.code, args.join(' ')).to.equal(2);
      expect(r.err, args.join(' ')).to.match(re);
    }
    // A model file that cannot be read is bad input (exit 3, bin/exit-codes.ts), not a bad option.
    const missing = seed('--model', 'no/such/file.json');
    expect(missing.code).to.equal(3);
    expect(missing.err).to.match(/--model: cannot read "no\/such\/file.json" \(ENOENT\)/);
  });

  it('a malformed model file is a clear error', () => {
    const dir = mkdtempSync(join(tmpdir(), 'jc-cli-'));
    try {
      const path = join(dir, 'bad.json');
      writeFileSync(path, '{"modelTopology": {');
      const r = seed('--model', path);
      expect(r.code).to.equal(3);
      expect(r.err).to.match(/model file: malformed JSON/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

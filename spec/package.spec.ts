/**
 * The package as a user gets it: `npm pack` (which builds dist/ by the prepare script), the tarball
 * installed into a fresh consumer project, then used from there. ESM `import` and `require()` of
 * every entry, the main entry without vega or mathjs installed, `tsc --strict` without skipLibCheck
 * (a `Tensor` is typed: a made-up property is an error, and the package's own declarations have
 * none), the chai plugin in a mocha run with chai 6 and with chai 5, the `--version` of the command,
 * and the tarball's documents: every relative link resolves inside it, and every source map carries
 * its sources.
 *
 * The install goes through npm, from its cache when it can (`--prefer-offline`); on a machine with
 * neither cache nor registry it falls back to the tarball unpacked beside the repository's own
 * installed dependencies, symlinked, and says so.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, posix, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from './helpers/setup.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const PKG = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { name: string; version: string; dependencies: Record<string, string> };
const TSC = join(ROOT, 'node_modules/typescript/bin/tsc');
const MOCHA = join(ROOT, 'node_modules/mocha/bin/mocha.js');
/** npm's codes for "the registry cannot be reached and the cache has nothing". */
const OFFLINE = /ENOTCACHED|ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ETIMEDOUT|ENETUNREACH/;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], cwd: string): Promise<Run> {
  return new Promise((done) => {
    execFile(cmd, args, { cwd, maxBuffer: 64 * 1024 * 1024, env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' } }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      done({ code, stdout, stderr });
    });
  });
}

/** Runs and expects exit code 0, quoting the output otherwise. */
async function ok(cmd: string, args: string[], cwd: string): Promise<string> {
  const r = await run(cmd, args, cwd);
  expect(r.code, `${cmd} ${args.join(' ')} (in ${cwd}) exited with ${r.code}; stderr:\n${r.stderr}\nstdout:\n${r.stdout}`).to.equal(0);
  return r.stdout;
}

/** Bytes under `dir`, not following symlinks (as `du` counts them). */
function bytesUnder(dir: string): number {
  let n = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) n += bytesUnder(p);
    else if (e.isFile()) n += statSync(p).size;
  }
  return n;
}

/** Relative link targets of a markdown text (inline links and images), fenced code cut. */
function relativeLinks(text: string): string[] {
  const prose = text.replace(/^\s*(`{3,}|~{3,})[\s\S]*?^\s*\1/gm, '');
  return [...prose.matchAll(/!?\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)]
    .map((m) => m[1])
    .filter((t) => !/^[a-z]+:/i.test(t) && !t.startsWith('#'))
    .map((t) => decodeURI(t.split(/[#?]/)[0]));
}

/** The spec a consumer writes: one assertion that holds, one that does not. */
const CONSUMER_SPEC = `import * as chai from 'chai';
import { fromJSON } from 'jacobian-chain';
import { chaiAllclose } from 'jacobian-chain/chai';
chai.use(chaiAllclose);
const { expect } = chai;
const t = fromJSON({ shape: [2, 2], data: [1, 2, 3, 4] });
describe('jacobian-chain/chai', () => {
  it('passes on close values', () => expect(t).to.be.allclose([[1, 2], [3, 4 + 1e-9]]));
  it('fails on values that differ', () => expect(t).to.be.allclose([[1, 2], [3, 4.5]], { rtol: 1e-6 }));
});
`;
const FAILURE = 'AssertionError: expected values to be allclose: 1 of 4 elements differ beyond rtol=0.000001, atol=1e-8; worst at [1, 1]: actual 4, expected 4.5, abs error 5.000e-1, rel error 1.111e-1';

/** Runs the consumer spec with mocha's spec reporter in `dir` and checks what it reports. */
async function checkChaiRun(dir: string): Promise<void> {
  writeFileSync(join(dir, 'allclose.spec.mjs'), CONSUMER_SPEC);
  const r = await run(process.execPath, [MOCHA, '--no-config', '--reporter', 'spec', 'allclose.spec.mjs'], dir);
  const out = r.stdout + r.stderr;
  expect(r.code, `mocha's exit code is its failure count; output:\n${out}`).to.equal(1);
  expect(out).to.match(/✔ passes on close values/);
  expect(out).to.match(/^ {2}1 passing/m);
  expect(out).to.match(/^ {2}1 failing/m);
  // The whole message on one line of the report: the reporter neither cut it nor replaced it by a diff.
  expect(out.split('\n').map((l) => l.trim())).to.include(FAILURE);
  expect(out).to.not.contain('+ expected - actual');
}

describe('the package, packed and installed', function () {
  this.timeout(300_000);
  let tmp = '';
  let tarball = '';
  let files: string[] = [];
  let consumer = '';
  let installedBy = '';

  before(async function () {
    this.timeout(300_000);
    tmp = mkdtempSync(join(tmpdir(), 'jc-package-'));
    const packed = JSON.parse(await ok('npm', ['pack', '--json', '--pack-destination', tmp], ROOT)) as { filename: string; files: { path: string }[] }[];
    tarball = join(tmp, packed[0].filename);
    files = packed[0].files.map((f) => f.path);
    consumer = join(tmp, 'consumer');
    mkdirSync(consumer);
    writeFileSync(join(consumer, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true, type: 'module' }));
    const t0 = performance.now();
    const npm = await run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--ignore-scripts', tarball], consumer);
    if (npm.code === 0) {
      installedBy = `npm install, ${((performance.now() - t0) / 1000).toFixed(1)} s`;
    } else {
      expect(npm.stderr, `npm install of the tarball failed for another reason than no registry:\n${npm.stderr}`).to.match(OFFLINE);
      installedBy = 'the tarball unpacked, its dependencies symlinked from the repository (no registry, no cache)';
      const into = join(consumer, 'node_modules');
      mkdirSync(into, { recursive: true });
      await ok('tar', ['-xzf', tarball, '-C', tmp], tmp);
      await ok('mv', [join(tmp, 'package'), join(into, PKG.name)], tmp);
      const seen = new Set<string>();
      const queue = Object.keys(PKG.dependencies);
      while (queue.length) {
        const name = queue.shift()!;
        if (seen.has(name)) continue;
        seen.add(name);
        const from = join(ROOT, 'node_modules', name);
        mkdirSync(dirname(join(into, name)), { recursive: true });
        symlinkSync(from, join(into, name), 'dir');
        queue.push(...Object.keys((JSON.parse(readFileSync(join(from, 'package.json'), 'utf8')) as { dependencies?: Record<string, string> }).dependencies ?? {}));
      }
    }
    console.log(`      installed by ${installedBy}: node_modules ${(bytesUnder(join(consumer, 'node_modules')) / 2 ** 20).toFixed(1)} MiB, ${readdirSync(join(consumer, 'node_modules')).filter((n) => !n.startsWith('.')).length} top-level entries`);
  });

  after(() => {
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it('ships every entry, and no spec, bench or fixture beyond the files the documents link to', () => {
    for (const f of ['dist/lib/index.js', 'dist/lib/index.d.ts', 'dist/lib/node.js', 'dist/lib/plot.js', 'dist/lib/chai.js', 'dist/bin/cli.js', 'README.md', 'docs/guide.md']) expect(files, f).to.include(f);
    expect(files.filter((f) => /^(spec|bench)\//.test(f)).sort()).to.deep.equal(['bench/run.ts', 'spec/examples.spec.ts', 'spec/fixtures/README.md']);
  });

  it('every relative link of a shipped document resolves to a shipped file', () => {
    const shipped = new Set(files);
    const docs = files.filter((f) => f.endsWith('.md'));
    expect(docs).to.include.members(['README.md', 'docs/guide.md']);
    const broken: string[] = [];
    let links = 0;
    for (const doc of docs) {
      for (const t of relativeLinks(readFileSync(join(ROOT, doc), 'utf8'))) {
        links++;
        const target = posix.normalize(posix.join(posix.dirname(doc), t)).replace(/\/$/, '');
        if (!shipped.has(target) && !files.some((f) => f.startsWith(`${target}/`))) broken.push(`${doc} -> ${t}`);
      }
    }
    expect(links, 'no links were found: the scan is broken').to.be.above(20);
    expect(broken, 'links to files the tarball does not hold').to.deep.equal([]);
  });

  it('every shipped source map carries the text of its sources', () => {
    const maps = files.filter((f) => f.endsWith('.map'));
    expect(maps.length).to.be.above(20);
    const unpacked = join(consumer, 'node_modules', PKG.name);
    for (const m of maps) {
      const map = JSON.parse(readFileSync(join(unpacked, m), 'utf8')) as { sources: string[]; sourcesContent?: (string | null)[] };
      expect(map.sourcesContent?.length, `${m}: sourcesContent`).to.equal(map.sources.length);
      map.sourcesContent!.forEach((c, i) => expect(c, `${m}: the text of ${map.sources[i]}`).to.be.a('string').and.not.equal(''));
    }
  });

  it('installs without mathjs, vega or vega-lite', () => {
    for (const heavy of ['mathjs', 'vega', 'vega-lite']) expect(existsSync(join(consumer, 'node_modules', heavy)), `${heavy} was installed`).to.equal(false);
  });

  it('imports by ESM: the main entry without the disk, every subpath; prints the import time', async () => {
    const probe = `const t = performance.now();
const m = await import('jacobian-chain');
const ms = performance.now() - t;
const n = await import('jacobian-chain/node');
const c = await import('jacobian-chain/chai');
const p = await import('jacobian-chain/plot');
console.log(JSON.stringify({ ms, main: [typeof m.jacobianChain, typeof m.loadModel, typeof m.loadModelFile, typeof m.renderSvg], node: [typeof n.loadModelFile, typeof n.loadMnistBinary], chai: typeof c.chaiAllclose, plot: typeof p.lineChartSpec }));`;
    const times: number[] = [];
    for (let i = 0; i < 5; i++) {
      const got = JSON.parse(await ok(process.execPath, ['--input-type=module', '-e', probe], consumer));
      expect(got.main).to.deep.equal(['function', 'function', 'undefined', 'undefined']);
      expect(got.node).to.deep.equal(['function', 'function']);
      expect([got.chai, got.plot]).to.deep.equal(['function', 'function']);
      times.push(got.ms);
    }
    times.sort((a, b) => a - b);
    console.log(`      import('jacobian-chain'): median ${times[2].toFixed(0)} ms of 5 (${times.map((t) => t.toFixed(0)).join(', ')})`);
  });

  it('loads by require(), every entry', async () => {
    const probe = `const m = require('jacobian-chain');
const n = require('jacobian-chain/node');
const c = require('jacobian-chain/chai');
const p = require('jacobian-chain/plot');
const t = m.fromJSON({ shape: [2], data: [1, 2] });
console.log(JSON.stringify([typeof m.jacobianChain, typeof n.saveModelFile, typeof c.chaiAllclose, typeof p.renderSvg, m.allclose(t, [1, 2])]));`;
    expect(JSON.parse(await ok(process.execPath, ['-e', probe], consumer))).to.deep.equal(['function', 'function', 'function', 'function', true]);
  });

  it('jacobian-chain/plot without its optional peers: a render says which to install', async () => {
    const probe = `import { lineChartSpec, renderSvg } from 'jacobian-chain/plot';
const spec = lineChartSpec([{ name: 'loss', points: [{ x: 1, y: 0.5 }] }]);
await renderSvg(spec).then(() => console.log('rendered'), (e) => console.log(e.name + ': ' + e.message));`;
    const out = await ok(process.execPath, ['--input-type=module', '-e', probe], consumer);
    expect(out).to.match(/^ConfigError: jacobian-chain\/plot: expected the optional peer dependency "vega(-lite)?" to be installed \(npm install vega vega-lite\), received /);
  });

  it('type-checks under tsc --strict without skipLibCheck: Tensor is typed, the declarations are clean', async () => {
    writeFileSync(join(consumer, 'check.ts'), `import { type Tensor, zeros } from 'jacobian-chain';
import { loadModelFile } from 'jacobian-chain/node';
import { chaiAllclose } from 'jacobian-chain/chai';
const x: Tensor = zeros([2, 3]);
const rows: number = x.shape[0];
const wrong = x.notAProperty;
console.log(rows, wrong, typeof loadModelFile, typeof chaiAllclose);
`);
    writeFileSync(join(consumer, 'tsconfig.json'), JSON.stringify({ compilerOptions: { strict: true, skipLibCheck: false, module: 'NodeNext', moduleResolution: 'NodeNext', target: 'ES2022', noEmit: true, types: [] }, files: ['check.ts'] }));
    const r = await run(process.execPath, [TSC, '-p', '.'], consumer);
    const errors = r.stdout.split('\n').filter((l) => / error TS\d+/.test(l));
    // Exactly the one planted error: a Tensor degraded to any would give none, a broken .d.ts more.
    expect(errors, `tsc exited with ${r.code}:\n${r.stdout}${r.stderr}`).to.deep.equal([`check.ts(6,17): error TS2339: Property 'notAProperty' does not exist on type 'Tensor'.`]);
  });

  it('the chai plugin in a mocha run, with chai 6: one pass, one failure reported whole', async () => {
    symlinkSync(join(ROOT, 'node_modules/chai'), join(consumer, 'node_modules/chai'), 'dir');
    expect(JSON.parse(readFileSync(join(consumer, 'node_modules/chai/package.json'), 'utf8')).version).to.match(/^6\./);
    await checkChaiRun(consumer);
  });

  it('the chai plugin in a mocha run, with chai 5', async function () {
    const dir = join(tmp, 'chai5');
    mkdirSync(dir);
    writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'chai5', version: '1.0.0', private: true, type: 'module' }));
    const npm = await run('npm', ['install', '--no-save', '--prefer-offline', '--no-audit', '--no-fund', '--ignore-scripts', 'chai@5'], dir);
    if (npm.code !== 0) {
      expect(npm.stderr, `npm install chai@5 failed for another reason than no registry:\n${npm.stderr}`).to.match(OFFLINE);
      console.log('      chai@5: no registry and no cache; not checked');
      this.skip();
    }
    expect(JSON.parse(readFileSync(join(dir, 'node_modules/chai/package.json'), 'utf8')).version).to.match(/^5\./);
    symlinkSync(join(consumer, 'node_modules', PKG.name), join(dir, 'node_modules', PKG.name), 'dir');
    await checkChaiRun(dir);
  });

  it('the installed command prints the package version', async () => {
    expect((await ok(join(consumer, 'node_modules/.bin/jacobian-chain'), ['--version'], consumer)).trim()).to.equal(PKG.version);
  });
});

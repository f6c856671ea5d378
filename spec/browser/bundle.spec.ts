/**
 * The core in the browser: the main entry bundled by esbuild for the browser platform with no
 * shims (a Node.js builtin reached from it fails the bundle), served on 127.0.0.1 and opened in
 * headless Chromium, where the seed's reference check runs through the library (both ways against
 * one tape, `explorer/check.ts`): every line says `valid: true`, there are 18 of them, and the page
 * raised no error.
 */
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { type Chromium, type StaticServer, launchChromium, requireChromium, serveStatic } from '../helpers/chromium.js';
import { expect } from '../helpers/setup.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

/** The page script bundled for the browser, `jacobian-chain` resolved to lib/index.ts; esbuild's warnings and errors kept. */
async function bundle(): Promise<{ js: string; messages: string[] }> {
  const r = await build({
    entryPoints: [join(ROOT, 'spec/browser/seed-check.page.ts')],
    bundle: true,
    write: false,
    platform: 'browser',
    format: 'esm',
    target: 'es2022',
    alias: { 'jacobian-chain': join(ROOT, 'lib/index.ts') },
    logLevel: 'silent',
  });
  return { js: r.outputFiles[0].text, messages: r.warnings.map((w) => w.text) };
}

describe('the main entry in a browser', function () {
  this.timeout(120_000);
  let chromium: Chromium | undefined;
  let server: StaticServer | undefined;

  before(function () {
    requireChromium(this);
  });
  after(async () => {
    await chromium?.close();
    await server?.close();
  });

  it('bundles for platform browser with no shims and no warnings', async () => {
    const { js, messages } = await bundle();
    expect(messages, 'esbuild warnings').to.deep.equal([]);
    expect(js).to.not.match(/\brequire\(["']node:/);
    expect(js.length, 'the bundle holds the library').to.be.above(100_000);
  });

  it('runs the seed reference check in headless Chromium: 18 lines, every one valid: true, no page error', async () => {
    const { js } = await bundle();
    const html = '<!doctype html><meta charset="utf-8"><title>seed check</title><ol id="lines"></ol><script type="module" src="/page.js"></script>';
    server = await serveStatic({ '/index.html': html, '/page.js': js });
    chromium = await launchChromium();
    const page = await chromium.open(`${server.url}/`);
    await page.waitForFunction(() => document.body.dataset.state !== undefined, { timeout: 60_000 });
    const state = await page.evaluate(() => document.body.dataset.state);
    const lines = await page.$$eval('#lines li', (lis) => lis.map((li) => li.textContent ?? ''));
    expect(chromium.errors, 'page errors').to.deep.equal([]);
    expect(state).to.equal('done');
    expect(lines).to.have.length(18);
    expect(lines.filter((l) => l.startsWith('jacobian '))).to.have.length(9);
    expect(lines.filter((l) => l.startsWith('vjp '))).to.have.length(9);
    for (const l of lines) expect(l).to.match(/ valid: true$/);
  });
});

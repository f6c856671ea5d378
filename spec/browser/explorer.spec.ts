/**
 * The Jacobian explorer (explorer/), built by Vite's own `build()`, served on 127.0.0.1 and driven
 * in headless Chromium: it loads, computes the seed's reference model in its worker, then the
 * learner switches to the cats-vs-dogs CNN and its side; the spec waits (bounded) for the result,
 * steps through the chain rule to the end, asserts both ways' `valid` lines, that a heatmap canvas
 * is not blank (its pixels read back vary), that the memory chart drew, and saves the screenshot
 * the README shows (docs/explorer.png).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ElementHandle, Page } from 'puppeteer-core';
import { saveTfjsModel, seedReferenceModel } from 'jacobian-chain';
import { execFileSync } from 'node:child_process';
import { type Chromium, type StaticServer, launchChromium, requireChromium, serveStatic } from '../helpers/chromium.js';
import { expect } from '../helpers/setup.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

/** Waits for the worker's result; returns the page's state (`done`, or `error` with the page's message). */
async function result(page: Page): Promise<string> {
  await page.waitForFunction(() => document.body.dataset.state === 'done' || document.body.dataset.state === 'error', { timeout: 60_000 });
  const state = await page.evaluate(() => document.body.dataset.state);
  return state === 'done' ? 'done' : `error: ${await page.$eval('#error', (e) => e.textContent)}`;
}

/** Steps through every step with the Next button, as a learner would; returns the valid lines shown. */
async function stepThrough(page: Page): Promise<string[]> {
  const total = await page.$$eval('#step-count', ([e]) => Number(/of (\d+)/.exec(e.textContent ?? '')?.[1]));
  expect(total, 'chain rule steps').to.be.above(2);
  for (let i = 0; i < total; i++) await page.click('#next');
  expect(await page.$$eval('#steps li', (l) => l.length)).to.equal(total);
  expect(await page.$$eval('#steps li', (l) => l.map((e) => e.textContent ?? '').filter((t) => t.includes('NOT allclose')))).to.deep.equal([]);
  return page.$$eval('#valid li', (l) => l.map((e) => e.textContent ?? ''));
}

describe('the Jacobian explorer in a browser', function () {
  this.timeout(180_000);
  let out: string | undefined;
  let chromium: Chromium | undefined;
  let server: StaticServer | undefined;

  before(async function () {
    requireChromium(this);
    out = mkdtempSync(join(tmpdir(), 'jc-explorer-'));
    // Vite's build() in a plain Node process: under the tsx loader mocha runs with, rolldown's
    // plugins fail to resolve vite's own modules.
    const script = `const { build } = await import('vite'); await build({ configFile: ${JSON.stringify(join(ROOT, 'explorer/vite.config.ts'))}, build: { outDir: ${JSON.stringify(out)}, emptyOutDir: true }, logLevel: 'error' });`;
    execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'], env: { ...process.env, NODE_OPTIONS: '' } });
    server = await serveStatic({}, out);
    chromium = await launchChromium();
  });
  after(async () => {
    await chromium?.close();
    await server?.close();
    if (out) rmSync(out, { recursive: true, force: true });
  });

  it('computes the seed model, then the CNN at another side: both ways valid, heatmaps drawn, no page error', async () => {
    const page = await chromium!.open(`${server!.url}/`, 1200, 1000);
    expect(await result(page)).to.equal('done');
    const seedLines = await stepThrough(page);
    expect(seedLines).to.have.length(18);
    for (const l of seedLines) expect(l).to.match(/^(jacobian|vjp) .* valid: true$/);

    // The learner picks the CNN and a side of 24 (the smallest its three blocks allow is 22).
    await page.select('#model', 'cnn');
    await page.$eval('#side', (e) => { (e as HTMLInputElement).value = ''; });
    await page.type('#side', '24');
    await page.click('#run');
    expect(await result(page)).to.equal('done');
    expect(await page.$eval('#summary', (e) => e.textContent)).to.contain('[1,24,24,3]');
    const lines = await stepThrough(page);
    // Two stages: 6 + 4 trainable parameters, one boundary cotangent, the loss; for each way.
    expect(lines.filter((l) => l.startsWith('jacobian '))).to.have.length(12);
    expect(lines.filter((l) => l.startsWith('vjp '))).to.have.length(12);
    for (const l of lines) expect(l).to.match(/ valid: true$/);

    const canvases = await page.$$eval('#jacobians canvas', (cs) => cs.map((c) => {
      const cv = c as HTMLCanvasElement;
      const d = cv.getContext('2d')!.getImageData(0, 0, cv.width, cv.height).data;
      let s = 0;
      let s2 = 0;
      const n = d.length / 4;
      for (let i = 0; i < d.length; i += 4) {
        s += d[i];
        s2 += d[i] * d[i];
      }
      return { label: cv.getAttribute('aria-label'), variance: s2 / n - (s / n) ** 2 };
    }));
    expect(canvases.length, 'two canvases per Jacobian').to.be.at.least(2 * (1 + 6 + 1 + 4));
    const first = canvases.find((c) => c.label === 'dOut0_dX values');
    expect(first, 'the input Jacobian of stage 0').to.not.equal(undefined);
    expect(first!.variance, 'its heatmap is not blank').to.be.above(10);
    expect(await page.$$eval('#chart svg path', (p) => p.length), 'the memory chart drew').to.be.above(0);
    expect(await page.$eval('#jacobians', (e) => e.textContent)).to.contain('shown downsampled');

    expect(chromium!.errors, 'page errors').to.deep.equal([]);
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: join(ROOT, 'docs/explorer.png'), fullPage: false });
  });

  it("shows the library's memory guard message when the explicit way would not fit the budget", async () => {
    const page = await chromium!.open(`${server!.url}/`);
    expect(await result(page)).to.equal('done');
    await page.$eval('#budget', (e) => { (e as HTMLInputElement).value = '1'; });
    await page.$eval('#side', (e) => { (e as HTMLInputElement).value = '64'; });
    await page.click('#run');
    const state = await result(page);
    expect(state).to.match(/^error: refused by the memory guard: explicit-Jacobian way .* over the memory budget of 1\.00 MiB; use the VJP way/);
  });

  it('computes a TF.js model.json dropped with its weights.bin: both ways valid', async () => {
    const { modelJson, weightData } = saveTfjsModel(seedReferenceModel({ seed: 3 }));
    writeFileSync(join(out!, 'model.json'), JSON.stringify(modelJson));
    writeFileSync(join(out!, 'weights.bin'), new Uint8Array(weightData));
    const page = await chromium!.open(`${server!.url}/`);
    expect(await result(page)).to.equal('done');
    const input = (await page.$('#files')) as ElementHandle<HTMLInputElement>;
    await input.uploadFile(join(out!, 'model.json'), join(out!, 'weights.bin'));
    await page.waitForFunction(() => (document.getElementById('model') as HTMLSelectElement).value === 'file' && document.getElementById('drop')!.textContent!.includes('weights.bin'), { timeout: 10_000 });
    await page.click('#run');
    expect(await result(page)).to.equal('done');
    const lines = await stepThrough(page);
    // Split after two layers: [conv2d, conv2d_1] [flatten, dense, activation]; 6 weights, one boundary, the loss.
    expect(lines).to.have.length(16);
    for (const l of lines) expect(l).to.match(/ valid: true$/);
    expect(chromium!.errors, 'page errors').to.deep.equal([]);
  });
});

/**
 * Headless Chromium for the browser specs: Debian's `chromium` driven by puppeteer-core (nothing
 * downloaded at install time), and a static server on 127.0.0.1 for the pages it opens.
 *
 * Without Chromium a spec skips, saying how to install it; under `CI=true` it fails instead, since
 * CI (`.ci/run`) installs it.
 * @module
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { extname, join, normalize, resolve } from 'node:path';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';

/** Where Debian's package puts it; `JC_CHROMIUM` names another. */
export const CHROMIUM = process.env.JC_CHROMIUM ?? '/usr/bin/chromium';

/** The flags this closed network needs: without the background-networking ones it refuses connections. */
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/**
 * Skips the calling suite (mocha `this`) when Chromium is absent, or throws under `CI=true`.
 * Call it in a `before` hook.
 */
export function requireChromium(ctx: Mocha.Context): void {
  if (existsSync(CHROMIUM)) return;
  const how = `install it with: sudo apt-get install chromium (or set JC_CHROMIUM to a Chromium binary)`;
  if (process.env.CI === 'true') throw new Error(`browser specs: expected Chromium at ${CHROMIUM}, received nothing there; under CI=true this is a failure: ${how}`);
  console.log(`      (skipped: no Chromium at ${CHROMIUM}; ${how})`);
  ctx.skip();
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8', '.json': 'application/json', '.bin': 'application/octet-stream', '.png': 'image/png', '.svg': 'image/svg+xml',
};

/** A static server of `files` (path → content) or of a directory, on 127.0.0.1 at an ephemeral port. */
export interface StaticServer {
  /** `http://127.0.0.1:PORT`. */
  url: string;
  /** Stops it. */
  close(): Promise<void>;
}

/** Serves in-memory `files` (`/index.html` → text) and, behind them, the files under `dir`. */
export async function serveStatic(files: Record<string, string | Uint8Array>, dir?: string): Promise<StaticServer> {
  const root = dir === undefined ? undefined : resolve(dir);
  const server: Server = createServer((req, res) => {
    let path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    if (path.endsWith('/')) path += 'index.html';
    let body: string | Uint8Array | undefined = files[path];
    if (body === undefined && root !== undefined) {
      const file = normalize(join(root, path));
      if (file.startsWith(root) && existsSync(file) && statSync(file).isFile()) body = readFileSync(file);
    }
    if (body === undefined && path === '/favicon.ico') {
      res.writeHead(204).end(); // the browser asks for one; a 404 would be logged as a page error
      return;
    }
    if (body === undefined) {
      res.writeHead(404).end(`not found: ${path}`);
      return;
    }
    res.writeHead(200, { 'content-type': TYPES[extname(path)] ?? 'application/octet-stream', 'cache-control': 'no-store' }).end(body);
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, close: () => new Promise((ok) => server.close(() => ok())) };
}

/** A launched browser and the page errors and console lines seen on its pages. */
export interface Chromium {
  /** The browser. */
  browser: Browser;
  /** Opens a page at `url` with a viewport of `width`×`height`, recording its errors and console. */
  open(url: string, width?: number, height?: number): Promise<Page>;
  /** Every uncaught page error and failed request so far, as `where: message`. */
  errors: string[];
  /** Closes the browser and removes its profile. */
  close(): Promise<void>;
}

/** Launches headless Chromium with a fresh profile in a temporary directory. */
export async function launchChromium(): Promise<Chromium> {
  const profile = mkdtempSync(join(tmpdir(), 'jc-chromium-'));
  const browser = await puppeteer.launch({ executablePath: CHROMIUM, headless: true, args: [...FLAGS, `--user-data-dir=${profile}`] });
  const errors: string[] = [];
  return {
    browser,
    errors,
    async open(url, width = 1200, height = 900) {
      const page = await browser.newPage();
      await page.setViewport({ width, height, deviceScaleFactor: 1 });
      page.on('pageerror', (e) => errors.push(`pageerror: ${(e as Error).message ?? String(e)}`));
      page.on('requestfailed', (r) => errors.push(`requestfailed: ${r.url()} ${r.failure()?.errorText ?? ''}`));
      page.on('console', (m) => {
        if (m.type() === 'error') errors.push(`console.error: ${m.text()}`);
      });
      await page.goto(url, { waitUntil: 'load' });
      return page;
    },
    async close() {
      await browser.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

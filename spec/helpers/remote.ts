/**
 * Real processes for the remote specs: `jacobian-chain serve` and `jacobian-chain train --connect`
 * as children on loopback ports, every wait bounded.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Conv2D } from '../../lib/layers/conv2d.js';
import { Dense } from '../../lib/layers/dense.js';
import { Dropout } from '../../lib/layers/dropout.js';
import { Flatten } from '../../lib/layers/flatten.js';
import { saveModelFile } from '../../lib/model-io.js';
import { Rng } from '../../lib/rng.js';
import { Sequential } from '../../lib/sequential.js';

/** The repository's root, where the children run. */
export const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** A child whose output (stdout and stderr together) is collected as it comes. */
export interface Child {
  /** The process. */
  child: ChildProcess;
  /** Its output so far. */
  out: string[];
  /** Resolves with its exit code and signal (SIGKILLed after `ms` if it has not exited). */
  exited: (ms: number) => Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves when its output matches `re`, rejects after `ms` or when it exits first. */
  waitFor: (re: RegExp, ms: number) => Promise<RegExpExecArray>;
}

/** `node --import tsx bin/cli.ts <args>` in the repository. */
export function cli(args: string[]): Child {
  return script('bin/cli.ts', args);
}

/** `node --import tsx <path> <args>` in the repository (path relative to its root). */
export function script(path: string, args: string[]): Child {
  const child = spawn(process.execPath, ['--import', 'tsx', path, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const out: string[] = [];
  const listeners = new Set<() => void>();
  const onData = (d: Buffer) => {
    out.push(d.toString());
    listeners.forEach((f) => f());
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  return {
    child,
    out,
    exited: (ms) => {
      const timer = setTimeout(() => child.kill('SIGKILL'), ms);
      return exit.finally(() => clearTimeout(timer));
    },
    waitFor: (re, ms) =>
      new Promise((resolve, reject) => {
        const check = () => {
          const m = re.exec(out.join(''));
          if (m) {
            done();
            resolve(m);
          }
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`no ${re} within ${ms} ms; the child printed: ${out.join('')}`));
        }, ms);
        const onExit = () => {
          // Output may still be in flight when the exit is reported: one last look.
          setTimeout(() => {
            check();
            if (listeners.has(check)) {
              done();
              reject(new Error(`the child exited before printing ${re}; it printed: ${out.join('')}`));
            }
          }, 50);
        };
        const done = () => {
          clearTimeout(timer);
          listeners.delete(check);
          child.off('exit', onExit);
        };
        listeners.add(check);
        child.on('exit', onExit);
        check();
      }),
  };
}

/** `jacobian-chain serve <args> --port 0`; resolves with the child and the port it printed. */
export async function serve(args: string[], ms = 60_000): Promise<Child & { port: number }> {
  const c = cli(['serve', ...args, '--port', '0', '--max-seconds', '240']);
  try {
    const m = await c.waitFor(/listening on 127\.0\.0\.1:(\d+)/, ms);
    return { ...c, port: Number(m[1]) };
  } catch (e) {
    c.child.kill('SIGKILL');
    throw e;
  }
}

/** Stops a child: SIGTERM, then SIGKILL after 5 s. */
export async function stop(c: Child): Promise<void> {
  if (c.child.exitCode !== null || c.child.signalCode !== null) return;
  c.child.kill('SIGTERM');
  await c.exited(5000);
}

/** Conv2D · Dropout · Flatten | Dense(relu) · Dropout · Dense(sigmoid) on [5, 5, 1]: split at 3, Dropout draws masks on both sides. */
export function smallSplitModel(name: string): Sequential {
  return new Sequential(
    [new Conv2D({ filters: 3, kernel_size: 2, activation: 'relu' }), new Dropout({ rate: 0.25 }), new Flatten(), new Dense({ units: 6, activation: 'relu' }), new Dropout({ rate: 0.5 }), new Dense({ units: 1, activation: 'sigmoid' })],
    { inputShape: [5, 5, 1], rng: new Rng(11), name },
  );
}

/** Registers mocha hooks that save {@link smallSplitModel} in a fresh temporary folder before the suite and remove the folder after; the getters answer once `before` ran. */
export function modelFileFixture(name: string): { dir: () => string; file: () => string } {
  let dir = '';
  before(() => {
    dir = mkdtempSync(join(tmpdir(), `jc-${name}-`));
    saveModelFile(smallSplitModel(name), join(dir, 'model.json'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));
  return { dir: () => dir, file: () => join(dir, 'model.json') };
}

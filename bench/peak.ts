/**
 * Peak memory of one run, from the kernel: the RSS high-water mark (`VmHWM`), reset just before
 * the run by Linux `clear_refs` 5, minus the RSS before it (after two full GCs when `--expose-gc`).
 * @example
 * const { result, ms, peakRssDelta } = await measurePeak(() => jacobianChain(stages, x, y, 'mse'));
 * @module
 */
import { readFileSync, writeFileSync } from 'node:fs';

/** `VmRSS` or `VmHWM` of this process, in bytes (NaN off Linux). */
export function procStatus(key: 'VmRSS' | 'VmHWM'): number {
  const m = new RegExp(`${key}:\\s+(\\d+) kB`).exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}

/** Resets the RSS high-water mark; false where the kernel refuses. */
export function resetPeak(): boolean {
  try {
    writeFileSync('/proc/self/clear_refs', '5');
    return true;
  } catch {
    return false;
  }
}

const gc = (globalThis as { gc?: () => void }).gc;

/** Runs `f` once (awaiting it), timing it and measuring its peak RSS growth. */
export async function measurePeak<T>(f: () => T | Promise<T>): Promise<{
  /** What `f` returned. */
  result: T;
  /** Wall time of the run. */
  ms: number;
  /** Peak RSS during the run minus the RSS before it; NaN where the peak cannot be reset. */
  peakRssDelta: number;
}> {
  gc?.();
  gc?.();
  const before = procStatus('VmRSS');
  const reset = resetPeak();
  const t0 = performance.now();
  const result = await f();
  const ms = performance.now() - t0;
  return { result, ms, peakRssDelta: reset ? procStatus('VmHWM') - before : NaN };
}

/** Wall time of one run of `f` (awaited). */
export async function timeOnce(f: () => unknown): Promise<number> {
  const t0 = performance.now();
  await f();
  return performance.now() - t0;
}

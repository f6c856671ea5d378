/**
 * The memory budget that the explicit-Jacobian way must fit in, checked before allocating.
 * @module
 */
import { MemoryBudgetError } from './errors.js';

/** Default budget for one materialized Jacobian: 4 GiB, a sixth of this 24 GiB machine. */
export const DEFAULT_MEMORY_BUDGET = 4 * 1024 ** 3;

let budget = DEFAULT_MEMORY_BUDGET;

/** The budget in force, in bytes. */
export function getMemoryBudget(): number {
  return budget;
}

/** Sets the budget (bytes) for every later Jacobian that is not given its own. */
export function setMemoryBudget(bytes: number): void {
  if (!(bytes > 0) || !Number.isFinite(bytes)) throw new MemoryBudgetError(`memory budget: expected a positive finite number of bytes, received ${bytes}`, 0, bytes);
  budget = bytes;
}

/** Human-readable bytes: `1.50 MiB`. */
export function fmtBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(2)} ${units[i]}`;
}

/**
 * Refuses an allocation whose estimate exceeds the budget, naming the estimate, the budget and
 * what to do instead, before a single byte is allocated.
 */
export function guardBytes(what: string, estimate: number, budgetBytes: number = budget, alternative = 'use the VJP chain (tape.gradient with outputGradients), which never materializes a Jacobian'): void {
  if (estimate > budgetBytes) {
    throw new MemoryBudgetError(
      `${what}: needs an estimated ${fmtBytes(estimate)} (${estimate} bytes), over the memory budget of ${fmtBytes(budgetBytes)}; ${alternative}, or raise the budget with { memoryBudget } / setMemoryBudget()`,
      estimate,
      budgetBytes,
    );
  }
}

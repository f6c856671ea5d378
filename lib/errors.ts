/**
 * Errors thrown by jacobian-chain. Every message names what was expected and what was received,
 * so that a mistake is found where it was made rather than deep inside a kernel.
 * @module
 */

/** Base class of every error this package throws on bad input. */
export class JacobianChainError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** A tensor had the wrong rank, shape, dtype or contents. */
export class ShapeError extends JacobianChainError {}

/** A layer, activation, loss, option or model file was not understood. */
export class ConfigError extends JacobianChainError {}

/** A dense Jacobian (or other buffer) would exceed the memory budget; thrown before allocating. */
export class MemoryBudgetError extends JacobianChainError {
  constructor(
    message: string,
    /** Estimated bytes of the refused allocation. */
    readonly estimateBytes: number,
    /** The budget in force, in bytes. */
    readonly budgetBytes: number,
  ) {
    super(message);
  }
}

/** Formats a shape the way errors quote it: `[3, 10, 10, 1]`. */
export function fmtShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

/** Formats any received value briefly for an error message. */
export function fmtValue(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(fmtValue).join(', ')}]`;
  if (v === undefined) return 'undefined';
  try {
    const s = JSON.stringify(v);
    return s === undefined ? String(v) : s.length > 120 ? `${s.slice(0, 117)}...` : s;
  } catch {
    return String(v);
  }
}

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

/**
 * A peer (a stage server) that refused the connection, could not be reached, or did not answer
 * within the deadline: nothing was wrong with the request, the other side is gone, stalled or
 * overloaded. The message names the address and the deadline.
 */
export class PeerError extends JacobianChainError {
  constructor(
    message: string,
    /** The peer's `host:port`. */
    readonly address: string,
    /** The deadline of the call that failed, in milliseconds. */
    readonly deadlineMs: number,
  ) {
    super(message);
  }
}

/**
 * Formats a shape the way errors quote it, `[3, 10, 10, 1]`, each extent by {@link fmtValue}, so
 * that a received `["2"]` reads `["2"]` and `[NaN]` reads `[NaN]` (never `[2]` or `[null]`);
 * anything that is not an array is quoted whole.
 */
export function fmtShape(shape: unknown): string {
  return fmtValue(shape);
}

/** Longest quote of a received value; longer ones end in `...`. */
const MAX_QUOTE = 120;

/**
 * Formats any received value briefly for an error message, faithfully: numbers as JavaScript
 * writes them (`Infinity`, `-Infinity`, `NaN`, `-0`), strings in double quotes, bigints with `n`,
 * `undefined`, typed arrays and nested arrays element by element, objects key by key (JSON would
 * print `null` for a non-finite number and drop `undefined`). Cycles print as `[Circular]`.
 * @example
 * fmtValue({ units: 1e999, name: "2" }); // '{"units": Infinity, "name": "2"}'
 */
export function fmtValue(v: unknown): string {
  const s = quote(v, new Set(), 0);
  return s.length > MAX_QUOTE ? `${s.slice(0, MAX_QUOTE - 3)}...` : s;
}

function quote(v: unknown, seen: Set<unknown>, depth: number): string {
  switch (typeof v) {
    case 'string':
      return JSON.stringify(v);
    case 'number':
      return Object.is(v, -0) ? '-0' : String(v);
    case 'bigint':
      return `${v}n`;
    case 'undefined':
      return 'undefined';
    case 'boolean':
    case 'symbol':
      return String(v);
    case 'function':
      return `[function ${(v as { name?: string }).name || 'anonymous'}]`;
  }
  if (v === null) return 'null';
  if (seen.has(v)) return '[Circular]';
  // Deep structures are cut: the message has room for ~120 characters anyway.
  if (depth > 4) return Array.isArray(v) ? '[...]' : '{...}';
  seen.add(v);
  try {
    if (Array.isArray(v) || ArrayBuffer.isView(v)) {
      const items = Array.from(v as ArrayLike<unknown>).slice(0, 40).map((x) => quote(x, seen, depth + 1));
      const more = (v as ArrayLike<unknown>).length > 40 ? ', ...' : '';
      const prefix = Array.isArray(v) ? '' : `${(v as object).constructor.name} `;
      return `${prefix}[${items.join(', ')}${more}]`;
    }
    const entries = Object.entries(v as object).slice(0, 20).map(([k, x]) => `${JSON.stringify(k)}: ${quote(x, seen, depth + 1)}`);
    return `{${entries.join(', ')}}`;
  } finally {
    seen.delete(v);
  }
}

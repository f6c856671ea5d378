/**
 * The exit codes of every `jacobian-chain` command, in one table, and the one place that maps an
 * error to its code and to the single line printed for it.
 *
 * | code | name | when |
 * |---:|---|---|
 * | 0 | `ok` | success |
 * | 1 | `checksFailed` | the command ran, and a check it reports failed (`seed`: a gradient not allclose; `jacobian`: a chained gradient differs) |
 * | 2 | `usage` | a bad option or option value (unknown flag, `--batch -1`, `--side abc`, a model that cannot be built from the options) |
 * | 3 | `badInput` | a bad input file (`--model` missing, a directory, malformed JSON, a bad model or tensor in it) |
 * | 4 | `memory` | refused by the memory guard before allocating (the estimate and the budget are printed) |
 * | 5 | `nonFinite` | `train` stopped on a non-finite loss or gradient |
 * | 6 | `peer` | `train --connect`: the stage server refused the connection, could not be reached, or did not answer within the deadline (one line names the address and the deadline) |
 * | 70 | `internal` | anything unexpected: a bug (set `JACOBIAN_CHAIN_DEBUG=1` for its stack trace) |
 */
import { ConfigError, JacobianChainError, MemoryBudgetError, PeerError, ShapeError } from '../lib/errors.js';

/** Exit codes by name. */
export const EXIT = {
  ok: 0,
  checksFailed: 1,
  usage: 2,
  badInput: 3,
  memory: 4,
  nonFinite: 5,
  peer: 6,
  internal: 70,
} as const;

/** An exit code of {@link EXIT}. */
export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

/** What each code means, in the order `--help` and the README list them. */
export const EXIT_CODES: readonly { code: ExitCode; meaning: string }[] = [
  { code: EXIT.ok, meaning: 'success' },
  { code: EXIT.checksFailed, meaning: 'a check failed (seed: a gradient not allclose to the single tape; jacobian: a chained gradient differs)' },
  { code: EXIT.usage, meaning: 'usage error: a bad option or option value' },
  { code: EXIT.badInput, meaning: 'bad input file (--model: missing, a directory, malformed, or a bad model or tensor in it)' },
  { code: EXIT.memory, meaning: 'refused by the memory guard, before allocating (the estimate and the budget are printed)' },
  { code: EXIT.nonFinite, meaning: 'train stopped on a non-finite loss or gradient' },
  { code: EXIT.peer, meaning: 'train --connect: the stage server refused, was unreachable, or did not answer within the deadline' },
  { code: EXIT.internal, meaning: `internal error (a bug; set JACOBIAN_CHAIN_DEBUG=1 for the stack trace)` },
];

/** The exit-code section of every `--help`. */
export function exitCodesHelp(): string {
  return `exit codes:\n${EXIT_CODES.map((e) => `  ${String(e.code).padStart(2)}  ${e.meaning}`).join('\n')}`;
}

/** A bad input file: the file's name and what was wrong with it; exit code 3. */
export class InputFileError extends JacobianChainError {}

/** A command-line refusal whose code is given explicitly (a non-finite stop, a path check). */
export class ExitError extends JacobianChainError {
  constructor(
    message: string,
    /** The exit code it ends the command with. */
    readonly code: ExitCode,
  ) {
    super(message);
  }
}

/**
 * The exit code of an error: the library's own classes by what they mean to a user of the command
 * line; anything else (a TypeError, a RangeError from inside the engine) is a bug, 70. Usage
 * errors (bin/args.ts's UsageError) are ConfigErrors, so they land on 2 with the other options.
 */
export function exitCodeOf(e: unknown): ExitCode {
  if (e instanceof ExitError) return e.code;
  if (e instanceof InputFileError) return EXIT.badInput;
  if (e instanceof MemoryBudgetError) return EXIT.memory;
  if (e instanceof PeerError) return EXIT.peer;
  if (e instanceof ConfigError) return EXIT.usage;
  // A tensor of the wrong shape or contents reaching a command came from its input.
  if (e instanceof ShapeError) return EXIT.badInput;
  if (e instanceof JacobianChainError) return EXIT.usage;
  return EXIT.internal;
}

/** Whether stack traces are wanted: `JACOBIAN_CHAIN_DEBUG` set to anything but empty or `0`. */
export function debugEnabled(): boolean {
  const v = process.env.JACOBIAN_CHAIN_DEBUG;
  return v !== undefined && v !== '' && v !== '0';
}

/** A message on one line: newlines (from a nested error, a file's text) would split it. */
export function oneLine(text: string): string {
  return text.replace(/\s*[\r\n]+\s*/g, ' ').trim();
}

/**
 * Prints the one line for an error, `jacobian-chain <command>: <message>` (for a bug, its class
 * and a pointer to JACOBIAN_CHAIN_DEBUG; with it set, the stack follows), and returns its code.
 */
export function report(command: string | null, e: unknown, hint = ''): ExitCode {
  const code = exitCodeOf(e);
  const where = command ? `jacobian-chain ${command}` : 'jacobian-chain';
  const message = e instanceof Error ? e.message : String(e);
  if (code === EXIT.internal) {
    const name = e instanceof Error ? e.name : typeof e;
    console.error(oneLine(`${where}: internal error (a bug, please report it): ${name}: ${message}${debugEnabled() ? '' : '; set JACOBIAN_CHAIN_DEBUG=1 for the stack trace'}`));
  } else {
    console.error(oneLine(`${where}: ${message}${hint}`));
  }
  if (debugEnabled() && e instanceof Error && e.stack) console.error(e.stack);
  return code;
}

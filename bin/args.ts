/**
 * Command-line options, read one way by every `jacobian-chain` command: node:util `parseArgs`
 * splits the tokens, typed validators turn the values into numbers and choices, and a bad option
 * ends the command with exit code 2 (bin/exit-codes.ts) and a one-line message quoting the flag and
 * the value it received.
 * @example
 * const OPTIONS = { batch: 'string', json: 'boolean' } as const;
 * const o = parseCommand('demo', HELP, () => {
 *   const v = parseOptions(argv, OPTIONS);
 *   return v === 'help' ? v : { batch: positiveInt(v.batch, '--batch') ?? 1, json: v.json === true };
 * });
 * if (typeof o === 'number') return o; // 0 after --help; 2 after `--batch two`: expected --batch to be an integer >= 1, received "two"
 */
import { closeSync, constants, openSync, statSync, unlinkSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { ConfigError, JacobianChainError, fmtValue } from '../lib/errors.js';
import { EXIT, exitCodeOf, exitCodesHelp, report } from './exit-codes.js';

/** A bad option: printed with a pointer to `--help`, exit code 2. */
export class UsageError extends ConfigError {}

/** A command's options by name (without the leading `--`): `'string'` takes a value, `'boolean'` is a switch. `-h`/`--help` is always there. */
export type OptionKinds = Readonly<Record<string, 'string' | 'boolean'>>;

/** The options given: the text of each string option, `true` for each switch, absent when not given. */
export type OptionValues<K extends OptionKinds> = { -readonly [F in keyof K]?: K[F] extends 'string' ? string : true };

/**
 * Reads `argv` against a command's options; returns `'help'` when `-h` or `--help` is among them.
 * Throws a {@link UsageError} for an unknown option or a positional, a string option without a
 * value (or followed by another `--option`), and a switch given a value. Values may start with one
 * dash: `--lr -1` reaches the validator, which can say why -1 is wrong.
 */
export function parseOptions<K extends OptionKinds>(argv: readonly string[], kinds: K): OptionValues<K> | 'help' {
  const options: Record<string, { type: 'string' | 'boolean'; short?: string }> = { help: { type: 'boolean', short: 'h' } };
  for (const [name, type] of Object.entries(kinds)) options[name] = { type };
  // Not strict: node's strict mode refuses `--lr -1` as "ambiguous"; what strict mode checks is checked below, with the flags listed.
  const { tokens } = parseArgs({ args: [...argv], options, strict: false, allowPositionals: true, tokens: true });
  if (tokens.some((t) => t.kind === 'option' && t.name === 'help')) return 'help';
  const values: Record<string, string | true> = {};
  for (const t of tokens) {
    if (t.kind === 'option-terminator') continue;
    const raw = t.kind === 'option' ? t.rawName : t.value;
    if (t.kind !== 'option' || raw !== `--${t.name}` || !Object.hasOwn(kinds, t.name)) {
      throw new UsageError(`unknown option ${JSON.stringify(raw)}; expected one of ${[...Object.keys(kinds), 'help'].map((k) => `--${k}`).join(', ')}`);
    }
    if (kinds[t.name] === 'boolean') {
      if (t.value !== undefined) throw new UsageError(`expected ${raw} to take no value, received ${fmtValue(t.value)}`);
      values[t.name] = true;
    } else {
      // `--split --batch 2`: the value was forgotten, and --batch is not a split.
      if (t.value === undefined || (!t.inlineValue && t.value.startsWith('--'))) throw new UsageError(`expected a value after ${raw}, received ${t.value === undefined ? 'nothing' : fmtValue(t.value)}`);
      values[t.name] = t.value;
    }
  }
  return values as OptionValues<K>;
}

/**
 * A validator: an option's text to a typed value, or a {@link UsageError}
 * `expected <flag> <expected>, received "<text>"`. An option not given (`undefined`) passes through,
 * so that `positiveInt(v.batch, '--batch') ?? 32` reads a default.
 */
export interface Check<T> {
  (text: string, flag: string): T;
  (text: string | undefined, flag: string): T | undefined;
  /** The conversion alone: the value, or undefined when the text is not one. */
  readonly convert: (text: string) => T | undefined;
}

/** A {@link Check} from a conversion and what the message says it expects (`to be an integer >= 1`, `like "3,8"`). */
export function check<T>(expected: string, convert: (text: string) => T | undefined): Check<T> {
  const f = (text: string | undefined, flag: string): T | undefined => {
    if (text === undefined) return undefined;
    const v = convert(text);
    if (v === undefined) throw new UsageError(`expected ${flag} ${expected}, received ${fmtValue(text)}`);
    return v;
  };
  return Object.assign(f, { convert }) as Check<T>;
}

/** A decimal integer `>= min` (surrounding spaces allowed; not `1e3`, `0x10` or `2.0`). */
export function integer(min: number): Check<number> {
  return check(`to be an integer >= ${min}`, (text) => {
    const n = Number(text);
    return /^\s*-?\d+\s*$/.test(text) && Number.isSafeInteger(n) && n >= min ? n : undefined;
  });
}

/** An integer >= 1. */
export const positiveInt = integer(1);
/** An integer >= 0. */
export const nonNegativeInt = integer(0);

/** A finite number for which `ok` holds; `expected` names the range: `to be a number in [0, 1]`. */
export function numeric(expected: string, ok: (n: number) => boolean): Check<number> {
  return check(expected, (text) => {
    const n = Number(text);
    return text.trim() !== '' && Number.isFinite(n) && ok(n) ? n : undefined;
  });
}

/** A finite number > 0. */
export const positiveNumber = numeric('to be a positive number', (n) => n > 0);
/** A finite number >= 0. */
export const nonNegativeNumber = numeric('to be a non-negative number', (n) => n >= 0);

/** One of `allowed`, exactly. */
export function choice<const T extends string>(allowed: readonly T[]): Check<T> {
  const expected = allowed.length === 2 ? `${allowed[0]} or ${allowed[1]}` : `to be one of ${allowed.join(', ')}`;
  return check(expected, (text) => ((allowed as readonly string[]).includes(text) ? (text as T) : undefined));
}

/** `float64` or `float32`. */
export const dtype = choice(['float64', 'float32']);

/** Comma-separated values, each passing `item`; `expected` is quoted whole: `to be comma-separated integers >= 1`. */
export function commaList<T>(item: Check<T>, expected: string): Check<T[]> {
  return check(expected, (text) => {
    const out = text.split(',').map((s) => item.convert(s.trim()));
    return out.every((v) => v !== undefined) ? (out as T[]) : undefined;
  });
}

/** `--split`: layer indices where a new stage starts. */
export const splitPoints = commaList(positiveInt, 'to be comma-separated integers >= 1');

/**
 * Runs a command's parsing with what every command does alike: after `--help` the help is printed
 * (returns 0); a bad option, or any {@link JacobianChainError} `parse` throws (a model that cannot
 * be built from the options, a bad model file, a refusal by the memory guard), is printed on one
 * line (with a pointer to `--help` when the options are at fault) and its exit code returned
 * (bin/exit-codes.ts). Otherwise returns what `parse` returned.
 */
export function parseCommand<T extends object>(command: string, help: string, parse: () => T | 'help'): T | number {
  try {
    const o = parse();
    if (o !== 'help') return o;
    console.log(`${help.trimEnd()}\n\n${exitCodesHelp()}\n`);
    return EXIT.ok;
  } catch (e) {
    return refuse(command, e, true);
  }
}

/**
 * The exit code for an error the user can fix (bin/exit-codes.ts: 2 usage, 3 bad input file,
 * 4 memory guard, ...): prints a {@link JacobianChainError} on one line as
 * `jacobian-chain <command>: <message>`, with a pointer to `--help` when `pointToHelp` and the
 * options are at fault; anything else is a bug and is rethrown, for the top level to report (70).
 */
export function refuse(command: string, e: unknown, pointToHelp = false): number {
  if (!(e instanceof JacobianChainError)) throw e;
  const usage = exitCodeOf(e) === EXIT.usage;
  return report(command, e, pointToHelp && usage ? `; run "jacobian-chain ${command} --help" for the options` : '');
}

/**
 * Checks, before any work, that `path` can be written as a file: not an existing directory, not
 * under a regular file, and in a writable directory (the nearest existing one, when the missing
 * ones are to be created). Returns the path.
 * @throws UsageError e.g. `expected --out to be a writable file path, received "out" (an existing directory)`
 */
export function writablePath(path: string, flag: string): string {
  const fail = (why: string) => new UsageError(`expected ${flag} to be a writable file path, received ${fmtValue(path)} (${why})`);
  if (path.trim() === '') throw fail('empty');
  const full = resolve(path);
  // ENOENT or ENOTDIR alike: the walk up below finds the ancestor that exists, and says if it is a file.
  const stat = (p: string) => {
    try {
      return statSync(p);
    } catch {
      return undefined;
    }
  };
  const st = stat(full);
  if (st?.isDirectory()) throw fail('an existing directory');
  let dir = dirname(full);
  for (;;) {
    const d = stat(dir);
    if (d) {
      if (!d.isDirectory()) throw fail(`${JSON.stringify(dir)} is not a directory`);
      break;
    }
    dir = dirname(dir);
  }
  // A real write, not access(W_OK): for root, access() says yes even on a read-only or virtual
  // file system (/sys), where the write at the end of training would then fail.
  const probe = st ? full : join(dir, `.jacobian-chain-write-test-${process.pid}`);
  try {
    const fd = openSync(probe, st ? constants.O_WRONLY : constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL);
    closeSync(fd);
    if (!st) unlinkSync(probe);
  } catch (e) {
    throw fail(`${JSON.stringify(st ? full : dir)} is not writable: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  return path;
}

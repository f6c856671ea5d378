#!/usr/bin/env node
/**
 * The `jacobian-chain` command: `seed` (the seed's reference check, the default), `train`, `jacobian`, `inspect`.
 * Each subcommand lives in `bin/commands/<name>.ts` and exports `run(argv): Promise<number>`; the
 * exit codes are bin/exit-codes.ts's table, and every error is printed here or there on one line.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EXIT, exitCodesHelp, report } from './exit-codes.js';

/**
 * The package's version, read from the nearest package.json above this file: the command runs as
 * bin/cli.ts from a clone and as dist/bin/cli.js from an install, one or two folders deeper.
 */
function packageVersion(): string {
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = dirname(dir)) {
    const file = join(dir, 'package.json');
    if (existsSync(file)) {
      const pkg = JSON.parse(readFileSync(file, 'utf8')) as { name?: unknown; version?: unknown };
      if (pkg.name === 'jacobian-chain' && typeof pkg.version === 'string') return pkg.version;
    }
    if (dirname(dir) === dir) throw new Error(`jacobian-chain --version: expected a package.json named "jacobian-chain" above ${fileURLToPath(import.meta.url)}, received none`);
  }
}

const commands: Record<string, () => Promise<{ run: (argv: string[]) => Promise<number> }>> = {
  seed: () => import('./commands/seed.js'),
  train: () => import('./commands/train.js'),
  jacobian: () => import('./commands/jacobian.js'),
  inspect: () => import('./commands/inspect.js'),
  serve: () => import('./commands/serve.js'),
};

async function main(argv: string[]): Promise<number> {
  const [name = 'seed', ...rest] = argv;
  if (name === '--version' || name === '-v' || name === 'version') {
    console.log(packageVersion());
    return EXIT.ok;
  }
  if (name === '--help' || name === '-h' || name === 'help') {
    console.log(`usage: jacobian-chain <command> [options]\n\ncommands:\n  seed       the seed's reference check: explicit-Jacobian chain and VJP chain against one tape (default)\n  train      train a model split into stages, by vjp or by jacobian\n  jacobian   build one stage's Jacobian and report its shape, bytes and time\n  inspect    a model file's layers, and what each way would cost per stage, from shapes alone\n  serve      host a model's downstream stages over gRPC for train --connect (split learning)\n\n  --version  print the version and exit\n\nrun "jacobian-chain <command> --help" for a command's options\n\n${exitCodesHelp()}\n\nenvironment:\n  JACOBIAN_CHAIN_DEBUG=1   print the stack trace after an error`);
    return EXIT.ok;
  }
  const load = commands[name];
  if (!load) {
    console.error(`jacobian-chain: unknown command ${JSON.stringify(name)}; expected one of ${Object.keys(commands).join(', ')}`);
    return EXIT.usage;
  }
  return (await load()).run(rest);
}

// The command's name, for the one line printed if it fails past its own checks.
const command = process.argv[2] && !process.argv[2].startsWith('-') ? process.argv[2] : null;
const fail = (err: unknown) => process.exit(report(command, err));
process.on('uncaughtException', fail);
process.on('unhandledRejection', fail);
main(process.argv.slice(2)).then((code) => process.exit(code), fail);

#!/usr/bin/env node
/**
 * The `jacobian-chain` command: `seed` (the seed's reference check, the default), `train`, `jacobian`, `inspect`.
 * Each subcommand lives in `bin/commands/<name>.ts` and exports `run(argv): Promise<number>`.
 */
const commands: Record<string, () => Promise<{ run: (argv: string[]) => Promise<number> }>> = {
  seed: () => import('./commands/seed.js'),
  train: () => import('./commands/train.js'),
  jacobian: () => import('./commands/jacobian.js'),
  inspect: () => import('./commands/inspect.js'),
};

async function main(argv: string[]): Promise<number> {
  const [name = 'seed', ...rest] = argv;
  if (name === '--help' || name === '-h' || name === 'help') {
    console.log(`usage: jacobian-chain <command> [options]\n\ncommands:\n  seed       the seed's reference check: explicit-Jacobian chain and VJP chain against one tape (default)\n  train      train a model split into stages, by vjp or by jacobian\n  jacobian   build one stage's Jacobian and report its shape, bytes and time\n  inspect    a model file's layers, and what each way would cost per stage, from shapes alone\n\nrun "jacobian-chain <command> --help" for a command's options`);
    return 0;
  }
  const load = commands[name];
  if (!load) {
    console.error(`jacobian-chain: unknown command ${JSON.stringify(name)}; expected one of ${Object.keys(commands).join(', ')}`);
    return 2;
  }
  return (await load()).run(rest);
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err instanceof Error ? `${err.name}: ${err.message}` : String(err));
    process.exit(1);
  },
);

/** Runs a command of bin/ in this process, as the specs of the commands do, with its console output captured. */

/** Calls `f` with `console.log` and `console.error` captured (and restored after, whatever happens): what it returned and both outputs, lines joined by newlines. */
export async function captureConsole<T>(f: () => T | Promise<T>): Promise<{ value: T; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const log = console.log;
  const error = console.error;
  console.log = (...a: unknown[]) => void out.push(a.join(' '));
  console.error = (...a: unknown[]) => void err.push(a.join(' '));
  try {
    const value = await f();
    return { value, out: out.join('\n'), err: err.join('\n') };
  } finally {
    console.log = log;
    console.error = error;
  }
}

/** Runs a command's `run(argv)` (bin/commands/*.ts) with its output captured: the exit code, stdout and stderr. */
export async function runCommand(run: (argv: string[]) => Promise<number>, argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const { value, out, err } = await captureConsole(() => run(argv));
  return { code: value, out, err };
}

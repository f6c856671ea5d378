/**
 * The main entry stays bundleable for a browser: esbuild bundles lib/index.ts for the browser
 * platform and its metafile lists every import of every module reached; none is a Node.js builtin
 * (`node:fs`, or a bare `fs`), and none is vega, vega-lite or mathjs. The subpaths that may use them
 * are checked to still do so, so the scan is known to see such imports.
 */
import { builtinModules } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Metafile, build } from 'esbuild';
import { expect } from './helpers/setup.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const BUILTINS = new Set(builtinModules.flatMap((m) => [m, `node:${m}`]));
const HEAVY = ['vega', 'vega-lite', 'mathjs'];

/** Every `[importer, specifier]` of the graph reached from `entry`, builtins and packages kept external. */
async function importsOf(entry: string): Promise<[string, string][]> {
  const { metafile } = await build({
    entryPoints: [join(ROOT, entry)],
    bundle: true,
    write: false,
    metafile: true,
    platform: 'browser',
    format: 'esm',
    logLevel: 'silent',
    // External, so that the metafile records them rather than esbuild failing on the first one.
    external: [...BUILTINS, ...HEAVY],
  });
  return Object.entries((metafile as Metafile).inputs).flatMap(([file, input]) => input.imports.map((i): [string, string] => [file, i.original ?? i.path]));
}

describe('the main entry', function () {
  this.timeout(60_000);

  it('lib/index.ts reaches no Node.js builtin and none of vega, vega-lite, mathjs', async () => {
    const imports = await importsOf('lib/index.ts');
    expect(imports.length, 'the scan saw no imports at all').to.be.above(50);
    const offending = imports.filter(([, spec]) => BUILTINS.has(spec) || HEAVY.some((h) => spec === h || spec.startsWith(`${h}/`)));
    expect(offending.map(([file, spec]) => `${file} imports ${spec}`), 'imports a browser bundle cannot hold').to.deep.equal([]);
  });

  it('the scan sees Node.js builtins and vega where they are: lib/node.ts and lib/plot.ts', async () => {
    const node = (await importsOf('lib/node.ts')).map(([, spec]) => spec);
    expect(node).to.include.members(['node:fs', 'node:path', 'node:module']);
    const plot = (await importsOf('lib/plot.ts')).map(([, spec]) => spec);
    expect(plot).to.include.members(['node:fs', 'vega', 'vega-lite']);
  });
});

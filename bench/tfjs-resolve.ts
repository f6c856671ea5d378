/**
 * A module resolve hook for the compiled bench under plain node: tfjs-core's per-file ESM build
 * (its `dist/register_all_gradients.js` and the gradients it imports) writes relative imports
 * without an extension, which only bundlers and tsx resolve. This adds `.js` (or `/index.js`) to
 * such imports from inside `@tensorflow/`; everything else resolves as node does.
 * @example
 * register('./tfjs-resolve.js', import.meta.url); // then import('@tensorflow/tfjs-core/dist/register_all_gradients.js')
 * @module
 */
type Next = (specifier: string, context: { parentURL?: string }) => Promise<unknown>;

/** The resolve hook (node:module `register`). */
export async function resolve(specifier: string, context: { parentURL?: string }, next: Next): Promise<unknown> {
  if (/^\.\.?\//.test(specifier) && context.parentURL?.includes('/@tensorflow/') && !/\.[cm]?js$/.test(specifier)) {
    for (const s of [`${specifier}.js`, `${specifier}/index.js`]) {
      try {
        return await next(s, context);
      } catch {
        // not this one: try the next spelling
      }
    }
  }
  return next(specifier, context);
}

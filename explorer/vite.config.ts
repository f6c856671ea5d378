// The explorer's build: `jacobian-chain` resolved to the library's source, the worker as an ES module.
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  base: './',
  resolve: { alias: { 'jacobian-chain': fileURLToPath(new URL('../lib/index.ts', import.meta.url)) } },
  worker: { format: 'es' },
  // No modulepreload polyfill: every browser with module workers has modulepreload (and under tsx, as the spec builds,
  // vite fails to resolve its own polyfill module).
  build: { outDir: 'dist', emptyOutDir: true, target: 'es2022', chunkSizeWarningLimit: 2000, modulePreload: { polyfill: false } },
  logLevel: 'warn',
});

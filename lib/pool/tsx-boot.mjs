// Starts a pool worker from the TypeScript sources (specs, tsx): tsx's loader is resolved from
// here, beside the sources, and loads worker.ts. The compiled build runs worker.js directly.
import { workerData } from 'node:worker_threads';
const { tsImport } = await import('tsx/esm/api');
await tsImport(workerData.entry, import.meta.url);

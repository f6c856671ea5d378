/**
 * The messages between the explorer's page (`main.ts`) and its worker (`worker.ts`).
 * @module
 */

/** What the page asks the worker to compute. */
export interface Request {
  /** The seed's reference model, the cats-vs-dogs CNN, or a dropped file. */
  model: 'seed' | 'cnn' | 'file';
  /** The dropped file: model.json's text, the `.bin` shards dropped beside it by file name, and whether to initialize the weights from the seed instead. */
  file?: { json: string; shards: Record<string, ArrayBuffer>; init: boolean };
  /** Split points (layer indices where a stage starts); absent: the model's usual split. */
  split?: number[];
  /** Image side (the seed model and the CNN; a file keeps its own input shape). */
  side: number;
  /** Batch size `B`. */
  batch: number;
  /** The memory budget in bytes the explicit way must fit in. */
  budget: number;
}

/** One Jacobian as a heatmap: `[rows, cols]` = `[B·|out|, |in|]`, downsampled to `h × w` cells. */
export interface Heatmap {
  /** `dOut0_dX`, `dOut1_dkernel1`, ... */
  name: string;
  /** The Jacobian's shape `[B, ...out, ...in]`. */
  shape: number[];
  /** Rows of the flattened Jacobian. */
  rows: number;
  /** Columns of the flattened Jacobian. */
  cols: number;
  /** Cells down. */
  h: number;
  /** Cells across. */
  w: number;
  /** Max |value| per cell, `h·w`, row-major. */
  values: Float32Array;
  /** Fraction of the cell's entries the structured sparse Jacobian stores, `h·w`. */
  pattern: Float32Array;
  /** True when a cell covers more than one entry. */
  downsampled: boolean;
  /** Bytes of the dense Jacobian. */
  denseBytes: number;
  /** Bytes of the structured sparse (CSR) Jacobian. */
  sparseBytes: number;
  /** Entries the sparse Jacobian stores. */
  nnz: number;
  /** `nnz` over all entries. */
  density: number;
}

/** One step of the seed's chain rule, beside the VJP way. */
export interface Step {
  /** The helper call, in the seed's names. */
  call: string;
  /** Every tensor of the step and its shape. */
  shapes: [string, number[]][];
  /** What the VJP way does instead. */
  vjp: string;
  /** The step's result allclose to one tape over the whole model (and the VJP way's too). */
  valid: boolean;
}

/** One point of the memory chart. */
export interface MemoryPoint {
  /** Image side. */
  side: number;
  /** Which way. */
  way: string;
  /** Bytes it holds, from `estimateMemory`. */
  bytes: number;
}

/** Everything the page shows for one request. */
export interface Result {
  /** Discriminant. */
  type: 'result';
  /** The model, input and split in one line. */
  summary: string;
  /** Each stage's input and output shapes. */
  stages: { name: string; input: number[]; output: number[] }[];
  /** Per stage: the Jacobian w.r.t. its input, then w.r.t. each trainable weight. */
  heatmaps: Heatmap[][];
  /** The chain rule, step by step. */
  steps: Step[];
  /** The memory chart's points. */
  memory: MemoryPoint[];
  /** The `valid` lines of each way against one tape. */
  valid: { jacobian: string[]; vjp: string[] };
  /** The estimate at the chosen side: bytes of the explicit way at its peak and of the VJP way. */
  estimate: { explicit: number; vjp: number };
}

/** What the worker posts. */
export type WorkerMessage = Result | { type: 'progress'; done: number; total: number; what: string } | { type: 'error'; message: string };

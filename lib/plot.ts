/**
 * Line charts as SVG, in Node, without a browser: a Vega-Lite spec is built from named series,
 * compiled by `vega-lite` and rendered by a headless `vega` View (`toSVG`). Axes may be linear or
 * logarithmic, so the same helpers draw training curves and benchmark scaling plots.
 *
 * This is the subpath `jacobian-chain/plot`. `vega` and `vega-lite` are optional peer dependencies
 * (`npm install vega vega-lite`), imported on the first render only: vega's graph holds a top-level
 * await, which would make `require()` of any module importing it fail, and it costs ~0.4 s to load.
 * @example
 * import { lineChartSpec, writeSvg } from 'jacobian-chain/plot';
 * await writeSvg(lineChartSpec([{ name: 'loss', points: [{ x: 1, y: 0.7 }, { x: 2, y: 0.4 }] }]), 'loss.svg');
 * @module
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { TopLevelSpec } from 'vega-lite';
import { ConfigError, fmtValue } from './errors.js';

/** One point of a series. */
export interface Point {
  /** Abscissa. */
  x: number;
  /** Ordinate. */
  y: number;
}

/** A named line: its points in drawing order. */
export interface Series {
  /** Legend label. */
  name: string;
  /** The points, in drawing order. */
  points: readonly Point[];
}

/** How one axis is drawn. */
export interface AxisOptions {
  /** Axis title. */
  title?: string;
  /** `linear` (default) or `log` (every value must then be positive). */
  scale?: 'linear' | 'log';
  /** Fixed `[min, max]`; default fitted to the data. */
  domain?: [number, number];
  /** Include zero in a linear axis; default false (fit the data). */
  zero?: boolean;
}

/** Options of {@link lineChartSpec}. */
export interface LineChartOptions {
  /** Chart title. */
  title?: string;
  /** Horizontal axis. */
  x?: AxisOptions;
  /** Vertical axis. */
  y?: AxisOptions;
  /** Plot size in pixels; defaults 360 x 240. */
  width?: number;
  /** Plot height in pixels; default 240. */
  height?: number;
  /** Mark each point as well as the line; default true. */
  points?: boolean;
}

/** A Vega-Lite spec, as {@link renderSvg} takes it. */
export type ChartSpec = TopLevelSpec;

const SCHEMA = 'https://vega.github.io/schema/vega-lite/v6.json';

function axisEncoding(field: 'x' | 'y', a: AxisOptions = {}): Record<string, unknown> {
  const scale: Record<string, unknown> = { type: a.scale ?? 'linear' };
  if (a.domain) scale.domain = a.domain;
  if ((a.scale ?? 'linear') === 'linear') scale.zero = a.zero ?? false;
  return { field, type: 'quantitative', title: a.title ?? field, scale };
}

/** Checks every value can be drawn on its axes: finite, and positive on a log axis. */
function checkSeries(series: readonly Series[], opts: LineChartOptions): void {
  if (!Array.isArray(series) || series.length === 0) throw new ConfigError(`lineChartSpec: expected at least one series, received ${fmtValue(series)}`);
  for (const s of series) {
    if (!s || typeof s.name !== 'string' || !Array.isArray(s.points)) {
      throw new ConfigError(`lineChartSpec: expected a series {name, points: [{x, y}...]}, received ${fmtValue(s)}`);
    }
    (s.points as readonly Point[]).forEach((p: Point, i: number) => {
      for (const axis of ['x', 'y'] as const) {
        const v = p?.[axis];
        if (typeof v !== 'number' || !Number.isFinite(v)) {
          throw new ConfigError(`lineChartSpec: series "${s.name}" point ${i}: expected a finite ${axis}, received ${typeof v === 'number' ? String(v) : fmtValue(v)}`);
        }
        if (opts[axis]?.scale === 'log' && v <= 0) {
          throw new ConfigError(`lineChartSpec: series "${s.name}" point ${i}: expected a positive ${axis} on a log axis, received ${v}`);
        }
      }
    });
  }
}

/**
 * A Vega-Lite line chart of named series, one colour each, with linear or log axes.
 * @example
 * const spec = lineChartSpec(
 *   [{ name: 'jacobian', points: [{ x: 1, y: 0.02 }, { x: 8, y: 0.9 }] }],
 *   { title: 'time per step', x: { title: 'batch', scale: 'log' }, y: { title: 'seconds', scale: 'log' } },
 * );
 * writeFileSync('time.svg', await renderSvg(spec));
 */
export function lineChartSpec(series: readonly Series[], opts: LineChartOptions = {}): ChartSpec {
  checkSeries(series, opts);
  const values = series.flatMap((s) => s.points.map((p) => ({ series: s.name, x: p.x, y: p.y })));
  const spec: Record<string, unknown> = {
    $schema: SCHEMA,
    width: opts.width ?? 360,
    height: opts.height ?? 240,
    data: { values },
    mark: { type: 'line', point: opts.points ?? true },
    encoding: {
      x: axisEncoding('x', opts.x),
      y: axisEncoding('y', opts.y),
      color: { field: 'series', type: 'nominal', title: null, sort: series.map((s) => s.name) },
    },
  };
  if (opts.title) spec.title = opts.title;
  return spec as unknown as ChartSpec;
}

/**
 * Several charts side by side (wrapping after `columns`), each keeping its own scales.
 * @example
 * const both = concatCharts([lossChart, accuracyChart], { title: 'training' });
 */
export function concatCharts(charts: readonly ChartSpec[], opts: { title?: string; columns?: number } = {}): ChartSpec {
  if (!Array.isArray(charts) || charts.length === 0) throw new ConfigError(`concatCharts: expected at least one chart, received ${fmtValue(charts)}`);
  const inner = charts.map((c) => {
    const { $schema: _schema, ...rest } = c as unknown as Record<string, unknown>;
    return rest;
  });
  const spec: Record<string, unknown> = { $schema: SCHEMA, concat: inner, columns: opts.columns ?? charts.length, resolve: { scale: { color: 'shared' } } };
  if (opts.title) spec.title = opts.title;
  return spec as unknown as ChartSpec;
}

/** Imports an optional peer dependency, saying how to install it when it is missing. */
async function importPeer<T>(name: string, load: () => Promise<T>): Promise<T> {
  try {
    return await load();
  } catch (e) {
    if ((e as { code?: string }).code !== 'ERR_MODULE_NOT_FOUND') throw e;
    throw new ConfigError(`jacobian-chain/plot: expected the optional peer dependency "${name}" to be installed (npm install vega vega-lite), received ${(e as Error).message}`);
  }
}

/**
 * Renders a Vega-Lite spec to an SVG string: compiled by vega-lite, drawn by a headless vega View.
 * @example
 * const svg = await renderSvg(lineChartSpec([{ name: 'loss', points }]));
 */
export async function renderSvg(spec: ChartSpec): Promise<string> {
  // Literal specifiers, so that bundlers and import scanners see both peers.
  const [vega, vegaLite] = await Promise.all([importPeer('vega', () => import('vega')), importPeer('vega-lite', () => import('vega-lite'))]);
  const vg = vegaLite.compile(spec).spec;
  const view = new vega.View(vega.parse(vg), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/**
 * Renders a spec and writes the SVG to `path` (creating its folder); returns the path.
 * @example
 * await writeSvg(historyChartSpec(history), 'out/training.svg');
 */
export async function writeSvg(spec: ChartSpec, path: string): Promise<string> {
  if (typeof path !== 'string' || path.length === 0) throw new ConfigError(`writeSvg: expected a file path, received ${fmtValue(path)}`);
  const svg = await renderSvg(spec);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, svg);
  return path;
}

/** One epoch of a training history, as {@link historyChartSpec} draws it. */
export interface EpochPoint {
  /** Epoch number, 1-based. */
  epoch: number;
  /** Mean training loss over the epoch. */
  loss: number;
  /** Mean training accuracy over the epoch. */
  accuracy: number;
  /** Validation loss, when there is validation data. */
  valLoss?: number | null;
  /** Validation accuracy, when there is validation data. */
  valAccuracy?: number | null;
}

/**
 * Two panels, loss and accuracy per epoch, training and (when present) validation curves.
 * @example
 * await writeSvg(historyChartSpec(result.history, 'model_0 + model_1 on MNIST 3 vs 8'), 'train.svg');
 */
export function historyChartSpec(history: readonly EpochPoint[], title?: string): ChartSpec {
  if (!Array.isArray(history) || history.length === 0) throw new ConfigError(`historyChartSpec: expected at least one epoch, received ${fmtValue(history)}`);
  const pick = (key: keyof EpochPoint): Point[] => history.filter((h) => typeof h[key] === 'number').map((h) => ({ x: h.epoch, y: h[key] as number }));
  const withVal = (train: Point[], val: Point[]): Series[] => (val.length ? [{ name: 'train', points: train }, { name: 'validation', points: val }] : [{ name: 'train', points: train }]);
  const loss = lineChartSpec(withVal(pick('loss'), pick('valLoss')), { title: 'loss', x: { title: 'epoch' }, y: { title: 'loss' } });
  const acc = lineChartSpec(withVal(pick('accuracy'), pick('valAccuracy')), { title: 'accuracy', x: { title: 'epoch' }, y: { title: 'accuracy' } });
  return concatCharts([loss, acc], { title });
}

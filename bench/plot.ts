/**
 * The bench's plots, drawn with lib/plot.ts (vega-lite compiled, rendered to SVG by a headless
 * vega View): memory against image side, the explicit-Jacobian way beside the VJP way, analytic
 * and measured; and time against image side, ours beside tfjs.
 * @module
 */
import { type ChartSpec, type Series, concatCharts, lineChartSpec, writeSvg } from '../lib/plot.js';

/** One point of the analytic sweep: the CNN at one side and batch, accounted from shapes. */
export interface SweepPoint {
  side: number;
  batch: number;
  /** Bytes of the Jacobians the explicit chain materializes (every stage, as jacobianChain). */
  jacobianBytes: number;
  /** Bytes the VJP way holds: residuals + cotangents. */
  vjpBytes: number;
  /** The largest single build jacobianChain's guards check (a stage's weight Jacobians together, or a stage's input Jacobian). */
  largestBuildBytes: number;
}

/** One measured point: a whole-model case's peak RSS growth and time per op. */
export interface MeasuredPoint {
  side: number;
  batch: number;
  op: 'explicitChain' | 'vjpChain' | 'tfVjp';
  /** Peak RSS minus the RSS before the run, bytes (null: not measured or not positive). */
  peakRssDelta: number | null;
  /** Mean time, ms (null: not run, or stopped at the time cap). */
  timeMs: number | null;
  /** For a run stopped at the time cap: its time extrapolated linearly in columns (not a measurement). */
  extrapolatedMs: number | null;
}

function series(name: string, pts: { x: number; y: number | null }[]): Series | null {
  const points = pts.filter((p): p is { x: number; y: number } => p.y !== null && Number.isFinite(p.y) && p.y > 0).sort((a, b) => a.x - b.x);
  return points.length ? { name, points } : null;
}

const MiB = 1024 ** 2;

/** Memory against image side, one panel per batch size, log-log. */
export function memoryChart(sweep: readonly SweepPoint[], measured: readonly MeasuredPoint[]): ChartSpec {
  const batches = [...new Set(sweep.map((p) => p.batch))].sort((a, b) => a - b);
  const charts = batches.map((B) => {
    const sw = sweep.filter((p) => p.batch === B);
    const ms = measured.filter((p) => p.batch === B);
    const all = [
      series('explicit, analytic', sw.map((p) => ({ x: p.side, y: p.jacobianBytes / MiB }))),
      series('VJP, analytic', sw.map((p) => ({ x: p.side, y: p.vjpBytes / MiB }))),
      series('explicit, measured RSS', ms.filter((p) => p.op === 'explicitChain').map((p) => ({ x: p.side, y: p.peakRssDelta === null ? null : p.peakRssDelta / MiB }))),
      series('VJP, measured RSS', ms.filter((p) => p.op === 'vjpChain').map((p) => ({ x: p.side, y: p.peakRssDelta === null ? null : p.peakRssDelta / MiB }))),
    ].filter((s): s is Series => s !== null);
    return lineChartSpec(all, {
      title: `cats-vs-dogs CNN, batch ${B}, float64: analytic bytes and measured peak RSS growth`,
      x: { title: 'image side (pixels)', scale: 'log' },
      y: { title: 'MiB', scale: 'log' },
      width: 380,
      height: 260,
    });
  });
  return concatCharts(charts, { title: 'Memory against image side: explicit-Jacobian way vs VJP way', columns: 1 });
}

/** Time of one training gradient against image side: explicit chain, VJP chain, tfjs' tf.grads. */
export function timeChart(measured: readonly MeasuredPoint[]): ChartSpec | null {
  const batches = [...new Set(measured.map((p) => p.batch))].sort((a, b) => a - b);
  const charts = batches
    .map((B) => {
      const ms = measured.filter((p) => p.batch === B);
      const all = [
        series('explicit chain', ms.filter((p) => p.op === 'explicitChain').map((p) => ({ x: p.side, y: p.timeMs }))),
        series('explicit, extrapolated', ms.filter((p) => p.op === 'explicitChain').map((p) => ({ x: p.side, y: p.extrapolatedMs }))),
        series('VJP chain', ms.filter((p) => p.op === 'vjpChain').map((p) => ({ x: p.side, y: p.timeMs }))),
        series('tfjs tf.grads (f32)', ms.filter((p) => p.op === 'tfVjp').map((p) => ({ x: p.side, y: p.timeMs }))),
      ].filter((s): s is Series => s !== null);
      return all.length ? lineChartSpec(all, { title: `batch ${B}: ours in float64, tfjs in float32`, x: { title: 'image side (pixels)', scale: 'log' }, y: { title: 'ms per gradient', scale: 'log' }, width: 380, height: 260 }) : null;
    })
    .filter((c): c is ChartSpec => c !== null);
  return charts.length ? concatCharts(charts, { title: 'Time of one gradient of the CNN against image side', columns: 1 }) : null;
}

/** Writes both plots into `dir`; returns the files written. */
export async function writePlots(dir: string, sweep: readonly SweepPoint[], measured: readonly MeasuredPoint[]): Promise<string[]> {
  const files = [await writeSvg(memoryChart(sweep, measured), `${dir}/memory-vs-side.svg`)];
  const t = timeChart(measured);
  if (t) files.push(await writeSvg(t, `${dir}/time-vs-side.svg`));
  return files;
}

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compile } from 'vega-lite';
import { concatCharts, historyChartSpec, lineChartSpec, renderSvg, writeSvg } from '../lib/plot.js';
import { expect } from './helpers/setup.js';

/** The `d` attributes of every `<path>` in an SVG (the lines and point symbols vega drew). */
const paths = (svg: string): string[] => Array.from(svg.matchAll(/<path[^>]* d="([^"]+)"/g), (m) => m[1]);

describe('plot', () => {
  it('renders a line chart to a standalone SVG with its title, axis titles and one line per series', async () => {
    const spec = lineChartSpec(
      [
        { name: 'vjp', points: [{ x: 1, y: 3 }, { x: 2, y: 2 }, { x: 3, y: 1.5 }] },
        { name: 'jacobian', points: [{ x: 1, y: 4 }, { x: 2, y: 2.5 }, { x: 3, y: 2 }] },
      ],
      { title: 'loss per epoch', x: { title: 'epoch' }, y: { title: 'loss' } },
    );
    const svg = await renderSvg(spec);
    expect(svg.startsWith('<svg')).to.equal(true);
    expect(svg.trimEnd().endsWith('</svg>')).to.equal(true);
    for (const text of ['loss per epoch', 'epoch', 'loss', 'vjp', 'jacobian']) expect(svg).to.include(`>${text}<`);
    // Two line marks: two paths with three vertices each (M + 2 L).
    const lines = paths(svg).filter((d) => /^M[^M]*L[^M]*L[^M]*$/.test(d) && !d.includes('A'));
    expect(lines.length).to.equal(2);
  });

  it('log axes: decades are evenly spaced, which a linear axis would not do', async () => {
    const points = [{ x: 1, y: 1 }, { x: 10, y: 10 }, { x: 100, y: 100 }, { x: 1000, y: 1000 }];
    const logSvg = await renderSvg(lineChartSpec([{ name: 's', points }], { x: { scale: 'log' }, y: { scale: 'log' }, points: false }));
    const linSvg = await renderSvg(lineChartSpec([{ name: 's', points }], { points: false }));
    const vertices = (svg: string): number[][] => {
      const line = paths(svg).find((d) => (d.match(/L/g) ?? []).length === 3);
      expect(line, 'the series line').to.be.a('string');
      return Array.from(line!.matchAll(/[ML]([-\d.e]+),([-\d.e]+)/g), (m) => [Number(m[1]), Number(m[2])]);
    };
    const gaps = (v: number[][]): number[] => v.slice(1).map((p, i) => p[0] - v[i][0]);
    const logGaps = gaps(vertices(logSvg));
    expect(logGaps[1]).to.be.closeTo(logGaps[0], 0.5);
    expect(logGaps[2]).to.be.closeTo(logGaps[0], 0.5);
    const linGaps = gaps(vertices(linSvg));
    expect(linGaps[2]).to.be.greaterThan(50 * linGaps[0]);
    const compiled = compile(lineChartSpec([{ name: 's', points }], { y: { scale: 'log' } })).spec;
    expect(JSON.stringify(compiled.scales)).to.include('"type":"log"');
  });

  it('a training history: loss and accuracy panels, train and validation curves, written where asked', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'plot-'));
    try {
      const history = [1, 2, 3].map((epoch) => ({ epoch, loss: 1 / epoch, accuracy: 1 - 0.1 / epoch, valLoss: 1.2 / epoch, valAccuracy: 1 - 0.2 / epoch }));
      const path = await writeSvg(historyChartSpec(history, 'model_0 + model_1'), join(dir, 'sub', 'history.svg'));
      const svg = readFileSync(path, 'utf8');
      for (const text of ['model_0 + model_1', 'loss', 'accuracy', 'train', 'validation', 'epoch']) expect(svg).to.include(`>${text}<`);
      const noVal = await renderSvg(historyChartSpec(history.map(({ epoch, loss, accuracy }) => ({ epoch, loss, accuracy }))));
      expect(noVal).to.not.include('>validation<');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('concatenates any charts, keeping their own titles', async () => {
    const a = lineChartSpec([{ name: 'a', points: [{ x: 0, y: 0 }, { x: 1, y: 1 }] }], { title: 'first' });
    const b = lineChartSpec([{ name: 'b', points: [{ x: 0, y: 1 }, { x: 1, y: 0 }] }], { title: 'second' });
    const svg = await renderSvg(concatCharts([a, b], { columns: 1 }));
    expect(svg).to.include('>first<');
    expect(svg).to.include('>second<');
  });

  it('refuses what cannot be drawn, naming the series and the point', () => {
    expect(() => lineChartSpec([])).to.throw(/expected at least one series/);
    expect(() => lineChartSpec([{ name: 'loss', points: [{ x: 1, y: Number.NaN }] }])).to.throw(/series "loss" point 0: expected a finite y, received NaN/);
    expect(() => lineChartSpec([{ name: 't', points: [{ x: 1, y: 1 }, { x: 0, y: 2 }] }], { x: { scale: 'log' } })).to.throw(/series "t" point 1: expected a positive x on a log axis, received 0/);
    expect(() => historyChartSpec([])).to.throw(/expected at least one epoch/);
  });
});

// The explorer's page: the controls, and what the worker computed drawn on canvases, in lists and
// in a vega-lite chart. Nothing is computed here; the worker holds the library's work.
import { fmtBytes, fmtShape } from 'jacobian-chain';
import { View, parse } from 'vega';
import { compile } from 'vega-lite';
import type { Heatmap, Request, Result, WorkerMessage } from './protocol.js';

const $ = <T extends HTMLElement>(id: string): T => document.getElementById(id) as T;
const nav = navigator as Navigator & { deviceMemory?: number };
// navigator.deviceMemory (GiB, rounded by the browser; Chromium-based browsers only) ÷ 4, as the
// library's default budget is a sixth of its machine; 1 GiB when the browser does not tell.
const budgetMiB = nav.deviceMemory ? (nav.deviceMemory * 1024) / 4 : 1024;
$<HTMLInputElement>('budget').value = String(budgetMiB);
$('budget-note').textContent = nav.deviceMemory
  ? `The budget defaults to a quarter of navigator.deviceMemory (${nav.deviceMemory} GiB, as the browser rounds it); change it above.`
  : 'This browser does not report navigator.deviceMemory: the budget defaults to 1 GiB; change it above.';

let dropped: { json?: string; shards: Record<string, ArrayBuffer> } = { shards: {} };
let worker: Worker | undefined;

async function takeFiles(files: FileList | null): Promise<void> {
  if (!files) return;
  for (const f of Array.from(files)) {
    if (f.name.endsWith('.json')) dropped.json = await f.text();
    else dropped.shards[f.name] = await f.arrayBuffer();
  }
  $('drop').firstChild!.textContent = `Dropped: ${[dropped.json ? 'model.json' : '', ...Object.keys(dropped.shards)].filter(Boolean).join(', ')} `;
  $<HTMLSelectElement>('model').value = 'file';
}
const drop = $('drop');
drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => { e.preventDefault(); drop.classList.remove('over'); void takeFiles(e.dataTransfer?.files ?? null); });
$<HTMLInputElement>('files').addEventListener('change', (e) => void takeFiles((e.target as HTMLInputElement).files));
$<HTMLSelectElement>('model').addEventListener('change', (e) => {
  const m = (e.target as HTMLSelectElement).value;
  $<HTMLInputElement>('side').value = m === 'cnn' ? '22' : '10';
  $<HTMLInputElement>('batch').value = m === 'cnn' ? '1' : '3';
});

function request(): Request {
  const model = $<HTMLSelectElement>('model').value as Request['model'];
  const split = $<HTMLInputElement>('split').value.trim();
  if (model === 'file' && dropped.json === undefined) throw new Error('a dropped model file: expected model.json dropped on the page (or chosen), received none');
  return {
    model,
    file: model === 'file' ? { json: dropped.json!, shards: dropped.shards, init: $<HTMLSelectElement>('init').value === 'init' } : undefined,
    split: split ? split.split(',').map(Number) : undefined,
    side: Number($<HTMLInputElement>('side').value),
    batch: Number($<HTMLInputElement>('batch').value),
    budget: Number($<HTMLInputElement>('budget').value) * 1024 ** 2,
  };
}

/** Draws `cells` (h·w, in [0, 1]) on a canvas, white to dark blue. */
function paint(cells: Float32Array, h: number, w: number, scale: number, label: string): HTMLCanvasElement {
  const c = document.createElement('canvas');
  c.width = w;
  c.height = h;
  c.setAttribute('role', 'img');
  c.setAttribute('aria-label', label);
  const img = c.getContext('2d')!.createImageData(w, h);
  for (let i = 0; i < h * w; i++) {
    const t = scale > 0 ? Math.min(1, cells[i] / scale) : 0;
    img.data.set([255 - 230 * t, 255 - 190 * t, 255 - 90 * t, 255], 4 * i);
  }
  c.getContext('2d')!.putImageData(img, 0, 0);
  return c;
}

function figure(hm: Heatmap): HTMLElement {
  const fig = document.createElement('figure');
  let max = 0;
  for (const v of hm.values) max = Math.max(max, v);
  fig.append(paint(hm.values, hm.h, hm.w, max, `${hm.name} values`), paint(hm.pattern, hm.h, hm.w, 1, `${hm.name} sparsity pattern`));
  const cap = document.createElement('figcaption');
  cap.innerHTML = `<code>${hm.name}</code> ${fmtShape(hm.shape)}: dense ${fmtBytes(hm.denseBytes)}, structured sparse ${fmtBytes(hm.sparseBytes)} (${hm.nnz} stored, ${(100 * hm.density).toFixed(2)} %)${hm.downsampled ? `; shown downsampled from ${hm.rows}×${hm.cols} to ${hm.h}×${hm.w} (max |value| per cell)` : ''}`;
  fig.append(cap);
  return fig;
}

async function chart(res: Result, budget: number): Promise<void> {
  const el = $('chart');
  if (res.memory.length === 0) {
    el.textContent = 'A dropped model keeps its own input shape: no curve over the image side.';
    return;
  }
  const spec = compile({
    width: 560, height: 260,
    layer: [
      { data: { values: res.memory }, mark: { type: 'line', point: true }, encoding: { x: { field: 'side', type: 'quantitative', title: 'image side' }, y: { field: 'bytes', type: 'quantitative', scale: { type: 'log' }, title: 'bytes held (estimateMemory)' }, color: { field: 'way', type: 'nominal', title: null } } },
      { data: { values: [{ bytes: budget, label: `budget ${fmtBytes(budget)}` }] }, mark: { type: 'rule', color: '#a00', strokeDash: [6, 4] }, encoding: { y: { field: 'bytes', type: 'quantitative' } } },
      { data: { values: [{ bytes: budget, label: `memory budget ${fmtBytes(budget)}` }] }, mark: { type: 'text', align: 'left', dx: 4, dy: -6, color: '#a00' }, encoding: { y: { field: 'bytes', type: 'quantitative' }, x: { value: 0 }, text: { field: 'label' } } },
    ],
  }).spec;
  el.textContent = '';
  await new View(parse(spec), { renderer: 'svg', container: el }).runAsync();
}

function show(res: Result, budget: number): void {
  $('summary').textContent = `${res.summary}. Estimated at its peak: the explicit way ${fmtBytes(res.estimate.explicit)}, the VJP way ${fmtBytes(res.estimate.vjp)}.`;
  const jac = $('jacobians');
  jac.textContent = '';
  res.heatmaps.forEach((maps, s) => {
    const h = document.createElement('h3');
    h.textContent = `stage ${s} (${res.stages[s].name}): ${fmtShape(res.stages[s].input)} → ${fmtShape(res.stages[s].output)}`;
    const row = document.createElement('div');
    row.className = 'stage';
    row.append(...maps.map(figure));
    jac.append(h, row);
  });
  const steps = $('steps');
  steps.textContent = '';
  let shown = 0;
  const next = $<HTMLButtonElement>('next');
  const all = $<HTMLButtonElement>('all');
  const valid = $('valid');
  valid.textContent = '';
  const reveal = (): void => {
    const st = res.steps[shown++];
    const li = document.createElement('li');
    li.innerHTML = `<code>${st.call}</code> <span class="${st.valid ? 'ok' : 'error'}">${st.valid ? 'allclose to one tape' : 'NOT allclose to one tape'}</span><br>${st.shapes.map(([n, s]) => `<code>${n}</code> ${fmtShape(s)}`).join(' · ')}<br><em>VJP way:</em> ${st.vjp}`;
    steps.append(li);
    $('step-count').textContent = `${shown} of ${res.steps.length}`;
    if (shown === res.steps.length) {
      next.disabled = all.disabled = true;
      for (const [way, lines] of Object.entries(res.valid)) for (const l of lines) {
        const v = document.createElement('li');
        v.textContent = `${way} ${l}`;
        v.className = l.endsWith('true') ? 'ok' : 'error';
        valid.append(v);
      }
    }
  };
  next.disabled = all.disabled = false;
  next.onclick = reveal;
  all.onclick = () => { while (shown < res.steps.length) reveal(); };
  $('step-count').textContent = `0 of ${res.steps.length}`;
  void chart(res, budget);
}

$('controls').addEventListener('submit', (e) => {
  e.preventDefault();
  $('error').textContent = '';
  let req: Request;
  try {
    req = request();
  } catch (err) {
    $('error').textContent = (err as Error).message;
    return;
  }
  worker?.terminate(); // a new request supersedes a running one
  worker = new Worker(new URL('./worker.ts', import.meta.url), { type: 'module' });
  document.body.dataset.state = 'running';
  $('status').textContent = 'computing…';
  const progress = $<HTMLProgressElement>('progress');
  progress.value = 0;
  worker.onmessage = (m: MessageEvent<WorkerMessage>) => {
    const msg = m.data;
    if (msg.type === 'progress') {
      progress.max = msg.total;
      progress.value = msg.done;
      $('status').textContent = msg.what;
    } else if (msg.type === 'error') {
      $('error').textContent = msg.message;
      $('status').textContent = 'refused';
      document.body.dataset.state = 'error';
    } else {
      progress.value = progress.max;
      $('status').textContent = 'done';
      show(msg, req.budget);
      document.body.dataset.state = 'done';
    }
  };
  worker.postMessage(req);
});
$<HTMLButtonElement>('run').click();

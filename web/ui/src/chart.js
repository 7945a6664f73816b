// Charts with uPlot: a live chart per telemetry field, and a history chart.
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

const palette = ['#0f766e', '#2563eb', '#c2410c', '#7c3aed', '#be123c', '#0e7490', '#4d7c0f', '#a16207'];
export const colorFor = (i) => palette[i % palette.length];

const pad = (n) => String(n).padStart(2, '0');

// timeLabels formats x-axis ticks on one line: seconds when the span is short, the date when
// it is long.
function timeLabels(u, splits) {
  const span = splits.length > 1 ? splits[splits.length - 1] - splits[0] : 0;
  return splits.map((v) => {
    const d = new Date(v * 1000);
    const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
    if (span > 2 * 86400) return `${d.getMonth() + 1}/${d.getDate()} ${hm}`;
    return span < 600 ? `${hm}:${pad(d.getSeconds())}` : hm;
  });
}

function baseOpts(width, height, color, label) {
  return {
    width,
    height,
    legend: { show: false },
    cursor: { drag: { x: false, y: false }, points: { size: 6 } },
    scales: { x: { time: true } },
    axes: [
      { stroke: '#64748b', grid: { stroke: '#eef2f6' }, ticks: { stroke: '#e2e8f0' }, font: '11px system-ui', values: timeLabels, space: 60 },
      { stroke: '#64748b', grid: { stroke: '#eef2f6' }, ticks: { stroke: '#e2e8f0' }, font: '11px system-ui', size: 52 },
    ],
    series: [
      {},
      { label, stroke: color, width: 2, fill: color + '18', points: { show: true, size: 4, fill: color } },
    ],
  };
}

// autoSize keeps a chart as wide as its container.
function autoSize(plot, el, height) {
  const ro = new ResizeObserver(() => {
    const w = Math.max(200, el.clientWidth);
    if (Math.abs(w - plot.width) > 1) plot.setSize({ width: w, height });
  });
  ro.observe(el);
  return ro;
}

// LiveChart plots one field's values as they arrive, keeping the latest max points.
export class LiveChart {
  constructor(el, field, color, max = 600) {
    this.el = el;
    this.field = field;
    this.max = max;
    this.xs = [];
    this.ys = [];
    this.height = 150;
    this.plot = new uPlot(baseOpts(Math.max(200, el.clientWidth), this.height, color, field), [[], []], el);
    this.ro = autoSize(this.plot, el, this.height);
  }

  // push adds a value at time t (ms); out-of-order values are inserted in place.
  push(t, v) {
    const x = t / 1000;
    let i = this.xs.length;
    while (i > 0 && this.xs[i - 1] > x) i--;
    this.xs.splice(i, 0, x);
    this.ys.splice(i, 0, v);
    if (this.xs.length > this.max) {
      this.xs.shift();
      this.ys.shift();
    }
    this.redraw();
  }

  redraw() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = null;
      this.plot.setData([this.xs, this.ys]);
    });
  }

  // values are what the chart holds now (the browser test reads them).
  values() {
    return this.ys.slice();
  }

  destroy() {
    this.ro.disconnect();
    this.plot.destroy();
  }
}

// historyChart draws points [{time, value}] of one field.
export function historyChart(el, field, points, color = palette[1]) {
  const xs = [];
  const ys = [];
  for (const p of points) {
    const v = typeof p.value === 'boolean' ? Number(p.value) : p.value;
    if (typeof v !== 'number') continue;
    xs.push(Date.parse(p.time) / 1000);
    ys.push(v);
  }
  const height = 240;
  const plot = new uPlot(baseOpts(Math.max(200, el.clientWidth), height, color, field), [xs, ys], el);
  const ro = autoSize(plot, el, height);
  return { destroy: () => { ro.disconnect(); plot.destroy(); }, count: xs.length };
}

// compareChart draws several series over the same times: series is [[label, values], ...].
export function compareChart(el, xs, series) {
  const height = 200;
  const opts = baseOpts(Math.max(200, el.clientWidth), height, palette[0], series[0][0]);
  opts.legend = { show: true };
  opts.series = [{}, ...series.map(([label], i) => ({ label, stroke: colorFor(i * 2), width: 2, points: { show: true, size: 5, fill: colorFor(i * 2) } }))];
  const plot = new uPlot(opts, [xs, ...series.map(([, ys]) => ys)], el);
  const ro = autoSize(plot, el, height);
  return { destroy: () => { ro.disconnect(); plot.destroy(); } };
}

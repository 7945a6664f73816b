import { h, replace, time, num, card, notice, toast } from '../dom.js';
import { api, get, list, enc } from '../api.js';
import { subscribe } from '../live.js';
import { compareChart } from '../chart.js';

const EXAMPLE = {
  name: 'fw-2-1',
  canary_group: { tags: ['fw:2.1'] },
  control_group: { tags: ['fw:2.0'] },
  metrics: [
    { field: 'latency', better: 'lower', tolerance: 0.05 },
    { field: 'errors', better: 'lower', method: 'mann-whitney' },
  ],
  interval: '1m',
  threshold: 0.9,
};

const group = (g) => {
  if (!g) return '';
  if (g.devices && g.devices.length) return g.devices.length <= 3 ? g.devices.join(', ') : `${g.devices.length} devices`;
  return [g.type ? `type ${g.type}` : '', ...(g.tags || [])].filter(Boolean).join(' · ');
};

const statusTag = (s) => h('span', { class: `tag verdict ${s || 'none'}`, 'data-verdict': s || '' }, s || 'no data yet');

// canariesPage lists canaries with their verdict and score, live: each interval's result
// (rules/<name>/results) updates its row as it is published.
export function canariesPage() {
  const body = h('div');
  const editor = h('textarea', { class: 'mono', rows: 14, spellcheck: 'false' }, JSON.stringify(EXAMPLE, null, 2));
  const editMsg = h('p', { class: 'form-error' });
  const el = h('div', { class: 'page' },
    h('div', { class: 'page-head' }, h('div', null, h('h1', null, 'Canaries'),
      h('p', { class: 'muted' }, 'A canary group of devices against a control group, metric by metric, interval by interval.'))),
    card('Canaries', { actions: h('button', { class: 'ghost', onclick: () => load() }, 'Refresh') }, body),
    card('New canary', null, h('label', { class: 'block' }, h('span', null, 'Canary (JSON)'), editor), editMsg,
      h('button', {
        class: 'primary',
        onclick: async () => {
          editMsg.textContent = '';
          try {
            await api('POST', '/api/v1/canaries', editor.value);
            toast('Canary created');
            load();
          } catch (e) {
            editMsg.textContent = e.unavailable ? `Canaries are not available on this hub (${e.status}: ${e.message})` : e.message;
          }
        },
      }, 'Create canary')));

  let names = new Set();
  async function load() {
    let items;
    try {
      items = list(await get('/api/v1/canaries'), 'canaries');
    } catch (e) {
      replace(body, e.unavailable
        ? notice('unavailable', 'Canaries are not available on this hub', `GET /api/v1/canaries answered ${e.status}: ${e.message}`)
        : notice('error', 'Could not load canaries', e.message));
      return;
    }
    names = new Set(items.map((c) => c.name));
    if (!items.length) {
      replace(body, notice('empty', 'No canaries yet.', 'Create one here or with hubctl canary create -f canary.yaml.'));
      return;
    }
    replace(body, h('div', { class: 'table-wrap' }, h('table', { id: 'canary-table' },
      h('thead', null, h('tr', null, ['Canary', 'Verdict', 'Score', 'Last interval', 'Canary group', 'Control group', 'Interval', ''].map((c) => h('th', null, c)))),
      h('tbody', null, items.map((c) => row(c))))));
  }

  function row(c) {
    const v = c.latest ? c.latest.values : null;
    const tr = h('tr', { 'data-canary': c.name },
      h('td', null, h('a', { href: `#/canaries/${enc(c.name)}` }, h('strong', null, c.name)),
        c.enabled === false ? h('span', { class: 'tag' }, 'disabled') : null),
      h('td', { class: 'verdict-cell' }, statusTag(v && v.verdict)),
      h('td', { class: 'right score' }, v && v.verdict !== 'inconclusive' ? num(v.verdict_score) : '—'),
      h('td', { class: 'small last' }, v ? h('span', null, statusTag(v.status), ' ', time(c.latest.window_end),
        v.warning_count ? h('span', { class: 'tag alert', title: (v.warnings || []).join('\n') }, `${v.warning_count} warning${v.warning_count > 1 ? 's' : ''}`) : null) : '—'),
      h('td', { class: 'small' }, group(c.canary_group)),
      h('td', { class: 'small' }, group(c.control_group)),
      h('td', null, c.interval),
      h('td', null, h('button', {
        class: 'ghost danger',
        onclick: async () => {
          if (!confirm(`Delete canary ${c.name}?`)) return;
          try {
            await api('DELETE', `/api/v1/canaries/${enc(c.name)}`);
            load();
          } catch (e) {
            toast(e.message, 'error');
          }
        },
      }, 'Delete')));
    return tr;
  }

  const live = subscribe({
    topics: ['rules/+/results'],
    onMessage: (m) => {
      const name = m.topic.split('/')[1];
      if (!names.has(name)) return;
      const old = body.querySelector(`tr[data-canary="${CSS.escape(name)}"]`);
      get(`/api/v1/canaries/${enc(name)}`).then((c) => { if (old && old.isConnected) old.replaceWith(row(c)); }).catch(() => {});
    },
  });
  load();
  return { el, destroy: () => live.close() };
}

// canaryPage shows one canary: its definition, the latest verdict, each interval's class per
// metric, and a chart of canary against control means per metric; new intervals arrive live.
export function canaryPage(name) {
  const head = h('div', { class: 'page-head' }, h('div', null, h('h1', null, name), h('p', { class: 'muted' }, h('a', { href: '#/canaries' }, '← Canaries'))));
  const summary = h('div');
  const charts = h('div', { class: 'grid-2' });
  const table = h('div');
  const el = h('div', { class: 'page' }, head, card('Verdict', null, summary), charts, card('Intervals', null, table));
  let def = null;
  let results = [];
  let plots = [];

  function render() {
    const latest = results.length ? results[results.length - 1] : null;
    const v = latest ? latest.values : null;
    replace(summary, h('div', { class: 'canary-summary' },
      h('div', null, h('span', { class: 'muted small' }, 'Verdict '), statusTag(v && v.verdict),
        v ? h('span', { class: 'small' }, ` score ${num(v.verdict_score)} over ${v.verdict_intervals} interval(s), threshold ${num(v.threshold)}`) : null),
      h('p', { class: 'small' }, `Canary: ${group(def.canary_group)} — control: ${group(def.control_group)} — every ${def.interval}`),
      v && v.warnings && v.warnings.length ? h('ul', { class: 'warnings small' }, v.warnings.map((w) => h('li', null, w))) : null));

    const metrics = def.metrics.map((m) => m.field);
    replace(table, results.length ? h('div', { class: 'table-wrap' }, h('table', { id: 'interval-table' },
      h('thead', null, h('tr', null, ['Window end', 'Status', 'Score', ...metrics, 'Devices', 'Warnings'].map((c) => h('th', null, c)))),
      h('tbody', null, results.slice().reverse().map((r) => {
        const x = r.values;
        const byField = Object.fromEntries((x.metrics || []).map((m) => [m.field, m]));
        return h('tr', { 'data-window-end': r.window_end },
          h('td', { class: 'small' }, time(r.window_end)),
          h('td', null, statusTag(x.status)),
          h('td', { class: 'right' }, num(x.score)),
          metrics.map((f) => {
            const m = byField[f] || {};
            const title = m.canary_mean !== undefined ? `canary ${num(m.canary_mean)} vs control ${num(m.control_mean)} (${(100 * (m.relative_diff || 0)).toFixed(1)}%)${m.p_value !== undefined ? `, p=${m.p_value.toPrecision(3)}` : ''}` : 'no data';
            return h('td', { class: `cls ${m.class || ''}${m.worse ? ' worse' : ''}`, 'data-field': f, title }, m.class || '—');
          }),
          h('td', { class: 'small' }, `${x.canary_devices} / ${x.control_devices}`),
          h('td', { class: 'small' }, (x.warnings || []).join('; ') || '—'));
      })))) : notice('empty', 'No intervals yet.', `The first result comes when an interval of ${def.interval} closes.`));

    for (const p of plots) p.destroy();
    plots = [];
    replace(charts);
    for (const f of metrics) {
      const box = h('div', { class: 'chart', 'data-field': f });
      charts.append(card(`${f}: canary vs control mean`, { class: 'chart-card' }, box));
      const xs = [], a = [], b = [];
      for (const r of results) {
        const m = (r.values.metrics || []).find((m) => m.field === f);
        if (!m || m.canary_mean === undefined) continue;
        xs.push(Date.parse(r.window_end) / 1000);
        a.push(m.canary_mean);
        b.push(m.control_mean);
      }
      requestAnimationFrame(() => { if (box.isConnected) plots.push(compareChart(box, xs, [['canary', a], ['control', b]])); });
    }
  }

  async function load() {
    try {
      def = await get(`/api/v1/canaries/${enc(name)}`);
      results = list(await get(`/api/v1/canaries/${enc(name)}/results?since=-24h`), 'results');
    } catch (e) {
      replace(summary, notice('error', 'Could not load the canary', e.message));
      return;
    }
    render();
  }

  delete document.body.dataset.live;
  const live = subscribe({
    topics: [`rules/${name}/results`],
    onState: (s) => { document.body.dataset.live = s; },
    onMessage: (m) => {
      if (!def || !m.payload || results.some((r) => r.id === m.payload.id)) return;
      results.push(m.payload);
      render();
    },
  });
  load();
  return { el, destroy: () => { live.close(); delete document.body.dataset.live; for (const p of plots) p.destroy(); } };
}

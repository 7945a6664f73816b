import { h, replace, ago, time, num, json, card, notice, toast } from '../dom.js';
import { api, get, list, enc } from '../api.js';
import { subscribe } from '../live.js';
import { LiveChart, historyChart, colorFor } from '../chart.js';
import { statusOf, statusPill, seenAt, lastSeen } from './devices.js';

const RANGES = [['15m', 15 * 60], ['1h', 3600], ['6h', 6 * 3600], ['24h', 86400], ['7d', 7 * 86400]];
const AGGS = ['mean', 'min', 'max', 'sum', 'count', 'first', 'last'];

// every picks a window giving about 120 points over span seconds.
function autoEvery(span) {
  for (const [s, label] of [[1, '1s'], [5, '5s'], [10, '10s'], [30, '30s'], [60, '1m'], [300, '5m'], [900, '15m'], [1800, '30m'], [3600, '1h'], [10800, '3h'], [21600, '6h'], [86400, '24h']]) {
    if (span / s <= 150) return label;
  }
  return '24h';
}

export function devicePage(id) {
  const base = `/api/v1/devices/${enc(id)}`;
  const cleanup = [];
  const charts = new Map(); // field → LiveChart
  window.__charts = charts; // for the browser test and curious users
  let device = null;
  let online = null;

  const head = h('div', { class: 'page-head' }, h('h1', null, id));
  const info = h('div', { class: 'info-grid' });
  const liveBadge = h('span', { class: 'live-badge' }, 'connecting');
  const chartGrid = h('div', { class: 'chart-grid', id: 'live-charts' });
  const chartEmpty = notice('empty', 'Waiting for telemetry…', `Values published on devices/${id}/telemetry appear here as they arrive.`);
  const textValues = h('div', { class: 'text-values' });
  const history = h('div');
  const shadow = h('div');
  const messagesBody = h('tbody');
  const messages = h('div', { class: 'table-wrap' }, h('table', { class: 'messages' },
    h('thead', null, h('tr', null, h('th', null, 'Received'), h('th', null, 'Topic'), h('th', null, 'Via'), h('th', null, 'Payload'))),
    messagesBody));
  const command = h('div');

  const el = h('div', { class: 'page' },
    h('div', { class: 'crumbs' }, h('a', { href: '#/devices' }, 'Devices'), ' / ', id),
    head, info,
    card('Live telemetry', { actions: liveBadge }, chartEmpty, chartGrid, textValues),
    card('History', null, history),
    h('div', { class: 'grid-2' }, card('Shadow', null, shadow), card('Send a command', null, command)),
    card('Recent messages', null, messages));

  function drawInfo() {
    if (!device) return;
    const d = device;
    const st = statusOf(d, online);
    replace(head,
      h('div', null, h('h1', null, d.name || d.id, ' ', statusPill(st)),
        h('p', { class: 'muted mono' }, d.id)));
    const item = (k, v) => h('div', { class: 'info' }, h('span', { class: 'k' }, k), h('span', { class: 'v' }, v));
    replace(info,
      item('Type', d.type || '—'),
      item('Tags', Object.keys(d.tags || {}).length ? Object.entries(d.tags).map(([k, v]) => h('span', { class: 'tag' }, `${k}: ${v}`)) : '—'),
      item('Location', d.location ? `${d.location.lat.toFixed(5)}, ${d.location.lon.toFixed(5)}` : '—'),
      item('Last seen', ago(seenAt(d))),
      item('Protocol', d.protocol || '—'),
      item('Created', time(d.created_at)));
  }

  async function loadDevice() {
    try {
      device = await get(base);
      online = await get('/api/v1/devices?status=online&limit=1000').then((r) => new Set(list(r, 'devices').map((x) => x.id)), () => null);
      drawInfo();
    } catch (e) {
      replace(head, h('h1', null, id));
      replace(info, notice(e.status === 404 ? 'empty' : 'error', e.status === 404 ? 'No such device.' : 'Could not load the device', e.message));
    }
  }

  // Live charts: projected telemetry (fields=*) from just before the recent messages, so the
  // charts start with some history and continue without a gap.
  const latestText = new Map();
  function addValue(field, t, v) {
    if (typeof v === 'boolean') v = v ? 1 : 0;
    if (typeof v !== 'number') {
      latestText.set(field, v);
      replace(textValues, [...latestText].map(([k, val]) => h('div', { class: 'info' }, h('span', { class: 'k' }, k), h('span', { class: 'v mono' }, String(val)))));
      return;
    }
    let c = charts.get(field);
    if (!c) {
      chartEmpty.remove();
      const latest = h('span', { class: 'latest', dataset: { field } });
      const plotEl = h('div', { class: 'plot' });
      const box = h('div', { class: 'chart-card', dataset: { field } },
        h('div', { class: 'chart-head' }, h('span', { class: 'field' }, field), latest), plotEl);
      // Keep fields in name order.
      const after = [...chartGrid.children].find((x) => x.dataset.field > field);
      chartGrid.insertBefore(box, after || null);
      c = new LiveChart(plotEl, field, colorFor(charts.size));
      c.latestEl = latest;
      charts.set(field, c);
      onNewField(field);
      cleanup.push(() => c.destroy());
    }
    c.push(t, v);
    c.latestEl.textContent = num(v);
    c.latestEl.classList.remove('flash');
    void c.latestEl.offsetWidth;
    c.latestEl.classList.add('flash');
  }

  function addMessage(m, prepend) {
    const topic = m.topic.startsWith(`devices/${id}/`) ? m.topic.slice(`devices/${id}/`.length) : m.topic;
    const payload = m.payload !== undefined ? JSON.stringify(m.payload) : m.payload_base64 ? `base64 ${m.payload_base64.slice(0, 60)}` : '';
    const tr = h('tr', null,
      h('td', { class: 'nowrap', title: m.received_at }, time(m.received_at)),
      h('td', { class: 'mono' }, topic),
      h('td', null, m.protocol || ''),
      h('td', { class: 'mono payload' }, payload.length > 160 ? payload.slice(0, 160) + '…' : payload));
    if (prepend) messagesBody.prepend(tr);
    else messagesBody.append(tr);
    while (messagesBody.children.length > 50) messagesBody.lastChild.remove();
  }

  async function startLive() {
    let since = null;
    let sinceAll = null;
    try {
      const page = await get(`${base}/messages?limit=50`);
      const msgs = list(page, 'messages');
      for (const m of msgs.slice().reverse()) addMessage(m, false);
      const tel = msgs.filter((m) => m.topic === `devices/${id}/telemetry`);
      if (tel.length) since = tel[0].seq - 1;
      if (msgs.length) sinceAll = msgs[msgs.length - 1].seq;
    } catch (e) {
      replace(messages, notice(e.unavailable ? 'unavailable' : 'error', 'Recent messages are not available', e.message));
    }
    const tel = subscribe({
      topics: [`devices/${id}/telemetry`],
      fields: ['*'],
      since,
      onMessage: (m) => {
        const t = Date.parse(m.event_time) || Date.now();
        for (const [k, v] of Object.entries(m.payload || {})) addValue(k, t, v);
      },
      onState: (s) => {
        liveBadge.textContent = s === 'live' ? 'live' : 'reconnecting';
        liveBadge.className = `live-badge ${s}`;
        document.body.dataset.live = s;
      },
    });
    const all = subscribe({
      topics: [`devices/${id}/#`],
      since: sinceAll,
      onMessage: (m) => {
        addMessage(m, true);
        lastSeen.set(id, Date.parse(m.received_at) || Date.now());
        drawInfo();
      },
    });
    cleanup.push(() => tel.close(), () => all.close());
  }

  let onNewField = () => {};
  function buildHistory() {
    const fieldSel = h('select', { 'aria-label': 'Field' });
    const rangeSel = h('select', { 'aria-label': 'Range' }, RANGES.map(([l, s]) => h('option', { value: s }, `Last ${l}`)), h('option', { value: 'custom' }, 'Custom…'));
    rangeSel.value = '3600';
    const from = h('input', { type: 'datetime-local', hidden: true, 'aria-label': 'From' });
    const to = h('input', { type: 'datetime-local', hidden: true, 'aria-label': 'To' });
    const aggSel = h('select', { 'aria-label': 'Aggregate' }, h('option', { value: '' }, 'Raw values'), AGGS.map((a) => h('option', { value: a }, a)));
    aggSel.value = 'mean';
    const out = h('div', { class: 'history-plot' });
    const summary = h('span', { class: 'muted small' });
    let chart = null;
    rangeSel.addEventListener('change', () => { from.hidden = to.hidden = rangeSel.value !== 'custom'; });

    async function fields() {
      const names = new Set(charts.keys());
      try {
        const latest = await get(`${base}/telemetry/latest`);
        const obj = latest && (latest.fields || latest);
        for (const k of Object.keys(obj || {})) if (k !== 'device') names.add(k);
      } catch { /* the live fields are enough */ }
      const cur = fieldSel.value;
      replace(fieldSel, [...names].sort().map((n) => h('option', { value: n }, n)));
      if (cur && names.has(cur)) fieldSel.value = cur;
      return names.size;
    }

    async function load() {
      if (!fieldSel.value && !(await fields())) {
        replace(out, notice('empty', 'No telemetry fields yet.', 'Fields appear once the device has sent telemetry.'));
        return;
      }
      let start, end;
      if (rangeSel.value === 'custom') {
        start = new Date(from.value);
        end = to.value ? new Date(to.value) : new Date();
        if (Number.isNaN(start.getTime())) { toast('Pick a start time', 'error'); return; }
      } else {
        end = new Date();
        start = new Date(end.getTime() - Number(rangeSel.value) * 1000);
      }
      const q = new URLSearchParams({ field: fieldSel.value, from: start.toISOString(), to: end.toISOString() });
      if (aggSel.value) {
        q.set('agg', aggSel.value);
        q.set('every', autoEvery((end - start) / 1000));
      }
      try {
        const data = await get(`${base}/telemetry?${q}`);
        const points = list(data, 'points');
        if (chart) chart.destroy();
        chart = null;
        replace(out);
        if (!points.length) {
          replace(out, notice('empty', 'No values in this range.'));
          summary.textContent = '';
          return;
        }
        chart = historyChart(out, fieldSel.value, points);
        summary.textContent = `${points.length} point${points.length === 1 ? '' : 's'}${aggSel.value ? `, ${aggSel.value} every ${q.get('every')}` : ''}`;
      } catch (e) {
        replace(out, e.unavailable
          ? notice('unavailable', 'History is not available on this hub', `GET /api/v1/devices/{id}/telemetry answered ${e.status}: ${e.message}`)
          : notice('error', 'Query failed', e.message));
      }
    }
    let loaded = false;
    const loadOnce = () => { if (!loaded) { loaded = true; load(); } };
    onNewField = (f) => {
      if (![...fieldSel.options].some((o) => o.value === f)) {
        fieldSel.append(h('option', { value: f }, f));
        [...fieldSel.options].sort((a, b) => a.value.localeCompare(b.value)).forEach((o) => fieldSel.append(o));
        if (!fieldSel.value) fieldSel.value = f;
      }
      loadOnce();
    };
    replace(history,
      h('div', { class: 'toolbar' }, fieldSel, rangeSel, from, to, aggSel,
        h('button', { class: 'primary', onclick: load }, 'Show'), summary),
      out);
    cleanup.push(() => chart && chart.destroy());
    fields().then((n) => n && loadOnce());
  }

  async function buildShadow() {
    let state;
    try {
      state = await get(`${base}/state`);
    } catch (e) {
      replace(shadow, e.unavailable
        ? notice('unavailable', 'Shadows are not available on this hub', `GET /api/v1/devices/{id}/state answered ${e.status}: ${e.message}`)
        : notice('error', 'Could not load the shadow', e.message));
      return;
    }
    const part = (name, v) => h('div', { class: 'shadow-part' }, h('h3', null, name), h('pre', { class: 'json' }, json(v ?? {})));
    const desired = (state && (state.desired?.state ?? state.desired)) || {};
    const editor = h('textarea', { class: 'mono', rows: 6, spellcheck: 'false' }, JSON.stringify(desired, null, 2));
    const msg = h('p', { class: 'form-error' });
    replace(shadow,
      h('div', { class: 'shadow' },
        part('Reported', state.reported?.state ?? state.reported),
        part('Desired', desired),
        part('Delta', state.delta)),
      state.version !== undefined || state.desired?.version !== undefined
        ? h('p', { class: 'muted small' }, `Version ${state.desired?.version ?? state.version}`) : null,
      h('label', { class: 'block' }, h('span', null, 'Set desired state (JSON object)'), editor), msg,
      h('button', {
        class: 'primary',
        onclick: async () => {
          msg.textContent = '';
          let body;
          try {
            body = JSON.parse(editor.value);
          } catch (e) {
            msg.textContent = `Not valid JSON: ${e.message}`;
            return;
          }
          try {
            await api('PUT', `${base}/state/desired`, body);
            toast('Desired state saved');
            buildShadow();
          } catch (e) {
            msg.textContent = e.message;
          }
        },
      }, 'Save desired state'));
  }

  function buildCommand() {
    const name = h('input', { placeholder: 'reboot', required: true, pattern: '[A-Za-z0-9_\\-]+' });
    const payload = h('textarea', { class: 'mono', rows: 4, spellcheck: 'false' }, '{}');
    const ttl = h('input', { placeholder: '10m', value: '10m' });
    const out = h('div');
    const form = h('form', {
      onsubmit: async (e) => {
        e.preventDefault();
        let p;
        try {
          p = JSON.parse(payload.value || 'null');
        } catch (err) {
          replace(out, h('p', { class: 'form-error' }, `Payload is not valid JSON: ${err.message}`));
          return;
        }
        try {
          const r = await api('POST', `${base}/commands/${enc(name.value.trim())}`, { payload: p, ttl: ttl.value.trim() || undefined });
          replace(out, h('div', { class: 'token-box' }, h('strong', null, 'Sent. '), r && (r.id || r.command_id) ? `Command ID ${r.id || r.command_id}` : '', r ? h('pre', { class: 'json' }, json(r)) : null));
        } catch (err) {
          replace(out, err.unavailable
            ? notice('unavailable', 'Commands are not available on this hub', `POST /api/v1/devices/{id}/commands/{name} answered ${err.status}: ${err.message}`)
            : h('p', { class: 'form-error' }, err.message));
        }
      },
    },
    h('div', { class: 'form-row' },
      h('label', null, h('span', null, 'Command'), name),
      h('label', null, h('span', null, 'Expires after'), ttl)),
    h('label', { class: 'block' }, h('span', null, 'Payload (JSON)'), payload),
    h('button', { class: 'primary', type: 'submit' }, 'Send command'));
    replace(command, h('p', { class: 'muted small' }, `Delivered on devices/${id}/commands/<name>, or held until the device is back.`), form, out);
  }

  loadDevice();
  startLive();
  buildHistory();
  buildShadow();
  buildCommand();
  const clock = setInterval(drawInfo, 10_000);
  return {
    el,
    destroy() {
      clearInterval(clock);
      for (const f of cleanup) f();
      if (window.__charts === charts) delete window.__charts;
    },
  };
}

import { h, replace, ago, card, notice, debounce, toast } from '../dom.js';
import { api, get, list, enc } from '../api.js';
import { subscribe } from '../live.js';
import { DeviceMap } from '../map.js';

const ACTIVE_MS = 5 * 60_000;

// lastSeen remembers, across pages, when a message of each device was last seen live.
export const lastSeen = new Map();

// statusOf is the device's status: from the hub when it tracks liveness, else "active" when a
// message arrived in the last five minutes, else "unknown".
export function statusOf(d, online) {
  if (d.status) return d.status;
  if (online) return online.has(d.id) ? 'online' : 'offline';
  const seen = seenAt(d);
  return seen && Date.now() - seen < ACTIVE_MS ? 'active' : 'unknown';
}

export function seenAt(d) {
  const a = d.last_seen ? Date.parse(d.last_seen) : 0;
  return Math.max(a, lastSeen.get(d.id) || 0) || null;
}

export function statusPill(status) {
  return h('span', { class: `status status-${status}` }, h('i'), status);
}

export function devicesPage() {
  const state = { q: '', type: '', status: '', devices: [], online: null, types: new Set() };
  const search = h('input', { type: 'search', placeholder: 'Search ID or name…', class: 'search', 'aria-label': 'Search devices' });
  const typeSel = h('select', { 'aria-label': 'Type' }, h('option', { value: '' }, 'All types'));
  const statusSel = h('select', { 'aria-label': 'Status' },
    h('option', { value: '' }, 'Any status'), h('option', { value: 'online' }, 'Online'), h('option', { value: 'offline' }, 'Offline'));
  const count = h('span', { class: 'muted count' });
  const tbody = h('tbody');
  const tableWrap = h('div', { class: 'table-wrap' },
    h('table', { class: 'devices', id: 'device-table' },
      h('thead', null, h('tr', null,
        h('th', null, 'Status'), h('th', null, 'Device'), h('th', null, 'Type'), h('th', null, 'Tags'), h('th', { class: 'right' }, 'Last seen'))),
      tbody));
  const listBody = h('div');
  const mapEl = h('div', { class: 'map', id: 'device-map' });
  const liveBadge = h('span', { class: 'live-badge' }, 'connecting');
  const addPanel = h('div', { class: 'add-panel', hidden: true });

  const el = h('div', { class: 'page' },
    h('div', { class: 'page-head' },
      h('div', null, h('h1', null, 'Devices'), h('p', { class: 'muted' }, 'Every device registered with this hub, live.')),
      h('div', { class: 'head-actions' }, liveBadge,
        h('button', { class: 'primary', onclick: () => { addPanel.hidden = !addPanel.hidden; } }, '+ Add device'))),
    addPanel,
    h('div', { class: 'toolbar' }, search, typeSel, statusSel, count),
    h('div', { class: 'grid-2' },
      card('Registry', null, listBody),
      card('Map', { actions: h('button', { class: 'ghost', onclick: () => map.fit() }, 'Fit') }, mapEl,
        h('div', { class: 'legend' },
          ['online', 'active', 'offline', 'unknown'].map((s) => statusPill(s))))));

  const map = new DeviceMap(mapEl, { onSelect: (id) => { location.hash = `#/devices/${enc(id)}`; } });
  buildAddPanel(addPanel, () => load());

  function row(d) {
    const st = statusOf(d, state.online);
    const tags = Object.entries(d.tags || {}).map(([k, v]) => h('span', { class: 'tag' }, `${k}: ${v}`));
    const seen = seenAt(d);
    return h('tr', { dataset: { device: d.id }, onclick: () => { location.hash = `#/devices/${enc(d.id)}`; } },
      h('td', null, statusPill(st)),
      h('td', null, h('a', { href: `#/devices/${enc(d.id)}`, class: 'device-name' }, d.name || d.id),
        d.name ? h('div', { class: 'muted mono small' }, d.id) : null),
      h('td', null, d.type ? h('span', { class: 'type' }, d.type) : h('span', { class: 'muted' }, '—')),
      h('td', { class: 'tags' }, tags.length ? tags : h('span', { class: 'muted' }, '—')),
      h('td', { class: 'right muted', title: seen ? new Date(seen).toISOString() : '' }, seen ? ago(seen) : d.last_seen === undefined ? '—' : 'never'));
  }

  function draw() {
    const shown = state.devices;
    count.textContent = `${shown.length} device${shown.length === 1 ? '' : 's'}`;
    if (!shown.length) {
      replace(listBody, notice('empty', state.q || state.type || state.status ? 'No devices match.' : 'No devices yet.',
        'Create one with “Add device”, hubctl devices create, or POST /api/v1/devices.'));
    } else {
      replace(tbody, shown.map(row));
      replace(listBody, tableWrap);
    }
    map.update(shown, (d) => statusOf(d, state.online));
  }
  const drawSoon = debounce(draw, 250);

  let seq = 0;
  async function load() {
    const mine = ++seq;
    const q = new URLSearchParams({ limit: '1000' });
    if (state.q) q.set('q', state.q);
    if (state.type) q.set('type', state.type);
    if (state.status) q.set('status', state.status);
    try {
      const [data, online] = await Promise.all([
        get(`/api/v1/devices?${q}`),
        get('/api/v1/devices?status=online&limit=1000').then((r) => new Set(list(r, 'devices').map((d) => d.id)), () => null),
      ]);
      if (mine !== seq) return;
      state.devices = list(data, 'devices');
      state.online = online;
      for (const d of state.devices) if (d.type) state.types.add(d.type);
      const cur = typeSel.value;
      replace(typeSel, h('option', { value: '' }, 'All types'), [...state.types].sort().map((t) => h('option', { value: t }, t)));
      typeSel.value = cur;
      draw();
    } catch (e) {
      if (mine !== seq) return;
      replace(listBody, notice(e.unavailable ? 'unavailable' : 'error', 'Could not load devices', e.message));
    }
  }

  search.addEventListener('input', debounce(() => { state.q = search.value.trim(); load(); }, 200));
  typeSel.addEventListener('change', () => { state.type = typeSel.value; load(); });
  statusSel.addEventListener('change', () => { state.status = statusSel.value; load(); });

  const live = subscribe({
    topics: ['devices/+/#'],
    onMessage: (m) => {
      if (!m.device) return;
      lastSeen.set(m.device, Date.parse(m.received_at) || Date.now());
      drawSoon();
    },
    onState: (s) => { liveBadge.textContent = s === 'live' ? 'live' : 'reconnecting'; liveBadge.className = `live-badge ${s}`; },
  });
  const timer = setInterval(load, 15_000);
  const clock = setInterval(drawSoon, 10_000); // keep "last seen" fresh
  load();
  return {
    el,
    destroy() {
      live.close();
      clearInterval(timer);
      clearInterval(clock);
      map.destroy();
    },
  };
}

function buildAddPanel(panel, created) {
  const f = (name, label, attrs = {}) => h('label', null, h('span', null, label), h('input', { name, ...attrs }));
  const result = h('div');
  const form = h('form', {
    class: 'add-form',
    onsubmit: async (e) => {
      e.preventDefault();
      const fd = new FormData(form);
      const body = { id: fd.get('id').trim() };
      for (const k of ['name', 'type']) if (fd.get(k).trim()) body[k] = fd.get(k).trim();
      const lat = fd.get('lat').trim(), lon = fd.get('lon').trim();
      if (lat || lon) body.location = { lat: Number(lat), lon: Number(lon) };
      const tags = fd.get('tags').trim();
      if (tags) {
        body.tags = {};
        for (const kv of tags.split(',')) {
          const [k, ...v] = kv.split(':');
          if (k.trim()) body.tags[k.trim()] = v.join(':').trim();
        }
      }
      try {
        const d = await api('POST', '/api/v1/devices', body);
        replace(result, h('div', { class: 'token-box' },
          h('strong', null, `Created ${d.id}. `), 'Its token is shown only now: ',
          h('code', { class: 'mono' }, d.token)));
        form.reset();
        created();
      } catch (err) {
        replace(result, h('p', { class: 'form-error' }, err.message));
      }
    },
  },
  f('id', 'ID', { required: true, placeholder: 'pump-17', pattern: '[A-Za-z0-9][A-Za-z0-9_\\-]{0,63}' }),
  f('name', 'Name', { placeholder: 'Pump 17' }),
  f('type', 'Type', { placeholder: 'pump' }),
  f('tags', 'Tags', { placeholder: 'site:north, floor:2' }),
  f('lat', 'Latitude', { type: 'number', step: 'any', min: -90, max: 90 }),
  f('lon', 'Longitude', { type: 'number', step: 'any', min: -180, max: 180 }),
  h('div', { class: 'form-actions' }, h('button', { class: 'primary', type: 'submit' }, 'Create device')));
  replace(panel, card('New device', null, form, result));
}

export { toast };

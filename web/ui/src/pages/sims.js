import { h, replace, time, json, card, notice, toast } from '../dom.js';
import { api, get, list, enc } from '../api.js';

const KINDS = [
  {
    key: 'replays',
    title: 'Replays',
    what: 'Re-publish a recorded time range into a sandbox (or live), at original pace or faster.',
    example: { from: '-1h', topics: ['devices/+/telemetry'], speed: 10, target: 'sandbox' },
    // POST /api/v1/replays/{id}/{pause,resume,cancel}
    controls: { running: [['pause', 'Pause'], ['cancel', 'Cancel']], paused: [['resume', 'Resume'], ['cancel', 'Cancel']] },
  },
  {
    key: 'simulations',
    title: 'Simulations',
    what: 'Virtual device fleets that speak real MQTT and CoAP to this hub.',
    example: { name: 'demo-fleet', profiles: [{ count: 10, protocol: 'mqtt', rate: '1s', fields: { temperature: { model: 'sine', min: 18, max: 26, period: '10m' } } }] },
    controls: { running: [['stop', 'Stop']] },
  },
];

// progressOf reads a job's progress as a 0..1 fraction, or null.
function progressOf(j) {
  if (typeof j.progress === 'number') return j.progress > 1 ? j.progress / 100 : j.progress;
  if (j.progress && typeof j.progress === 'object') {
    const p = j.progress;
    if (p.total) return (p.done ?? p.sent ?? p.published ?? 0) / p.total;
    if (typeof p.fraction === 'number') return p.fraction;
  }
  if (j.total) return (j.done ?? j.sent ?? j.published ?? 0) / j.total;
  return null;
}

function jobSection(kind) {
  const body = h('div');
  const editor = h('textarea', { class: 'mono', rows: 8, spellcheck: 'false' }, JSON.stringify(kind.example, null, 2));
  const msg = h('p', { class: 'form-error' });
  const base = `/api/v1/${kind.key}`;

  async function act(method, path, what) {
    try {
      await api(method, path);
      toast(what);
      load();
    } catch (e) {
      toast(e.message, 'error');
    }
  }

  async function load() {
    let jobs;
    try {
      jobs = list(await get(base), kind.key);
    } catch (e) {
      replace(body, e.unavailable
        ? notice('unavailable', `${kind.title} are not available on this hub`, `GET ${base} answered ${e.status}: ${e.message}`)
        : notice('error', `Could not load ${kind.key}`, e.message));
      return false;
    }
    if (!jobs.length) {
      replace(body, notice('empty', `No ${kind.key} yet.`, 'Start one below.'));
      return true;
    }
    replace(body, h('ul', { class: 'jobs' }, jobs.map((j) => {
      const id = j.id || j.name;
      const p = progressOf(j);
      const st = j.status || j.state || '';
      const controls = (kind.controls[st] || (/active|started|pending/.test(st) ? kind.controls.running : null)) || [];
      const sent = j.progress && typeof j.progress === 'object' && j.progress.sent !== undefined ? `${j.progress.sent} sent` : '';
      // Which hub runs it, and how often another hub (or a restarted one) took it over.
      const where = [j.owner ? `on ${j.owner}` : '', j.resumes ? `resumed ${j.resumes}×` : ''].filter(Boolean).join(', ');
      return h('li', { class: 'job' },
        h('div', { class: 'job-head' },
          h('strong', { class: 'mono' }, id), h('span', { class: `tag state-${st}` }, st || 'unknown'),
          h('span', { class: 'muted small' }, j.created_at ? time(j.created_at) : ''),
          h('span', { class: 'muted small' }, sent),
          h('span', { class: 'muted small' }, where),
          h('div', { class: 'spacer' }),
          controls.map(([op, label]) => h('button', { class: 'ghost', onclick: () => act('POST', `${base}/${enc(id)}/${op}`, `${label}: ${id}`) }, label)),
          h('button', { class: 'ghost danger', onclick: () => act('DELETE', `${base}/${enc(id)}`, `Deleted ${id}`) }, 'Delete')),
        p !== null ? h('div', { class: 'progress' }, h('div', { class: 'bar', style: `width:${Math.round(Math.min(1, p) * 100)}%` }),
          h('span', null, `${Math.round(Math.min(1, p) * 100)}%`)) : null,
        j.error ? h('p', { class: 'form-error' }, j.error) : null);
    })));
    return true;
  }

  const el = h('div', null,
    card(kind.title, { actions: h('button', { class: 'ghost', onclick: () => load() }, 'Refresh') },
      h('p', { class: 'muted small' }, kind.what), body,
      h('details', { class: 'start' }, h('summary', null, `Start a ${kind.key.slice(0, -1)}`),
        h('label', { class: 'block' }, h('span', null, 'Definition (JSON)'), editor), msg,
        h('button', {
          class: 'primary',
          onclick: async () => {
            msg.textContent = '';
            try {
              const r = await api('POST', base, editor.value);
              toast(`Started ${(r && (r.id || r.name)) || ''}`);
              load();
            } catch (e) {
              msg.textContent = e.message;
            }
          },
        }, 'Start'))));
  return { el, load };
}

// simsPage lists replays and simulations with their progress (polled every 2 s), and starts and
// stops them.
export function simsPage() {
  const sections = KINDS.map(jobSection);
  const el = h('div', { class: 'page' },
    h('div', { class: 'page-head' }, h('div', null, h('h1', null, 'Replays & simulations'),
      h('p', { class: 'muted' }, 'What would the system have done? Replay the past, or simulate a fleet.'))),
    h('div', { class: 'grid-2' }, sections.map((s) => s.el)));
  const poll = async () => {
    for (const s of sections) await s.load();
  };
  poll();
  const timer = setInterval(poll, 2000);
  return { el, destroy: () => clearInterval(timer) };
}

import { h, replace, time, json, card, notice, toast } from '../dom.js';
import { api, get, list, enc } from '../api.js';
import { subscribe } from '../live.js';

const EXAMPLE = {
  name: 'hot-rooms',
  sql: "SELECT device, avg(temperature) AS avg_t FROM 'devices/+/telemetry' GROUP BY device, TUMBLING(1m) HAVING avg_t > 28",
  lateness: '10s',
  enabled: true,
};

// rulesPage lists rules with their stats, shows results and alerts as they are published
// (rules/<name>/results over the live stream), and creates and removes rules.
export function rulesPage() {
  const body = h('div');
  const feed = h('ul', { class: 'feed' });
  const feedEmpty = notice('empty', 'No results yet.', 'Results and alerts of every rule appear here as they are published on rules/<name>/results.');
  const editor = h('textarea', { class: 'mono', rows: 7, spellcheck: 'false' }, JSON.stringify(EXAMPLE, null, 2));
  const editMsg = h('p', { class: 'form-error' });
  const el = h('div', { class: 'page' },
    h('div', { class: 'page-head' }, h('div', null, h('h1', null, 'Rules & alerts'),
      h('p', { class: 'muted' }, 'Windowed aggregations over device streams; a rule with HAVING is an alert.'))),
    card('Rules', { actions: h('button', { class: 'ghost', onclick: () => load() }, 'Refresh') }, body),
    h('div', { class: 'grid-2' },
      card('Latest results and alerts', null, feedEmpty, feed),
      card('New rule', null, h('label', { class: 'block' }, h('span', null, 'Rule (JSON)'), editor), editMsg,
        h('button', {
          class: 'primary',
          onclick: async () => {
            editMsg.textContent = '';
            try {
              await api('POST', '/api/v1/rules', editor.value);
              toast('Rule created');
              load();
            } catch (e) {
              editMsg.textContent = e.unavailable ? `Rules are not available on this hub (${e.status}: ${e.message})` : e.message;
            }
          },
        }, 'Create rule'))));

  async function load() {
    let rules;
    try {
      rules = list(await get('/api/v1/rules'), 'rules');
    } catch (e) {
      replace(body, e.unavailable
        ? notice('unavailable', 'Rules are not available on this hub', `GET /api/v1/rules answered ${e.status}: ${e.message}`)
        : notice('error', 'Could not load rules', e.message));
      return;
    }
    if (!rules.length) {
      replace(body, notice('empty', 'No rules yet.', 'Create one here or with hubctl rules create -f rule.json.'));
      return;
    }
    const stats = await Promise.all(rules.map((r) => get(`/api/v1/rules/${enc(r.name)}/stats`).catch(() => null)));
    replace(body, h('div', { class: 'table-wrap' }, h('table', null,
      h('thead', null, h('tr', null, ['Rule', 'Query', 'Events in', 'Open windows', 'Late', 'Last result', ''].map((c) => h('th', null, c)))),
      h('tbody', null, rules.map((r, i) => {
        const s = stats[i] || {};
        return h('tr', null,
          h('td', null, h('strong', null, r.name), ' ', r.enabled === false ? h('span', { class: 'tag' }, 'disabled') : null,
            /having/i.test(r.sql || '') ? h('span', { class: 'tag alert' }, 'alert') : null),
          h('td', { class: 'mono small sql' }, r.sql || ''),
          h('td', { class: 'right' }, s.events_in ?? '—'),
          h('td', { class: 'right' }, s.open_windows ?? '—'),
          h('td', { class: 'right' }, s.late_events ?? s.late ?? '—'),
          h('td', { class: 'small' }, s.last_result ? h('pre', { class: 'json tiny' }, json(s.last_result, 300)) : '—'),
          h('td', null, h('button', {
            class: 'ghost danger',
            onclick: async () => {
              if (!confirm(`Delete rule ${r.name}?`)) return;
              try {
                await api('DELETE', `/api/v1/rules/${enc(r.name)}`);
                load();
              } catch (e) {
                toast(e.message, 'error');
              }
            },
          }, 'Delete')));
      })))));
  }

  const live = subscribe({
    topics: ['rules/+/results', 'rules/+/late'],
    onMessage: (m) => {
      feedEmpty.remove();
      const [, name, kind] = m.topic.split('/');
      feed.prepend(h('li', { class: kind === 'late' ? 'late' : '' },
        h('div', { class: 'feed-head' }, h('strong', null, name), h('span', { class: 'tag' }, kind), h('span', { class: 'muted small' }, time(m.event_time))),
        h('pre', { class: 'json tiny' }, json(m.payload ?? m.payload_base64, 400))));
      while (feed.children.length > 100) feed.lastChild.remove();
    },
  });
  load();
  return { el, destroy: () => live.close() };
}

// Tiny DOM helpers: h() builds elements, the rest formats values for people.

// h(tag, attrs, ...children): attrs keys starting with "on" add listeners, "class" and
// "style" (string) set those, "dataset" (object) sets data-*, anything else is an attribute
// (false/null skip it). Children are nodes, strings, numbers, arrays or null.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === false || v === null || v === undefined) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'value') el.value = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : String(c));
  }
}

// replace empties el and appends children.
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

const rtf = new Intl.RelativeTimeFormat('en', { numeric: 'auto' });

// ago formats a time as "12 s ago", "3 min ago", ... or "never".
export function ago(t, now = Date.now()) {
  if (!t) return 'never';
  const ms = (t instanceof Date ? t.getTime() : typeof t === 'number' ? t : Date.parse(t)) - now;
  if (Number.isNaN(ms)) return '—';
  const s = Math.round(ms / 1000);
  if (Math.abs(s) < 5) return 'just now';
  if (Math.abs(s) < 60) return rtf.format(s, 'second');
  if (Math.abs(s) < 3600) return rtf.format(Math.round(s / 60), 'minute');
  if (Math.abs(s) < 86400) return rtf.format(Math.round(s / 3600), 'hour');
  return rtf.format(Math.round(s / 86400), 'day');
}

export function time(t) {
  if (!t) return '—';
  const d = new Date(t);
  return d.toLocaleString(undefined, { hour12: false });
}

// num formats a number with up to 3 significant decimals.
export function num(v) {
  if (typeof v !== 'number') return String(v);
  if (Number.isInteger(v)) return v.toLocaleString('en');
  const a = Math.abs(v);
  const digits = a >= 100 ? 1 : a >= 1 ? 2 : 3;
  return v.toLocaleString('en', { maximumFractionDigits: digits });
}

// json pretty-prints a value, truncated to max characters.
export function json(v, max = 4000) {
  const s = JSON.stringify(v, null, 2) ?? '';
  return s.length > max ? s.slice(0, max) + '\n…' : s;
}

// flatten turns {"a":{"b":1}} into {"a.b":1}; arrays are kept as values.
export function flatten(obj, prefix = '', out = {}) {
  for (const [k, v] of Object.entries(obj || {})) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (v && typeof v === 'object' && !Array.isArray(v)) flatten(v, key, out);
    else out[key] = v;
  }
  return out;
}

// debounce delays fn until ms pass without a call.
export function debounce(fn, ms) {
  let t;
  return (...args) => {
    clearTimeout(t);
    t = setTimeout(() => fn(...args), ms);
  };
}

// card is a titled panel.
export function card(title, attrs, ...children) {
  const { actions, ...rest } = attrs || {};
  return h('section', { class: 'card', ...rest },
    h('header', { class: 'card-head' }, h('h2', null, title), actions ? h('div', { class: 'card-actions' }, actions) : null),
    h('div', { class: 'card-body' }, children));
}

// notice renders a muted message: kind is "empty", "unavailable" or "error".
export function notice(kind, title, detail) {
  return h('div', { class: `notice notice-${kind}` },
    h('strong', null, title), detail ? h('p', null, detail) : null);
}

// toast shows a short message at the bottom of the screen.
export function toast(msg, kind = 'info') {
  let box = document.getElementById('toasts');
  if (!box) {
    box = h('div', { id: 'toasts' });
    document.body.append(box);
  }
  const el = h('div', { class: `toast toast-${kind}` }, msg);
  box.append(el);
  setTimeout(() => el.remove(), kind === 'error' ? 8000 : 4000);
}

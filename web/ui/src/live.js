// Live messages over Server-Sent Events, resuming without gaps after a reconnect: the browser
// sends Last-Event-ID by itself; when the stream fails for good (e.g. the token expired) it is
// reopened with a fresh token and since=<last id>.
import { getToken } from './api.js';

// subscribe opens GET /api/v1/stream. opts: topics (array), fields (array, optional), since
// (sequence, optional), onMessage(msg), onSkipped(info), onState("live"|"reconnecting").
// It returns { close() }.
export function subscribe(opts) {
  let es = null;
  let last = opts.since ?? null;
  let closed = false;
  let retry = null;

  async function open() {
    if (closed) return;
    let tok;
    try {
      tok = await getToken();
    } catch {
      retry = setTimeout(open, 3000);
      return;
    }
    const q = new URLSearchParams();
    for (const t of opts.topics) q.append('topic', t);
    if (opts.fields && opts.fields.length) q.set('fields', opts.fields.join(','));
    if (last !== null) q.set('since', String(last));
    q.set('access_token', tok);
    es = new EventSource(`/api/v1/stream?${q}`);
    es.onopen = () => opts.onState && opts.onState('live');
    es.addEventListener('message', (e) => {
      if (e.lastEventId) last = e.lastEventId;
      let msg;
      try {
        msg = JSON.parse(e.data);
      } catch {
        return;
      }
      opts.onMessage && opts.onMessage(msg);
    });
    es.addEventListener('skipped', (e) => opts.onSkipped && opts.onSkipped(JSON.parse(e.data)));
    es.onerror = () => {
      if (closed) return;
      opts.onState && opts.onState('reconnecting');
      if (es.readyState === EventSource.CLOSED) {
        es = null;
        retry = setTimeout(open, 2000);
      }
    };
  }
  open();
  return {
    close() {
      closed = true;
      clearTimeout(retry);
      if (es) es.close();
    },
  };
}

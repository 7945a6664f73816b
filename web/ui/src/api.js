// The HTTP API as the dashboard uses it. The API key the user types is kept in sessionStorage
// and exchanged for short-lived browser tokens (POST /api/v1/tokens), which authenticate every
// request and the live streams (?access_token=, as EventSource cannot send headers).

const KEY = 'tributary.apiKey';
let token = null;
let tokenExpires = 0;
let pending = null;
let signingIn = false;

export class ApiError extends Error {
  constructor(status, message, path) {
    super(message);
    this.status = status;
    this.path = path;
  }
  // unavailable is true when the hub does not offer the endpoint (yet).
  get unavailable() {
    return this.status === 404 || this.status === 405 || this.status === 501;
  }
}

export const hasKey = () => !!sessionStorage.getItem(KEY);

export function logout() {
  sessionStorage.removeItem(KEY);
  token = null;
  tokenExpires = 0;
  window.dispatchEvent(new Event('tributary:logout'));
}

// login checks key by getting a token with it, and keeps it for this browser tab.
export async function login(key) {
  sessionStorage.setItem(KEY, key);
  token = null;
  signingIn = true;
  try {
    await getToken();
  } catch (e) {
    sessionStorage.removeItem(KEY);
    throw e;
  } finally {
    signingIn = false;
  }
}

// getToken returns a browser token valid for at least another minute.
export async function getToken() {
  if (token && Date.now() < tokenExpires - 60_000) return token;
  if (pending) return pending;
  const key = sessionStorage.getItem(KEY);
  if (!key) throw new ApiError(401, 'not signed in');
  pending = (async () => {
    const resp = await fetch('/api/v1/tokens', {
      method: 'POST',
      headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
      body: '{}',
    });
    const data = await resp.json().catch(() => ({}));
    if (!resp.ok) {
      if (resp.status === 401 && !signingIn) logout();
      throw new ApiError(resp.status, data.error || resp.statusText, '/api/v1/tokens');
    }
    token = data.token;
    tokenExpires = Date.parse(data.expires_at);
    return token;
  })();
  try {
    return await pending;
  } finally {
    pending = null;
  }
}

// api sends a request and returns the decoded JSON answer (null for 204); errors are ApiError
// with the server's message.
export async function api(method, path, body) {
  for (let attempt = 0; ; attempt++) {
    const tok = await getToken();
    const init = { method, headers: { Authorization: `Bearer ${tok}` } };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = typeof body === 'string' ? body : JSON.stringify(body);
    }
    const resp = await fetch(path, init);
    if (resp.status === 401 && attempt === 0) {
      token = null; // expired or the key was changed: try once with a fresh token
      continue;
    }
    if (resp.status === 204) return null;
    const text = await resp.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = { error: text };
    }
    if (!resp.ok) {
      if (resp.status === 401) logout();
      throw new ApiError(resp.status, (data && data.error) || `${resp.status} ${resp.statusText}`, path);
    }
    return data;
  }
}

export const get = (path) => api('GET', path);

// list extracts an array from answers shaped [..] or {"<name>": [..]}.
export function list(data, name) {
  if (Array.isArray(data)) return data;
  if (data && Array.isArray(data[name])) return data[name];
  if (data && typeof data === 'object') {
    const arr = Object.values(data).find(Array.isArray);
    if (arr) return arr;
  }
  return [];
}

export const enc = encodeURIComponent;

// Calls to the api-server: the login token (kept in sessionStorage, never in a URL)
// goes in the Authorization header of every request, SSE included.
const KEY = "sluice.token";

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

export function token() { return sessionStorage.getItem(KEY); }
export function setToken(value) { value ? sessionStorage.setItem(KEY, value) : sessionStorage.removeItem(KEY); }

export function userName() {
  const t = token();
  if (!t) return null;
  try {
    const claims = JSON.parse(atob(t.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    return `${claims.sub} (${claims.role})`;
  } catch { return null; }
}

function loginNeeded() {
  setToken(null);
  if (!location.hash.startsWith("#/login")) {
    location.hash = `#/login?next=${encodeURIComponent(location.hash || "#/dags")}`;
  }
}

function detail(body, status) {
  if (!body) return `HTTP ${status}`;
  if (typeof body.detail === "string") return body.detail;
  if (Array.isArray(body.detail)) {
    return body.detail.map(d => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
  }
  return JSON.stringify(body);
}

export async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { detail: text }; }
  if (res.status === 401) { loginNeeded(); throw new ApiError(401, detail(data, 401)); }
  if (!res.ok) throw new ApiError(res.status, detail(data, res.status));
  return data;
}

export async function login(username, password) {
  const res = await fetch("/auth/token", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username, password }),
  });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new ApiError(res.status, detail(data, res.status));
  setToken(data.access_token);
}

export const enc = encodeURIComponent;

// Server-sent events read with fetch, so the token travels in a header. Reconnects
// after a drop with the last event id; `handlers[event](data)`; returns close().
export function sse(path, handlers, { resume = true, onState = () => {} } = {}) {
  let closed = false, lastId = null, controller = null, retryMs = 1000;
  async function run() {
    while (!closed) {
      controller = new AbortController();
      try {
        const url = lastId && resume ? `${path}${path.includes("?") ? "&" : "?"}since=${enc(lastId)}` : path;
        const res = await fetch(url, { headers: { Authorization: `Bearer ${token()}`, Accept: "text/event-stream" }, signal: controller.signal });
        if (res.status === 401) { loginNeeded(); return; }
        if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
        onState(true);
        const ended = await read(res.body.getReader());
        if (ended) return;
      } catch (err) {
        if (closed) return;
      }
      onState(false);
      if (!closed) await new Promise(r => setTimeout(r, retryMs));
    }
  }
  async function read(reader) {
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return false;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let event = "message", data = "", id = null;
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) continue;
          const [field, ...rest] = line.split(":");
          const value = rest.join(":").replace(/^ /, "");
          if (field === "event") event = value;
          else if (field === "data") data += (data ? "\n" : "") + value;
          else if (field === "id") id = value;
          else if (field === "retry") retryMs = Number(value) || retryMs;
        }
        if (id) lastId = id;
        if (!data) continue;
        const handler = handlers[event];
        if (handler && handler(JSON.parse(data)) === "close") { closed = true; controller.abort(); return true; }
      }
    }
  }
  run();
  return () => { closed = true; if (controller) controller.abort(); onState(false); };
}

// The page's one live feed (/ui/events): what changed, pushed by the server.
// Views subscribe while shown: on("runs", fn) gets [{run_pk, dag_id, run_id, state}],
// on("dags", fn) a DAG file change, on("resync", fn) means "reload what you show".
import { sse, token } from "./api.js";

const listeners = { runs: new Set(), dags: new Set(), resync: new Set() };
let close = null;

function emit(kind, data) { for (const fn of [...listeners[kind]]) fn(data); }

function indicator(on) {
  const el = document.getElementById("live");
  el.classList.toggle("on", on);
  el.textContent = on ? "live" : "offline";
}

export function start() {
  if (close || !token()) return;
  // a reconnect sends the last event id: the server replays what was missed, or says resync
  close = sse("/ui/events", {
    runs: runs => emit("runs", runs),
    dags: () => emit("dags", {}),
    resync: () => emit("resync", {}),
  }, { onState: indicator });
}

export function stop() { if (close) close(); close = null; indicator(false); }

export function on(kind, fn) {
  listeners[kind].add(fn);
  return () => listeners[kind].delete(fn);
}

// fn called at most once per `ms`, with the latest arguments: many events, one refetch.
export function debounce(fn, ms = 150) {
  let timer = null, args = null;
  return (...a) => {
    args = a;
    if (!timer) timer = setTimeout(() => { timer = null; fn(...args); }, ms);
  };
}

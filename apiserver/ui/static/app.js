// The router: the URL's fragment names the page; each view renders into <main>
// and returns a function that tears it down (closes its feeds and listeners).
import { setToken, token, userName } from "./api.js";
import * as live from "./live.js";
import { dagsView } from "./views/dags.js";
import { gridView } from "./views/grid.js";
import { graphView } from "./views/graph.js";
import { instanceView } from "./views/instance.js";
import { loginView } from "./views/login.js";
import { triggerView } from "./views/trigger.js";

const ROUTES = [
  [/^\/login$/, loginView],
  [/^\/?$|^\/dags$/, dagsView],
  [/^\/dags\/([^/]+)(?:\/grid)?$/, gridView],
  [/^\/dags\/([^/]+)\/graph$/, graphView],
  [/^\/dags\/([^/]+)\/trigger$/, triggerView],
  [/^\/dags\/([^/]+)\/runs\/([^/]+)\/tasks\/([^/]+)\/(-?\d+)$/, instanceView],
];

let teardown = null;

export function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/dags";
  const [path, query = ""] = raw.split("?");
  return { path, query: new URLSearchParams(query) };
}

function header() {
  const who = userName();
  document.getElementById("who").textContent = who || "";
  document.getElementById("logout").hidden = !who;
}

async function route() {
  if (teardown) { teardown(); teardown = null; }
  const { path, query } = parseHash();
  if (!token() && path !== "/login") {
    location.hash = `#/login?next=${encodeURIComponent(location.hash || "#/dags")}`;
    return;
  }
  header();
  if (token()) live.start();
  const main = document.getElementById("main");
  main.replaceChildren();
  for (const [pattern, view] of ROUTES) {
    const m = path.match(pattern);
    if (m) {
      const args = m.slice(1).map(decodeURIComponent);
      teardown = await view(main, args, query) || null;
      return;
    }
  }
  main.textContent = `No page at ${path}`;
}

document.getElementById("logout").addEventListener("click", () => {
  setToken(null);
  live.stop();
  location.hash = "#/login";
});
window.addEventListener("hashchange", route);
// leaving the page closes its streams at once (a cached page would otherwise keep them open)
window.addEventListener("pagehide", () => { if (teardown) teardown(); teardown = null; live.stop(); });
window.addEventListener("pageshow", ev => { if (ev.persisted) route(); });
route();

// The grid: runs (columns, oldest left) x tasks (rows, graph order, groups indented).
// A mapped task is one cell per run summarising its instances; selecting it lists them.
// Live: a "runs" event for a shown run refetches that run alone.
import { api, enc } from "../api.js";
import * as live from "../live.js";
import { fill, duration, fmtDate, h, mappedLabel, stateBadge, stateColor, STATES } from "../util.js";
import { runActions, taskActions } from "./actions.js";
import { dagHeader } from "./dagheader.js";

const PAGE = 100;

export async function gridView(main, [dagId], query) {
  const base = `/ui/api/dags/${enc(dagId)}`;
  const sel = { run: query.get("run"), task: query.get("task"), filter: null, shown: PAGE };
  const collapsed = new Set();
  let data = await api(`${base}/grid`);
  const gridBox = h("div", { class: "grid", id: "grid" });
  const panel = h("div", { class: "panel card", id: "panel" });
  main.append(dagHeader(dagId, "grid", data.is_paused), h("div", { class: "grid-wrap" }, gridBox, panel));

  const runByPk = () => new Map(data.runs.map(r => [r.run_pk, r]));
  const cellOf = (run, taskId) => (data.cells[run.run_pk] || {})[taskId];

  function select(run, task) {
    sel.run = run; sel.task = task; sel.filter = null; sel.shown = PAGE;
    const q = new URLSearchParams();
    if (run) q.set("run", run);
    if (task) q.set("task", task);
    history.replaceState(null, "", `#/dags/${enc(dagId)}/grid${q.toString() ? "?" + q : ""}`);
    renderGrid();
    renderPanel();
  }

  function hiddenBy(row) {
    return [...collapsed].some(g => row.id.startsWith(g + "."));
  }

  function rowLabel(row) {
    const pad = { paddingLeft: `${row.depth * 16}px` };
    if (row.kind === "group") {
      const open = !collapsed.has(row.id);
      return h("th", { class: "task group", style: pad, title: row.id },
        h("button", { class: "link", "aria-label": "toggle group",
          onclick: () => { open ? collapsed.add(row.id) : collapsed.delete(row.id); renderGrid(); } },
          open ? "▾ " : "▸ "),
        row.mapped ? mappedLabel(row.label, null) : row.label);
    }
    const latest = data.runs.length ? cellOf(data.runs.find(r => r.run_id === sel.run) || data.runs.at(-1), row.id) : null;
    const n = latest && latest.mapped ? latest.total : null;
    return h("th", { class: "task", style: pad, title: row.id, "data-task": row.id },
      h("button", { class: "link", style: { color: "inherit" }, onclick: () => select(sel.run || data.runs.at(-1)?.run_id, row.id) },
        row.mapped ? mappedLabel(row.label, n) : row.label));
  }

  function cell(run, row) {
    const c = cellOf(run, row.id);
    if (!c) return h("td", {}, h("span", { class: "cell empty", "data-run": run.run_id, "data-task": row.id, "data-state": "absent" }));
    const counts = c.counts ? Object.entries(c.counts).map(([s, n]) => `${s}: ${n}`).join(", ") : "";
    const classes = ["cell", row.kind === "group" ? "group" : "", c.mapped ? "mapped" : "",
                     sel.run === run.run_id && sel.task === row.id ? "selected" : ""].join(" ");
    return h("td", {}, h("span", {
      class: classes, style: { "--c": stateColor(c.state) },
      "data-run": run.run_id, "data-task": row.id, "data-state": c.state || "none",
      "data-total": c.total ?? "", title: `${row.id} · ${run.run_id}\n${c.state || "no status"}${c.mapped ? ` · ${c.total} instances (${counts})` : ""}`,
      onclick: () => select(run.run_id, row.id) }));
  }

  function runBar(run, maxMs) {
    const ms = run.start_date ? (run.end_date ? new Date(run.end_date) : new Date()) - new Date(run.start_date) : 0;
    const height = 8 + Math.round(56 * (maxMs ? ms / maxMs : 0));
    return h("td", {}, h("div", {
      class: `bar ${sel.run === run.run_id && !sel.task ? "selected" : ""}`,
      style: { height: `${height}px`, "--c": stateColor(run.state) },
      "data-run": run.run_id, "data-state": run.state,
      title: `${run.run_id}\n${run.state} · ${fmtDate(run.logical_date)} · ${duration(run.start_date, run.end_date)}`,
      onclick: () => select(run.run_id, null) }));
  }

  function renderGrid() {
    const durations = data.runs.map(r => r.start_date ? (r.end_date ? new Date(r.end_date) : new Date()) - new Date(r.start_date) : 0);
    const maxMs = Math.max(1, ...durations);
    const rows = data.rows.filter(r => !hiddenBy(r));
    fill(gridBox, data.runs.length === 0 && !rows.length ? h("p", { class: "muted" }, "No tasks.") :
      h("table", {},
        h("thead", {}, h("tr", { class: "bar-row" }, h("th", { class: "task muted" }, `${data.runs.length} runs`),
          data.runs.map(r => runBar(r, maxMs)))),
        h("tbody", {}, rows.map(row => h("tr", { class: sel.task === row.id ? "selected" : "", "data-row": row.id },
          rowLabel(row), data.runs.map(run => cell(run, row)))))));
    if (!data.runs.length) gridBox.append(h("p", { class: "muted" }, "No runs yet: trigger one."));
  }

  // --- the side panel ------------------------------------------------------------------
  let panelToken = 0;
  async function renderPanel() {
    const token = ++panelToken;
    const run = data.runs.find(r => r.run_id === sel.run);
    if (!run) {
      fill(panel, h("h2", {}, dagId), h("p", { class: "muted" }, "Select a run (a bar) or a task instance (a square)."));
      return;
    }
    if (!sel.task) {
      fill(panel, runPanel(run));
      return;
    }
    const row = data.rows.find(r => r.id === sel.task);
    const c = cellOf(run, sel.task);
    if (!row) { fill(panel, h("p", {}, `No task ${sel.task}`)); return; }
    if (row.kind === "group") { fill(panel, groupPanel(run, row)); return; }
    const content = await taskPanel(run, row, c);
    if (token === panelToken) fill(panel, content);
  }

  function runPanel(run) {
    return h("div", { id: "run-panel" },
      h("h2", {}, "Run ", h("span", { class: "mono" }, run.run_id)),
      h("table", { class: "kv" }, h("tbody", {},
        kv("State", stateBadge(run.state)), kv("Type", run.run_type), kv("Logical date", fmtDate(run.logical_date)),
        kv("Started", fmtDate(run.start_date)), kv("Ended", fmtDate(run.end_date)),
        kv("Duration", duration(run.start_date, run.end_date)),
        kv("Conf", h("pre", { class: "mono", style: { margin: 0 } }, JSON.stringify(run.conf, null, 2))),
        run.note ? kv("Note", run.note) : null)),
      runActions(dagId, run.run_id, refreshAll),
      h("p", {}, h("a", { href: `#/dags/${enc(dagId)}/graph?run=${enc(run.run_id)}` }, "See this run in the graph")));
  }

  function groupPanel(run, row) {
    const members = data.rows.filter(r => r.id.startsWith(row.id + ".") && r.kind === "task");
    return h("div", {}, h("h2", {}, `Group ${row.id}`),
      row.mapped ? h("p", { class: "muted" }, "A mapped group: its tasks expand together.") : null,
      h("table", { class: "instances" }, h("tbody", {}, members.map(m => {
        const c = cellOf(run, m.id);
        return h("tr", { class: "clickable", onclick: () => select(run.run_id, m.id) },
          h("td", {}, m.mapped ? mappedLabel(m.id, c?.total) : m.id), h("td", {}, stateBadge(c?.state)));
      }))));
  }

  async function taskPanel(run, row, c) {
    const title = h("h2", {}, row.mapped ? mappedLabel(row.id, c?.total) : row.id,
      h("div", { class: "muted", style: { fontWeight: 400, fontSize: "13px" } }, run.run_id));
    if (!c) return h("div", { id: "task-panel" }, title, h("p", { class: "muted" }, "No instance in this run."));
    if (!c.mapped) {
      return h("div", { id: "task-panel" }, title,
        h("table", { class: "kv" }, h("tbody", {},
          kv("State", stateBadge(c.state)), kv("Try", c.try_number), kv("Started", fmtDate(c.start_date)),
          kv("Ended", fmtDate(c.end_date)), kv("Duration", duration(c.start_date, c.end_date)))),
        h("p", {}, h("a", { id: "open-instance", href: instanceHref(run.run_id, row.id, -1) }, "Log, XCom and details →")),
        taskActions(dagId, run.run_id, row.id, -1, refreshAll));
    }
    const params = new URLSearchParams({ offset: 0, limit: sel.shown });
    if (sel.filter) params.set("state", sel.filter);
    const page = await api(`${base}/runs/${enc(run.run_id)}/tasks/${enc(row.id)}/instances?${params}`);
    const chips = h("div", { class: "chips", id: "state-chips" },
      h("span", { class: `chip ${sel.filter ? "" : "active"}`, onclick: () => { sel.filter = null; renderPanel(); } }, `all ${c.total}`),
      STATES.filter(s => c.counts[s]).map(s => h("span", {
        class: `chip state ${sel.filter === s ? "active" : ""}`, style: { "--c": stateColor(s) }, "data-state": s,
        onclick: () => { sel.filter = s; sel.shown = PAGE; renderPanel(); } }, `${s} ${c.counts[s]}`)));
    const table = h("table", { class: "instances", id: "mapped-instances" },
      h("thead", {}, h("tr", {}, ["#", "Label", "State", "Tries", "Duration"].map(t => h("th", {}, t)))),
      h("tbody", {}, page.instances.map(i => h("tr", {
        class: "clickable", "data-map-index": i.map_index, "data-state": i.state || "none",
        onclick: () => { location.hash = instanceHref(run.run_id, row.id, i.map_index); } },
        h("td", {}, i.map_index), h("td", {}, i.label ?? ""), h("td", {}, stateBadge(i.state)),
        h("td", {}, i.try_number), h("td", {}, duration(i.start_date, i.end_date))))));
    const more = page.instances.length === sel.shown
      ? h("button", { onclick: () => { sel.shown += PAGE; renderPanel(); } }, "Show more") : null;
    return h("div", { id: "task-panel" }, title, chips, table, more,
      taskActions(dagId, run.run_id, row.id, null, refreshAll));
  }

  const instanceHref = (runId, taskId, mapIndex) =>
    `#/dags/${enc(dagId)}/runs/${enc(runId)}/tasks/${enc(taskId)}/${mapIndex}`;

  // --- live updates --------------------------------------------------------------------
  async function refreshAll() {
    data = await api(`${base}/grid`);
    renderGrid();
    renderPanel();
  }

  async function refreshRun(runId) {
    const one = await api(`${base}/grid?run_id=${enc(runId)}`);
    const fresh = one.runs[0];
    if (!fresh) return refreshAll();
    data.runs = data.runs.map(r => (r.run_pk === fresh.run_pk ? fresh : r));
    data.cells[fresh.run_pk] = one.cells[fresh.run_pk] || {};
    renderGrid();
    if (sel.run === runId) renderPanel();
  }

  const pending = new Set();
  let needAll = false;
  const flush = live.debounce(async () => {
    const runs = [...pending]; const all = needAll;
    pending.clear(); needAll = false;
    try {
      if (all) await refreshAll();
      else for (const runId of runs) await refreshRun(runId);
    } catch { /* the next event or a resync retries */ }
  }, 100);
  const offs = [
    live.on("runs", changed => {
      const shown = runByPk();
      for (const r of changed) {
        if (r.dag_id !== dagId) continue;
        if (shown.has(r.run_pk)) pending.add(r.run_id); else needAll = true;
      }
      if (pending.size || needAll) flush();
    }),
    live.on("resync", () => { needAll = true; flush(); }),
    live.on("dags", () => { needAll = true; flush(); }),
  ];

  renderGrid();
  renderPanel();
  return () => offs.forEach(off => off());
}

function kv(k, v) { return h("tr", {}, h("td", {}, k), h("td", {}, v)); }

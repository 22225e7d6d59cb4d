// The DAG list: every DAG with its recent runs, paused switch, next run and the
// files that failed to import. Refetched when the event feed reports a change.
import { api, enc } from "../api.js";
import * as live from "../live.js";
import { fill, fmtDate, h, stateColor } from "../util.js";
import { pauseSwitch } from "./dagheader.js";

function schedule(s) {
  if (!s) return "None";
  if (s.expr) return s.expr + (s.tz && s.tz !== "UTC" ? ` (${s.tz})` : "");
  if (s.seconds !== undefined) return `every ${s.seconds} s`;
  return s.kind || JSON.stringify(s);
}

function recentRuns(dag) {
  const runs = [...(dag.recent || [])].reverse();  // oldest first, as the grid
  return h("span", { class: "recent" }, runs.map(r =>
    h("a", { class: "dot", href: `#/dags/${enc(dag.dag_id)}/grid?run=${enc(r.run_id)}`,
             title: `${r.run_id}: ${r.state}`, style: { "--c": stateColor(r.state) },
             "data-state": r.state })));
}

function row(dag) {
  return h("tr", { "data-dag": dag.dag_id },
    h("td", {}, pauseSwitch(dag.dag_id, dag.is_paused)),
    h("td", {}, h("a", { href: `#/dags/${enc(dag.dag_id)}/grid`, class: "dag-link" }, dag.dag_id),
      h("div", {}, (dag.tags || []).map(t => h("span", { class: "tag" }, t)))),
    h("td", { class: "mono" }, schedule(dag.schedule)),
    h("td", {}, recentRuns(dag)),
    h("td", {}, dag.next_run ? fmtDate(dag.next_run) : h("span", { class: "muted" }, "—")),
    h("td", {}, h("a", { class: "btn", href: `#/dags/${enc(dag.dag_id)}/trigger`, title: "Trigger a run" }, "▶")));
}

function importErrors(errors) {
  if (!errors.length) return null;
  return h("div", { class: "card errors", id: "import-errors" },
    h("h2", {}, `Import errors (${errors.length})`),
    errors.map(e => h("details", {}, h("summary", { class: "mono" }, e.fileloc), h("pre", {}, e.message))));
}

export async function dagsView(main) {
  const body = h("div");
  main.append(h("h1", {}, "DAGs"), body);
  async function load() {
    const data = await api("/ui/api/dags");
    fill(body,
      importErrors(data.import_errors) || "",
      h("table", { class: "list", id: "dag-list" },
        h("thead", {}, h("tr", {}, ["", "DAG", "Schedule", "Recent runs", "Next run", ""].map(t => h("th", {}, t)))),
        h("tbody", {}, data.dags.map(row))));
    if (!data.dags.length) body.append(h("p", { class: "muted" }, "No DAGs yet: put DAG files in the DAGs folder."));
  }
  const reload = live.debounce(() => load().catch(() => {}), 300);
  const offs = [live.on("runs", reload), live.on("dags", reload), live.on("resync", reload)];
  await load();
  return () => offs.forEach(off => off());
}

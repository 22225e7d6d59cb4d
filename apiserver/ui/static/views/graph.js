// The graph: tasks laid out by the server (groups as boxes, mapped ones marked),
// drawn as SVG and coloured by the states of one run (the latest by default).
import { api, enc } from "../api.js";
import * as live from "../live.js";
import { fill, h, mappedLabel, s, stateColor, STATES } from "../util.js";
import { dagHeader } from "./dagheader.js";

const MARGIN = 16;

export async function graphView(main, [dagId], query) {
  const base = `/ui/api/dags/${enc(dagId)}`;
  let runId = query.get("run");
  const [dag, grid] = await Promise.all([api(base), api(`${base}/grid?limit=25`)]);
  let data = await load();
  const box = h("div", { class: "graph", id: "graph" });
  const picker = h("select", { id: "run-picker", onchange: async () => {
    runId = picker.value || null;
    history.replaceState(null, "", `#/dags/${enc(dagId)}/graph${runId ? `?run=${enc(runId)}` : ""}`);
    data = await load();
    draw();
  } }, h("option", { value: "" }, "latest run"),
     [...grid.runs].reverse().map(r => h("option", { value: r.run_id, selected: r.run_id === runId }, `${r.run_id} (${r.state})`)));
  main.append(dagHeader(dagId, "graph", dag.is_paused),
    h("div", { class: "row", style: { marginBottom: "10px", alignItems: "center" } }, h("span", { class: "muted" }, "States of"), picker),
    box,
    h("div", { class: "legend" }, STATES.map(st => h("span", { class: "state", style: { "--c": stateColor(st) } }, st))));

  async function load() {
    return api(`${base}/graph${runId ? `?run_id=${enc(runId)}` : ""}`);
  }

  function node(n) {
    const cell = data.cells[n.id];
    const run = data.run;
    const goTo = () => {
      if (!run) return;
      location.hash = cell && cell.mapped
        ? `#/dags/${enc(dagId)}/grid?run=${enc(run.run_id)}&task=${enc(n.id)}`
        : `#/dags/${enc(dagId)}/runs/${enc(run.run_id)}/tasks/${enc(n.id)}/-1`;
    };
    if (n.kind === "group") {
      return s("g", { class: `group ${n.mapped ? "mapped" : ""}`, "data-group": n.id,
                      transform: `translate(${n.x},${n.y})` },
        s("rect", { width: n.w, height: n.h, rx: 8 }),
        s("text", { x: 10, y: 17 }, n.mapped ? mappedLabel(n.label, null) : n.label));
    }
    const state = cell ? cell.state : null;
    const label = n.mapped ? mappedLabel(n.label, cell && cell.mapped ? cell.total : null) : n.label;
    return s("g", { class: "node", "data-task": n.id, "data-state": state || "none",
                    transform: `translate(${n.x},${n.y})`, style: `--c: ${stateColor(state)}`, onclick: goTo },
      s("title", {}, `${n.id}\n${n.operator || ""}\n${state || "no status"}`),
      s("rect", { width: n.w, height: n.h, rx: 6 }),
      s("rect", { class: "band", width: 6, height: n.h, rx: 2 }),
      s("text", { x: 14, y: 15 }, label),
      s("text", { x: 14, y: 29, class: "op" }, operatorName(n.operator)));
  }

  function draw() {
    const width = data.width + 2 * MARGIN, height = data.height + 2 * MARGIN;
    const svg = s("svg", { width, height, viewBox: `${-MARGIN} ${-MARGIN} ${width} ${height}`, id: "graph-svg" },
      s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto" },
        s("path", { d: "M0,0 L10,5 L0,10 z", fill: "#98a2b3" }))),
      data.nodes.filter(n => n.kind === "group").map(node),
      data.edges.map(e => s("path", { class: "edge", d: e.path, "marker-end": "url(#arrow)", "data-edge": `${e.source}->${e.target}` })),
      data.nodes.filter(n => n.kind === "task").map(node));
    fill(box, svg);
  }

  const refresh = live.debounce(async () => { data = await load(); draw(); }, 150);
  const offs = [
    live.on("runs", runs => {
      if (runs.some(r => r.dag_id === dagId && (!data.run || r.run_pk === data.run.run_pk || !runId))) refresh();
    }),
    live.on("resync", refresh), live.on("dags", refresh),
  ];
  draw();
  return () => offs.forEach(off => off());
}

function operatorName(op) {
  if (!op) return "";
  return op === "DecoratedPythonOperator" || op === "_PythonDecoratedOperator" ? "@task" : op;
}

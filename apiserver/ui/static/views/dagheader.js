// The top of every DAG page: its name, the pause switch, the page tabs, Trigger.
import { api, enc } from "../api.js";
import { flash, h } from "../util.js";

export function pauseSwitch(dagId, isPaused, onChange = () => {}) {
  const box = h("input", { type: "checkbox", "aria-label": `Unpause/pause ${dagId}`,
                           "data-dag": dagId, class: "pause-toggle" });
  box.checked = !isPaused;
  box.addEventListener("change", async () => {
    const paused = !box.checked;
    box.disabled = true;
    try {
      const dag = await api(`/api/v2/dags/${enc(dagId)}`, { method: "PATCH", body: { is_paused: paused } });
      box.checked = !dag.is_paused;
      onChange(dag.is_paused);
    } catch (err) {
      box.checked = !paused;
      flash(document.getElementById("main"), `Could not ${paused ? "pause" : "unpause"} ${dagId}: ${err.message}`);
    } finally {
      box.disabled = false;
    }
  });
  return h("label", { class: "switch", title: "Paused / active" }, box, h("span"));
}

export function dagHeader(dagId, active, isPaused) {
  const base = `#/dags/${enc(dagId)}`;
  const tab = (name, label) => h("a", { href: `${base}/${name}`, class: active === name ? "active" : "" }, label);
  return h("div", {},
    h("h1", {}, pauseSwitch(dagId, isPaused), h("span", { id: "dag-title" }, dagId),
      h("div", { class: "grow" }),
      h("a", { class: "btn", href: `${base}/trigger`, id: "trigger-link" }, "▶ Trigger")),
    h("div", { class: "tabs" }, tab("grid", "Grid"), tab("graph", "Graph")));
}

// Steering through Airflow's REST API (the api-server checks the user's role there).
import { api, enc } from "../api.js";
import { flash, h } from "../util.js";

const runPath = (dag, run) => `/api/v2/dags/${enc(dag)}/dagRuns/${enc(run)}`;

async function act(what, call, done) {
  if (!window.confirm(`${what}?`)) return;
  const main = document.getElementById("main");
  try {
    await call();
    flash(main, `${what}: done`, "ok");
    if (done) done();
  } catch (err) {
    flash(main, `${what}: ${err.message}`);
  }
}

export function runActions(dag, run, done) {
  return h("div", { class: "actions" },
    h("button", { id: "clear-run", onclick: () => act(`Clear run ${run}`,
      () => api(`${runPath(dag, run)}/clear`, { method: "POST", body: { dry_run: false } }), done) }, "Clear run"),
    h("button", { onclick: () => act(`Mark run ${run} success`,
      () => api(runPath(dag, run), { method: "PATCH", body: { state: "success" } }), done) }, "Mark success"),
    h("button", { class: "danger", onclick: () => act(`Mark run ${run} failed`,
      () => api(runPath(dag, run), { method: "PATCH", body: { state: "failed" } }), done) }, "Mark failed"));
}

// mapIndex null: every instance of the task (a mapped task's whole set)
export function taskActions(dag, run, task, mapIndex, done) {
  const name = mapIndex === null || mapIndex < 0 ? task : `${task} [${mapIndex}]`;
  const tiPath = `${runPath(dag, run)}/taskInstances/${enc(task)}${mapIndex === null || mapIndex < 0 ? "" : `/${mapIndex}`}`;
  const ids = mapIndex === null || mapIndex < 0 ? [task] : [[task, mapIndex]];
  const buttons = [
    h("button", { id: "clear-task", onclick: () => act(`Clear ${name}`,
      () => api(`/api/v2/dags/${enc(dag)}/clearTaskInstances`, { method: "POST",
        body: { dry_run: false, dag_run_id: run, task_ids: ids, only_failed: false, reset_dag_runs: true } }), done) },
      "Clear"),
  ];
  if (mapIndex !== null) {
    buttons.push(
      h("button", { id: "mark-success", onclick: () => act(`Mark ${name} success`,
        () => api(tiPath, { method: "PATCH", body: { new_state: "success" } }), done) }, "Mark success"),
      h("button", { id: "mark-failed", class: "danger", onclick: () => act(`Mark ${name} failed`,
        () => api(tiPath, { method: "PATCH", body: { new_state: "failed" } }), done) }, "Mark failed"));
  }
  return h("div", { class: "actions" }, buttons);
}

// Trigger a run: one field per DAG Param (its JSON schema, else its default's type),
// sent as the run's conf through Airflow's REST API.
import { api, enc } from "../api.js";
import { append, flash, h } from "../util.js";

function kindOf(schema, value) {
  const type = Array.isArray(schema.type) ? schema.type.find(t => t !== "null") : schema.type;
  if (schema.enum) return "enum";
  if (type) return type;
  if (typeof value === "boolean") return "boolean";
  if (typeof value === "number") return Number.isInteger(value) ? "integer" : "number";
  if (Array.isArray(value)) return "array";
  if (value !== null && typeof value === "object") return "object";
  return "string";
}

function field(name, value, meta) {
  const schema = (meta && meta.schema) || {};
  const kind = kindOf(schema, value);
  const id = `param-${name}`;
  let input;
  if (kind === "boolean") {
    input = h("input", { type: "checkbox", id, name });
    input.checked = Boolean(value);
  } else if (kind === "enum") {
    input = h("select", { id, name }, schema.enum.map(v => h("option", { value: JSON.stringify(v), selected: v === value }, String(v))));
  } else if (kind === "integer" || kind === "number") {
    input = h("input", { type: "number", id, name, step: kind === "integer" ? "1" : "any",
                         min: schema.minimum, max: schema.maximum, value: value ?? "" });
  } else if (kind === "array" || kind === "object") {
    input = h("textarea", { id, name, spellcheck: "false" });
    input.value = value === null || value === undefined ? "" : JSON.stringify(value, null, 2);
  } else {
    input = h("input", { type: "text", id, name, value: value ?? "" });
  }
  input.dataset.kind = kind;
  const help = [meta && meta.description, kind === "array" || kind === "object" ? `JSON ${kind}` : null,
                schema.minimum !== undefined ? `≥ ${schema.minimum}` : null,
                schema.maximum !== undefined ? `≤ ${schema.maximum}` : null].filter(Boolean).join(" · ");
  return [h("label", { for: id }, name, meta && meta.required ? h("span", { class: "req" }, " *") : null),
          h("div", {}, input, help ? h("div", { class: "help" }, help) : null)];
}

function read(input) {
  const kind = input.dataset.kind, name = input.name;
  if (kind === "boolean") return input.checked;
  if (kind === "enum") return JSON.parse(input.value);
  if (input.value === "") return null;
  if (kind === "integer" || kind === "number") {
    const n = Number(input.value);
    if (Number.isNaN(n) || (kind === "integer" && !Number.isInteger(n))) throw new Error(`${name}: not ${kind === "integer" ? "an integer" : "a number"}`);
    return n;
  }
  if (kind === "array" || kind === "object") {
    try { return JSON.parse(input.value); } catch { throw new Error(`${name}: not valid JSON`); }
  }
  return input.value;
}

export async function triggerView(main, [dagId]) {
  const dag = await api(`/ui/api/dags/${enc(dagId)}`);
  const names = [...new Set([...Object.keys(dag.params || {}), ...Object.keys(dag.param_schemas || {})])];
  const form = h("form", { class: "params", id: "trigger-form" },
    names.map(n => field(n, (dag.params || {})[n], (dag.param_schemas || {})[n])),
    h("div", {}), h("div", {}, h("button", { class: "primary", type: "submit", id: "trigger-submit" }, "▶ Trigger")));
  form.addEventListener("submit", async ev => {
    ev.preventDefault();
    const conf = {};
    try {
      for (const input of form.querySelectorAll("[data-kind]")) {
        const value = read(input);
        const meta = (dag.param_schemas || {})[input.name];
        if (value === null && meta && meta.required) throw new Error(`${input.name}: required`);
        conf[input.name] = value;
      }
      const run = await api(`/api/v2/dags/${enc(dagId)}/dagRuns`, { method: "POST", body: { logical_date: null, conf } });
      location.hash = `#/dags/${enc(dagId)}/grid?run=${enc(run.dag_run_id)}`;
    } catch (err) {
      flash(form.parentElement, `Trigger ${dagId}: ${err.message}`);
    }
  });
  append(main, [
    h("div", { class: "muted" }, h("a", { href: "#/dags" }, "DAGs"), " / ", h("a", { href: `#/dags/${enc(dagId)}/grid` }, dagId)),
    h("h1", {}, `Trigger ${dagId}`),
    dag.description ? h("p", { class: "muted" }, dag.description) : null,
    names.length ? null : h("p", { class: "muted" }, "This DAG has no params."),
    h("div", { class: "card" }, form)]);
}

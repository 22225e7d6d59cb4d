// One task instance: its state, every try's log (followed live while the try runs),
// XCom, rendered templates and what it waits on when deferred.
import { api, enc, sse } from "../api.js";
import * as live from "../live.js";
import { fill, duration, fmtDate, h, stateBadge } from "../util.js";
import { taskActions } from "./actions.js";

const ENDED = new Set(["success", "failed", "skipped", "upstream_failed", "removed", "up_for_retry"]);

export async function instanceView(main, [dagId, runId, taskId, mapIndexText]) {
  const mapIndex = Number(mapIndexText);
  const base = `/ui/api/dags/${enc(dagId)}/runs/${enc(runId)}/tasks/${enc(taskId)}/${mapIndex}`;
  let data = await api(base);
  let shownTry = Math.max(1, data.instance.try_number);
  let stopLog = null;

  const details = h("div", { class: "card grow", id: "instance-details" });
  const side = h("div", { class: "card", style: { width: "420px", flex: "none" } });
  const tries = h("div", { class: "tabs", id: "tries" });
  const tryList = h("div", { id: "try-history" });
  const logBox = h("pre", { class: "log", id: "log" });
  const title = mapIndex >= 0 ? `${taskId} [${mapIndex}]` : taskId;
  main.append(
    h("div", { class: "muted" }, h("a", { href: "#/dags" }, "DAGs"), " / ",
      h("a", { href: `#/dags/${enc(dagId)}/grid` }, dagId), " / ",
      h("a", { href: `#/dags/${enc(dagId)}/grid?run=${enc(runId)}` }, runId)),
    h("h1", {}, h("span", { id: "instance-title" }, title), h("span", { id: "instance-state" })),
    h("div", { class: "row" }, details, side),
    tryList, h("h2", {}, "Log"), tries, logBox);

  function renderDetails() {
    const ti = data.instance;
    fill(document.getElementById("instance-state"), stateBadge(ti.state));
    fill(details,
      h("table", { class: "kv" }, h("tbody", {},
        kv("State", stateBadge(ti.state)), ti.label !== null ? kv("Label", ti.label) : null,
        kv("Try", `${ti.try_number} of ${ti.max_tries + 1}`),
        kv("Queued", fmtDate(ti.queued_at)), kv("Started", fmtDate(ti.start_date)), kv("Ended", fmtDate(ti.end_date)),
        kv("Duration", duration(ti.start_date, ti.end_date)),
        kv("Queue / pool", `${ti.queue} / ${ti.pool} (${ti.pool_slots} slot${ti.pool_slots === 1 ? "" : "s"})`),
        ti.hostname || ti.worker_id ? kv("Ran on", [ti.hostname, ti.pid ? `pid ${ti.pid}` : null, ti.worker_id ? `worker ${ti.worker_id}` : null].filter(Boolean).join(", ")) : null,
        ti.next_retry_at ? kv("Next retry", fmtDate(ti.next_retry_at)) : null)),
      ti.error ? h("div", {}, h("h2", {}, "Error"), h("pre", { class: "error-text", id: "instance-error" }, ti.error)) : null,
      deferral(ti),
      taskActions(dagId, runId, taskId, mapIndex, refresh));
    fill(side,
      h("h2", { style: { marginTop: 0 } }, "XCom"),
      data.xcoms.length ? h("table", { class: "instances", id: "xcoms" }, h("tbody", {}, data.xcoms.map(x =>
        h("tr", {}, h("td", { class: "mono" }, x.key),
          h("td", { class: "mono", style: { wordBreak: "break-all" } }, x.value + (x.truncated ? ` … (${x.size} characters)` : "")))))) :
        h("p", { class: "muted" }, "No XCom."),
      h("h2", {}, "Rendered templates"),
      ti.rendered_fields && Object.keys(ti.rendered_fields).length
        ? h("table", { class: "instances", id: "rendered" }, h("tbody", {}, Object.entries(ti.rendered_fields).map(([k, v]) =>
            h("tr", {}, h("td", { class: "mono" }, k),
              h("td", {}, h("pre", { class: "mono", style: { margin: 0, whiteSpace: "pre-wrap" } }, typeof v === "string" ? v : JSON.stringify(v, null, 2)))))))
        : h("p", { class: "muted" }, "None stored for this try."));
  }

  function deferral(ti) {
    if (!ti.next_method && !ti.trigger_id) return null;
    return h("div", { id: "deferral" }, h("h2", {}, "Deferral"),
      h("table", { class: "kv" }, h("tbody", {},
        kv("Resumes with", ti.next_method || "—"),
        ti.trigger_classpath ? kv("Trigger", h("span", { class: "mono" }, ti.trigger_classpath)) : kv("Trigger", "fired (resuming)"),
        ti.trigger_created_at ? kv("Deferred at", fmtDate(ti.trigger_created_at)) : null,
        ti.trigger_timeout ? kv("Times out at", fmtDate(ti.trigger_timeout)) : null,
        ti.trigger_id ? kv("Triggerer", ti.triggerer_hostname ? `${ti.triggerer_hostname} (pid ${ti.triggerer_pid})` : "waiting for a triggerer") : null)));
  }

  function renderTries() {
    const n = Math.max(1, data.instance.try_number);
    fill(tries, ...Array.from({ length: n }, (_, i) => i + 1).map(t =>
      h("a", { href: "javascript:void 0", class: t === shownTry ? "active" : "", "data-try": t,
               onclick: () => { shownTry = t; renderTries(); showLog(); } }, `Try ${t}`)));
    fill(tryList, ...tryTable());
  }

  // Every try: the ones the instance ended (kept across clears) and the current one.
  function tryTable() {
    const ti = data.instance;
    const ended = data.tries || [];
    const rows = ended.some(t => t.try_number === ti.try_number) || ti.try_number === 0
      ? ended : [...ended, ti];
    if (rows.length < 2) return [];
    return [h("h2", {}, "Tries"), h("table", { class: "instances", id: "try-list" }, h("tbody", {},
      rows.map(t => h("tr", { "data-try": t.try_number },
        h("td", {}, `Try ${t.try_number}`), h("td", {}, stateBadge(t.state)),
        h("td", {}, fmtDate(t.start_date)), h("td", {}, duration(t.start_date, t.end_date)),
        h("td", { class: "mono" }, t.hostname || ""))))) ];
  }

  async function showLog() {
    if (stopLog) { stopLog(); stopLog = null; }
    logBox.replaceChildren();
    const ti = data.instance;
    if (ti.try_number === 0) { logBox.textContent = "Not started yet."; return; }
    const current = shownTry === ti.try_number && !ENDED.has(ti.state);
    const path = `${base}/log${current ? "/stream" : ""}?try_number=${shownTry}`;
    if (!current) {  // a finished try: read it all, a chunk at a time
      logBox.dataset.complete = "false";
      let chunk = await api(path);
      appendLines(chunk);
      while (!chunk.complete && chunk.lines.length) {
        chunk = await api(`${path}&continuation=${enc(chunk.continuation)}`);
        appendLines(chunk);
      }
      if (!logBox.childNodes.length) logBox.textContent = `No log lines for try ${shownTry}.`;
      logBox.dataset.complete = "true";
      return;
    }
    logBox.dataset.complete = "false";
    stopLog = sse(path, {
      log: chunk => appendLines(chunk),
      end: d => { if (d.error) appendProblem(d.error); logBox.dataset.complete = "true"; return "close"; },
    }, { resume: false });
  }

  function appendLines(chunk) {
    const follow = logBox.scrollTop + logBox.clientHeight >= logBox.scrollHeight - 20;
    for (const line of chunk.lines) {
      const stamp = line.timestamp ? line.timestamp.replace("T", " ").replace(/Z$/, "").slice(0, 23) : "";
      logBox.append(h("span", { class: `line lvl-${line.level || "NONE"}` },
        stamp ? h("span", { class: "ts" }, stamp + " ") : null,
        line.level ? h("span", { class: "lv" }, line.level.padEnd(8)) : null,
        line.text, "\n"));
    }
    for (const problem of chunk.problems || []) appendProblem(problem);
    if (follow) logBox.scrollTop = logBox.scrollHeight;
  }

  function appendProblem(text) {
    logBox.append(h("span", { class: "lvl-WARNING" }, `[${text}]\n`));
  }

  async function refresh() {
    const before = data.instance;
    data = await api(base);
    const ti = data.instance;
    renderDetails();
    fill(tryList, ...tryTable());
    if (ti.try_number !== before.try_number) {
      const wasLatest = shownTry === Math.max(1, before.try_number);
      if (wasLatest) shownTry = Math.max(1, ti.try_number);
      renderTries();
      if (wasLatest) showLog();
    } else if (!stopLog && shownTry === ti.try_number && !ENDED.has(ti.state) && ti.try_number > 0) {
      showLog();  // the try started after the page opened
    }
  }

  const reload = live.debounce(() => refresh().catch(() => {}), 150);
  const offs = [
    live.on("runs", runs => { if (runs.some(r => r.run_pk === data.run.run_pk)) reload(); }),
    live.on("resync", reload),
  ];
  renderDetails();
  renderTries();
  showLog();
  return () => { offs.forEach(off => off()); if (stopLog) stopLog(); };
}

function kv(k, v) { return h("tr", {}, h("td", {}, k), h("td", {}, v)); }

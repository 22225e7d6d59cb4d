"""Sleeping triggers in one triggerer (10,000 by default, 100,000 at scale): its memory, and
how late they fire.

The scenario
    One DAG, one mapped ``start_from_trigger`` operator expanded ``--triggers``
    times. Every instance starts straight in the triggerer (no worker involved)
    with a ``DateTimeTrigger``; map index ``i`` is due at ``dag_run.conf["due"]``
    (``--lead`` seconds after the run is triggered, so that all are claimed and
    sleeping first) plus ``i * --spread / --triggers`` seconds. ``--spread 0``
    (the default) makes them all due at the same instant, which no machine
    commits within milliseconds; ``--spread S`` makes them fall due at a steady
    rate, which is what "timers that fire on time" asks of sleeping triggers.
    ``--timer`` chooses the trigger: ``stamped`` (the provider's ``run()`` called
    unchanged by a subclass whose event also carries the triggerer's clock when
    it yields), ``exact`` (a subclass sleeping straight to its moment: the
    provider's ``run()`` polls once a second in its last 20 s, up to a second
    late by design) or ``provider`` (``DateTimeTrigger`` itself, as
    ``DateTimeSensorAsync`` defers; no yield time). Real scheduler and
    triggerer processes; no worker is started, since none has anything to do
    until the triggers fire (what follows, the resumes on workers, is not
    measured here). Settings: the product's defaults plus
    ``SLUICE_TRIGGERER_CAPACITY`` and ``SLUICE_MAX_MAP_LENGTH`` = the trigger count.
    Each of ``--runs`` (default 3) runs gets a fresh database and fresh daemons.

What is measured
    RSS        the triggerer process's ``VmRSS`` from ``/proc/<pid>/status``, sampled
               every 50 ms by this process: idle (DAG parsed, nothing claimed), the
               peak while all triggers are running (from the triggerer's
               ``triggers_claimed`` log line reporting ``running`` = the count to the
               due time), and ``VmHWM`` (the kernel's lifetime peak) at the end.
    yield lag  the payload's ``yielded`` (triggerer clock when ``run()`` yielded)
               minus its due time, per trigger (not for ``--timer provider``): how
               late the event loop wakes a sleeping trigger. Read from ``task_instance.next_kwargs.event``.
    fire lag   the timestamp of the triggerer's ``trigger_fired`` JSON log line
               (written right after the transaction that moves the task instance
               ``deferred -> scheduled`` committed) minus its due time: when the
               database knows the trigger fired. The largest is "last fire".
    p50/p99    nearest-rank percentiles over every trigger of a run; the summary
               gives the median of the runs' figures.
    collector  the triggerer's ``gc_collection`` lines of generation 2 (full passes)
               before and after the due time, and its last ``gc_leak_checked`` line
               (frozen objects, and those no running trigger explains).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio

from bench.common import (
    add_output_args,
    bench_cluster,
    load_average,
    log_events,
    machine,
    run_scenario,
    settings_used,
    summary,
)
from tests.cluster import Cluster

DAG_ID = "bench_triggers"
SAMPLE_S = 0.05
STATS_FLUSH_S = 11.0

DAG_SOURCE = '''
"""Benchmark: {n} mapped start_from_trigger instances, map index i due at
dag_run.conf["due"] + i * dag_run.conf["step"] seconds."""
import asyncio
import time
from datetime import datetime, timedelta

from airflow.providers.standard.triggers.temporal import DateTimeTrigger
from airflow.sdk import BaseOperator, dag
from airflow.triggers.base import StartTriggerArgs, TriggerEvent


class StampedDateTimeTrigger(DateTimeTrigger):
    """The built-in DateTimeTrigger; its event also says when it yielded.

    ``timer="exact"`` sleeps straight to the moment instead of the built-in
    ``run()``'s last 20 s of one-second polls (each logged), which by design
    wakes up to a second after the moment.
    """

    def __init__(self, moment, index=0, step=0.0, timer={timer!r}, **kwargs):
        self.index, self.step, self.timer = int(index), float(step), timer
        base = datetime.fromisoformat(moment) if isinstance(moment, str) else moment
        super().__init__(base + timedelta(seconds=self.index * self.step), **kwargs)

    def serialize(self):
        return ("{dag_id}.StampedDateTimeTrigger",
                {{"moment": self.moment - timedelta(seconds=self.index * self.step),
                  "index": self.index, "step": self.step, "timer": self.timer}})

    async def run(self):
        if self.timer == "exact":
            due = self.moment.timestamp()
            while (left := due - time.time()) > 0:
                await asyncio.sleep(left)
            yield TriggerEvent({{"due": due, "yielded": time.time()}})
            return
        async for _ in super().run():
            yield TriggerEvent({{"due": self.moment.timestamp(), "yielded": time.time()}})
            return


class Sleeper(BaseOperator):
    start_trigger_args = StartTriggerArgs(
        trigger_cls={trigger_cls!r},
        trigger_kwargs={trigger_kwargs!r},
        next_method="execute_complete")
    start_from_trigger = True

    def __init__(self, *, slot=0, **kwargs):
        super().__init__(**kwargs)

    def execute_complete(self, context, event=None):
        return None


@dag(dag_id="{dag_id}", schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def {dag_id}():
    Sleeper.partial(task_id="sleep").expand(slot=list(range({n})))


{dag_id}()
'''

#: ``--timer``: the trigger class each instance starts with, and its (templated) kwargs
STAMPED_KWARGS = {"moment": "{{ dag_run.conf['due'] }}", "index": "{{ map_index }}",
                  "step": "{{ dag_run.conf['step'] }}"}
PROVIDER_KWARGS = {"target_time": "{{ (macros.datetime.fromisoformat(dag_run.conf['due']) + "
                                  "macros.timedelta(seconds=map_index * dag_run.conf['step']))"
                                  ".isoformat() }}"}


def dag_source(n: int, timer: str) -> str:
    if timer == "provider":
        cls, kwargs = "airflow.providers.standard.triggers.temporal.DateTimeTrigger", PROVIDER_KWARGS
    else:
        cls, kwargs = f"{DAG_ID}.StampedDateTimeTrigger", STAMPED_KWARGS
    return DAG_SOURCE.format(n=n, dag_id=DAG_ID, timer=timer, trigger_cls=cls,
                             trigger_kwargs=kwargs)


EVENTS_SQL = """
SELECT map_index, next_kwargs FROM task_instance
 WHERE task_id = 'sleep' AND state IS DISTINCT FROM 'deferred' AND next_kwargs IS NOT NULL
"""


# --- the triggerer's memory ----------------------------------------------------------

def proc_status_kib(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> tuple[float, float]:
    """``(busy, total)`` CPU seconds of the whole machine, all CPUs (``/proc/stat``)."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK"), sum(ticks) / os.sysconf("SC_CLK_TCK")


def cpu_snapshot(cluster: Cluster) -> dict[str, float]:
    busy, total = machine_busy_s()
    return {"time": time.time(), "machine_busy": busy, "machine_total": total,
            **{d: cpu_s(cluster.procs[d].pid) for d in ("scheduler", "triggerer")}}


def cpu_use(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Percent of one CPU each daemon used between the snapshots; the machine's busy %."""
    wall = after["time"] - before["time"]
    use = {d: 100 * (after[d] - before[d]) / wall for d in ("scheduler", "triggerer")}
    use["machine"] = 100 * ((after["machine_busy"] - before["machine_busy"])
                            / (after["machine_total"] - before["machine_total"]))
    return use


XACT_SQL = "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"


async def commits(cluster: Cluster) -> int:
    """Transactions committed in the benchmark's database (all clients, this one included)."""
    conn = await cluster.connect()
    try:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        return await conn.fetchval(XACT_SQL)
    finally:
        await conn.close()


async def sample_rss(pid: int, samples: list[tuple[float, int]]) -> None:
    """Append ``(unix time, VmRSS KiB)`` every ``SAMPLE_S`` until cancelled."""
    while True:
        kib = proc_status_kib(pid, "VmRSS")
        if kib is not None:
            samples.append((time.time(), kib))
        await anyio.sleep(SAMPLE_S)


# --- one run ---------------------------------------------------------------------------

class LogTail:
    """A daemon's JSON log read on from where the last read stopped.

    At 100,000 triggers the log holds hundreds of thousands of lines; re-reading it
    all every 100 ms would take the CPU the triggerer is being measured on.
    """

    def __init__(self, cluster: Cluster, daemon: str) -> None:
        self.cluster, self.daemon = cluster, daemon
        self.path = cluster.root / f"{daemon}.log"
        self.offset = 0

    def lines(self) -> list[bytes]:
        """Whole lines written since the last call."""
        if not self.path.exists():
            return []
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        cut = data.rfind(b"\n") + 1
        self.offset += cut
        return data[:cut].splitlines()

    def check_alive(self) -> None:
        if self.cluster.procs[self.daemon].poll() is not None:
            raise RuntimeError(f"the {self.daemon} exited ({self.cluster.procs[self.daemon].returncode})")

    async def wait_event(self, event: str, done, timeout_s: float, what: str) -> dict:
        """The first new ``event`` line for which ``done(entry)``; fail after ``timeout_s``."""
        needle = f'"event": "{event}"'.encode()
        deadline = time.monotonic() + timeout_s
        while True:
            for line in self.lines():
                if needle in line:
                    entry = json.loads(line)
                    entry["ts"] = datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00"))
                    if done(entry):
                        return entry
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout_s:g}s waiting for {what}")
            self.check_alive()
            await anyio.sleep(0.1)

    async def wait_count(self, event: str, count: int, timeout_s: float) -> None:
        """Until ``count`` more ``event`` lines are written: a byte count, cheap enough not
        to skew the drain."""
        needle = f'"event": "{event}"'.encode()
        deadline = time.monotonic() + timeout_s
        seen = 0
        while True:
            seen += sum(needle in line for line in self.lines())
            if seen >= count:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout_s:g}s waiting for {count} {event} "
                                   f"lines ({seen} seen)")
            self.check_alive()
            await anyio.sleep(0.1)


async def one_run(args: argparse.Namespace, cluster: Cluster) -> dict:
    n = args.triggers
    step = args.spread / n
    cluster.write_dag(f"{DAG_ID}.py", dag_source(n, args.timer))
    cluster.start("scheduler")
    triggerer = cluster.start("triggerer")
    tail = LogTail(cluster, "triggerer")
    await cluster.wait_dag(DAG_ID, timeout=60)
    await tail.wait_event("triggerer_ready", bool, 60, "the triggerer")
    idle_kib = proc_status_kib(triggerer.pid, "VmRSS")
    samples: list[tuple[float, int]] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(sample_rss, triggerer.pid, samples)
        triggered = time.time()
        due = datetime.now(UTC) + timedelta(seconds=args.lead)
        await cluster.trigger(DAG_ID, conf={"due": due.isoformat(), "step": step})
        claimed = await tail.wait_event(
            "triggers_claimed", lambda e: e["running"] >= n, args.lead, f"{n} running triggers")
        all_running = claimed["ts"].timestamp()
        if all_running >= due.timestamp():
            raise RuntimeError(f"only running all {n} triggers {all_running - due.timestamp():.1f}s "
                               "after the first was due: raise --lead")
        await anyio.sleep(max(0.0, due.timestamp() - time.time()))
        at_due, commits_at_due = cpu_snapshot(cluster), await commits(cluster)
        await tail.wait_count("trigger_fired", n, args.spread + args.timeout)
        drained = cpu_snapshot(cluster)
        await anyio.sleep(STATS_FLUSH_S)  # an idle backend publishes its statistics within 10 s
        drain_commits = await commits(cluster) - commits_at_due
        hwm_kib = proc_status_kib(triggerer.pid, "VmHWM")
        tg.cancel_scope.cancel()
    conn = await cluster.connect()
    try:
        rows = await conn.fetch(EVENTS_SQL)
    finally:
        await conn.close()
    cluster.stop_all()
    fired = log_events(cluster, "triggerer", "trigger_fired")
    blocked = log_events(cluster, "triggerer", "event_loop_blocked")
    result = figures(n, due.timestamp(), step, triggered, all_running, idle_kib, hwm_kib,
                     samples, fired, rows, blocked)
    result["cpu"] = cpu_use(at_due, drained)
    result["commits"] = drain_commits
    result["gc"] = full_passes(log_events(cluster, "triggerer", "gc_collection"), due.timestamp())
    checks = log_events(cluster, "triggerer", "gc_leak_checked")
    result["gc"]["last_check"] = checks[-1] if checks else None
    if args.keep_log:
        shutil.copy(cluster.root / "triggerer.log", args.keep_log)
    return result


def full_passes(lines: list[dict], due: float) -> dict:
    """The triggerer's full collections (``gc_collection`` lines of generation 2): how many
    and the longest before the due time (claiming), and each one during the drain."""
    full = [(e["started_at"] - due, e["took_ms"]) for e in lines if e["generation"] == 2]
    setup = [ms for at, ms in full if at < 0]
    return {"setup_count": len(setup), "setup_longest_ms": max(setup, default=0.0),
            "drain": [(round(at, 1), ms) for at, ms in full if at >= 0]}


def figures(n: int, due: float, step: float, triggered: float, all_running: float,
            idle_kib: int | None, hwm_kib: int | None, samples: list, fired: list[dict],
            rows: list, blocked: list[dict]) -> dict:
    """Map index ``i`` was due at ``due + i * step``; lags are per trigger, from its own due time."""
    events = {r["map_index"]: r["next_kwargs"]["event"] for r in rows}
    stamped = [(i, e) for i, e in events.items() if isinstance(e, dict) and "yielded" in e]
    wrong = [i for i, e in stamped if abs(e["due"] - (due + i * step)) > 1e-3]
    if len(events) != n or wrong:
        raise RuntimeError(f"expected {n} fired events, each due at its own time; found "
                           f"{len(events)}, {len(wrong)} of them due at another time")
    # the provider's own class yields its moment only: no yield lag for it
    yield_ms = [(e["yielded"] - e["due"]) * 1000 for _, e in stamped] or [math.nan]
    fire_ms = [(f["ts"].timestamp() - (due + f["map_index"] * step)) * 1000 for f in fired]
    running = [kib for t, kib in samples if all_running <= t < due]
    return {
        "yield": summary(yield_ms), "fire": summary(fire_ms),
        "idle_mib": (idle_kib or 0) / 1024, "peak_mib": max(running, default=0) / 1024,
        "hwm_mib": (hwm_kib or 0) / 1024,
        "per_trigger_kib": (max(running, default=0) - (idle_kib or 0)) / n,
        "setup_s": all_running - triggered,
        "blocked": [(round(b["ts"].timestamp() - due, 2), b["blocked_s"]) for b in blocked],
    }


# --- reporting -----------------------------------------------------------------------

def render(results: list[dict], args: argparse.Namespace, info: dict[str, str],
           settings: dict[str, str], services: str, started: datetime) -> str:
    med = lambda *path: statistics.median(_get(r, path) for r in results)  # noqa: E731
    rows = "\n".join(
        f"| {i} | {r['idle_mib']:.1f} | {r['peak_mib']:.1f} | {r['hwm_mib']:.1f} | "
        f"{r['per_trigger_kib']:.2f} | {r['yield']['p50']:.1f} | {r['yield']['p99']:.1f} | "
        f"{r['fire']['p50']:.1f} | {r['fire']['p99']:.1f} | {r['fire']['max']:.1f} | "
        f"{r['setup_s']:.1f} | {r['cpu']['triggerer']:.0f} / {r['cpu']['scheduler']:.0f} / "
        f"{r['cpu']['machine']:.0f} | {r['commits']} ({r['commits'] / args.triggers:.2f}) | "
        f"{_blocked(r['blocked'])} | {_full_passes(r['gc'])} | {_last_check(r['gc'])} |"
        for i, r in enumerate(results, 1))
    return textwrap.dedent(f"""
        ## Triggers: {started:%Y-%m-%d %H:%M} UTC, commit {info['commit']}

        - machine: {info['uname']}, {info['nproc']} CPUs ({info['cpu']}), {info['memory']} RAM
        - load average (1 min) before/after: {info['load']} / {load_average()}
        - Python {info['python']}; services: {services}
        - scenario: `python -m bench triggers`: one mapped `start_from_trigger` operator expanded
          {args.triggers} times, each instance a `DateTimeTrigger` ({_timer(args)});
          {_mode(args)}; {len(results)} runs, each with a fresh database,
          1 scheduler and 1 triggerer (no worker: nothing runs on one before the triggers fire)
        - settings: defaults of `shared/config.py` except triggerer_capacity={settings['triggerer_capacity']},
          max_map_length={settings['max_map_length']} (triggerer_heartbeat_s={settings['triggerer_heartbeat_s']},
          batch_size={settings['batch_size']}); overrides: {settings['overrides']}

        **Triggerer RSS with all {args.triggers} triggers sleeping: {med('peak_mib'):.1f} MiB**
        (idle {med('idle_mib'):.1f} MiB, so about {med('per_trigger_kib'):.2f} KiB per trigger;
        lifetime peak `VmHWM` {med('hwm_mib'):.1f} MiB). **Fire lag (trigger recorded as fired
        in the database, minus due time): p50 {med('fire', 'p50'):.1f} ms, p99 {med('fire', 'p99'):.1f} ms**;
        the last of the {args.triggers} fired {med('fire', 'max'):.1f} ms after the due time. Yield lag (the
        trigger's `run()` yielding, minus due time): p50 {med('yield', 'p50'):.1f} ms,
        p99 {med('yield', 'p99'):.1f} ms. Medians of the {len(results)} runs; nearest-rank percentiles
        over the {args.triggers} triggers of each run.

        CPU during the drain (due time to last fire): triggerer / scheduler in % of one CPU,
        machine busy in % of all {info['nproc']} CPUs. `event_loop_blocked`: the triggerer's own
        watchdog warnings, as (seconds relative to the due time, seconds blocked). Commits: transactions
        committed in the benchmark's database from the due time to 11 s after the last fire
        (`pg_stat_database.xact_commit`, every client: triggerer, scheduler, this benchmark).
        Full collections: the triggerer's `gc_collection` lines of generation 2, before the due
        time (count, longest) and during the drain (seconds relative to the due time, ms).
        Last leak check: the triggerer's last `gc_leak_checked` line, frozen objects / those
        the running triggers do not explain (its base: what was frozen at start, Airflow's imports).

        | run | idle RSS (MiB) | RSS, all sleeping (MiB) | VmHWM (MiB) | KiB per trigger | yield lag p50 (ms) | yield lag p99 (ms) | fire lag p50 (ms) | fire lag p99 (ms) | last fire (ms) | trigger -> all running (s) | CPU % triggerer / scheduler / machine | commits (per trigger) | `event_loop_blocked` | full collections: claiming; drain | last leak check |
        |----:|----:|----:|----:|----:|----:|----:|----:|----:|----:|----:|----:|----:|----|----|----|
        """) + rows + "\n"


def _mode(args: argparse.Namespace) -> str:
    if args.spread == 0:
        return (f"mode **all at once**: every trigger due at the same moment, {args.lead:g} s "
                "after the run is triggered")
    return (f"mode **spread {args.spread:g} s**: due times spread evenly over {args.spread:g} s "
            f"from {args.lead:g} s after the run is triggered "
            f"({args.triggers / args.spread:,.0f} falling due per second); lags are each "
            "trigger's from its own due time")


def _timer(args: argparse.Namespace) -> str:
    if args.timer == "exact":
        return ("timer `exact`: a subclass whose `run()` sleeps straight to its moment and "
                "stamps its event with the time it yields")
    if args.timer == "provider":
        return ("timer `provider`: the provider's class itself, as `DateTimeSensorAsync` "
                "defers, kwargs `target_time`; its `run()` polls once a second (and logs each "
                "poll) in its last 20 s, so it yields up to 1 s after its moment by design; "
                "its event carries no yield time")
    return ("timer `stamped`: a subclass calling the provider's `run()` (polls once a second "
            "in its last 20 s, so up to 1 s late by design) and stamping its event with the "
            "time it yields")


def _blocked(warnings: list[tuple[float, float]]) -> str:
    return ", ".join(f"({at:+.1f} s, {s:.2f} s)" for at, s in warnings) or "none"


def _full_passes(gc_figures: dict) -> str:
    drain = ", ".join(f"({at:+.1f} s, {ms:.0f} ms)" for at, ms in gc_figures["drain"]) or "none"
    return (f"{gc_figures['setup_count']}, longest {gc_figures['setup_longest_ms']:.0f} ms; "
            f"{drain}")


def _last_check(gc_figures: dict) -> str:
    check = gc_figures.get("last_check")
    if check is None:
        return "none"
    return f"{check['frozen']:,} / {check['unexplained']:,} ({check['running']:,} running)"


def _get(value, path):
    for key in path:
        value = value[key]
    return value


# --- the whole benchmark ---------------------------------------------------------------

async def bench(args: argparse.Namespace, root: Path) -> str:
    env = {"SLUICE_TRIGGERER_CAPACITY": str(args.triggers),
           "SLUICE_MAX_MAP_LENGTH": str(max(args.triggers, 1024))}
    info = machine()  # the commit whose code the daemons run
    started = datetime.now(UTC)
    results: list[dict] = []
    for number in range(1, args.runs + 1):
        run_root = root / f"run{number}"
        run_root.mkdir()
        async with bench_cluster(run_root, **env) as (cluster, services):
            shown = settings_used(cluster.env, ("triggerer_capacity", "max_map_length",
                                                "triggerer_heartbeat_s", "batch_size"))
            results.append(await one_run(args, cluster))
        r = results[-1]
        print(f"run {number}/{args.runs}: RSS {r['peak_mib']:.1f} MiB, fire lag p50 "
              f"{r['fire']['p50']:.1f} ms p99 {r['fire']['p99']:.1f} ms, "
              f"last {r['fire']['max']:.1f} ms", file=sys.stderr)
    return render(results, args, info, shown, services, started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench triggers",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--triggers", type=int, default=10_000,
                        help="sleeping triggers (default 10000)")
    parser.add_argument("--runs", type=int, default=3, help="runs, each fresh (default 3)")
    parser.add_argument("--lead", type=float, default=45.0,
                        help="seconds from triggering the run to the due time (default 45)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds after the last due time for every trigger to fire "
                             "(default 600)")
    parser.add_argument("--spread", type=float, default=0.0,
                        help="spread the due times evenly over this many seconds after the lead "
                             "(default 0: all due at the same moment)")
    parser.add_argument("--timer", choices=("stamped", "exact", "provider"), default="stamped",
                        help="stamped: a DateTimeTrigger subclass calling its run() (polls each "
                             "second near the moment), its event stamped with the yield time; "
                             "exact: a subclass sleeping straight to the moment; provider: "
                             "DateTimeTrigger itself, no yield time (default stamped)")
    parser.add_argument("--keep-log", type=Path, default=None,
                        help="copy the (last run's) triggerer log to this file")
    add_output_args(parser)
    args = parser.parse_args(argv)
    if args.runs < 1 or args.triggers < 1 or args.lead <= 0 or args.spread < 0:
        parser.error("need --runs >= 1, --triggers >= 1, --lead > 0 and --spread >= 0")
    return run_scenario(bench, args)

"""What a worker's Task SDK slots cost: its start, their memory, a slot's restart.

The scenario
    A scheduler runs first and parses two DAG files: ``one`` (a single no-op
    ``@task``) and ``wide`` (a no-op ``@task`` mapped 8 ways, one per slot). A
    run of ``one`` is triggered and waits, queued, for a worker. Then the worker
    starts (Task SDK runtime, product defaults: 8 slots). Run with
    ``.venv/bin/python -m bench.sdk_slots``.

What is measured (per run, one fresh cluster each)
    first task    worker process started -> the queued task's ``end_date``
    settled       worker started -> its process tree's CPU stops growing (< 20 ms in 1 s)
    start CPU     CPU seconds of the worker's process tree (worker, fork server, slots,
                  every process they reaped) when settled
    memory        after two ``wide`` runs (every slot has run tries): each process's RSS,
                  PSS and USS (``/proc/<pid>/smaps_rollup``), MiB
    restart       a second ``wide`` run on warm slots, then every slot SIGKILLed while idle
                  and a ``wide`` run again: its duration and the tree's CPU for it;
                  restart CPU per slot = (cold CPU - warm CPU) / slots
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import anyio

from bench.common import add_output_args, bench_cluster, machine, machine_lines, run_scenario
from tests.cluster import Cluster

SLOTS = 8
DAG_SOURCE = '''
from datetime import datetime

from airflow.sdk import dag, task


@dag(dag_id="bench_slots_one", schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def one():
    @task
    def noop():
        pass

    noop()


@dag(dag_id="bench_slots_wide", schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def wide():
    @task
    def noop(x):
        pass

    noop.expand(x=list(range({slots})))


one()
wide()
'''


# --- the worker's process tree ------------------------------------------------------

def children(pid: int) -> list[int]:
    """Live children of ``pid`` (of any of its threads)."""
    found: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            found += [int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
    except OSError:
        pass
    return found


def tree(pid: int) -> list[int]:
    """``pid`` and its live descendants."""
    found, todo = [], [pid]
    while todo:
        each = todo.pop()
        found.append(each)
        todo.extend(children(each))
    return found


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of the tree: each live process's own and what it reaped of its children."""
    total = 0.0
    for each in tree(pid):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return total


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


def role(pid: int, worker_pid: int) -> str:
    if pid == worker_pid:
        return "worker"
    if "worker.sdk_zygote" in cmdline(pid) and _parent(pid) == worker_pid:
        return "fork server"
    if "worker.sdk_slot" in cmdline(pid) or "worker.sdk_zygote" in cmdline(_parent(pid)):
        return "slot"
    return "other"


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
    except OSError:
        return 0


def memory_mib(pid: int) -> dict[str, float]:
    """RSS, PSS and USS (private clean + dirty) of one process, MiB."""
    values = {}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            name, _, rest = line.partition(":")
            values[name] = int(rest.split()[0]) / 1024
    except OSError:
        return {"rss": 0.0, "pss": 0.0, "uss": 0.0}
    return {"rss": values.get("Rss", 0.0), "pss": values.get("Pss", 0.0),
            "uss": values.get("Private_Clean", 0.0) + values.get("Private_Dirty", 0.0)}


def slots_of(worker_pid: int) -> list[int]:
    return [p for p in tree(worker_pid) if role(p, worker_pid) == "slot"]


# --- the steps ----------------------------------------------------------------------

async def settle(pid: int, limit_s: float = 90.0) -> float:
    """Wait until the tree's CPU grows by less than 20 ms in a second; its CPU then."""
    deadline = time.monotonic() + limit_s
    before = tree_cpu_s(pid)
    while time.monotonic() < deadline:
        await anyio.sleep(1.0)
        now = tree_cpu_s(pid)
        if now - before < 0.02:
            return now
        before = now
    raise TimeoutError("the worker's CPU never settled")


async def wide_run(cluster: Cluster, worker_pid: int) -> dict:
    before = tree_cpu_s(worker_pid)
    run_id = await cluster.trigger("bench_slots_wide")
    doc = await cluster.wait_run(run_id, timeout=120)
    assert doc["state"] == "success", doc
    await settle(worker_pid)
    start, end = (datetime.fromisoformat(doc[k]) for k in ("start_date", "end_date"))
    return {"run_s": (end - start).total_seconds(), "cpu_s": tree_cpu_s(worker_pid) - before}


async def one_cluster(root: Path) -> dict:
    async with bench_cluster(root) as (cluster, services):
        cluster.env.pop("AIRFLOW_HOME", None)
        cluster.write_dag("bench_slots.py", DAG_SOURCE.format(slots=SLOTS))
        cluster.start("scheduler")
        run_id = await cluster.trigger("bench_slots_one")
        started = datetime.now(UTC)
        worker = cluster.start("worker", SLUICE_WORKER_CONCURRENCY=str(SLOTS)).pid
        doc = await cluster.wait_run(run_id, timeout=120)
        assert doc["state"] == "success", doc
        first_s = (datetime.fromisoformat(doc["end_date"]) - started).total_seconds()
        start_cpu_s = await settle(worker)
        settled_s = (datetime.now(UTC) - started).total_seconds()
        await wide_run(cluster, worker)  # every slot has imported the DAG file
        warm = await wide_run(cluster, worker)
        memory = {p: (role(p, worker), memory_mib(p)) for p in tree(worker)}
        for slot in slots_of(worker):
            os.kill(slot, signal.SIGKILL)
        cold = await wide_run(cluster, worker)
        return {"services": services, "first_task_s": round(first_s, 3),
                "settled_s": round(settled_s, 1), "start_cpu_s": round(start_cpu_s, 2),
                "memory": memory, "warm": warm, "cold": cold,
                "restart_cpu_s": round((cold["cpu_s"] - warm["cpu_s"]) / SLOTS, 3)}


def _memory_line(memory: dict) -> str:
    by_role: dict[str, list[dict]] = {}
    for name, values in memory.values():
        by_role.setdefault(name, []).append(values)
    parts = []
    for name, values in sorted(by_role.items()):
        n = len(values)
        avg = {k: statistics.mean(v[k] for v in values) for k in ("rss", "pss", "uss")}
        each = "each " if n > 1 else ""
        parts.append(f"{n} {name}: {each}RSS {avg['rss']:.0f} / PSS {avg['pss']:.1f} / "
                     f"USS {avg['uss']:.1f} MiB")
    totals = {k: sum(v[k] for _, v in memory.values()) for k in ("rss", "pss", "uss")}
    parts.append(f"tree total RSS {totals['rss']:.0f} / PSS {totals['pss']:.0f} / "
                 f"USS {totals['uss']:.0f} MiB")
    return "; ".join(parts)


def render(results: list[dict], info: dict) -> str:
    med = lambda key: statistics.median(r[key] for r in results)  # noqa: E731
    rows = "\n".join(
        f"| {i} | {r['first_task_s']:.2f} | {r['settled_s']:.1f} | {r['start_cpu_s']:.2f} | "
        f"{r['warm']['run_s']:.3f} / {r['warm']['cpu_s']:.2f} | "
        f"{r['cold']['run_s']:.3f} / {r['cold']['cpu_s']:.2f} | {r['restart_cpu_s']:.3f} |"
        for i, r in enumerate(results, 1))
    memory = "\n".join(f"- run {i}: {_memory_line(r['memory'])}" for i, r in enumerate(results, 1))
    return (f"\n## SDK slots: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {info['commit']}\n\n"
            + machine_lines(info, results[0]["services"])
            + f"- scenario: `python -m bench.sdk_slots`, {len(results)} fresh clusters; worker with "
              f"{SLOTS} slots started after its first task was queued\n\n"
            f"**Worker start -> first task ended: median {med('first_task_s'):.2f} s; start CPU "
            f"{med('start_cpu_s'):.2f} s; restart CPU per slot {med('restart_cpu_s'):.3f} s.**\n\n"
            "| run | start -> first task ended (s) | start -> CPU settled (s) | start CPU (s) | "
            "warm 8-way run (s / CPU s) | after killing every slot (s / CPU s) | "
            "restart CPU per slot (s) |\n|----:|----:|----:|----:|----:|----:|----:|\n"
            f"{rows}\n\nMemory after the warm run:\n{memory}\n")


async def bench(args: argparse.Namespace, root: Path) -> str:
    info = machine()
    results = []
    for i in range(args.runs):
        scratch = root / f"run{i}"
        scratch.mkdir()
        results.append(await one_cluster(scratch))
        print(json.dumps({k: v for k, v in results[-1].items() if k != "memory"}), file=sys.stderr)
    return render(results, info)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    add_output_args(parser)
    return run_scenario(bench, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

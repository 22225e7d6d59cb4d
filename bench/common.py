"""What every scenario shares: a cluster of real daemons in a database of its own,
the daemons' JSON logs, percentiles, and where the figures came from (machine,
commit, load, settings) for ``bench/results.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import asyncpg
import redis.asyncio as aioredis

from shared.config import Settings
from shared.db import migrate_url
from tests.cluster import FAST, Cluster
from tests.services import resolve_services

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results.md"
DAEMONS = ("scheduler", "triggerer", "worker")

HEADER = """# Sluice benchmarks

Each scenario in `bench/` starts the real daemons as separate processes (in a
database and stream prefix of its own, dropped afterwards) and appends a
section here per run, with the machine, date, commit, load average and
settings the figures came from:

| command | scenario | module |
|---|---|---|
| `make bench`, `python -m bench` or `python -m bench hops` | hop latency of a 20-task chain, 7 runs | `bench/hops.py` |
| `python -m bench triggers` | 10,000 sleeping triggers in one triggerer, 3 fresh runs: RSS and fire lag | `bench/triggers.py` |
| `python -m bench deferral` | 600 deferrals (3 runs of 200 in a row): trigger yields -> `next_method` starts | `bench/deferral.py` |
| `python -m bench mapping` | `total(noop.expand(x=gen()))` over 1,000 elements (`--instances`), 3 runs: end to end, instances/s, expansion, CPU per task per process | `bench/mapping.py` |
| `python -m bench.sdk_deferrals` | 200 mapped deferrals of 5 s (`TimeDeltaTrigger`), 3 fresh clusters: end to end, fire and resume lag | `bench/sdk_deferrals.py` |
| `python -m bench.sdk_slots` | a worker's start, its slots' memory (RSS/PSS/USS) and restart | `bench/sdk_slots.py` |
| `python -m bench.slot_cost` | one mapped no-op try's CPU in a slot, the Execution API and PostgreSQL (A/B, cProfile) | `bench/slot_cost.py` |
| `python -m bench all` | the four, one after the other | |

Run them with `.venv/bin/python`; `python -m bench SCENARIO --help` lists a
scenario's options (`--no-write` prints without appending here). Each module's
docstring says exactly what is measured; in short:

- **Hop latency** is the gap between one task's end and the next task's start in a
  chain (`task_instance` timestamps). Airflow 3 needs about 1 s per hop; Sluice's
  target is a p50 of 5 ms.
- **Triggers**: the triggerer's `VmRSS` (`/proc/<pid>/status`, sampled every 50 ms)
  while all 10,000 sleep, and each trigger's **fire lag**: the triggerer's
  `trigger_fired` log line (written right after the commit that moves the task
  instance `deferred -> scheduled`) minus the due time. The **yield lag** (the
  trigger's `run()` yielding, stamped into the event payload, minus the due time)
  separates the event loop's lateness from the database write.
- **Deferral round trip**: the trigger yielding its event (triggerer clock, in the
  payload) to the first line of `next_method` in the worker's slot process (its
  clock, pushed as an XCom); the stages between come from the triggerer's
  `trigger_fired` and the worker's `task_started` JSON log lines. No task-instance
  column records either end, hence the stamps; everything runs on one machine, so
  on one clock.
"""


# --- figures -----------------------------------------------------------------------

def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile: the smallest value with at least ``p`` % of values <= it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": percentile(values, 50), "p99": percentile(values, 99),
            "min": min(values), "max": max(values), "mean": statistics.fmean(values)}


def median_of(runs: Iterable[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


# --- the task runtime and the processes --------------------------------------------

def task_sdk() -> str:
    """The module benchmark DAG files import ``dag`` and ``task`` from: Airflow's Task SDK,
    the only runtime the daemons run tries on."""
    return "airflow.sdk"


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (its main thread's; daemons fork from it)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def own_cpu_s(pid: int) -> float:
    """User + system CPU seconds of the process itself (no children)."""
    try:
        fields = _stat(pid)
    except OSError:  # gone meanwhile
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    """Resident memory of one process (``VmRSS``), MiB; 0 when it is gone."""
    try:
        line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines()
                    if x.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0.0
    return int(line.split()[1]) / 1024


def daemon_rss(cluster: Cluster) -> dict[str, dict[str, float]]:
    """Each daemon's own RSS and the sum of its live children's (slots, parse child), MiB."""
    return {name: {"own": rss_mib(proc.pid),
                   "children": sum(rss_mib(c) for c in children(proc.pid)),
                   "n_children": len(children(proc.pid))}
            for name, proc in cluster.procs.items()}


def render_rss(rss: dict[str, dict[str, float]]) -> str:
    return ", ".join(f"{name} {r['own']:.0f} MiB" + (
        f" + {r['n_children']:.0f} children {r['children']:.0f} MiB" if r["n_children"] else "")
        for name, r in rss.items())


# --- the environment the figures came from --------------------------------------------

def _sh(*args: str) -> str:
    try:
        return subprocess.run(args, cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def load_average() -> str:
    """1-minute load average: other work on the machine skews latency figures."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "unknown"


def machine() -> dict[str, str]:
    cpu, mem = "unknown", "unknown"
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in
                    Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith(("model name", "Model", "Hardware"))), cpu)
        kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:"))
        mem = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    commit = _sh("git", "rev-parse", "--short", "HEAD") or "unknown"
    if _sh("git", "status", "--porcelain"):
        commit += " (dirty)"
    return {"uname": _sh("uname", "-srm") or platform.platform(), "nproc": str(os.cpu_count()),
            "memory": mem, "cpu": cpu, "commit": commit,
            "python": platform.python_version(), "load": load_average()}


def machine_lines(info: dict[str, str], services: str) -> str:
    """The bullet lines every section starts with."""
    return (f"- machine: {info['uname']}, {info['nproc']} CPUs ({info['cpu']}), "
            f"{info['memory']} RAM\n"
            f"- load average (1 min) before/after: {info['load']} / {load_average()}\n"
            f"- Python {info['python']}; services: {services}\n")


def _where(url: str) -> str:
    """``host:port`` of a service URL, never its credentials."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or ''}".rstrip(":")


PLUMBING = {"SLUICE_DATABASE_URL", "SLUICE_REDIS_URL", "SLUICE_STREAM_PREFIX",
            "SLUICE_DAGS_FOLDER", "SLUICE_HOME", "SLUICE_DAGS_ARE_PAUSED_AT_CREATION"}


def settings_used(env: dict[str, str], fields: Iterable[str]) -> dict[str, str]:
    """Effective values of ``fields`` and the SLUICE_ overrides beyond the plumbing."""
    overrides = {k: v for k, v in env.items() if k.startswith("SLUICE_") and k not in PLUMBING}
    effective = Settings(**{k.removeprefix("SLUICE_").lower(): v for k, v in overrides.items()})
    shown = {k: str(getattr(effective, k)) for k in fields}
    shown["overrides"] = ", ".join(f"{k}={v}" for k, v in sorted(overrides.items())) or "none"
    return shown


def write_results(section: str, path: Path) -> None:
    text = path.read_text() if path.exists() else HEADER
    path.write_text(text.rstrip("\n") + "\n" + section)


def add_output_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="markdown file the section is appended to")
    parser.add_argument("--no-write", action="store_true", help="print only")


def run_scenario(bench: Callable[[argparse.Namespace, Path], Awaitable[str]],
                 args: argparse.Namespace) -> int:
    """Run ``bench(args, scratch_dir)``, print its section and append it to the results."""
    root = Path(tempfile.mkdtemp(prefix="sluice-bench-"))
    try:
        section = anyio.run(bench, args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(section)
    if not args.no_write:
        write_results(section, args.results)
        print(f"appended to {args.results}", file=sys.stderr)
    return 0


# --- the daemons' JSON logs ----------------------------------------------------------

def log_events(cluster: Cluster, daemon: str, event: str) -> list[dict]:
    """Every JSON line of ``daemon``'s log whose ``event`` is ``event``, ``ts`` parsed."""
    path = cluster.root / f"{daemon}.log"
    found = []
    for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
        if f'"{event}"' not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == event:
            entry["ts"] = datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00"))
            found.append(entry)
    return found


async def wait_ready(cluster: Cluster, timeout_s: float = 120.0) -> None:
    """Until every started daemon has logged that it is ready (``<daemon>_ready``; a worker
    does once its slots are forked), so no figure includes a daemon's own start."""
    from tests.cluster import wait_for

    async def ready() -> bool:
        return all(log_events(cluster, name, f"{daemon_of(name)}_ready")
                   for name in cluster.procs)

    await wait_for(ready, timeout_s, "the daemons to be ready")


def daemon_of(name: str) -> str:
    """``worker`` for ``worker2``: the daemon a process started as ``name`` runs."""
    return next((d for d in DAEMONS if name.startswith(d)), name)


def dump_logs(cluster: Cluster, lines: int = 20) -> None:
    for daemon in DAEMONS:
        if (cluster.root / f"{daemon}.log").exists():
            tail = cluster.log(daemon).splitlines()[-lines:]
            print(f"--- {daemon}.log (last lines)\n" + "\n".join(tail), file=sys.stderr)


# --- a cluster in a database of its own ------------------------------------------------

async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _drop_streams(redis_url: str, prefix: str) -> None:
    client = aioredis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@asynccontextmanager
async def bench_cluster(root: Path, *, defaults: bool = True,
                        **env: str) -> AsyncIterator[tuple[Cluster, str]]:
    """A :class:`Cluster` (daemons not started) and a description of its services.

    ``defaults`` drops the test suite's fast-failure tuning so the daemons run
    with the product's defaults; ``env`` adds SLUICE_ settings for the scenario.
    The database and the Redis keys of the stream prefix are dropped afterwards.
    """
    admin_url, redis_url, stop_services = resolve_services(root)
    name = f"sluice_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    db_url = f"{admin_url.rpartition('/')[0]}/{name}"
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    cluster = None
    try:
        await _admin(admin_url, f'CREATE DATABASE "{name}"')
        await migrate_url(db_url)
        dags = root / "dags"
        dags.mkdir(exist_ok=True)
        cluster = Cluster(root, db_url=db_url, redis_url=redis_url, prefix=prefix,
                          dags_folder=dags)
        if defaults:
            cluster.env = {k: v for k, v in cluster.env.items() if k not in FAST}
        cluster.env["SLUICE_DAGS_ARE_PAUSED_AT_CREATION"] = "false"  # scenarios trigger at once
        cluster.env.update(env)
        yield cluster, f"PostgreSQL {_where(admin_url)}, Redis {_where(redis_url)}"
    except BaseException:
        if cluster is not None:
            dump_logs(cluster)
        raise
    finally:
        if cluster is not None:
            cluster.stop_all()
        await _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await _drop_streams(redis_url, prefix)
        stop_services()

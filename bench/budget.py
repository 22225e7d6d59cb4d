"""A per-instance CPU budget of a mapped no-op: where each millisecond goes, by process and stage.

The scenario
    The mapping benchmark's DAG (``total(noop.expand(x=gen()))``, ``--instances``
    elements, default 1,000; ``bench/mapping.py``) run ``--runs`` times (default 1)
    against real scheduler, triggerer and worker processes with the product's
    defaults, on a PostgreSQL server and a Redis (Valkey) server started for this
    benchmark alone (``shared.embedded``, unless ``--shared-services``), so that
    every CPU second of the servers, background processes included, is this
    benchmark's.

What is measured, from the trigger to the run's success (``/proc``, user + system)
    scheduler        the scheduler with its children (its DAG parse child);
    triggerer        the triggerer with its children;
    worker process   the worker's own process: its loop (claims, finishes, heartbeats) and
                     the Execution API it serves to its slots;
    slots            the worker's children: the fork server and the slot processes (the
                     Task SDK's task runner, the task body, the SDK's client);
    PostgreSQL       the whole server (postmaster with every backend, alive or reaped, and
                     its background processes), and each backend's share by the daemon
                     holding the other end of its connection (``pg_stat_activity.client_port``
                     matched to the daemons' sockets in ``/proc``);
    Redis            the whole server;
    machine          ``/proc/stat``, every process on both CPUs (other work included).
    Per instance = / ``--instances`` (``gen`` and ``total`` are charged to the mapped
    instances: the budget is the run's). Also per instance: PostgreSQL commits and rows
    written (``pg_stat_database``) and Redis commands by name (``INFO commandstats``).

``--profile``: afterwards, a fresh cluster runs one more run with the scheduler and the
worker under ``cProfile`` (``bench.profiled``, CPU clock); each process's own time is
split by stage (the code a function belongs to, ``STAGES``) and the fractions applied
to the unprofiled CPU. ``--slot-profile``: ``bench.slot_cost --profile`` (one slot,
its tries under ``cProfile``) split the same way, for the slot's stages.
"""

from __future__ import annotations

import argparse
import os
import pstats
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import anyio
import asyncpg
import redis.asyncio as aioredis

from bench.common import (
    add_output_args,
    bench_cluster,
    load_average,
    machine,
    own_cpu_s,
    run_scenario,
    task_sdk,
    wait_ready,
)
from bench.mapping import DAG_ID, DAG_SOURCE, RUN_SQL, tree_cpu_s, wait_finished
from bench.triggers import machine_busy_s
from tests.cluster import Cluster

# A function's stage: the first pattern matching "<file>:<function>" (cProfile names C
# functions "~:<method 'x' of 'y' objects>", hence the names as well as the paths).
STAGES: dict[str, list[tuple[str, str]]] = {
    "scheduler": [
        (r"asyncpg", "PostgreSQL client (asyncpg)"),
        (r"redis|shared/bus\.py|shared/messages\.py", "Redis client, messages"),
        (r"scheduler/(decide|limits|trigger_rule|setups|groups|past)\.py|shared/trigger_rule",
         "deciding (trigger rules, limits)"),
        (r"scheduler/expansion\.py", "expansion"),
        (r"scheduler/runs\.py", "runs"),
        (r"scheduler/", "scheduler loop, other"),
        (r"json|pydantic|shared/serde|shared/serialization|msgspec|orjson", "JSON, validation"),
        (r"logging|structlog", "logging"),
        (r"asyncio|uvloop|anyio|selectors|socket", "event loop"),
    ],
    "worker": [
        (r"asyncpg", "PostgreSQL client (asyncpg)"),
        (r"redis|shared/bus\.py|shared/messages\.py", "Redis client, messages"),
        (r"worker/execution_api/", "Execution API handlers"),
        (r"uvicorn|h11|httptools|starlette|fastapi", "HTTP serving (uvicorn, FastAPI)"),
        (r"worker/sdk_slots\.py|worker/sdk_zygote\.py", "slot management"),
        (r"worker/", "worker loop, other"),
        (r"json|pydantic|shared/serde|shared/serialization|msgspec|orjson", "JSON, validation"),
        (r"logging|structlog", "logging"),
        (r"jwt|cryptography|hmac|hashlib", "tokens"),
        (r"asyncio|uvloop|anyio|selectors|socket", "event loop"),
    ],
    "slot": [
        (r"worker/sdk_transport\.py|httpx|httpcore|h11|airflow/sdk/api/client\.py|socket|ssl",
         "Execution API client (SDK client, transport)"),
        (r"masker|secrets_masker|redact", "secret masking"),
        (r"logging|structlog|airflow/sdk/log", "logging"),
        (r"template|jinja2|render", "templating, rendering"),
        (r"xcom|serde|airflow/sdk/serde", "XCom, serde"),
        (r"expand|mappedoperator|unmap|baseoperator|decorator|apply_defaults|__init__",
         "unmapping, operator"),
        (r"configuration|conf\.|get_hostname|params", "configuration, params"),
        (r"pydantic|json|msgspec", "JSON, validation"),
        (r"task_runner|supervisor|airflow/sdk/execution_time", "task runner, other"),
        (r"worker/", "Sluice slot glue"),
    ],
}
OTHER = "other"
# Entry points whose inclusive (cumulative) time the report shows: they overlap where one
# calls another (a coroutine's time counts per resumption, its awaited callees included).
ENTRIES: dict[str, list[tuple[str, str]]] = {
    "scheduler": [
        (r"scheduler/daemon\.py:_pass$", "a pass (_pass: lock, read, decide, write, commit)"),
        (r"scheduler/daemon\.py:schedule$", "schedule (inside passes)"),
        (r"scheduler/daemon\.py:_read_runs$", "reading runs' instances"),
        (r"scheduler/expansion\.py:", "expansion"),
        (r"scheduler/decide\.py:decide$", "decide"),
        (r"scheduler/daemon\.py:send$", "queue messages sent (send)"),
        (r"scheduler/daemon\.py:_read$", "event stream read"),
        (r"scheduler/daemon\.py:_on_events$", "events handled"),
        (r"scheduler/daemon\.py:(repair|repair_loop)$", "repair loop"),
        (r"scheduler/daemon\.py:(refresh_dags|parse_loop)$", "DAG refresh"),
        (r"asyncpg/connection\.py:_do_execute$", "asyncpg statements (client side)"),
        (r"redis/asyncio/client\.py:execute$", "Redis pipelines (client side)"),
    ],
    "worker": [
        (r"uvicorn/protocols/http/httptools_impl\.py:data_received$", "HTTP request parsing"),
        (r"worker/execution_api/gate\.py:__call__$", "Execution API request (gate, handler, DB)"),
        (r"worker/execution_api/fast\.py:ti_run$", "  ti_run (the try starts)"),
        (r"worker/execution_api/fast\.py:ti_state$", "  ti_state (the try's end state)"),
        (r"worker/execution_api/fast\.py:xcom_(item|slice|head|get)$", "  XCom reads (the mapped argument)"),
        (r"worker/execution_api/fast\.py:xcom_set$", "  XCom write (the return value)"),
        (r"worker/execution_api/fast\.py:ti_rtif$", "  rendered fields"),
        (r"worker/execution_api/fast\.py:ti_heartbeat$", "  heartbeats"),
        (r"worker/daemon\.py:_read$", "queue stream read"),
        (r"worker/daemon\.py:claim$", "claim"),
        (r"worker/daemon\.py:execute$", "execute (a try handed to a slot, awaited)"),
        (r"worker/daemon\.py:finish_sdk$", "finish"),
        (r"worker/daemon\.py:wake$", "wake-ups to the scheduler"),
        (r"worker/daemon\.py:heartbeat$", "heartbeat"),
        (r"asyncpg/connection\.py:_do_execute$", "asyncpg statements (client side)"),
        (r"redis/asyncio/client\.py:execute$", "Redis pipelines (client side)"),
    ],
    "slot": [
        (r"worker/sdk_slot\.py:run$", "a try in the slot (Slot.run)"),
        (r"airflow/sdk/api/client\.py:start$", "  ti_run call (the try starts)"),
        (r"task_runner\.py:_prepare$", "  _prepare: templates rendered, rendered fields sent"),
        (r"mappedoperator\.py:unmap$", "    the mapped operator unmapped (a new operator)"),
        (r"mappedoperator\.py:_expand_mapped_kwargs$", "    the mapped argument's value (XCom read call)"),
        (r"task_runner\.py:_execute_task$", "  _execute_task: the operator's execute"),
        (r":noop$", "    the task body itself"),
        (r"task_runner\.py:_push_xcom_if_needed$", "  XCom push (serde, call)"),
        (r"airflow/sdk/api/client\.py:succeed$", "  success call (the final state)"),
        (r"task_runner\.py:get_template_context$", "  template context"),
        (r"task_runner\.py:finalize$", "  finalize"),
        (r"worker/sdk_transport\.py:request$", "  (across the above) Execution API calls, client side"),
        (r"_shared/logging/structlog\.py:meth$", "  (across the above) log lines, masking included"),
        (r"configuration/parser\.py:get$", "  (across the above) configuration reads"),
    ],
}


# --- CPU of the processes ----------------------------------------------------------------

def server_cpu_s(pid: int | None) -> float:
    return 0.0 if pid is None else tree_cpu_s(pid)


def socket_inodes(pid: int) -> set[str]:
    """Inodes of the sockets a process and its live descendants hold."""
    found: set[str] = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                found.add(target[8:-1])
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return found
    for kid in kids:
        found |= socket_inodes(int(kid))
    return found


def local_ports() -> dict[str, int]:
    """Socket inode -> local TCP port (IPv4 and IPv6)."""
    ports = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            ports[parts[9]] = int(parts[1].rpartition(":")[2], 16)
    return ports


def owners(cluster: Cluster) -> dict[int, str]:
    """Local TCP port -> the daemon holding that socket."""
    ports = local_ports()
    by_port = {}
    for name, proc in cluster.procs.items():
        for inode in socket_inodes(proc.pid):
            if inode in ports:
                by_port[ports[inode]] = name
    by_port.update({port: "benchmark" for port in _own_ports(ports)})
    return by_port


def _own_ports(ports: dict[str, int]) -> list[int]:
    """This process's own sockets (not its children's: the daemons and servers are those)."""
    own = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            own.add(target[8:-1])
    return [ports[i] for i in own if i in ports]


async def backends(conn: asyncpg.Connection, cluster: Cluster) -> dict[int, tuple[str, float]]:
    """Each backend of the benchmark's database: pid -> (owning daemon, CPU seconds)."""
    rows = await conn.fetch("SELECT pid, client_port FROM pg_stat_activity"
                            " WHERE datname = current_database()")
    by_port = owners(cluster)
    return {r["pid"]: (by_port.get(r["client_port"], "unknown"), tree_cpu_s(r["pid"]))
            for r in rows}


async def db_counters(conn: asyncpg.Connection) -> dict[str, int]:
    """Transactions (read-only ones too) and rows written in the benchmark's database; the
    server's WAL records, bytes and flushes (``wal_sync``: durable commits, grouped)."""
    row = await conn.fetchrow("SELECT xact_commit, tup_inserted, tup_updated, tup_deleted"
                              " FROM pg_stat_database WHERE datname = current_database()")
    wal = await conn.fetchrow(  # wal_sync left pg_stat_wal in PostgreSQL 18
        "SELECT wal_records, wal_bytes::bigint AS wal_bytes,"
        " coalesce((to_jsonb(w) ->> 'wal_sync')::bigint, 0) AS wal_sync FROM pg_stat_wal w")
    return {**dict(row), **dict(wal)}


async def redis_commands(url: str) -> dict[str, int]:
    client = aioredis.from_url(url)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


async def snapshot(cluster: Cluster, conn: asyncpg.Connection, servers: dict) -> dict:
    busy, _total = machine_busy_s()
    snap = {"machine": busy, "postgres server": server_cpu_s(servers.get("postgres")),
            "redis server": server_cpu_s(servers.get("redis")),
            "backends": await backends(conn, cluster), "db": await db_counters(conn),
            "redis commands": await redis_commands(cluster.env["SLUICE_REDIS_URL"])}
    for name, proc in cluster.procs.items():
        snap[name] = tree_cpu_s(proc.pid)
        snap[f"{name} own"] = own_cpu_s(proc.pid)
        for thread, cpu in thread_cpu_s(proc.pid).items():
            snap[f"{name} thread {thread}"] = cpu
    return snap


def used(before: dict, after: dict) -> dict[str, float]:
    """CPU seconds between two snapshots, by component; PostgreSQL backends by daemon."""
    out = {k: after[k] - before[k] for k in before
           if isinstance(before[k], float) and k in after}
    out["slots"] = out.pop("worker") - out["worker own"]
    by_owner: dict[str, float] = defaultdict(float)
    for pid, (owner, cpu) in after["backends"].items():
        by_owner[owner] += cpu - before["backends"].get(pid, (owner, 0.0))[1]
    out.update({f"postgres backends: {k}": v for k, v in by_owner.items()})
    out.update({f"db {k}": after["db"][k] - before["db"][k] for k in after["db"]})
    out.update({f"redis {k}": after["redis commands"].get(k, 0) - before["redis commands"].get(k, 0)
                for k in after["redis commands"]})
    return out


async def one_run(cluster: Cluster, servers: dict, timeout_s: float,
                  profiled: tuple[str, ...] = ()) -> dict:
    import signal

    await cluster.wait_dag(DAG_ID)
    conn = await cluster.connect()
    try:
        for daemon in profiled:
            os.kill(cluster.procs[daemon].pid, signal.SIGUSR1)
        before = await snapshot(cluster, conn, servers)
        run_id = await cluster.trigger(DAG_ID)
        await wait_finished(conn, run_id, timeout_s)
        after = await snapshot(cluster, conn, servers)
        for daemon in profiled:
            os.kill(cluster.procs[daemon].pid, signal.SIGUSR2)
        run = await conn.fetchrow(RUN_SQL, run_id)
    finally:
        await conn.close()
    if run["state"] != "success":
        raise RuntimeError(f"run {run_id} ended {run['state']}")
    result = used(before, after)
    result["duration_s"] = (run["end_date"] - run["start_date"]).total_seconds()
    return result


# --- stages (cProfile) -------------------------------------------------------------------

def stages(path: Path, kind: str) -> dict[str, float]:
    """Own (``tottime``) CPU seconds of a profile by stage; a C function's (file ``~``:
    ``isinstance``, a socket's ``send``) goes to the stages of the functions that called it."""
    patterns = [(re.compile(p), stage) for p, stage in STAGES[kind]]

    def stage_of(key: tuple) -> str:
        text = f"{key[0]}:{key[2]}"
        return next((s for p, s in patterns if p.search(text)), OTHER)

    totals: dict[str, float] = defaultdict(float)
    for key, (_cc, _nc, tottime, _ct, callers) in pstats.Stats(
            str(path)).stats.items():  # type: ignore[attr-defined]
        own = stage_of(key)
        if key[0] == "~" and own == OTHER and callers:
            for caller, (_c, _n, tt, _t) in callers.items():
                totals[stage_of(caller)] += tt
        else:
            totals[own] += tottime
    return dict(totals)


def entries(path: Path, kind: str) -> dict[str, tuple[float, int]]:
    """Inclusive CPU seconds and calls of each entry point of ``ENTRIES[kind]``."""
    found: dict[str, tuple[float, int]] = {}
    for pattern, label in ENTRIES.get(kind, []):
        regex = re.compile(pattern)
        cum, calls = 0.0, 0
        for (file, _line, func), (_cc, nc, _tt, ct, _callers) in pstats.Stats(
                str(path)).stats.items():  # type: ignore[attr-defined]
            if regex.search(f"{file}:{func}"):
                cum, calls = cum + ct, calls + nc
        found[label] = (cum, calls)
    return found


def top(path: Path, n: int = 25) -> str:
    """The ``n`` functions with the most cumulative time, as pstats prints them."""
    import io

    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.sort_stats("cumulative").print_stats(n)
    stats.sort_stats("tottime").print_stats(n)
    return out.getvalue()


def start_profiled(cluster: Cluster, daemon: str, out: Path) -> None:
    """Start ``daemon`` under :func:`profiled_child`: it profiles between SIGUSR1 and SIGUSR2."""
    log = open(cluster.root / f"{daemon}.log", "ab")  # noqa: SIM115 - closed with the process
    cluster.procs[daemon] = subprocess.Popen(
        [sys.executable, "-m", "bench.budget", "--profiled-child", str(out), daemon],
        env=cluster.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()


def profiled_child(out: str, module: str) -> None:
    """Run ``python -m module``; its main thread under cProfile (CPU clock of that thread)
    from SIGUSR1 to SIGUSR2, the stats written to ``out`` then: the run's window only,
    without the daemon's start (imports) or its idle time."""
    import cProfile
    import runpy
    import signal
    import time

    profile = cProfile.Profile(time.thread_time)
    signal.signal(signal.SIGUSR1, lambda *_: profile.enable())

    def stop(*_: object) -> None:
        profile.disable()
        profile.dump_stats(out)

    signal.signal(signal.SIGUSR2, stop)
    sys.argv = [module]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of a process, by thread name (summed over equal names)."""
    found: dict[str, float] = defaultdict(float)
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tids:
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        name = "main" if tid == str(pid) else stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat.rpartition(")")[2].split()
        found[name] += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return found


# --- the benchmark -----------------------------------------------------------------------

async def cluster_runs(root: Path, args: argparse.Namespace, servers: dict,
                       profile_dir: Path | None) -> tuple[list[dict], dict]:
    """``args.runs`` runs (one when profiling) in a fresh cluster; the stage splits."""
    env = {"SLUICE_MAX_MAP_LENGTH": str(args.instances)}
    root.mkdir(parents=True, exist_ok=True)
    async with bench_cluster(root, **env) as (cluster, _services):
        cluster.write_dag(f"{DAG_ID}.py", DAG_SOURCE.format(
            sdk=task_sdk(), dag_id=DAG_ID, n=args.instances, max_active_tasks=16))
        for daemon in ("scheduler", "triggerer", "worker"):
            if profile_dir is not None and daemon != "triggerer":
                start_profiled(cluster, daemon, profile_dir / f"{daemon}.prof")
            else:
                cluster.start(daemon)
        await wait_ready(cluster)
        results = []
        for number in range(1 if profile_dir else args.runs):
            results.append(await one_run(cluster, servers, args.timeout,
                                         ("scheduler", "worker") if profile_dir else ()))
            print(f"{'profiled ' if profile_dir else ''}run {number + 1}: "
                  f"{results[-1]['duration_s']:.2f} s", file=sys.stderr)
        split = {}
        if profile_dir is not None:
            await anyio.sleep(3)  # the profiles are written
            for daemon in ("scheduler", "worker"):
                prof = profile_dir / f"{daemon}.prof"
                split[daemon] = stages(prof, daemon)
                split[f"{daemon} entries"] = entries(prof, daemon)
                (profile_dir / f"{daemon}.txt").write_text(top(prof))
    return results, split


def slot_profile(out: Path, tries: int) -> dict[str, float]:
    subprocess.run([sys.executable, "-m", "bench.slot_cost", "--tries", str(tries),
                    "--warmup", "20", "--profile", str(out)], check=True,
                   stdout=subprocess.DEVNULL, env=os.environ.copy())
    (out.with_suffix(".txt")).write_text(top(out, 40))
    return stages(out, "slot"), entries(out, "slot")


def private_services(home: Path) -> tuple[dict, object]:
    """Start PostgreSQL and Valkey for this benchmark alone; point the cluster at them."""
    from urllib.parse import urlsplit

    from shared.embedded import start_embedded

    services = start_embedded(home)
    pids = {s.name: s.pid for s in services.servers}
    os.environ["SLUICE_TEST_DATABASE_URL"] = urlsplit(services.database_url)._replace(
        path="/postgres").geturl()
    os.environ["SLUICE_TEST_REDIS_URL"] = services.redis_url
    return {"postgres": next((v for k, v in pids.items() if "postgres" in k), None),
            "redis": next((v for k, v in pids.items() if "postgres" not in k), None)}, services


async def bench(args: argparse.Namespace, root: Path) -> str:
    info = machine()
    started = datetime.now(UTC)
    servers, services, home = {}, None, None
    if not args.shared_services:
        home = Path(tempfile.mkdtemp(prefix="sluice-budget-svc-"))
        home.chmod(0o711)
        servers, services = private_services(home / "services")
    try:
        results, _ = await cluster_runs(root / "plain", args, servers, None)
        split = {}
        profile_dir = Path(args.profile_dir) if args.profile_dir else None
        if profile_dir is not None:
            profile_dir.mkdir(parents=True, exist_ok=True)
            profiled, split = await cluster_runs(root / "profiled", args, servers, profile_dir)
            split["profiled run"] = profiled[0]
            if args.slot_profile:
                split["slot"], split["slot entries"] = slot_profile(
                    profile_dir / "slot.prof", args.slot_profile)
    finally:
        if services is not None:
            services.stop()
            shutil.rmtree(home, ignore_errors=True)
    return render(results, split, args, info, started)


def render(results: list[dict], split: dict, args: argparse.Namespace, info: dict,
           started: datetime) -> str:
    n = args.instances
    keys = sorted({k for r in results for k in r})
    med = {k: statistics.median(r.get(k, 0) for r in results) for k in keys}
    lines = [f"## Per-instance CPU budget: {started:%Y-%m-%d %H:%M} UTC, commit {info['commit']}",
             "", f"- machine: {info['uname']}, {info['nproc']} CPUs ({info['cpu']}), "
             f"load {info['load']} / {load_average()}",
             f"- {n} mapped instances, {len(results)} run(s): "
             + " / ".join(f"{r['duration_s']:.2f}" for r in results) + " s", "",
             "| component | CPU s (median) | ms per instance |", "|---|---:|---:|"]
    for k in keys:
        if k == "duration_s" or k.startswith(("db ", "redis ")) and not k.startswith("redis server"):
            continue
        lines.append(f"| {k} | {med[k]:.2f} | {1000 * med[k] / n:.2f} |")
    lines += ["", "| counter | per run | per instance |", "|---|---:|---:|"]
    for k in keys:
        if k.startswith(("db ", "redis ")) and not k.startswith("redis server") and med[k]:
            lines.append(f"| {k} | {med[k]:.0f} | {med[k] / n:.2f} |")
    for kind, stage_s in split.items():
        if kind == "profiled run":
            continue
        if kind.endswith(" entries"):
            base = sum(split[kind.removesuffix(" entries")].values()) or 1.0
            lines += ["", f"Entry points of {kind.removesuffix(' entries')} (inclusive, overlapping):",
                      "", "| entry | share of the profiled thread | calls (a coroutine's: resumptions) per instance |",
                      "|---|---:|---:|"]
            per = args.slot_profile if kind == "slot entries" else n
            lines += [f"| {label} | {100 * cum / base:.1f} % | {calls / per:.2f} |"
                      for label, (cum, calls) in stage_s.items()]
            continue
        total = sum(stage_s.values()) or 1.0
        lines += ["", f"Stages of {kind} (cProfile own time, {total:.2f} s):", "",
                  "| stage | share |", "|---|---:|"]
        lines += [f"| {s} | {100 * v / total:.1f} % |"
                  for s, v in sorted(stage_s.items(), key=lambda kv: -kv[1])]
    if "profiled run" in split:
        p = split["profiled run"]
        lines += ["", "Profiled run: " + ", ".join(
            f"{k} {1000 * p[k] / n:.2f} ms" for k in ("scheduler", "worker own", "slots")
            if k in p) + f" per instance, {p['duration_s']:.2f} s"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--profiled-child"]:
        profiled_child(argv[1], argv[2])
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench budget",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--shared-services", action="store_true",
                        help="use the test suite's PostgreSQL and Redis (servers' CPU not measured)")
    parser.add_argument("--profile-dir", help="also a profiled run; profiles written here")
    parser.add_argument("--slot-profile", type=int, default=0, metavar="TRIES",
                        help="with --profile-dir: bench.slot_cost --profile over TRIES tries")
    add_output_args(parser)
    args = parser.parse_args(argv)
    args.no_write = True  # the section is pasted by hand
    return run_scenario(bench, args)


if __name__ == "__main__":
    sys.exit(main())

"""One scheduling pass over a large mapped run, as more and more of its instances finish.

The scenario
    The mapping benchmark's DAG, ``total(noop.expand(x=gen()))``, and one run of it
    whose ``noop`` has ``--instances`` instances (default 10,000 and 100,000), written
    straight into a fresh database: ``gen`` succeeded, the first *f* of ``noop``'s
    instances succeeded, the next 128 (the default pool's slots) are running, the rest
    wait. Then ``--steps`` times: 8 running instances end (as the Execution API writes a
    success) and one pass (``Scheduler.schedule``, this process, real PostgreSQL and
    Redis) decides the run: it queues 8 more. Measured at *f* = 10 %, 50 % and 90 %.

What is measured
    per pass: the median wall time over the steps (PostgreSQL's work included: one
    client, so it waits for every statement), and the means of this process's CPU (the
    scheduler's Python) and of the PostgreSQL backend's CPU (``/proc``, the pool's one
    connection; its 10 ms ticks are why CPU is summed over the steps, not a median).
    A pass whose cost does not grow with the finished instances costs the same at
    10 % and 90 % and at 10,000 and 100,000.

Run it with ``.venv/bin/python -m bench passes``; ``--no-write`` prints only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from bench.common import (
    add_output_args,
    load_average,
    machine,
    own_cpu_s,
    resolve_services,
    run_scenario,
)
from shared.config import Settings

FRACTIONS = (0.1, 0.5, 0.9)
SLOTS = 128  # the default pool's
ENDS_PER_STEP = 8


def dag_spec():
    """The mapping benchmark's DAG as the scheduler stores it."""
    from airflow.sdk import dag, task

    from shared.airflow_spec.walk import validated_spec

    @task
    def gen():
        return []

    @task
    def noop(x):
        return None

    @task
    def total(values):
        return sum(values)

    @dag(dag_id="bench_passes", start_date=datetime(2026, 1, 1), schedule=None,
         max_active_tasks=1_000_000)
    def bench_passes():
        total(noop.expand(x=gen()))

    return validated_spec(bench_passes())


async def fresh_database(admin_url: str) -> tuple[str, str]:
    from shared.db import migrate

    name = f"sluice_bench_passes_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin_url)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    url = admin_url.rpartition("/")[0] + "/" + name
    conn = await asyncpg.connect(url)
    await migrate(conn)
    await conn.close()
    return name, url


async def make_run(db, spec, n: int) -> int:
    await db.execute("INSERT INTO dag (dag_id, fileloc, source_hash, serialized)"
                     " VALUES ($1, 'bench_passes.py', 'h', $2::json)", spec.dag_id,
                     spec.model_dump(mode="json"))
    run_pk = await db.fetchval(
        "INSERT INTO dag_run (dag_id, run_id, run_type, logical_date, state, start_date)"
        " VALUES ($1, 'r1', 'manual', now(), 'running', now()) RETURNING id", spec.dag_id)
    await db.execute("INSERT INTO task_instance (run_pk, task_id, map_index, state, try_number)"
                     " VALUES ($1, 'gen', -1, 'success', 1), ($1, 'total', -1, NULL, 0)", run_pk)
    await db.execute("INSERT INTO task_instance (run_pk, task_id, map_index)"
                     " SELECT $1, 'noop', i FROM generate_series(0, $2 - 1) i", run_pk, n)
    await db.execute("INSERT INTO task_map (run_pk, task_id, length) VALUES ($1, 'gen', $2)",
                     run_pk, n)
    return run_pk


async def set_progress(db, run_pk: int, n: int, fraction: float) -> None:
    done = int(n * fraction)
    await db.execute(
        "UPDATE task_instance SET state = CASE WHEN map_index < $2 THEN 'success'"
        " WHEN map_index < $2 + $3 THEN 'running' END, try_number = 1"
        " WHERE run_pk = $1 AND task_id = 'noop'", run_pk, done, SLOTS)
    await db.execute("VACUUM ANALYZE task_instance")


async def end_some(db, run_pk: int) -> None:
    await db.execute(
        "UPDATE task_instance SET state = 'success', end_date = now() WHERE id IN ("
        " SELECT id FROM task_instance WHERE run_pk = $1 AND task_id = 'noop'"
        " AND state IN ('running', 'queued') ORDER BY map_index LIMIT $2)", run_pk, ENDS_PER_STEP)


async def measure(args, spec, admin_url: str, redis_url: str, n: int) -> list[dict]:
    from scheduler.daemon import Scheduler
    from shared import bus
    from shared.daemon import Lifecycle
    from shared.db import _init_connection, create_pool

    name, url = await fresh_database(admin_url)
    prefix = f"bp{uuid.uuid4().hex[:8]}"
    db = await asyncpg.connect(url)
    await _init_connection(db)  # JSON as the daemons' connections encode it
    pool = await create_pool(url, min_size=1, max_size=1)
    redis = bus.connect(redis_url)
    rows = []
    try:
        run_pk = await make_run(db, spec, n)
        scheduler = Scheduler(Settings(database_url=url, redis_url=redis_url, stream_prefix=prefix,
                                       max_map_length=max(n, 1024)),
                              pool, redis, Lifecycle("bench-passes"))
        scheduler.specs[spec.dag_id] = spec
        async with pool.acquire() as conn:
            backend = await conn.fetchval("SELECT pg_backend_pid()")
        for fraction in FRACTIONS:
            await set_progress(db, run_pk, n, fraction)
            await scheduler.schedule([run_pk])  # the first read of this state: not counted
            walls, cpu, pg = [], 0.0, 0.0  # CPU summed: /proc counts 10 ms ticks
            for _ in range(args.steps):
                await end_some(db, run_pk)
                wall, cpu_at, pg_at = time.perf_counter(), time.process_time(), own_cpu_s(backend)
                await scheduler.schedule([run_pk])
                walls.append((time.perf_counter() - wall) * 1000)
                cpu += time.process_time() - cpu_at
                pg += own_cpu_s(backend) - pg_at
            rows.append({"n": n, "fraction": fraction, "wall": statistics.median(walls),
                         "cpu": cpu * 1000 / args.steps, "pg": pg * 1000 / args.steps})
            print(f"{n} at {fraction:.0%}: pass {rows[-1]['wall']:.2f} ms wall,"
                  f" {rows[-1]['cpu']:.2f} ms scheduler CPU, {rows[-1]['pg']:.2f} ms PostgreSQL CPU",
                  file=sys.stderr)
    finally:
        await db.close()
        await pool.close()
        keys = [k async for k in redis.scan_iter(match=f"{prefix}*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
        conn = await asyncpg.connect(admin_url)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()
    return rows


async def bench(args, root: Path) -> str:
    from shared.airflow_spec.loading import use_airflow_home

    admin_url, redis_url, stop_services = resolve_services(root)
    use_airflow_home(str(root / "home"))
    spec = dag_spec()
    load_before = load_average()
    rows = []
    try:
        for n in args.instances:
            rows += await measure(args, spec, admin_url, redis_url, n)
    finally:
        stop_services()
    info = machine()
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## Scheduling passes over a large mapped run: {when}, commit {info['commit']}",
        "",
        f"- machine: {info['uname']}, {info['nproc']} CPUs ({info['cpu']}), {info['memory']} RAM",
        f"- load average (1 min) before/after: {load_before} / {load_average()}",
        f"- scenario: `python -m bench passes` (`bench/passes.py`): a run of"
        f" `total(noop.expand(x=gen()))`, {SLOTS} instances running; per step"
        f" {ENDS_PER_STEP} end and one pass decides the run (queues {ENDS_PER_STEP});"
        f" {args.steps} steps: median wall, mean CPU",
        "",
        "| instances | finished | pass wall (ms) | scheduler CPU (ms) | PostgreSQL CPU (ms) |",
        "|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {r['n']:,} | {r['fraction']:.0%} | {r['wall']:.2f} | {r['cpu']:.2f} | {r['pg']:.2f} |"
              for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench passes", description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--steps", type=int, default=30)
    add_output_args(parser)
    run_scenario(bench, parser.parse_args(argv))


if __name__ == "__main__":
    main()

"""What the Execution API costs a no-op task: its three calls (PATCH run, PUT rtif,
PATCH state), timed one by one through the SDK's client over keep-alive, with the
server's CPU read from /proc. Figures are printed (``-s``) for the bench notes.
"""

from __future__ import annotations

import os
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

from airflow.sdk.api.client import BearerAuth, Client

from tests.sdk.test_execution_api import (  # noqa: F401 - the module's fixtures
    SECRET,
    TTL_S,
    api_db,
    api_home,
    db,
    prefix,
    seed,
    server,
)
from worker.execution_api.tokens import mint

WARMUP, MEASURED = 20, 300


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_no_op(client: Client, ti, timings: dict[str, list[float]] | None) -> None:
    """The three calls a no-op task makes, as the SDK's supervisor makes them."""
    client.auth = BearerAuth(mint(ti, SECRET.encode(), TTL_S))  # one slot, a token per try
    steps = [
        ("run", lambda: client.task_instances.start(ti, 4242, datetime.now(UTC))),
        ("rtif", lambda: client.task_instances.set_rtif(ti, {"op_args": "[]"})),
        ("state", lambda: client.task_instances.succeed(ti, datetime.now(UTC), [], [], None)),
    ]
    for name, call in steps:
        started = time.perf_counter()
        call()
        if timings is not None:
            timings[name].append(time.perf_counter() - started)


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p = lambda f: ordered[min(len(ordered) - 1, int(f * len(ordered)))] * 1000  # noqa: E731
    return f"p50 {p(0.5):.2f} ms, p95 {p(0.95):.2f} ms, mean {statistics.mean(values) * 1000:.2f} ms"


async def test_a_no_op_tasks_three_calls_are_cheap(server, db):  # noqa: F811
    base_url, pid = server
    run_pk, tis = await seed(db, "perf", "run-1",
                             [("extract", i) for i in range(WARMUP + MEASURED)])
    ordered = [tis[("extract", i)] for i in range(WARMUP + MEASURED)]
    client = Client(base_url=base_url, token="")
    for ti in ordered[:WARMUP]:
        run_no_op(client, ti, None)

    timings: dict[str, list[float]] = {"run": [], "rtif": [], "state": []}
    cpu_before, client_before, wall_before = cpu_seconds(pid), time.process_time(), \
        time.perf_counter()
    for ti in ordered[WARMUP:]:
        run_no_op(client, ti, timings)
    server_cpu = cpu_seconds(pid) - cpu_before
    client_cpu = time.process_time() - client_before
    wall = time.perf_counter() - wall_before

    done = await db.fetchval("SELECT count(*) FROM task_instance WHERE run_pk = $1 "
                             "AND state = 'success' AND rendered_fields IS NOT NULL", run_pk)
    assert done == WARMUP + MEASURED
    print(f"\nExecution API, {MEASURED} no-op tasks (3 calls each, keep-alive):")
    for name, values in timings.items():
        print(f"  {name:5s}: {summary(values)}")
    print(f"  server CPU {server_cpu / MEASURED * 1000:.2f} ms/task, client CPU "
          f"{client_cpu / MEASURED * 1000:.2f} ms/task, wall {wall / MEASURED * 1000:.2f} ms/task")
    # generous bounds on a shared 2-core machine; the printed figures are the measurement
    assert statistics.median(timings["run"] + timings["rtif"] + timings["state"]) < 0.025
    assert server_cpu / MEASURED < 0.05

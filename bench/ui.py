"""``python -m bench.ui``: how fast the web UI's grid loads for a 10,000-instance mapped run.

The scheduler parses ``gen >> work.expand(x=gen()) >> total`` and stops; the
runs are then written straight into PostgreSQL as a run caught mid-way looks
(6,000 instances success, 8 running, the rest queued, each with a label), so
what is timed is the UI's read path alone, against ``sluice api-server`` as a
real process. Measured, warm, over ``--requests`` calls each:

- ``/ui/api/dags/D/grid``: the whole grid (25 runs at most) — what the grid page reads;
- ``/ui/api/dags/D/grid?run_id=R``: one run, what a live update refetches;
- ``.../tasks/work/instances``: the drill-down's first page (100 indexes);
- the page itself in headless Chromium (Debian's): from navigating to the
  grid until the mapped task's cell is drawn, ``--page-loads`` times;
- the aggregate statement alone (``EXPLAIN ANALYZE`` execution time).

With ``--runs N`` the DAG has N such runs (the grid shows 25 at most).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio

from apiserver.ui.sql import q
from bench.common import (
    add_output_args,
    bench_cluster,
    machine,
    machine_lines,
    run_scenario,
    summary,
)
from tests.api_server import login, start_api_server

DAG = '''
from datetime import datetime

from airflow.sdk import dag, task


@dag(schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def ui_bench():
    @task
    def gen() -> list[int]:
        return list(range(10_000))

    @task(map_index_template="{{ task.op_kwargs['x'] }}")
    def work(x: int) -> int:
        return x

    @task
    def total(values) -> int:
        return sum(values)

    total(work.expand(x=gen()))


ui_bench()
'''

INSERT_RUN = """
INSERT INTO dag_run (dag_id, run_id, run_type, logical_date, state, start_date)
VALUES ('ui_bench', $1, 'manual', $2, 'running', $2) RETURNING id
"""
INSERT_TIS = """
INSERT INTO task_instance (run_pk, task_id, map_index, state, try_number, label,
                           start_date, end_date)
SELECT $1::bigint, 'work', i,
       CASE WHEN i < 6000 THEN 'success' WHEN i < 6008 THEN 'running' ELSE 'queued' END,
       CASE WHEN i < 6008 THEN 1 ELSE 0 END, i::text,
       CASE WHEN i < 6008 THEN $2::timestamptz END,
       CASE WHEN i < 6000 THEN $2::timestamptz + interval '1 second' END
  FROM generate_series(0, $3::int - 1) AS i
UNION ALL SELECT $1::bigint, 'gen', -1, 'success', 1, NULL, $2::timestamptz, $2::timestamptz
UNION ALL SELECT $1::bigint, 'total', -1, NULL, 0, NULL, NULL, NULL
"""


def _get(url: str, token: str) -> float:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as response:
        json.loads(response.read())
    return (time.perf_counter() - start) * 1000


def _timed(url: str, token: str, n: int) -> dict[str, float]:
    _get(url, token)  # warm: the pool's connections, the statement cache
    return summary([_get(url, token) for _ in range(n)])


def _page_loads(base: str, token: str, n: int) -> dict[str, float]:
    """Navigation to the grid until the mapped cell is drawn, in headless Chromium."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    with tempfile.TemporaryDirectory() as profile:
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync",
                     f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            driver.get(f"{base}/ui/static/style.css")  # the origin, to store the token
            driver.execute_script("sessionStorage.setItem('sluice.token', arguments[0])", token)
            times = []
            for i in range(n + 1):
                driver.get("about:blank")
                start = time.perf_counter()
                driver.get(f"{base}/ui/?load={i}#/dags/ui_bench/grid")
                WebDriverWait(driver, 30, poll_frequency=0.005).until(lambda d: d.execute_script(
                    "return document.querySelector('.cell[data-task=\"work\"][data-total=\"10000\"]')"))
                times.append((time.perf_counter() - start) * 1000)
            return summary(times[1:])  # the first load fills the browser's cache
        finally:
            driver.quit()


async def _seed(cluster, runs: int, size: int) -> tuple[str, list[int]]:
    conn = await cluster.connect()
    try:
        pks = []
        first = datetime(2026, 11, 1, tzinfo=UTC)
        for i in range(runs):
            when = first + timedelta(hours=i)
            pk = await conn.fetchval(INSERT_RUN, f"manual__bench_{i:03d}", when)
            await conn.execute(INSERT_TIS, pk, when, size)
            pks.append(pk)
        await conn.execute("ANALYZE task_instance")
        return f"manual__bench_{runs - 1:03d}", pks
    finally:
        await conn.close()


async def _statement_ms(cluster, pks: list[int]) -> float:
    conn = await cluster.connect()
    try:
        plan = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {q('ui_grid_cells')}",
                                   pks[-25:])
        return json.loads(plan)[0]["Execution Time"] if isinstance(plan, str) \
            else plan[0]["Execution Time"]
    finally:
        await conn.close()


async def bench(args: argparse.Namespace, root: Path) -> str:
    info = machine()
    async with bench_cluster(root) as (cluster, services):
        cluster.write_dag("ui_bench.py", DAG)
        cluster.start("scheduler")
        await cluster.wait_dag("ui_bench")
        cluster.stop("scheduler")  # the runs below are a picture, nothing must act on them
        last, pks = await _seed(cluster, args.runs, args.size)
        base = await start_api_server(cluster, {"bench": ("viewer", "bench-password")})
        token = await anyio.to_thread.run_sync(login, base, "bench", "bench-password")
        api = f"{base}/ui/api/dags/ui_bench"
        rows = {
            "grid (whole page's data)": f"{api}/grid",
            "grid, one run (live refetch)": f"{api}/grid?run_id={last}",
            "drill-down, first 100 indexes": f"{api}/runs/{last}/tasks/work/instances",
        }
        figures = {name: await anyio.to_thread.run_sync(_timed, url, token, args.requests)
                   for name, url in rows.items()}
        figures["grid page in Chromium (navigation to cell drawn)"] = \
            await anyio.to_thread.run_sync(_page_loads, base, token, args.page_loads)
        statement = await _statement_ms(cluster, pks)
    lines = "\n".join(f"| {name} | {f['p50']:.1f} | {f['p99']:.1f} | {f['max']:.1f} |"
                      for name, f in figures.items())
    return (f"\n## ui: grid of a {args.size:,}-instance mapped run "
            f"({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)\n\n"
            + machine_lines(info, services)
            + f"- {args.runs} run(s) of {args.size:,} `work` instances (6,000 success, 8 running, "
              f"the rest queued) + `gen`, `total`; {args.requests} warm requests each\n"
            + f"- commit {info['commit']}; `ui_grid_cells` alone: {statement:.1f} ms "
              f"(EXPLAIN ANALYZE, {min(args.runs, 25)} run(s))\n\n"
            + "| what | p50 ms | p99 ms | max ms |\n|---|---|---|---|\n" + lines + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ui", description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=10_000, help="mapped instances per run")
    parser.add_argument("--runs", type=int, default=1, help="runs of that size")
    parser.add_argument("--requests", type=int, default=30, help="timed requests per endpoint")
    parser.add_argument("--page-loads", type=int, default=5, help="timed page loads")
    add_output_args(parser)
    return run_scenario(bench, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

"""Asset-triggered runs on real PostgreSQL: queueing, conditions, windows, two schedulers.

DAGs are built with Airflow's Task SDK and stored as the parse server stores them; events
are recorded by the statement the Execution API runs for a producer's success;
``scheduler.assets`` creates the runs.
"""

from __future__ import annotations

import json
from datetime import datetime

import anyio
import pytest
from airflow.providers.standard.triggers.file import FileDeleteTrigger
from airflow.sdk import DAG, Asset, AssetWatcher, task

from scheduler.assets import create_asset_runs, sync_references
from shared.airflow_spec.walk import dag_spec
from shared.db import create_pool, q

pytestmark = pytest.mark.timeout(60)

A = Asset("a", uri="s3://x/a")
B = Asset("b", uri="s3://x/b")


def build(dag_id: str, schedule, **kwargs) -> dict:
    with DAG(dag_id, schedule=schedule, start_date=datetime(2026, 1, 1), **kwargs) as dag:
        @task(outlets=[A, B])
        def work():
            return 1

        work()
    return dag_spec(dag)


async def store(db, spec: dict, paused: bool = False) -> None:
    await db.execute(q("upsert_dag"), spec["dag_id"], "f.py", "h", spec, paused)
    await sync_references(db)


async def emit(db, asset: Asset, run: str = "r1") -> int:
    row = await db.fetchrow(q("asset_register_event"), asset.name, asset.uri,
                            json.dumps({"run": run}), "producer", "work", run, -1, [], False, None)
    return row["queued"]


async def runs(db, dag_id: str) -> list[list[str]]:
    """Each asset-triggered run of the DAG: the runs of the events it consumed."""
    rows = await db.fetch(
        "SELECT r.id, coalesce(array_agg(e.extra ->> 'run' ORDER BY e.id) "
        "         FILTER (WHERE e.id IS NOT NULL), '{}') AS consumed "
        "  FROM dag_run r LEFT JOIN dag_run_asset_event c ON c.run_pk = r.id "
        "  LEFT JOIN asset_event e ON e.id = c.event_id "
        " WHERE r.dag_id = $1 AND r.run_type = 'asset_triggered' GROUP BY r.id ORDER BY r.id",
        dag_id)
    return [list(r["consumed"]) for r in rows]


@pytest.fixture
async def pool(db_url):
    p = await create_pool(db_url, max_size=4)
    yield p
    await p.close()


async def test_and_creates_one_run_once_every_asset_has_an_event(db, pool):
    await store(db, build("producer", None))
    await store(db, build("both", A & B))
    assert await emit(db, A, "r1") == 1
    assert await create_asset_runs(pool) == []
    await emit(db, A, "r2")
    await emit(db, B, "r3")
    [pk] = await create_asset_runs(pool)
    assert await runs(db, "both") == [["r1", "r2", "r3"]]
    assert await db.fetchval("SELECT count(*) FROM asset_dag_run_queue") == 0
    run = await db.fetchrow("SELECT state, data_interval_start, conf::text FROM dag_run WHERE id = $1", pk)
    assert (run["state"], run["data_interval_start"], run["conf"]) == ("queued", None, "{}")


async def test_a_paused_dag_is_not_queued_and_its_next_run_takes_the_events_since(db, pool):
    await store(db, build("producer", None))
    await store(db, build("later", [A]), paused=True)
    assert await emit(db, A, "while_paused") == 0
    assert await create_asset_runs(pool) == []
    await db.execute("UPDATE dag SET is_paused = false WHERE dag_id = 'later'")
    assert await create_asset_runs(pool) == []  # nothing was queued
    await emit(db, A, "after")
    await create_asset_runs(pool)
    assert await runs(db, "later") == [["while_paused", "after"]]


async def test_events_before_a_dag_was_scheduled_count_only_with_catchup(db, pool):
    await store(db, build("producer", None))
    await emit(db, A, "before")
    await store(db, build("no_catchup", [A], catchup=False))
    await store(db, build("with_catchup", [A], catchup=True))
    await emit(db, A, "after")
    await create_asset_runs(pool)
    assert await runs(db, "no_catchup") == [["after"]]
    assert await runs(db, "with_catchup") == [["before", "after"]]


async def test_max_active_runs_holds_the_queue_and_the_next_run_takes_all_of_it(db, pool):
    await store(db, build("producer", None))
    await store(db, build("one_at_a_time", [A], max_active_runs=1))
    await emit(db, A, "r1")
    [first] = await create_asset_runs(pool)
    await emit(db, A, "r2")
    await emit(db, A, "r3")
    assert await create_asset_runs(pool) == []  # its first run is still queued
    await db.execute("UPDATE dag_run SET state = 'success' WHERE id = $1", first)
    await create_asset_runs(pool)
    assert await runs(db, "one_at_a_time") == [["r1"], ["r2", "r3"]]


async def test_two_schedulers_create_one_run_for_one_batch(db, pool, db_url):
    other = await create_pool(db_url, max_size=2)
    try:
        await store(db, build("producer", None))
        await store(db, build("once", [A]))
        await emit(db, A)
        created: list[int] = []

        async def one(p):
            created.extend(await create_asset_runs(p))

        async with anyio.create_task_group() as tg:
            tg.start_soon(one, pool)
            tg.start_soon(one, other)
    finally:
        await other.close()
    assert len(created) == 1
    assert await runs(db, "once") == [["r1"]]


async def test_a_dag_no_longer_scheduled_on_assets_loses_its_queue_and_watchers(db):
    trigger = FileDeleteTrigger(filepath="/tmp/never", poke_interval=1.0)
    watched = Asset("w", uri="s3://x/w", watchers=[AssetWatcher(name="f", trigger=trigger)])
    await store(db, build("producer", None))
    await store(db, build("watching", [watched, A]))
    await emit(db, A)
    watcher = await db.fetchrow("SELECT name, classpath, kwargs::text AS kwargs FROM asset_watcher")
    assert (watcher["name"], watcher["classpath"]) == (
        "f", "airflow.providers.standard.triggers.file.FileDeleteTrigger")
    assert json.loads(watcher["kwargs"]) == {"filepath": "/tmp/never", "poke_interval": 1.0}
    assert await db.fetchval("SELECT count(*) FROM asset_dag_run_queue") == 1
    await store(db, build("watching", None))
    assert await db.fetchval("SELECT count(*) FROM asset_watcher") == 0
    assert await db.fetchval("SELECT count(*) FROM asset_dag_run_queue") == 0
    assert await db.fetchval("SELECT count(*) FROM dag_schedule_asset") == 0

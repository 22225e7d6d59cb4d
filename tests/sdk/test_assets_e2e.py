"""Assets end to end on Sluice's real daemons, with DAG files as Airflow's asset docs write them.

A scheduler and a worker run as processes over ``dags_assets/``. A producer's success
emits an event per outlet (with the ``extra`` it set, or ``Metadata`` it yielded); an
asset-scheduled consumer gets an ``asset_triggered`` run once its condition holds, and
reads the events from ``triggering_asset_events`` and ``inlet_events``. ``&`` waits for
both assets, ``|`` runs on either, events that came before the consumer ran are consumed
by one run, an alias names its asset at run time, ``AssetOrTimeSchedule`` runs on the
asset too, a paused consumer is not queued (its first run after unpausing consumes
what came meanwhile), events that wait for a busy consumer (``max_active_runs=1``) are
all consumed by its next run, and an ``AssetWatcher``'s trigger in the triggerer updates
its asset on each event, as in Airflow 3.3.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.cluster import Cluster, own_cluster, wait_for

pytestmark = pytest.mark.timeout(300)

DAGS = Path(__file__).parent / "dags_assets"
RUN_TIMEOUT_S = 90.0
ALL_DAGS = ("assets_producer", "assets_consumer", "assets_report_consumer", "cond_produce_a",
            "cond_produce_b", "cond_both", "cond_either", "alias_producer", "alias_consumer",
            "or_time_producer", "or_time_consumer", "paused_producer", "paused_consumer",
            "raw_orders", "clean_orders", "watched_consumer", "backlog_producer",
            "backlog_consumer")


@pytest.fixture(scope="module")
async def assets(services, template_db, tmp_path_factory):
    """One cluster for the module, every DAG of ``dags_assets`` parsed."""
    async with own_cluster(services, template_db, tmp_path_factory.mktemp("assets"),
                           name="assets", dags=DAGS) as cluster:
        cluster.start("scheduler")
        cluster.start("worker")
        cluster.start("triggerer")
        for dag_id in ALL_DAGS:
            await cluster.wait_dag(dag_id, timeout=120)
        yield cluster


async def produce(cluster: Cluster, dag_id: str) -> str:
    """Trigger a producer and wait for its run to succeed; its run id."""
    run_id = await cluster.trigger(dag_id)
    doc = await cluster.wait_run(run_id, RUN_TIMEOUT_S)
    assert doc["state"] == "success", (doc, cluster.log("worker")[-3000:])
    return run_id


async def runs_of(cluster: Cluster, dag_id: str) -> list[dict]:
    """The DAG's runs, oldest first: run_id, run_type, state and consumed event count."""
    conn = await cluster.connect()
    try:
        rows = await conn.fetch(
            "SELECT r.run_id, r.run_type, r.state, "
            "       (SELECT count(*) FROM dag_run_asset_event c WHERE c.run_pk = r.id) AS consumed "
            "  FROM dag_run r WHERE r.dag_id = $1 ORDER BY r.id", dag_id)
        return [dict(r) for r in rows]
    finally:
        await conn.close()


async def asset_runs(cluster: Cluster, dag_id: str, count: int) -> list[dict]:
    """Wait until the DAG has ``count`` asset-triggered runs, all finished; their documents."""
    async def finished():
        runs = [r for r in await runs_of(cluster, dag_id) if r["run_type"] == "asset_triggered"]
        if len(runs) >= count and all(r["state"] in ("success", "failed") for r in runs):
            return runs
        return None

    runs = await wait_for(finished, RUN_TIMEOUT_S, f"{count} asset-triggered runs of {dag_id}")
    assert len(runs) == count, runs
    return [await cluster.run_doc(r["run_id"]) for r in runs]


def returned(doc: dict, task_id: str):
    task = Cluster.by_task(doc)[task_id]
    assert task["state"] == "success", doc
    return task["return_value"]


# --- tests ---------------------------------------------------------------------------------
async def test_a_producers_success_runs_its_consumer_with_the_events_extra(assets):
    producer_run = await produce(assets, "assets_producer")
    [doc] = await asset_runs(assets, "assets_consumer", 1)
    assert doc["state"] == "success", doc
    assert returned(doc, "read_triggers") == {
        "run_type": "asset_triggered",
        "events": {"s3://warehouse/orders.csv": [[{"rows": 3, "batch": "b1"}, "assets_producer",
                                                  "write_orders"]]}}
    assert returned(doc, "read_inlets") == {"extra": {"rows": 3, "batch": "b1"},
                                            "source": "write_orders", "count": 1}
    [report] = await asset_runs(assets, "assets_report_consumer", 1)
    assert returned(report, "pages") == [7]  # yield Metadata(report, {"pages": 7})
    conn = await assets.connect()
    try:
        event = await conn.fetchrow(
            "SELECT e.source_run_id, e.source_map_index, a.extra::text AS asset_extra "
            "FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE a.name = $1",
            "s3://warehouse/orders.csv")
    finally:
        await conn.close()
    assert (event["source_run_id"], event["source_map_index"]) == (producer_run, -1)
    assert event["asset_extra"] == '{"owner": "sales"}'


async def test_and_waits_for_both_or_runs_on_either_and_one_run_consumes_every_event(assets):
    first = await produce(assets, "cond_produce_a")
    await asset_runs(assets, "cond_either", 1)
    assert await runs_of(assets, "cond_both") == []  # a & b: b has not been updated
    second = await produce(assets, "cond_produce_a")
    await asset_runs(assets, "cond_either", 2)
    assert await runs_of(assets, "cond_both") == []
    third = await produce(assets, "cond_produce_b")
    [both] = await asset_runs(assets, "cond_both", 1)
    assert returned(both, "consumed") == [["cond_a", first], ["cond_a", second], ["cond_b", third]]
    either = await asset_runs(assets, "cond_either", 3)
    assert [returned(d, "consumed") for d in either] == [
        [["cond_a", first]], [["cond_a", second]], [["cond_b", third]]]


async def test_an_alias_names_its_asset_at_run_time_and_runs_its_consumer(assets):
    await produce(assets, "alias_producer")

    async def consumed_both():
        runs = [r for r in await runs_of(assets, "alias_consumer")
                if r["run_type"] == "asset_triggered"]
        done = all(r["state"] in ("success", "failed") for r in runs)
        return runs if done and sum(r["consumed"] for r in runs) == 2 else None

    runs = await wait_for(consumed_both, RUN_TIMEOUT_S, "alias_consumer to consume two events")
    docs = [await assets.run_doc(r["run_id"]) for r in runs]
    days = [row for doc in docs for row in returned(doc, "days")]
    assert sorted(days) == [["s3://exports/2026-01-01.csv", "2026-01-01", ["sluice-daily-export"]],
                            ["s3://exports/2026-01-02.csv", "2026-01-02", ["sluice-daily-export"]]]
    # inlet_events[alias]: every event emitted through the alias so far
    assert returned(docs[-1], "through_alias") == ["2026-01-01", "2026-01-02"]


async def test_asset_or_time_schedule_runs_on_the_asset_and_keeps_its_cron(assets):
    await produce(assets, "or_time_producer")
    [doc] = await asset_runs(assets, "or_time_consumer", 1)
    assert returned(doc, "which") == ["asset_triggered", ["or_time_ticks"]]
    conn = await assets.connect()
    try:
        schedule = await conn.fetchval(
            "SELECT serialized -> 'schedule' FROM dag WHERE dag_id = 'or_time_consumer'")
    finally:
        await conn.close()
    assert "0 3 1 1 *" in json.dumps(schedule), schedule  # its time part: the cron


async def test_a_paused_consumer_is_not_queued_and_its_next_run_consumes_what_came(assets):
    first = await produce(assets, "paused_producer")
    second = await produce(assets, "paused_producer")
    out = assets.cli("dags", "unpause", "paused_consumer")
    assert out.returncode == 0, out.stderr
    assert await runs_of(assets, "paused_consumer") == []  # nothing was queued while paused
    third = await produce(assets, "paused_producer")
    [doc] = await asset_runs(assets, "paused_consumer", 1)
    assert returned(doc, "seen") == [first, second, third]


async def test_asset_decorated_functions_run_as_dags_scheduled_on_each_other(assets):
    await produce(assets, "raw_orders")
    [doc] = await asset_runs(assets, "clean_orders", 1)
    assert returned(doc, "clean_orders") == {"input": "file:///data/raw_orders.csv", "rows": 12}


async def test_an_asset_watchers_trigger_updates_its_asset_on_each_event(assets):
    incoming = assets.dags_folder / "incoming.csv"
    for n in (1, 2, 3):
        if n == 3:  # a triggerer killed: another one takes its watchers over
            assets.signal("triggerer", signal.SIGKILL)
            assets.stop("triggerer")
            assets.start("triggerer", "triggerer2")
        incoming.write_text("id\n1\n")  # FileDeleteTrigger fires once it sees it, and deletes it
        [*_, doc] = await asset_runs(assets, "watched_consumer", n)
        assert returned(doc, "landed_events") == [[{"from_trigger": True, "payload": True}, None]]
        assert not incoming.exists()


async def test_events_that_wait_for_a_busy_consumer_are_all_consumed_by_its_next_run(assets):
    hold = assets.dags_folder / "hold_backlog"
    hold.write_text("")
    first = await produce(assets, "backlog_producer")

    async def running():
        runs = await runs_of(assets, "backlog_consumer")
        return runs if runs and runs[0]["state"] == "running" else None

    await wait_for(running, RUN_TIMEOUT_S, "the first backlog_consumer run to start")
    second = await produce(assets, "backlog_producer")
    third = await produce(assets, "backlog_producer")
    assert len(await runs_of(assets, "backlog_consumer")) == 1  # max_active_runs=1
    hold.unlink()
    docs = await asset_runs(assets, "backlog_consumer", 2)
    assert [returned(d, "drain") for d in docs] == [[first], [second, third]]

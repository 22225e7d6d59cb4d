"""The Execution API's asset calls, made by the Task SDK's own client against
``python -m worker.execution_api`` on PostgreSQL (the fixtures of ``test_execution_api``).

A success with outlets records its events; ``/assets``, ``/asset-events`` and
validate-inlets-and-outlets answer from the tables; an asset-triggered run carries the
events it consumed, in the start's answer and in ``/dag-runs/{dag_id}/{run_id}``.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk.api.datamodels._generated import AssetProfile
from airflow.sdk.execution_time.comms import ErrorResponse

from shared.db import q
from tests.sdk import test_execution_api as api_tests
from tests.sdk.test_execution_api import client_for, seed, start

# the Execution API server and its database, as test_execution_api runs them
api_db, api_home, prefix = api_tests.api_db, api_tests.api_home, api_tests.prefix
server, db = api_tests.server, api_tests.db

OUTLET = AssetProfile(name="orders", uri="s3://w/orders.csv", type="Asset")
KEY = {"name": "orders", "uri": "s3://w/orders.csv"}


async def test_a_success_records_its_events_and_the_asset_routes_answer_them(server, db):
    await db.execute("INSERT INTO asset (name, uri, \"group\", extra) "
                     "VALUES ('orders', 's3://w/orders.csv', 'asset', '{\"owner\": \"sales\"}')")
    _, tis = await seed(db, "asset_api_producer", "run-1", [("extract", -1)])
    ti = tis[("extract", -1)]
    client = client_for(server, ti)
    start(client, ti)
    assert client.task_instances.validate_inlets_and_outlets(ti).inactive_assets == []
    client.task_instances.succeed(
        ti, datetime.now(UTC), task_outlets=[OUTLET, AssetProfile(name="gone", type="AssetNameRef")],
        outlet_events=[{"dest_asset_key": KEY, "extra": {"rows": 3}}], rendered_map_index=None)
    event = await db.fetchrow("SELECT extra::text AS extra, source_dag_id, source_task_id, "
                              "source_run_id, source_map_index FROM asset_event")
    assert dict(event) == {"extra": '{"rows": 3}', "source_dag_id": "asset_api_producer",
                           "source_task_id": "extract", "source_run_id": "run-1",
                           "source_map_index": -1}

    reader = client_for(server, ti)
    asset = reader.assets.get(name="orders")
    assert (asset.name, asset.uri, asset.group, asset.extra) == (
        "orders", "s3://w/orders.csv", "asset", {"owner": "sales"})
    assert reader.assets.get(uri="s3://w/orders.csv").name == "orders"
    missing = reader.assets.get(name="nope")
    assert isinstance(missing, ErrorResponse) and missing.detail == {"name": "nope"}
    [got] = reader.asset_events.get(name="orders", uri="s3://w/orders.csv").asset_events
    assert (got.extra, got.source_task_id, got.asset.extra) == ({"rows": 3}, "extract",
                                                                {"owner": "sales"})
    assert reader.asset_events.get(alias_name="no-alias").asset_events == []


async def test_an_asset_triggered_run_carries_its_consumed_events(server, db):
    await db.execute("INSERT INTO asset (name, uri) VALUES ('feed', 'file:///feed') "
                     "ON CONFLICT DO NOTHING")
    event_id = await db.fetchval(
        "INSERT INTO asset_event (asset_id, extra, source_dag_id, source_task_id, source_run_id,"
        " source_map_index) SELECT id, '{\"batch\": 7}', 'up', 'push', 'up-run', -1 FROM asset"
        " WHERE name = 'feed' RETURNING id")
    run_pk, tis = await seed(db, "asset_api_consumer", "asset_triggered__x", [("read", -1)])
    await db.execute("UPDATE dag_run SET run_type = 'asset_triggered' WHERE id = $1", run_pk)
    await db.execute("INSERT INTO dag_run_asset_event (run_pk, event_id) VALUES ($1, $2)",
                     run_pk, event_id)
    ti = tis[("read", -1)]
    client = client_for(server, ti)
    context = start(client, ti)
    [consumed] = context.dag_run.consumed_asset_events
    assert (consumed.asset.name, consumed.asset.uri, consumed.extra, consumed.source_run_id) == (
        "feed", "file:///feed", {"batch": 7}, "up-run")
    assert context.dag_run.logical_date is None  # as Airflow's asset-triggered runs
    detail = client.dag_runs.get_detail("asset_api_consumer", "asset_triggered__x")
    assert [e.extra for e in detail.consumed_asset_events] == [{"batch": 7}]
    assert await db.fetchval(q("asset_by"), "feed", None) is not None

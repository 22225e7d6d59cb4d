"""Owed callbacks in PostgreSQL: which instance a request names, leases, give-ups, and the
document the callback child validates with the Task SDK's own models."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from airflow.sdk.api.datamodels._generated import DagRun

from scheduler.callbacks import MAX_ATTEMPTS, request_document
from shared.db import q

T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def _run(db, tis: list[tuple[str, str | None, int | None, int | None]]) -> tuple[int, dict]:
    """A DAG, a running run and instances (task_id, state, start and end minute) -> ids."""
    await db.execute("INSERT INTO dag (dag_id, fileloc, source_hash, serialized) "
                     "VALUES ('d', '/dags/d.py', '', '{}')")
    run_pk = await db.fetchval(
        "INSERT INTO dag_run (dag_id, run_id, run_type, logical_date, state, conf, start_date) "
        "VALUES ('d', 'r1', 'manual', $1, 'running', $2, $1) RETURNING id",
        T0, {"x": 1})
    ids = {}
    for task_id, state, start, end in tis:
        ids[task_id] = await db.fetchval(
            "INSERT INTO task_instance (run_pk, task_id, state, try_number, max_tries, "
            "start_date, end_date) VALUES ($1, $2, $3, 1, 1, $4, $5) RETURNING id",
            run_pk, task_id, state, None if start is None else T0 + timedelta(minutes=start),
            None if end is None else T0 + timedelta(minutes=end))
    return run_pk, ids


async def _claim(db) -> list:
    return await db.fetch(q("claim_callbacks"), 16, 60.0, MAX_ATTEMPTS)


async def test_a_failed_run_names_its_last_failed_instance(db):
    run_pk, _ = await _run(db, [("a", "success", 0, 1), ("late", "failed", 0, 3),
                                ("early", "failed", 0, 2), ("down", "upstream_failed", None, 4)])
    await db.execute(q("request_dag_callback"), run_pk, "on_failure_callback", "task_failure")
    (row,) = await _claim(db)
    assert (row["kind"], row["callback"], row["reason"]) == ("dag", "on_failure_callback",
                                                             "task_failure")
    assert row["task_id"] == "late"  # max end_date among failed ones, as Airflow
    assert row["fileloc"] == "/dags/d.py" and row["conf"] == {"x": 1}
    assert await _claim(db) == []  # leased: no other scheduler runs it meanwhile


async def test_a_timed_out_run_names_the_unfinished_instance_started_last(db):
    run_pk, _ = await _run(db, [("done", "success", 0, 1), ("first", "running", 1, None),
                                ("second", "running", 2, None), ("waiting", None, None, None)])
    await db.execute(q("request_dag_callback"), run_pk, "on_failure_callback", "timed_out")
    await db.execute("UPDATE task_instance SET state = 'skipped'")  # what time_out_run does
    (row,) = await _claim(db)
    assert (row["reason"], row["task_id"]) == ("timed_out", "second")


async def test_a_task_request_follows_the_failed_try(db):
    _, ids = await _run(db, [("retry", "up_for_retry", 0, 1), ("final", "failed", 0, 1),
                             ("ok", "success", 0, 1)])
    for task_id in ("retry", "final", "ok"):
        await db.execute(q("request_task_callback"), ids[task_id], 1, "heartbeat expired")
    await db.execute(q("request_task_callback"), ids["final"], 2, "another try's")
    rows = await _claim(db)
    assert [(r["task_id"], r["callback"], r["request_try"]) for r in rows] == [
        ("retry", "on_retry_callback", 1), ("final", "on_failure_callback", 1)]
    doc = request_document(rows[0], Path("/logs/x.log"), {}, {})
    assert doc["ti"]["state"] == "up_for_retry" and doc["ti"]["try_number"] == 1
    assert DagRun.model_validate(doc["dag_run"]).run_id == "r1"  # the SDK's own model


async def test_a_request_whose_runner_died_is_claimed_again_then_given_up(db):
    run_pk, _ = await _run(db, [("a", "success", 0, 1)])
    await db.execute(q("request_dag_callback"), run_pk, "on_success_callback", "success")
    for attempt in range(1, MAX_ATTEMPTS + 1):
        (row,) = await _claim(db)
        assert row["attempts"] == attempt
        await db.execute("UPDATE callback_request SET lease_until = now() - interval '1 s'")
    assert await _claim(db) == []
    gone = await db.fetch(q("callback_given_up"), MAX_ATTEMPTS)
    assert [r["callback"] for r in gone] == ["on_success_callback"]
    assert await db.fetchval("SELECT count(*) FROM callback_request") == 0

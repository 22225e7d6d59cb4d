"""The bus under faults, with real daemons: bad messages, failing handlers, dead consumers, FLUSHALL.

A message the daemons cannot handle (an id outside ``bigint``, a kind on the
wrong stream, a handler that raises: here a PostgreSQL trigger refusing one
statement) goes to the dead-letter stream with the reason; the daemon keeps its
PID and the task it is running keeps running. Entries a killed worker read but
never acknowledged are taken by another worker within the claim interval.
FLUSHALL during a run leaves every daemon running, and the run succeeds.
"""

from __future__ import annotations

import json
import signal
from datetime import datetime

import asyncpg
import pytest
import redis.asyncio as aioredis

from shared.messages import BIGINT_MAX
from tests.cluster import Cluster, wait_for
from tests.faults import OwnedValkey, strictest_redis

pytestmark = pytest.mark.timeout(180)

HOLD_DAG = """
    import time
    from datetime import datetime
    from pathlib import Path
    from airflow.sdk import dag, task

    @dag(schedule=None, start_date=datetime(2026, 1, 1))
    def bus_faults():
        @task
        def hold(ti=None):
            Path({started!r}).touch()
            while not Path({release!r}).exists():
                time.sleep(0.05)
            return ti.try_number

        @task
        def poison():
            return 1

        hold()
        poison()
    bus_faults()
"""

CHAIN_DAG = """
    import time
    from datetime import datetime
    from airflow.sdk import dag, task

    @dag(schedule=None, start_date=datetime(2026, 1, 1))
    def chain():
        @task
        def step(x):
            time.sleep(0.3)
            return x + 1
        v = 0
        for i in range({n}):
            v = step.override(task_id=f"s{{i}}")(v)
    chain()
"""

REFUSE = """
CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'refused by the test'; END $$;
"""


# --------------------------------------------------------------------- helpers


def hold_dag(cluster: Cluster) -> tuple:
    started, release = cluster.root / "started", cluster.root / "release"
    cluster.write_dag("bus_faults.py", HOLD_DAG.format(started=str(started), release=str(release)))
    return started, release


async def sql(cluster: Cluster, statement: str, *args):
    """Run a query (with arguments) or a script (several statements, without)."""
    conn = await cluster.connect()
    try:
        if args:
            return await conn.fetch(statement, *args)
        return await conn.execute(statement)
    finally:
        await conn.close()


async def tis(cluster: Cluster, run_id: str) -> dict[str, dict]:
    rows = await sql(cluster, "SELECT ti.task_id, ti.state, ti.try_number, ti.worker_id"
                     " FROM task_instance ti JOIN dag_run r ON r.id = ti.run_pk"
                     " WHERE r.run_id = $1", run_id)
    return {r["task_id"]: dict(r) for r in rows}


async def trigger(cluster: Cluster, dag_id: str, conf: dict | None = None) -> str:
    await cluster.wait_dag(dag_id, timeout=120)  # the scheduler imports Airflow first
    return await cluster.trigger(dag_id, conf)


async def running(cluster: Cluster, run_id: str, task_id: str) -> dict:
    async def is_running():
        ti = (await tis(cluster, run_id)).get(task_id)
        return ti if ti and ti["state"] == "running" else None

    return await wait_for(is_running, 90, f"{task_id} to be running")


async def dead_letter(redis, stream_prefix: str, source: str, needle: str) -> dict:
    """Wait for a dead-letter entry from ``source`` whose reason contains ``needle``."""
    async def found():
        for _, fields in await redis.xrange(f"{stream_prefix}:deadletter"):
            fields = {k.decode(): v.decode() for k, v in fields.items()}
            if fields["source"] == source and needle in fields["error"]:
                return fields
        return None

    return await wait_for(found, 30, f"a dead letter from {source} saying {needle!r}")


def pids(cluster: Cluster) -> dict[str, int | None]:
    return {n: p.pid if p.poll() is None else None for n, p in cluster.procs.items()}


async def blocked_readers(redis) -> int:
    return sum(1 for c in await redis.client_list()
               if c.get("cmd") == "xreadgroup" and "b" in c.get("flags", ""))


# ------------------------------------------------------------- bad messages


async def test_worker_dead_letters_what_it_cannot_handle_and_keeps_its_task(
        cluster: Cluster, stream_prefix):
    started, release = hold_dag(cluster)
    # the claim of `poison` raises in PostgreSQL: its handling fails, the rest of its batch not
    await sql(cluster, REFUSE + "CREATE TRIGGER refuse_claim BEFORE UPDATE ON task_instance"
              " FOR EACH ROW WHEN (NEW.task_id = 'poison' AND NEW.state = 'running')"
              " EXECUTE FUNCTION refuse();")
    cluster.start("scheduler")
    cluster.start("worker")
    redis = aioredis.from_url(cluster.env["SLUICE_REDIS_URL"])
    queue = f"{stream_prefix}:queue:default"
    try:
        run_id = await trigger(cluster, "bus_faults")
        held = await running(cluster, run_id, "hold")
        await wait_for(lambda: _exists(started), 30, "hold's body to start")
        before = pids(cluster)
        failed = await dead_letter(redis, stream_prefix, queue, "refused by the test")
        assert failed["error"].startswith("RaiseError: refused by the test"), failed

        await redis.xadd(queue, {"m": json.dumps({"v": 1, "kind": "run_task",
                                                   "ti_id": BIGINT_MAX + 1, "try_number": 1})})
        await redis.xadd(queue, {"m": json.dumps({"v": 1, "kind": "run_changed", "run_pk": 1})})
        out_of_range = await dead_letter(redis, stream_prefix, queue, "run_task.ti_id")
        assert out_of_range["error"] == \
            f"run_task.ti_id: Input should be less than or equal to {BIGINT_MAX}"
        await dead_letter(redis, stream_prefix, queue, "does not belong on a queue")

        assert pids(cluster) == before, cluster.log("worker")[-3000:]
        assert (await tis(cluster, run_id))["hold"] == held  # same try, same worker, running
        await sql(cluster, "DROP TRIGGER refuse_claim ON task_instance")
        release.touch()
        doc = await cluster.wait_run(run_id, 60)
        assert doc["state"] == "success", doc
        assert {t["task_id"]: t["try_number"] for t in doc["tasks"]} == {"hold": 1, "poison": 1}
        assert pids(cluster) == before
    finally:
        await redis.aclose()


async def test_scheduler_dead_letters_what_it_cannot_handle_and_other_runs_go_on(
        cluster: Cluster, stream_prefix):
    started, release = hold_dag(cluster)
    cluster.start_all()
    redis = aioredis.from_url(cluster.env["SLUICE_REDIS_URL"])
    events, triggers = f"{stream_prefix}:events", f"{stream_prefix}:triggers"
    try:
        first = await trigger(cluster, "bus_faults")
        held = await running(cluster, first, "hold")
        before = pids(cluster)

        await redis.xadd(events, {"m": json.dumps({"v": 1, "kind": "run_changed",
                                                    "run_pk": BIGINT_MAX + 1})})
        await redis.xadd(triggers, {"m": json.dumps({"v": 1, "kind": "run_task",
                                                      "ti_id": 1, "try_number": 1})})
        reason = await dead_letter(redis, stream_prefix, events, "run_changed.run_pk")
        assert reason["error"] == \
            f"run_changed.run_pk: Input should be less than or equal to {BIGINT_MAX}"
        await dead_letter(redis, stream_prefix, triggers, "does not belong on the triggers")

        # a pass over the second run raises in PostgreSQL (starting it is refused)
        await sql(cluster, REFUSE + "CREATE TRIGGER refuse_start BEFORE UPDATE ON dag_run"
                  " FOR EACH ROW WHEN (NEW.conf::text LIKE '%poison%' AND NEW.state = 'running')"
                  " EXECUTE FUNCTION refuse();")
        second = await trigger(cluster, "bus_faults", conf={"poison": True})
        failed = await dead_letter(redis, stream_prefix, events, "refused by the test")
        assert failed["error"].startswith("RaiseError: refused by the test"), failed
        assert json.loads(failed["m"])["kind"] == "run_changed"

        assert pids(cluster) == before, cluster.log("scheduler")[-3000:]
        assert (await tis(cluster, first))["hold"] == held
        assert "run_pass_failed" in cluster.log("scheduler") or \
            "stream_message_failed" in cluster.log("scheduler")
        await sql(cluster, "DROP TRIGGER refuse_start ON dag_run")
        release.touch()
        for run_id in (first, second):
            doc = await cluster.wait_run(run_id, 60)
            assert doc["state"] == "success", doc
            assert all(t["try_number"] == 1 for t in doc["tasks"]), doc["tasks"]
        assert pids(cluster) == before
    finally:
        await redis.aclose()


async def _exists(path) -> bool:
    return path.exists()


# ----------------------------------------------------------- dead consumers


async def test_entries_a_killed_worker_read_are_taken_by_another_within_the_claim_interval(
        cluster: Cluster, stream_prefix):
    """Killed after its read, before its ack: the next worker claims the entry.

    The queued re-send from the database is pushed out of reach (300 s), so
    only the claim can deliver the entry again.
    """
    interval_s = 2.0
    cluster.env.update(SLUICE_CLAIM_INTERVAL_S=str(interval_s), SLUICE_QUEUED_RESEND_AFTER_S="300")
    cluster.write_dag("chain.py", CHAIN_DAG.format(n=1))
    # the worker's claim waits on a lock the test holds: it has read the entry, not acked it
    await sql(cluster, """
        CREATE FUNCTION wait_for_test() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_advisory_xact_lock(4242); RETURN NEW; END $$;
        CREATE TRIGGER wait_for_test BEFORE UPDATE ON task_instance FOR EACH ROW
          WHEN (NEW.state = 'running') EXECUTE FUNCTION wait_for_test();""")
    lock = await cluster.connect()
    redis = aioredis.from_url(cluster.env["SLUICE_REDIS_URL"])
    queue = f"{stream_prefix}:queue:default"
    try:
        await lock.execute("SELECT pg_advisory_lock(4242)")
        cluster.start("scheduler")
        first = cluster.start("worker", name="worker1")
        run_id = await trigger(cluster, "chain")

        async def read_not_acked():
            try:
                consumers = await redis.xinfo_consumers(queue, "workers")
            except Exception:  # noqa: BLE001 - no group yet
                return False
            return any(c["name"].decode().endswith(f"-{first.pid}") and c["pending"] == 1
                       for c in consumers)

        await wait_for(read_not_acked, 30, "worker1 to read the entry")
        await wait_for(lambda: _claim_waiting(lock), 30, "worker1's claim to wait on the lock")
        cluster.signal("worker1", signal.SIGKILL)
        first.wait(10)
        # its connection's statement ends with it (PostgreSQL notices a dead client late)
        await lock.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                           " WHERE wait_event_type = 'Lock' AND datname = current_database()")
        await lock.execute("DROP TRIGGER wait_for_test ON task_instance")
        await lock.execute("SELECT pg_advisory_unlock(4242)")
        second = cluster.start("worker", name="worker2")

        async def succeeded():
            return (await tis(cluster, run_id))["s0"]["state"] == "success"

        await wait_for(succeeded, 90, "s0 to succeed on worker2")
        # worker2 claims at its first reads once the entry is idle for an interval; counted from
        # when it is ready (its start imports Airflow and forks its slots first)
        at = logged_at(cluster.log("worker2"), "worker_ready", "stream_entries_reclaimed")
        took = (at["stream_entries_reclaimed"] - at["worker_ready"]).total_seconds()
        assert took < interval_s * 1.5 + 5, f"claimed {took:.1f}s after worker2 was ready"
        assert "queued_resent" not in cluster.log("scheduler")
        ti = (await tis(cluster, run_id))["s0"]
        assert ti["try_number"] == 1, ti
        assert "task_finished" in cluster.log("worker2") and second.poll() is None
        assert (await redis.xpending(queue, "workers"))["pending"] == 0
        assert (await cluster.wait_run(run_id, 30))["state"] == "success"
    finally:
        await redis.aclose()
        await lock.close()


def logged_at(log: str, *events: str) -> dict[str, datetime]:
    """When each named event was first logged (the daemons' JSON lines)."""
    found: dict[str, datetime] = {}
    for line in log.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("event") in events:
                found.setdefault(record["event"], datetime.fromisoformat(record["timestamp"]))
    assert set(found) == set(events), (found, log[-3000:])
    return found


async def _claim_waiting(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        " AND datname = current_database()"))


# ------------------------------------------------------------------ FLUSHALL


@pytest.fixture
async def strict_redis():
    async with strictest_redis() as server:
        yield server


async def test_flushall_during_a_run_leaves_every_daemon_running(
        tmp_path, db_url, stream_prefix, strict_redis: OwnedValkey):
    """Mid-run and again with every daemon blocked in XREADGROUP (Redis 7: UNBLOCKED)."""
    dags = tmp_path / "dags"
    dags.mkdir()
    cluster = Cluster(tmp_path, db_url=db_url, redis_url=strict_redis.url, prefix=stream_prefix,
                      dags_folder=dags)
    redis = aioredis.from_url(strict_redis.url)
    try:
        cluster.write_dag("chain.py", CHAIN_DAG.format(n=6))
        cluster.start("scheduler")
        cluster.start("triggerer")
        cluster.start("worker", name="worker1")
        cluster.start("worker", name="worker2")
        run_id = await trigger(cluster, "chain")
        await wait_for(lambda: _succeeded(cluster, run_id, "s1"), 30, "s1 to succeed")
        before = pids(cluster)
        await strict_redis.flushall()
        doc = await cluster.wait_run(run_id, 60)
        assert doc["state"] == "success", doc
        assert all(t["try_number"] == 1 for t in doc["tasks"]), doc["tasks"]
        assert pids(cluster) == before

        await wait_for(lambda: _all_blocked(redis, 4), 30, "every daemon to block in XREADGROUP")
        await strict_redis.flushall()
        second = await trigger(cluster, "chain")
        assert (await cluster.wait_run(second, 60))["state"] == "success"
        assert pids(cluster) == before, {n: cluster.log(n)[-2000:] for n in cluster.procs}
        assert any("stream_group_recreated" in cluster.log(n) for n in cluster.procs)
    finally:
        cluster.stop_all()
        await redis.aclose()


async def _succeeded(cluster: Cluster, run_id: str, task_id: str) -> bool:
    ti = (await tis(cluster, run_id)).get(task_id)
    return bool(ti and ti["state"] == "success")


async def _all_blocked(redis, n: int) -> bool:
    return await blocked_readers(redis) >= n


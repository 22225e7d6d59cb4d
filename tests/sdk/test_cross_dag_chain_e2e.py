"""A chain across four DAGs end to end, through a second worker and a triggerer killed mid-wait.

``chain_a`` starts ``chain_c`` and ``chain_b`` (``TriggerDagRunOperator``) and waits for
``chain_b`` in its task; ``chain_c`` waits for ``chain_b`` in the triggerer
(``ExternalTaskSensor(deferrable=True)``); ``chain_d`` runs on the asset ``chain_b``
updates. The first worker has one slot, which ``chain_a``'s wait takes: ``chain_b`` needs
the second worker. While ``chain_c`` waits, its triggerer is killed with SIGKILL
and another one takes the trigger over; only then is ``chain_b`` let go. Every run must
succeed, ``chain_d`` consuming ``chain_b``'s event.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from shared.runview import run_document
from tests.cluster import Cluster, own_cluster, wait_for

pytestmark = pytest.mark.timeout(420)

DAGS = Path(__file__).parent / "dags_cross_chain"
WAIT_S = 120.0


@pytest.fixture
async def chain(services, template_db, tmp_path):
    async with own_cluster(services, template_db, tmp_path, name="chain", dags=DAGS) as cluster:
        yield cluster


async def fetchrow(cluster: Cluster, sql: str, *args):
    conn = await cluster.connect()
    try:
        return await conn.fetchrow(sql, *args)
    finally:
        await conn.close()


async def ti(cluster: Cluster, dag_id: str, task_id: str):
    """The instance's state, try and the worker it first ran under (a resumed deferral may
    end on another)."""
    return await fetchrow(
        cluster,
        "SELECT t.state, t.try_number, r.run_id, "
        "       (SELECT l.worker_id FROM task_log l WHERE l.ti_id = t.id "
        "         ORDER BY l.try_number, l.created_at LIMIT 1) AS worker_id "
        "  FROM task_instance t JOIN dag_run r ON r.id = t.run_pk "
        " WHERE r.dag_id = $1 AND t.task_id = $2 ORDER BY r.id DESC LIMIT 1", dag_id, task_id)


async def state_is(cluster: Cluster, dag_id: str, task_id: str, *states: str):
    row = await ti(cluster, dag_id, task_id)
    return row if row is not None and row["state"] in states else None


async def trigger_owner_pid(cluster: Cluster) -> int | None:
    """The pid of the triggerer running ``chain_c.wait_b``'s trigger (None: unclaimed)."""
    row = await fetchrow(
        cluster,
        "SELECT tr.pid FROM trigger g JOIN triggerer tr ON tr.id = g.triggerer_id "
        "  JOIN task_instance t ON t.id = g.ti_id JOIN dag_run r ON r.id = t.run_pk "
        " WHERE r.dag_id = 'chain_c' AND t.task_id = 'wait_b'")
    return None if row is None else row["pid"]


async def finished(cluster: Cluster, dag_id: str, run_id: str) -> dict:
    """The run's document once it has finished (run ids repeat across the chain's DAGs)."""
    async def done():
        conn = await cluster.connect()
        try:
            found = await run_document(conn, run_id, dag_id)
        finally:
            await conn.close()
        return found["doc"] if found and found["doc"]["state"] in ("success", "failed") else None

    return await wait_for(done, WAIT_S, f"run {run_id} of {dag_id} to finish")


async def run_of(cluster: Cluster, dag_id: str) -> dict:
    row = await wait_for(lambda: fetchrow(cluster, "SELECT run_id FROM dag_run WHERE dag_id = $1",
                                          dag_id), WAIT_S, f"a run of {dag_id}")
    return await finished(cluster, dag_id, row["run_id"])


async def test_a_chain_of_four_dags_survives_a_second_worker_and_a_killed_triggerer(chain):
    chain.start("scheduler")
    chain.start("worker", "worker1", SLUICE_WORKER_CONCURRENCY="1")
    chain.start("triggerer", "triggerer1")
    for dag_id in ("chain_a", "chain_b", "chain_c", "chain_d"):
        await chain.wait_dag(dag_id, timeout=120)
    a_run = await chain.trigger("chain_a")

    # the first worker's only slot waits for chain_b, which cannot start there
    waiting = await wait_for(lambda: state_is(chain, "chain_a", "trigger_b", "running"), WAIT_S,
                             "chain_a.trigger_b to wait in the first worker")
    chain.start("worker", "worker2")
    held = await wait_for(lambda: state_is(chain, "chain_b", "hold", "running"), WAIT_S,
                          "chain_b.hold to run in the second worker")
    deferred = await wait_for(lambda: state_is(chain, "chain_c", "wait_b", "deferred"), WAIT_S,
                              "chain_c.wait_b to defer")
    first_pid = chain.procs["triggerer1"].pid
    await wait_for(lambda: _is(trigger_owner_pid(chain), first_pid), WAIT_S,
                   "the first triggerer to run chain_c's trigger")

    chain.signal("triggerer1", signal.SIGKILL)
    second = chain.start("triggerer", "triggerer2")
    await wait_for(lambda: _is(trigger_owner_pid(chain), second.pid), WAIT_S,
                   "the second triggerer to take chain_c's trigger over")
    assert (await ti(chain, "chain_c", "wait_b"))["state"] == "deferred"
    (chain.dags_folder / "release").write_text("go")

    a = await finished(chain, "chain_a", a_run)
    b, c, d = [await run_of(chain, dag_id) for dag_id in ("chain_b", "chain_c", "chain_d")]
    for doc in (a, b, c, d):
        assert doc["state"] == "success", (doc, chain.log("worker2")[-3000:])
    assert Cluster.by_task(c)["after_b"]["return_value"] == "chain_b published"
    assert Cluster.by_task(d)["consume"]["return_value"] == [
        ["chain_b", b["run_id"], {"published_by": b["run_id"]}]]
    assert b["run_id"] == held["run_id"] and c["run_id"] == deferred["run_id"]
    # chain_a's wait held the first worker's only slot: chain_b ran in the second
    first_worker = waiting["worker_id"]
    assert first_worker is not None
    for task_id in ("hold", "publish"):
        row = await ti(chain, "chain_b", task_id)
        assert row["worker_id"] not in (None, first_worker), (task_id, row)


async def _is(value, expected) -> bool:
    return (await value) == expected

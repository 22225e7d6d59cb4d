"""The web UI's server side: graph layout and grid summaries (pure), the live event
hub on real Redis, and the grid endpoint of a 10,000-instance mapped run."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from urllib.parse import quote

import anyio

from apiserver.ui.events import EventHub
from apiserver.ui.graph import grid_rows, layout
from apiserver.ui.grid import overall, summarize
from shared import bus
from shared.messages import DagsChanged, RunChanged
from shared.serialization import DagSpec
from tests.api_server import call, login, start_api_server


def spec(*tasks: dict) -> DagSpec:
    return DagSpec.model_validate({"dag_id": "d", "fileloc": "f.py", "tasks": [
        {"operator": "Op", "upstream": [], "downstream": [], **t} for t in tasks]})


GROUPED = spec(
    {"task_id": "start", "downstream": ["g.a"]},
    {"task_id": "g.a", "group_id": "g", "upstream": ["start"], "downstream": ["g.inner.b"],
     "mapped_group": "g"},
    {"task_id": "g.inner.b", "group_id": "g.inner", "upstream": ["g.a"], "downstream": ["end"],
     "mapped_group": "g"},
    {"task_id": "end", "upstream": ["g.inner.b"], "mapped": {"kind": "expand"}},
)


def test_groups_are_boxes_around_their_members_and_never_overlap_others():
    nodes = {n["id"]: n for n in layout(GROUPED)["nodes"]}
    inside = lambda outer, n: (outer["x"] <= n["x"] and n["x"] + n["w"] <= outer["x"] + outer["w"]  # noqa: E731
                               and outer["y"] <= n["y"] and n["y"] + n["h"] <= outer["y"] + outer["h"])
    assert inside(nodes["g"], nodes["g.a"]) and inside(nodes["g"], nodes["g.inner"])
    assert inside(nodes["g.inner"], nodes["g.inner.b"])
    for outside in ("start", "end"):
        box = nodes[outside]
        assert box["x"] + box["w"] <= nodes["g"]["x"] or box["x"] >= nodes["g"]["x"] + nodes["g"]["w"]
    assert nodes["start"]["x"] < nodes["g"]["x"] < nodes["end"]["x"]  # left to right
    assert nodes["g"]["mapped"] and nodes["end"]["mapped"] and not nodes["start"]["mapped"]
    assert nodes["g.inner.b"]["label"] == "b"


def test_grid_rows_follow_the_graph_with_groups_indented():
    rows = [(r["id"], r["depth"]) for r in grid_rows(GROUPED)]
    assert rows == [("start", 0), ("g", 0), ("g.a", 1), ("g.inner", 1), ("g.inner.b", 2),
                    ("end", 0)]


def test_a_cycle_between_groups_is_laid_out_not_refused():
    # a -> x (outside the group) -> b (back inside): the group and x depend on each other
    s = spec({"task_id": "g.a", "group_id": "g", "downstream": ["x"]},
             {"task_id": "x", "upstream": ["g.a"], "downstream": ["g.b"]},
             {"task_id": "g.b", "group_id": "g", "upstream": ["x"]})
    out = layout(s)
    assert {n["id"] for n in out["nodes"]} == {"g", "g.a", "g.b", "x"}
    assert len(out["edges"]) == 2


def test_a_mapped_task_shows_its_most_telling_state_and_counts():
    rows = [{"run_pk": 1, "task_id": "t", "state": s, "n": n, "mapped": True, "try_number": 1,
             "start_date": datetime(2026, 1, 1, tzinfo=UTC), "end_date": None, "label": None}
            for s, n in (("success", 9000), ("running", 8), (None, 992))]
    cell = summarize(rows)[1]["t"]
    assert cell["state"] == "running" and cell["total"] == 10_000 and cell["mapped"]
    assert cell["counts"] == {"success": 9000, "running": 8, "none": 992}
    assert overall(["success", "failed", "running"]) == "failed"
    assert overall(["success", None]) is None and overall(["success", "skipped"]) == "success"


async def test_the_hub_coalesces_names_and_replays_what_a_page_missed(redis_url, stream_prefix):
    stream = bus.Streams(stream_prefix).events
    asked: list[list[int]] = []

    async def resolve(pks):
        asked.append(pks)
        return [{"run_pk": pk, "dag_id": "d", "run_id": f"r{pk}", "state": "running"} for pk in pks]

    hub = EventHub(redis_url, stream, resolve, flush_s=0.2)
    redis = bus.connect(redis_url)
    try:
        async with hub.subscribe() as queue:
            await _until(lambda: hub.position != "$")  # the follower pinned its start
            await bus.publish(redis, [(stream, RunChanged(run_pk=pk)) for pk in (3, 1, 3, 2)]
                              + [(stream, DagsChanged())])
            with anyio.fail_after(10):
                batch = await queue.get()
            assert [r["run_pk"] for r in batch.runs] == [1, 2, 3] and batch.dags
            assert asked == [[1, 2, 3]]  # one query for the whole batch
            first = batch.id
            await bus.publish(redis, [(stream, RunChanged(run_pk=9))])
            with anyio.fail_after(10):
                second = await queue.get()
        async with hub.subscribe(since=first) as late:  # a page that reconnects
            assert [r["run_pk"] for r in late.get_nowait().runs] == [9]
        async with hub.subscribe(since=second.id) as current:
            assert current.empty()
        hub.stop()
        async with hub.subscribe(since=second.id) as restarted:  # nothing known since then
            assert restarted.get_nowait() == "resync"
    finally:
        hub.stop()
        await redis.aclose()


async def _until(check, timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not check():
            await asyncio.sleep(0.02)


async def test_the_grid_of_a_10000_instance_mapped_run_is_one_summarised_cell(cluster):
    cluster.write_dag("big.py", """
        from datetime import datetime
        from airflow.sdk import dag, task

        @dag(schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
        def big():
            @task
            def gen():
                return list(range(10_000))

            @task
            def work(x):
                return x

            work.expand(x=gen())

        big()
    """)
    cluster.start("scheduler")
    await cluster.wait_dag("big", timeout=120)  # the scheduler imports Airflow first
    cluster.stop("scheduler")  # the run below is a picture: nothing acts on it
    conn = await cluster.connect()
    try:
        pk = await conn.fetchval("INSERT INTO dag_run (dag_id, run_id, run_type, logical_date, "
                                 "state) VALUES ('big', 'r1', 'manual', now(), 'running') "
                                 "RETURNING id")
        await conn.execute("""
            INSERT INTO task_instance (run_pk, task_id, map_index, state, label)
            SELECT $1::bigint, 'work', i, CASE WHEN i < 7000 THEN 'success' ELSE 'queued' END,
                   'file ' || i FROM generate_series(0, 9999) i
            UNION ALL SELECT $1::bigint, 'gen', -1, 'success', NULL""", pk)
    finally:
        await conn.close()
    base = await start_api_server(cluster, {"v": ("viewer", "viewer-password")})
    token = await anyio.to_thread.run_sync(login, base, "v", "viewer-password")
    status, grid = await anyio.to_thread.run_sync(
        lambda: call(f"{base}/ui/api/dags/big/grid", token=token))
    assert status == 200, grid
    assert [r["id"] for r in grid["rows"]] == ["gen", "work"]
    work = grid["cells"][str(pk)]["work"]
    assert (work["state"], work["total"], work["counts"]) == (
        "queued", 10_000, {"success": 7000, "queued": 3000})
    status, page = await anyio.to_thread.run_sync(lambda: call(
        f"{base}/ui/api/dags/big/runs/r1/tasks/work/instances?state=queued&offset=10&limit=5",
        token=token))
    assert [(i["map_index"], i["label"]) for i in page["instances"]] == [
        (7010 + i, f"file {7010 + i}") for i in range(5)]
    status, _ = await anyio.to_thread.run_sync(lambda: call(f"{base}/ui/api/dags/big/grid"))
    assert status == 401  # no token, no grid
    status, missing = await anyio.to_thread.run_sync(lambda: call(
        f"{base}/ui/api/dags/big/runs/{quote('nope')}/tasks/work/0", token=token))
    assert status == 404 and "nope" in missing["detail"]

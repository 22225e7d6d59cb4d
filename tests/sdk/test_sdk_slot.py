"""Slots run task tries with Airflow's Task SDK against Sluice's Execution API on PostgreSQL.

Each test serves the real API (``worker.execution_api``) over a fresh database seeded
with Sluice's own queries, and runs tries in a real slot process through its handle.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import psutil
from pydantic import SecretStr

from shared.db import create_pool, q
from worker.execution_api import ApiSettings, bind, create_app, token_for
from worker.execution_api.app import embedded_server
from worker.sdk_slots import SdkSlot, TryResult

DAGS = Path(__file__).parent / "dags_slot"
FILELOC = str(DAGS / "slot_tasks.py")
DAG_ID = "slot_tasks"
RUN_ID = "manual__slot"
MAX_TRIES = {"flaky": 2}


@dataclass
class Api:
    url: str
    settings: ApiSettings
    pool: object


@asynccontextmanager
async def execution_api(db_url: str, home: Path) -> AsyncIterator[Api]:
    """The worker's Execution API on ``db_url``, served on a free local port."""
    settings = ApiSettings(home=home, worker_id="test-worker",
                           api_token_secret=SecretStr("s" * 32))
    pool = await create_pool(db_url)
    sock = bind("127.0.0.1", 0)
    server = embedded_server(create_app(pool, settings))  # cancelled when a test fails: fine
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            try:
                yield Api(f"http://127.0.0.1:{sock.getsockname()[1]}/", settings, pool)
            finally:
                server.should_exit = True
    finally:
        sock.close()
        await pool.close()


@asynccontextmanager
async def slot_for(tmp_path: Path, fork_server=None) -> AsyncIterator[SdkSlot]:
    slot = SdkSlot(DAGS, tmp_path / "airflow", kill_grace_s=1.0, fork_server=fork_server)
    try:
        yield slot
    finally:
        await slot.stop()


async def seed(pool, tasks: list[tuple[str, int]], dag_id: str = DAG_ID,
               fileloc: str = FILELOC, run_id: str = RUN_ID) -> dict[tuple[str, int], dict]:
    """A running manual run of ``dag_id`` with ``tasks`` queued at their first try."""
    async with pool.acquire() as conn:
        await conn.execute(q("upsert_dag"), dag_id, fileloc, "h", {"tasks": []}, False)
        run_pk = await conn.fetchval(q("insert_run"), dag_id, run_id, "manual",
                                     _now(), None, None, {})
        await conn.execute(q("start_run"), run_pk)
        ids, indexes = [t for t, _ in tasks], [m for _, m in tasks]
        n = len(tasks)
        await conn.execute(q("insert_tis"), run_pk, ids, indexes,
                           [MAX_TRIES.get(t, 0) for t in ids], ["default"] * n,
                           ["default_pool"] * n, [1] * n, [1] * n)
        rows = await conn.fetch("SELECT id FROM task_instance WHERE run_pk = $1", run_pk)
        await conn.execute(q("queue_tis"), [r["id"] for r in rows])
        rows = await conn.fetch("SELECT task_id, map_index, uuid, try_number FROM task_instance "
                                "WHERE run_pk = $1", run_pk)
    return {(r["task_id"], r["map_index"]): {"uuid": str(r["uuid"]), "try": r["try_number"]}
            for r in rows}


def request(api: Api, tis: dict, tmp_path: Path, task_id: str, map_index: int = -1,
            dag_id: str = DAG_ID, fileloc: str = FILELOC, run_id: str = RUN_ID) -> dict:
    ti = tis[(task_id, map_index)]
    folder = tmp_path / "logs" / f"run_id={run_id}" / f"task_id={task_id}" / f"map_index={map_index}"
    return {"ti_uuid": ti["uuid"], "token": token_for(api.settings, ti["uuid"]),
            "api_url": api.url, "dag_id": dag_id, "run_id": run_id, "task_id": task_id,
            "map_index": map_index, "try_number": ti["try"], "fileloc": fileloc,
            "log_path": str(folder / f"attempt={ti['try']}.log")}


async def state_of(api: Api, task_id: str, map_index: int = -1) -> str:
    return await api.pool.fetchval(
        "SELECT state FROM task_instance WHERE task_id = $1 AND map_index = $2", task_id, map_index)


async def xcom(api: Api, task_id: str, map_index: int = -1):
    raw = await api.pool.fetchval(
        "SELECT value::text FROM xcom WHERE task_id = $1 AND map_index = $2 "
        "AND key = 'return_value'", task_id, map_index)
    return None if raw is None else json.loads(raw)


def _now():
    from datetime import UTC, datetime

    return datetime.now(UTC)


def log_lines(req: dict) -> list[dict]:
    return [json.loads(line) for line in Path(req["log_path"]).read_text().splitlines()]


# --- tests ---------------------------------------------------------------------------------
async def test_plain_classic_bash_and_mapped_tries_succeed_with_their_xcoms(db_url, tmp_path,
                                                                            monkeypatch):
    monkeypatch.setenv("SLUICE_DATABASE_URL", "postgresql://sluice:secret@db/sluice")
    tasks = [("plain", -1), ("classic", -1), ("bash", -1), ("numbers", -1),
             *[("doubled", i) for i in range(3)]]
    async with execution_api(db_url, tmp_path) as api, slot_for(tmp_path) as slot:
        tis = await seed(api.pool, tasks)
        results: dict[tuple[str, int], TryResult] = {}
        for task_id, map_index in tasks:
            results[task_id, map_index] = await slot.run(
                request(api, tis, tmp_path, task_id, map_index))
        assert {k: (r.state, r.reported, r.error) for k, r in results.items()} == {
            k: ("success", True, None) for k in tasks}
        assert [await state_of(api, *k) for k in tasks] == ["success"] * len(tasks)
        plain = await xcom(api, "plain")
        assert plain == {"answer": 42, "home": str(tmp_path / "airflow"), "sluice": []}
        assert await xcom(api, "classic") == "slot_tasks from PythonOperator"
        assert await xcom(api, "bash") == "bash says 1"
        assert [await xcom(api, "doubled", i) for i in range(3)] == [20, 40, 60]
        assert slot.tries_run == len(tasks)  # one slot process ran them all


async def test_a_mapped_try_reads_its_own_element_of_the_list_it_maps_over(db_url, tmp_path):
    """Each mapped try reads only its element (``worker.sdk_elements``), deserialized as the
    whole list would be, over a cross product, zip, map and concat; the task's own pull of
    that list gets the list as stored; a list holding serde-encoded objects is read whole."""
    from airflow.sdk.serde import deserialize

    crossed = [("described", i) for i in range(12)]  # records (4) x numbers (3)
    others = [*(("zipped", i) for i in range(4)), *(("as_text", i) for i in range(4)),
              *(("joined", i) for i in range(7)), *(("stamped", i) for i in range(2))]
    tasks = [("records", -1), ("numbers", -1), ("stamps", -1), *crossed, *others]
    async with execution_api(db_url, tmp_path) as api, slot_for(tmp_path) as slot:
        tis = await seed(api.pool, tasks)
        for producer in ("records", "numbers", "stamps"):
            assert (await slot.run(request(api, tis, tmp_path, producer))).state == "success"
        stored = {t: await xcom(api, t) for t in ("records", "stamps")}
        elements = dict(await api.pool.fetch(
            "SELECT task_id, count(*) FROM xcom_element GROUP BY task_id"))
        assert elements == {"records": 4, "numbers": 3}  # not stamps: it holds serde objects
        # the whole value altered behind its elements: what a try reads shows which it read
        await api.pool.execute("UPDATE xcom SET value = '[\"altered\", 2, 3, 4]' "
                               "WHERE task_id = 'records' AND key = 'return_value'")
        for task_id, map_index in [*crossed[:-1], *others]:
            result = await slot.run(request(api, tis, tmp_path, task_id, map_index))
            assert (task_id, map_index, result.state, result.error) == \
                (task_id, map_index, "success", None)
        await api.pool.execute("DELETE FROM xcom_element WHERE task_id = 'records'")
        assert (await slot.run(request(api, tis, tmp_path, *crossed[-1]))).state == "success"
        got = [await xcom(api, *k) for k in crossed]
        shown = {t: [await xcom(api, t, i) for i in range(n)]
                 for t, n in (("zipped", 4), ("as_text", 4), ("joined", 7), ("stamped", 2))}
    records, stamps = deserialize(stored["records"]), deserialize(stored["stamps"])
    assert [g["item"] for g in got[:-1]] == [repr(records[i // 3]) for i in range(11)]
    assert [g["n"] for g in got] == [10, 20, 30] * 4
    assert {(g["pulled"], json.dumps(g["whole"])) for g in got} == {
        ("list", '["altered", 2, 3, 4]')}
    assert got[-1]["item"] == repr(4)  # no elements stored: the whole value is read
    assert shown == {
        "zipped": [repr((r, n)) for r, n in zip(records, [10, 20, 30, 0], strict=True)],
        "as_text": [repr(str(r)) for r in records],
        "joined": [repr(v) for v in [10, 20, 30, *records]],
        "stamped": [repr(v) for v in stamps]}


async def test_each_try_a_slot_runs_gets_the_operator_as_its_file_defines_it(db_url, tmp_path):
    """Rendering templates and ``execute`` change the operator in place; in Airflow each try
    parses its file afresh, so a later try in the same slot must not see those changes."""
    async with execution_api(db_url, tmp_path) as api, slot_for(tmp_path) as slot:
        for run_id in ("manual__first", "manual__second"):
            tis = await seed(api.pool, [("counting", -1)], run_id=run_id)
            result = await slot.run(request(api, tis, tmp_path, "counting", run_id=run_id))
            assert (result.state, result.error) == ("success", None)
        rows = await api.pool.fetch(
            "SELECT r.run_id, x.value::text FROM xcom x JOIN dag_run r ON r.id = x.run_pk "
            "WHERE x.task_id = 'counting' AND x.key = 'return_value' ORDER BY r.run_id")
        assert [(r["run_id"], json.loads(r["value"])) for r in rows] == [
            ("manual__first", {"note": "rendered for manual__first", "runs": 1}),
            ("manual__second", {"note": "rendered for manual__second", "runs": 1})]
        assert slot.tries_run == 2  # one slot process ran both


async def test_every_line_a_task_writes_is_in_its_log_with_time_and_level(db_url, tmp_path):
    async with execution_api(db_url, tmp_path) as api, slot_for(tmp_path) as slot:
        tis = await seed(api.pool, [("chatty", -1), ("noop", -1)])
        req = request(api, tis, tmp_path, "chatty")
        assert (await slot.run(req)).state == "success"
        lines = log_lines(req)
        assert all(line["timestamp"].endswith("Z") and line["level"] for line in lines)
        seen = {(line["event"], line["level"], line.get("logger")) for line in lines}
        assert any(e == "operator self.log line -1" and lvl == "info"
                   and name.startswith("airflow.task.operators.") for e, lvl, name in seen)
        assert ("stdlib logging line", "warning", "user.module") in seen
        assert ("a print line", "info", "task.stdout") in seen
        assert ("a stderr line", "error", "task.stderr") in seen
        assert ("a child program line", "info", "task.stdout") in seen
        assert any(e == "::group::Post Execute" for e, _, _ in seen)  # the SDK's own lines
        assert stat.S_IMODE(os.stat(req["log_path"]).st_mode) == 0o600
        noop = request(api, tis, tmp_path, "noop")
        assert (await slot.run(noop)).state == "success"
        assert not any("print line" in line["event"] for line in log_lines(noop))


async def test_failing_skipping_and_deferring_tries_end_as_the_sdk_says(db_url, tmp_path):
    async with execution_api(db_url, tmp_path) as api, slot_for(tmp_path) as slot:
        tis = await seed(api.pool, [("flaky", -1), ("skipper", -1), ("deferring", -1)])
        assert await api.pool.fetchval("SELECT count(*) FROM trigger") == 0
        flaky = await slot.run(request(api, tis, tmp_path, "flaky"))
        assert (flaky.state, flaky.reported, flaky.error) == (
            "up_for_retry", True, "ValueError: not this time")
        assert await state_of(api, "flaky") == "up_for_retry"
        assert (await slot.run(request(api, tis, tmp_path, "skipper"))).state == "skipped"
        assert await state_of(api, "skipper") == "skipped"
        assert (await slot.run(request(api, tis, tmp_path, "deferring"))).state == "deferred"
        assert await state_of(api, "deferring") == "deferred"
        trigger = await api.pool.fetchval("SELECT classpath FROM trigger")
        assert trigger == "airflow.providers.standard.triggers.temporal.DateTimeTrigger"


async def test_a_task_missing_from_its_file_is_rescheduled_as_airflow_does(db_url, tmp_path):
    async with execution_api(db_url, tmp_path) as api, slot_for(tmp_path) as slot:
        tis = await seed(api.pool, [("gone", -1)])
        result = await slot.run(request(api, tis, tmp_path, "gone"))
        assert (result.state, result.reported, result.error) == (
            "up_for_reschedule", True, f"task 'gone' not found in DAG 'slot_tasks' ({FILELOC})")
        assert await state_of(api, "gone") == "deferred"  # Sluice's reschedule: a timed wait


async def test_a_task_that_exits_the_slot_costs_its_try_only(db_url, tmp_path):
    async with execution_api(db_url, tmp_path) as api, slot_for(tmp_path) as slot:
        tis = await seed(api.pool, [("noop", -1), ("exits", -1), ("plain", -1)])
        assert (await slot.run(request(api, tis, tmp_path, "noop"))).state == "success"
        first_pid = slot.pid
        lost = await slot.run(request(api, tis, tmp_path, "exits"))
        assert (lost.state, lost.slot_lost, lost.error) == (
            None, True, "task process exited unexpectedly (exit code 3)")
        assert not slot.alive
        assert await state_of(api, "exits") == "running"  # the caller's to fail
        after = await slot.run(request(api, tis, tmp_path, "plain"))
        assert after.state == "success" and slot.pid != first_pid


async def test_a_try_stopped_on_request_runs_on_kill_and_ends_with_its_slot(db_url, tmp_path):
    async with execution_api(db_url, tmp_path) as api, slot_for(tmp_path) as slot:
        tis = await seed(api.pool, [("killable", -1)])
        req = request(api, tis, tmp_path, "killable")
        results = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: _append(results, slot.run(req)))
            with anyio.fail_after(30):
                while not any(line["event"] == "sleeping now" for line in _lines_so_far(req)):
                    await anyio.sleep(0.05)
            await slot.kill(grace_s=1.0)
        [lost] = results
        assert (lost.state, lost.slot_lost, lost.error) == (None, True, "killed on request")
        assert not slot.alive
        assert (tmp_path / "airflow" / "on_kill_ran").read_text() == "killable"


async def _append(results: list, awaitable) -> None:
    results.append(await awaitable)


def _lines_so_far(req: dict) -> list[dict]:
    """The log's complete lines so far (the last may still be being written)."""
    path = Path(req["log_path"])
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text.split("\n")[:-1]]


async def test_a_program_a_try_started_ends_with_the_try(db_url, tmp_path):
    async with execution_api(db_url, tmp_path) as api, slot_for(tmp_path) as slot:
        tis = await seed(api.pool, [("leaves_a_program", -1)])
        assert (await slot.run(request(api, tis, tmp_path, "leaves_a_program"))).state == "success"
        pid = await xcom(api, "leaves_a_program")
        assert slot.alive and not psutil.pid_exists(pid)  # its own session did not save it


async def test_a_wedged_task_is_killed_past_its_timeout_with_its_programs(db_url, tmp_path):
    async with execution_api(db_url, tmp_path) as api, slot_for(tmp_path) as slot:
        tis = await seed(api.pool, [("noop", -1), ("wedged", -1)])
        await slot.run(request(api, tis, tmp_path, "noop"))
        group = slot.pid
        with anyio.fail_after(30):
            lost = await slot.run(request(api, tis, tmp_path, "wedged"))
        assert lost.slot_lost and lost.error.startswith(
            "AirflowTaskTimeout: execution_timeout of 1s exceeded")
        assert 2.0 <= lost.wall_s < 10
        assert not _living_in_group(group)  # the `sleep 300 &` it started died with it


def _living_in_group(pgid: int) -> list[psutil.Process]:
    """Processes of group ``pgid`` not yet dead (a zombie is dead, waiting for its reaper)."""
    living = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                living.append(proc)
        except ProcessLookupError:
            pass
    return living

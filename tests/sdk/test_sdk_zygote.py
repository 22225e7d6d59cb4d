"""Slots forked from the worker's fork server (``worker.sdk_zygote``), Airflow imported once.

Real slot processes run tries against the real Execution API on a fresh database
(the helpers of ``test_sdk_slot``); the fork server is a real process, killed for real.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import psutil
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from shared.standalone import RestartBackoff
from tests.sdk.test_sdk_slot import (
    DAGS,
    _append,
    _lines_so_far,
    execution_api,
    request,
    seed,
    slot_for,
    xcom,
)
from worker.sdk_slots import slot_environment
from worker.sdk_zygote import ForkServer

pytestmark = pytest.mark.timeout(120)

FACTS = "slot_facts"
#: how this test process's Python started SIGINT and SIGHUP, read before any test runs an
#: in-process server that installs handlers: a new process gets the same (both ignored when
#: started in the background by a non-interactive shell, SIGHUP under nohup)
AS_STARTED = {name: repr(signal.getsignal(getattr(signal, name))) for name in ("SIGINT", "SIGHUP")}
FACTS_FILE = str(DAGS / "slot_facts.py")


@asynccontextmanager
async def fork_server(tmp_path: Path, first_backoff_s: float = 1.0) -> AsyncIterator[ForkServer]:
    server = ForkServer(DAGS, slot_environment(os.environ, tmp_path / "airflow", DAGS),
                        RestartBackoff(first_s=first_backoff_s))
    try:
        yield server
    finally:
        await server.stop()


def facts_request(api, tis, tmp_path: Path, task_id: str, map_index: int = -1) -> dict:
    return request(api, tis, tmp_path, task_id, map_index, dag_id=FACTS, fileloc=FACTS_FILE)


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_kib(pid: int) -> dict[str, int]:
    lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]
    return {name: int(rest.split()[0]) for name, _, rest in (x.partition(":") for x in lines)}


def dead(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def until(check, timeout_s: float = 60.0) -> None:
    with anyio.fail_after(timeout_s):
        while not check():
            await anyio.sleep(0.05)


# --- tests ---------------------------------------------------------------------------------
async def test_slots_start_forked_with_airflow_imported_and_share_its_pages(db_url, tmp_path):
    async with execution_api(db_url, tmp_path) as api, fork_server(tmp_path) as server, \
            slot_for(tmp_path, server) as one, slot_for(tmp_path, server) as two:
        tis = await seed(api.pool, [("noop", -1), ("facts", -1)], FACTS, FACTS_FILE)
        assert (await one.run(facts_request(api, tis, tmp_path, "noop"))).state == "success"
        assert (await two.run(facts_request(api, tis, tmp_path, "facts"))).state == "success"
        parent = server.current.proc.pid
        assert {psutil.Process(s.pid).ppid() for s in (one, two)} == {parent}
        for slot in (one, two):
            assert cpu_s(slot.pid) < 0.5  # a slot importing Airflow itself spends 1.5-2 s
            memory = memory_kib(slot.pid)
            assert memory["Pss"] < 0.6 * memory["Rss"]  # most of it shared with the server


async def test_a_forked_slot_starts_as_clean_as_a_new_process(db_url, tmp_path, monkeypatch):
    monkeypatch.setenv("SLUICE_DATABASE_URL", "postgresql://sluice:secret@db/sluice")
    async with execution_api(db_url, tmp_path) as api, fork_server(tmp_path) as server, \
            slot_for(tmp_path, server) as one, slot_for(tmp_path, server) as two:
        tis = await seed(api.pool, [("facts", -1), ("noop", -1)], FACTS, FACTS_FILE)
        assert (await one.run(facts_request(api, tis, tmp_path, "noop"))).state == "success"
        assert (await two.run(facts_request(api, tis, tmp_path, "facts"))).state == "success"
        facts = await xcom(api, "facts")
        assert facts["ppid"] == server.current.proc.pid
        assert facts["sid"] == facts["pgid"] == facts["pid"] == two.pid  # its own session
        assert facts["blocked"] == []
        assert facts["handlers"] == {
            "SIGPIPE": "<Handlers.SIG_IGN: 1>", "SIGCHLD": "<Handlers.SIG_DFL: 0>",
            "SIGUSR1": "<Handlers.SIG_DFL: 0>", "SIGTSTP": "<Handlers.SIG_DFL: 0>",
            **AS_STARTED}  # as a new process would have them
        assert facts["fd0"] == "/dev/null"
        assert not [fd for fd in facts["fds"] if "pidfd" in fd]  # no other slot's handle
        # its channel (read and write) and its keep-alive connection to the API: no other socket
        assert len([fd for fd in facts["fds"] if fd.startswith("socket:")]) <= 3
        assert facts["sluice"] == [] and facts["airflow_home"] == str(tmp_path / "airflow")
        assert facts["frozen"] > 10_000  # the server's imports, out of the collector's reach


async def test_forked_slots_do_not_share_random_state(db_url, tmp_path):
    async with execution_api(db_url, tmp_path) as api, fork_server(tmp_path) as server:
        tis = await seed(api.pool, [("facts", -1), ("noop", -1)], FACTS, FACTS_FILE)
        async with slot_for(tmp_path, server) as one:
            assert (await one.run(facts_request(api, tis, tmp_path, "facts"))).state == "success"
        first = (await xcom(api, "facts"))["random"]
        async with api.pool.acquire() as conn:  # the same try again, on a new slot
            await conn.execute("UPDATE task_instance SET state = 'queued' WHERE task_id = 'facts'")
        async with slot_for(tmp_path, server) as two:
            assert (await two.run(facts_request(api, tis, tmp_path, "facts"))).state == "success"
        assert (await xcom(api, "facts"))["random"] != first


async def test_the_fork_server_dying_costs_its_slots_tries_and_it_is_restarted(db_url, tmp_path):
    async with execution_api(db_url, tmp_path) as api, \
            fork_server(tmp_path, first_backoff_s=0.1) as server, \
            slot_for(tmp_path, server) as slot:
        tis = await seed(api.pool, [("sleeper", -1), ("noop", -1)], FACTS, FACTS_FILE)
        req = facts_request(api, tis, tmp_path, "sleeper")
        results = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.watch)
            tg.start_soon(_append, results, slot.run(req))
            await until(lambda: any(x["event"] == "sleeping now" for x in _lines_so_far(req)))
            first, program = server.current.proc.pid, int(
                (tmp_path / "airflow" / "sleeper_program").read_text())
            os.kill(slot.pid, signal.SIGSTOP)  # its lifeline watch cannot end the program
            os.kill(first, signal.SIGKILL)
            await until(lambda: results)
            [lost] = results
            assert (lost.state, lost.slot_lost, lost.error) == (
                None, True, "task process lost: the slot fork server died")
            await until(lambda: dead(program))  # it left the slot's group, not its fate:
            # the worker ends a slot whose server died with every program below it
            await until(lambda: server.current.proc.pid != first and server.current.alive)
            assert (await slot.run(facts_request(api, tis, tmp_path, "noop"))).state == "success"
            assert psutil.Process(slot.pid).ppid() == server.current.proc.pid
            tg.cancel_scope.cancel()


WORKER = """
import sys
from pathlib import Path

import anyio

from worker.sdk_slots import SdkSlot


async def main():
    slot = SdkSlot(Path(sys.argv[1]), Path(sys.argv[2]))
    await slot.start()
    print(slot.fork_server.current.proc.pid, slot.pid, flush=True)
    await anyio.sleep(300)

anyio.run(main)
"""


async def test_a_worker_killed_takes_its_fork_server_and_slots_with_it(tmp_path):
    script = tmp_path / "a_worker.py"  # not worker.py: its folder comes first on sys.path
    script.write_text(WORKER)
    async with await anyio.open_process([sys.executable, str(script), str(DAGS),
                                         str(tmp_path / "airflow")], stderr=None) as proc:
        with anyio.fail_after(60):
            line = await BufferedByteReceiveStream(proc.stdout).receive_until(b"\n", 1000)
        server_pid, slot_pid = (int(x) for x in line.split())
        assert psutil.Process(slot_pid).ppid() == server_pid
        proc.kill()
        await proc.wait()
        await until(lambda: dead(server_pid) and dead(slot_pid))


async def test_a_fork_server_that_cannot_start_fails_the_try_with_the_reason(db_url, tmp_path,
                                                                          monkeypatch):
    shadow = tmp_path / "shadow" / "airflow"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('a broken installation')\n")
    monkeypatch.setenv("PYTHONPATH", f"{shadow.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    async with execution_api(db_url, tmp_path) as api, \
            fork_server(tmp_path, first_backoff_s=0.1) as server, \
            slot_for(tmp_path, server) as slot:
        tis = await seed(api.pool, [("noop", -1)], FACTS, FACTS_FILE)
        for _ in range(2):  # and again, after a restart
            lost = await slot.run(facts_request(api, tis, tmp_path, "noop"))
            assert (lost.state, lost.slot_lost, lost.error) == (
                None, True, "no slot to run the try: slot fork server died (exit code 1)")

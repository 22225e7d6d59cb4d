"""What one mapped no-op try costs each process: a slot, the Execution API, PostgreSQL.

The scenario
    The mapping benchmark's DAG (``total(noop.expand(x=gen()))``) in a fresh
    database, no daemons: ``gen`` runs first (its XCom and task-map row written
    through the API), then ``--tries`` instances of ``noop`` are queued and run
    one after the other by ``--slots`` slot processes forked by a real fork
    server (``worker.sdk_slots.SdkSlot``), against the Execution API served in
    this process on PostgreSQL. ``--warmup`` tries run first, unmeasured.

What is measured
    CPU per try (user + system, ``/proc``): the slot processes; this process (the
    Execution API and the harness driving the slots: what the worker's own process
    does for a try, minus claims and heartbeats); the PostgreSQL backends of the
    benchmark's database; wall per try.

``--ab BLOCK``: one slot in a child process runs the timed tries in blocks of BLOCK,
alternating the slot's lean paths off (A: the SDK's own ``Client`` over
``LeanTransport``, every reply dumped and validated again, the secrets masker
unmemoised) and on (B: as shipped); CPU per try of each block, so both variants see
the same machine (``--ab`` figures are comparable on a busy machine, absolute ones are
not).

``--profile FILE``: instead of forked slots, one slot runs in a child process of
its own under ``cProfile`` (same code path: ``worker.sdk_slot.Slot.run``), and the
stats are written to FILE (``python -m pstats FILE``). ``--server-profile FILE``
profiles this process (the API) the same way.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio

from bench.common import bench_cluster, load_average
from bench.mapping import DAG_SOURCE
from bench.triggers import cpu_s
from shared.db import create_pool, q

DAG_ID = "bench_slot_cost"


async def seed(pool, fileloc: str, n: int) -> int:
    async with pool.acquire() as conn:
        await conn.execute(q("upsert_dag"), DAG_ID, fileloc, "h", {"tasks": []}, False)
        from datetime import UTC, datetime

        run_pk = await conn.fetchval(q("insert_run"), DAG_ID, "manual__cost", "manual",
                                     datetime.now(UTC), None, None, {})
        await conn.execute(q("start_run"), run_pk)
        await conn.execute(q("insert_tis"), run_pk, ["gen"], [-1], [0], ["default"],
                           ["default_pool"], [1], [1])
        await conn.execute(q("queue_tis"), [r["id"] for r in await conn.fetch(
            "SELECT id FROM task_instance WHERE run_pk = $1", run_pk)])
    return run_pk


async def queue_noops(pool, run_pk: int, n: int) -> list[dict]:
    async with pool.acquire() as conn:
        await conn.execute(q("insert_tis"), run_pk, ["noop"] * n, list(range(n)), [0] * n,
                           ["default"] * n, ["default_pool"] * n, [1] * n, [1] * n)
        ids = [r["id"] for r in await conn.fetch(
            "SELECT id FROM task_instance WHERE run_pk = $1 AND task_id = 'noop'", run_pk)]
        await conn.execute(q("queue_tis"), ids)
        rows = await conn.fetch("SELECT task_id, map_index, uuid, try_number FROM task_instance "
                                "WHERE run_pk = $1 AND task_id = 'noop' ORDER BY map_index", run_pk)
    return [dict(r) for r in rows]


def request(api, row, fileloc: str, logs: Path) -> dict:
    from worker.execution_api import token_for

    ti = str(row["uuid"])
    return {"ti_uuid": ti, "token": token_for(api.settings, ti), "api_url": api.url,
            "dag_id": DAG_ID, "run_id": "manual__cost", "task_id": row["task_id"],
            "map_index": row["map_index"], "try_number": row["try_number"], "fileloc": fileloc,
            "log_path": str(logs / f"{row['task_id']}_{row['map_index']}.log")}


async def backends(pool) -> dict[int, float]:
    """CPU seconds of every backend of the database (the measuring one's too: it is idle)."""
    pids = await pool.fetch("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
    return {r["pid"]: cpu_s(r["pid"]) for r in pids}


def proc_cpu(pid: int) -> float:
    return cpu_s(pid)


async def run(args: argparse.Namespace, root: Path) -> dict:
    from pydantic import SecretStr

    from worker.execution_api import ApiSettings, bind, create_app
    from worker.execution_api.app import embedded_server
    from worker.sdk_slots import SdkSlot, slot_environment
    from worker.sdk_zygote import ForkServer

    async with bench_cluster(root) as (cluster, _services):
        dags = cluster.dags_folder.resolve()
        fileloc = str(cluster.write_dag(f"{DAG_ID}.py", DAG_SOURCE.format(
            sdk="airflow.sdk", dag_id=DAG_ID, n=args.tries + args.warmup,
            max_active_tasks=16)).resolve())
        home = root / "home"
        settings = ApiSettings(home=home, worker_id="cost-worker",
                               api_token_secret=SecretStr("s" * 32),
                               max_map_length=args.tries + args.warmup)
        pool = await create_pool(cluster.db_url, max_size=args.slots * 2 + 2)
        sock = bind("127.0.0.1", 0)
        server = embedded_server(create_app(pool, settings))

        class Api:
            url = f"http://127.0.0.1:{sock.getsockname()[1]}/"

        Api.settings = settings
        logs = root / "logs"
        result: dict = {}
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(server.serve, [sock])
                run_pk = await seed(pool, fileloc, args.tries + args.warmup)
                gen_row = await pool.fetchrow("SELECT task_id, map_index, uuid, try_number FROM "
                                              "task_instance WHERE task_id = 'gen'")
                reqs = [request(Api, r, fileloc, logs)
                        for r in await queue_noops(pool, run_pk, args.tries + args.warmup)]
                if args.profile or args.ab:
                    result = await profiled(args, Api, gen_row, reqs, fileloc, logs, dags, home)
                else:
                    env = slot_environment(os.environ, home / "airflow", dags)
                    fork_server = ForkServer(dags, env)
                    slots = [SdkSlot(dags, home / "airflow", fork_server=fork_server)
                             for _ in range(args.slots)]
                    try:
                        first = await slots[0].run(request(Api, gen_row, fileloc, logs))
                        assert first.state == "success", first
                        result = await measured(args, pool, slots, reqs)
                    finally:
                        for slot in slots:
                            await slot.stop()
                        await fork_server.stop()
                server.should_exit = True
        finally:
            sock.close()
            await pool.close()
        return result


async def measured(args, pool, slots, reqs: list[dict]) -> dict:
    warm, timed = reqs[:args.warmup], reqs[args.warmup:]

    async def drive(items: list[dict]) -> None:
        queue = list(reversed(items))

        async def one(slot):
            while queue:
                r = await slot.run(queue.pop())
                if r.state != "success":
                    raise RuntimeError(f"try ended {r}")

        async with anyio.create_task_group() as tg:
            for slot in slots:
                tg.start_soon(one, slot)

    await drive(warm)
    pids = [s.pid for s in slots]
    me = os.getpid()
    pg0, slot0, me0, wall0 = await backends(pool), [proc_cpu(p) for p in pids], proc_cpu(me), \
        time.perf_counter()
    prof = cProfile.Profile() if args.server_profile else None
    if prof:
        prof.enable()
    await drive(timed)
    if prof:
        prof.disable()
        prof.dump_stats(args.server_profile)
    wall = time.perf_counter() - wall0
    me1, slot1, pg1 = proc_cpu(me), [proc_cpu(p) for p in pids], await backends(pool)
    n = len(timed)
    pg = sum(v - pg0.get(pid, 0.0) for pid, v in pg1.items())
    return {"tries": n, "slots": len(slots), "load": load_average(),
            "slot_ms": round(1000 * (sum(slot1) - sum(slot0)) / n, 3),
            "api_ms": round(1000 * (me1 - me0) / n, 3),
            "postgres_ms": round(1000 * pg / n, 3),
            "wall_ms": round(1000 * wall / n, 3)}


async def profiled(args, api, gen_row, reqs, fileloc, logs, dags, home) -> dict:
    """One slot in a child process of its own, under cProfile, for the timed tries."""
    from worker.sdk_slots import slot_environment

    jobs = Path(tempfile.mkdtemp()) / "jobs.json"
    jobs.write_text(json.dumps({"gen": request(api, gen_row, fileloc, logs), "reqs": reqs,
                                "warmup": args.warmup, "out": args.profile, "dags": str(dags),
                                "ab": args.ab}, default=str))
    env = slot_environment(os.environ, home / "airflow", dags)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    result = await anyio.run_process([sys.executable, "-m", "bench.slot_cost", "--child",
                                      str(jobs)], env=env, stderr=None, check=True)
    return json.loads(result.stdout.decode().strip().splitlines()[-1])


def child(jobs_path: str) -> None:
    """The profiled slot: what ``worker.sdk_zygote`` preloads, then ``Slot.run`` per try."""
    jobs = json.loads(Path(jobs_path).read_text())
    out = os.fdopen(os.dup(1), "w")
    from worker import sdk_slot, sdk_tasklog
    from worker.sdk_zygote import preload

    preload()
    sink = sdk_tasklog.LogSink(os.dup(2))
    slot = sdk_slot.Slot(sink, sdk_tasklog.capture(sink), Path(jobs["dags"]))
    send = lambda message: None  # noqa: E731
    first = cProfile.Profile(time.process_time)
    first.enable()
    assert slot.run(jobs["gen"], send)["state"] == "success"
    first.disable()
    if jobs["out"]:
        first.dump_stats(jobs["out"] + ".first")
    reqs = jobs["reqs"]
    for req in reqs[:jobs["warmup"]]:
        slot.run(req, send)
    if jobs["ab"]:
        out.write(json.dumps(ab_blocks(slot, reqs[jobs["warmup"]:], jobs["ab"], send)) + "\n")
        out.flush()
        return
    prof = cProfile.Profile(time.process_time)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    prof.enable()
    for req in reqs[jobs["warmup"]:]:
        r = slot.run(req, send)
        if r["state"] != "success":
            raise RuntimeError(r)
    prof.disable()
    n = len(reqs) - jobs["warmup"]
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    prof.dump_stats(jobs["out"])
    out.write(json.dumps({"tries": n, "slot_ms_profiled": round(1000 * cpu / n, 3),
                          "wall_ms": round(1000 * wall / n, 3)}) + "\n")
    out.flush()


def ab_blocks(slot, reqs: list[dict], block: int, send) -> dict:
    """CPU ms per try of alternating blocks: A (lean paths off) and B (on)."""
    from airflow.sdk._shared.secrets_masker.secrets_masker import SecretsMasker
    from airflow.sdk.api.client import Client

    from worker import sdk_inprocess
    from worker.sdk_transport import LeanTransport, ResponseCookies

    remembered = SecretsMasker.should_hide_value_for_key
    as_parsed = sdk_inprocess._AS_PARSED
    lean_client = None
    figures: dict[str, list[float]] = {"A": [], "B": []}
    for number, start in enumerate(range(0, len(reqs) - block + 1, block)):
        variant = "AB"[number % 2]
        if variant == "A":
            lean_client = slot.client
            plain = Client(base_url=str(lean_client.base_url), token="", transport=LeanTransport())
            plain._cookies = ResponseCookies()
            slot.client = plain
            SecretsMasker.should_hide_value_for_key = getattr(remembered, "original", remembered)
            sdk_inprocess._AS_PARSED = ()
        else:
            if lean_client is not None:
                slot.client = lean_client
            SecretsMasker.should_hide_value_for_key = remembered
            sdk_inprocess._AS_PARSED = as_parsed
        cpu = time.process_time()
        for req in reqs[start:start + block]:
            if slot.run(req, send)["state"] != "success":
                raise RuntimeError(req)
        figures[variant].append(1000 * (time.process_time() - cpu) / block)
    return {"block": block, **{f"{k}_ms": [round(v, 3) for v in vs] for k, vs in figures.items()},
            **{f"{k}_median_ms": round(statistics.median(vs), 3) for k, vs in figures.items()}}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(argv[1])
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.slot_cost",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--tries", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--slots", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1, help="measurements, each a fresh database")
    parser.add_argument("--no-uvloop", dest="uvloop", action="store_false",
                        help="serve the API on asyncio's own loop (the worker runs uvloop)")
    parser.add_argument("--profile", help="cProfile a slot's timed tries into this file")
    parser.add_argument("--ab", type=int, default=0, metavar="BLOCK",
                        help="alternate blocks of BLOCK tries with the lean paths off and on")
    parser.add_argument("--server-profile", help="cProfile this process (the API) into this file")
    args = parser.parse_args(argv)
    results = []
    for _ in range(args.repeat):
        root = Path(tempfile.mkdtemp(prefix="sluice-cost-"))
        results.append(anyio.run(run, args, root, backend_options={"use_uvloop": args.uvloop}))
        print(json.dumps(results[-1]), flush=True)
    if len(results) > 1:
        keys = [k for k in results[0] if k.endswith("_ms")]
        print(json.dumps({k: round(statistics.median(r[k] for r in results), 3) for k in keys}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

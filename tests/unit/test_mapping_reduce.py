"""Reduce: a mapped upstream's values as a lazy sequence (``worker/lazy.py``).

The sequences talk to the worker through the runner's ``call`` function (its
RPC boundary): here first a recording fake of it, then the real named SQL
blocks (``xcom_count``, ``xcom_range``, ``xcom_item`` of shared/db/queries.sql)
on real rows in PostgreSQL, reached from the sequence's thread as the worker
reaches them from the runner's.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta
from types import SimpleNamespace

import anyio
import anyio.from_thread
import pytest

from shared.db import q
from shared.sdk import PythonOperator, serde
from worker.lazy import PAGE, LazyValueSequence, LazyXComSequence
from worker.runner import TaskRunner


class FakeWorker:
    """The worker's answers for one mapped upstream whose surviving values are ``values``.

    ``values`` is what the database returns: ordered by map_index, missing ones dropped.
    """

    def __init__(self, values: list):
        self.values = values
        self.calls: list[tuple[str, dict]] = []

    def __call__(self, method: str, **args):
        self.calls.append((method, args))
        if method == "xcom_count":
            return len(self.values)
        if method == "xcom_range":
            page = self.values[args["offset"]:args["offset"] + args["limit"]]
            return json.dumps([serde.to_jsonable(v) for v in page])
        if method == "xcom_item":
            value = self.values[args["index"]]
            return json.dumps({"value": serde.to_jsonable(value)})
        raise AssertionError(f"unexpected call {method}")

    def methods(self) -> list[str]:
        return [m for m, _ in self.calls]


def lazy(values: list) -> tuple[LazyXComSequence, FakeWorker]:
    worker = FakeWorker(values)
    return LazyXComSequence(worker, "double", "return_value"), worker


# --- LazyXComSequence as a sequence -----------------------------------------------------------

def test_len_is_one_count_call_and_fetches_no_value():
    seq, worker = lazy(list(range(10_000)))
    assert len(seq) == 10_000
    assert len(seq) == 10_000
    assert worker.calls == [("xcom_count", {"task_id": "double", "key": "return_value"})]


def test_index_and_negative_index_fetch_one_page():
    seq, worker = lazy([f"v{i}" for i in range(1200)])
    assert (seq[0], seq[499], seq[-1], seq[-1200]) == ("v0", "v499", "v1199", "v0")
    assert worker.methods() == ["xcom_count", "xcom_range", "xcom_range"]
    assert [a["offset"] for m, a in worker.calls if m == "xcom_range"] == [0, 1000]
    assert all(a["limit"] == PAGE for m, a in worker.calls if m == "xcom_range")
    for bad in (1200, -1201):
        with pytest.raises(IndexError, match="list index out of range"):
            seq[bad]


def test_slices_behave_as_list_slices():
    values = list(range(10))
    seq, _ = lazy(values)
    for s in (slice(2, 5), slice(None, None, -1), slice(-3, None), slice(1, 100, 3), slice(5, 2),
              slice(-100, 2)):
        assert seq[s] == values[s]


def test_iteration_equality_and_list_conversion():
    values = [1, "two", (3, 4), {"five": 5}, [6], None, datetime(2026, 1, 1), timedelta(seconds=8)]
    seq, _ = lazy(values)
    assert list(seq) == values and seq.to_list() == values
    assert seq == values and seq == tuple(values) and seq == lazy(values)[0]
    assert seq != values[:-1] and seq != [*values, 9] and seq != 5
    assert repr(seq) == "LazyXComSequence([8 items])"


def test_iterating_ten_thousand_values_costs_a_count_and_one_call_per_page():
    seq, worker = lazy(list(range(10_000)))
    assert sum(seq) == sum(range(10_000))
    assert worker.methods() == ["xcom_count"] + ["xcom_range"] * (10_000 // PAGE)


def test_an_empty_upstream_is_an_empty_sequence():
    seq, worker = lazy([])
    assert len(seq) == 0 and list(seq) == [] and seq == [] and seq[:] == []
    with pytest.raises(IndexError):
        seq[0]
    assert worker.methods() == ["xcom_count"]


def test_a_task_returning_the_sequence_stores_a_list(tmp_path):
    seq, _ = lazy([3, 1, 2])
    runner = TaskRunner(tmp_path, channel=None, max_xcom_bytes=1 << 20)
    try:
        task = PythonOperator(task_id="reduce", python_callable=print)
        xcoms = runner._xcoms(task, SimpleNamespace(pushed={}), seq)
    finally:
        os.close(runner.stderr_fd)
    assert xcoms == [["return_value", "[3,1,2]"]]


# --- LazyValueSequence: one upstream's list, element by element --------------------------------

def test_value_sequence_knows_its_length_and_fetches_only_the_elements_used():
    worker = FakeWorker(["a", "b", "c"])
    seq = LazyValueSequence(worker, "gen", "return_value", 3)
    assert len(seq) == 3 and worker.calls == []
    assert (seq[1], seq[-1]) == ("b", "c")
    assert [a["index"] for _, a in worker.calls] == [1, 2]
    assert seq[0:2] == ["a", "b"] and seq.to_list() == ["a", "b", "c"]
    worker.calls.clear()
    for bad in (3, -4):
        with pytest.raises(IndexError, match="list index out of range"):
            seq[bad]
    assert worker.calls == []


def test_value_sequence_decodes_dict_pairs_as_tuples():
    pairs = {"pair": ["k", {"__sluice_type__": "tuple", "items": [1, 2]}]}
    seq = LazyValueSequence(lambda method, **args: json.dumps(pairs), "gen", "return_value", 1)
    assert seq[0] == ("k", (1, 2))


# --- the SQL blocks on real rows ------------------------------------------------------------

N = 10_000


def missing(map_index: int) -> bool:
    """Skipped, failed or returned None: no XCom row."""
    return map_index % 7 == 3


EXPECTED = [i * 2 for i in range(N) if not missing(i)]


async def make_run(db, run_id: str = "r1", day: int = 0) -> int:
    await db.execute("INSERT INTO dag (dag_id, fileloc, source_hash, serialized)"
                     " VALUES ('d', 'd.py', 'h', '{}') ON CONFLICT DO NOTHING")
    return await db.fetchval(
        "INSERT INTO dag_run (dag_id, run_id, run_type, logical_date, state)"
        " VALUES ('d', $1, 'manual', now() + make_interval(days => $2), 'running') RETURNING id",
        run_id, day)


@pytest.fixture
async def rows(db):
    """10,000 mapped instances of ``double`` (value 2*i, every 10th a ~2.5 KB TOASTed payload),
    inserted in random order; plus rows the queries must ignore."""
    run_pk = await make_run(db)
    await db.execute(
        "INSERT INTO xcom (run_pk, task_id, map_index, key, value)"
        " SELECT $1, 'double', g, 'return_value',"
        "        CASE WHEN g % 10 = 0 THEN json_build_array(g * 2, (SELECT string_agg("
        "             md5(g::text || '-' || i::text), '') FROM generate_series(1, 80) i))"
        "             ELSE to_json(g * 2) END"
        "   FROM generate_series(0, $2 - 1) g WHERE g % 7 <> 3 ORDER BY random()", run_pk, N)
    other_run = await make_run(db, "r2", day=1)
    await db.execute(
        "INSERT INTO xcom (run_pk, task_id, map_index, key, value) VALUES"
        " ($1, 'double', -1, 'return_value', '\"placeholder\"'),"
        " ($1, 'double', 3, 'other_key', '\"other key\"'),"
        " ($1, 'other_task', 0, 'return_value', '\"other task\"'),"
        " ($2, 'double', 0, 'return_value', '\"other run\"')", run_pk, other_run)
    return run_pk


def number(raw):
    """A stored value: 2*i, or [2*i, payload] for the TOASTed ones."""
    return raw[0] if isinstance(raw, list) else raw


def through_the_worker(db, run_pk: int, calls: list[str]):
    """The runner's ``call``, answered by the named SQL as worker/daemon.py answers it."""

    def call(method: str, **args):
        calls.append(method)
        match method:
            case "xcom_count":
                return anyio.from_thread.run(db.fetchval, q("xcom_count"), run_pk,
                                             args["task_id"], args["key"])
            case "xcom_range":
                rows = anyio.from_thread.run(db.fetch, q("xcom_range"), run_pk, args["task_id"],
                                             args["key"], args["offset"], args["limit"])
                return "[" + ",".join(r["value"] for r in rows) + "]"
            case "xcom_item":
                return anyio.from_thread.run(db.fetchval, q("xcom_item"), run_pk,
                                             args["task_id"], args["key"], args["index"])
        raise AssertionError(f"unexpected call {method}")

    return call


async def test_xcom_count_counts_the_surviving_values_without_reading_them(db, rows):
    toast = await db.fetchval("SELECT reltoastrelid FROM pg_class WHERE oid = 'xcom'::regclass")
    fetched = "SELECT pg_stat_get_xact_blocks_fetched($1::oid)"
    async with db.transaction():
        before = await db.fetchval(fetched, toast)
        assert await db.fetchval(q("xcom_count"), rows, "double", "return_value") == len(EXPECTED)
        after_count = await db.fetchval(fetched, toast)
        await db.fetch(q("xcom_range"), rows, "double", "return_value", 0, 100)
        after_range = await db.fetchval(fetched, toast)
    assert after_count == before  # no TOASTed value read to count
    assert after_range > after_count  # while reading values does read them
    assert await db.fetchval(q("xcom_count"), rows, "nothing", "return_value") == 0


async def test_xcom_range_pages_in_map_index_order_with_missing_values_dropped(db, rows):
    async def page(offset: int, limit: int) -> list:
        got = await db.fetch(q("xcom_range"), rows, "double", "return_value", offset, limit)
        return [number(json.loads(r["value"])) for r in got]

    assert await page(0, 5) == [0, 2, 4, 8, 10]  # map_index 3 left no value
    assert await page(len(EXPECTED) - 2, PAGE) == EXPECTED[-2:]
    assert await page(len(EXPECTED), PAGE) == []
    whole = [v for offset in range(0, len(EXPECTED), PAGE) for v in await page(offset, PAGE)]
    assert whole == EXPECTED


async def test_the_lazy_sequence_over_real_rows(db, rows):
    calls: list[str] = []
    seq = LazyXComSequence(through_the_worker(db, rows, calls), "double", "return_value")

    def use() -> tuple:
        n = len(seq)
        counted = list(calls)
        return n, counted, number(seq[0]), number(seq[-1]), number(seq[5000]), [number(v) for v in seq]

    n, counted, first, last, middle, everything = await anyio.to_thread.run_sync(use)
    assert n == len(EXPECTED) and counted == ["xcom_count"]
    assert (first, last, middle) == (EXPECTED[0], EXPECTED[-1], EXPECTED[5000])
    assert everything == EXPECTED
    pages = -(-len(EXPECTED) // PAGE)
    assert calls == ["xcom_count"] + ["xcom_range"] * pages  # each page fetched once


async def test_an_upstream_with_no_value_is_an_empty_sequence(db):
    run_pk = await make_run(db)
    await db.execute(q("put_xcoms"), run_pk, "other", 0, ["return_value"], ["1"])
    calls: list[str] = []
    seq = LazyXComSequence(through_the_worker(db, run_pk, calls), "nothing", "return_value")
    assert await anyio.to_thread.run_sync(lambda: (len(seq), list(seq))) == (0, [])
    assert calls == ["xcom_count"]


async def test_xcom_item_reads_one_element_of_a_list_tuple_or_dict(db):
    run_pk = await make_run(db)
    stored = {"as_list": ["a", {"b": [1]}, None], "as_tuple": ("x", "y"),
              "as_dict": {"zeta": 1, "alpha": [2], "mu": None}}  # insertion order, not sorted
    for task_id, value in stored.items():  # as the worker stores an unmapped task's output
        await db.execute(q("put_xcoms"), run_pk, task_id, -1, ["return_value"], [serde.dumps(value)])
    item = q("xcom_item")
    assert json.loads(await db.fetchval(item, run_pk, "as_list", "return_value", 1)) == {"value": {"b": [1]}}
    assert json.loads(await db.fetchval(item, run_pk, "as_tuple", "return_value", 1)) == {"value": "y"}
    assert [json.loads(await db.fetchval(item, run_pk, "as_dict", "return_value", i))
            for i in range(3)] == [{"pair": ["zeta", 1]}, {"pair": ["alpha", [2]]}, {"pair": ["mu", None]}]

    calls: list[str] = []
    call = through_the_worker(db, run_pk, calls)

    def read(task_id: str) -> list:
        return LazyValueSequence(call, task_id, "return_value", len(stored[task_id])).to_list()

    assert await anyio.to_thread.run_sync(read, "as_list") == ["a", {"b": [1]}, None]
    assert await anyio.to_thread.run_sync(read, "as_tuple") == ["x", "y"]
    assert await anyio.to_thread.run_sync(read, "as_dict") == [("zeta", 1), ("alpha", [2]), ("mu", None)]
    assert set(calls) == {"xcom_item"}

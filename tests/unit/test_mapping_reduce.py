"""Reduce: a mapped upstream's values as the Execution API reads them from PostgreSQL.

A task consuming a mapped task's output gets the Task SDK's lazy sequence;
its length, items and slices come from the Execution API's named SQL blocks
(``api_xcom_count``, ``api_xcom_values``, ``api_xcom_item``,
``api_xcom_item_from_end`` of shared/db/queries.sql): the values of the
instances that left one, in ``map_index`` order, with the missing ones
(skipped, failed, returned ``None``) dropped. Here on 10,000 real rows.
"""

from __future__ import annotations

import json

import pytest

from shared.db import q

N = 10_000
PAGE = 1000


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
        " ($1, 'double', 3, 'other_key', '\"other key\"'),"
        " ($1, 'other_task', 0, 'return_value', '\"other task\"'),"
        " ($2, 'double', 0, 'return_value', '\"other run\"')", run_pk, other_run)
    return run_pk


def number(raw: str):
    """A stored value: 2*i, or [2*i, payload] for the TOASTed ones."""
    value = json.loads(raw)
    return value[0] if isinstance(value, list) else value


async def count(db, task_id: str = "double", run_id: str = "r1") -> int:
    return await db.fetchval(q("api_xcom_count"), "d", run_id, task_id, "return_value")


async def page(db, offset: int, limit: int | None) -> list:
    got = await db.fetch(q("api_xcom_values"), "d", "r1", "double", "return_value", offset, limit)
    return [number(r["value"]) for r in got]


async def test_the_count_is_the_surviving_values_read_without_their_payloads(db, rows):
    toast = await db.fetchval("SELECT reltoastrelid FROM pg_class WHERE oid = 'xcom'::regclass")
    fetched = "SELECT pg_stat_get_xact_blocks_fetched($1::oid)"
    async with db.transaction():
        before = await db.fetchval(fetched, toast)
        assert await count(db) == len(EXPECTED)
        after_count = await db.fetchval(fetched, toast)
        await page(db, 0, 100)
        after_range = await db.fetchval(fetched, toast)
    assert after_count == before  # no TOASTed value read to count
    assert after_range > after_count  # while reading values does read them
    assert await count(db, "nothing") == 0
    assert await count(db, run_id="r2") == 1


async def test_values_page_in_map_index_order_with_missing_ones_dropped(db, rows):
    assert await page(db, 0, 5) == [0, 2, 4, 8, 10]  # map_index 3 left no value
    assert await page(db, len(EXPECTED) - 2, PAGE) == EXPECTED[-2:]
    assert await page(db, len(EXPECTED), PAGE) == []
    whole = [v for offset in range(0, len(EXPECTED), PAGE) for v in await page(db, offset, PAGE)]
    assert whole == EXPECTED
    assert await page(db, 0, None) == EXPECTED  # no limit: the whole sequence


async def test_an_item_is_a_position_among_the_surviving_values_from_either_end(db, rows):
    async def item(offset: int) -> int | None:
        if offset >= 0:
            raw = await db.fetchval(q("api_xcom_item"), "d", "r1", "double", "return_value", offset)
        else:
            raw = await db.fetchval(q("api_xcom_item_from_end"), "d", "r1", "double",
                                    "return_value", -1 - offset)
        return None if raw is None else number(raw)

    for offset in (0, 1, 3, 5000, len(EXPECTED) - 1, -1, -2, -len(EXPECTED)):
        assert await item(offset) == EXPECTED[offset]
    assert await item(len(EXPECTED)) is None
    assert await item(-len(EXPECTED) - 1) is None


async def test_an_upstream_with_no_value_is_an_empty_sequence(db):
    run_pk = await make_run(db)
    await db.execute(q("put_xcoms"), run_pk, "other", 0, ["return_value"], ["1"])
    assert await count(db) == 0
    assert await page(db, 0, None) == []
    assert await db.fetchval(q("api_xcom_item"), "d", "r1", "double", "return_value", 0) is None


async def test_values_keep_their_stored_text_and_key_order(db):
    run_pk = await make_run(db)
    stored = ['{"zeta":1,"alpha":[2,{"y":0,"b":1}]}', '[1,"two",null]', '"é"']
    for i, text in enumerate(stored):
        await db.execute(q("put_xcoms"), run_pk, "double", i, ["return_value"], [text])
    got = await db.fetch(q("api_xcom_values"), "d", "r1", "double", "return_value", 0, None)
    assert [r["value"] for r in got] == stored
    assert list(json.loads(got[0]["value"])) == ["zeta", "alpha"]

"""An unmapped producer's return value, one ``xcom_element`` row per element.

``finish_ti`` parses the value once when the producer's try succeeds; each
mapped instance then reads its own element with ``xcom_item``, a primary-key
lookup, instead of PostgreSQL re-parsing the whole list for every instance
(quadratic over a run). The answers must be exactly those of the old query,
which parsed the stored value (``PARSED_ITEM`` below, still the fallback for a
value without element rows), and the rows must follow their XCom row: replaced
by a retry, deleted by a fresh try's claim, ``sluice runs clear`` or the run's
deletion.
"""

from __future__ import annotations

import json
import random
import statistics
import time

import anyio
import anyio.to_thread

from shared.db import q
from shared import serde
from tests.unit.test_mapping_reduce import make_run, through_the_worker
from worker.lazy import LazyValueSequence

# xcom_item before xcom_element: element $4 parsed out of the stored value.
PARSED_ITEM = """
SELECT CASE
         WHEN json_typeof(x.value) = 'array' THEN json_build_object('value', x.value -> $4::int)
         WHEN (x.value ->> '__sluice_type__') = 'tuple'
              THEN json_build_object('value', x.value -> 'items' -> $4::int)
         ELSE (SELECT json_build_object('pair', json_build_array(e.key, e.value))
                 FROM json_each(x.value) WITH ORDINALITY AS e(key, value, n) WHERE e.n = $4::int + 1)
       END::text
  FROM xcom x
 WHERE x.run_pk = $1 AND x.task_id = $2 AND x.key = $3 AND x.map_index = -1
"""

OUTPUTS = {
    "as_list": ["a", {"zeta": 1, "alpha": [2, {"y": 0, "b": 1}]}, None, 3.5, [1, [2]], True],
    "as_tuple": ("x", {"z": 1, "a": 2}, (1, 2), None),
    "as_dict": {"zeta": 1, "alpha": {"m": [2], "b": None}, "mu": None, "": "empty key",
                "k\"ey": ("t", 1)},  # insertion order, not sorted; values keep theirs
}


async def running_ti(db, run_pk: int, task_id: str, map_index: int = -1, try_number: int = 1) -> int:
    return await db.fetchval(
        "INSERT INTO task_instance (run_pk, task_id, map_index, state, try_number, max_tries,"
        " worker_id) VALUES ($1, $2, $3, 'running', $4, 3, 'w') RETURNING id",
        run_pk, task_id, map_index, try_number)


async def finish(db, ti: int, try_number: int, value, *, producer: bool = True, extra=()):
    """As the worker records a successful try (worker/daemon.py ``_record``)."""
    keys = ["return_value", *(k for k, _ in extra)]
    values = [serde.dumps(value), *(v for _, v in extra)]
    length = len(value) if producer else None
    dict_keys = list(value) if producer and isinstance(value, dict) else None
    row = await db.fetchrow(q("finish_ti"), ti, try_number, "success", None, None, 0.0, "w",
                            keys, values, length, dict_keys)
    assert row["state"] == "success"


async def elements(db, run_pk: int, task_id: str) -> list[tuple]:
    rows = await db.fetch(
        "SELECT map_index, key, idx, dict_key, value::text AS value FROM xcom_element"
        " WHERE run_pk = $1 AND task_id = $2 ORDER BY map_index, key, idx", run_pk, task_id)
    return [tuple(r) for r in rows]


async def items(db, query: str, run_pk: int, task_id: str, n: int) -> list:
    return [await db.fetchval(query, run_pk, task_id, "return_value", i) for i in range(n)]


async def test_finish_ti_writes_one_row_per_element_of_a_list_tuple_or_dict(db):
    run_pk = await make_run(db)
    for task_id, value in OUTPUTS.items():
        await finish(db, await running_ti(db, run_pk, task_id), 1, value)
    as_list = await elements(db, run_pk, "as_list")
    assert [(m, k, i, d) for m, k, i, d, _ in as_list] == [
        (-1, "return_value", i, None) for i in range(len(OUTPUTS["as_list"]))]
    assert [json.loads(v) for *_, v in as_list] == serde.to_jsonable(OUTPUTS["as_list"])
    assert as_list[1][-1] == '{"zeta":1,"alpha":[2,{"y":0,"b":1}]}'  # the stored text, verbatim
    as_tuple = await elements(db, run_pk, "as_tuple")
    assert [serde.loads(v) for *_, v in as_tuple] == list(OUTPUTS["as_tuple"])
    assert {d for _, _, _, d, _ in as_tuple} == {None}
    as_dict = await elements(db, run_pk, "as_dict")
    assert [(i, d) for _, _, i, d, _ in as_dict] == list(enumerate(OUTPUTS["as_dict"]))
    assert [v for *_, v in as_dict][1] == '{"m":[2],"b":null}'


async def test_xcom_item_answers_exactly_as_parsing_the_stored_value(db):
    run_pk = await make_run(db)
    for task_id, value in OUTPUTS.items():
        await finish(db, await running_ti(db, run_pk, task_id), 1, value)
        n = len(value)
        new = await items(db, q("xcom_item"), run_pk, task_id, n + 2)  # and two out of range
        assert new == await items(db, PARSED_ITEM, run_pk, task_id, n + 2)
        assert await db.fetchval("SELECT count(*) FROM xcom_element WHERE task_id = $1", task_id) == n
    pairs = [json.loads(v) for v in await items(db, q("xcom_item"), run_pk, "as_dict", 2)]
    assert pairs == [{"pair": ["zeta", 1]}, {"pair": ["alpha", {"m": [2], "b": None}]}]
    assert list(pairs[1]["pair"][1]) == ["m", "b"]

    calls: list[str] = []
    call = through_the_worker(db, run_pk, calls)

    def read(task_id: str) -> list:
        return LazyValueSequence(call, task_id, "return_value", len(OUTPUTS[task_id])).to_list()

    assert await anyio.to_thread.run_sync(read, "as_list") == OUTPUTS["as_list"]
    assert await anyio.to_thread.run_sync(read, "as_tuple") == list(OUTPUTS["as_tuple"])
    got = await anyio.to_thread.run_sync(read, "as_dict")
    assert got == list(OUTPUTS["as_dict"].items())
    assert list(got[1][1]) == ["m", "b"]


async def test_only_an_unmapped_producers_return_value_is_split(db):
    run_pk = await make_run(db)
    await finish(db, await running_ti(db, run_pk, "plain"), 1, [1, 2], producer=False)
    await finish(db, await running_ti(db, run_pk, "mapped", map_index=0), 1, [1, 2])
    await finish(db, await running_ti(db, run_pk, "gen"), 1, [1, 2], extra=[("other", "[7, 8, 9]")])
    assert await elements(db, run_pk, "plain") == [] and await elements(db, run_pk, "mapped") == []
    assert {k for _, k, *_ in await elements(db, run_pk, "gen")} == {"return_value"}
    # another key is still answered, parsed from its xcom row as before
    assert await db.fetchval(q("xcom_item"), run_pk, "gen", "other", 2) == '{"value" : 9}'
    assert await db.fetchval(q("xcom_item"), run_pk, "gen", "other", 2) == \
        await db.fetchval(PARSED_ITEM, run_pk, "gen", "other", 2)


async def test_an_empty_output_has_no_elements(db):
    run_pk = await make_run(db)
    for task_id, value in {"empty_list": [], "empty_dict": {}, "empty_tuple": ()}.items():
        await finish(db, await running_ti(db, run_pk, task_id), 1, value)
        assert await elements(db, run_pk, task_id) == []


async def claim(db, ti: int, try_number: int) -> None:
    await db.execute("UPDATE task_instance SET state = 'queued', try_number = $2 WHERE id = $1",
                     ti, try_number)
    assert len(await db.fetch(q("claim_tis"), [ti], [try_number], "w")) == 1


async def test_a_producer_retry_replaces_its_elements(db):
    run_pk = await make_run(db)
    ti = await running_ti(db, run_pk, "gen")
    await finish(db, ti, 1, ["a", "b", "c", "d", "e"])
    await claim(db, ti, 2)  # a fresh try clears its XComs, and their elements with them
    assert await elements(db, run_pk, "gen") == []
    await finish(db, ti, 2, {"z": 1, "a": 2})
    assert [(i, d, v) for _, _, i, d, v in await elements(db, run_pk, "gen")] == [
        (0, "z", "1"), (1, "a", "2")]


async def test_a_value_written_again_without_a_clear_replaces_every_element(db):
    run_pk = await make_run(db)
    ti = await running_ti(db, run_pk, "gen")
    await finish(db, ti, 1, ["a", "b", "c", "d", "e"])
    # a resumed try keeps its XComs at the claim: finish_ti itself must replace them
    await db.execute("UPDATE task_instance SET state = 'running', worker_id = 'w' WHERE id = $1", ti)
    await finish(db, ti, 1, ("x", "y"))
    assert [(i, d, v) for _, _, i, d, v in await elements(db, run_pk, "gen")] == [
        (0, None, '"x"'), (1, None, '"y"')]
    await db.execute("UPDATE task_instance SET state = 'running', worker_id = 'w' WHERE id = $1", ti)
    await finish(db, ti, 1, "no longer mapped", producer=False)
    assert await elements(db, run_pk, "gen") == []


async def test_elements_go_with_their_xcoms_on_clear_and_with_the_run(db):
    run_pk = await make_run(db)
    gen = await running_ti(db, run_pk, "gen")
    await finish(db, gen, 1, list(range(10)))
    kept = await running_ti(db, run_pk, "kept")
    await finish(db, kept, 1, [1, 2])
    await db.execute(q("delete_xcoms_of_tis"), [gen])  # sluice runs clear
    assert await elements(db, run_pk, "gen") == [] and len(await elements(db, run_pk, "kept")) == 2
    await db.execute("DELETE FROM dag_run WHERE id = $1", run_pk)
    assert await db.fetchval("SELECT count(*) FROM xcom_element") == 0


async def test_an_element_of_a_100_000_list_is_one_fast_lookup(db):
    n = 100_000
    run_pk = await make_run(db)
    started = time.perf_counter()
    await finish(db, await running_ti(db, run_pk, "gen"), 1, [f"v{i}" for i in range(n)])
    written = time.perf_counter() - started
    rng = random.Random(7)
    indexes = [rng.randrange(n) for _ in range(200)]

    async def timed(query: str, index: int) -> float:
        started = time.perf_counter()
        raw = await db.fetchval(query, run_pk, "gen", "return_value", index)
        took = time.perf_counter() - started
        assert json.loads(raw) == {"value": f"v{index}"}
        return took

    lookups = [await timed(q("xcom_item"), i) for i in indexes]
    parsed = [await timed(PARSED_ITEM, i) for i in indexes[:10]]
    median = statistics.median(lookups)
    print(f"\n100,000 elements: finish_ti {written * 1e3:.1f} ms; xcom_item median "
          f"{median * 1e3:.3f} ms (max {max(lookups) * 1e3:.3f}) over 200 lookups; "
          f"parsing the stored list instead: median {statistics.median(parsed) * 1e3:.3f} ms")
    assert median < 0.005  # loose: machines are noisy; parsing took 8-13 ms here

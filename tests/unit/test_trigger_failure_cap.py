"""A trigger failing with a 20 MB message resumes its instance with a capped traceback."""

from __future__ import annotations

import json

import pytest

from shared import bus
from shared.config import Settings
from shared.daemon import Lifecycle
from shared.db import create_pool
from shared.textcap import MAX_ERROR_CHARS
from tests.unit.test_triggerer_claims import make_deferred, make_run
from triggerer.daemon import Triggerer

pytestmark = pytest.mark.timeout(60)


async def test_a_huge_trigger_failure_is_stored_capped(db, db_url, redis_url, stream_prefix):
    ti_id, trigger_id = await make_deferred(db, await make_run(db), "waits")
    settings = Settings(database_url=db_url, redis_url=redis_url, stream_prefix=stream_prefix)
    pool = await create_pool(db_url, max_size=2)
    redis = bus.connect(redis_url)
    try:
        triggerer = Triggerer(settings, pool, redis, Lifecycle("triggerer-test"))
        row = {"id": trigger_id, "ti_id": ti_id, "next_kwargs": {"note": "waits"}}
        await triggerer.fail(row, "Trigger failure", RuntimeError("y" * (20 * 1024 * 1024)))
    finally:
        await redis.aclose()
        await pool.close()
    state, next_method, raw = await db.fetchrow(
        "SELECT state, next_method, next_kwargs FROM task_instance WHERE id = $1", ti_id)
    kwargs = raw if isinstance(raw, dict) else json.loads(raw)
    assert (state, next_method, kwargs["error"]) == ("scheduled", "__fail__", "Trigger failure")
    text = "".join(kwargs["traceback"])
    assert len(text) <= MAX_ERROR_CHARS and "[truncated 19.9 MB]" in text
    assert text.rstrip().endswith("y")  # the tail of the message is kept

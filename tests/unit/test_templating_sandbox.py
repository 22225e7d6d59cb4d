"""The trigger kwargs the scheduler renders for ``start_from_trigger`` render in a sandbox.

The scheduler runs no user code: a template reaching for Python internals or for
a module through another module fails that instance, clearly, and starts no
trigger; what such templates use (the run's dates, params, Airflow's macros and
filters) still renders. Task templates render at run time in the Task SDK, with
Airflow's own sandbox.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from airflow.sdk import DAG, BaseOperator
from airflow.triggers.base import StartTriggerArgs
from jinja2.sandbox import SecurityError

from scheduler.daemon import Scheduler
from scheduler.runs import insert_task_instances, task_instance_rows
from scheduler.start_trigger import render, run_context
from shared import bus
from shared.config import Settings
from shared.daemon import Lifecycle
from shared.db import create_pool
from tests.unit.conftest import spec_of

pytestmark = pytest.mark.timeout(60)

ESCAPE = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
LOGICAL_DATE = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


def context(**conf) -> dict:
    """The context a run of DAG ``d`` gives instance ``t`` of its ``start_from_trigger`` task."""
    return run_context("d", "manual__r1", LOGICAL_DATE, conf, {"n": 2}, "t", -1)


@pytest.mark.parametrize("template", [
    ESCAPE,
    "{{ macros.uuid.os.getcwd() }}",  # a module reached through another
    "{{ macros.json.codecs.open }}",
    "{{ macros.dateutil.relativedelta.datetime.sys.modules }}",
    "{{ macros.uuid._get_command_stdout('id') }}",
    "{{ macros.ds_add.__globals__ }}",
])
def test_escapes_are_refused(template):
    with pytest.raises(SecurityError, match="is unsafe"):
        render({"at": template}, context())


def test_what_trigger_kwargs_use_still_renders():
    rendered = render({
        "day": "{{ macros.ds_add(ds, params.n) }}",
        "nested": ["{{ macros.json.dumps([1]) }}",
                   {"d": "{{ macros.dateutil.relativedelta.relativedelta(days=1).days }}"}],
        "stamp": "{{ logical_date | ts_nodash_with_tz }} {{ ds_nodash }} {{ dag_run.conf.who }}",
        "plain": 3,
    }, context(who="me"))
    assert rendered == {"day": "2026-03-06", "nested": ["[1]", {"d": "1"}],
                        "stamp": "20260304T050607+0000 20260304 me", "plain": 3}


class StartsInTriggerer(BaseOperator):
    """Waits for ``moment`` in the triggerer from its first try; no worker runs it."""

    start_trigger_args = StartTriggerArgs(
        trigger_cls="airflow.providers.standard.triggers.temporal.DateTimeTrigger",
        trigger_kwargs=None, next_method="execute_complete", next_kwargs=None, timeout=None)
    start_from_trigger = True

    def __init__(self, *, trigger_kwargs=None, **kwargs):
        super().__init__(**kwargs)
        self.trigger_kwargs = trigger_kwargs

    def execute_complete(self, context, event=None):
        return event


@pytest.fixture
async def scheduler(db_url, redis_url, stream_prefix):
    settings = Settings(database_url=db_url, redis_url=redis_url, stream_prefix=stream_prefix)
    pool = await create_pool(db_url, max_size=2)
    redis = bus.connect(redis_url)
    yield Scheduler(settings, pool, redis, Lifecycle("scheduler-test"))
    await redis.aclose()
    await pool.close()


async def test_an_escape_fails_its_instance_and_starts_no_trigger(scheduler, db):
    with DAG("d", schedule=None, start_date=datetime(2026, 1, 1)) as dag:
        StartsInTriggerer(task_id="renders",
                          trigger_kwargs={"moment": "{{ ds }}T06:00:00+00:00"})
        StartsInTriggerer(task_id="escapes", trigger_kwargs={"moment": ESCAPE})
    spec = spec_of(dag)
    scheduler.specs[spec.dag_id] = spec
    await db.execute("INSERT INTO dag (dag_id, fileloc, source_hash, serialized)"
                     " VALUES ('d', 'd.py', 'h', $1::json)", spec.model_dump(mode="json"))
    run_pk = await db.fetchval(
        "INSERT INTO dag_run (dag_id, run_id, run_type, logical_date, state, start_date)"
        " VALUES ('d', 'manual__r1', 'manual', $1, 'running', now()) RETURNING id", LOGICAL_DATE)
    await insert_task_instances(db, run_pk, task_instance_rows(spec))

    await scheduler.schedule([run_pk])

    rows = {r["task_id"]: r for r in await db.fetch(
        "SELECT task_id, state, error, trigger_id FROM task_instance WHERE run_pk = $1", run_pk)}
    assert (rows["escapes"]["state"], rows["escapes"]["trigger_id"]) == ("failed", None)
    assert rows["escapes"]["error"] == (
        "cannot render trigger_kwargs of 'escapes' map_index -1: SecurityError: access to "
        "attribute '__class__' of 'str' object is unsafe.")
    assert rows["renders"]["state"] == "deferred"
    trigger = await db.fetchrow("SELECT classpath, kwargs::text FROM trigger WHERE id = $1",
                                rows["renders"]["trigger_id"])
    assert trigger["classpath"] == StartsInTriggerer.start_trigger_args.trigger_cls
    assert "2026-03-04T06:00:00+00:00" in trigger["kwargs"]
    assert await db.fetchval("SELECT count(*) FROM trigger") == 1

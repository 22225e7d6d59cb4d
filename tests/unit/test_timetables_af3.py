"""Sluice creates the scheduled runs Airflow 3.3 creates, timetable by timetable.

For each timetable a DAG file can use, the DAG is built with Airflow's Task
SDK, walked into its spec as the parse server does, stored, and
``scheduler.runs.create_due_runs`` creates its runs in PostgreSQL at a fixed
"now". The reference is Airflow's own scheduler arithmetic: the DAG
serialized and deserialized by Airflow (``DagSerialization``), its
``SerializedDAG.next_dagrun_info`` asked in a loop as Airflow's scheduler asks
it (each created run is the next one's reference), the run id from
``timetable.generate_run_id``, the clock of Airflow's timetable modules held at
the same "now" by this module's own patch. Both must agree on every run's
run id, logical date, data interval and ``run_after`` (the interval's end),
and on the next run not due yet.
"""

from __future__ import annotations

import json
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from unittest import mock

import pendulum
import pytest
from airflow.sdk import DAG
from airflow.sdk.definitions.timetables.events import EventsTimetable as SdkEventsTimetable
from airflow.sdk.definitions.timetables.interval import (
    CronDataIntervalTimetable,
    DeltaDataIntervalTimetable,
)
from airflow.sdk.definitions.timetables.trigger import (
    CronTriggerTimetable,
    DeltaTriggerTimetable,
    MultipleCronTriggerTimetable,
)
from airflow.serialization.serialized_objects import DagSerialization
from airflow.timetables.events import EventsTimetable  # the core class: Airflow 3.3.2 serializes it
from airflow.utils.types import DagRunType

from scheduler.runs import create_due_runs
from shared.airflow_spec.errors import SpecError
from shared.db import q
from shared.schedules import Interval, manual_interval, parse_schedule
from tests.unit.conftest import spec_of

N = 6
PARIS = "Europe/Paris"


@contextmanager
def airflow_clock(now: datetime):
    """Airflow's timetable modules read ``now`` (the reference loop's own patch)."""
    at = now.astimezone(UTC)
    with ExitStack() as stack:
        for target in ("airflow._shared.timezones.timezone.utcnow",
                       "airflow.timetables.interval.utcnow", "airflow.timetables.trigger.utcnow"):
            stack.enter_context(mock.patch(target, lambda: at))
        stack.enter_context(mock.patch("airflow.timetables.trigger.time",
                                       SimpleNamespace(time=lambda: at.timestamp())))
        yield


def airflow_runs(dag: DAG, now: datetime, limit: int = N):
    """(runs Airflow's scheduler creates by ``now``, the next one), as comparable tuples."""
    serdag = DagSerialization.from_dict(json.loads(json.dumps(DagSerialization.to_dict(dag))))
    runs = []
    with airflow_clock(now):
        info = serdag.next_dagrun_info(last_automated_run_info=None)
        while info is not None and info.run_after <= now and len(runs) < limit:
            # Airflow's scheduler reads run_after back from its database: in UTC
            run_id = serdag.timetable.generate_run_id(
                run_type=DagRunType.SCHEDULED, run_after=pendulum.instance(utc(info.run_after)),
                data_interval=info.data_interval)
            runs.append(row(run_id, info.logical_date, info.data_interval.start,
                            info.data_interval.end))
            info = serdag.next_dagrun_info(last_automated_run_info=info)
    nxt = None if info is None else (utc(info.run_after), utc(info.data_interval.start),
                                     utc(info.data_interval.end))
    return runs, nxt


def utc(value: datetime) -> datetime:
    v = value.astimezone(UTC)
    return datetime(v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond, tzinfo=UTC)


def row(run_id, logical, start, end):
    return (run_id, utc(logical), utc(start), utc(end))


async def sluice_runs(db, dag: DAG, now: datetime, limit: int = N):
    """The runs ``create_due_runs`` stores by ``now`` (in passes of at most ``limit``), and the next."""
    spec = spec_of(dag)
    spec = spec.model_copy(update={"max_active_runs": limit})
    await db.execute(q("upsert_dag"), spec.dag_id, "/dags/x.py", "h",
                     spec.model_dump(mode="json"), False)
    async with db.transaction():
        created, nxt = await create_due_runs(db, spec, now)
    rows = await db.fetch("SELECT run_id, logical_date, data_interval_start, data_interval_end "
                          "FROM dag_run WHERE dag_id = $1 ORDER BY logical_date", spec.dag_id)
    assert len(created) == len(rows)
    stored = await db.fetchrow("SELECT next_interval_start, next_interval_end FROM dag "
                               "WHERE dag_id = $1", spec.dag_id)
    if nxt is not None:
        assert (stored["next_interval_start"], stored["next_interval_end"]) == (
            nxt.interval.start, nxt.interval.end)
    return [row(*r) for r in rows], None if nxt is None else (
        nxt.run_after, nxt.interval.start, nxt.interval.end)


START = pendulum.datetime(2026, 3, 1, tz="UTC")
NOW = datetime(2026, 3, 29, 3, 17, 30, tzinfo=UTC)  # the morning Paris moves to summer time

CASES = {
    # a cron string: CronTriggerTimetable in the start date's zone (Paris: across DST)
    "cron_string": dict(schedule="0 */6 * * *", start_date=pendulum.datetime(2026, 3, 28, tz=PARIS)),
    "preset_daily": dict(schedule="@daily", start_date=START),
    "preset_hourly_paris": dict(schedule="@hourly", start_date=pendulum.datetime(2026, 3, 29, tz=PARIS)),
    "every_minute": dict(schedule="*/1 * * * *", start_date=pendulum.datetime(2026, 3, 29, 3, 10)),
    "delta_string": dict(schedule=timedelta(hours=5), start_date=START),
    "cron_trigger_interval": dict(
        schedule=CronTriggerTimetable("30 1 * * *", timezone=PARIS, interval=timedelta(hours=3)),
        start_date=START),
    "delta_trigger_interval": dict(
        schedule=DeltaTriggerTimetable(timedelta(days=2), interval=timedelta(hours=12)),
        start_date=START),
    "cron_data_interval": dict(schedule=CronDataIntervalTimetable("0 0 * * *", timezone=PARIS),
                               start_date=START),
    "delta_data_interval": dict(schedule=DeltaDataIntervalTimetable(timedelta(hours=7)),
                                start_date=START),
    "multiple_cron": dict(schedule=MultipleCronTriggerTimetable(
        "0 9 * * *", "30 2 * * 1-5", timezone=PARIS), start_date=START),
    "events": dict(schedule=EventsTimetable([
        pendulum.datetime(2026, 3, 2, 8), pendulum.datetime(2026, 3, 10, 12, tz=PARIS),
        pendulum.datetime(2026, 3, 20), pendulum.datetime(2026, 4, 1)]), start_date=START),
    "once": dict(schedule="@once", start_date=START),
    "once_in_future": dict(schedule="@once", start_date=pendulum.datetime(2026, 5, 1)),
    "end_date": dict(schedule="@daily", start_date=START, end_date=pendulum.datetime(2026, 3, 4)),
    "start_in_future": dict(schedule="@daily", start_date=pendulum.datetime(2026, 4, 2)),
    # 02:30 does not exist in Paris on 2026-03-29 (clocks jump from 02:00 to 03:00)
    "cron_in_dst_gap": dict(schedule="30 2 * * *", start_date=pendulum.datetime(2026, 3, 26, tz=PARIS)),
    "cron_in_dst_overlap": dict(schedule="30 2 * * *",
                                start_date=pendulum.datetime(2025, 10, 24, tz=PARIS)),
    # without a start date a trigger timetable's first run follows run_immediately
    "no_start_next_tick": dict(schedule="0 */2 * * *"),
    "run_immediately_true": dict(schedule=CronTriggerTimetable(
        "0 0 * * *", timezone="UTC", run_immediately=True)),
    "run_immediately_window": dict(schedule=CronTriggerTimetable(
        "0 * * * *", timezone="UTC", run_immediately=timedelta(minutes=20))),
    "run_immediately_default_window": dict(schedule=CronTriggerTimetable(
        "*/10 * * * *", timezone="UTC", run_immediately=None)),
    "delta_no_start": dict(schedule=timedelta(minutes=45)),
}


@pytest.mark.parametrize(("case", "catchup"), [
    pytest.param(case, catchup, id=f"{case}-{'catchup' if catchup else 'no_catchup'}")
    for case in sorted(CASES) for catchup in (True, False)
    if not catchup or "start_date" in CASES[case]])  # the SDK: catchup needs a start date
async def test_the_runs_sluice_creates_are_airflows(db, case, catchup):
    dag = DAG(f"tt_{case}", catchup=catchup, **CASES[case])
    expected, expected_next = airflow_runs(dag, NOW)
    got, got_next = await sluice_runs(db, dag, NOW)
    assert got == expected
    assert got_next == expected_next


@pytest.mark.parametrize("catchup", [True, False], ids=["catchup", "no_catchup"])
async def test_a_later_pass_continues_where_airflow_continues(db, catchup):
    """Runs already there are the next pass's reference, as Airflow's latest automated run."""
    dag = DAG("tt_passes", schedule="0 */4 * * *", start_date=START, catchup=catchup)
    spec = spec_of(dag).model_copy(update={"max_active_runs": 10_000})
    await db.execute(q("upsert_dag"), spec.dag_id, "/dags/x.py", "h",
                     spec.model_dump(mode="json"), False)
    expected, _ = airflow_runs(dag, NOW, limit=10_000)
    moments = [NOW - timedelta(days=20), NOW - timedelta(days=3, hours=1), NOW]
    for now in moments:
        async with db.transaction():
            await create_due_runs(db, spec, now)
    rows = await db.fetch("SELECT run_id FROM dag_run WHERE dag_id = $1 ORDER BY logical_date",
                          spec.dag_id)
    if catchup:
        assert [r["run_id"] for r in rows] == [r[0] for r in expected]
    else:  # each pass skips to the latest tick of its moment
        assert [r["run_id"] for r in rows] == [
            "scheduled__2026-03-09T00:00:00+00:00", "scheduled__2026-03-26T00:00:00+00:00",
            "scheduled__2026-03-29T00:00:00+00:00"]


async def test_max_active_runs_holds_the_backlog_and_counts_manual_runs(db):
    dag = DAG("tt_limit", schedule="@daily", start_date=START, catchup=True, max_active_runs=3)
    spec = spec_of(dag)
    await db.execute(q("upsert_dag"), spec.dag_id, "/dags/x.py", "h",
                     spec.model_dump(mode="json"), False)
    await db.execute(q("insert_run"), spec.dag_id, "manual__x", "manual", NOW, NOW, NOW, {})
    async with db.transaction():
        created, nxt = await create_due_runs(db, spec, NOW)
    assert len(created) == 2  # the manual run is one of the three active
    assert nxt.run_after <= NOW  # due, held back until a run ends
    await db.execute("UPDATE dag_run SET state = 'success' WHERE dag_id = $1", spec.dag_id)
    async with db.transaction():
        created, _ = await create_due_runs(db, spec, NOW)
    assert len(created) == 3
    rows = await db.fetch("SELECT logical_date FROM dag_run WHERE dag_id = $1 AND run_type = "
                          "'scheduled' ORDER BY logical_date", spec.dag_id)
    assert [r["logical_date"].day for r in rows] == [1, 2, 3, 4, 5]


async def test_continuous_runs_one_at_a_time_each_covering_since_the_last(db):
    dag = DAG("tt_continuous", schedule="@continuous", start_date=START, max_active_runs=1)
    spec = spec_of(dag)
    await db.execute(q("upsert_dag"), spec.dag_id, "/dags/x.py", "h",
                     spec.model_dump(mode="json"), False)
    first, later = NOW, NOW + timedelta(minutes=5)
    async with db.transaction():
        created, nxt = await create_due_runs(db, spec, first)
    assert len(created) == 1 and nxt.run_after <= first  # the next waits for this one
    await db.execute("UPDATE dag_run SET state = 'success' WHERE dag_id = $1", spec.dag_id)
    async with db.transaction():
        created, _ = await create_due_runs(db, spec, later)
    rows = await db.fetch("SELECT logical_date, data_interval_start, data_interval_end, run_id "
                          "FROM dag_run WHERE dag_id = $1 ORDER BY logical_date", spec.dag_id)
    assert [tuple(r.values()) for r in rows] == [
        (START, START, first, f"scheduled__{first.isoformat()}"),
        (first, first, later, f"scheduled__{later.isoformat()}")]


MANUAL_CASES = {
    "cron_trigger": (dict(schedule="@daily"), (NOW, NOW)),
    "cron_trigger_interval": (dict(schedule=CronTriggerTimetable(
        "0 * * * *", timezone="UTC", interval=timedelta(hours=1))), (NOW - timedelta(hours=1), NOW)),
    "cron_data_interval": (dict(schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC")),
                           (datetime(2026, 3, 28, tzinfo=UTC), datetime(2026, 3, 29, tzinfo=UTC))),
    "delta_data_interval": (dict(schedule=DeltaDataIntervalTimetable(timedelta(hours=2))),
                            (NOW - timedelta(hours=2), NOW)),
    "events_restricted": (dict(schedule=EventsTimetable(
        [pendulum.datetime(2026, 3, 2), pendulum.datetime(2026, 3, 20)], restrict_to_events=True)),
        (datetime(2026, 3, 20, tzinfo=UTC),) * 2),
    "events_unrestricted": (dict(schedule=EventsTimetable([pendulum.datetime(2026, 3, 2)])),
                            (NOW, NOW)),
    "once": (dict(schedule="@once"), (NOW, NOW)),
    "none": (dict(schedule=None), (NOW, NOW)),
}


@pytest.mark.parametrize("case", sorted(MANUAL_CASES))
def test_a_manual_runs_interval_is_airflows_inference(case):
    kwargs, (start, end) = MANUAL_CASES[case]
    dag = DAG(f"m_{case}", start_date=START, **kwargs)
    schedule = parse_schedule(json.loads(json.dumps(spec_of(dag).schedule)))
    assert manual_interval(schedule, NOW) == Interval(start, end)
    if schedule is not None:
        core = DagSerialization.from_dict(DagSerialization.to_dict(dag)).timetable
        got = core.infer_manual_data_interval(run_after=pendulum.instance(NOW))
        assert (utc(got.start), utc(got.end)) == (start, end)


def test_the_sdks_events_timetable_is_the_core_ones():
    """Airflow 3.3.2 cannot serialize a DAG on the SDK's class (its encoding lacks the core
    class's ``_summary``); Sluice stores it as the core class is stored and runs it alike."""
    dates = [pendulum.datetime(2026, 3, 2, 8), pendulum.datetime(2026, 3, 10, 12, tz=PARIS)]
    for restrict in (False, True):
        sdk = spec_of(DAG("ev", start_date=START, schedule=SdkEventsTimetable(
            dates, restrict_to_events=restrict)))
        core = spec_of(DAG("ev", start_date=START, schedule=EventsTimetable(
            dates, restrict_to_events=restrict)))
        assert sdk.schedule == core.schedule
        assert sdk.schedule["summary"] == "2 events"


def test_a_timetable_sluice_cannot_run_is_refused_at_load_naming_it():
    from airflow.sdk.definitions.timetables.trigger import CronPartitionTimetable
    from airflow.timetables.base import Timetable

    class Workdays(Timetable):  # a plugin's timetable: code Sluice's scheduler does not run
        pass

    with pytest.raises(SpecError, match=r"DAG 'custom': schedule .*Workdays is not supported "
                                        r"by Sluice \(custom timetable"):
        spec_of(DAG("custom", start_date=START, schedule=Workdays()))
    with pytest.raises(SpecError, match="DAG 'parts': schedule CronPartitionTimetable is not "
                                        r"supported by Sluice \(partitioned runs\)"):
        spec_of(DAG("parts", start_date=START,
                    schedule=CronPartitionTimetable("0 0 * * *", timezone="UTC")))


def test_the_stored_schedule_is_airflows_encoding_with_its_restriction_and_texts():
    task_start = pendulum.datetime(2026, 2, 1, tz=PARIS)
    with DAG("stored", schedule=CronTriggerTimetable("0 3 * * *", timezone=PARIS,
                                                     run_immediately=True),
             end_date=pendulum.datetime(2026, 6, 1)) as dag:
        from airflow.providers.standard.operators.empty import EmptyOperator
        EmptyOperator(task_id="early", start_date=task_start)
    assert spec_of(dag).schedule == {
        "kind": "timetable",
        "timetable": {"__type": "airflow.timetables.trigger.CronTriggerTimetable",
                      "__var": {"expression": "0 3 * * *", "timezone": PARIS, "interval": 0.0,
                                "run_immediately": True}},
        "summary": "0 3 * * *", "description": "At 03:00",
        # Airflow's restriction: the earliest start of the DAG and its tasks (here the task's)
        "earliest": "2026-01-31T23:00:00+00:00", "latest": "2026-06-01T00:00:00+00:00"}


async def test_a_planned_run_is_created_as_planned_when_the_scheduler_comes_late(db):
    """Airflow plans the next run when it creates one: a late pass does not shift it."""
    dag = DAG("tt_planned", schedule=timedelta(seconds=30), start_date=START, catchup=False)
    spec = spec_of(dag)
    await db.execute(q("upsert_dag"), spec.dag_id, "/dags/x.py", "h",
                     spec.model_dump(mode="json"), False)
    async with db.transaction():
        _, planned = await create_due_runs(db, spec, NOW)
    assert planned.run_after == NOW + timedelta(seconds=30)
    late = NOW + timedelta(seconds=31.5)
    async with db.transaction():
        created, nxt = await create_due_runs(db, spec, late, planned)
    assert len(created) == 1 and nxt.run_after == NOW + timedelta(seconds=60)
    rows = await db.fetch("SELECT logical_date FROM dag_run WHERE dag_id = $1 "
                          "ORDER BY logical_date", spec.dag_id)
    assert [r["logical_date"] for r in rows] == [NOW, NOW + timedelta(seconds=30)]

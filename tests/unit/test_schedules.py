"""Unit tests for shared.schedules: Airflow's core timetables, evaluated as its scheduler does.

The per-timetable comparison with Airflow's own scheduler loop is
tests/unit/test_timetables_af3.py; here: the schedule document (parse, legacy
kinds, errors, texts), the clock the timetables read, data-interval and
trigger semantics on a few hand-checked cases, and manual runs' intervals.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pendulum
import pytest
from airflow.timetables.interval import CronDataIntervalTimetable, DeltaDataIntervalTimetable

from shared.schedules import (
    Interval,
    RunInfo,
    Schedule,
    frozen_clock,
    manual_interval,
    parse_schedule,
    schedule_text,
    timetable_json,
)
from tests.unit.conftest import spec_of


def dt(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def data_interval(expr_or_delta, start: datetime | None, end: datetime | None = None) -> Schedule:
    """A data-interval schedule (Airflow 2's default, ``create_cron_data_intervals=True``)."""
    timetable = DeltaDataIntervalTimetable(expr_or_delta) if isinstance(expr_or_delta, timedelta) \
        else CronDataIntervalTimetable(expr_or_delta, "UTC")
    return Schedule(timetable_json(timetable), earliest=start, latest=end)


def runs(schedule: Schedule, *, catchup: bool, now: datetime, limit: int = 1000) -> list[RunInfo]:
    """What the scheduler creates by ``now``: every due run, each the next one's reference."""
    created: list[RunInfo] = []
    after = None
    while len(created) < limit:
        info = schedule.next_run(after=after, catchup=catchup, now=now)
        if info is None or info.run_after > now:
            return created
        created.append(info)
        after = info.interval
    return created


# --------------------------------------------------------------------------- the document


@pytest.mark.parametrize(("value", "kind", "summary"), [
    ("0 * * * *", "CronTriggerTimetable", "0 * * * *"),
    ("  */5   *  * * * ", "CronTriggerTimetable", "*/5 * * * *"),
    ("@daily", "CronTriggerTimetable", "0 0 * * *"),
    ("@QUARTERLY", "CronTriggerTimetable", "0 0 1 */3 *"),
    ("@once", "OnceTimetable", "@once"),
    ("@continuous", "ContinuousTimetable", "@continuous"),
    (timedelta(minutes=5), "DeltaTriggerTimetable", "0:05:00"),
    # documents stored before timetables were kept read as Airflow 3.3's defaults
    ({"kind": "cron", "expr": "0 0 * * *", "tz": "Europe/Paris"}, "CronTriggerTimetable", "0 0 * * *"),
    ({"kind": "delta", "seconds": 60}, "DeltaTriggerTimetable", "0:01:00"),
    ({"kind": "once"}, "OnceTimetable", "@once"),
])
def test_a_plain_schedule_is_the_timetable_airflow_3_builds(value, kind, summary):
    schedule = parse_schedule(value)
    assert (schedule.kind, schedule.summary()) == (kind, summary)
    again = parse_schedule(json.loads(json.dumps(schedule.to_json())))
    assert again == schedule and again.kind == kind


def test_no_schedule_is_manual_only():
    assert parse_schedule(None) is None
    schedule = parse_schedule("@daily")
    assert parse_schedule(schedule) is schedule


@pytest.mark.parametrize(("value", "message"), [
    ("* * *", "invalid schedule '\\* \\* \\*'"),
    ("@fortnightly", "invalid schedule '@fortnightly'"),
    (timedelta(0), "invalid schedule"),
    (42, "unsupported type int"),
    ({"kind": "later"}, "unknown kind 'later'"),
    ({"kind": "delta", "seconds": -1}, "'seconds' must be a positive number"),
    ({"kind": "timetable", "timetable": "cron"}, "expected Airflow's encoded timetable"),
    ({"kind": "timetable", "timetable": {"__type": "airflow.timetables.simple.OnceTimetable",
                                         "__var": {}}, "earliest": "soon"}, "ISO 8601"),
])
def test_invalid_schedules_are_refused_in_one_line(value, message):
    with pytest.raises(ValueError, match=message):
        parse_schedule(value)


def test_a_plugins_timetable_is_never_imported_by_the_scheduler():
    schedule = parse_schedule({"kind": "timetable", "timetable": {
        "__type": "my_plugin.Workdays", "__var": {}}})
    with pytest.raises(ValueError, match="my_plugin.Workdays is not one of Airflow's own"):
        schedule.next_run(after=None, catchup=False, now=dt(2026, 1, 1))


def test_texts_are_airflows_summary_and_description():
    schedule = parse_schedule("*/15 6-18 * * 1-5")
    assert schedule.summary() == "*/15 6-18 * * 1-5"
    assert schedule.description() == \
        "Every 15 minutes, between 06:00 and 18:59, Monday through Friday"
    assert parse_schedule(timedelta(hours=6)).description() == "6:00:00"  # no description: summary


def test_dags_list_shows_the_summary_and_description():
    assert schedule_text(parse_schedule("@daily").to_json()) == "0 0 * * * (At 00:00)"
    assert schedule_text(parse_schedule(timedelta(hours=1)).to_json()) == "1:00:00"
    assert schedule_text(None) == "-"


def test_the_clock_is_the_given_moment_inside_and_the_real_one_after():
    import airflow._shared.timezones.timezone as clock
    import airflow.timetables.trigger as trigger

    with frozen_clock(datetime(2030, 1, 1, 12)):
        assert clock.utcnow() == dt(2030, 1, 1, 12)
        assert trigger.time.time() == dt(2030, 1, 1, 12).timestamp()
    assert clock.utcnow().year < 2030 and trigger.time.time() < dt(2030, 1, 1).timestamp()


# --------------------------------------------------------------------------- trigger semantics


def test_a_cron_trigger_run_is_the_tick_itself():
    schedule = Schedule(parse_schedule("0 * * * *").encoded, earliest=dt(2026, 1, 1))
    created = runs(schedule, catchup=True, now=dt(2026, 1, 1, 3, 30))
    assert [(r.logical_date, r.interval.end, r.run_after) for r in created] == [
        (dt(2026, 1, 1, h),) * 3 for h in range(4)]
    assert created[0].run_id == "scheduled__2026-01-01T00:00:00+00:00"


def test_without_catchup_a_trigger_timetable_runs_the_latest_tick_only():
    schedule = Schedule(parse_schedule("0 * * * *").encoded, earliest=dt(2026, 1, 1))
    assert [r.logical_date for r in runs(schedule, catchup=False, now=dt(2026, 1, 5, 3, 30))] == [
        dt(2026, 1, 5, 3)]


def test_a_cron_trigger_in_a_dags_zone_keeps_local_time_across_daylight_saving():
    from airflow.sdk import DAG

    dag = DAG("paris", start_date=pendulum.datetime(2026, 3, 27, tz="Europe/Paris"),
              schedule="0 6 * * *", catchup=True)
    schedule = parse_schedule(json.loads(json.dumps(spec_of(dag).schedule)))
    created = runs(schedule, catchup=True, now=dt(2026, 3, 30, 12))
    assert [r.logical_date.strftime("%m-%d %H:%M") for r in created] == [
        "03-27 05:00", "03-28 05:00", "03-29 04:00", "03-30 04:00"]  # 06:00 in Paris


# --------------------------------------------------------------------------- data intervals


def test_a_data_interval_run_covers_the_interval_and_runs_at_its_end():
    created = runs(data_interval("@hourly", dt(2024, 1, 1)), catchup=True, now=dt(2024, 1, 1, 3))
    assert [(r.interval.start, r.interval.end, r.run_after) for r in created] == [
        (dt(2024, 1, 1, h), dt(2024, 1, 1, h + 1), dt(2024, 1, 1, h + 1)) for h in range(3)]
    assert created[0].run_id == "scheduled__2024-01-01T01:00:00+00:00"  # Airflow 3: run_after


def test_data_intervals_start_at_the_first_tick_after_an_off_tick_start_date():
    created = runs(data_interval("@daily", dt(2024, 1, 1, 6)), catchup=True, now=dt(2024, 1, 4))
    assert [r.logical_date for r in created] == [dt(2024, 1, 2), dt(2024, 1, 3)]


def test_without_catchup_the_latest_complete_interval_runs():
    created = runs(data_interval("@hourly", dt(2024, 1, 1)), catchup=False,
                   now=dt(2024, 3, 1, 5, 30))
    assert [r.interval for r in created] == [Interval(dt(2024, 3, 1, 4), dt(2024, 3, 1, 5))]


def test_a_delta_grid_starts_at_the_start_date():
    created = runs(data_interval(timedelta(minutes=90), dt(2024, 1, 1, 0, 10)), catchup=True,
                   now=dt(2024, 1, 1, 4, 40))
    assert [r.logical_date for r in created] == [dt(2024, 1, 1, 0, 10), dt(2024, 1, 1, 1, 40),
                                                 dt(2024, 1, 1, 3, 10)]


def test_the_end_date_bounds_the_logical_date_inclusively():
    created = runs(data_interval("@daily", dt(2024, 1, 1), dt(2024, 1, 3)), catchup=True,
                   now=dt(2024, 2, 1))
    assert [r.logical_date for r in created] == [dt(2024, 1, 1), dt(2024, 1, 2), dt(2024, 1, 3)]


def test_once_runs_at_the_start_date_then_never():
    schedule = Schedule(parse_schedule("@once").encoded, earliest=dt(2024, 1, 1))
    for catchup in (True, False):
        [only] = runs(schedule, catchup=catchup, now=dt(2024, 6, 1))
        assert only.interval == Interval(dt(2024, 1, 1), dt(2024, 1, 1))
    assert schedule.next_run(after=only.interval, catchup=False, now=dt(2024, 6, 1)) is None


def test_naive_and_offset_datetimes_are_instants_in_utc():
    plus2 = timezone(timedelta(hours=2))
    assert Interval(datetime(2024, 1, 1, 2, tzinfo=plus2), datetime(2024, 1, 1, 1)).start == \
        dt(2024, 1, 1, 0)
    with pytest.raises(ValueError, match="before start"):
        Interval(dt(2024, 1, 2), dt(2024, 1, 1))


# --------------------------------------------------------------------------- manual runs


def test_a_manual_runs_interval_is_what_the_timetable_infers():
    at = dt(2026, 3, 25, 1, 0)
    assert manual_interval(parse_schedule("@daily"), at) == Interval(at, at)  # a trigger: the moment
    assert manual_interval(data_interval("@daily", None), at) == Interval(dt(2026, 3, 24),
                                                                          dt(2026, 3, 25))
    assert manual_interval(data_interval(timedelta(hours=6), None), at) == Interval(
        at - timedelta(hours=6), at)
    for unscheduled in (None, parse_schedule("@once")):
        assert manual_interval(unscheduled, at) == Interval(at, at)


async def test_create_manual_run_stores_the_inferred_interval(db):
    from scheduler.runs import create_manual_run

    daily = data_interval("@daily", dt(2026, 1, 1)).to_json()
    await db.execute("INSERT INTO dag (dag_id, fileloc, source_hash, serialized) VALUES"
                     " ('daily', 'd.py', 'h', $1::json), ('manual', 'm.py', 'h', $2::json)",
                     {"schedule": daily}, {"schedule": None})
    at = dt(2026, 3, 25, 1, 0)
    later = at + timedelta(minutes=1)  # run ids are unique across DAGs
    rows = {}
    for dag_id, when in (("daily", at), ("manual", later)):
        pk, _ = await create_manual_run(db, dag_id, {}, logical_date=when)
        rows[dag_id] = await db.fetchrow("SELECT logical_date, data_interval_start,"
                                         " data_interval_end FROM dag_run WHERE id = $1", pk)
    assert tuple(rows["daily"].values()) == (at, dt(2026, 3, 24), dt(2026, 3, 25))
    assert tuple(rows["manual"].values()) == (later, later, later)

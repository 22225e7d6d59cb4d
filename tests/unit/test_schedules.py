"""Unit tests for shared.schedules (Airflow data-interval semantics)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from shared.schedules import (
    CronSchedule,
    DeltaSchedule,
    Interval,
    OnceSchedule,
    Schedule,
    parse_schedule,
)
from tests.unit.conftest import spec_of


def dt(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def nxt(
    schedule: Schedule,
    *,
    after: Interval | None = None,
    start_date: datetime | None = None,
    end_date: datetime | None = None,
    catchup: bool = False,
    now: datetime,
) -> Interval | None:
    return schedule.next_interval(
        after=after, start_date=start_date, end_date=end_date, catchup=catchup, now=now
    )


def run_scheduler(
    schedule: Schedule,
    *,
    start_date: datetime | None,
    now: datetime,
    catchup: bool,
    end_date: datetime | None = None,
    limit: int = 1000,
) -> list[Interval]:
    """Simulate the caller: create every due interval, stop at the first not-due one."""
    created: list[Interval] = []
    after: Interval | None = None
    for _ in range(limit):
        iv = nxt(
            schedule,
            after=after,
            start_date=start_date,
            end_date=end_date,
            catchup=catchup,
            now=now,
        )
        if iv is None or iv.end > now:
            return created
        created.append(iv)
        after = iv
    raise AssertionError("scheduler did not converge")


def ivs(*pairs: tuple[datetime, datetime]) -> list[Interval]:
    return [Interval(a, b) for a, b in pairs]


# --------------------------------------------------------------------------- first interval


FIRST_INTERVAL_CASES = [
    # (id, schedule, start_date, catchup, now, expected (start, end))
    (
        "hourly-catchup-start-on-tick",
        "@hourly",
        dt(2024, 1, 1),
        True,
        dt(2024, 1, 1, 5, 30),
        (dt(2024, 1, 1, 0), dt(2024, 1, 1, 1)),
    ),
    (
        "hourly-catchup-start-off-tick",
        "@hourly",
        dt(2024, 1, 1, 0, 15),
        True,
        dt(2024, 1, 1, 5, 30),
        (dt(2024, 1, 1, 1), dt(2024, 1, 1, 2)),
    ),
    (
        "hourly-no-catchup-latest-due",
        "@hourly",
        dt(2024, 1, 1),
        False,
        dt(2024, 1, 1, 5, 30),
        (dt(2024, 1, 1, 4), dt(2024, 1, 1, 5)),
    ),
    (
        "hourly-no-catchup-now-on-tick",
        "0 * * * *",
        dt(2024, 1, 1),
        False,
        dt(2024, 1, 1, 5),
        (dt(2024, 1, 1, 4), dt(2024, 1, 1, 5)),
    ),
    (
        "daily-catchup",
        "@daily",
        dt(2024, 1, 1),
        True,
        dt(2024, 3, 1, 12),
        (dt(2024, 1, 1), dt(2024, 1, 2)),
    ),
    (
        "daily-catchup-start-midday",
        "@daily",
        dt(2024, 1, 1, 12),
        True,
        dt(2024, 3, 1, 12),
        (dt(2024, 1, 2), dt(2024, 1, 3)),
    ),
    (
        "daily-no-catchup",
        "@daily",
        dt(2024, 1, 1),
        False,
        dt(2024, 3, 1, 12),
        (dt(2024, 2, 29), dt(2024, 3, 1)),
    ),
    (
        "daily-no-catchup-first-interval-not-ended",
        "@daily",
        dt(2024, 3, 1),
        False,
        dt(2024, 3, 1, 12),
        (dt(2024, 3, 1), dt(2024, 3, 2)),
    ),
    (
        "daily-no-catchup-start-off-tick-aligns-up",
        "@daily",
        dt(2024, 2, 29, 6),
        False,
        dt(2024, 3, 1, 12),
        (dt(2024, 3, 1), dt(2024, 3, 2)),
    ),
    (
        "every-5-min-catchup-off-tick",
        "*/5 * * * *",
        dt(2024, 1, 1, 0, 3),
        True,
        dt(2024, 1, 1, 1),
        (dt(2024, 1, 1, 0, 5), dt(2024, 1, 1, 0, 10)),
    ),
    (
        "every-5-min-no-catchup",
        "*/5 * * * *",
        dt(2024, 1, 1),
        False,
        dt(2024, 1, 1, 1, 7, 42),
        (dt(2024, 1, 1, 1, 0), dt(2024, 1, 1, 1, 5)),
    ),
    (
        "weekly-sunday",
        "@weekly",
        dt(2024, 1, 3),  # a Wednesday
        True,
        dt(2024, 2, 1),
        (dt(2024, 1, 7), dt(2024, 1, 14)),
    ),
    (
        "monthly",
        "@monthly",
        dt(2024, 1, 15),
        True,
        dt(2024, 6, 1),
        (dt(2024, 2, 1), dt(2024, 3, 1)),
    ),
    (
        "yearly",
        "@yearly",
        dt(2020, 6, 1),
        True,
        dt(2024, 6, 1),
        (dt(2021, 1, 1), dt(2022, 1, 1)),
    ),
    (
        "annually-no-catchup",
        "@annually",
        dt(2020, 6, 1),
        False,
        dt(2024, 6, 1),
        (dt(2023, 1, 1), dt(2024, 1, 1)),
    ),
    (
        "cron-weekdays-9am",
        "0 9 * * 1-5",
        dt(2024, 1, 5, 10),  # Friday after 9
        True,
        dt(2024, 2, 1),
        (dt(2024, 1, 8, 9), dt(2024, 1, 9, 9)),  # Mon 9:00 -> Tue 9:00
    ),
    (
        "cron-weekdays-9am-friday-interval-spans-weekend",
        "0 9 * * 1-5",
        dt(2024, 1, 5, 9),
        True,
        dt(2024, 2, 1),
        (dt(2024, 1, 5, 9), dt(2024, 1, 8, 9)),
    ),
    (
        "delta-catchup",
        timedelta(hours=6),
        dt(2024, 1, 1, 1, 30),
        True,
        dt(2024, 1, 3),
        (dt(2024, 1, 1, 1, 30), dt(2024, 1, 1, 7, 30)),
    ),
    (
        "delta-no-catchup-grid-from-start-date",
        timedelta(hours=6),
        dt(2024, 1, 1, 1, 30),
        False,
        dt(2024, 1, 3),
        (dt(2024, 1, 2, 13, 30), dt(2024, 1, 2, 19, 30)),
    ),
    (
        "delta-no-catchup-now-on-boundary",
        timedelta(minutes=5),
        dt(2024, 1, 1),
        False,
        dt(2024, 1, 1, 1),
        (dt(2024, 1, 1, 0, 55), dt(2024, 1, 1, 1)),
    ),
    (
        "delta-no-catchup-first-not-ended",
        timedelta(days=1),
        dt(2024, 1, 1, 8),
        False,
        dt(2024, 1, 1, 20),
        (dt(2024, 1, 1, 8), dt(2024, 1, 2, 8)),
    ),
    (
        "cron-start-date-in-future",
        "@hourly",
        dt(2030, 1, 1, 0, 30),
        False,
        dt(2024, 1, 1),
        (dt(2030, 1, 1, 1), dt(2030, 1, 1, 2)),
    ),
    (
        "cron-start-date-in-future-catchup",
        "@hourly",
        dt(2030, 1, 1, 0, 30),
        True,
        dt(2024, 1, 1),
        (dt(2030, 1, 1, 1), dt(2030, 1, 1, 2)),
    ),
    (
        "delta-start-date-in-future",
        timedelta(hours=1),
        dt(2030, 1, 1, 0, 30),
        False,
        dt(2024, 1, 1),
        (dt(2030, 1, 1, 0, 30), dt(2030, 1, 1, 1, 30)),
    ),
    (
        "cron-no-start-date-catchup-true-acts-like-latest",
        "@hourly",
        None,
        True,
        dt(2024, 1, 1, 5, 30),
        (dt(2024, 1, 1, 4), dt(2024, 1, 1, 5)),
    ),
    (
        "cron-no-start-date",
        "*/15 * * * *",
        None,
        False,
        dt(2024, 1, 1, 5, 50),
        (dt(2024, 1, 1, 5, 30), dt(2024, 1, 1, 5, 45)),
    ),
    (
        "delta-no-start-date-epoch-grid",
        timedelta(hours=1),
        None,
        False,
        dt(2024, 1, 1, 5, 50),
        (dt(2024, 1, 1, 4), dt(2024, 1, 1, 5)),
    ),
]


@pytest.mark.parametrize(
    ("schedule", "start_date", "catchup", "now", "expected"),
    [c[1:] for c in FIRST_INTERVAL_CASES],
    ids=[c[0] for c in FIRST_INTERVAL_CASES],
)
def test_first_interval(schedule, start_date, catchup, now, expected):
    sched = parse_schedule(schedule)
    assert sched is not None
    iv = nxt(sched, start_date=start_date, catchup=catchup, now=now)
    assert iv == Interval(*expected)
    assert iv.start.tzinfo is UTC and iv.end.tzinfo is UTC


# --------------------------------------------------------------------------- sequences


def test_catchup_true_creates_whole_backlog_hourly():
    created = run_scheduler(
        parse_schedule("@hourly"),
        start_date=dt(2024, 1, 1),
        now=dt(2024, 1, 1, 4, 10),
        catchup=True,
    )
    assert created == ivs(
        (dt(2024, 1, 1, 0), dt(2024, 1, 1, 1)),
        (dt(2024, 1, 1, 1), dt(2024, 1, 1, 2)),
        (dt(2024, 1, 1, 2), dt(2024, 1, 1, 3)),
        (dt(2024, 1, 1, 3), dt(2024, 1, 1, 4)),
    )


def test_catchup_true_backlog_daily_off_tick_start():
    created = run_scheduler(
        parse_schedule("@daily"),
        start_date=dt(2024, 2, 27, 13),
        now=dt(2024, 3, 2, 1),
        catchup=True,
    )
    assert [iv.start for iv in created] == [dt(2024, 2, 28), dt(2024, 2, 29), dt(2024, 3, 1)]
    assert created[-1].end == dt(2024, 3, 2)


def test_catchup_true_backlog_every_5_minutes():
    created = run_scheduler(
        parse_schedule("*/5 * * * *"),
        start_date=dt(2024, 1, 1, 0, 2),
        now=dt(2024, 1, 1, 0, 30),
        catchup=True,
    )
    assert [iv.start.minute for iv in created] == [
        5,
        10,
        15,
        20,
        25,
    ]  # [25, 30) ends exactly at now: due
    assert all(iv.end - iv.start == timedelta(minutes=5) for iv in created)


def test_catchup_true_backlog_timedelta():
    created = run_scheduler(
        parse_schedule(timedelta(minutes=90)),
        start_date=dt(2024, 1, 1, 0, 10),
        now=dt(2024, 1, 1, 6),
        catchup=True,
    )
    assert created == ivs(
        (dt(2024, 1, 1, 0, 10), dt(2024, 1, 1, 1, 40)),
        (dt(2024, 1, 1, 1, 40), dt(2024, 1, 1, 3, 10)),
        (dt(2024, 1, 1, 3, 10), dt(2024, 1, 1, 4, 40)),
    )


@pytest.mark.parametrize("schedule", ["@hourly", "*/5 * * * *", timedelta(minutes=20)])
def test_catchup_false_creates_only_latest(schedule):
    created = run_scheduler(
        parse_schedule(schedule),
        start_date=dt(2023, 1, 1),
        now=dt(2024, 1, 1, 4, 10),
        catchup=False,
    )
    assert len(created) == 1
    assert created[0].end <= dt(2024, 1, 1, 4, 10)


def test_catchup_false_after_old_interval_skips_backlog():
    sched = parse_schedule("@hourly")
    old = Interval(dt(2023, 6, 1, 0), dt(2023, 6, 1, 1))
    iv = nxt(sched, after=old, start_date=dt(2023, 1, 1), catchup=False, now=dt(2024, 1, 1, 4, 10))
    assert iv == Interval(dt(2024, 1, 1, 3), dt(2024, 1, 1, 4))


def test_catchup_true_after_old_interval_continues_backlog():
    sched = parse_schedule("@hourly")
    old = Interval(dt(2023, 6, 1, 0), dt(2023, 6, 1, 1))
    iv = nxt(sched, after=old, start_date=dt(2023, 1, 1), catchup=True, now=dt(2024, 1, 1, 4, 10))
    assert iv == Interval(dt(2023, 6, 1, 1), dt(2023, 6, 1, 2))


def test_catchup_false_after_recent_returns_next_not_yet_due():
    sched = parse_schedule("@hourly")
    last = Interval(dt(2024, 1, 1, 3), dt(2024, 1, 1, 4))
    now = dt(2024, 1, 1, 4, 10)
    iv = nxt(sched, after=last, start_date=dt(2023, 1, 1), catchup=False, now=now)
    assert iv == Interval(dt(2024, 1, 1, 4), dt(2024, 1, 1, 5))
    assert iv.end > now  # caller sleeps until iv.end


def test_catchup_false_incremental_over_time():
    """Advancing `now` tick by tick yields consecutive intervals without gaps."""
    sched = parse_schedule("@hourly")
    start = dt(2024, 1, 1)
    after = None
    seen = []
    now = dt(2024, 1, 1, 3, 30)
    for _ in range(5):
        iv = nxt(sched, after=after, start_date=start, catchup=False, now=now)
        if iv.end <= now:
            seen.append(iv)
            after = iv
        else:
            now = iv.end  # sleep until due
    assert [iv.start.hour for iv in seen] == [2, 3, 4]


def test_next_interval_returned_even_if_not_due():
    sched = parse_schedule("@daily")
    iv = nxt(sched, start_date=dt(2024, 1, 1), catchup=True, now=dt(2023, 12, 1))
    assert iv == Interval(dt(2024, 1, 1), dt(2024, 1, 2))


def test_schedule_change_realigns_after_end():
    """A run created by an old schedule is followed by an aligned interval."""
    sched = parse_schedule("@hourly")
    last = Interval(dt(2024, 1, 1, 0, 0), dt(2024, 1, 1, 0, 30))  # from "*/30"
    iv = nxt(sched, after=last, start_date=dt(2024, 1, 1), catchup=True, now=dt(2024, 1, 2))
    assert iv == Interval(dt(2024, 1, 1, 0), dt(2024, 1, 1, 1))


def test_delta_after_continues_from_previous_end():
    sched = parse_schedule(timedelta(minutes=30))
    last = Interval(dt(2024, 1, 1, 0, 0), dt(2024, 1, 1, 0, 30))
    iv = nxt(sched, after=last, start_date=dt(2024, 1, 1), catchup=True, now=dt(2024, 1, 2))
    assert iv == Interval(dt(2024, 1, 1, 0, 30), dt(2024, 1, 1, 1, 0))


# --------------------------------------------------------------------------- end_date


def test_end_date_stops_catchup_backlog():
    created = run_scheduler(
        parse_schedule("@daily"),
        start_date=dt(2024, 1, 1),
        end_date=dt(2024, 1, 3, 12),
        now=dt(2024, 2, 1),
        catchup=True,
    )
    assert [iv.start for iv in created] == [dt(2024, 1, 1), dt(2024, 1, 2), dt(2024, 1, 3)]


def test_end_date_on_tick_is_inclusive_for_logical_date():
    sched = parse_schedule("@daily")
    last = Interval(dt(2024, 1, 2), dt(2024, 1, 3))
    kw = {"start_date": dt(2024, 1, 1), "catchup": True, "now": dt(2024, 2, 1)}
    assert nxt(sched, after=last, end_date=dt(2024, 1, 3), **kw) == Interval(
        dt(2024, 1, 3), dt(2024, 1, 4)
    )
    last = Interval(dt(2024, 1, 3), dt(2024, 1, 4))
    assert nxt(sched, after=last, end_date=dt(2024, 1, 3), **kw) is None


@pytest.mark.parametrize("schedule", ["@hourly", "*/5 * * * *", timedelta(hours=1)])
def test_end_date_passed_returns_none(schedule):
    sched = parse_schedule(schedule)
    iv = nxt(
        sched,
        start_date=dt(2023, 1, 1),
        end_date=dt(2023, 6, 1),
        catchup=False,
        now=dt(2024, 1, 1),
    )
    assert iv is None


def test_end_date_before_aligned_start_returns_none():
    sched = parse_schedule("@daily")
    iv = nxt(
        sched,
        start_date=dt(2024, 1, 1, 6),
        end_date=dt(2024, 1, 1, 18),
        catchup=True,
        now=dt(2024, 2, 1),
    )
    assert iv is None


def test_end_date_in_future_does_not_block():
    sched = parse_schedule("@hourly")
    iv = nxt(
        sched,
        start_date=dt(2024, 1, 1),
        end_date=dt(2030, 1, 1),
        catchup=False,
        now=dt(2024, 1, 1, 2),
    )
    assert iv == Interval(dt(2024, 1, 1, 1), dt(2024, 1, 1, 2))


# --------------------------------------------------------------------------- @once


@pytest.mark.parametrize("catchup", [True, False])
def test_once_runs_at_start_date_then_never(catchup):
    sched = parse_schedule("@once")
    assert isinstance(sched, OnceSchedule)
    start = dt(2024, 1, 1, 7, 45)
    now = dt(2024, 6, 1)
    iv = nxt(sched, start_date=start, catchup=catchup, now=now)
    assert iv == Interval(start, start)
    assert iv.end <= now
    assert nxt(sched, after=iv, start_date=start, catchup=catchup, now=now) is None


def test_once_in_future_is_not_due_yet():
    sched = parse_schedule("@once")
    iv = nxt(sched, start_date=dt(2030, 1, 1), now=dt(2024, 1, 1))
    assert iv == Interval(dt(2030, 1, 1), dt(2030, 1, 1))
    assert iv.end > dt(2024, 1, 1)


def test_once_after_end_date_never_runs():
    sched = parse_schedule("@once")
    iv = nxt(sched, start_date=dt(2024, 2, 1), end_date=dt(2024, 1, 1), now=dt(2024, 6, 1))
    assert iv is None


def test_once_without_start_date_runs_now():
    sched = parse_schedule("@ONCE")
    now = dt(2024, 6, 1, 12, 0, 1)
    assert nxt(sched, now=now) == Interval(now, now)


def test_none_schedule_is_manual_only():
    assert parse_schedule(None) is None


# --------------------------------------------------------------------------- naive / tz handling


def test_naive_datetimes_are_treated_as_utc():
    sched = parse_schedule("@hourly")
    iv = nxt(
        sched,
        start_date=datetime(2024, 1, 1, 0, 15),
        end_date=datetime(2025, 1, 1),
        catchup=True,
        now=datetime(2024, 1, 1, 5),
    )
    assert iv == Interval(dt(2024, 1, 1, 1), dt(2024, 1, 1, 2))
    assert iv.start.tzinfo is UTC


def test_naive_after_interval_is_utc():
    after = Interval(datetime(2024, 1, 1, 1), datetime(2024, 1, 1, 2))
    assert after.start == dt(2024, 1, 1, 1) and after.start.tzinfo is UTC
    iv = nxt(
        parse_schedule("@hourly"), after=after, start_date=None, catchup=True, now=dt(2024, 1, 1, 2)
    )
    assert iv == Interval(dt(2024, 1, 1, 2), dt(2024, 1, 1, 3))


def test_non_utc_aware_datetimes_are_converted():
    plus2 = timezone(timedelta(hours=2))
    sched = parse_schedule("@daily")
    iv = nxt(
        sched,
        start_date=datetime(2024, 1, 1, 1, 0, tzinfo=plus2),  # 2023-12-31 23:00 UTC
        catchup=True,
        now=datetime(2024, 1, 10, tzinfo=plus2),
    )
    assert iv == Interval(dt(2024, 1, 1), dt(2024, 1, 2))
    assert iv.start.tzinfo is UTC and iv.end.tzinfo is UTC
    mixed = Interval(datetime(2024, 1, 1, 2, tzinfo=plus2), dt(2024, 1, 1, 1))
    assert mixed.start == dt(2024, 1, 1, 0) and mixed.start.tzinfo is UTC


def test_microseconds_and_seconds_do_not_break_alignment():
    sched = parse_schedule("@hourly")
    iv = nxt(
        sched,
        start_date=dt(2024, 1, 1, 1, 0, 0) + timedelta(microseconds=1),
        catchup=True,
        now=dt(2024, 1, 2),
    )
    assert iv == Interval(dt(2024, 1, 1, 2), dt(2024, 1, 1, 3))
    iv = nxt(sched, start_date=dt(2024, 1, 1), catchup=False, now=dt(2024, 1, 1, 5, 0, 0, 1))
    assert iv == Interval(dt(2024, 1, 1, 4), dt(2024, 1, 1, 5))


def test_interval_rejects_end_before_start():
    with pytest.raises(ValueError, match="before start"):
        Interval(dt(2024, 1, 2), dt(2024, 1, 1))


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("value", "cls"),
    [
        ("0 * * * *", CronSchedule),
        ("  */5   *  * * * ", CronSchedule),
        ("@hourly", CronSchedule),
        ("@daily", CronSchedule),
        ("@weekly", CronSchedule),
        ("@monthly", CronSchedule),
        ("@quarterly", CronSchedule),
        ("@yearly", CronSchedule),
        ("@annually", CronSchedule),
        ("@once", OnceSchedule),
        (timedelta(minutes=5), DeltaSchedule),
        ({"kind": "cron", "expr": "0 0 * * *"}, CronSchedule),
        ({"kind": "delta", "seconds": 300.0}, DeltaSchedule),
        ({"kind": "delta", "seconds": 60}, DeltaSchedule),
        ({"kind": "once"}, OnceSchedule),
    ],
)
def test_parse_schedule_types(value, cls):
    assert isinstance(parse_schedule(value), cls)


def test_parse_schedule_passes_schedule_through():
    sched = CronSchedule("@daily")
    assert parse_schedule(sched) is sched


@pytest.mark.parametrize(
    ("preset", "cron"),
    [
        ("@hourly", "0 * * * *"),
        ("@daily", "0 0 * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@quarterly", "0 0 1 */3 *"),
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
    ],
)
def test_presets_expand_to_cron(preset, cron):
    sched = parse_schedule(preset)
    assert sched.cron == cron
    kw = {"start_date": dt(2023, 3, 7, 5, 17), "catchup": True, "now": dt(2025, 1, 1)}
    assert nxt(sched, **kw) == nxt(parse_schedule(cron), **kw)


INVALID_CASES = [
    ("@continuous", "invalid schedule '@continuous': @continuous is not supported"),
    ("@every_second", "invalid schedule '@every_second': unknown preset"),
    ("", "invalid schedule '': empty expression"),
    ("   ", "invalid schedule '': empty expression"),
    ("* * *", r"invalid schedule '\* \* \*': expected 5 cron fields"),
    ("0 0 * * * *", r"invalid schedule '0 0 \* \* \* \*': expected 5 cron fields"),
    ("61 * * * *", r"invalid schedule '61 \* \* \* \*': .*out of range"),
    ("0 25 * * *", r"invalid schedule '0 25 \* \* \*': "),
    ("a b c d e", r"invalid schedule 'a b c d e': "),
    ("H * * * *", r"invalid schedule 'H \* \* \* \*': "),
    ("0 0 31 2 *", r"invalid schedule '0 0 31 2 \*': the expression never matches a date"),
    (timedelta(0), "timedelta must be positive"),
    (timedelta(minutes=-5), "timedelta must be positive"),
    (42, "invalid schedule 42: unsupported type int"),
    (3.5, "unsupported type float"),
    (["@daily"], "unsupported type list"),
    ({"kind": "bogus"}, "unknown kind 'bogus'"),
    ({}, "unknown kind None"),
    ({"kind": "cron"}, "'expr' must be a string"),
    ({"kind": "cron", "expr": "@continuous"}, "@continuous is not supported"),
    ({"kind": "cron", "expr": "nope"}, "invalid schedule 'nope': expected 5 cron fields"),
    ({"kind": "delta"}, "'seconds' must be a number"),
    ({"kind": "delta", "seconds": "60"}, "'seconds' must be a number"),
    ({"kind": "delta", "seconds": True}, "'seconds' must be a number"),
    ({"kind": "delta", "seconds": 0}, "'seconds' must be positive"),
    ({"kind": "delta", "seconds": float("inf")}, "'seconds' must be positive"),
]


@pytest.mark.parametrize(
    ("value", "message"), INVALID_CASES, ids=[repr(c[0]) for c in INVALID_CASES]
)
def test_invalid_schedules(value, message):
    with pytest.raises(ValueError, match=message):
        parse_schedule(value)


# --------------------------------------------------------------------------- JSON round trip


@pytest.mark.parametrize(
    ("value", "expected_json"),
    [
        ("0 * * * *", {"kind": "cron", "expr": "0 * * * *"}),
        ("*/5  * * * *", {"kind": "cron", "expr": "*/5 * * * *"}),
        ("@daily", {"kind": "cron", "expr": "@daily"}),
        ("@once", {"kind": "once"}),
        (timedelta(minutes=5), {"kind": "delta", "seconds": 300.0}),
        (timedelta(days=1, microseconds=500), {"kind": "delta", "seconds": 86400.0005}),
    ],
)
def test_to_json_round_trip(value, expected_json):
    sched = parse_schedule(value)
    data = sched.to_json()
    assert data == expected_json
    rebuilt = parse_schedule(json.loads(json.dumps(data)))
    assert rebuilt == sched
    assert rebuilt.to_json() == data
    kw = {"start_date": dt(2024, 1, 1, 0, 7), "catchup": True, "now": dt(2024, 3, 1)}
    assert nxt(rebuilt, **kw) == nxt(sched, **kw)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("0 * * * *", "cron '0 * * * *' (UTC)"),
        ("@daily", "@daily (0 0 * * * UTC)"),
        ("@once", "@once"),
        (timedelta(minutes=5), "every 5 minutes"),
        (timedelta(hours=1), "every 1 hour"),
        (timedelta(days=1, hours=2, seconds=3), "every 1 day, 2 hours, 3 seconds"),
        (timedelta(seconds=1.5), "every 1.5 seconds"),
    ],
)
def test_description(value, text):
    assert parse_schedule(value).description() == text


# --- cron in the DAG's time zone ------------------------------------------------------------------

def test_a_cron_schedule_is_read_in_the_dags_time_zone_across_daylight_saving():
    import pendulum
    from airflow.sdk import DAG

    dag = DAG("paris", start_date=pendulum.datetime(2026, 3, 27, tz="Europe/Paris"),
              schedule="0 6 * * *", catchup=True)
    spec = spec_of(dag)
    assert spec.schedule == {"kind": "cron", "expr": "0 6 * * *", "tz": "Europe/Paris"}
    schedule = parse_schedule(json.loads(json.dumps(spec.schedule)))
    starts, interval = [], None
    for _ in range(4):
        interval = schedule.next_interval(after=interval, start_date=spec.start_date,
                                          end_date=None, catchup=True,
                                          now=datetime(2026, 4, 30, tzinfo=UTC))
        starts.append(interval.start.strftime("%m-%d %H:%M"))
    assert starts == ["03-27 05:00", "03-28 05:00", "03-29 04:00", "03-30 04:00"]  # 06:00 Paris
    assert schedule.description() == "cron '0 6 * * *' (Europe/Paris)"


def test_a_utc_or_naive_start_date_keeps_the_cron_schedule_in_utc():
    from airflow.sdk import DAG

    for start in (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1)):
        dag = DAG("utc", start_date=start, schedule="@daily")
        assert spec_of(dag).schedule == {"kind": "cron", "expr": "0 0 * * *"}


@pytest.mark.parametrize(("schedule", "expected"), [
    (None, None),
    ("@once", {"kind": "once"}),
    ("*/5 * * * *", {"kind": "cron", "expr": "*/5 * * * *"}),
    ("@hourly", {"kind": "cron", "expr": "0 * * * *"}),
    (timedelta(hours=6), {"kind": "delta", "seconds": 21600.0}),
])
def test_a_dags_schedule_is_what_the_scheduler_creates_runs_by(schedule, expected):
    from airflow.sdk import DAG

    spec = spec_of(DAG("d", start_date=datetime(2026, 1, 1), schedule=schedule))
    assert spec.schedule == expected
    if expected is not None:
        assert parse_schedule(spec.schedule).to_json() == expected


def test_a_schedule_sluice_cannot_run_is_refused_naming_the_dag_and_timetable():
    from airflow.sdk import DAG

    from shared.airflow_spec import SpecError

    with pytest.raises(SpecError, match=r"DAG 'd': schedule ContinuousTimetable\(\) is not "
                                        r"supported by Sluice"):
        spec_of(DAG("d", start_date=datetime(2026, 1, 1), schedule="@continuous",
                    max_active_runs=1))


def test_an_unknown_time_zone_is_refused():
    with pytest.raises(ValueError, match="not an IANA time zone"):
        parse_schedule({"kind": "cron", "expr": "@daily", "tz": "Mars/Olympus"})


# --- the data interval of a manual run -----------------------------------------------------------

def test_a_manual_run_covers_the_last_complete_interval_as_in_airflow():
    from shared.schedules import manual_interval

    at = datetime(2026, 3, 25, 1, 0, tzinfo=UTC)
    daily = manual_interval(parse_schedule("@daily"), at)
    assert (daily.start, daily.end) == (datetime(2026, 3, 24, tzinfo=UTC),
                                        datetime(2026, 3, 25, tzinfo=UTC))
    on_tick = manual_interval(parse_schedule("@daily"), datetime(2026, 3, 25, tzinfo=UTC))
    assert on_tick.end == datetime(2026, 3, 25, tzinfo=UTC)  # a tick is its own end
    delta = manual_interval(parse_schedule(timedelta(hours=6)), at)
    assert (delta.start, delta.end) == (at - timedelta(hours=6), at)
    for unscheduled in (None, parse_schedule("@once")):
        assert manual_interval(unscheduled, at) == Interval(at, at)


async def test_create_manual_run_stores_the_inferred_interval(db):
    from scheduler.runs import create_manual_run

    await db.execute("INSERT INTO dag (dag_id, fileloc, source_hash, serialized) VALUES"
                     " ('daily', 'd.py', 'h', $1::json), ('manual', 'm.py', 'h', $2::json)",
                     {"schedule": {"kind": "cron", "expr": "@daily"}}, {"schedule": None})
    at = datetime(2026, 3, 25, 1, 0, tzinfo=UTC)
    later = at + timedelta(minutes=1)  # run ids are unique across DAGs
    rows = {}
    for dag_id, when in (("daily", at), ("manual", later)):
        pk, _ = await create_manual_run(db, dag_id, {}, logical_date=when)
        rows[dag_id] = await db.fetchrow("SELECT logical_date, data_interval_start,"
                                         " data_interval_end FROM dag_run WHERE id = $1", pk)
    assert tuple(rows["daily"].values()) == (at, datetime(2026, 3, 24, tzinfo=UTC),
                                             datetime(2026, 3, 25, tzinfo=UTC))
    assert tuple(rows["manual"].values()) == (later, later, later)

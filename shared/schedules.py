"""DAG schedules with Airflow's data-interval semantics (pure logic, no I/O).

A scheduled run covers a *data interval* ``[start, end)``. Its ``logical_date``
is ``interval.start`` and the run becomes due once ``interval.end <= now``
(Airflow's ``CronDataIntervalTimetable`` / ``DeltaDataIntervalTimetable``).

``Schedule.next_interval`` returns the next interval to create, even when it is
not due yet; the caller creates the run if ``interval.end <= now`` and otherwise
sleeps until ``interval.end``. ``None`` means there will never be another run.

Rules (mirroring Airflow's ``next_dagrun_info``):

* cron intervals run from one cron tick to the next; ``start_date`` is rounded
  up to the next tick (or kept if it is on a tick).
* timedelta intervals start at ``start_date`` and step by the delta (without a
  ``start_date`` the grid is anchored at the Unix epoch).
* ``catchup=True``: the first interval starts at the first tick >= start_date
  and each following one starts where the previous one ended.
* ``catchup=False``: the backlog is skipped; the result is the latest interval
  whose end <= now (else the first upcoming one), never earlier than
  ``start_date`` and never earlier than the end of ``after``.
* ``end_date``: no interval whose start (the logical date) is after it.
* ``"@once"``: one interval ``start == end == start_date`` and then ``None``.

Without a ``start_date`` there is no backlog, so cron/timedelta schedules
behave as with ``catchup=False`` and ``"@once"`` runs at ``now``.

All datetimes are returned tz-aware in UTC; naive inputs are treated as UTC.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

__all__ = [
    "manual_interval",
    "CronSchedule",
    "DeltaSchedule",
    "Interval",
    "OnceSchedule",
    "Schedule",
    "parse_schedule",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_VALIDATION_BASE = datetime(2000, 1, 1, tzinfo=UTC)

CRON_PRESETS: dict[str, str] = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@quarterly": "0 0 1 */3 *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}


def _utc(dt: datetime) -> datetime:
    """Return ``dt`` as tz-aware UTC (naive datetimes are taken to be UTC)."""
    if not isinstance(dt, datetime):
        raise TypeError(f"expected a datetime, got {type(dt).__name__}")
    if dt.tzinfo is None or dt.tzinfo.utcoffset(dt) is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def _opt_utc(dt: datetime | None) -> datetime | None:
    return None if dt is None else _utc(dt)


@dataclass(frozen=True, slots=True)
class Interval:
    """A data interval ``[start, end)``; ``start`` is the run's logical date."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        start, end = _utc(self.start), _utc(self.end)
        if end < start:
            raise ValueError(f"interval end {end.isoformat()} is before start {start.isoformat()}")
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)


class Schedule(ABC):
    """Base class of all schedules."""

    __slots__ = ()

    @abstractmethod
    def next_interval(
        self,
        *,
        after: Interval | None,
        start_date: datetime | None,
        end_date: datetime | None,
        catchup: bool,
        now: datetime,
    ) -> Interval | None:
        """The next interval to create after ``after`` (the last scheduled run's
        interval, ``None`` if there is none yet), even if not due yet.
        ``None`` only when there will never be another run."""

    @abstractmethod
    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict that ``parse_schedule`` turns back into this schedule."""

    @abstractmethod
    def description(self) -> str:
        """A short human-readable description."""


class _IntervalSchedule(Schedule):
    """Shared ``next_interval`` logic of cron and timedelta schedules."""

    __slots__ = ()

    @abstractmethod
    def _next(self, dt: datetime) -> datetime:
        """The grid point strictly after ``dt`` (``dt`` on the grid)."""

    @abstractmethod
    def _align_next(self, dt: datetime, anchor: datetime | None) -> datetime:
        """``dt`` if on the grid, else the next grid point."""

    @abstractmethod
    def _align_prev(self, dt: datetime, anchor: datetime | None) -> datetime:
        """``dt`` if on the grid, else the previous grid point."""

    @abstractmethod
    def _latest_start(self, now: datetime, anchor: datetime | None) -> datetime:
        """Start of the latest interval whose end <= ``now``."""

    def next_interval(
        self,
        *,
        after: Interval | None,
        start_date: datetime | None,
        end_date: datetime | None,
        catchup: bool,
        now: datetime,
    ) -> Interval | None:
        start_date = _opt_utc(start_date)
        end_date = _opt_utc(end_date)
        now = _utc(now)

        if catchup and start_date is not None:
            earliest = self._align_next(start_date, start_date)
        else:
            earliest = self._latest_start(now, start_date)
            if start_date is not None:
                earliest = max(earliest, self._align_next(start_date, start_date))

        if after is None:
            start = earliest
        else:
            # Re-align in case the schedule changed since ``after`` was created.
            start = max(self._align_prev(_utc(after.end), start_date), earliest)

        if end_date is not None and start > end_date:
            return None
        return Interval(start, self._next(start))


@dataclass(frozen=True, slots=True)
class CronSchedule(_IntervalSchedule):
    """Intervals between consecutive ticks of a 5-field cron expression.

    The ticks are read in the DAG's time zone (``tz``, an IANA name; its
    start_date's, as in Airflow), across daylight-saving changes; the
    intervals are returned in UTC like every datetime here.
    """

    expr: str
    """As given (normalised whitespace); may be a preset such as ``"@daily"``."""
    tz: str | None = None
    """The IANA time zone the expression is read in; ``None`` is UTC."""
    cron: str = field(init=False, repr=False, compare=False)
    """The 5-field expression (presets expanded)."""
    zone: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        expr = " ".join(str(self.expr).split())
        object.__setattr__(self, "expr", expr)
        object.__setattr__(self, "cron", _validate_cron(expr))
        object.__setattr__(self, "zone", _zone(self.tz))

    def _next(self, dt: datetime) -> datetime:
        return _utc(croniter(self.cron, dt.astimezone(self.zone)).get_next(datetime))

    def _prev(self, dt: datetime) -> datetime:
        return _utc(croniter(self.cron, dt.astimezone(self.zone)).get_prev(datetime))

    def _align_next(self, dt: datetime, anchor: datetime | None) -> datetime:
        nxt = self._next(dt)
        return dt if self._prev(nxt) == dt else nxt

    def _align_prev(self, dt: datetime, anchor: datetime | None) -> datetime:
        prev = self._prev(dt)
        return dt if self._next(prev) == dt else prev

    def _latest_start(self, now: datetime, anchor: datetime | None) -> datetime:
        last_start = self._prev(now)
        if self._next(last_start) == now:  # now is exactly on a tick
            return last_start
        return self._prev(last_start)

    def to_json(self) -> dict[str, Any]:
        return {"kind": "cron", "expr": self.expr, **({"tz": self.tz} if self.tz else {})}

    def in_zone(self, tz: str | None) -> CronSchedule:
        """The same expression read in ``tz`` (a DAG's time zone)."""
        return self if tz == self.tz else CronSchedule(self.expr, tz)

    def description(self) -> str:
        where = self.tz or "UTC"
        if self.expr != self.cron:
            return f"{self.expr} ({self.cron} {where})"
        return f"cron '{self.cron}' ({where})"


@dataclass(frozen=True, slots=True)
class DeltaSchedule(_IntervalSchedule):
    """Fixed-length intervals on a grid anchored at ``start_date``."""

    delta: timedelta

    def __post_init__(self) -> None:
        if not isinstance(self.delta, timedelta):
            raise TypeError(f"delta must be a timedelta, got {type(self.delta).__name__}")
        if self.delta <= timedelta(0):
            raise ValueError(f"invalid schedule {self.delta!r}: timedelta must be positive")

    def _next(self, dt: datetime) -> datetime:
        return dt + self.delta

    def _align_next(self, dt: datetime, anchor: datetime | None) -> datetime:
        # start_date defines the grid, so it is always "on" it.
        return dt

    def _align_prev(self, dt: datetime, anchor: datetime | None) -> datetime:
        # Like Airflow, continue exactly where the previous interval ended.
        return dt

    def _latest_start(self, now: datetime, anchor: datetime | None) -> datetime:
        base = anchor if anchor is not None else _EPOCH
        n = (now - base) // self.delta  # whole intervals that have ended by ``now``
        return base + (n - 1) * self.delta

    def to_json(self) -> dict[str, Any]:
        return {"kind": "delta", "seconds": self.delta.total_seconds()}

    def description(self) -> str:
        return f"every {_human_delta(self.delta)}"


@dataclass(frozen=True, slots=True)
class OnceSchedule(Schedule):
    """``"@once"``: a single run at ``start_date``."""

    def next_interval(
        self,
        *,
        after: Interval | None,
        start_date: datetime | None,
        end_date: datetime | None,
        catchup: bool,
        now: datetime,
    ) -> Interval | None:
        if after is not None:
            return None
        at = _opt_utc(start_date)
        if at is None:
            at = _utc(now)
        end_date = _opt_utc(end_date)
        if end_date is not None and at > end_date:
            return None
        return Interval(at, at)

    def to_json(self) -> dict[str, Any]:
        return {"kind": "once"}

    def description(self) -> str:
        return "@once"


def manual_interval(schedule: Schedule | None, run_after: datetime) -> Interval:
    """The data interval of a run triggered by hand at ``run_after``, as Airflow infers it.

    Cron: the last complete interval ending at or before ``run_after`` (a
    ``@daily`` DAG triggered at 01:00 on the 25th covers the 24th). Timedelta:
    the delta ending at ``run_after``. No schedule or ``@once``: the moment itself.
    """
    run_after = _utc(run_after)
    if isinstance(schedule, CronSchedule):
        end = schedule._align_prev(run_after, None)
        return Interval(schedule._prev(end), end)
    if isinstance(schedule, DeltaSchedule):
        return Interval(run_after - schedule.delta, run_after)
    return Interval(run_after, run_after)


def _zone(name: str | None) -> Any:
    if not name or name == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"invalid schedule time zone {name!r}: not an IANA time zone") from exc


def zone_name(tz: Any) -> str | None:
    """The IANA name of a DAG's time zone (``None`` for UTC or a bare fixed offset)."""
    name = getattr(tz, "key", None) or getattr(tz, "name", None)
    if not isinstance(name, str) or name in ("UTC", "Etc/UTC"):
        return None
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None
    return name


def _validate_cron(expr: str) -> str:
    if not expr:
        raise ValueError(f"invalid schedule '{expr}': empty expression")
    if expr.startswith("@"):
        preset = expr.lower()
        if preset == "@continuous":
            raise ValueError(
                f"invalid schedule '{expr}': @continuous is not supported "
                "(use a cron expression or a timedelta)"
            )
        if preset not in CRON_PRESETS:
            known = ", ".join(["@once", *CRON_PRESETS])
            raise ValueError(f"invalid schedule '{expr}': unknown preset (expected one of {known})")
        return CRON_PRESETS[preset]
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(
            f"invalid schedule '{expr}': expected 5 cron fields "
            f"(minute hour day-of-month month day-of-week), got {len(fields)}"
        )
    try:
        croniter(expr, _VALIDATION_BASE).get_next(datetime)
    except CroniterError as exc:
        reason = str(exc) or type(exc).__name__
        if "failed to find" in reason:
            reason = "the expression never matches a date"
        raise ValueError(f"invalid schedule '{expr}': {reason}") from exc
    return expr


def _human_delta(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds != math.floor(seconds):
        return f"{seconds:g} seconds"
    total = int(seconds)
    parts = []
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        n, total = divmod(total, size)
        if n:
            parts.append(f"{n} {unit}{'' if n == 1 else 's'}")
    return ", ".join(parts)


def parse_schedule(value: Any) -> Schedule | None:
    """Build a schedule from a DAG's ``schedule`` argument or its ``to_json()`` form.

    Accepts ``None`` (manual only; returns ``None``), a cron string, a preset
    (``@once``, ``@hourly``, ``@daily``, ``@weekly``, ``@monthly``,
    ``@quarterly``, ``@yearly``/``@annually``), a ``timedelta``, a ``Schedule``,
    or a dict from ``Schedule.to_json()``. Raises ``ValueError`` otherwise.
    """
    if value is None or isinstance(value, Schedule):
        return value
    if isinstance(value, timedelta):
        return DeltaSchedule(value)
    if isinstance(value, str):
        expr = " ".join(value.split())
        if expr.lower() == "@once":
            return OnceSchedule()
        return CronSchedule(expr)
    if isinstance(value, dict):
        return _from_json(value)
    raise ValueError(
        f"invalid schedule {value!r}: unsupported type {type(value).__name__} "
        "(expected None, a cron string, a preset, a timedelta or a dict)"
    )


def _from_json(data: dict[str, Any]) -> Schedule:
    kind = data.get("kind")
    if kind == "cron":
        expr = data.get("expr")
        if not isinstance(expr, str):
            raise ValueError(f"invalid schedule {data!r}: 'expr' must be a string")
        if expr.strip().lower() == "@once":
            return OnceSchedule()
        tz = data.get("tz")
        if tz is not None and not isinstance(tz, str):
            raise ValueError(f"invalid schedule {data!r}: 'tz' must be a string")
        return CronSchedule(expr, tz)
    if kind == "delta":
        seconds = data.get("seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise ValueError(f"invalid schedule {data!r}: 'seconds' must be a number")
        if not math.isfinite(seconds) or seconds <= 0:
            raise ValueError(f"invalid schedule {data!r}: 'seconds' must be positive")
        return DeltaSchedule(timedelta(seconds=seconds))
    if kind == "once":
        return OnceSchedule()
    raise ValueError(f"invalid schedule {data!r}: unknown kind {kind!r}")

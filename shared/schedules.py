"""A DAG's schedule: Airflow's own core timetable, evaluated the way Airflow's scheduler does.

The parse server stores a DAG's timetable as Airflow serializes it
(``airflow.serialization.encoders.encode_timetable``) inside the schedule JSON
(``shared.airflow_spec.timetables.schedule_json``)::

    {"kind": "timetable", "timetable": {"__type": "...", "__var": {...}},
     "summary": "0 0 * * *", "description": "At 00:00",
     "earliest": "2026-01-01T00:00:00+00:00", "latest": null}

The scheduler decodes it with Airflow's ``decode_timetable`` into the core
class (``CronTriggerTimetable``, ``CronDataIntervalTimetable``,
``EventsTimetable``, ...) and asks it what Airflow 3.3's scheduler asks it, so
every built-in timetable behaves exactly as in Airflow instead of being
re-implemented here:

* ``Schedule.next_run`` is ``Timetable.next_dagrun_info_v2`` under Airflow's
  ``TimeRestriction`` (``earliest``: the earliest start date of the DAG and its
  tasks; ``latest``: its end date; ``catchup``), after the last scheduled
  run's data interval, with the timetable's clock reading ``now``. The run is
  due once ``run_after <= now``; its logical date is the data interval's
  start and its run id ``scheduled__<run_after>`` (``generate_run_id``).
* ``Schedule.manual_interval`` is ``infer_manual_data_interval``.

Every datetime given back is a tz-aware stdlib ``datetime`` in UTC; naive
inputs are taken to be UTC. Airflow is imported only when a schedule is
evaluated (the parse server and the scheduler have it; nothing else needs it).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

__all__ = ["Interval", "RunInfo", "Schedule", "load_timetables", "manual_interval",
           "parse_schedule", "schedule_text", "timetable_json"]

KIND = "timetable"


def _utc(dt: datetime) -> datetime:
    """``dt`` as a tz-aware stdlib datetime in UTC (naive datetimes are taken to be UTC)."""
    if not isinstance(dt, datetime):
        raise TypeError(f"expected a datetime, got {type(dt).__name__}")
    if dt.tzinfo is None or dt.tzinfo.utcoffset(dt) is None:
        dt = dt.replace(tzinfo=UTC)
    v = dt.astimezone(UTC)
    return datetime(v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond, tzinfo=UTC)


def _opt_utc(dt: datetime | None) -> datetime | None:
    return None if dt is None else _utc(dt)


@dataclass(frozen=True, slots=True)
class Interval:
    """A data interval ``[start, end]``; for a run, ``start`` is its logical date."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        start, end = _utc(self.start), _utc(self.end)
        if end < start:
            raise ValueError(f"interval end {end.isoformat()} is before start {start.isoformat()}")
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)


@dataclass(frozen=True, slots=True)
class RunInfo:
    """Airflow's ``DagRunInfo`` of one scheduled run: when it may run and what it covers."""

    run_after: datetime
    interval: Interval

    @property
    def logical_date(self) -> datetime:
        return self.interval.start

    @property
    def run_id(self) -> str:
        """``Timetable.generate_run_id`` of a scheduled run: ``scheduled__<run_after>``."""
        return f"scheduled__{self.run_after.isoformat()}"


class Schedule:
    """One DAG's timetable (Airflow's core class, decoded once) and its time restriction."""

    __slots__ = ("encoded", "earliest", "latest", "_summary", "_description")

    def __init__(self, encoded: dict[str, Any], *, earliest: datetime | None = None,
                 latest: datetime | None = None, summary: str | None = None,
                 description: str | None = None) -> None:
        if not isinstance(encoded, dict) or not isinstance(encoded.get("__type"), str) \
                or not isinstance(encoded.get("__var"), dict):
            raise ValueError(f"invalid schedule timetable {encoded!r}: expected Airflow's "
                             "encoded timetable {'__type': ..., '__var': {...}}")
        self.encoded = encoded
        self.earliest = _opt_utc(earliest)
        self.latest = _opt_utc(latest)
        self._summary = summary
        self._description = description

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schedule) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_json(), sort_keys=True))

    def __repr__(self) -> str:
        return f"Schedule({self.summary()!r})"

    @property
    def timetable(self) -> Any:
        """Airflow's core timetable object (shared by every schedule of the same encoding)."""
        return _decoded(json.dumps(self.encoded, sort_keys=True))

    @property
    def kind(self) -> str:
        """The timetable's class name, e.g. ``CronTriggerTimetable``."""
        return self.encoded["__type"].rsplit(".", 1)[-1]

    @property
    def active_runs_limit(self) -> int | None:
        """The timetable's own cap on active runs (``ContinuousTimetable``: 1)."""
        return getattr(self.timetable, "active_runs_limit", None)

    def next_run(self, *, after: Interval | None, catchup: bool, now: datetime) -> RunInfo | None:
        """The next scheduled run after the last one's interval ``after``, even if not due yet.

        ``None``: the timetable will not schedule another run (``@once`` done,
        past ``latest``, no event left). A run is due when ``run_after <= now``.
        """
        from airflow._shared.timezones.timezone import coerce_datetime
        from airflow.timetables.base import DagRunInfo, DataInterval, TimeRestriction

        last = None
        if after is not None:
            span = DataInterval(coerce_datetime(after.start), coerce_datetime(after.end))
            last = DagRunInfo(run_after=span.end, data_interval=span)
        restriction = TimeRestriction(coerce_datetime(self.earliest),
                                      coerce_datetime(self.latest), bool(catchup))
        with frozen_clock(now):
            info = self.timetable.next_dagrun_info_v2(last_dagrun_info=last,
                                                      restriction=restriction)
        if info is None:
            return None
        if info.data_interval is None:  # only partitioned timetables, refused at load
            raise ValueError(f"timetable {self.kind} gave a run without a data interval")
        return RunInfo(_utc(info.run_after),
                       Interval(info.data_interval.start, info.data_interval.end))

    def manual_interval(self, run_after: datetime) -> Interval:
        """``infer_manual_data_interval``: the data interval of a run triggered at ``run_after``."""
        from airflow._shared.timezones.timezone import coerce_datetime

        with frozen_clock(run_after):
            got = self.timetable.infer_manual_data_interval(run_after=coerce_datetime(_utc(run_after)))
        return Interval(got.start, got.end)

    def summary(self) -> str:
        """Airflow's ``timetable.summary`` (what ``dags list`` and the UI show, e.g. ``0 0 * * *``)."""
        return self._summary if self._summary is not None else self.timetable.summary

    def description(self) -> str:
        """Airflow's ``timetable.description`` (e.g. ``At 00:00``), else the summary."""
        text = self._description if self._description is not None else \
            getattr(self.timetable, "description", "")
        return text or self.summary()

    def to_json(self) -> dict[str, Any]:
        return {"kind": KIND, "timetable": self.encoded, "summary": self.summary(),
                "description": self.description(),
                "earliest": None if self.earliest is None else self.earliest.isoformat(),
                "latest": None if self.latest is None else self.latest.isoformat()}


def load_timetables() -> None:
    """Import Airflow's timetable classes and decoders (about 1.5 s of ``import airflow``).

    The scheduler calls it once at start, in a thread, so that its first pass
    does not stall its event loop on the import.
    """
    import airflow.serialization.decoders  # noqa: F401
    import airflow.timetables.events  # noqa: F401
    import airflow.timetables.interval  # noqa: F401
    import airflow.timetables.simple  # noqa: F401
    import airflow.timetables.trigger  # noqa: F401


@functools.lru_cache(maxsize=4096)
def _decoded(encoded: str) -> Any:
    """Airflow's ``decode_timetable`` of an encoding (core classes only, never a plugin's)."""
    from airflow.serialization.decoders import decode_timetable
    from airflow.serialization.helpers import is_core_timetable_import_path

    data = json.loads(encoded)
    if not is_core_timetable_import_path(data["__type"]):
        raise ValueError(f"timetable {data['__type']} is not one of Airflow's own timetables; "
                         "Sluice runs no timetable plugins")
    return decode_timetable(data)


@contextmanager
def frozen_clock(now: datetime) -> Iterator[None]:
    """Airflow's timetables read ``now`` as the current time while inside.

    The timetables decide from the current time (``catchup=False``, the first
    run of a trigger timetable, ``@continuous``, events): the scheduler makes
    them decide from the moment of its own pass, so that what it checks as due
    and what the timetable computed agree, and tests can fix the moment. The
    clock is swapped in the timetable modules only, and back at exit; the
    scheduler evaluates timetables on its event loop's thread, one at a time.
    """
    import airflow._shared.timezones.timezone as clock
    import airflow.timetables.interval as interval
    import airflow.timetables.trigger as trigger

    at = _utc(now)

    def utcnow() -> datetime:
        return at

    swaps = [(clock, "utcnow", utcnow), (interval, "utcnow", utcnow),
             (trigger, "utcnow", utcnow),
             (trigger, "time", SimpleNamespace(time=at.timestamp))]
    saved = [(module, name, getattr(module, name)) for module, name, _ in swaps]
    for module, name, value in swaps:
        setattr(module, name, value)
    try:
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


def manual_interval(schedule: Schedule | None, run_after: datetime) -> Interval:
    """The data interval of a run triggered by hand at ``run_after``, as Airflow infers it.

    No schedule: the moment itself (``NullTimetable``). Otherwise the
    timetable's ``infer_manual_data_interval``: a trigger timetable covers
    ``[run_after - interval, run_after]``; ``CronDataIntervalTimetable`` the
    last complete interval (a ``@daily`` one triggered at 01:00 on the 25th
    covers the 24th); ``EventsTimetable(restrict_to_events=True)`` the most
    recent event.
    """
    run_after = _utc(run_after)
    if schedule is None:
        return Interval(run_after, run_after)
    return schedule.manual_interval(run_after)


def timetable_json(timetable: Any) -> dict[str, Any]:
    """Airflow's ``encode_timetable`` of an SDK or core timetable, decodable by Airflow's core.

    Airflow 3.3.2's encoder leaves out the ``_summary`` its core
    ``EventsTimetable.deserialize`` requires; it is filled in as the core class
    computes it.
    """
    from airflow.serialization.encoders import encode_timetable

    encoded = json.loads(json.dumps(encode_timetable(timetable)))
    if encoded["__type"] == "airflow.timetables.events.EventsTimetable":
        var = encoded["__var"]
        if "_summary" not in var:
            var["_summary"] = var.get("description") or f"{len(var['event_dates'])} events"
    return encoded


def schedule_text(schedule: dict[str, Any] | None) -> str:
    """A stored schedule as ``dags list`` shows it: Airflow's summary (and description).

    ``0 0 * * * (At 00:00)``, ``@once (Once, as soon as possible)``, ``1:00:00``;
    ``-`` for none. Reads the document only (no Airflow import).
    """
    if not schedule:
        return "-"
    if schedule.get("kind") != KIND:
        return json.dumps(schedule)
    summary, description = schedule.get("summary"), schedule.get("description")
    return str(summary) if description in (None, "", summary) else f"{summary} ({description})"


def parse_schedule(value: Any) -> Schedule | None:
    """The schedule of a DAG document's ``schedule`` value (``None``: manual runs only).

    Accepts the stored JSON (``Schedule.to_json()``), a ``Schedule``, or, as
    a DAG file's ``schedule=`` would give it in Airflow 3.3 (UTC, no start
    date): a cron expression or preset (a ``CronTriggerTimetable``), a
    timedelta (a ``DeltaTriggerTimetable``), ``"@once"`` or ``"@continuous"``.
    Documents stored before timetables were kept (``{"kind": "cron"|"delta"|
    "once"}``) read as the trigger timetables Airflow 3.3 builds for them.
    Raises ``ValueError`` for anything else.
    """
    if value is None or isinstance(value, Schedule):
        return value
    if isinstance(value, str | timedelta):
        return _from_plain(value)
    if isinstance(value, dict):
        return _from_json(value)
    raise ValueError(f"invalid schedule {value!r}: unsupported type {type(value).__name__} "
                     "(expected None, a cron string, a preset, a timedelta or a dict)")


def _from_plain(value: str | timedelta) -> Schedule | None:
    import pendulum
    from airflow.sdk.definitions.dag import _create_timetable

    if isinstance(value, str):
        value = " ".join(value.split())
        value = value.lower() if value.startswith("@") else value
    try:
        timetable = _create_timetable(value, pendulum.UTC)
        encoded = timetable_json(timetable)
        schedule = Schedule(encoded)
        getattr(_decoded(json.dumps(encoded, sort_keys=True)), "validate", lambda: None)()
    except Exception as exc:  # Airflow's own words for a bad expression or delta
        raise ValueError(f"invalid schedule {value!r}: {exc}") from exc
    return None if schedule.kind == "NullTimetable" else schedule


def _from_json(data: dict[str, Any]) -> Schedule:
    kind = data.get("kind")
    if kind == KIND:
        return Schedule(data.get("timetable"), earliest=_date(data, "earliest"),
                        latest=_date(data, "latest"), summary=data.get("summary"),
                        description=data.get("description"))
    if kind in ("cron", "delta", "once"):
        return Schedule(_legacy(data))
    raise ValueError(f"invalid schedule {data!r}: unknown kind {kind!r}")


def _date(data: dict[str, Any], key: str) -> datetime | None:
    value = data.get(key)
    if value is None:
        return None
    try:
        return _utc(datetime.fromisoformat(value))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"invalid schedule {key} {value!r}: expected an ISO 8601 date-time") from exc


def _legacy(data: dict[str, Any]) -> dict[str, Any]:
    """A document of Sluice's former schedule kinds as the timetable Airflow 3.3 builds for it."""
    kind = data["kind"]
    if kind == "once":
        return {"__type": "airflow.timetables.simple.OnceTimetable", "__var": {}}
    if kind == "cron":
        expr = data.get("expr")
        if not isinstance(expr, str):
            raise ValueError(f"invalid schedule {data!r}: 'expr' must be a string")
        return {"__type": "airflow.timetables.trigger.CronTriggerTimetable",
                "__var": {"expression": expr, "timezone": data.get("tz") or "UTC",
                          "interval": 0.0, "run_immediately": False}}
    seconds = data.get("seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) \
            or not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"invalid schedule {data!r}: 'seconds' must be a positive number")
    return {"__type": "airflow.timetables.trigger.DeltaTriggerTimetable",
            "__var": {"delta": float(seconds), "interval": 0.0}}

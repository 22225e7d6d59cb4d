"""A DAG's Airflow timetable as the schedule JSON of ``shared.schedules``.

Sluice's schedules are: none, ``@once``, a cron expression (or preset) read
in the DAG's time zone, and a fixed timedelta. Airflow builds a trigger
timetable from a cron string or timedelta by default (``[scheduler]
create_cron_data_intervals`` is off in Airflow 3); both kinds map to the same
Sluice schedule when they run at the same moments (no separate data
interval, no ``run_immediately``). Any other timetable is refused, naming
the DAG and the timetable.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from shared.airflow_spec.errors import SpecError
from shared.schedules import CronSchedule, DeltaSchedule, zone_name

SUPPORTED = ("None, '@once', a cron expression or preset, a timedelta, CronDataIntervalTimetable, "
             "DeltaDataIntervalTimetable, or CronTriggerTimetable/DeltaTriggerTimetable "
             "without interval or run_immediately")


def schedule_json(dag: Any) -> dict[str, Any] | None:
    """The schedule the scheduler creates runs by, or ``None`` (manual runs only)."""
    from airflow.sdk.definitions.timetables.interval import (
        CronDataIntervalTimetable,
        DeltaDataIntervalTimetable,
    )
    from airflow.sdk.definitions.timetables.simple import NullTimetable, OnceTimetable
    from airflow.sdk.definitions.timetables.trigger import (
        CronTriggerTimetable,
        DeltaTriggerTimetable,
    )

    timetable = dag.timetable
    kind = type(timetable)
    try:
        if kind is NullTimetable:
            return None
        if kind is OnceTimetable:
            return {"kind": "once"}
        if kind is CronDataIntervalTimetable or (kind is CronTriggerTimetable and _plain(timetable)):
            return CronSchedule(timetable.expression, zone_name(timetable.timezone)).to_json()
        if (kind is DeltaDataIntervalTimetable or (kind is DeltaTriggerTimetable and _plain(timetable))) \
                and isinstance(timetable.delta, timedelta):
            return DeltaSchedule(timetable.delta).to_json()
    except ValueError as exc:
        raise SpecError(f"DAG {dag.dag_id!r}: schedule {timetable!r}: {exc}") from exc
    raise SpecError(f"DAG {dag.dag_id!r}: schedule {timetable!r} is not supported by Sluice "
                    f"(supported: {SUPPORTED})")


def _plain(timetable: Any) -> bool:
    """A trigger timetable that runs exactly at its ticks: no data interval, no catch-up rule."""
    interval = getattr(timetable, "interval", timedelta())
    return interval == timedelta() and not getattr(timetable, "run_immediately", False)

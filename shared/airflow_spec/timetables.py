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

from shared.airflow_spec.assets import is_asset_timetable, time_part
from shared.airflow_spec.errors import SpecError
from shared.schedules import CronSchedule, DeltaSchedule, zone_name

FAMILIES = ("airflow.sdk.definitions.timetables.", "airflow.timetables.")
SUPPORTED = ("None, '@once', a cron expression or preset, a timedelta, CronDataIntervalTimetable, "
             "DeltaDataIntervalTimetable, or CronTriggerTimetable/DeltaTriggerTimetable "
             "without interval or run_immediately")


def schedule_json(dag: Any) -> dict[str, Any] | None:
    """The schedule the scheduler creates runs by, or ``None`` (manual runs only).

    Timetables from ``airflow.sdk`` and from ``airflow.timetables`` (Airflow's
    core classes, which DAG files may import too) are read alike.
    """
    timetable = dag.timetable
    if is_asset_timetable(timetable):  # its asset condition: shared.airflow_spec.assets
        timetable = time_part(dag)
        if timetable is None:
            return None
    kind = _kind(timetable)
    try:
        if kind == "NullTimetable":
            return None
        if kind == "OnceTimetable":
            return {"kind": "once"}
        if kind == "CronDataIntervalTimetable" or (kind == "CronTriggerTimetable" and _plain(timetable)):
            return CronSchedule(_field(timetable, "expression"),
                                zone_name(_field(timetable, "timezone"))).to_json()
        delta = _field(timetable, "delta") if kind.startswith("Delta") else None
        if (kind == "DeltaDataIntervalTimetable" or (kind == "DeltaTriggerTimetable" and _plain(timetable))) \
                and isinstance(delta, timedelta):
            return DeltaSchedule(delta).to_json()
    except ValueError as exc:
        raise SpecError(f"DAG {dag.dag_id!r}: schedule {_describe(timetable)}: {exc}") from exc
    raise SpecError(f"DAG {dag.dag_id!r}: schedule {_describe(timetable)} is not supported by "
                    f"Sluice (supported: {SUPPORTED})")


def _kind(timetable: Any) -> str:
    """The class name of one of Airflow's own timetables; ``""`` for any other class."""
    cls = type(timetable)
    return cls.__name__ if cls.__module__.startswith(FAMILIES) else ""


def _field(timetable: Any, name: str) -> Any:
    """An attribute the SDK class has public and Airflow's core class private."""
    return getattr(timetable, name, None) if hasattr(timetable, name) \
        else getattr(timetable, f"_{name}", None)


def _plain(timetable: Any) -> bool:
    """A trigger timetable that runs exactly at its ticks: no data interval, no catch-up rule."""
    interval = _field(timetable, "interval")
    return interval in (None, timedelta()) and not _field(timetable, "run_immediately")


def _describe(timetable: Any) -> str:
    shown = {k: _field(timetable, k) for k in ("expression", "delta", "interval", "run_immediately")}
    args = ", ".join(f"{k}={v!r}" for k, v in shown.items() if v not in (None, False, timedelta()))
    return f"{type(timetable).__name__}({args})"

"""A DAG's Airflow timetable as the schedule JSON the scheduler evaluates (``shared.schedules``).

``schedule_json(dag)`` is the one entry point. The timetable is stored as
Airflow serializes it (``encode_timetable``), with the time restriction
Airflow's scheduler applies to it (the earliest start date of the DAG and its
tasks, the end date) and the summary and description Airflow shows; the
scheduler decodes it into Airflow's own core class and asks it for runs, so
every built-in timetable keeps Airflow 3.3's semantics: ``CronTriggerTimetable``
(what a cron string or preset builds by default, ``interval=`` and
``run_immediately=`` included), ``DeltaTriggerTimetable`` (a timedelta),
``CronDataIntervalTimetable``, ``DeltaDataIntervalTimetable``,
``MultipleCronTriggerTimetable``, ``EventsTimetable``, ``@once`` and
``@continuous``. An asset schedule's condition is ``shared.airflow_spec.assets``'s;
its time part (``AssetOrTimeSchedule``) is a timetable like any other.

Refused at load, naming the DAG and the timetable: timetable classes that are
not Airflow's own (plugins; Sluice's scheduler runs no DAG-folder code) and
partitioned timetables (``CronPartitionTimetable``, ``PartitionedAtRuntime``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from shared.airflow_spec.assets import is_asset_timetable, time_part
from shared.airflow_spec.errors import SpecError
from shared.schedules import Schedule, timetable_json

FAMILIES = ("airflow.sdk.definitions.timetables.", "airflow.timetables.")
PARTITIONED = ("CronPartitionTimetable", "PartitionedAtRuntime", "PartitionedAssetTimetable")


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
    where = f"DAG {dag.dag_id!r}: schedule {type(timetable).__name__}"
    if not kind:
        cls = type(timetable)
        raise SpecError(f"DAG {dag.dag_id!r}: schedule {cls.__module__}.{cls.__qualname__} is "
                        "not supported by Sluice (custom timetable classes, Airflow's timetable "
                        "plugins, are not run; use one of Airflow's own timetables)")
    if kind in PARTITIONED:
        raise SpecError(f"{where} is not supported by Sluice (partitioned runs)")
    if kind == "NullTimetable":
        return None
    try:
        core = Schedule(timetable_json(timetable)).timetable
        core.validate()
        # the core class's own encoding: an SDK class and its core twin store alike
        encoded = {"__type": timetable_json(timetable)["__type"],
                   "__var": json.loads(json.dumps(core.serialize()))}
    except Exception as exc:  # Airflow's own words for what its scheduler could not load
        raise SpecError(f"{where}: {exc}") from exc
    earliest, latest = time_restriction(dag)
    return Schedule(encoded, earliest=earliest, latest=latest, summary=core.summary,
                    description=getattr(core, "description", "") or core.summary).to_json()


def time_restriction(dag: Any) -> tuple[datetime | None, datetime | None]:
    """Airflow's ``SerializedDAG._time_restriction`` bounds: (earliest, latest) in UTC.

    Earliest: the earliest start date of the DAG and its tasks. Latest: the
    DAG's end date, unless every task has an end date, then the latest of
    those and the DAG's.
    """
    starts = [t.start_date for t in dag.tasks if t.start_date]
    if dag.start_date is not None:
        starts.append(dag.start_date)
    earliest = min(starts, key=_instant) if starts else None
    latest = dag.end_date
    ends = [t.end_date for t in dag.tasks if t.end_date]
    if len(ends) == len(dag.tasks):
        if dag.end_date is not None:
            ends.append(dag.end_date)
        if ends:
            latest = max(ends, key=_instant)
    return _opt_instant(earliest), _opt_instant(latest)


def _instant(value: datetime) -> datetime:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)


def _opt_instant(value: datetime | None) -> datetime | None:
    return None if value is None else _instant(value)


def _kind(timetable: Any) -> str:
    """The class name of one of Airflow's own timetables; ``""`` for any other class."""
    cls = type(timetable)
    return cls.__name__ if cls.__module__.startswith(FAMILIES) else ""


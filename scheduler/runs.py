"""Creating runs: manual triggers and schedule intervals, and their task instances."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import asyncpg
import structlog

from scheduler.expansion import literal_length
from shared.db import q
from shared.params import check_run_conf
from shared.schedules import Interval, RunInfo, Schedule, manual_interval, parse_schedule
from shared.serialization import DagSpec

log = structlog.get_logger()


def utcnow() -> datetime:
    return datetime.now(UTC)


# Airflow's [scheduler] allowed_run_id_pattern default, and its refusal of "..": a run id
# names folders of task and callback logs, so one a user gives cannot leave them.
ALLOWED_RUN_ID = re.compile(r"^[A-Za-z0-9_.~:+-]+$")


class RunIdError(ValueError):
    """A run id a user gave that Airflow's rules refuse."""


def check_run_id(run_id: str) -> None:
    """Raise :class:`RunIdError` (Airflow's words) for a run id users may not give."""
    if ".." in run_id:
        raise RunIdError(f"The run_id '{run_id}' must not contain '..' to prevent path traversal")
    if not ALLOWED_RUN_ID.match(run_id):
        raise RunIdError(f"The run_id provided '{run_id}' does not match regex pattern "
                         f"'{ALLOWED_RUN_ID.pattern}'")


def run_id_for(run_type: str, logical_date: datetime) -> str:
    return f"{run_type}__{logical_date.isoformat()}"


async def create_manual_run(conn: asyncpg.Connection, dag_id: str, conf: dict,
                            logical_date: datetime | None = None,
                            run_id: str | None = None,
                            run_after: datetime | None = None) -> tuple[int, str]:
    """Insert a queued manual run; the scheduler creates its task instances.

    Its data interval is the one Airflow infers from the DAG's schedule (the
    last complete interval for a cron schedule); its logical date is the moment.
    ``run_id`` is the caller's (a task's ``TriggerDagRunOperator``) or
    ``manual__<logical date>``; ``run_after`` (when the run was asked for, Airflow's
    ``run_after``) dates the data interval instead of the logical date, as Airflow
    infers a triggered run's. A given date or run id that clashes with an
    existing run raises ``ValueError``, a run id Airflow's pattern refuses
    :class:`RunIdError`. A conf its DAG's params refuse raises
    ``shared.params.ParamsError`` before anything is written, whichever entry
    point triggered the run.
    """
    if run_id is not None:
        check_run_id(run_id)
    await check_run_conf(conn, dag_id, conf)
    schedule = parse_schedule(await conn.fetchval(q("dag_schedule"), dag_id))
    while True:
        when = logical_date or utcnow()
        new_id = run_id or run_id_for("manual", when)
        interval = manual_interval(schedule, run_after or when)
        pk = await conn.fetchval(q("insert_run"), dag_id, new_id, "manual", when,
                                 interval.start, interval.end, conf)
        if pk is not None:
            return pk, new_id
        if logical_date is not None or run_id is not None:
            also = f" or with run id {run_id!r}" if run_id is not None else ""
            raise ValueError(f"a manual run of {dag_id!r} at {when.isoformat()}{also} "
                             "already exists")


def task_instance_rows(spec: DagSpec) -> list[tuple]:
    """(task_id, map_index, max_tries, queue, pool, pool_slots, priority) for a new run.

    A mapped task whose inputs are all literal gets its instances ``0..n-1``
    now; one that needs an upstream's output gets a ``-1`` placeholder.
    """
    rows = []
    for t in spec.tasks:
        n = literal_length(t.mapped) if t.mapped is not None else None
        indexes = range(n) if n else [-1]
        rows += [(t.task_id, i, t.retries, t.queue, t.pool, t.pool_slots, t.priority_weight)
                 for i in indexes]
    return rows


async def insert_task_instances(conn: asyncpg.Connection, run_pk: int, rows: list[tuple]) -> None:
    cols = list(zip(*rows, strict=True)) if rows else [[]] * 7
    await conn.execute(q("insert_tis"), run_pk, *[list(c) for c in cols])


async def create_due_runs(conn: asyncpg.Connection, spec: DagSpec, now: datetime,
                          planned: RunInfo | None = None) -> tuple[list[int], RunInfo | None]:
    """Create the DAG's scheduled runs that are due at ``now``; return them and the next one.

    As Airflow 3.3's scheduler: the timetable gives the run after the last
    scheduled one (by logical date), which is created once its ``run_after``
    has come, with the timetable's logical date, data interval and run id
    ``scheduled__<run_after>``; then the next, until one is not due yet.
    Airflow asks the timetable for the next run when it creates one, not when
    that one is due: ``planned``, the next run this function returned before
    (asked at that pass's ``now``), is created as it was planned if no newer
    run exists (a ``catchup=False`` delta DAG runs every delta, not every
    delta plus the scheduler's delay). While the DAG has ``max_active_runs``
    (the timetable's own limit for ``@continuous``: 1) queued or running runs,
    manual ones included, none is created: the returned run is then already
    due and waits for a run to end. ``None``: the timetable will not schedule
    another run.
    """
    schedule = parse_schedule(spec.schedule)
    created: list[int] = []
    if schedule is None:
        return created, None
    if schedule.earliest is None and schedule.latest is None and spec.start_date is not None:
        schedule = Schedule(schedule.encoded, earliest=spec.start_date, latest=spec.end_date)
    last = await conn.fetchrow(q("last_scheduled_interval"), spec.dag_id)
    after = Interval(last["data_interval_start"], last["data_interval_end"]) if last else None
    limit = min(spec.max_active_runs, schedule.active_runs_limit or spec.max_active_runs)
    active = await conn.fetchval(q("active_run_count"), spec.dag_id)
    fresh = planned is not None and (after is None or planned.logical_date > after.start)
    while True:
        info = planned if fresh else _next_run(schedule, after, spec.catchup, now)
        fresh = False
        if info is None or info.run_after > now or active >= limit:
            await conn.execute(q("set_next_dagrun"), spec.dag_id,
                               info and info.interval.start, info and info.interval.end)
            return created, info
        if after is not None and info.interval == after:  # a timetable that does not advance
            raise ValueError(f"timetable {schedule.kind} gave the last run's interval again")
        pk = await conn.fetchval(q("insert_run"), spec.dag_id, info.run_id, "scheduled",
                                 info.logical_date, info.interval.start, info.interval.end, {})
        if pk is None:
            await log_run_conflict(conn, spec.dag_id, info.run_id, "scheduled", info.logical_date)
        else:
            created.append(pk)
            active += 1
        after = info.interval


def _next_run(schedule: Schedule, after: Interval | None, catchup: bool,
              now: datetime) -> RunInfo | None:
    """The timetable's next run; whatever it raises is a ``ValueError`` naming it."""
    try:
        return schedule.next_run(after=after, catchup=catchup, now=now)
    except Exception as exc:  # Airflow's scheduler logs a failing timetable and goes on
        raise ValueError(f"timetable {schedule.kind}: {type(exc).__name__}: {exc}") from exc


async def log_run_conflict(conn: asyncpg.Connection, dag_id: str, run_id: str, run_type: str,
                           logical_date: datetime) -> None:
    """Say why ``insert_run`` inserted nothing: a run is never dropped silently.

    The same run already there (a second pass over one interval) is a fact at
    info; another run of the DAG holding the run id or the logical date means
    this one is not created, a warning naming both.
    """
    row = await conn.fetchrow(q("run_conflict"), dag_id, run_id, logical_date, run_type)
    if row is not None and (row["run_id"], row["run_type"], row["logical_date"]) == (
            run_id, run_type, logical_date):
        log.info("run_exists", dag_id=dag_id, run_id=run_id)
        return
    log.warning("run_not_created", dag_id=dag_id, run_id=run_id, run_type=run_type,
                logical_date=logical_date.isoformat(),
                conflicting_run_id=row["run_id"] if row else None)

"""Prometheus metrics and a health check for each daemon, on its HTTP side.

``GET /metrics`` answers in Prometheus' text format; ``GET /health`` answers 200
``{"status": "healthy", ...}`` when the daemon reaches PostgreSQL and Redis and
is not stopping, else 503 with what failed. What each daemon exposes:

- every daemon: ``sluice_daemon_info``, ``sluice_database_errors_total`` and
  ``sluice_redis_errors_total`` (connection errors it recovered from), and the
  streams it consumes: entries, lag (entries not yet delivered to the group),
  pending (delivered, not acknowledged) and the age of the oldest undelivered
  entry;
- scheduler: ``sluice_scheduling_pass_seconds``, unfinished task instances and
  active runs by state (read from PostgreSQL through partial indexes: cheap),
  every queue stream and the dead letters;
- worker: running and free slots, tries done;
- triggerer: triggers running, capacity, fired, ``sluice_trigger_fire_lag_seconds``.

Values read from PostgreSQL or Redis are read when scraped (a failed read drops
those samples and counts in ``sluice_metrics_read_errors_total``); counters and
histograms are kept by the process as things happen.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections import Counter as Tally
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest

from shared import httpside
from shared.db import q

log = structlog.get_logger()

#: What this process measured, whichever daemon runs in it; and what only one daemon does.
PROCESS = CollectorRegistry(auto_describe=True)
SCHEDULING = CollectorRegistry(auto_describe=True)
TRIGGERING = CollectorRegistry(auto_describe=True)
SCHEDULING_PASS_SECONDS = Histogram(
    "sluice_scheduling_pass_seconds", "Time of one scheduling pass (one transaction over the "
    "runs an event or timer touched).", registry=SCHEDULING,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
TRIGGER_FIRE_LAG_SECONDS = Histogram(
    "sluice_trigger_fire_lag_seconds", "Time from a trigger's first event to its task "
    "instance being scheduled again (committed).", registry=TRIGGERING,
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
READ_ERRORS = Counter("sluice_metrics_read_errors", "Scrapes whose reads of PostgreSQL or "
                      "Redis failed (their samples were left out).", ["source"], registry=PROCESS)

UNFINISHED_STATES = ("scheduled", "queued", "running", "up_for_retry", "deferred")
ACTIVE_RUN_STATES = ("queued", "running")
READ_TIMEOUT_S = 5.0

# --- connection errors, counted from the daemons' own log lines -------------------------
_errors: Tally[str] = Tally()


def count_connection_errors(_logger, method: str, event_dict: dict) -> dict:
    """A structlog processor: count the database and Redis errors a process recovers from.

    Every place that survives a lost connection logs a warning inside its ``except``
    block, so the exception being handled classifies the line: one rule, however
    many places recover.
    """
    if method in ("warning", "error", "exception", "critical"):
        kind = _connection_error_kind(sys.exception())
        if kind is not None:
            _errors[kind] += 1
    return event_dict


def _connection_error_kind(exc: BaseException | None) -> str | None:
    if exc is None:
        return None
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from shared.db import DB_ERRORS

    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return "redis"
    if isinstance(exc, DB_ERRORS):
        return "database"
    return None


class _ErrorCounts:
    def collect(self) -> Iterable[Metric]:
        for kind in ("database", "redis"):
            family = CounterMetricFamily(f"sluice_{kind}_errors",
                                         f"Connection errors to {kind} this process recovered from.")
            family.add_metric([], _errors[kind])
            yield family


PROCESS.register(_ErrorCounts())


# --- what each daemon reads when scraped ---------------------------------------------
Probe = Callable[[], Awaitable[list[Metric]]]


@dataclass
class Side:
    """A daemon as its metrics and health see it."""

    daemon: str
    ident: str
    pool: Any
    redis: Any
    stopping: anyio.Event
    probes: dict[str, Probe] = field(default_factory=dict)
    info: dict[str, str] = field(default_factory=dict)
    measured: tuple[CollectorRegistry, ...] = ()  # what this daemon measures as it works


def gauge(name: str, doc: str, samples: Iterable[tuple[dict[str, str], float]],
          labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=list(labels))
    for values, value in samples:
        family.add_metric([values[k] for k in labels], value)
    return family


def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc)
    family.add_metric([], value)
    return family


def states_probe(pool) -> Probe:
    """Unfinished task instances and active runs by state (partial indexes: cheap)."""
    async def probe() -> list[Metric]:
        async with pool.acquire() as conn:
            tis = {r["state"]: r["n"] for r in await conn.fetch(q("metrics_ti_states"))}
            runs = {r["state"]: r["n"] for r in await conn.fetch(q("metrics_run_states"))}
        return [gauge("sluice_task_instances", "Task instances in each unfinished state.",
                      (({"state": s}, tis.get(s, 0)) for s in UNFINISHED_STATES), ("state",)),
                gauge("sluice_dag_runs", "DAG runs queued or running.",
                      (({"state": s}, runs.get(s, 0)) for s in ACTIVE_RUN_STATES), ("state",))]
    return probe


def streams_probe(redis, streams: Callable[[], Awaitable[list[tuple[str, str]]]],
                  deadletter: str | None = None) -> Probe:
    """Entries, lag, pending and oldest undelivered age of ``(stream, group)`` pairs."""
    async def probe() -> list[Metric]:
        seconds, micros = await redis.time()
        now_ms = seconds * 1000 + micros / 1000
        rows = [row for stream, group in await streams()
                if (row := await _stream_row(redis, stream, group, now_ms)) is not None]
        families = [
            gauge("sluice_stream_entries", "Entries kept in the stream (XLEN).",
                  ((r, r["entries"]) for r in rows), ("stream",)),
            gauge("sluice_stream_lag", "Entries not yet delivered to the consumer group.",
                  ((r, r["lag"]) for r in rows if r["lag"] is not None), ("stream", "group")),
            gauge("sluice_stream_pending", "Entries delivered to the group, not acknowledged.",
                  ((r, r["pending"]) for r in rows), ("stream", "group")),
            gauge("sluice_stream_lag_seconds", "Age of the oldest entry not yet delivered to "
                  "the group (0: none waiting).", ((r, r["age_s"]) for r in rows),
                  ("stream", "group"))]
        if deadletter is not None:
            families.append(gauge("sluice_dead_letters", "Entries in the dead-letter stream.",
                                  [({}, await redis.xlen(deadletter))]))
        return families
    return probe


async def _stream_row(redis, stream: str, group: str, now_ms: float) -> dict | None:
    from redis.exceptions import ResponseError

    try:
        groups = await redis.xinfo_groups(stream)
    except ResponseError:  # no such stream yet
        return None
    info = next((g for g in groups if _text(g["name"]) == group), None)
    if info is None:
        return None
    age_s = 0.0
    if info.get("lag") != 0:
        first = await redis.xrange(stream, min="(" + _text(info["last-delivered-id"]), max="+",
                                   count=1)
        if first:
            age_s = max(0.0, (now_ms - int(_text(first[0][0]).split("-")[0])) / 1000)
    return {"stream": stream, "group": group, "entries": await redis.xlen(stream),
            "lag": info.get("lag"), "pending": info["pending"], "age_s": age_s}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# --- the HTTP side -------------------------------------------------------------------
class _Samples:
    def __init__(self, families: list[Metric]):
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return iter(self.families)


async def exposition(side: Side) -> bytes:
    """The daemon's metrics now, in Prometheus' text format."""
    families: list[Metric] = [gauge("sluice_daemon_info", "This daemon (always 1).",
                                    [({"daemon": side.daemon, "id": side.ident, **side.info}, 1)],
                                    ("daemon", "id", *side.info))]
    for source, probe in side.probes.items():
        try:
            with anyio.fail_after(READ_TIMEOUT_S):
                families += await probe()
        except Exception as exc:  # noqa: BLE001 - a scrape during an outage still answers
            READ_ERRORS.labels(source).inc()
            log.debug("metrics_read_failed", source=source, error=str(exc))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Samples(families))
    return b"".join(generate_latest(r) for r in (PROCESS, *side.measured, registry))


async def health(side: Side) -> tuple[bool, dict]:
    """Whether the daemon reaches PostgreSQL and Redis and is not stopping, with details."""
    checks = {"database": await _check(lambda: _ping_db(side.pool)),
              "redis": await _check(side.redis.ping)}
    ok = all(v == "ok" for v in checks.values())
    status = "stopping" if side.stopping.is_set() else "healthy" if ok else "unhealthy"
    return status == "healthy", {"status": status, "daemon": side.daemon, "id": side.ident,
                                 "checks": checks}


async def _ping_db(pool) -> None:
    async with pool.acquire() as conn:
        await conn.fetchval(q("health_ping"))


async def _check(op: Callable[[], Awaitable[object]]) -> str:
    try:
        with anyio.fail_after(READ_TIMEOUT_S):
            await op()
        return "ok"
    except Exception as exc:  # noqa: BLE001 - reported, never raised
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def routes(side: Side) -> dict[str, httpside.Handler]:
    async def metrics(_request: httpside.Request) -> httpside.Response:
        return httpside.Response(200, await exposition(side), CONTENT_TYPE_LATEST)

    async def healthcheck(_request: httpside.Request) -> httpside.Response:
        ok, body = await health(side)
        return httpside.Response(200 if ok else 503, json.dumps(body).encode(),
                                 "application/json")

    return {"/metrics": metrics, "/health": healthcheck}


async def serve(side: Side, host: str, port: int, *, setting: str, explicit: bool,
                extra_routes: dict[str, httpside.Handler] | None = None,
                task_status=anyio.TASK_STATUS_IGNORED) -> None:
    """Serve ``/metrics`` and ``/health`` until cancelled; ``task_status`` gets the port
    (None when the server is turned off)."""
    listener = await httpside.listen(host, port, setting=setting, explicit=explicit)
    if listener is None:
        task_status.started(None)
        return
    bound = httpside.bound_port(listener)
    log.info("metrics_serving", daemon=side.daemon, url=f"http://{_shown(host)}:{bound}/metrics")
    task_status.started(bound)
    await httpside.serve(listener, {**routes(side), **(extra_routes or {})})


def _shown(host: str) -> str:
    if host in ("", "0.0.0.0", "::"):
        return socket.getfqdn()
    return f"[{host}]" if ":" in host else host


def explicit(settings, name: str) -> bool:
    """Whether ``settings.<name>`` was set (environment or flag) rather than defaulted."""
    return name in settings.model_fields_set


# --- per daemon --------------------------------------------------------------------------
async def serve_scheduler(sched, *, task_status=anyio.TASK_STATUS_IGNORED) -> None:
    s = sched.settings
    streams = sched.streams

    async def pairs() -> list[tuple[str, str]]:
        from shared import bus

        queues = [_text(k) async for k in sched.redis.scan_iter(match=streams.queue("*"),
                                                                _type="stream", count=1000)]
        return [(streams.events, bus.SCHEDULER_GROUP), (streams.triggers, bus.TRIGGERER_GROUP),
                *((name, bus.WORKER_GROUP) for name in sorted(queues))]

    side = Side("scheduler", f"{socket.gethostname()}:{os.getpid()}", sched.pool, sched.redis,
                sched.life.stopping,
                {"database": states_probe(sched.pool),
                 "redis": streams_probe(sched.redis, pairs, streams.deadletter)},
                measured=(SCHEDULING,))
    await serve(side, s.metrics_host, s.scheduler_metrics_port,
                setting="SLUICE_SCHEDULER_METRICS_PORT",
                explicit=explicit(s, "scheduler_metrics_port"), task_status=task_status)


async def serve_triggerer(trig, *, task_status=anyio.TASK_STATUS_IGNORED) -> None:
    from shared import bus

    s = trig.settings

    async def own() -> list[Metric]:
        return [gauge("sluice_triggers_running", "Triggers this triggerer runs now.",
                      [({}, len(trig.running))]),
                gauge("sluice_triggerer_capacity", "Triggers this triggerer may run at once.",
                      [({}, s.triggerer_capacity)]),
                counter("sluice_triggers_fired", "First events handed back to their task "
                        "instances.", trig.fired)]

    async def pairs() -> list[tuple[str, str]]:
        return [(trig.streams.triggers, bus.TRIGGERER_GROUP)]

    side = Side("triggerer", f"{socket.gethostname()}:{os.getpid()}", trig.pool, trig.redis,
                trig.life.stopping, {"triggerer": own, "redis": streams_probe(trig.redis, pairs)},
                {"runtime": "airflow"}, (TRIGGERING,))
    await serve(side, s.metrics_host, s.triggerer_metrics_port,
                setting="SLUICE_TRIGGERER_METRICS_PORT",
                explicit=explicit(s, "triggerer_metrics_port"), task_status=task_status)


def worker_side(worker) -> Side:
    from shared import bus

    s = worker.settings

    async def own() -> list[Metric]:
        running = len(worker.running)
        return [gauge("sluice_worker_slots", "This worker's task slots, running a try or free.",
                      [({"state": "running"}, running),
                       ({"state": "free"}, max(0, s.worker_capacity - running))], ("state",)),
                counter("sluice_worker_tries", "Tries this worker ran to an outcome (a deferral too).",
                        worker.done_count)]

    async def pairs() -> list[tuple[str, str]]:
        return [(worker.streams.queue(name), bus.WORKER_GROUP) for name in s.queues]

    return Side("worker", worker.id, worker.pool, worker.redis, worker.life.stopping,
                {"worker": own, "redis": streams_probe(worker.redis, pairs)},
                {"runtime": "airflow"})


def observe_fire_lag(handed_at: Iterable[float]) -> None:
    """Record, for first events just committed, the time since each was handed over
    (``anyio.current_time()`` stamps)."""
    now = anyio.current_time()
    for stamp in handed_at:
        TRIGGER_FIRE_LAG_SECONDS.observe(max(0.0, now - stamp))

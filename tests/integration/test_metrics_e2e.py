"""``/metrics`` and ``/health`` on each daemon, scraped from real processes.

The exposition is parsed with prometheus_client's own parser; the values are
checked against what the test made happen: a deferral fired, a task holding a
worker slot, an entry waiting on a queue no worker reads, a malformed event
dead-lettered.
"""

from __future__ import annotations

import json
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared import bus
from tests.cluster import Cluster, wait_for

pytestmark = pytest.mark.timeout(120)

DAG = """
    import time
    from datetime import datetime, timedelta
    from pathlib import Path
    from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
    from airflow.sdk import BaseOperator, dag, task

    class Waiter(BaseOperator):
        def execute(self, context):
            self.defer(trigger=TimeDeltaTrigger(timedelta(seconds=0.2)), method_name="done")

        def done(self, context, event=None):
            return "resumed"

    @dag(schedule=None, start_date=datetime(2026, 1, 1))
    def observed():
        @task
        def hold():
            deadline = time.monotonic() + 60
            while not Path({marker!r}).exists() and time.monotonic() < deadline:
                time.sleep(0.05)

        Waiter(task_id="wait") >> hold()

    observed()
"""
PORTS = {"SLUICE_SCHEDULER_METRICS_PORT": "0", "SLUICE_TRIGGERER_METRICS_PORT": "0",
         "SLUICE_WORKER_METRICS_PORT": "0", "SLUICE_WORKER_LOG_PORT": "0"}


async def metrics_url(cluster: Cluster, name: str) -> str:
    """The URL a daemon logged when its metrics server started (ports are any free one)."""
    async def logged():
        for line in cluster.log(name).splitlines():
            if line.startswith("{") and '"metrics_serving"' in line:
                return json.loads(line)["url"].removesuffix("/metrics")
        return None

    return await wait_for(logged, 30, f"{name} to serve metrics")


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(base: str) -> dict[tuple[str, frozenset], float]:
    """Every sample, keyed by name and labels (parsed as Prometheus parses it)."""
    status, text = get(base + "/metrics")
    assert status == 200, text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def test_each_daemon_serves_metrics_and_health(cluster: Cluster, tmp_path):
    marker = tmp_path / "release"
    cluster.write_dag("observed.py", DAG.format(marker=str(marker)))
    cluster.start_all(**PORTS)
    urls = {name: await metrics_url(cluster, name) for name in ("scheduler", "triggerer", "worker")}
    prefix = cluster.env["SLUICE_STREAM_PREFIX"]
    streams = bus.Streams(prefix)
    redis = bus.connect(cluster.env["SLUICE_REDIS_URL"])
    try:
        # an entry on a queue no worker reads, and a malformed event for the dead letters
        await redis.xgroup_create(streams.queue("nobody"), bus.WORKER_GROUP, id="0", mkstream=True)
        await redis.xadd(streams.queue("nobody"), {"junk": "1"})
        await redis.xadd(streams.events, {"not": "a message"})
        await cluster.wait_dag("observed", timeout=120)  # the scheduler imports Airflow first
        run_id = await cluster.trigger("observed")

        async def holding():
            doc = await cluster.run_doc(run_id)
            return cluster.by_task(doc)["hold"]["state"] == "running"

        await wait_for(holding, 60, "hold to run")
        worker = scrape(urls["worker"])
        assert value(worker, "sluice_worker_slots", state="running") == 1
        assert value(worker, "sluice_worker_slots", state="free") == 3  # concurrency 4
        queue = {"stream": streams.queue("default"), "group": bus.WORKER_GROUP}
        assert value(worker, "sluice_stream_lag", **queue) == 0
        assert value(worker, "sluice_stream_pending", **queue) == 0
        assert value(worker, "sluice_daemon_info", daemon="worker", id=_id(worker, "worker"),
                     runtime="airflow") == 1

        sched = scrape(urls["scheduler"])
        assert value(sched, "sluice_task_instances", state="running") == 1
        assert value(sched, "sluice_task_instances", state="queued") == 0
        assert value(sched, "sluice_dag_runs", state="running") == 1
        assert value(sched, "sluice_scheduling_pass_seconds_count") >= 1
        assert value(sched, "sluice_scheduling_pass_seconds_bucket", le="+Inf") >= 1
        nobody = {"stream": streams.queue("nobody"), "group": bus.WORKER_GROUP}
        assert value(sched, "sluice_stream_lag", **nobody) == 1
        assert value(sched, "sluice_stream_lag_seconds", **nobody) >= 0
        assert value(sched, "sluice_stream_entries", stream=streams.queue("nobody")) == 1
        events = {"stream": streams.events, "group": bus.SCHEDULER_GROUP}
        assert value(sched, "sluice_stream_lag", **events) == 0
        assert value(sched, "sluice_stream_lag_seconds", **events) == 0
        assert value(sched, "sluice_dead_letters") == 1
        for name in ("sluice_database_errors_total", "sluice_redis_errors_total"):
            assert value(sched, name) == 0

        trig = scrape(urls["triggerer"])
        assert value(trig, "sluice_triggers_fired_total") == 1
        assert value(trig, "sluice_trigger_fire_lag_seconds_count") == 1
        assert value(trig, "sluice_trigger_fire_lag_seconds_sum") < 5
        assert value(trig, "sluice_triggers_running") == 0
        assert value(trig, "sluice_triggerer_capacity") == 1000
        assert value(trig, "sluice_stream_pending", stream=streams.triggers,
                     group=bus.TRIGGERER_GROUP) == 0

        for name, base in urls.items():
            status, body = get(base + "/health")
            assert status == 200, body
            health = json.loads(body)
            assert health["status"] == "healthy" and health["daemon"] == name
            assert health["checks"] == {"database": "ok", "redis": "ok"}
            assert get(base + "/nothing")[0] == 404

        marker.touch()
        doc = await cluster.wait_run(run_id)
        assert doc["state"] == "success"
        worker = scrape(urls["worker"])  # wait's deferral and resumption, then hold
        assert value(worker, "sluice_worker_tries_total") == 3
        assert not [name for name, _ in worker if "scheduling_pass" in name or "fire_lag" in name]
    finally:
        await redis.aclose()


def _id(samples: dict, daemon: str) -> str:
    for name, labels in samples:
        if name == "sluice_daemon_info" and ("daemon", daemon) in labels:
            return dict(labels)["id"]
    raise AssertionError(f"no sluice_daemon_info for {daemon}")

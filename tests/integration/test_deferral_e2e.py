"""Deferral end to end: triggers that fail, time out, end tasks, survive a triggerer's death.

The three daemons run as real processes (tests/cluster.py) against real
PostgreSQL and Redis, over DAGs written against ``airflow.sdk``. Trigger
classes live in modules of the DAG folder, referenced by ``<module>.<Class>``:
the DAG folder is on the triggerer's ``sys.path``, as in Airflow. One cluster
serves the module's tests; the takeover test runs two triggerers of its own.
"""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from shared.runview import run_document
from tests.cluster import Cluster, log_events, own_cluster, task_log, wait_for

pytestmark = pytest.mark.timeout(240)
PARSE_TIMEOUT_S = 90.0  # the daemons import Airflow before their first parse
RUN_TIMEOUT_S = 90.0


@pytest.fixture(scope="module")
async def daemons(services, template_db, tmp_path_factory):
    """One scheduler, triggerer and worker for the module's tests; each writes its own DAG."""
    async with own_cluster(services, template_db, tmp_path_factory.mktemp("deferral"),
                           name="deferral") as c:
        c.start_all()
        yield c


async def ready(cluster: Cluster, dag_id: str) -> None:
    """``dag_id`` parsed and the worker up (a deferral's clock starts when its task runs)."""
    async def worker_ready():
        return '"worker_ready"' in cluster.log("worker")

    await wait_for(worker_ready, PARSE_TIMEOUT_S, "the worker to be ready")
    await cluster.wait_dag(dag_id, timeout=PARSE_TIMEOUT_S)


async def trigger(cluster: Cluster, dag_id: str) -> str:
    await ready(cluster, dag_id)
    return await cluster.trigger(dag_id)


def task_events(cluster: Cluster, event: str, dag_id: str, task_id: str) -> list[dict]:
    return [e for e in log_events(cluster, "worker")
            if e.get("event") == event and (e.get("dag_id"), e.get("task_id")) == (dag_id, task_id)]


def daemon_events(cluster: Cluster, name: str, event: str, dag_id: str) -> list[dict]:
    return [e for e in log_events(cluster, name)
            if e.get("event") == event and e.get("dag_id") == dag_id]


async def errors_by_task(cluster: Cluster, run_id: str) -> dict[str, str | None]:
    conn = await cluster.connect()
    try:
        full = await run_document(conn, run_id)
    finally:
        await conn.close()
    return {t["task_id"]: x["error"] for t, x in zip(full["doc"]["tasks"], full["extra"],
                                                      strict=True) if t["map_index"] == -1}


def ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


# --- a. a trigger that fails once: the retry rules apply ------------------------------
async def test_trigger_failure_costs_a_try_and_the_retry_succeeds(daemons: Cluster, tmp_path):
    cluster = daemons
    counter = tmp_path / "trigger_runs"
    cluster.write_dag("flaky_triggers.py", """
        from pathlib import Path
        from airflow.triggers.base import BaseTrigger, TriggerEvent

        class FlakyTrigger(BaseTrigger):
            def __init__(self, counter):
                super().__init__()
                self.counter = counter

            def serialize(self):
                return ("flaky_triggers.FlakyTrigger", {"counter": self.counter})

            async def run(self):
                p = Path(self.counter)
                n = int(p.read_text()) + 1 if p.exists() else 1
                p.write_text(str(n))
                if n == 1:
                    raise RuntimeError("flaky trigger breaks on its first run")
                yield TriggerEvent(n)
    """)
    cluster.write_dag("flaky_trig.py", f"""
        from datetime import datetime
        from airflow.sdk import DAG, BaseOperator
        from flaky_triggers import FlakyTrigger

        class Waiter(BaseOperator):
            def execute(self, context):
                self.defer(trigger=FlakyTrigger({str(counter)!r}), method_name="done")

            def done(self, context, event=None):
                return {{"event": event, "try": context["ti"].try_number}}

        with DAG("flaky_trig", schedule=None, start_date=datetime(2026, 1, 1)):
            Waiter(task_id="wait", retries=1, retry_delay=0)
    """)
    run_id = await trigger(cluster, "flaky_trig")
    doc = await cluster.wait_run(run_id, RUN_TIMEOUT_S)
    t = cluster.by_task(doc)["wait"]
    assert (doc["state"], t["state"], t["try_number"]) == ("success", "success", 2)
    assert t["return_value"] == {"event": 2, "try": 2}
    assert counter.read_text() == "2"
    finished = [(e["try_number"], e["state"])
                for e in task_events(cluster, "task_finished", "flaky_trig", "wait")]
    assert finished == [(1, "deferred"), (1, "up_for_retry"), (2, "deferred"), (2, "success")]
    first_try_errors = [e.get("error") or ""
                        for e in task_events(cluster, "task_finished", "flaky_trig", "wait")
                        if e["try_number"] == 1 and e["state"] != "deferred"]
    # the SDK raises the deferral error on resume with __fail__; the trigger's traceback
    # goes to the try's log
    assert first_try_errors == ["TaskDeferralError: Trigger failure"]
    first_log = task_log(cluster, doc, "wait", attempt=1)
    assert "Trigger failed" in first_log
    assert "flaky trigger breaks on its first run" in first_log


# --- b. a trigger that ends without an event ------------------------------------------
async def test_trigger_ending_without_an_event_fails_the_task(daemons: Cluster):
    cluster = daemons
    cluster.write_dag("quiet_triggers.py", """
        from airflow.triggers.base import BaseTrigger

        class QuietTrigger(BaseTrigger):
            def serialize(self):
                return ("quiet_triggers.QuietTrigger", {})

            async def run(self):
                return
                yield
    """)
    cluster.write_dag("quiet_trig.py", """
        from datetime import datetime
        from airflow.sdk import DAG, BaseOperator
        from quiet_triggers import QuietTrigger

        class Waiter(BaseOperator):
            def execute(self, context):
                self.defer(trigger=QuietTrigger(), method_name="done")

            def done(self, context, event=None):
                return "should not resume"

        with DAG("quiet_trig", schedule=None, start_date=datetime(2026, 1, 1)):
            Waiter(task_id="wait", retries=0)
    """)
    run_id = await trigger(cluster, "quiet_trig")
    doc = await cluster.wait_run(run_id, RUN_TIMEOUT_S)
    t = cluster.by_task(doc)["wait"]
    assert (doc["state"], t["state"], t["try_number"], t["return_value"]) == \
        ("failed", "failed", 1, None)
    error = (await errors_by_task(cluster, run_id))["wait"]
    assert error == "TaskDeferralError: Trigger failure"
    assert [e["task_id"] for e in daemon_events(
        cluster, "triggerer", "trigger_exited_without_event", "quiet_trig")] == ["wait"]


# --- c. trigger timeout ---------------------------------------------------------------
async def test_trigger_timeout_fails_the_task_at_its_due_time(daemons: Cluster, tmp_path):
    cluster = daemons
    marker = tmp_path / "deferred_at"
    cluster.write_dag("timeout_trig.py", f"""
        import time
        from datetime import datetime, timedelta
        from pathlib import Path
        from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
        from airflow.sdk import DAG, BaseOperator

        class Waiter(BaseOperator):
            def execute(self, context):
                Path({str(marker)!r}).write_text(repr(time.time()))
                self.defer(trigger=TimeDeltaTrigger(timedelta(seconds=60)), method_name="done",
                           timeout=timedelta(seconds=1))

            def done(self, context, event=None):
                return "should not resume"

        with DAG("timeout_trig", schedule=None, start_date=datetime(2026, 1, 1)):
            Waiter(task_id="wait", retries=0)
    """)
    run_id = await trigger(cluster, "timeout_trig")
    doc = await cluster.wait_run(run_id, RUN_TIMEOUT_S)
    t = cluster.by_task(doc)["wait"]
    assert (doc["state"], t["state"], t["try_number"]) == ("failed", "failed", 1)
    error = (await errors_by_task(cluster, run_id))["wait"]
    assert error == "TaskDeferralTimeout: Trigger timeout"
    # ended when a worker ran the resumed try, a moment after the timeout
    took = ts(t["end_date"]) - float(marker.read_text())
    assert 0.9 < took < 5.0, f"failed {took:.2f}s after deferring (timeout 1s)"
    # the triggerer enforced it, not the scheduler's backstop sweep
    assert [(e["task_id"], e["error"]) for e in daemon_events(
        cluster, "triggerer", "trigger_resumed_with_failure", "timeout_trig")] == \
        [("wait", "Trigger timeout")]
    assert "trigger_timeout_enforced_by_scheduler" not in cluster.log("scheduler")


# --- d. deferring again from the resumed method; execution_timeout over deferrals -------
async def test_resumed_method_defers_again_within_one_try(daemons: Cluster):
    cluster = daemons
    cluster.write_dag("hops.py", """
        from datetime import datetime, timedelta
        from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
        from airflow.sdk import DAG, BaseOperator

        class Hopper(BaseOperator):
            def execute(self, context):
                self.defer(trigger=TimeDeltaTrigger(timedelta(seconds=0.5)), method_name="second",
                           kwargs={"hops": ["execute"]})

            def second(self, context, event=None, hops=None):
                self.defer(trigger=TimeDeltaTrigger(timedelta(seconds=0.5)), method_name="third",
                           kwargs={"hops": hops + ["second"]})

            def third(self, context, event=None, hops=None):
                return {"hops": hops + ["third"], "try": context["ti"].try_number}

        with DAG("hops", schedule=None, start_date=datetime(2026, 1, 1)):
            Hopper(task_id="hopper", execution_timeout=timedelta(seconds=30), retries=2)
    """)
    doc = await cluster.wait_run(await trigger(cluster, "hops"), RUN_TIMEOUT_S)
    hopper = cluster.by_task(doc)["hopper"]
    assert (doc["state"], hopper["state"], hopper["try_number"]) == ("success", "success", 1)
    assert hopper["return_value"] == {"hops": ["execute", "second", "third"], "try": 1}
    assert [e["try_number"] for e in task_events(cluster, "task_started", "hops", "hopper")] == \
        [1, 1, 1]
    assert [e["state"] for e in task_events(cluster, "task_finished", "hops", "hopper")] == \
        ["deferred", "deferred", "success"]


async def test_execution_timeout_counts_time_spent_deferred(daemons: Cluster):
    cluster = daemons
    cluster.write_dag("slow_defer.py", """
        from datetime import datetime, timedelta
        from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
        from airflow.sdk import DAG, BaseOperator

        class Slow(BaseOperator):
            def execute(self, context):
                self.defer(trigger=TimeDeltaTrigger(timedelta(seconds=3)), method_name="done")

            def done(self, context, event=None):
                return "resumed past its execution_timeout"

        with DAG("slow_defer", schedule=None, start_date=datetime(2026, 1, 1)):
            Slow(task_id="slow", execution_timeout=timedelta(seconds=2), retries=0)
    """)
    run_id = await trigger(cluster, "slow_defer")
    doc = await cluster.wait_run(run_id, RUN_TIMEOUT_S)
    slow = cluster.by_task(doc)["slow"]
    assert (doc["state"], slow["state"], slow["try_number"], slow["return_value"]) == \
        ("failed", "failed", 1, None)
    error = (await errors_by_task(cluster, run_id))["slow"]
    assert "timeout" in error.lower()
    assert ts(slow["end_date"]) - ts(slow["start_date"]) >= 1.9


# --- e. task end events from the trigger --------------------------------------------------
async def test_task_end_events_end_the_instance_without_a_worker(daemons: Cluster):
    cluster = daemons
    cluster.write_dag("end_triggers.py", """
        import asyncio
        from airflow.triggers.base import BaseTrigger, TaskSkippedEvent, TaskSuccessEvent

        class EndTrigger(BaseTrigger):
            def __init__(self, kind):
                super().__init__()
                self.kind = kind

            def serialize(self):
                return ("end_triggers.EndTrigger", {"kind": self.kind})

            async def run(self):
                await asyncio.sleep(0.3)
                if self.kind == "success":
                    yield TaskSuccessEvent(xcoms={"return_value": 5})
                else:
                    yield TaskSkippedEvent()
    """)
    cluster.write_dag("end_trig.py", """
        from datetime import datetime
        from airflow.sdk import DAG, BaseOperator, task
        from end_triggers import EndTrigger

        class Ender(BaseOperator):
            def __init__(self, kind, **kwargs):
                super().__init__(**kwargs)
                self.kind = kind

            def execute(self, context):
                self.defer(trigger=EndTrigger(self.kind), method_name="never")

            def never(self, context, event=None):
                raise RuntimeError("a worker resumed a task its trigger ended")

        with DAG("end_trig", schedule=None, start_date=datetime(2026, 1, 1)):
            ok = Ender(task_id="ok", kind="success")
            Ender(task_id="skip", kind="skipped")

            @task
            def after(value):
                return value + 1

            after(ok.output)
    """)
    doc = await cluster.wait_run(await trigger(cluster, "end_trig"), RUN_TIMEOUT_S)
    tasks = cluster.by_task(doc)
    assert doc["state"] == "success"
    assert (tasks["ok"]["state"], tasks["ok"]["try_number"], tasks["ok"]["return_value"]) == \
        ("success", 1, 5)
    assert (tasks["skip"]["state"], tasks["skip"]["return_value"]) == ("skipped", None)
    assert (tasks["after"]["state"], tasks["after"]["return_value"]) == ("success", 6)
    for task_id in ("ok", "skip"):
        assert tasks[task_id]["end_date"] is not None
        # one start only: the execute() that deferred; nothing after the deferral
        assert len(task_events(cluster, "task_started", "end_trig", task_id)) == 1
        assert [e["state"] for e in task_events(cluster, "task_finished", "end_trig", task_id)] \
            == ["deferred"]
    fired = daemon_events(cluster, "triggerer", "trigger_fired", "end_trig")
    assert sorted(e["task_id"] for e in fired) == ["ok", "skip"]


# --- f. a triggerer dies mid-wait: the other takes its triggers over --------------------------
N_TASKS = 20


async def test_killed_triggerer_triggers_are_taken_over(cluster: Cluster, tmp_path):
    fired = tmp_path / "fired"
    fired.touch()
    cluster.write_dag("takeover_triggers.py", """
        import asyncio
        from datetime import UTC, datetime
        from airflow.triggers.base import BaseTrigger, TriggerEvent

        class AppendWhenDue(BaseTrigger):
            def __init__(self, moment, key, path):
                super().__init__()
                self.moment, self.key, self.path = moment, key, path

            def serialize(self):
                return ("takeover_triggers.AppendWhenDue",
                        {"moment": self.moment, "key": self.key, "path": self.path})

            async def run(self):
                delay = (self.moment - datetime.now(UTC)).total_seconds()
                if delay > 0:
                    await asyncio.sleep(delay)
                with open(self.path, "a") as f:
                    f.write(self.key + "\\n")
                yield TriggerEvent(self.key)
    """)
    cluster.write_dag("takeover.py", f"""
        from datetime import UTC, datetime, timedelta
        from airflow.sdk import DAG, BaseOperator
        from takeover_triggers import AppendWhenDue

        class Waiter(BaseOperator):
            def execute(self, context):
                moment = datetime.now(UTC) + timedelta(seconds=10)
                self.defer(trigger=AppendWhenDue(moment, self.task_id, {str(fired)!r}),
                           method_name="done")

            def done(self, context, event=None):
                return [event, context["ti"].try_number]

        with DAG("takeover", schedule=None, start_date=datetime(2026, 1, 1),
                 max_active_tasks={N_TASKS}):
            for i in range({N_TASKS}):
                Waiter(task_id=f"w{{i:02d}}")
    """)
    cluster.start("scheduler")
    cluster.start("worker", SLUICE_WORKER_CONCURRENCY="10")
    cluster.start("triggerer", name="t1", SLUICE_TRIGGERER_CAPACITY="10")
    cluster.start("triggerer", name="t2", SLUICE_TRIGGERER_CAPACITY="10")
    run_id = await trigger(cluster, "takeover")
    conn = await cluster.connect()
    try:
        async def all_claimed():
            rows = await conn.fetch(
                "SELECT tr.pid, count(*) AS n FROM trigger t JOIN triggerer tr"
                " ON tr.id = t.triggerer_id GROUP BY tr.pid")
            by_pid = {r["pid"]: r["n"] for r in rows}
            return by_pid if sum(by_pid.values()) == N_TASKS else None

        by_pid = await wait_for(all_claimed, 60, "all triggers to be claimed")
        t1_pid, t2_pid = cluster.procs["t1"].pid, cluster.procs["t2"].pid
        # capacity 10 each: both hold half of the twenty
        assert by_pid == {t1_pid: 10, t2_pid: 10}
        assert fired.read_text() == "", "a trigger fired before the kill: move the moment later"
        killed_at = time.monotonic()
        cluster.signal("t1")  # SIGKILL: no hand-back, the heartbeat expires
        doc = await cluster.wait_run(run_id, RUN_TIMEOUT_S)
        took = time.monotonic() - killed_at
        assert await conn.fetchval("SELECT count(*) FROM trigger") == 0
        assert [r["pid"] for r in await conn.fetch("SELECT pid FROM triggerer")] == [t2_pid]
    finally:
        await conn.close()

    tasks = cluster.by_task(doc)
    assert doc["state"] == "success", {t: v["state"] for t, v in tasks.items()}
    assert len(tasks) == N_TASKS
    for task_id, t in tasks.items():
        assert (t["state"], t["try_number"], t["return_value"]) == ("success", 1, [task_id, 1])
        # resumed exactly once: execute() and one resume, both in try 1
        assert [e["try_number"]
                for e in task_events(cluster, "task_started", "takeover", task_id)] == [1, 1]
    lines = fired.read_text().split()
    # t1 died before any moment was due, so each trigger ran to its fire exactly once (on t2)
    assert sorted(lines) == sorted(tasks), f"fire lines: {sorted(lines)}"

    t1_events = log_events(cluster, "t1")
    t2_events = log_events(cluster, "t2")
    assert any(e.get("event") == "triggers_claimed" for e in t1_events)
    assert not any(e.get("event") == "trigger_fired" for e in t1_events)
    assert any(e.get("event") == "dead_triggerers_released" for e in t2_events)
    t2_fired = [e["task_id"] for e in t2_events if e.get("event") == "trigger_fired"]
    assert sorted(t2_fired) == sorted(tasks)
    assert sum(e["count"] for e in t2_events if e.get("event") == "triggers_claimed") == N_TASKS
    # taken over once t1's heartbeat expired (3 s here), not by a slower path such as the
    # repair sweep; the bound leaves room for a loaded machine
    assert took < 60, f"the run ended {took:.1f}s after t1 was killed"


# --- g. trigger kwargs that are not JSON ------------------------------------------------------
async def test_deferral_with_non_json_kwargs_fails_the_try(daemons: Cluster):
    cluster = daemons
    cluster.write_dag("object_triggers.py", """
        from airflow.triggers.base import BaseTrigger, TriggerEvent

        class ObjectTrigger(BaseTrigger):
            def __init__(self, thing):
                super().__init__()
                self.thing = thing

            def serialize(self):
                return ("object_triggers.ObjectTrigger", {"thing": self.thing})

            async def run(self):
                yield TriggerEvent(1)
    """)
    cluster.write_dag("bad_defer.py", """
        from datetime import datetime, timedelta
        from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
        from airflow.sdk import DAG, BaseOperator
        from object_triggers import ObjectTrigger

        class BadTrigger(BaseOperator):
            def execute(self, context):
                self.defer(trigger=ObjectTrigger(object()), method_name="done")

            def done(self, context, event=None):
                return "should not resume"

        class BadNextKwargs(BaseOperator):
            def execute(self, context):
                self.defer(trigger=TimeDeltaTrigger(timedelta(seconds=0.1)), method_name="done",
                           kwargs={"thing": object()})

            def done(self, context, event=None, thing=None):
                return "should not resume"

        with DAG("bad_defer", schedule=None, start_date=datetime(2026, 1, 1)):
            BadTrigger(task_id="bad_trigger", retries=0)
            BadNextKwargs(task_id="bad_next_kwargs", retries=0)
    """)
    run_id = await trigger(cluster, "bad_defer")
    doc = await cluster.wait_run(run_id, RUN_TIMEOUT_S)
    tasks = cluster.by_task(doc)
    errors = await errors_by_task(cluster, run_id)
    assert doc["state"] == "failed"
    for task_id in ("bad_trigger", "bad_next_kwargs"):
        assert (tasks[task_id]["state"], tasks[task_id]["try_number"]) == ("failed", 1)
        # the Task SDK's serde refuses the value before anything reaches the API
        assert errors[task_id].startswith(
            "TypeError: Cannot serialize object of type <class 'object'>"), errors[task_id]
        assert [e["state"] for e in task_events(cluster, "task_finished", "bad_defer", task_id)] \
            == ["failed"]
    conn = await cluster.connect()
    try:
        assert await conn.fetchval(
            "SELECT count(*) FROM trigger") == 0
    finally:
        await conn.close()


# --- h. mapped instances defer again and again within one try ---------------------------------
async def test_mapped_instances_defer_twice_within_one_try_and_reduce(daemons: Cluster):
    cluster = daemons
    cluster.write_dag("mapped_defer.py", """
        from datetime import datetime, timedelta
        from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
        from airflow.sdk import BaseOperator, dag, task

        class Poll(BaseOperator):
            def __init__(self, *, n, **kwargs):
                super().__init__(**kwargs)
                self.n = n

            def execute(self, context):
                self.poll(context, polls=0)

            def poll(self, context, event=None, polls=0):
                if polls < 2:
                    self.defer(trigger=TimeDeltaTrigger(timedelta(seconds=0.2)),
                               method_name="poll", kwargs={"polls": polls + 1})
                return {"n": self.n, "polls": polls,
                        "event_is_datetime": isinstance(event, datetime),
                        "try": context["ti"].try_number}

        @dag(schedule=None, start_date=datetime(2026, 1, 1))
        def mapped_defer():
            @task
            def total(values):
                return sum(v["n"] for v in values)

            total(Poll.partial(task_id="poll").expand(n=[1, 2, 3]).output)
        mapped_defer()
    """)
    doc = await cluster.wait_run(await trigger(cluster, "mapped_defer"), RUN_TIMEOUT_S)
    assert doc["state"] == "success"
    polls = {t["map_index"]: t["return_value"] for t in doc["tasks"] if t["task_id"] == "poll"}
    assert polls == {i: {"n": i + 1, "polls": 2, "event_is_datetime": True, "try": 1}
                     for i in range(3)}
    assert cluster.by_task(doc)["total"]["return_value"] == 6
    for i in range(3):
        finished = [e["state"] for e in task_events(cluster, "task_finished", "mapped_defer", "poll")
                    if e.get("map_index") == i]
        assert finished == ["deferred", "deferred", "success"], i


async def test_a_task_mapped_over_a_task_ended_by_its_trigger_is_upstream_failed(
        daemons: Cluster):
    """A TaskSuccessEvent's XComs record no length to map over: the run fails, not hangs."""
    cluster = daemons
    cluster.write_dag("ended_triggers.py", """
        from airflow.triggers.base import BaseTrigger, TaskSuccessEvent

        class Done(BaseTrigger):
            def serialize(self):
                return ("ended_triggers.Done", {})

            async def run(self):
                yield TaskSuccessEvent(xcoms={"return_value": [1, 2, 3]})
    """)
    cluster.write_dag("ended.py", """
        from datetime import datetime
        from airflow.sdk import DAG, BaseOperator, task
        from ended_triggers import Done

        class Produce(BaseOperator):
            def execute(self, context):
                self.defer(trigger=Done(), method_name="never")

        with DAG("ended", schedule=None, start_date=datetime(2026, 1, 1)):
            @task
            def use(x):
                return x
            use.expand(x=Produce(task_id="produce").output)
    """)
    run_id = await trigger(cluster, "ended")
    doc = await cluster.wait_run(run_id, RUN_TIMEOUT_S)
    states = {(t["task_id"], t["map_index"]): t["state"] for t in doc["tasks"]}
    assert (doc["state"], states) == (
        "failed", {("produce", -1): "success", ("use", -1): "upstream_failed"})
    conn = await cluster.connect()
    try:
        assert (await run_document(conn, run_id))["note"] is None  # decided, not deadlocked
    finally:
        await conn.close()

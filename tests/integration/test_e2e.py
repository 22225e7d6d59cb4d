"""End to end: the three daemons as real processes, real PostgreSQL and Redis.

DAG files are written as Airflow 3 users write them and run on the Task SDK
runtime. The tests that neither configure nor kill a daemon share one cluster
(each writes and triggers its own DAG); the others start their own.
"""

from __future__ import annotations

import json
import re
import signal

import pytest

from tests.cluster import Cluster, own_cluster, wait_for

pytestmark = pytest.mark.timeout(240)

#: Each daemon imports Airflow as it starts, and the scheduler parses with it: generous on a
#: loaded machine; every wait ends as soon as its condition holds.
PARSE_S = 120.0
RUN_S = 120.0


@pytest.fixture(scope="module")
async def shared(services, template_db, tmp_path_factory):
    """Scheduler, triggerer and a two-slot worker on a database of the module's own."""
    async with own_cluster(services, template_db, tmp_path_factory.mktemp("e2e"), name="e2e",
                           own_airflow_home=False) as cluster:
        cluster.env["COLUMNS"] = "200"  # `runs show`: one line per instance
        cluster.start_all(SLUICE_WORKER_CONCURRENCY="2")
        yield cluster


async def trigger(cluster: Cluster, dag_id: str, allow_errors: bool = False) -> str:
    await cluster.wait_dag(dag_id, timeout=PARSE_S, allow_errors=allow_errors)
    return await cluster.trigger(dag_id, allow_errors=allow_errors)


async def run(cluster: Cluster, dag_id: str) -> dict:
    """Trigger ``dag_id`` once it is parsed; its finished run's document."""
    return await cluster.wait_run(await trigger(cluster, dag_id), timeout=RUN_S)


async def test_taskflow_chain_passes_values(shared: Cluster):
    shared.write_dag("chain.py", """
        from datetime import datetime
        from airflow.sdk import dag, task

        @dag(schedule=None, start_date=datetime(2026, 1, 1))
        def chain(unit="g"):
            @task
            def extract():
                return {"xs": [1, 2, 3]}
            @task
            def transform(data):
                return sum(data["xs"])
            @task
            def load(total, ti=None, params=None):
                return f"{ti.task_id}:{total}:{params['unit']}"
            load(transform(extract()))
        chain(unit="kg")
    """)
    run_id = await trigger(shared, "chain")
    doc = await shared.wait_run(run_id, RUN_S)
    tasks = shared.by_task(doc)
    assert doc["state"] == "success"
    assert tasks["extract"]["return_value"] == {"xs": [1, 2, 3]}
    assert tasks["transform"]["return_value"] == 6
    assert tasks["load"]["return_value"] == "load:6:kg"
    assert [t["task_id"] for t in doc["tasks"]] == ["extract", "load", "transform"]
    assert all(t["try_number"] == 1 for t in doc["tasks"])


async def test_fan_in_trigger_rules_and_failed_run(shared: Cluster):
    shared.write_dag("fanin.py", """
        from datetime import datetime
        from airflow.providers.standard.operators.empty import EmptyOperator
        from airflow.providers.standard.operators.python import PythonOperator
        from airflow.sdk import DAG, TriggerRule

        def boom():
            raise ValueError("boom")

        with DAG("fanin", schedule=None, start_date=datetime(2026, 1, 1)):
            ok = PythonOperator(task_id="ok", python_callable=lambda: 1)
            bad = PythonOperator(task_id="bad", python_callable=boom)
            all_done = EmptyOperator(task_id="all_done", trigger_rule=TriggerRule.ALL_DONE)
            one_failed = PythonOperator(task_id="one_failed", python_callable=lambda: "ran",
                                        trigger_rule="one_failed")
            all_success = EmptyOperator(task_id="all_success")
            after = EmptyOperator(task_id="after_upstream_failed")
            [ok, bad] >> all_done
            [ok, bad] >> one_failed
            [ok, bad] >> all_success >> after
    """)
    doc = await run(shared, "fanin")
    states = {t: v["state"] for t, v in shared.by_task(doc).items()}
    assert states == {"ok": "success", "bad": "failed", "all_done": "success",
                      "one_failed": "success", "all_success": "upstream_failed",
                      "after_upstream_failed": "upstream_failed"}
    assert shared.by_task(doc)["one_failed"]["return_value"] == "ran"
    assert doc["state"] == "failed"


async def test_retries_then_success(shared: Cluster, tmp_path):
    marker = tmp_path / "attempts"
    shared.write_dag("flaky.py", f"""
        from datetime import datetime, timedelta
        from pathlib import Path
        from airflow.sdk import dag, task

        @dag(schedule=None, start_date=datetime(2026, 1, 1))
        def flaky():
            @task(retries=3, retry_delay=timedelta(seconds=0.2))
            def sometimes(ti=None):
                p = Path({str(marker)!r})
                n = int(p.read_text()) + 1 if p.exists() else 1
                p.write_text(str(n))
                if n < 3:
                    raise RuntimeError(f"attempt {{n}} fails")
                return ti.try_number
            sometimes()
        flaky()
    """)
    doc = await run(shared, "flaky")
    t = shared.by_task(doc)["sometimes"]
    assert (doc["state"], t["state"], t["try_number"], t["return_value"]) == ("success", "success", 3, 3)
    assert marker.read_text() == "3"


async def test_skip_propagation(shared: Cluster):
    shared.write_dag("skips.py", """
        from datetime import datetime
        from airflow.sdk import dag, task
        from airflow.sdk.exceptions import AirflowSkipException

        @dag(schedule=None, start_date=datetime(2026, 1, 1))
        def skips():
            @task
            def maybe():
                raise AirflowSkipException("nothing to do today")
            @task
            def downstream(x):
                return "should not run"
            @task(trigger_rule="none_failed")
            def tolerant():
                return "ran"
            m = maybe()
            d = downstream(m)
            t = tolerant()
            d >> t
        skips()
    """)
    doc = await run(shared, "skips")
    states = {t: v["state"] for t, v in shared.by_task(doc).items()}
    assert states == {"maybe": "skipped", "downstream": "skipped", "tolerant": "success"}
    assert doc["state"] == "success"


async def test_task_bash_runs_the_returned_command(shared: Cluster):
    shared.write_dag("bash_tasks.py", """
        from datetime import datetime
        from airflow.sdk import dag, task

        @dag(schedule=None, start_date=datetime(2026, 1, 1))
        def bash_tasks():
            @task
            def name():
                return "sluice"

            @task.bash(env={"GREETING": "hello"}, append_env=True)
            def greet(who):
                return 'echo first line; echo "$GREETING ' + who + ' {{ ti.try_number }}"'

            @task.bash
            def skip_me():
                return "exit 99"

            @task.bash(retries=0)
            def empty():
                return "  "

            greet(name())
            skip_me()
            empty()
        bash_tasks()
    """)
    doc = await run(shared, "bash_tasks")
    tasks = shared.by_task(doc)
    assert (tasks["greet"]["state"], tasks["greet"]["return_value"]) == ("success", "hello sluice 1")
    assert tasks["skip_me"]["state"] == "skipped"
    assert tasks["empty"]["state"] == "failed"
    conn = await shared.connect()
    try:
        error = await conn.fetchval("SELECT error FROM task_instance WHERE task_id = 'empty'")
    finally:
        await conn.close()
    assert "TypeError: The returned value from the TaskFlow callable must be a non-empty string." \
        in error


async def test_fail_exception_is_final(shared: Cluster):
    shared.write_dag("final.py", """
        from datetime import datetime
        from airflow.sdk import dag, task
        from airflow.sdk.exceptions import AirflowFailException

        @dag(schedule=None, start_date=datetime(2026, 1, 1))
        def final():
            @task(retries=5, retry_delay=0)
            def give_up():
                raise AirflowFailException("bad credentials")
            give_up()
        final()
    """)
    doc = await run(shared, "final")
    t = shared.by_task(doc)["give_up"]
    assert (doc["state"], t["state"], t["try_number"]) == ("failed", "failed", 1)


async def test_deferral_round_trip(shared: Cluster):
    shared.write_dag("defer.py", """
        from datetime import datetime, timedelta
        from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
        from airflow.sdk import DAG, BaseOperator

        class Waiter(BaseOperator):
            def execute(self, context):
                context["ti"].xcom_push("before", "pushed before deferring")
                self.defer(trigger=TimeDeltaTrigger(timedelta(seconds=1)),
                           method_name="execute_complete", kwargs={"note": "hi"})

            def execute_complete(self, context, event=None, note=None):
                before = context["ti"].xcom_pull(task_ids=self.task_id, key="before")
                return {"note": note, "event_is_datetime": isinstance(event, datetime),
                        "before": before, "try": context["ti"].try_number}

        with DAG("defer", schedule=None, start_date=datetime(2026, 1, 1)):
            Waiter(task_id="wait")
    """)
    run_id = await trigger(shared, "defer")

    async def deferred():
        doc = await shared.run_doc(run_id)
        return shared.by_task(doc)["wait"]["state"] == "deferred"

    await wait_for(deferred, 20, "the task to defer")
    doc = await shared.wait_run(run_id, RUN_S)
    t = shared.by_task(doc)["wait"]
    assert doc["state"] == "success"
    assert t["return_value"] == {"note": "hi", "event_is_datetime": True,
                                 "before": "pushed before deferring", "try": 1}
    assert t["try_number"] == 1


async def test_runs_show_names_what_a_deferred_task_waits_for(shared: Cluster):
    shared.write_dag("waits.py", """
        from datetime import datetime, timedelta
        from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
        from airflow.sdk import DAG, BaseOperator

        class Waiter(BaseOperator):
            def execute(self, context):
                self.defer(trigger=TimeDeltaTrigger(timedelta(hours=1)), method_name="done",
                           timeout=timedelta(hours=2))

            def done(self, context, event=None):
                return "done"

        with DAG("waits", schedule=None, start_date=datetime(2026, 1, 1)):
            Waiter(task_id="wait")
    """)
    run_id = await trigger(shared, "waits")

    async def deferred():
        return shared.by_task(await shared.run_doc(run_id))["wait"]["state"] == "deferred"

    await wait_for(deferred, 20, "the task to defer")
    shown = shared.cli("runs", "show", run_id)
    assert shown.returncode == 0, shown.stderr
    assert "deferred=1" in shown.stdout
    assert "DateTimeTrigger fires 20" in shown.stdout, shown.stdout
    assert re.search(r"DateTimeTrigger fires 20\S+ times out 20\S+", shown.stdout), shown.stdout


async def test_broken_dag_file_is_isolated(cluster: Cluster):
    cluster.write_dag("broken.py", """
        from airflow.sdk import dag
        raise RuntimeError("this DAG file is broken")
    """)
    cluster.write_dag("hangs.py", """
        import time
        from airflow.sdk import dag
        time.sleep(3600)
    """)
    cluster.write_dag("good.py", """
        from datetime import datetime
        from airflow.sdk import dag, task

        @dag(schedule=None, start_date=datetime(2026, 1, 1))
        def good():
            @task
            def hello():
                return "hello"
            hello()
        good()
    """)
    cluster.start("scheduler", SLUICE_PARSE_TIMEOUT_S="3")
    cluster.start("worker")
    doc = await cluster.wait_run(await trigger(cluster, "good", allow_errors=True), RUN_S)
    assert doc["state"] == "success"

    async def errors():
        out = cluster.cli("dags", "list", "--json")
        found = {e["fileloc"].rsplit("/", 1)[-1]: e["message"]
                 for e in json.loads(out.stdout)["import_errors"]}
        return found if len(found) == 2 else None

    found = await wait_for(errors, 30, "two import errors")
    # Airflow's DagBag reports the file's traceback: the line that raised, and the error
    assert 'broken.py", line 3, in <module>' in found["broken.py"], found["broken.py"]
    assert "RuntimeError: this DAG file is broken" in found["broken.py"]
    assert "DagBag import timeout for" in found["hangs.py"]


@pytest.mark.parametrize("retries,expected", [(1, ("success", 2)), (0, ("failed", 1))])
async def test_worker_sigkill_mid_task(cluster: Cluster, tmp_path, retries, expected):
    started = tmp_path / "started"
    cluster.write_dag("slow.py", f"""
        import time
        from datetime import datetime
        from pathlib import Path
        from airflow.sdk import dag, task

        @dag(schedule=None, start_date=datetime(2026, 1, 1))
        def slow():
            @task(retries={retries}, retry_delay=0)
            def long_task(ti=None):
                Path({str(started)!r}).write_text(str(ti.try_number))
                if ti.try_number == 1:
                    time.sleep(600)
                return "finished"
            long_task()
        slow()
    """)
    cluster.start("scheduler")
    cluster.start("worker", name="worker1")
    run_id = await trigger(cluster, "slow")

    async def running():
        return started.exists()

    await wait_for(running, 30, "the task to start")
    cluster.signal("worker1", signal.SIGKILL)
    cluster.start("worker", name="worker2")
    doc = await cluster.wait_run(run_id, RUN_S)
    t = cluster.by_task(doc)["long_task"]
    assert (t["state"], t["try_number"]) == expected
    assert doc["state"] == expected[0]


async def test_crashing_and_timed_out_tasks_fail_only_their_try(shared: Cluster):
    shared.write_dag("crashy.py", """
        import os, time
        from datetime import datetime, timedelta
        from airflow.sdk import dag, task

        @dag(schedule=None, start_date=datetime(2026, 1, 1))
        def crashy():
            @task
            def hard_exit():
                os._exit(3)
            @task(execution_timeout=timedelta(seconds=1))
            def forever():
                while True:
                    time.sleep(0.05)
            @task(trigger_rule="all_done")
            def still_works():
                return "alive"
            [hard_exit(), forever()] >> still_works()
        crashy()
    """)
    doc = await run(shared, "crashy")
    tasks = shared.by_task(doc)
    assert tasks["hard_exit"]["state"] == "failed"
    assert tasks["forever"]["state"] == "failed"
    assert tasks["still_works"]["return_value"] == "alive"
    assert shared.procs["worker"].poll() is None

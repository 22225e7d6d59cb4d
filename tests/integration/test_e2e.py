"""End to end: the three daemons as real processes, real PostgreSQL and Redis."""

from __future__ import annotations

import re
import signal

import pytest

from tests.cluster import Cluster, wait_for

pytestmark = pytest.mark.timeout(120)


async def test_taskflow_chain_passes_values(cluster: Cluster):
    cluster.write_dag("chain.py", """
        from datetime import datetime
        from shared.sdk import dag, task

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
    cluster.start_all()
    run_id = await cluster.trigger("chain")
    doc = await cluster.wait_run(run_id)
    tasks = cluster.by_task(doc)
    assert doc["state"] == "success"
    assert tasks["extract"]["return_value"] == {"xs": [1, 2, 3]}
    assert tasks["transform"]["return_value"] == 6
    assert tasks["load"]["return_value"] == "load:6:kg"
    assert [t["task_id"] for t in doc["tasks"]] == ["extract", "load", "transform"]
    assert all(t["try_number"] == 1 for t in doc["tasks"])


async def test_fan_in_trigger_rules_and_failed_run(cluster: Cluster):
    cluster.write_dag("fanin.py", """
        from datetime import datetime
        from shared.sdk import DAG, PythonOperator, EmptyOperator, TriggerRule

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
    cluster.start_all()
    doc = await cluster.wait_run(await cluster.trigger("fanin"))
    states = {t: v["state"] for t, v in cluster.by_task(doc).items()}
    assert states == {"ok": "success", "bad": "failed", "all_done": "success",
                      "one_failed": "success", "all_success": "upstream_failed",
                      "after_upstream_failed": "upstream_failed"}
    assert cluster.by_task(doc)["one_failed"]["return_value"] == "ran"
    assert doc["state"] == "failed"


async def test_retries_then_success(cluster: Cluster, tmp_path):
    marker = tmp_path / "attempts"
    cluster.write_dag("flaky.py", f"""
        from datetime import datetime, timedelta
        from pathlib import Path
        from shared.sdk import dag, task

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
    cluster.start_all()
    doc = await cluster.wait_run(await cluster.trigger("flaky"))
    t = cluster.by_task(doc)["sometimes"]
    assert (doc["state"], t["state"], t["try_number"], t["return_value"]) == ("success", "success", 3, 3)
    assert marker.read_text() == "3"


async def test_skip_propagation(cluster: Cluster):
    cluster.write_dag("skips.py", """
        from datetime import datetime
        from shared.sdk import dag, task, AirflowSkipException

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
    cluster.start_all()
    doc = await cluster.wait_run(await cluster.trigger("skips"))
    states = {t: v["state"] for t, v in cluster.by_task(doc).items()}
    assert states == {"maybe": "skipped", "downstream": "skipped", "tolerant": "success"}
    assert doc["state"] == "success"


async def test_task_bash_runs_the_returned_command(cluster: Cluster):
    cluster.write_dag("bash_tasks.py", """
        from datetime import datetime
        from shared.sdk import dag, task

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
    cluster.start_all()
    doc = await cluster.wait_run(await cluster.trigger("bash_tasks"))
    tasks = cluster.by_task(doc)
    assert (tasks["greet"]["state"], tasks["greet"]["return_value"]) == ("success", "hello sluice 1")
    assert tasks["skip_me"]["state"] == "skipped"
    assert tasks["empty"]["state"] == "failed"
    conn = await cluster.connect()
    try:
        error = await conn.fetchval("SELECT error FROM task_instance WHERE task_id = 'empty'")
    finally:
        await conn.close()
    assert "TypeError: The returned value from the TaskFlow callable must be a non-empty string." \
        in error


async def test_fail_exception_is_final(cluster: Cluster):
    cluster.write_dag("final.py", """
        from datetime import datetime
        from shared.sdk import dag, task, AirflowFailException

        @dag(schedule=None, start_date=datetime(2026, 1, 1))
        def final():
            @task(retries=5, retry_delay=0)
            def give_up():
                raise AirflowFailException("bad credentials")
            give_up()
        final()
    """)
    cluster.start_all()
    doc = await cluster.wait_run(await cluster.trigger("final"))
    t = cluster.by_task(doc)["give_up"]
    assert (doc["state"], t["state"], t["try_number"]) == ("failed", "failed", 1)


async def test_deferral_round_trip(cluster: Cluster):
    cluster.write_dag("defer.py", """
        from datetime import datetime, timedelta
        from shared.sdk import DAG, BaseOperator
        from shared.sdk.triggers import TimeDeltaTrigger

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
    cluster.start_all()
    run_id = await cluster.trigger("defer")

    async def deferred():
        doc = await cluster.run_doc(run_id)
        return cluster.by_task(doc)["wait"]["state"] == "deferred"

    await wait_for(deferred, 20, "the task to defer")
    doc = await cluster.wait_run(run_id)
    t = cluster.by_task(doc)["wait"]
    assert doc["state"] == "success"
    assert t["return_value"] == {"note": "hi", "event_is_datetime": True,
                                 "before": "pushed before deferring", "try": 1}
    assert t["try_number"] == 1


async def test_runs_show_names_what_a_deferred_task_waits_for(cluster: Cluster):
    cluster.write_dag("waits.py", """
        from datetime import datetime, timedelta
        from shared.sdk import DAG, BaseOperator
        from shared.sdk.triggers import TimeDeltaTrigger

        class Waiter(BaseOperator):
            def execute(self, context):
                self.defer(trigger=TimeDeltaTrigger(timedelta(hours=1)), method_name="done",
                           timeout=timedelta(hours=2))

            def done(self, context, event=None):
                return "done"

        with DAG("waits", schedule=None, start_date=datetime(2026, 1, 1)):
            Waiter(task_id="wait")
    """)
    cluster.start_all()
    run_id = await cluster.trigger("waits")

    async def deferred():
        return cluster.by_task(await cluster.run_doc(run_id))["wait"]["state"] == "deferred"

    await wait_for(deferred, 20, "the task to defer")
    cluster.env["COLUMNS"] = "200"  # one line per instance
    shown = cluster.cli("runs", "show", run_id)
    assert shown.returncode == 0, shown.stderr
    assert "deferred=1" in shown.stdout
    assert "DateTimeTrigger fires 20" in shown.stdout, shown.stdout
    assert re.search(r"DateTimeTrigger fires 20\S+ times out 20\S+", shown.stdout), shown.stdout


async def test_broken_dag_file_is_isolated(cluster: Cluster):
    cluster.write_dag("broken.py", """
        from shared.sdk import dag
        raise RuntimeError("this DAG file is broken")
    """)
    cluster.write_dag("hangs.py", """
        import time
        from shared.sdk import dag
        time.sleep(3600)
    """)
    cluster.write_dag("good.py", """
        from datetime import datetime
        from shared.sdk import dag, task

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
    doc = await cluster.wait_run(await cluster.trigger("good", allow_errors=True))
    assert doc["state"] == "success"

    async def errors():
        out = cluster.cli("dags", "list", "--json")
        found = {e["fileloc"].rsplit("/", 1)[-1]: e["message"]
                 for e in __import__("json").loads(out.stdout)["import_errors"]}
        return found if len(found) == 2 else None

    found = await wait_for(errors, 30, "two import errors")
    assert "broken.py:3" in found["broken.py"] and "this DAG file is broken" in found["broken.py"]
    assert "DagBag import timeout for" in found["hangs.py"]


@pytest.mark.parametrize("retries,expected", [(1, ("success", 2)), (0, ("failed", 1))])
async def test_worker_sigkill_mid_task(cluster: Cluster, tmp_path, retries, expected):
    started = tmp_path / "started"
    cluster.write_dag("slow.py", f"""
        import time
        from datetime import datetime
        from pathlib import Path
        from shared.sdk import dag, task

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
    run_id = await cluster.trigger("slow")

    async def running():
        return started.exists()

    await wait_for(running, 30, "the task to start")
    cluster.signal("worker1", signal.SIGKILL)
    cluster.start("worker", name="worker2")
    doc = await cluster.wait_run(run_id, timeout=60)
    t = cluster.by_task(doc)["long_task"]
    assert (t["state"], t["try_number"]) == expected
    assert doc["state"] == expected[0]


async def test_crashing_and_timed_out_tasks_fail_only_their_try(cluster: Cluster):
    cluster.write_dag("crashy.py", """
        import os, time
        from datetime import datetime, timedelta
        from shared.sdk import dag, task

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
    cluster.start_all(SLUICE_WORKER_CONCURRENCY="2")
    doc = await cluster.wait_run(await cluster.trigger("crashy"))
    tasks = cluster.by_task(doc)
    assert tasks["hard_exit"]["state"] == "failed"
    assert tasks["forever"]["state"] == "failed"
    assert tasks["still_works"]["return_value"] == "alive"
    assert cluster.procs["worker"].poll() is None

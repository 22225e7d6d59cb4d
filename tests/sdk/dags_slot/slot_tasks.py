"""Tasks the slot tests run: one of each way a try can end, and every way a task logs."""

import logging
import os
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.operators.python import PythonOperator
from airflow.providers.standard.sensors.date_time import DateTimeSensorAsync
from airflow.sdk import BaseOperator, dag, task
from airflow.sdk.exceptions import AirflowSkipException


class Chatty(BaseOperator):
    def execute(self, context):
        self.log.info("operator self.log line %s", context["ti"].map_index)
        logging.getLogger("user.module").warning("stdlib logging line")
        print("a print line")
        print("a stderr line", file=sys.stderr)
        os.system("echo a child program line")
        return "chatty"


class Killable(BaseOperator):
    """Waits; when stopped, leaves a mark in Airflow's home (where the test looks)."""

    def execute(self, context):
        print("sleeping now")
        time.sleep(300)

    def on_kill(self):
        (Path(os.environ["AIRFLOW_HOME"]) / "on_kill_ran").write_text(self.task_id)


class Counting(BaseOperator):
    """Renders a template and counts its runs on itself: a fresh operator counts 1."""

    template_fields = ("note",)

    def __init__(self, *, note, **kwargs):
        super().__init__(**kwargs)
        self.note, self.runs = note, 0

    def execute(self, context):
        self.runs += 1
        return {"note": self.note, "runs": self.runs}


def classic_callable(greeting):
    return f"{greeting} from PythonOperator"


@dag(schedule=None, start_date=datetime(2026, 1, 1))
def slot_tasks():
    @task
    def plain():
        return {"answer": 42, "home": os.environ.get("AIRFLOW_HOME"),
                "sluice": sorted(n for n in os.environ if n.startswith("SLUICE_"))}

    @task
    def numbers():
        return [10, 20, 30]

    @task
    def doubled(x):
        return x * 2

    @task(retries=2, retry_delay=timedelta(seconds=30))
    def flaky():
        raise ValueError("not this time")

    @task
    def skipper():
        raise AirflowSkipException("nothing to do")

    @task
    def exits():
        os._exit(3)

    @task(execution_timeout=timedelta(seconds=1))
    def wedged():
        os.system("sleep 300 &")
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})  # the SDK's own timeout cannot fire
        time.sleep(300)

    @task
    def records():
        return [{"n": 1, "tags": ["a", {"b": None}]}, [None, 2.5], "s", 7]

    @task
    def stamps():
        return [datetime(2026, 1, 2, tzinfo=UTC), (1, "b")]

    @task
    def described(item, n, ti=None):
        whole = ti.xcom_pull(task_ids="records", map_indexes=None)
        return {"item": repr(item), "n": n, "pulled": type(whole).__name__, "whole": whole}

    @task
    def shown(item):
        return repr(item)

    @task
    def noop():
        pass


    @task
    def leaves_a_program():
        import subprocess

        return subprocess.Popen(["sleep", "300"], start_new_session=True).pid

    PythonOperator(task_id="classic", python_callable=classic_callable,
                   op_kwargs={"greeting": "{{ dag.dag_id }}"})
    BashOperator(task_id="bash", bash_command="echo bash says {{ ti.try_number }}")
    DateTimeSensorAsync(task_id="deferring", target_time="2099-01-01T00:00:00+00:00")
    Chatty(task_id="chatty")
    Counting(task_id="counting", note="rendered for {{ run_id }}")
    Killable(task_id="killable")
    plain()
    nums = numbers()
    doubled.expand(x=nums)
    recs = records()
    described.expand(item=recs, n=nums)
    shown.override(task_id="zipped").expand(item=recs.zip(nums, fillvalue=0))
    shown.override(task_id="as_text").expand(item=recs.map(str))
    shown.override(task_id="joined").expand(item=nums.concat(recs))
    shown.override(task_id="stamped").expand(item=stamps())
    flaky()
    skipper()
    exits()
    wedged()
    noop()
    leaves_a_program()


slot_tasks()

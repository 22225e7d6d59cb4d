"""Classic operators: PythonOperator, BashOperator, an operator of our own logging with
self.log, Variable.get and {{ var.value.x }}."""

from __future__ import annotations

from datetime import datetime

from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, BaseOperator, Variable, task


def greet(name: str, **context) -> str:
    return f"hello {name} from {context['ti'].task_id}"


class Shout(BaseOperator):
    template_fields = ("message",)

    def __init__(self, message: str, **kwargs):
        super().__init__(**kwargs)
        self.message = message

    def execute(self, context):
        self.log.info("shouting %s", self.message.upper())
        return self.message.upper()


with DAG("e2e_classic", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
    python_op = PythonOperator(task_id="python_op", python_callable=greet,
                               op_kwargs={"name": "sluice"})
    bash_op = BashOperator(task_id="bash_op",
                           bash_command="echo 'var says {{ var.value.greeting }}'")
    shout = Shout(task_id="shout", message="{{ var.value.greeting }}")

    @task
    def read_variable() -> dict:
        return {"greeting": Variable.get("greeting"),
                "config": Variable.get("config", deserialize_json=True),
                "missing": Variable.get("not_there", default="fallback")}

    python_op >> bash_op >> shout >> read_variable()

"""One small pipeline per discovered file: a mapped task group, reduced into a report.

``per_file`` expands once per file and every task in it expands with it:
instance i of ``check`` waits only for instance i of ``extract`` (a file can
finish its whole pipeline while others are still extracting), and a failure
stays in its own file's lane. ``report`` receives every ``check`` result as
one lazy sequence, ordered by map index.
"""

from datetime import datetime

from airflow.sdk import (
    dag,
    task,
    task_group,
)


@dag(schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["example", "mapping"])
def file_pipeline_groups(prefix: str = "landing/2026-11-22"):
    @task
    def discover(prefix: str) -> list[str]:
        # A real DAG would list an object store; the names are made up here.
        return [f"{prefix}/orders_{n:02d}.csv" for n in range(4)]

    @task
    def extract(path: str) -> dict:
        return {"path": path, "rows": 90 + 10 * int(path[-6:-4])}

    @task
    def check(extracted: dict, min_rows: int) -> dict:
        return {**extracted, "ok": extracted["rows"] >= min_rows}

    @task_group
    def per_file(path: str, min_rows: int):
        return check(extract(path), min_rows)

    @task
    def report(checked) -> dict:
        return {"files": len(checked), "ok": sum(item["ok"] for item in checked)}

    report(per_file.partial(min_rows=100).expand(path=discover(prefix)))


file_pipeline_groups()

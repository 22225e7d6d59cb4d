"""ELT with one task per discovered file: discover -> load.expand -> summarize.

Each file gets its own mapped instance (own state, retries, logs, label);
the summary receives every instance's result as one lazy sequence.
"""

from datetime import datetime

from airflow.sdk import (
    dag,
    get_current_context,
    task,
)


@dag(schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["example", "mapping"])
def elt_files(prefix: str = "landing/2026-11-22"):
    @task
    def discover(prefix: str) -> list[str]:
        # A real DAG would list an object store; the names are made up here.
        return [f"{prefix}/orders_{n:02d}.csv" for n in range(6)]

    @task(map_index_template="{{ file_name }}", retries=2)
    def load(path: str) -> dict:
        get_current_context()["file_name"] = path.rsplit("/", 1)[-1]
        rows = 100 + len(path) % 7 * 10
        return {"path": path, "rows": rows}

    @task
    def summarize(loaded) -> dict:
        return {"files": len(loaded), "rows": sum(item["rows"] for item in loaded)}

    summarize(load.expand(path=discover(prefix)))


elt_files()

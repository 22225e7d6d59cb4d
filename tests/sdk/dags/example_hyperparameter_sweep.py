"""An ML hyperparameter sweep: discover -> train.expand_kwargs -> pick best.

``discover`` returns one dict of hyperparameters per trial; each becomes the
keyword arguments of one mapped ``train`` instance.
"""

import math
from datetime import datetime

from airflow.sdk import (
    dag,
    task,
)


@dag(schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["example", "mapping"])
def hyperparameter_sweep():
    @task
    def discover() -> list[dict]:
        return [{"learning_rate": lr, "depth": depth}
                for lr in (0.3, 0.1, 0.03) for depth in (2, 4, 8)]

    @task(map_index_template="lr={{ task.op_kwargs['learning_rate'] }} depth={{ task.op_kwargs['depth'] }}")
    def train(learning_rate: float, depth: int) -> dict:
        # A stand-in objective with its best point near lr=0.1, depth=4.
        loss = (math.log10(learning_rate) + 1) ** 2 + (depth - 4) ** 2 / 16 + 0.05
        return {"learning_rate": learning_rate, "depth": depth, "loss": round(loss, 4)}

    @task
    def pick_best(results) -> dict:
        return min(results, key=lambda r: r["loss"])

    pick_best(train.expand_kwargs(discover()))


hyperparameter_sweep()

"""A mapped operator that defers, in Sluice's Kubernetes execution mode.

Each instance's first leg runs in a pod and defers (``TimeDeltaTrigger``): the pod ends,
the trigger waits in the triggerer holding no pod, and the resumption (``resume``, the
operator re-initialised by the Task SDK) runs in a new pod, which reports both pods.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
from airflow.sdk import BaseOperator, dag


class WaitInTheTriggerer(BaseOperator):
    def __init__(self, *, item: int, **kwargs):
        super().__init__(**kwargs)
        self.item = item

    def execute(self, context):
        print(f"item {self.item}: deferring from pod {os.environ.get('HOSTNAME')}", flush=True)
        self.defer(trigger=TimeDeltaTrigger(timedelta(seconds=2)), method_name="resume",
                   kwargs={"first_pod": os.environ.get("HOSTNAME")})

    def resume(self, context, event=None, first_pod=None):
        return {"item": self.item, "first_pod": first_pod, "resumed_in": os.environ.get("HOSTNAME")}


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False,
     tags=["kubernetes"])
def k8s_pod_deferral():
    WaitInTheTriggerer.partial(task_id="wait", executor="KubernetesExecutor").expand(item=[1, 2])


k8s_pod_deferral()

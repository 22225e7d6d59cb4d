"""Trigger classes kept in the DAG folder, as Airflow users write them (imported by DAG files)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance
from airflow.triggers.base import BaseTrigger, TaskFailedEvent, TaskSuccessEvent, TriggerEvent

CLEANED: list[str] = []  # labels of triggers whose cleanup() ran


class EchoTrigger(BaseTrigger):
    """Waits ``delay``, then yields its kwargs back with a tuple and a set beside them."""

    def __init__(self, label: str, delay: timedelta, when=None):
        super().__init__()
        self.label, self.delay, self.when = label, delay, when

    def serialize(self):
        return (f"{type(self).__module__}.EchoTrigger",
                {"label": self.label, "delay": self.delay, "when": self.when})

    async def run(self):
        await asyncio.sleep(self.delay.total_seconds())
        yield TriggerEvent({"label": self.label, "when": self.when, "delay": self.delay,
                            "pair": (1, "two"), "tags": {"a"}})
        yield TriggerEvent("a second event nobody reads")

    async def cleanup(self):
        CLEANED.append(self.label)


class FailingTrigger(BaseTrigger):
    def __init__(self, label: str = "failing"):
        super().__init__()
        self.label = label

    def serialize(self):
        return (f"{type(self).__module__}.FailingTrigger", {"label": self.label})

    async def run(self):
        await asyncio.sleep(0)
        raise ValueError("Deliberate trigger failure")
        yield  # pragma: no cover - makes run() an async generator

    async def cleanup(self):
        CLEANED.append(self.label)


class SilentTrigger(BaseTrigger):
    """Ends without an event."""

    def serialize(self):
        return (f"{type(self).__module__}.SilentTrigger", {})

    async def run(self):
        await asyncio.sleep(0)
        return
        yield  # pragma: no cover


class SleepyTrigger(BaseTrigger):
    """Never fires: only a timeout ends it."""

    def __init__(self, label: str = "sleepy"):
        super().__init__()
        self.label = label

    def serialize(self):
        return (f"{type(self).__module__}.SleepyTrigger", {"label": self.label})

    async def run(self):
        await asyncio.sleep(3600)
        yield TriggerEvent("never")

    async def cleanup(self):
        CLEANED.append(self.label)


class EndTrigger(BaseTrigger):
    """Ends the task from the triggerer: success with XComs, or failure."""

    def __init__(self, fail: bool = False):
        super().__init__()
        self.fail = fail

    def serialize(self):
        return (f"{type(self).__module__}.EndTrigger", {"fail": self.fail})

    async def run(self):
        if self.fail:
            yield TaskFailedEvent(xcoms={"why": "upstream gone"})
        else:
            yield TaskSuccessEvent(xcoms={"return_value": {"rows": [1, 2]}, "note": "from trigger"})


class CountingTrigger(BaseTrigger):
    """Asks the server from ``async def run()`` with a sync SDK call, as many triggers do."""

    def __init__(self, dag_id: str, run_ids: list[str]):
        super().__init__()
        self.dag_id, self.run_ids = dag_id, run_ids

    def serialize(self):
        return (f"{type(self).__module__}.CountingTrigger",
                {"dag_id": self.dag_id, "run_ids": self.run_ids})

    async def run(self):
        runs = RuntimeTaskInstance.get_dr_count(dag_id=self.dag_id, run_ids=self.run_ids)
        tis = RuntimeTaskInstance.get_ti_count(dag_id=self.dag_id, run_ids=self.run_ids,
                                               states=["success"])
        yield TriggerEvent({"runs": runs, "successful_tis": tis})

"""Trigger classes kept in the DAG folder, as Airflow users write them (imported by the DAGs).

The DAG folder is on ``sys.path`` in the triggerer, so ``deferral_triggers.EchoTrigger``
imports as it does in Airflow's own triggerer.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from airflow.triggers.base import BaseTrigger, TaskFailedEvent, TaskSuccessEvent, TriggerEvent


class EchoTrigger(BaseTrigger):
    """Waits ``delay``, then yields its label, what it waited and when it fired."""

    def __init__(self, label: str, delay: timedelta):
        super().__init__()
        self.label, self.delay = label, delay

    def serialize(self):
        return ("deferral_triggers.EchoTrigger", {"label": self.label, "delay": self.delay})

    async def run(self):
        await asyncio.sleep(self.delay.total_seconds())
        self.log.info("echoing %s", self.label)
        yield TriggerEvent({"label": self.label, "waited": self.delay,
                            "fired_at": datetime.now(UTC), "pair": (1, "two")})


class FlakyTrigger(BaseTrigger):
    """Raises while ``try_number`` is below ``works_from``; fires on later tries."""

    def __init__(self, try_number: int, works_from: int):
        super().__init__()
        self.try_number, self.works_from = try_number, works_from

    def serialize(self):
        return ("deferral_triggers.FlakyTrigger",
                {"try_number": self.try_number, "works_from": self.works_from})

    async def run(self):
        await asyncio.sleep(0.05)
        if self.try_number < self.works_from:
            raise RuntimeError(f"flaky trigger breaks on try {self.try_number}")
        yield TriggerEvent({"fired_on_try": self.try_number})


class ForeverTrigger(BaseTrigger):
    """Never fires: only its timeout ends it."""

    def serialize(self):
        return ("deferral_triggers.ForeverTrigger", {})

    async def run(self):
        await asyncio.sleep(3600)
        yield TriggerEvent("never")


class EndTrigger(BaseTrigger):
    """Ends the task from the triggerer: success with XComs, or failure."""

    def __init__(self, fail: bool = False):
        super().__init__()
        self.fail = fail

    def serialize(self):
        return ("deferral_triggers.EndTrigger", {"fail": self.fail})

    async def run(self):
        await asyncio.sleep(0.05)
        if self.fail:
            yield TaskFailedEvent()
        else:
            yield TaskSuccessEvent(xcoms={"return_value": {"rows": 3}, "source": "trigger"})

"""Triggers: small async waits the triggerer runs by the thousand in one loop.

A trigger is rebuilt in the triggerer from ``serialize() -> (classpath,
kwargs)``; kwargs must be JSON (dates allowed). ``run()`` yields
``TriggerEvent``s; the first one resumes the task. ``cleanup()`` always runs.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any


class BaseTrigger:
    """Subclass, implement ``serialize`` and ``async def run``."""

    def __init__(self, **kwargs: Any):
        self.trigger_id: int | None = None
        self.task_instance: Any = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        raise NotImplementedError(f"{type(self).__name__} must implement serialize()")

    async def run(self) -> AsyncIterator[TriggerEvent]:
        raise NotImplementedError(f"{type(self).__name__} must implement run()")
        yield  # pragma: no cover

    async def cleanup(self) -> None:
        """Runs (shielded) whenever the trigger ends, for any reason."""

    def __repr__(self) -> str:
        classpath, kwargs = self.serialize()
        return f"<{classpath} {sorted(kwargs)}>"


class TriggerEvent:
    """What a trigger yields; ``payload`` reaches ``next_method`` as ``event``."""

    def __init__(self, payload: Any):
        self.payload = payload

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TriggerEvent) and other.payload == self.payload

    def __repr__(self) -> str:
        return f"TriggerEvent<{self.payload!r}>"


class BaseTaskEndEvent(TriggerEvent):
    """Ends the task instance from the triggerer, no worker involved."""

    task_instance_state: str = ""

    def __init__(self, *, xcoms: dict[str, Any] | None = None):
        super().__init__(self.task_instance_state)
        self.xcoms = xcoms


class TaskSuccessEvent(BaseTaskEndEvent):
    task_instance_state = "success"


class TaskFailedEvent(BaseTaskEndEvent):
    task_instance_state = "failed"


class TaskSkippedEvent(BaseTaskEndEvent):
    task_instance_state = "skipped"


@dataclass
class StartTriggerArgs:
    """Declares how an operator starts straight from a trigger (``start_from_trigger``)."""

    trigger_cls: str
    next_method: str
    trigger_kwargs: dict[str, Any] | None = None
    next_kwargs: dict[str, Any] | None = None
    timeout: timedelta | None = None
    _extra: dict[str, Any] = field(default_factory=dict, repr=False)


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class DateTimeTrigger(BaseTrigger):
    """Fires once ``moment`` has passed (event payload: the moment)."""

    def __init__(self, moment: datetime, *, end_from_trigger: bool = False):
        super().__init__()
        if not isinstance(moment, datetime):
            raise TypeError(f"Expected datetime.datetime type for moment. Got {type(moment)}")
        self.moment = _utc(moment)
        self.end_from_trigger = end_from_trigger

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("shared.sdk.triggers.DateTimeTrigger",
                {"moment": self.moment, "end_from_trigger": self.end_from_trigger})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        while True:
            delay = (self.moment - datetime.now(UTC)).total_seconds()
            if delay <= 0:
                break
            await asyncio.sleep(min(delay, 3600))
        if self.end_from_trigger:
            yield TaskSuccessEvent()
        else:
            yield TriggerEvent(self.moment)


class TimeDeltaTrigger(DateTimeTrigger):
    """Fires after ``delta`` from now (serialised as the absolute moment)."""

    def __init__(self, delta: timedelta, *, end_from_trigger: bool = False):
        super().__init__(datetime.now(UTC) + delta, end_from_trigger=end_from_trigger)


class FileTrigger(BaseTrigger):
    """Fires when ``filepath`` exists (polls every ``poke_interval`` seconds)."""

    def __init__(self, filepath: str, recursive: bool = False, poke_interval: float = 5.0,
                 **kwargs: Any):
        super().__init__()
        self.filepath = filepath
        self.recursive = recursive
        self.poke_interval = poke_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("shared.sdk.triggers.FileTrigger",
                {"filepath": self.filepath, "recursive": self.recursive,
                 "poke_interval": self.poke_interval})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        import glob

        while True:
            matches = glob.glob(self.filepath, recursive=self.recursive)
            for path in matches:
                if os.path.exists(path):
                    yield TriggerEvent(path)
                    return
            await asyncio.sleep(self.poke_interval)

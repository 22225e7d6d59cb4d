"""Stream payloads: frozen pydantic models with a ``kind`` discriminator.

Messages carry ids, never code or results. One ``TypeAdapter`` parses every
kind; handlers dispatch with ``match``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    v: Literal[1] = 1


class RunTask(_Message):
    """Worker queue: run (or resume) this task instance at this try."""

    kind: Literal["run_task"] = "run_task"
    ti_id: int
    try_number: int


class RunChanged(_Message):
    """Scheduler: something in this run changed (created, a task finished, resumed)."""

    kind: Literal["run_changed"] = "run_changed"
    run_pk: int


class DagsChanged(_Message):
    """Scheduler: DAG definitions changed (re-read schedules)."""

    kind: Literal["dags_changed"] = "dags_changed"


class TriggersPending(_Message):
    """Triggerer: unclaimed trigger rows exist."""

    kind: Literal["triggers_pending"] = "triggers_pending"


Message = Annotated[
    RunTask | RunChanged | DagsChanged | TriggersPending, Field(discriminator="kind")
]
MESSAGE = TypeAdapter(Message)


def encode(message: _Message) -> dict[str, str]:
    return {"m": message.model_dump_json()}


def decode(fields: dict) -> Message:
    """Parse one stream entry; raises ``ValueError`` (pydantic) on anything malformed."""
    raw = fields.get(b"m", fields.get("m"))
    if raw is None:
        raise ValueError("stream entry has no 'm' field")
    return MESSAGE.validate_json(raw)

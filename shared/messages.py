"""Stream payloads: frozen pydantic models with a ``kind`` discriminator.

Messages carry ids, never code or results. One ``TypeAdapter`` parses every
kind; handlers dispatch with ``match``. Every field is strictly typed and every
id bounded to the PostgreSQL column it names, so a message that would make a
handler's statement fail (an id outside ``bigint``, a string for a number) is
refused here, at the boundary, and dead-lettered instead of reaching a daemon.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

BIGINT_MAX = 2**63 - 1
INTEGER_MAX = 2**31 - 1
REASON_MAX_CHARS = 1000

#: A ``bigserial`` primary key (``dag_run.id``, ``task_instance.id``).
RowId = Annotated[int, Field(ge=1, le=BIGINT_MAX)]
#: ``task_instance.try_number`` (``integer``).
TryNumber = Annotated[int, Field(ge=0, le=INTEGER_MAX)]


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)
    v: Literal[1] = 1


class RunTask(_Message):
    """Worker queue: run (or resume) this task instance at this try."""

    kind: Literal["run_task"] = "run_task"
    ti_id: RowId
    try_number: TryNumber


class RunChanged(_Message):
    """Scheduler: something in this run changed (created, a task finished, resumed)."""

    kind: Literal["run_changed"] = "run_changed"
    run_pk: RowId


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


class MessageRejected(ValueError):
    """A stream entry that is not a valid message; ``str()`` is the one-line reason."""


def encode(message: _Message) -> dict[str, str]:
    return {"m": message.model_dump_json()}


def decode(fields: dict) -> Message:
    """Parse one stream entry; raises ``MessageRejected`` on anything malformed."""
    raw = fields.get(b"m", fields.get("m"))
    if raw is None:
        raise MessageRejected("stream entry has no 'm' field")
    try:
        return MESSAGE.validate_json(raw)
    except ValidationError as exc:
        raise MessageRejected(_reason(exc)) from None


def _reason(exc: ValidationError) -> str:
    """One line naming each bad field: ``run_task.ti_id: Input should be less than ...``."""
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "message"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)[:REASON_MAX_CHARS]

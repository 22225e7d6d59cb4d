"""Retry policy as a value: whether a failed try may retry, and after how long.

Reproduces Airflow 3's ``TaskInstance.is_eligible_to_retry`` and
``next_retry_datetime`` (without the ``retry_delay_override`` a runtime policy may
store on the TI: a caller that has one uses it instead of :meth:`next_delay`).

Every component that decides a retry (the worker's Execution API after a try the
Task SDK reported failed, the worker after a crashed task process, the triggerer
after a task-end event, the scheduler after a lost worker) builds the policy
from the serialized task (:meth:`RetryPolicy.of_task` fills it at parse time)
and asks :meth:`RetryPolicy.delay_after`: one delay per try, whoever asks.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["MAX_RETRY_DELAY_S", "RetryPolicy", "jitter_key"]

#: Airflow's hard cap on a backed-off delay (``[core] max_task_retry_delay``, 1 day).
MAX_RETRY_DELAY_S = 86400


def jitter_key(
    dag_id: str, task_id: str, logical_date: datetime | str | None, try_number: int
) -> str:
    """The string Airflow hashes for backoff jitter, the same for every caller.

    Airflow formats ``logical_date`` with ``str()`` of the UTC datetime
    (``2024-01-01 00:00:00+00:00``, space-separated). An ISO string (as stored
    in a message) or a datetime in another zone gives the same key.
    """
    if isinstance(logical_date, str):
        logical_date = datetime.fromisoformat(logical_date)
    if isinstance(logical_date, datetime) and logical_date.tzinfo is not None:
        logical_date = logical_date.astimezone(UTC)
    return f"{dag_id}#{task_id}#{logical_date}#{try_number}"


def _seconds(value: timedelta | float | None) -> float | None:
    if value is None:
        return None
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """A task's retry settings.

    ``retries=N`` allows N+1 tries. ``backoff`` is Airflow 3's
    ``retry_exponential_backoff`` multiplier: ``True`` means 2.0; ``False``, 0, 1.0 or a
    negative number mean a constant ``retry_delay_s``.
    """

    retries: int = 0
    retry_delay_s: float = 300.0
    backoff: float = 0.0
    max_retry_delay_s: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.backoff, bool):
            object.__setattr__(self, "backoff", 2.0 if self.backoff else 0.0)
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if self.retry_delay_s < 0:
            raise ValueError(f"retry_delay_s must be >= 0, got {self.retry_delay_s}")
        if self.max_retry_delay_s is not None and self.max_retry_delay_s < 0:
            raise ValueError(f"max_retry_delay_s must be >= 0, got {self.max_retry_delay_s}")

    @classmethod
    def of_task(cls, task: Any) -> RetryPolicy:
        """The policy of an operator (``retries``, ``retry_delay``,
        ``retry_exponential_backoff``, ``max_retry_delay``), as Sluice serializes it."""
        backoff = task.retry_exponential_backoff
        try:
            return cls(int(task.retries or 0), _seconds(task.retry_delay) or 0.0,
                       2.0 if backoff is True else float(backoff or 0.0),
                       _seconds(task.max_retry_delay))
        except ValueError as exc:  # found when the DAG is parsed: name the task
            raise ValueError(f"task {getattr(task, 'task_id', None)!r}: {exc}") from None

    def max_tries(self) -> int:
        """Airflow's ``max_tries``: the number of retries (tries allowed = this + 1)."""
        return self.retries

    def can_retry(self, try_number: int) -> bool:
        """Whether the try that just failed (1-based ``try_number``) may be retried.

        A TI cleared while running (Airflow's ``restarting``) always retries; that is
        the caller's check, not this one.
        """
        if try_number < 1:
            raise ValueError(f"try_number is 1-based, got {try_number}")
        return bool(self.retries) and try_number <= self.retries

    @property
    def uses_backoff(self) -> bool:
        """True when delays grow by ``backoff`` per try (Airflow: multiplier not in {0, 1}, > 0)."""
        multiplier = self.backoff if self.backoff != 0 else 1.0
        return multiplier != 1.0 and multiplier > 0

    def next_delay(self, try_number: int, *, jitter_key: str = "") -> float | None:
        """Seconds to wait after failed try ``try_number`` before the next; None if none left.

        Without backoff this is ``retry_delay_s`` and ``max_retry_delay_s`` is ignored.
        With backoff: ``m = max(1, ceil(retry_delay_s * backoff**(try_number-1)))``, plus
        deterministic jitter ``sha1(jitter_key) % m`` (so in ``[m, 2m)``), capped at one
        day and then at ``max_retry_delay_s`` if set (non-zero). The pure formula:
        callers use :meth:`delay_after`, which derives ``jitter_key`` from the instance.
        """
        if not self.can_retry(try_number):
            return None
        if not self.uses_backoff:
            return float(self.retry_delay_s)
        try:
            min_backoff = math.ceil(self.retry_delay_s * (self.backoff ** (try_number - 1)))
        except OverflowError:
            min_backoff = MAX_RETRY_DELAY_S
        min_backoff = max(1, min_backoff)
        digest = hashlib.sha1(jitter_key.encode(), usedforsecurity=False).hexdigest()
        delay = float(min(min_backoff + int(digest, 16) % min_backoff, MAX_RETRY_DELAY_S))
        if self.max_retry_delay_s:
            delay = min(float(self.max_retry_delay_s), delay)
        return delay

    def delay_after(self, dag_id: str, task_id: str, logical_date: datetime | str | None,
                    try_number: int) -> float | None:
        """Seconds before the next try of this instance after try ``try_number`` failed.

        The one retry delay: the jitter key is derived here from the instance's
        identity, so the worker, the triggerer and the scheduler agree on every try.
        """
        return self.next_delay(
            try_number, jitter_key=jitter_key(dag_id, task_id, logical_date, try_number))

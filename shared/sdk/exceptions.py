"""Exceptions a task body raises to steer its outcome, and those of DAG loading (Airflow's names)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any


class AirflowException(Exception):
    """Base of the errors Sluice raises on behalf of a task."""


class AirflowSkipException(AirflowException):
    """Raise to end this try as ``skipped``."""


class AirflowFailException(AirflowException):
    """Raise to fail the task instance at once, without retrying."""


class AirflowSensorTimeout(AirflowFailException):
    """A sensor ran out of time: final, no retry."""


class AirflowTaskTimeout(AirflowException):
    """The try exceeded ``execution_timeout`` (retryable)."""


class TaskDeferralError(AirflowException):
    """The trigger of a deferred task failed or timed out (retryable)."""


class TaskDeferralTimeout(TaskDeferralError):
    """The trigger of a deferred task timed out."""


class DuplicateTaskIdFound(AirflowException):
    """Two tasks of one DAG share a task_id."""


class AirflowDagCycleException(AirflowException):
    """A DAG's dependencies form a cycle: its file fails to load."""


class AirflowDagDuplicatedIdException(AirflowException):
    """A dag_id already defined by another file: this file's DAG is ignored (Airflow's text)."""

    def __init__(self, dag_id: str, incoming: str, existing: str) -> None:
        super().__init__(dag_id, incoming, existing)
        self.dag_id = dag_id
        self.incoming = incoming
        self.existing = existing

    def __str__(self) -> str:
        return f"Ignoring DAG {self.dag_id} from {self.incoming} - also found in {self.existing}"


class TaskDeferred(BaseException):  # noqa: N818 - Airflow's name
    """Raised by ``BaseOperator.defer``; a ``BaseException`` so ``except Exception`` won't eat it."""

    def __init__(self, *, trigger: Any, method_name: str, kwargs: dict | None = None,
                 timeout: timedelta | float | None = None):
        super().__init__(trigger, method_name, kwargs, timeout)
        self.trigger = trigger
        self.method_name = method_name
        self.kwargs = kwargs
        if isinstance(timeout, int | float):
            timeout = timedelta(seconds=timeout)
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"<TaskDeferred trigger={self.trigger!r} method={self.method_name}>"


class UnmappableXComTypePushed(AirflowException):
    """A task whose output some mapped task expands over returned a non-list/dict."""

    def __init__(self, value: object):
        super().__init__(f"unmappable return type {type(value).__qualname__!r}")


class UnmappableXComLengthPushed(AirflowException):
    """That output is longer than ``max_map_length``."""

    def __init__(self, length: int, max_length: int):
        super().__init__(f"unmappable return value length: {length} > {max_length}")


class XComForMappingNotPushed(AirflowException):
    """That output is ``None`` (or was not pushed)."""

    def __init__(self) -> None:
        super().__init__("did not push XCom for task mapping")

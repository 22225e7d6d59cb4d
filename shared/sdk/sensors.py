"""Sensors: operators that wait for a condition (Airflow's names and behaviour).

A sensor implements ``poke(context) -> bool | PokeReturnValue``. In ``"poke"``
mode ``execute`` calls it in a loop, sleeping ``poke_interval`` seconds
between calls, and holds its worker slot the whole time. Sluice has no
``up_for_reschedule`` state: ``"reschedule"`` mode defers to a
``TimeDeltaTrigger(poke_interval)`` between pokes instead, which frees the
worker slot the same way. Either way ``timeout`` counts from the first poke
of the try; running out raises ``AirflowSensorTimeout`` (final, no retry), or
``AirflowSkipException`` with ``soft_fail``. Deferrable sensors wait in a
trigger; a trigger timeout is a sensor timeout too.
"""

from __future__ import annotations

import glob
import hashlib
import os
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from shared.sdk.baseoperator import BaseOperator
from shared.sdk.exceptions import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    AirflowTaskTimeout,
    TaskDeferralError,
    TaskDeferralTimeout,
)
from shared.sdk.operators import context_kwargs
from shared.sdk.triggers import DateTimeTrigger, FileTrigger, TimeDeltaTrigger

__all__ = [
    "BaseSensorOperator", "DateTimeSensor", "DateTimeSensorAsync", "FileSensor",
    "PokeReturnValue", "PythonSensor", "TimeDeltaSensor", "TimeDeltaSensorAsync",
]

DEFAULT_SENSOR_TIMEOUT = 7 * 24 * 60 * 60  # Airflow's [sensors] default_timeout


# next_method of a reschedule-mode wait: the worker runs ``execute`` again, so a
# subclass's own ``execute`` around ``super().execute()`` runs on every poke.
RESCHEDULED = "__reschedule__"

class PokeReturnValue:
    """What ``poke`` may return: whether it is done, and the XCom value if so."""

    def __init__(self, is_done: bool, xcom_value: Any | None = None) -> None:
        self.xcom_value = xcom_value
        self.is_done = is_done

    def __bool__(self) -> bool:
        return self.is_done

    def __repr__(self) -> str:
        return f"PokeReturnValue(is_done={self.is_done!r}, xcom_value={self.xcom_value!r})"


def _seconds(value: timedelta | float | None, name: str) -> float | None:
    """``value`` as non-negative seconds; ``AirflowException`` for anything else."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    raise AirflowException(
        f"Operator arg `{name}` must be timedelta object or a non-negative number")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _parse_moment(value: str | datetime) -> datetime:
    """An aware datetime from a datetime or ISO string (naive means UTC)."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class BaseSensorOperator(BaseOperator):
    """Waits until ``poke(context)`` is truthy; its ``PokeReturnValue.xcom_value`` is the XCom.

    ``poke_interval``, ``timeout`` and ``max_wait`` are seconds or timedeltas (stored
    as float seconds). ``exponential_backoff`` grows the wait between pokes (capped by
    ``max_wait``). ``silent_fail``: an unexpected error from ``poke`` counts as "not yet".
    ``never_fail``: such an error skips the task. ``soft_fail``: a timeout (or an
    ``AirflowFailException`` from ``poke``) skips instead of failing. ``deferrable`` is
    read by subclasses that can wait in a trigger.
    """

    ui_color: ClassVar[str] = "#e6f1f2"
    valid_modes: ClassVar[Sequence[str]] = ("poke", "reschedule")
    _is_sensor: ClassVar[bool] = True

    def __init__(self, *, poke_interval: timedelta | float = 60,
                 timeout: timedelta | float = DEFAULT_SENSOR_TIMEOUT, soft_fail: bool = False,
                 mode: str = "poke", exponential_backoff: bool = False,
                 max_wait: timedelta | float | None = None, silent_fail: bool = False,
                 never_fail: bool = False, deferrable: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if soft_fail and never_fail:
            raise ValueError(
                "soft_fail and never_fail are mutually exclusive, you can not provide both.")
        self.poke_interval = _seconds(poke_interval, "poke_interval")
        self.timeout = _seconds(timeout, "timeout")
        self.max_wait = _seconds(max_wait, "max_wait")
        self.soft_fail = soft_fail
        self.mode = mode
        self.exponential_backoff = exponential_backoff
        self.silent_fail = silent_fail
        self.never_fail = never_fail
        self.deferrable = deferrable
        if mode not in self.valid_modes:
            dag_id = self.dag.dag_id if self.dag is not None else ""
            raise AirflowException(
                f"The mode must be one of {list(self.valid_modes)},'{dag_id}.{self.task_id}'; "
                f"received '{mode}'.")

    @property
    def reschedule(self) -> bool:
        """True in ``"reschedule"`` mode (wait in a trigger between pokes)."""
        return self.mode == "reschedule"

    def poke(self, context: dict) -> bool | PokeReturnValue:
        """Override: is the condition met? May return a ``PokeReturnValue``."""
        raise AirflowException("Override me.")

    # --- the poke loop ------------------------------------------------------------
    def execute(self, context: dict) -> Any:
        """Poke until done (returns the XCom value) or timed out (raises)."""
        if self.reschedule:
            wait = getattr(self, "_rescheduled", None) or {}
            return self._resume_poke(context, started=wait.get("started") or _utcnow().isoformat(),
                                     poke_count=wait.get("poke_count", 1))
        start = time.monotonic()
        poke_count = 1
        while True:
            done, value = self._poke_once(context)
            if done:
                return value
            self._check_timeout(time.monotonic() - start)
            time.sleep(self._next_poke_interval(start, time.monotonic() - start, poke_count))
            poke_count += 1

    def _resume_poke(self, context: dict, event: Any = None, started: str | None = None,
                     poke_count: int = 1) -> Any:
        """Reschedule mode: poke once; return the XCom value, time out, or defer again.

        ``started`` (ISO time of the first poke of this try) is carried from deferral
        to deferral so ``timeout`` counts the whole wait.
        """
        started = started or _utcnow().isoformat()
        done, value = self._poke_once(context)
        if done:
            return value
        elapsed = (_utcnow() - _parse_moment(started)).total_seconds()
        self._check_timeout(elapsed)
        interval = self._next_poke_interval(started, elapsed, poke_count)
        self.defer(trigger=TimeDeltaTrigger(timedelta(seconds=interval)),
                   method_name=RESCHEDULED,
                   kwargs={"started": started, "poke_count": poke_count + 1})

    def _poke_once(self, context: dict) -> tuple[bool, Any]:
        """Call ``poke`` under the error policy; return (done, xcom value)."""
        try:
            result = self.poke(context)
        except (AirflowSensorTimeout, AirflowTaskTimeout, AirflowFailException) as exc:
            if self.soft_fail:
                raise AirflowSkipException("Skipping due to soft_fail is set to True.") from exc
            if self.never_fail:
                raise AirflowSkipException("Skipping due to never_fail is set to True.") from exc
            raise
        except AirflowSkipException:
            raise
        except Exception as exc:
            if self.silent_fail:
                print(f"Sensor poke failed: \n {traceback.format_exc()}", flush=True)
                return False, None
            if self.never_fail:
                raise AirflowSkipException("Skipping due to never_fail is set to True.") from exc
            raise
        if not result:
            return False, None
        return True, result.xcom_value if isinstance(result, PokeReturnValue) else None

    def _check_timeout(self, run_duration: float) -> None:
        """Raise ``AirflowSensorTimeout`` (or skip with ``soft_fail``) past ``timeout``."""
        if run_duration <= self.timeout:
            return
        message = (f"Sensor has timed out; run duration of {run_duration} seconds exceeds "
                   f"the specified timeout of {self.timeout}.")
        if self.soft_fail:
            raise AirflowSkipException(message)
        raise AirflowSensorTimeout(message)

    def _next_poke_interval(self, started_at: Any, run_duration: float, poke_count: int) -> float:
        """``poke_interval``, or Airflow's jittered exponential backoff capped by ``max_wait``."""
        if not self.exponential_backoff:
            return self.poke_interval
        min_backoff = max(int(self.poke_interval * (2 ** (poke_count - 2))), 1)
        dag_id = self.dag.dag_id if self.dag is not None else ""
        seed = f"{dag_id}#{self.task_id}#{started_at}#{poke_count}".encode()
        run_hash = int(hashlib.sha1(seed, usedforsecurity=False).hexdigest(), 16)
        backoff = min(min_backoff + run_hash % min_backoff, timedelta.max.total_seconds() - 1)
        interval = max(min(self.timeout - int(run_duration), backoff), 0.0)
        if self.max_wait:
            interval = min(self.max_wait, interval)
        return interval

    # --- after a trigger ----------------------------------------------------------
    def resume_execution(self, next_method: str, next_kwargs: dict | None, context: dict) -> Any:
        """As ``BaseOperator``'s, but a trigger timeout is a sensor timeout (final).

        ``"__fail__"`` with error ``"Trigger timeout"`` raises ``AirflowSensorTimeout``;
        any other trigger failure raises ``TaskDeferralError`` (retryable). With
        ``soft_fail`` both skip instead; with ``never_fail`` a trigger failure skips.
        """
        if next_method == RESCHEDULED:  # as Airflow re-runs a rescheduled sensor's execute()
            self._rescheduled = {k: v for k, v in (next_kwargs or {}).items() if k != "event"}
            return self.execute(context)
        if next_method != "__fail__":
            return super().resume_execution(next_method, next_kwargs, context)
        try:
            return super().resume_execution(next_method, next_kwargs, context)
        except TaskDeferralTimeout as exc:
            if self.soft_fail:
                raise AirflowSkipException(str(exc)) from exc
            raise AirflowSensorTimeout(*exc.args) from exc
        except TaskDeferralError as exc:
            if self.soft_fail or self.never_fail:
                raise AirflowSkipException(str(exc)) from exc
            raise

    def _defer_until(self, trigger: Any) -> None:
        """Defer to ``trigger`` for at most ``timeout``; resumes in ``execute_complete``."""
        self.defer(trigger=trigger, method_name="execute_complete", timeout=self.timeout)

    def execute_complete(self, context: dict, event: Any = None) -> None:
        """The trigger fired: the condition is met (no XCom)."""
        return None


class TimeDeltaSensor(BaseSensorOperator):
    """Waits until ``delta`` after the run's ``data_interval_end`` (else its logical date).

    ``deferrable=True`` waits in a ``DateTimeTrigger`` (for at most ``timeout``) instead
    of poking; it returns ``True`` at once when the moment has already passed.
    """

    def __init__(self, *, delta: timedelta, deferrable: bool = False,
                 end_from_trigger: bool = False, **kwargs: Any) -> None:
        super().__init__(deferrable=deferrable, **kwargs)
        self.delta = delta
        self.end_from_trigger = end_from_trigger

    def _target(self, context: dict) -> datetime:
        base = context.get("data_interval_end") or context.get("logical_date")
        if not isinstance(base, datetime):
            raise ValueError("`data_interval_end` and `logical_date` not found in task context.")
        return _parse_moment(base) + self.delta

    def poke(self, context: dict) -> bool:
        return _utcnow() >= self._target(context)

    def execute(self, context: dict) -> Any:
        if not self.deferrable:
            return super().execute(context)
        target = self._target(context)
        if _utcnow() >= target:
            return True
        self._defer_until(DateTimeTrigger(target, end_from_trigger=self.end_from_trigger))


class TimeDeltaSensorAsync(TimeDeltaSensor):
    """``TimeDeltaSensor`` that defers by default."""

    def __init__(self, *, deferrable: bool = True, **kwargs: Any) -> None:
        super().__init__(deferrable=deferrable, **kwargs)


class DateTimeSensor(BaseSensorOperator):
    """Waits until ``target_time`` (a datetime or templated ISO string; naive is UTC).

    ``deferrable=True`` waits in a ``DateTimeTrigger`` for at most ``timeout``.
    """

    template_fields: ClassVar[Sequence[str]] = ("target_time",)

    def __init__(self, *, target_time: str | datetime, deferrable: bool = False,
                 end_from_trigger: bool = False, **kwargs: Any) -> None:
        super().__init__(deferrable=deferrable, **kwargs)
        if isinstance(target_time, datetime):
            target_time = target_time.isoformat()
        elif not isinstance(target_time, str):
            raise TypeError(
                f"Expected str or datetime.datetime type for target_time. Got {type(target_time)}")
        self.target_time = target_time
        self.end_from_trigger = end_from_trigger

    def poke(self, context: dict) -> bool:
        return _utcnow() >= _parse_moment(self.target_time)

    def execute(self, context: dict) -> Any:
        if not self.deferrable:
            return super().execute(context)
        self._defer_until(DateTimeTrigger(_parse_moment(self.target_time),
                                          end_from_trigger=self.end_from_trigger))


class DateTimeSensorAsync(DateTimeSensor):
    """``DateTimeSensor`` that defers by default."""

    def __init__(self, *, deferrable: bool = True, **kwargs: Any) -> None:
        super().__init__(deferrable=deferrable, **kwargs)


class FileSensor(BaseSensorOperator):
    """Waits for a file (or a non-empty directory) matching the glob ``filepath``.

    ``fs_conn_id`` is accepted for compatibility; paths are local. ``deferrable=True``
    waits in a ``FileTrigger`` (polling every ``poke_interval``) for at most ``timeout``.
    """

    template_fields: ClassVar[Sequence[str]] = ("filepath",)
    ui_color: ClassVar[str] = "#91818a"

    def __init__(self, *, filepath: str, fs_conn_id: str = "fs_default", recursive: bool = False,
                 deferrable: bool = False, **kwargs: Any) -> None:
        super().__init__(deferrable=deferrable, **kwargs)
        self.filepath = filepath
        self.fs_conn_id = fs_conn_id
        self.recursive = recursive

    def poke(self, context: dict) -> bool:
        for path in glob.glob(self.filepath, recursive=self.recursive):
            if os.path.isfile(path):
                return True
            if any(files for _, _, files in os.walk(path)):
                return True
        return False

    def execute(self, context: dict) -> Any:
        if not self.deferrable:
            return super().execute(context)
        if self.poke(context):
            return None
        self._defer_until(FileTrigger(filepath=self.filepath, recursive=self.recursive,
                                      poke_interval=self.poke_interval))

    def execute_complete(self, context: dict, event: Any = None) -> None:
        """The trigger fired; an empty event means the file was not found."""
        if event:
            return None
        message = f"{self.task_id} task failed as {self.filepath} not found."
        if self.soft_fail:
            raise AirflowSkipException(message)
        raise AirflowException(message)


class PythonSensor(BaseSensorOperator):
    """Pokes ``python_callable(*op_args, **op_kwargs)`` (plus the context entries it names).

    A truthy return means done; a ``PokeReturnValue`` also carries the XCom value.
    """

    template_fields: ClassVar[Sequence[str]] = ("templates_dict", "op_args", "op_kwargs")

    def __init__(self, *, python_callable: Callable, op_args: Sequence[Any] | None = None,
                 op_kwargs: dict[str, Any] | None = None, templates_dict: dict | None = None,
                 **kwargs: Any) -> None:
        if not callable(python_callable):
            raise AirflowException("`python_callable` param must be callable")
        super().__init__(**kwargs)
        self.python_callable = python_callable
        self.op_args = list(op_args or [])
        self.op_kwargs = dict(op_kwargs or {})
        self.templates_dict = templates_dict

    def poke(self, context: dict) -> PokeReturnValue:
        context = {**context, "templates_dict": self.templates_dict}
        kwargs = {**context_kwargs(self.python_callable, self.op_args, context), **self.op_kwargs}
        result = self.python_callable(*self.op_args, **kwargs)
        return result if isinstance(result, PokeReturnValue) else PokeReturnValue(bool(result))

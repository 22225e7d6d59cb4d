"""Sensors without daemons: execute/poke/resume_execution against a hand-made context."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from shared.sdk import DAG
from shared.sdk.exceptions import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    TaskDeferralError,
    TaskDeferred,
)
from shared.sdk.sensors import (
    RESCHEDULED,
    BaseSensorOperator,
    DateTimeSensor,
    DateTimeSensorAsync,
    FileSensor,
    PokeReturnValue,
    PythonSensor,
    TimeDeltaSensor,
    TimeDeltaSensorAsync,
)
from shared.sdk.triggers import DateTimeTrigger, FileTrigger, TimeDeltaTrigger


def make_context(when: datetime | None = None, interval_end: datetime | None = None) -> dict:
    when = when or datetime.now(UTC)
    return {"logical_date": when, "data_interval_end": interval_end, "ti": None,
            "params": {}, "run_id": "manual__x"}


class Countdown(BaseSensorOperator):
    """Done on poke number ``after``; counts pokes."""

    def __init__(self, *, after: int = 1, value=None, **kwargs):
        super().__init__(**kwargs)
        self.after = after
        self.value = value
        self.pokes = 0

    def poke(self, context):
        self.pokes += 1
        if self.value is not None:
            return PokeReturnValue(self.pokes >= self.after, self.value)
        return self.pokes >= self.after


class Never(BaseSensorOperator):
    def poke(self, context):
        return False


class Raises(BaseSensorOperator):
    def __init__(self, *, exc: BaseException, **kwargs):
        super().__init__(**kwargs)
        self.exc = exc

    def poke(self, context):
        raise self.exc


# --- construction -----------------------------------------------------------------
def test_defaults_and_coercion():
    s = Never(task_id="s")
    assert (s.poke_interval, s.timeout, s.mode, s.soft_fail) == (60.0, 7 * 24 * 3600.0, "poke", False)
    s = Never(task_id="s", poke_interval=timedelta(seconds=2), timeout=timedelta(minutes=1),
              max_wait=timedelta(seconds=5))
    assert (s.poke_interval, s.timeout, s.max_wait) == (2.0, 60.0, 5.0)


@pytest.mark.parametrize("kwargs, message", [
    ({"poke_interval": -1}, "Operator arg `poke_interval` must be timedelta object or a non-negative number"),
    ({"timeout": "soon"}, "Operator arg `timeout` must be timedelta object or a non-negative number"),
    ({"mode": "sometimes"}, "The mode must be one of ['poke', 'reschedule'],'.s'; received 'sometimes'."),
])
def test_invalid_arguments(kwargs, message):
    with pytest.raises(AirflowException) as info:
        Never(task_id="s", **kwargs)
    assert str(info.value) == message


def test_soft_fail_and_never_fail_are_exclusive():
    with pytest.raises(ValueError, match="mutually exclusive"):
        Never(task_id="s", soft_fail=True, never_fail=True)


def test_base_poke_must_be_overridden():
    with pytest.raises(AirflowException, match="Override me."):
        BaseSensorOperator(task_id="s").poke({})


# --- poke mode --------------------------------------------------------------------
def test_poke_mode_succeeds_after_some_pokes(monkeypatch):
    sleeps: list[float] = []
    monkeypatch.setattr("shared.sdk.sensors.time.sleep", sleeps.append)
    s = Countdown(task_id="s", after=3, poke_interval=7)
    assert s.execute(make_context()) is None
    assert s.pokes == 3
    assert sleeps == [7.0, 7.0]


def test_poke_return_value_is_the_xcom(monkeypatch):
    monkeypatch.setattr("shared.sdk.sensors.time.sleep", lambda s: None)
    s = Countdown(task_id="s", after=2, value={"rows": 5})
    assert s.execute(make_context()) == {"rows": 5}
    assert bool(PokeReturnValue(False, 1)) is False
    assert bool(PokeReturnValue(True)) is True


def test_timeout_is_final_with_airflows_message():
    s = Never(task_id="s", poke_interval=0.01, timeout=0.05)
    with pytest.raises(AirflowSensorTimeout) as info:
        s.execute(make_context())
    assert isinstance(info.value, AirflowFailException)
    assert str(info.value).startswith("Sensor has timed out; run duration of ")
    assert str(info.value).endswith(" seconds exceeds the specified timeout of 0.05.")


def test_soft_fail_timeout_skips():
    s = Never(task_id="s", poke_interval=0.01, timeout=0.02, soft_fail=True)
    with pytest.raises(AirflowSkipException, match="Sensor has timed out"):
        s.execute(make_context())


def test_poke_errors_follow_silent_never_and_soft_fail(monkeypatch):
    monkeypatch.setattr("shared.sdk.sensors.time.sleep", lambda s: None)
    with pytest.raises(ValueError):
        Raises(task_id="a", exc=ValueError("x")).execute(make_context())
    with pytest.raises(AirflowSkipException, match="never_fail"):
        Raises(task_id="b", exc=ValueError("x"), never_fail=True).execute(make_context())
    with pytest.raises(AirflowSkipException, match="soft_fail"):
        Raises(task_id="c", exc=AirflowFailException("x"), soft_fail=True).execute(make_context())
    with pytest.raises(AirflowSensorTimeout):
        Raises(task_id="d", exc=ValueError("x"), silent_fail=True, timeout=0).execute(make_context())


def test_exponential_backoff_is_capped_by_max_wait(monkeypatch):
    sleeps: list[float] = []
    monkeypatch.setattr("shared.sdk.sensors.time.sleep", sleeps.append)
    s = Countdown(task_id="s", after=6, poke_interval=1, exponential_backoff=True, max_wait=3)
    s.execute(make_context())
    assert len(sleeps) == 5
    assert all(1 <= w <= 3 for w in sleeps)
    assert sleeps[-1] == 3


# --- reschedule mode ----------------------------------------------------------------
def test_reschedule_mode_defers_between_pokes():
    s = Countdown(task_id="s", after=3, mode="reschedule", poke_interval=5)
    before = datetime.now(UTC)
    with pytest.raises(TaskDeferred) as info:
        s.execute(make_context())
    deferred = info.value
    assert isinstance(deferred.trigger, TimeDeltaTrigger)
    assert before + timedelta(seconds=5) <= deferred.trigger.moment <= datetime.now(UTC) + timedelta(seconds=5)
    assert deferred.method_name == RESCHEDULED
    assert deferred.timeout is None
    started = deferred.kwargs["started"]
    assert before <= datetime.fromisoformat(started) <= datetime.now(UTC)
    assert deferred.kwargs == {"started": started, "poke_count": 2}

    # the worker resumes with the event plus the kwargs; the start time is kept
    with pytest.raises(TaskDeferred) as info:
        s.resume_execution(RESCHEDULED, {**deferred.kwargs, "event": "x"}, make_context())
    assert info.value.kwargs == {"started": started, "poke_count": 3}
    assert s.resume_execution(RESCHEDULED, {**info.value.kwargs, "event": "x"}, make_context()) is None
    assert s.pokes == 3


def test_a_wait_deferred_before_the_upgrade_still_resumes():
    s = Countdown(task_id="s", after=1, value="v", mode="reschedule")
    started = datetime.now(UTC).isoformat()
    assert s.resume_execution("_resume_poke", {"started": started, "poke_count": 2,
                                               "event": None}, make_context()) == "v"


class Wrapped(Countdown):
    """A sensor whose own execute() wraps the poke loop, as users write them."""

    def execute(self, context):
        context["ti"].xcom_push("extra", "pushed")
        super().execute(context)
        return "post"


def test_a_rescheduled_sensor_runs_its_own_execute_again_on_every_poke():
    ti = SimpleNamespace(pushed={}, xcom_push=lambda k, v: ti.pushed.update({k: v}))
    s = Wrapped(task_id="s", after=2, mode="reschedule")
    with pytest.raises(TaskDeferred) as info:
        s.execute({**make_context(), "ti": ti})
    assert s.resume_execution(RESCHEDULED, {**info.value.kwargs, "event": None},
                              {**make_context(), "ti": ti}) == "post"
    assert ti.pushed == {"extra": "pushed"} and s.pokes == 2


def test_reschedule_mode_returns_xcom_and_times_out_from_first_poke():
    s = Countdown(task_id="s", after=1, value="v", mode="reschedule")
    assert s.execute(make_context()) == "v"
    s = Never(task_id="s", mode="reschedule", timeout=60)
    long_ago = (datetime.now(UTC) - timedelta(seconds=61)).isoformat()
    with pytest.raises(AirflowSensorTimeout, match="exceeds the specified timeout of 60.0"):
        s.resume_execution(RESCHEDULED, {"started": long_ago, "event": None}, make_context())
    s = Never(task_id="s", mode="reschedule", timeout=60, soft_fail=True)
    with pytest.raises(AirflowSkipException):
        s.resume_execution(RESCHEDULED, {"started": long_ago, "event": None}, make_context())


# --- trigger failures -----------------------------------------------------------------
def test_trigger_timeout_is_a_final_sensor_timeout():
    s = Never(task_id="s", retries=3)
    with pytest.raises(AirflowSensorTimeout) as info:
        s.resume_execution("__fail__", {"error": "Trigger timeout"}, make_context())
    assert isinstance(info.value, AirflowFailException)
    soft = Never(task_id="s", soft_fail=True)
    with pytest.raises(AirflowSkipException):
        soft.resume_execution("__fail__", {"error": "Trigger timeout"}, make_context())


def test_other_trigger_failures_stay_retryable():
    s = Never(task_id="s")
    with pytest.raises(TaskDeferralError) as info:
        s.resume_execution("__fail__", {"error": "Trigger failure", "traceback": ["boom\n"]},
                           make_context())
    assert not isinstance(info.value, AirflowFailException)
    soft = Never(task_id="s", soft_fail=True)
    with pytest.raises(AirflowSkipException):
        soft.resume_execution("__fail__", {"error": "Trigger failure"}, make_context())


# --- TimeDeltaSensor ------------------------------------------------------------------
def test_time_delta_sensor_pokes_against_data_interval_end():
    now = datetime.now(UTC)
    s = TimeDeltaSensor(task_id="s", delta=timedelta(minutes=5))
    assert s.poke(make_context(when=now - timedelta(hours=1), interval_end=now)) is False
    assert s.poke(make_context(when=now, interval_end=now - timedelta(minutes=6))) is True
    assert s.poke(make_context(when=now - timedelta(minutes=6))) is True  # falls back to logical_date


def test_deferrable_time_delta_sensor_defers_to_the_target_moment():
    end = datetime.now(UTC)
    s = TimeDeltaSensor(task_id="s", delta=timedelta(hours=1), deferrable=True, timeout=120)
    with pytest.raises(TaskDeferred) as info:
        s.execute(make_context(when=end - timedelta(days=1), interval_end=end))
    deferred = info.value
    assert type(deferred.trigger) is DateTimeTrigger
    assert deferred.trigger.moment == end + timedelta(hours=1)
    assert deferred.method_name == "execute_complete"
    assert deferred.timeout == timedelta(seconds=120)
    assert s.resume_execution("execute_complete", {"event": end}, make_context()) is None


def test_deferrable_time_delta_sensor_past_target_returns_at_once():
    past = datetime.now(UTC) - timedelta(hours=2)
    s = TimeDeltaSensorAsync(task_id="s", delta=timedelta(hours=1))
    assert s.deferrable is True
    assert s.execute(make_context(when=past)) is True


def test_time_delta_sensor_in_reschedule_mode():
    s = TimeDeltaSensor(task_id="s", delta=timedelta(hours=1), mode="reschedule", poke_interval=3)
    with pytest.raises(TaskDeferred) as info:
        s.execute(make_context())
    assert isinstance(info.value.trigger, TimeDeltaTrigger)


# --- DateTimeSensor -------------------------------------------------------------------
def test_date_time_sensor():
    past, future = datetime(2020, 1, 1, tzinfo=UTC), datetime.now(UTC) + timedelta(days=1)
    assert DateTimeSensor(task_id="a", target_time=past).poke({}) is True
    assert DateTimeSensor(task_id="b", target_time="2020-01-01T00:00:00").poke({}) is True
    assert DateTimeSensor(task_id="c", target_time=future).poke({}) is False
    assert DateTimeSensor.template_fields == ("target_time",)
    with pytest.raises(TypeError, match="Expected str or datetime.datetime type for target_time"):
        DateTimeSensor(task_id="d", target_time=123)


def test_date_time_sensor_target_is_templated():
    with DAG("d", schedule=None, start_date=datetime(2026, 1, 1)):
        s = DateTimeSensor(task_id="s", target_time="{{ ds }}T10:00:00+00:00")
    s.render_template_fields({"ds": "2026-03-04"})
    assert s.target_time == "2026-03-04T10:00:00+00:00"


def test_deferrable_date_time_sensor():
    future = datetime.now(UTC) + timedelta(days=1)
    s = DateTimeSensorAsync(task_id="s", target_time=future, timeout=1)
    with pytest.raises(TaskDeferred) as info:
        s.execute(make_context())
    assert info.value.trigger.moment == future
    assert info.value.timeout == timedelta(seconds=1)
    assert info.value.method_name == "execute_complete"


# --- FileSensor -----------------------------------------------------------------------
def test_file_sensor(tmp_path):
    s = FileSensor(task_id="s", filepath=str(tmp_path / "*.csv"))
    assert s.poke({}) is False
    (tmp_path / "a.csv").write_text("x")
    assert s.poke({}) is True
    (tmp_path / "empty").mkdir()
    assert FileSensor(task_id="d", filepath=str(tmp_path / "empty")).poke({}) is False
    (tmp_path / "empty" / "f").write_text("x")
    assert FileSensor(task_id="d", filepath=str(tmp_path / "empty")).poke({}) is True


def test_deferrable_file_sensor(tmp_path):
    pattern = str(tmp_path / "*.done")
    s = FileSensor(task_id="s", filepath=pattern, deferrable=True, poke_interval=2, timeout=30)
    with pytest.raises(TaskDeferred) as info:
        s.execute(make_context())
    trigger = info.value.trigger
    assert isinstance(trigger, FileTrigger)
    assert (trigger.filepath, trigger.poke_interval) == (pattern, 2.0)
    assert info.value.timeout == timedelta(seconds=30)
    assert s.execute_complete({}, event=str(tmp_path / "x.done")) is None
    with pytest.raises(AirflowException, match="not found"):
        s.execute_complete({}, event=None)
    (tmp_path / "x.done").write_text("")
    assert s.execute(make_context()) is None


# --- PythonSensor ---------------------------------------------------------------------
def test_python_sensor_passes_args_and_context():
    seen = {}

    def check(a, b=None, run_id=None, templates_dict=None):
        seen.update(a=a, b=b, run_id=run_id, templates_dict=templates_dict)
        return PokeReturnValue(True, xcom_value=a + b)

    s = PythonSensor(task_id="s", python_callable=check, op_args=[1], op_kwargs={"b": 2},
                     templates_dict={"k": "v"})
    assert s.execute(make_context()) == 3
    assert seen == {"a": 1, "b": 2, "run_id": "manual__x", "templates_dict": {"k": "v"}}


def test_python_sensor_truthiness():
    assert PythonSensor(task_id="s", python_callable=lambda: "yes").poke({}).is_done is True
    assert PythonSensor(task_id="s", python_callable=lambda: []).poke({}).is_done is False
    with pytest.raises(AirflowException, match="must be callable"):
        PythonSensor(task_id="s", python_callable="nope")


def test_fresh_copy_keeps_sensor_arguments():
    with DAG("d", schedule=None, start_date=datetime(2026, 1, 1)):
        s = TimeDeltaSensorAsync(task_id="s", delta=timedelta(seconds=3), timeout=9)
    copy = s.fresh_copy()
    assert (copy.delta, copy.timeout, copy.deferrable) == (timedelta(seconds=3), 9.0, True)

"""Facts of Airflow's objects the spec keeps: setup/teardown, callbacks, inlets/outlets, Param schemas,
trigger timetables, and a class-level ``start_trigger_args`` that an ``__init__`` changes."""

from __future__ import annotations

from pathlib import Path

from shared.airflow_spec import parse
from shared.serialization import DagSpec
from tests.sdk.test_airflow_spec_errors import write


def only_spec(tmp_path: Path, body: str) -> DagSpec:
    [result] = parse(write(tmp_path, "dag.py", body), tmp_path)
    assert result["error"] is None, result["error"]
    [spec] = result["dags"]
    return DagSpec.model_validate(spec)


def test_setup_teardown_callbacks_and_lineage_are_kept_and_decide_is_empty(tmp_path: Path):
    spec = only_spec(tmp_path, """
        from airflow.sdk import Asset, AssetAlias

        with DAG("facts", schedule=None, start_date=datetime(2026, 1, 1)):
            setup = EmptyOperator(task_id="setup").as_setup()
            work = EmptyOperator(task_id="work", on_failure_callback=print, on_retry_callback=print)
            teardown = EmptyOperator(task_id="teardown", on_execute_callback=print).as_teardown(
                setups=setup, on_failure_fail_dagrun=True)
            publish = EmptyOperator(task_id="publish", outlets=[Asset("s3://b/k"), AssetAlias("a")])
            setup >> work >> teardown >> publish
    """)
    t = spec.task_map
    assert (t["setup"].is_setup, t["setup"].is_teardown) == (True, False)
    assert (t["teardown"].is_teardown, t["teardown"].on_failure_fail_dagrun) == (True, True)
    assert t["teardown"].trigger_rule == "all_done_setup_success"
    assert t["work"].callbacks == ["on_failure_callback", "on_retry_callback"]
    assert t["teardown"].callbacks == ["on_execute_callback"]
    assert t["publish"].outlets == [{"asset": {"name": "s3://b/k", "uri": "s3://b/k", "group": "asset"}},
                                    {"asset_alias": {"name": "a", "group": "asset"}}]
    # Airflow runs an EmptyOperator with an execute callback or outlets; the others it sets to success
    assert {tid: task.is_empty for tid, task in t.items()} == {
        "setup": True, "work": True, "teardown": False, "publish": False}


def test_params_keep_defaults_and_their_schema(tmp_path: Path):
    spec = only_spec(tmp_path, """
        from airflow.sdk import Param

        @dag(schedule=None, start_date=datetime(2026, 1, 1), params={
            "n": Param(5, type="integer", minimum=1), "plain": "x",
            "who": Param(type="string", description="required")})
        def with_params(extra: int = 3):
            EmptyOperator(task_id="x")

        with_params()
    """)
    assert spec.params == {"n": 5, "plain": "x", "who": None, "extra": 3}
    assert spec.param_schemas == {
        "n": {"schema": {"type": "integer", "minimum": 1}, "description": None, "required": False},
        "who": {"schema": {"type": "string"}, "description": "required", "required": True}}


def test_timetables_are_stored_as_airflow_encodes_them_in_the_dags_zone(tmp_path: Path):
    [result] = parse(write(tmp_path, "tt.py", """
        import pendulum
        from airflow.timetables.trigger import CronTriggerTimetable as CoreCron
        from airflow.sdk import CronDataIntervalTimetable, DeltaTriggerTimetable

        paris = pendulum.datetime(2026, 1, 1, tz="Europe/Paris")
        for dag_id, schedule in [("string", "30 6 * * *"), ("delta", timedelta(minutes=10)),
                                 ("core", CoreCron("@hourly", timezone="Asia/Tokyo")),
                                 ("interval", CronDataIntervalTimetable("0 2 * * *", "UTC")),
                                 ("trigger_delta", DeltaTriggerTimetable(timedelta(hours=2)))]:
            with DAG(dag_id, schedule=schedule, start_date=paris):
                EmptyOperator(task_id="x")
    """), tmp_path)
    assert result["error"] is None, result["error"]
    timetables = {d["dag_id"]: d["schedule"]["timetable"] for d in result["dags"]}
    trigger, data = "airflow.timetables.trigger.", "airflow.timetables.interval."
    assert timetables == {
        "string": {"__type": trigger + "CronTriggerTimetable", "__var": {
            "expression": "30 6 * * *", "timezone": "Europe/Paris", "interval": 0.0,
            "run_immediately": False}},
        "delta": {"__type": trigger + "DeltaTriggerTimetable",
                  "__var": {"delta": 600.0, "interval": 0.0}},
        "core": {"__type": trigger + "CronTriggerTimetable", "__var": {
            "expression": "0 * * * *", "timezone": "Asia/Tokyo", "interval": 0.0,
            "run_immediately": False}},
        "interval": {"__type": data + "CronDataIntervalTimetable",
                     "__var": {"expression": "0 2 * * *", "timezone": "UTC"}},
        "trigger_delta": {"__type": trigger + "DeltaTriggerTimetable",
                          "__var": {"delta": 7200.0, "interval": 0.0}}}
    assert {d["schedule"]["earliest"] for d in result["dags"]} == {"2025-12-31T23:00:00+00:00"}


def test_a_class_start_trigger_args_changed_by_init_is_what_every_instance_holds(tmp_path: Path):
    """Airflow's objects hold one StartTriggerArgs per class: an instance's own ``trigger_kwargs``
    argument is read from what it was given; an instance without one sees the changed class value."""
    spec = only_spec(tmp_path, """
        from airflow.sdk import BaseOperator
        from airflow.triggers.base import StartTriggerArgs

        class Wait(BaseOperator):
            start_trigger_args = StartTriggerArgs(
                trigger_cls="airflow.providers.standard.triggers.temporal.TimeDeltaTrigger",
                next_method="execute_complete", trigger_kwargs={"delta": timedelta(seconds=30)})
            start_from_trigger = True

            def __init__(self, *, trigger_kwargs=None, **kwargs):
                super().__init__(**kwargs)
                if trigger_kwargs is not None:
                    self.start_trigger_args.trigger_kwargs = trigger_kwargs

        with DAG("shared_args", schedule=None, start_date=datetime(2026, 1, 1)):
            Wait(task_id="one", trigger_kwargs={"delta": timedelta(seconds=1)})
            Wait(task_id="two", trigger_kwargs={"delta": timedelta(seconds=2)})
            Wait(task_id="default")
    """)
    delta = {tid: spec.task(tid).start_trigger["base"]["trigger_kwargs"]["delta"]["seconds"]
             for tid in ("one", "two", "default")}
    assert delta == {"one": 1.0, "two": 2.0, "default": 2.0}


def test_tags_are_sorted_as_airflows_dag_keeps_them_in_a_set(tmp_path: Path):
    spec = only_spec(tmp_path, """
        with DAG("tagged", schedule=None, start_date=datetime(2026, 1, 1), tags=["z", "a", "m"]):
            EmptyOperator(task_id="x")
    """)
    assert spec.tags == ["a", "m", "z"]

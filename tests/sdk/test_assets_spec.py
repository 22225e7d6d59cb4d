"""A DAG's assets as walked at parse time, and the events a success records (pure rules).

An ``AssetWatcher`` is kept as its trigger's class path and kwargs, for the triggerer.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from airflow.sdk.api.datamodels._generated import AssetProfile

from shared.airflow_spec import parse
from worker.execution_api.assets import Emit, plan


def parsed(tmp_path: Path, body: str) -> dict:
    path = tmp_path / "dag.py"
    path.write_text("from datetime import datetime\nfrom airflow.sdk import *\n" + textwrap.dedent(body))
    [result] = parse(path, tmp_path)
    return result


def test_schedule_conditions_are_walked_with_the_assets_they_name(tmp_path: Path):
    result = parsed(tmp_path, """
        from airflow.providers.standard.operators.empty import EmptyOperator

        a, b = Asset("a", uri="s3://x/a", extra={"k": 1}), Asset("s3://x/b")
        with DAG("consumer", schedule=(a | Asset.ref(name="n")) & AssetAlias("al"),
                 start_date=datetime(2026, 1, 1)):
            EmptyOperator(task_id="t", outlets=[b])
    """)
    assert result["error"] is None
    [dag] = result["dags"]
    assert dag["schedule"] is None
    assert dag["asset_condition"] == {"all": [
        {"any": [{"asset": {"name": "a", "uri": "s3://x/a"}}, {"name_ref": "n"}]},
        {"alias": "al"}]}
    assert dag["assets"] == [
        {"name": "a", "uri": "s3://x/a", "group": "asset", "extra": {"k": 1}},
        {"name": "s3://x/b", "uri": "s3://x/b", "group": "asset", "extra": {}}]
    assert dag["asset_aliases"] == ["al"]


def test_an_asset_watcher_is_walked_into_its_trigger_for_the_triggerer(tmp_path: Path):
    result = parsed(tmp_path, """
        from airflow.providers.standard.triggers.file import FileDeleteTrigger
        trigger = FileDeleteTrigger(filepath="/tmp/x", poke_interval=2.0)
        watched = Asset("w", watchers=[AssetWatcher(name="file", trigger=trigger)])
        with DAG("watching", schedule=[watched], start_date=datetime(2026, 1, 1)):
            pass
    """)
    assert result["error"] is None
    [dag] = result["dags"]
    assert dag["asset_watchers"] == [{
        "asset": {"name": "w", "uri": "w"}, "name": "file",
        "classpath": "airflow.providers.standard.triggers.file.FileDeleteTrigger",
        "kwargs": {"filepath": "/tmp/x", "poke_interval": 2.0}}]
    assert dag["assets"] == [{"name": "w", "uri": "w", "group": "asset", "extra": {}}]


def test_a_success_emits_one_event_per_outlet_and_extra():
    outlets = [AssetProfile(name="a", uri="u/a", type="Asset"),
               AssetProfile(name="b", uri="u/b", type="Asset"),
               AssetProfile(name="n", type="AssetNameRef"),
               AssetProfile(name="gone", type="AssetNameRef")]
    events = [{"dest_asset_key": {"name": "a", "uri": "u/a"}, "extra": {"rows": 1}},
              {"dest_asset_key": {"name": "a", "uri": "u/a"}, "extra": {"rows": 2}}]
    assert plan(outlets, events, {("name", "n"): ("n", "u/n")}) == [
        Emit("a", "u/a", {"rows": 1}), Emit("a", "u/a", {"rows": 2}), Emit("b", "u/b", {}),
        Emit("n", "u/n", {})]


def test_alias_events_create_their_asset_and_name_each_alias_listed():
    outlets = [AssetProfile(name="al", type="AssetAlias"), AssetProfile(name="al2", type="AssetAlias")]
    key = {"name": "x", "uri": "s3://x"}
    events = [{"source_alias_name": "al", "dest_asset_key": key, "dest_asset_extra": {"e": 1},
               "extra": {"d": 1}},
              {"source_alias_name": "al2", "dest_asset_key": key, "dest_asset_extra": {"e": 1},
               "extra": {"d": 1}},
              {"source_alias_name": "unlisted", "dest_asset_key": key, "extra": {}}]
    assert plan(outlets, events, {}) == [Emit("x", "s3://x", {"d": 1}, ["al", "al2"], True, {"e": 1})]


def test_a_malformed_event_is_refused_naming_the_field():
    with pytest.raises(ValueError, match="dest_asset_key must be"):
        plan([AssetProfile(name="a", uri="a", type="Asset")], [{"dest_asset_key": "a", "extra": {}}], {})

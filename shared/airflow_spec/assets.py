"""A DAG's assets as Sluice's scheduler reads them: the asset condition it is scheduled on
and every asset and alias it declares.

``schedule=[Asset(...)]``, ``Asset & Asset``, ``Asset | Asset``, ``AssetAlias`` and
``Asset.ref(name=...)``/``Asset.ref(uri=...)`` build Airflow's asset timetable; its
condition is walked into plain JSON (``condition_json``), which ``scheduler.assets``
evaluates against the queued events with :func:`evaluate`. ``AssetOrTimeSchedule``
is that condition plus its timetable, which ``shared.airflow_spec.timetables`` reads as
any other schedule. An ``AssetWatcher`` of a scheduled asset is kept as its trigger's
class path and serde-encoded kwargs (``asset_watchers``), which the triggerer runs
(``triggerer.asset_watchers``). What Sluice cannot run fails at DAG load, naming the DAG
and the feature: partitioned asset timetables, a watcher whose trigger is not an
event trigger or cannot be serialized.

Condition JSON, one node each::

    {"asset": {"name": ..., "uri": ...}}   {"alias": name}
    {"name_ref": name}    {"uri_ref": uri}    {"all": [...]}    {"any": [...]}
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.airflow_spec.errors import SpecError

AssetKey = tuple[str, str]  # (name, uri): an asset's identity, as Airflow's AssetUniqueKey


def is_asset_timetable(timetable: Any) -> bool:
    """One of the SDK's asset timetables (the scheduler runs the DAG on asset events)."""
    from airflow.sdk.definitions.timetables.assets import AssetTriggeredTimetable

    return isinstance(timetable, AssetTriggeredTimetable)


def time_part(dag: Any) -> Any | None:
    """The timetable an asset timetable also runs by: ``AssetOrTimeSchedule``'s, else None.

    Raises :class:`SpecError` for partitioned asset timetables.
    """
    timetable = dag.timetable
    name = type(timetable).__name__
    if name == "PartitionedAssetTimetable":
        raise SpecError(f"DAG {dag.dag_id!r}: schedule PartitionedAssetTimetable (partitioned "
                        "asset events) is not supported by Sluice")
    if name == "AssetOrTimeSchedule":
        return timetable.timetable
    return None


def asset_fields(dag: Any) -> dict[str, Any]:
    """The DAG document's asset keys: ``asset_condition`` (None: not asset-scheduled) and
    ``assets``/``asset_aliases``, every asset and alias the schedule, inlets and outlets name
    (what the Execution API's asset routes answer from)."""
    condition = None
    declared = Declared()
    timetable = dag.timetable
    if is_asset_timetable(timetable):
        time_part(dag)  # refuses what cannot be scheduled
        condition = condition_json(timetable.asset_condition, dag.dag_id, declared)
    watchers = [w for a in declared.assets.values() for w in a.pop("watchers", [])]
    for task in dag.tasks:
        for item in [*(task.inlets or ()), *(task.outlets or ())]:
            declared.add(item)
    return {"asset_condition": condition, "assets": list(declared.assets.values()),
            "asset_aliases": sorted(declared.aliases), "asset_watchers": watchers}


@dataclass
class Declared:
    """The assets (name, uri, group, extra) and alias names a DAG names anywhere."""

    assets: dict[AssetKey, dict[str, Any]] = field(default_factory=dict)
    aliases: set[str] = field(default_factory=set)

    def add(self, item: Any, dag_id: str | None = None) -> None:
        """Record an asset or alias; a scheduled asset (``dag_id`` given) with its watchers."""
        from airflow.sdk import Asset, AssetAlias

        if isinstance(item, Asset):
            entry = self.assets.setdefault((item.name, item.uri), {
                "name": item.name, "uri": item.uri, "group": item.group,
                "extra": dict(item.extra or {})})
            if dag_id is not None and item.watchers and "watchers" not in entry:
                entry["watchers"] = [watcher_json(w, item, dag_id) for w in item.watchers]
        elif isinstance(item, AssetAlias):
            self.aliases.add(item.name)


def condition_json(cond: Any, dag_id: str, declared: Declared | None = None) -> dict[str, Any]:
    """An SDK asset condition as condition JSON (raises :class:`SpecError` for watchers)."""
    from airflow.sdk import Asset, AssetAlias, AssetAll, AssetAny
    from airflow.sdk.definitions.asset import AssetNameRef, AssetUriRef

    declared = declared if declared is not None else Declared()
    if isinstance(cond, Asset):
        declared.add(cond, dag_id)
        return {"asset": {"name": cond.name, "uri": cond.uri}}
    if isinstance(cond, AssetAlias):
        declared.add(cond)
        return {"alias": cond.name}
    if isinstance(cond, AssetNameRef):
        return {"name_ref": cond.name}
    if isinstance(cond, AssetUriRef):
        return {"uri_ref": cond.uri}
    if isinstance(cond, AssetAll | AssetAny):
        kind = "all" if isinstance(cond, AssetAll) else "any"
        return {kind: [condition_json(o, dag_id, declared) for o in cond.objects]}
    raise SpecError(f"DAG {dag_id!r}: schedule asset condition {type(cond).__name__} is not "
                    "supported by Sluice (Asset, AssetAlias, Asset.ref, & and |)")


def watcher_json(watcher: Any, asset: Any, dag_id: str) -> dict[str, Any]:
    """An ``AssetWatcher`` as the triggerer runs it: its asset, name, trigger class path and
    kwargs encoded with the SDK's serde (as a deferral's are)."""
    from airflow.sdk.serde import serialize
    from airflow.triggers.base import BaseEventTrigger

    where = f"DAG {dag_id!r}: asset {asset.name!r} watcher {watcher.name!r}"
    if not isinstance(watcher.trigger, BaseEventTrigger):
        raise SpecError(f"{where}: {type(watcher.trigger).__name__} is not an event trigger "
                        "(BaseEventTrigger)")
    try:
        classpath, kwargs = watcher.trigger.serialize()
        encoded = serialize(kwargs)
        json.dumps(encoded)
    except Exception as exc:  # noqa: BLE001 - a user's trigger decides what serialize() does
        raise SpecError(f"{where}: its trigger's kwargs cannot be stored: "
                        f"{type(exc).__name__}: {exc}") from None
    return {"asset": {"name": asset.name, "uri": asset.uri}, "name": watcher.name,
            "classpath": classpath, "kwargs": encoded}


# --- the pure rules the scheduler applies -----------------------------------------------------
@dataclass(frozen=True)
class Resolver:
    """What a condition's aliases and references stand for now (from the asset tables)."""

    alias_assets: Mapping[str, Iterable[AssetKey]] = field(default_factory=dict)
    by_name: Mapping[str, AssetKey] = field(default_factory=dict)
    by_uri: Mapping[str, AssetKey] = field(default_factory=dict)


def evaluate(cond: Mapping[str, Any], queued: set[AssetKey],
             resolver: Resolver = Resolver()) -> bool:
    """Whether the condition holds when ``queued`` assets have events waiting (Airflow's
    ``AssetEvaluator``): an asset holds when queued, an alias when any asset it resolved to
    holds, a reference when the asset it names holds, ``all``/``any`` as ``&``/``|``."""
    rules: dict[str, Callable[[Any], bool]] = {
        "asset": lambda a: (a["name"], a["uri"]) in queued,
        "alias": lambda name: any(k in queued for k in resolver.alias_assets.get(name, ())),
        "name_ref": lambda name: resolver.by_name.get(name) in queued,
        "uri_ref": lambda uri: resolver.by_uri.get(uri) in queued,
        "all": lambda items: all(evaluate(c, queued, resolver) for c in items),
        "any": lambda items: any(evaluate(c, queued, resolver) for c in items),
    }
    ((kind, value),) = cond.items()
    return rules[kind](value)


def references(cond: Mapping[str, Any] | None) -> list[tuple[str, str | None, str | None]]:
    """The (kind, name, uri) rows a condition schedules its DAG on: which events queue it."""
    if cond is None:
        return []
    ((kind, value),) = cond.items()
    if kind in ("all", "any"):
        return [r for c in value for r in references(c)]
    if kind == "asset":
        return [("asset", value["name"], value["uri"])]
    if kind == "uri_ref":
        return [("uri_ref", None, value)]
    return [(kind, value, None)]  # alias, name_ref

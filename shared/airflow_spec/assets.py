"""A DAG's assets as Sluice's scheduler reads them: the asset condition it is scheduled on
and every asset and alias it declares.

``schedule=[Asset(...)]``, ``Asset & Asset``, ``Asset | Asset``, ``AssetAlias`` and
``Asset.ref(name=...)``/``Asset.ref(uri=...)`` build Airflow's asset timetable; its
condition is walked into plain JSON (``condition_json``), which ``scheduler.assets``
evaluates against the queued events with :func:`evaluate`. ``AssetOrTimeSchedule``
is that condition plus its timetable, which ``shared.airflow_spec.timetables`` reads as
any other schedule. What Sluice cannot run fails at DAG load, naming the DAG and the
feature: ``AssetWatcher`` (event-driven scheduling from a trigger) and partitioned
asset timetables.

Condition JSON, one node each::

    {"asset": {"name": ..., "uri": ...}}   {"alias": name}
    {"name_ref": name}    {"uri_ref": uri}    {"all": [...]}    {"any": [...]}
"""

from __future__ import annotations

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
    for task in dag.tasks:
        for item in [*(task.inlets or ()), *(task.outlets or ())]:
            declared.add(item)
    return {"asset_condition": condition, "assets": list(declared.assets.values()),
            "asset_aliases": sorted(declared.aliases)}


@dataclass
class Declared:
    """The assets (name, uri, group, extra) and alias names a DAG names anywhere."""

    assets: dict[AssetKey, dict[str, Any]] = field(default_factory=dict)
    aliases: set[str] = field(default_factory=set)

    def add(self, item: Any) -> None:
        from airflow.sdk import Asset, AssetAlias

        if isinstance(item, Asset):
            self.assets.setdefault((item.name, item.uri), {
                "name": item.name, "uri": item.uri, "group": item.group,
                "extra": dict(item.extra or {})})
        elif isinstance(item, AssetAlias):
            self.aliases.add(item.name)


def condition_json(cond: Any, dag_id: str, declared: Declared | None = None) -> dict[str, Any]:
    """An SDK asset condition as condition JSON (raises :class:`SpecError` for watchers)."""
    from airflow.sdk import Asset, AssetAlias, AssetAll, AssetAny
    from airflow.sdk.definitions.asset import AssetNameRef, AssetUriRef

    declared = declared if declared is not None else Declared()
    if isinstance(cond, Asset):
        if cond.watchers:
            raise SpecError(f"DAG {dag_id!r}: schedule asset {cond.name!r} has watchers "
                            "(AssetWatcher): event-driven scheduling from a trigger is not "
                            "supported by Sluice")
        declared.add(cond)
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

"""The asset condition rules the scheduler applies (pure): Airflow's AssetEvaluator."""

from __future__ import annotations

from shared.airflow_spec.assets import Resolver, evaluate, references

A = {"asset": {"name": "a", "uri": "s3://x/a"}}
B = {"asset": {"name": "b", "uri": "s3://x/b"}}
KA, KB = ("a", "s3://x/a"), ("b", "s3://x/b")


def test_an_asset_holds_when_it_has_queued_events():
    assert evaluate(A, {KA})
    assert not evaluate(A, {KB})
    assert not evaluate(A, set())


def test_and_waits_for_every_asset_or_for_any():
    both, either = {"all": [A, B]}, {"any": [A, B]}
    assert not evaluate(both, {KA}) and evaluate(both, {KA, KB})
    assert evaluate(either, {KA}) and evaluate(either, {KB}) and not evaluate(either, set())


def test_nested_conditions_combine_as_written():
    cond = {"any": [{"all": [A, B]}, {"asset": {"name": "c", "uri": "c"}}]}  # (a & b) | c
    assert not evaluate(cond, {KA})
    assert evaluate(cond, {KA, KB})
    assert evaluate(cond, {("c", "c")})


def test_a_key_is_name_and_uri_together():
    assert not evaluate(A, {("a", "s3://other")})


def test_an_alias_holds_when_an_asset_it_resolved_to_is_queued():
    cond = {"alias": "daily"}
    resolver = Resolver(alias_assets={"daily": [KB]})
    assert evaluate(cond, {KB}, resolver)
    assert not evaluate(cond, {KA}, resolver)
    assert not evaluate(cond, {KB})  # an alias that resolved to nothing yet holds nothing


def test_references_resolve_by_name_or_uri():
    resolver = Resolver(by_name={"a": KA}, by_uri={"s3://x/b": KB})
    assert evaluate({"name_ref": "a"}, {KA}, resolver)
    assert evaluate({"uri_ref": "s3://x/b"}, {KB}, resolver)
    assert not evaluate({"name_ref": "unknown"}, {KA}, resolver)


def test_references_list_what_queues_the_dag():
    cond = {"all": [A, {"any": [{"alias": "daily"}, {"name_ref": "n"}, {"uri_ref": "u"}]}]}
    assert references(cond) == [("asset", "a", "s3://x/a"), ("alias", "daily", None),
                                ("name_ref", "n", None), ("uri_ref", None, "u")]
    assert references(None) == []

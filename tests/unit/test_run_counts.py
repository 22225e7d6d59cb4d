"""The per-run instance counts a scheduler keeps between passes (scheduler/counts.py)."""

from __future__ import annotations

from scheduler.counts import CountCache, RunCounts


def test_an_instance_moves_between_counts_and_is_counted_once():
    run = RunCounts(epoch=0, xmin=10)
    run.set(1, "t", None)
    run.set(2, "t", None)
    run.set(1, "t", "queued")
    run.set(1, "t", "queued")  # read again: no change
    run.set(1, "t", "success")
    assert dict(run.counts["t"]) == {None: 1, "success": 1}


def test_a_whole_read_replaces_what_was_kept_and_copies_are_the_callers():
    cache = CountCache()
    cache.read(7, epoch=0, whole=True, xmin=5, changes=[(1, "a", None), (2, "b", "running")])
    cache.committed()
    copy = cache.counts(7)
    copy["a"][None] += 5
    assert dict(cache.counts(7)["a"]) == {None: 1}
    assert cache.since(7) == (5, 0)
    cache.read(7, epoch=1, whole=True, xmin=9, changes=[(1, "a", "success")])
    assert {t: dict(c) for t, c in cache.counts(7).items()} == {"a": {"success": 1}}
    assert cache.since(7) == (9, 1)


def test_reads_of_a_transaction_that_did_not_commit_are_dropped():
    cache = CountCache()
    cache.read(1, epoch=0, whole=True, xmin=5, changes=[(1, "a", None)])
    cache.committed()
    cache.read(1, epoch=0, whole=False, xmin=6, changes=[(1, "a", "queued")])
    cache.read(2, epoch=0, whole=True, xmin=6, changes=[(3, "a", None)])
    cache.abort()
    assert cache.since(1) == (None, -1) and cache.since(2) == (None, -1)
    assert cache.tasks(1) == set()

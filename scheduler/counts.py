"""Each active run's instance counts, kept between passes, so a pass reads only what changed.

A pass decides a run from its instance counts per (task, state). Counting them in
the database costs the run's size every pass: a 100,000-way mapped task, passed over
each time a few instances end, would count 100,000 rows thousands of times. Here each
run's instances are read whole once, then only those whose state changed since the
previous read (``read_runs``: PostgreSQL stamps each change with its transaction id,
and a read asks for every stamp at or above the oldest transaction open at the
previous read, so a transaction that commits late is read late, never missed). A
deleted instance bumps its run's ``ti_epoch``, and a run of another epoch is read
whole again. Re-reading a change is harmless: an instance's state is set, not added.

What a pass read inside a transaction that did not commit (its own writes included)
is dropped (``abort``): the next pass reads those runs whole.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from scheduler.decide import StateCounts


@dataclass(slots=True)
class RunCounts:
    """One run: each instance's (task, state) and their counts, as of ``xmin``."""

    epoch: int
    xmin: int
    states: dict[int, tuple[str, str | None]] = field(default_factory=dict)
    counts: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))

    def set(self, ti_id: int, task_id: str, state: str | None) -> None:
        old = self.states.get(ti_id)
        if old == (task_id, state):
            return
        if old is not None:
            counter = self.counts[old[0]]
            counter[old[1]] -= 1
            if counter[old[1]] <= 0:
                del counter[old[1]]
        self.states[ti_id] = (task_id, state)
        self.counts[task_id][state] += 1


class CountCache:
    """The counts of the runs this scheduler passed over; valid across passes that committed."""

    def __init__(self) -> None:
        self.runs: dict[int, RunCounts] = {}
        self._open: set[int] = set()  # runs read in the transaction now open

    def since(self, run_pk: int) -> tuple[int | None, int]:
        """What ``read_runs`` reads this run from: the previous read's xmin (None: whole)
        and the epoch it was read at."""
        entry = self.runs.get(run_pk)
        if entry is None:
            return None, -1
        return entry.xmin, entry.epoch

    def read(self, run_pk: int, epoch: int, whole: bool, xmin: int,
             changes: list[tuple[int, str, str | None]]) -> None:
        """Apply one ``read_runs`` answer for a run (its 'run' row and 'change' rows)."""
        self._open.add(run_pk)
        entry = self.runs.get(run_pk)
        if whole or entry is None:
            entry = self.runs[run_pk] = RunCounts(epoch, xmin)
        entry.epoch, entry.xmin = epoch, xmin
        for ti_id, task_id, state in changes:
            entry.set(ti_id, task_id, state)

    def counts(self, run_pk: int) -> StateCounts:
        """A copy of the run's counts (task -> state -> instances), the caller's to change."""
        entry = self.runs.get(run_pk)
        out: StateCounts = defaultdict(Counter)
        if entry is not None:
            for task_id, counter in entry.counts.items():
                if counter:
                    out[task_id] = Counter(counter)
        return out

    def kept(self, run_pk: int) -> dict[str, Counter] | None:
        """The run's counts as kept (not a copy: read only), or None if it was never read."""
        entry = self.runs.get(run_pk)
        return entry.counts if entry is not None else None

    def tasks(self, run_pk: int) -> set[str]:
        entry = self.runs.get(run_pk)
        return set(entry.counts) if entry is not None else set()

    def committed(self) -> None:
        """The transaction the reads were made in committed: they stand."""
        self._open.clear()

    def abort(self) -> None:
        """The transaction did not commit: forget the runs read in it."""
        for run_pk in self._open:
            self.runs.pop(run_pk, None)
        self._open.clear()

    def forget(self, run_pk: int) -> None:
        """The run ended or is no longer active."""
        self.runs.pop(run_pk, None)
        self._open.discard(run_pk)

    def clear(self) -> None:
        """Forget everything (the database connection was lost: what it saw may not stand)."""
        self.runs.clear()
        self._open.clear()

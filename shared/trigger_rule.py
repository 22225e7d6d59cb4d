"""Trigger rules: when a task may run, given the states of its direct upstreams.

Names and values match Airflow's ``TriggerRule`` so DAG files and serialized DAGs
interchange. The decision logic lives in :mod:`shared.state.trigger_rules`.
"""

from __future__ import annotations

import enum


class TriggerRule(str, enum.Enum):  # noqa: UP042 - mirrors Airflow; str() overridden below
    """A task's trigger rule; the value is the string Airflow uses."""

    ALL_SUCCESS = "all_success"
    ALL_FAILED = "all_failed"
    ALL_DONE = "all_done"
    ALL_DONE_SETUP_SUCCESS = "all_done_setup_success"
    ONE_SUCCESS = "one_success"
    ONE_FAILED = "one_failed"
    ONE_DONE = "one_done"
    NONE_FAILED = "none_failed"
    NONE_FAILED_MIN_ONE_SUCCESS = "none_failed_min_one_success"
    NONE_SKIPPED = "none_skipped"
    ALL_SKIPPED = "all_skipped"
    ALWAYS = "always"
    ALL_DONE_MIN_ONE_SUCCESS = "all_done_min_one_success"

    @classmethod
    def is_valid(cls, value: object) -> bool:
        """True iff ``value`` is a member or the string value of one (never raises)."""
        return isinstance(value, str) and value in cls.all_triggers()

    @classmethod
    def all_triggers(cls) -> set[str]:
        """Every rule's string value."""
        return {member.value for member in cls}

    def __str__(self) -> str:
        return self.value

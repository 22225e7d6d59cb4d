"""The restart delay of ``sluice standalone``'s daemons and embedded servers."""

from __future__ import annotations

from shared.standalone import RestartBackoff


def test_the_delay_doubles_while_a_process_keeps_dying_young() -> None:
    backoff = RestartBackoff(first_s=1.0, max_s=8.0, healthy_s=60.0)
    assert [backoff.after_exit(ran_for_s=0.5) for _ in range(6)] == [1, 2, 4, 8, 8, 8]


def test_the_delay_starts_over_after_a_healthy_run() -> None:
    backoff = RestartBackoff(first_s=1.0, max_s=30.0, healthy_s=60.0)
    for _ in range(5):
        backoff.after_exit(ran_for_s=2.0)
    assert backoff.after_exit(ran_for_s=60.0) == 1.0  # ran a minute: not punished
    assert backoff.after_exit(ran_for_s=59.0) == 2.0  # then dying young doubles again
    assert backoff.after_exit(ran_for_s=3600.0) == 1.0


def test_defaults() -> None:
    backoff = RestartBackoff()
    assert (backoff.first_s, backoff.max_s, backoff.healthy_s) == (1.0, 30.0, 60.0)
    assert backoff.after_exit(ran_for_s=0.0) == 1.0

"""A greenback portal that a sleeping trigger does not pay for.

Airflow gives every trigger a greenback portal, so a trigger's ``async def run()`` may call the
SDK's sync methods (``Connection.get``, ``get_dr_count``...), which reach the triggerer through
``greenback.await_``. ``greenback.ensure_portal()`` runs the task's coroutine inside one
long-lived greenlet: each sleeping trigger keeps a greenlet with its saved C stack, ~7.5 KB
measured, 0.6 GiB at 100,000 sleeping triggers.

:func:`run_with_portal` runs each step of the coroutine (from one event-loop wake-up to the next
``await`` that suspends) in a fresh greenlet that ends with the step. Only a step suspended inside
``greenback.await_()`` keeps its greenlet, for as long as that await lasts. The task is entered in
greenback's own table, as ``greenback.with_portal_run`` enters it, so ``greenback.await_``,
``has_portal`` and ``ensure_portal`` work unchanged inside. That table is greenback's private
``_impl.task_portals`` (greenback 1.x, pinned in ``pyproject.toml``); the tests call the SDK's
sync methods through this portal.
"""
from __future__ import annotations

import asyncio
import os
import types
from collections.abc import Coroutine, Generator
from functools import partial
from typing import Any, TypeVar

T = TypeVar("T")


def _enabled() -> bool:
    """Whether triggers get a portal: yes, unless ``AIRFLOW_DISABLE_GREENBACK_PORTAL`` is true
    (Airflow's switch, with Airflow's meaning)."""
    return os.environ.get("AIRFLOW_DISABLE_GREENBACK_PORTAL", "").lower() != "true"


@types.coroutine
def run_with_portal(coro: Coroutine[Any, Any, T]) -> Generator[Any, Any, T]:
    """``await coro`` with a portal for ``greenback.await_`` (none when :func:`_enabled` says
    no, no second one when the task has one already).

    Each step of ``coro`` runs in a fresh greenlet and passes its yield to the event loop; the
    step's end ends its greenlet. A step inside ``greenback.await_`` switches back here with
    ``(value to yield, greenlet to resume)``, and that greenlet gets the loop's answer next.
    One generator, no second frame: at 100,000 sleeping triggers each frame held is ~40 MB.
    """
    import greenlet
    import outcome
    from greenback._impl import task_portals

    task = asyncio.current_task()
    if not _enabled() or task in task_portals:
        return (yield from coro.__await__())
    portal = task_portals[task] = greenlet.getcurrent()
    try:
        sent, thrown = None, None  # what the loop answered the last yield
        waiting = None  # a step's greenlet suspended inside greenback.await_()
        while True:
            if waiting is not None:  # it takes an outcome, as greenback.await_ expects
                answer = outcome.Value(sent) if thrown is None else outcome.Error(thrown)
                step, switch = waiting, partial(waiting.switch, answer)
            else:
                step = greenlet.greenlet(partial(coro.send, sent) if thrown is None
                                         else partial(coro.throw, thrown))
                step.gr_context = portal.gr_context  # the task's contextvars in the step
                switch = step.switch
            sent = thrown = answer = None
            try:
                got = _switch(switch)
            except StopIteration as end:
                return end.value
            yielded, waiting = (got, None) if step.dead else got
            step = switch = got = None  # a sleeping task keeps no ended greenlet
            try:
                sent = yield yielded
            except BaseException as exc:  # noqa: BLE001 - thrown into the task: on to coro
                thrown = exc
    finally:
        del task_portals[task]


def _switch(switch):
    """``switch()`` from a frame of its own: greenlet gives the frame it leaves a frame object,
    which would otherwise stay with each sleeping task's generator (~300 bytes)."""
    return switch()


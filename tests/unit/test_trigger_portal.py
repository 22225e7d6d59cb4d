"""The triggers' greenback portal (``triggerer.portal``): what ``greenback.ensure_portal``
gives a task, without a greenlet held by each sleeping task."""

from __future__ import annotations

import asyncio
import contextvars
import gc

import anyio
import greenback
import greenlet
import pytest

from triggerer.portal import run_with_portal

VAR = contextvars.ContextVar("VAR", default="unset")


def sync_call(value):
    """A sync function reaching async code, as the SDK's ``SUPERVISOR_COMMS.send`` does."""
    async def answer():
        await asyncio.sleep(0.001)
        return (value, VAR.get())

    return greenback.await_(answer())


async def test_sync_code_awaits_through_the_portal_with_the_tasks_context():
    async def body():
        VAR.set("in the task")
        await asyncio.sleep(0)
        first = sync_call(1)
        await asyncio.sleep(0.001)
        return first, sync_call(2), greenback.has_portal(), VAR.get()

    assert not greenback.has_portal()
    got = await asyncio.create_task(run_with_portal(body()))
    assert got == ((1, "in the task"), (2, "in the task"), True, "in the task")
    assert not greenback.has_portal()


async def test_errors_cross_the_portal_both_ways():
    def sync_fails():
        async def fails():
            await asyncio.sleep(0)
            raise KeyError("from async")

        try:
            greenback.await_(fails())
        except KeyError as exc:
            raise ValueError(f"caught {exc}") from exc

    async def body():
        await asyncio.sleep(0)
        sync_fails()

    with pytest.raises(ValueError, match="caught 'from async'"):
        await run_with_portal(body())


async def test_the_handled_exception_survives_steps_in_other_greenlets():
    """``sys.exc_info()`` and a bare ``raise`` after awaits inside ``except``: the coroutine
    keeps its exception state whichever greenlet runs its next step."""
    import sys

    async def body():
        try:
            raise KeyError("first")
        except KeyError:
            await asyncio.sleep(0)
            sync_call(7)
            assert sys.exc_info()[0] is KeyError
            raise

    with pytest.raises(KeyError, match="first"):
        await run_with_portal(body())


@pytest.mark.parametrize("inside_await_", [False, True])
async def test_a_cancelled_task_is_cancelled_where_it_waits(inside_await_):
    ended = []
    started = asyncio.Event()

    async def body():
        started.set()  # nothing yields between here and the wait
        try:
            if inside_await_:
                greenback.await_(asyncio.sleep(60))
            else:
                await asyncio.sleep(60)
        except asyncio.CancelledError:
            ended.append("cancelled")
            raise

    task = asyncio.create_task(run_with_portal(body()))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ended == ["cancelled"]


async def test_anyio_timeouts_and_shields_inside():
    async def body():
        with anyio.move_on_after(0.01) as scope:
            greenback.await_(anyio.sleep(60))
        with anyio.CancelScope(shield=True):
            sync_call(3)
        return scope.cancelled_caught

    assert await run_with_portal(body()) is True


async def test_nested_portals_and_ensure_portal_inside_are_one_portal():
    async def inner():
        await greenback.ensure_portal()
        return sync_call(4)

    async def outer():
        return await run_with_portal(inner())

    assert await run_with_portal(outer()) == (4, "unset")


async def test_sleeping_tasks_hold_no_greenlet():
    """What makes the portal cheap: between steps only the loop's own greenlet exists, however
    many tasks have a portal (``greenback.ensure_portal`` keeps one greenlet per task)."""
    release = asyncio.Event()

    async def body():
        sync_call(5)
        await release.wait()
        return sync_call(6)

    tasks = [asyncio.create_task(run_with_portal(body())) for _ in range(50)]
    with anyio.fail_after(10):  # every task past its first sync call, waiting on release
        while len(release._waiters) < 50:
            await asyncio.sleep(0.01)
    greenlets = [o for o in gc.get_objects() if issubclass(type(o), greenlet.greenlet)]
    assert greenlets == [greenlet.getcurrent()]
    release.set()
    assert await asyncio.gather(*tasks) == [(6, "unset")] * 50


async def test_airflows_switch_turns_the_portal_off(monkeypatch):
    """``AIRFLOW_DISABLE_GREENBACK_PORTAL=true``: no portal, as on Airflow; async code runs."""
    monkeypatch.setenv("AIRFLOW_DISABLE_GREENBACK_PORTAL", "true")

    async def body():
        await asyncio.sleep(0)
        return greenback.has_portal()

    assert await asyncio.create_task(run_with_portal(body())) is False
    with pytest.raises(RuntimeError, match="greenback portal"):
        await asyncio.create_task(run_with_portal(_calls_sync()))


async def _calls_sync():
    return sync_call(8)

"""A runner process's lifetime: it leaves quietly when its worker stops it."""

from __future__ import annotations

import anyio
import pytest

from worker.supervisor import RunnerProcess

pytestmark = pytest.mark.timeout(30)


async def test_a_runner_the_worker_stops_exits_on_its_own_not_by_its_death_watch(tmp_path):
    """Closing the pipe is how the worker stops an idle runner (recycling, shutdown).

    The runner's parent watch sees that hang-up too, but the worker is still its
    parent: the runner exits with code 0 on end of input, never SIGKILLed.
    """
    runner = RunnerProcess(tmp_path, 1024)
    await runner.start()
    proc = runner.proc
    await proc.stdin.aclose()
    with anyio.fail_after(10):
        code = await proc.wait()
    assert code == 0
    await runner.kill()

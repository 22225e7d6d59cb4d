"""The restart delay of ``sluice standalone``'s daemons and embedded servers."""

from __future__ import annotations

import anyio
from structlog.testing import capture_logs

from shared.standalone import RestartBackoff, _keep_serving


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


def test_an_embedded_servers_first_restart_is_immediate() -> None:
    """Its port is free while it is down: no second is left to another local user."""
    backoff = RestartBackoff(immediate_first=True, first_s=1.0, max_s=8.0, healthy_s=60.0)
    assert [backoff.after_exit(ran_for_s=0.5) for _ in range(4)] == [0, 1, 2, 4]
    assert backoff.after_exit(ran_for_s=600.0) == 0  # after a healthy run: at once again
    assert backoff.after_exit(ran_for_s=0.5) == 1


class FlakyServer:
    """An embedded server as ``_keep_serving`` sees it: dies once, its first restart fails
    with an OSError (a Popen or a prepare that failed), its second works."""

    name, pid, port = "valkey", 1, 1

    def __init__(self) -> None:
        self.restarts: list[float] = []
        self.up = anyio.Event()
        self.exits = 0

    async def wait_exit(self) -> int:
        self.exits += 1
        if self.exits > 2:
            await anyio.sleep_forever()
        return 1

    async def restart(self) -> None:
        self.restarts.append(anyio.current_time())
        if len(self.restarts) == 1:
            raise OSError(24, "Too many open files")
        self.up.set()


async def test_a_restart_that_raises_oserror_is_logged_and_tried_again() -> None:
    server, stopping = FlakyServer(), anyio.Event()
    died_at = anyio.current_time()
    with capture_logs() as logs:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(_keep_serving, server, stopping)
                await server.up.wait()
                tg.cancel_scope.cancel()
    assert server.restarts[0] - died_at < 0.5  # the first restart: at once
    assert server.restarts[1] - server.restarts[0] >= 1.0  # then the backoff
    [failed] = [e for e in logs if e["event"] == "embedded_server_restart_failed"]
    assert failed["error"] == "OSError: [Errno 24] Too many open files"

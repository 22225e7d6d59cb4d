"""What the three daemons share: systemd notify, signals, the shutdown sequence, and
keeping their credentials from the user code they run.

First SIGTERM/SIGINT sets ``stopping`` (stop claiming, drain within the grace
period, hand back the rest); a second one cancels everything at once.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Mapping

import anyio
import structlog

log = structlog.get_logger()

#: Set by ``sluice standalone`` for its children: the pid they must not outlive.
SUPERVISOR_PID_ENV = "SLUICE_SUPERVISOR_PID"
_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4

#: Other variables user code must not inherit: the password libpq clients (asyncpg) read
#: for Sluice's database, and systemd's channel to the daemon itself.
DAEMON_ONLY = frozenset({"PGPASSWORD", "NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC"})


def task_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment user code starts with (task processes, DAG-file parsing): the
    daemon's, without Sluice's settings (``SLUICE_*``: database and Redis URLs with their
    passwords, the home) and credentials.

    A task body runs in the task process and BashOperator commands inherit it, so
    whatever is here a task can print to its log or send anywhere. PATH, HOME,
    ``AIRFLOW_*`` (connections, variables) and the rest of the user's setup stay.
    """
    return {name: value for name, value in environ.items()
            if name not in DAEMON_ONLY and not name.startswith("SLUICE_")}


def protect_process() -> None:
    """Make this process non-dumpable (``prctl(PR_SET_DUMPABLE, 0)``; Linux only).

    Tasks run as the daemons' user; without this a task could read the worker's
    ``/proc/<pid>/environ`` (the database URL with its password), its memory and
    its open files. Non-dumpable, those belong to root. ``execve`` makes a process
    dumpable again: the task and parsing processes Sluice execs hold no credentials.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)


def die_with_supervisor() -> None:
    """Ask for SIGTERM (a drain) when the supervising ``sluice standalone`` dies.

    Linux only (``prctl(PR_SET_PDEATHSIG)``); elsewhere, and when the daemon
    was not started by a supervisor, this does nothing.
    """
    supervisor = os.environ.get(SUPERVISOR_PID_ENV)
    if not supervisor or not sys.platform.startswith("linux"):
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(supervisor):  # it died before the prctl
        os.kill(os.getpid(), signal.SIGTERM)


def sd_notify(*states: str) -> bool:
    """Send ``READY=1``-style lines to ``$NOTIFY_SOCKET``; a no-op without it."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(address)
            sock.sendall("\n".join(states).encode())
        except OSError as exc:
            log.warning("sd_notify_failed", error=str(exc))
            return False
    return True


def watchdog_interval_s() -> float | None:
    """Half of systemd's ``WatchdogSec`` (``$WATCHDOG_USEC``), when set for this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and int(pid) != os.getpid()):
        return None
    return int(usec) / 2_000_000


class Lifecycle:
    """The stop request every loop of a daemon races against."""

    def __init__(self, name: str):
        self.name = name
        self.stopping = anyio.Event()
        self.cancel_scope: anyio.CancelScope | None = None

    async def watch_signals(self, scope: anyio.CancelScope) -> None:
        die_with_supervisor()
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                if not self.stopping.is_set():
                    log.info("shutdown_requested", daemon=self.name, signal=signum.name)
                    sd_notify("STOPPING=1")
                    self.stopping.set()
                else:
                    log.warning("shutdown_forced", daemon=self.name)
                    scope.cancel()
                    return

    async def watchdog(self, status: callable) -> None:  # type: ignore[valid-type]
        """Ping systemd from the main loop's task group; a wedged loop stops the pings."""
        interval = watchdog_interval_s()
        if interval is None:
            return
        while not self.stopping.is_set():
            sd_notify("WATCHDOG=1", f"STATUS={status()}")
            with anyio.move_on_after(interval):
                await self.stopping.wait()

"""``sluice standalone``: everything on one machine, for trying Sluice and for development.

Starts an embedded PostgreSQL and Valkey in ``$SLUICE_HOME`` when no URLs are
configured, applies migrations, writes ``standalone.json`` (mode 0600: it holds
the passwords, so other ``sluice`` commands of the same user find the
services) and runs the scheduler, triggerer, worker and api-server as four
child processes (the api-server prints the password it generates for
``admin`` at its first start). SIGINT/SIGTERM stops them all cleanly. A daemon or an embedded
server that dies on its own is reaped and restarted, after a delay that
doubles while it keeps dying young and starts over once it has run healthy.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import structlog

from shared.config import Settings, make_private, standalone_file, write_private
from shared.daemon import SUPERVISOR_PID_ENV
from shared.dags_folder import require_dags_folder
from shared.db import migrate_url

log = structlog.get_logger()
DAEMONS = ("scheduler", "triggerer", "worker", "apiserver")
STOP_TIMEOUT_S = 40.0


@dataclass
class RestartBackoff:
    """How long to wait before restarting a process that exited.

    The delay doubles from ``first_s`` up to ``max_s`` while the process keeps
    dying young, and is back to ``first_s`` once a run lasted ``healthy_s``:
    a crash an hour after the last one is not punished for it. With
    ``immediate_first``, the first exit (or the first after a healthy run) is
    restarted at once: an embedded server's port is not left free for another
    local user to take while the daemons reconnect with the password.
    """

    first_s: float = 1.0
    max_s: float = 30.0
    healthy_s: float = 60.0
    immediate_first: bool = False
    _next_s: float = field(init=False, repr=False)
    _young_exits: int = field(init=False, repr=False, default=0)

    def __post_init__(self) -> None:
        self._next_s = self.first_s

    def after_exit(self, ran_for_s: float) -> float:
        """The delay before the next start, given how long the last run lasted."""
        if ran_for_s >= self.healthy_s:
            self._next_s = self.first_s
            self._young_exits = 0
        self._young_exits += 1
        if self.immediate_first and self._young_exits == 1:
            return 0.0
        delay = self._next_s
        self._next_s = min(delay * 2, self.max_s)
        return delay


async def serve(settings: Settings) -> int:
    require_dags_folder(settings.dags_folder)
    _private_home(settings)
    embedded = None
    db_url, redis_url = settings.database_url, settings.redis_url
    configured_from_file = standalone_file(settings.home).exists()
    if configured_from_file or not (db_url and redis_url):
        from shared.embedded import start_embedded

        embedded = start_embedded(settings.home / "services", postgres=not os.environ.get(
            "SLUICE_DATABASE_URL"), redis=not os.environ.get("SLUICE_REDIS_URL"))
        db_url = os.environ.get("SLUICE_DATABASE_URL") or embedded.database_url
        redis_url = os.environ.get("SLUICE_REDIS_URL") or embedded.redis_url
    try:
        await migrate_url(db_url)
        write_private(standalone_file(settings.home), json.dumps(
            {"database_url": db_url, "redis_url": redis_url, "pid": os.getpid()}))
        env = {**os.environ, "SLUICE_DATABASE_URL": db_url, "SLUICE_REDIS_URL": redis_url,
               "SLUICE_DAGS_FOLDER": str(settings.dags_folder.resolve()),
               "SLUICE_HOME": str(settings.home),
               # a try-it installation: new DAGs start unpaused unless the user says otherwise
               "SLUICE_DAGS_ARE_PAUSED_AT_CREATION": os.environ.get(
                   "SLUICE_DAGS_ARE_PAUSED_AT_CREATION", "false")}
        log.info("standalone_ready", dags_folder=str(settings.dags_folder),
                 hint=f"SLUICE_HOME={settings.home} sluice dags trigger DAG_ID --wait",
                 api_server=_api_url())
        await _supervise(env, embedded.servers if embedded is not None else ())
    finally:
        standalone_file(settings.home).unlink(missing_ok=True)
        if embedded is not None:
            embedded.stop()
        log.info("standalone_stopped")
    return 0


def _api_url() -> str:
    """Where the api-server child listens (``SLUICE_API_HOST`` / ``SLUICE_API_PORT``)."""
    from apiserver.config import ApiSettings

    api = ApiSettings()
    return f"http://{api.api_host}:{api.api_port}"


def _private_home(settings: Settings) -> None:
    """``$SLUICE_HOME`` 0700, and what earlier versions wrote there made private.

    New files are private through the umask (``keep_files_private``); this
    takes care of a home, standalone.json and task logs created before.
    """
    home = settings.home
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    make_private(home)
    if standalone_file(home).exists():
        make_private(standalone_file(home))
    logs = settings.logs_dir
    if logs.is_dir() and logs.resolve().is_relative_to(home.resolve()):
        for root, dirs, files in os.walk(logs):
            for name in (".", *dirs, *files):
                make_private(Path(root, name))


async def _supervise(env: dict, servers: Sequence = ()) -> None:
    """Run the daemons until SIGINT/SIGTERM, then stop each with one SIGTERM (a drain).

    The daemons run in a session of their own, so a terminal's Ctrl-C (SIGINT
    to the whole foreground process group) reaches only this supervisor: each
    daemon then sees exactly one stop request and drains, instead of taking
    the supervisor's SIGTERM as a second, forcing signal. A second Ctrl-C
    forwards a second SIGTERM, which stops them at once. They die with the
    supervisor too (``SLUICE_SUPERVISOR_PID``, see ``shared.daemon``).
    The embedded ``servers`` are watched the same way, and stopped by the
    caller once the daemons are gone.
    """
    stopping = anyio.Event()
    procs: dict[str, anyio.abc.Process] = {}
    env = {**env, SUPERVISOR_PID_ENV: str(os.getpid())}

    async def keep_running(name: str) -> None:
        backoff = RestartBackoff()
        while not stopping.is_set():
            started = anyio.current_time()
            proc = await anyio.open_process([sys.executable, "-m", name], env=env,
                                            stdin=None, stdout=None, stderr=None,
                                            start_new_session=True)
            procs[name] = proc
            code = await proc.wait()
            if stopping.is_set():
                return
            delay = backoff.after_exit(anyio.current_time() - started)
            log.error("daemon_exited", daemon=name, code=code, restart_in_s=delay)
            with anyio.move_on_after(delay):
                await stopping.wait()

    def signal_all() -> None:
        for proc in procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)

    async with anyio.create_task_group() as tg:
        for name in DAEMONS:
            tg.start_soon(keep_running, name)
        for server in servers:
            tg.start_soon(_keep_serving, server, stopping)
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                break
            stopping.set()
            log.info("standalone_stopping")
            signal_all()
            with anyio.move_on_after(STOP_TIMEOUT_S):
                async with anyio.create_task_group() as waiting:
                    waiting.start_soon(_forward_second_signal, signals, signal_all,
                                       waiting.cancel_scope)
                    for proc in procs.values():
                        await proc.wait()
                    waiting.cancel_scope.cancel()
        for proc in procs.values():
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        tg.cancel_scope.cancel()  # the embedded servers' watchers


async def _keep_serving(server, stopping: anyio.Event) -> None:
    """Reap an embedded server that died and start it again on its port.

    The daemons hold its URL, so they reconnect to the new process.
    """
    backoff = RestartBackoff(immediate_first=True)
    started = anyio.current_time()
    while True:
        code = await server.wait_exit()
        if stopping.is_set():
            return
        delay = backoff.after_exit(anyio.current_time() - started)
        log.error("embedded_server_exited", server=server.name, code=code, restart_in_s=delay)
        with anyio.move_on_after(delay):
            await stopping.wait()
        if stopping.is_set():
            return
        started = anyio.current_time()
        try:
            await server.restart()
        except (RuntimeError, OSError) as exc:  # tried again after the next delay
            log.error("embedded_server_restart_failed", server=server.name,
                      error=f"{type(exc).__name__}: {exc}"[-2000:])
        else:
            log.info("embedded_server_restarted", server=server.name, pid=server.pid,
                     port=server.port)


async def _forward_second_signal(signals, signal_all, scope: anyio.CancelScope) -> None:
    async for _ in signals:
        log.warning("standalone_stopping_now")
        signal_all()
        return

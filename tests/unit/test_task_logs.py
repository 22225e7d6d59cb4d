"""Task-log pieces on their own: tokens, lines, the log server's refusals, a slot's output
capture, and the connection-error counts /metrics reports."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import anyio
import asyncpg
import pytest
import structlog

from shared import httpside, metrics
from shared.logging import configure_logging
from shared.tasklogs import (
    LogAuthError,
    mint_token,
    parse_line,
    read_chunk,
    relative_path,
    render,
    verify_token,
)
from worker.logserver import log_routes

KEY, OLD_KEY = b"k" * 32, b"o" * 32
REL = relative_path("d", "manual__2026-01-01T00:00:00+00:00", "t", 3, 1)


def test_paths_are_airflow_s_layout():
    assert relative_path("d", "r", "t", -1, 2) == "dag_id=d/run_id=r/task_id=t/attempt=2.log"
    assert REL == "dag_id=d/run_id=manual__2026-01-01T00:00:00+00:00/task_id=t/map_index=3/attempt=1.log"


def test_a_token_opens_one_file_for_a_while():
    token = mint_token(KEY, REL, ttl_s=60, now=1000.0)
    verify_token(token, [KEY], REL, now=1059.0)
    verify_token(token, [OLD_KEY, KEY], REL, now=1000.0)  # rotation: any configured key
    for keys, path, now, why in (([OLD_KEY], REL, 1000.0, "signature"),
                                 ([KEY], REL + "x", 1000.0, "another file"),
                                 ([KEY], REL, 1061.0, "expired")):
        with pytest.raises(LogAuthError, match=why):
            verify_token(token, keys, path, now=now)
    payload, _, signature = token.partition(".")
    with pytest.raises(LogAuthError):
        verify_token(payload.upper() + "." + signature, [KEY], REL, now=1000.0)


def test_lines_render_with_time_and_level_and_old_plain_lines_stay_readable():
    record = parse_line('{"timestamp":"2026-12-02T16:10:40.339517Z","level":"info",'
                        '"event":"hello","logger":"task.stdout","rows":3}')
    assert render(record) == "2026-12-02 16:10:40.339 INFO    hello rows=3"
    assert render(parse_line("a line written before lines had levels")) == \
        "a line written before lines had levels"


def test_a_chunk_is_whole_lines_only(tmp_path):
    path = tmp_path / "attempt=1.log"
    path.write_bytes(b"one\ntwo\nthr")
    piece = read_chunk(path, 0)
    assert (piece.data, piece.more) == (b"one\ntwo\n", False)
    assert read_chunk(path, 4, max_bytes=5).data == b"two\n"
    assert read_chunk(path, 0, max_bytes=5).more
    assert read_chunk(tmp_path / "none.log", 0) is None


async def test_the_log_server_is_never_open(tmp_path):
    logs = tmp_path / "logs"
    (logs / REL).parent.mkdir(parents=True)
    (logs / REL).write_text('{"event":"secret output"}\n')
    (tmp_path / "elsewhere.log").write_text("not a task log\n")
    listener = await httpside.listen("127.0.0.1", 0, setting="TEST_PORT", explicit=True)
    port = httpside.bound_port(listener)

    def get(path: str, token: str | None) -> tuple[int, bytes]:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/log/{urllib.parse.quote(path)}")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    async with anyio.create_task_group() as tg:
        tg.start_soon(httpside.serve, listener, log_routes(logs, [KEY]))
        results = [await anyio.to_thread.run_sync(get, path, token) for path, token in (
            (REL, mint_token(KEY, REL)), (REL, None), (REL, mint_token(OLD_KEY, REL)),
            (REL, mint_token(KEY, "dag_id=d/other.log")),
            ("../elsewhere.log", mint_token(KEY, "../elsewhere.log")),
            ("dag_id=d/missing.log", mint_token(KEY, "dag_id=d/missing.log")))]
        tg.cancel_scope.cancel()
    assert [status for status, _ in results] == [200, 401, 403, 403, 400, 404]
    assert results[0][1] == b'{"event":"secret output"}\n'
    assert all(b"secret" not in body and b"not a task log" not in body for _, body in results[1:])


async def test_an_explicit_port_in_use_stops_the_daemon_a_default_one_moves():
    taken = await httpside.listen("127.0.0.1", 0, setting="X", explicit=True)
    port = httpside.bound_port(taken)
    try:
        with pytest.raises(httpside.PortTaken, match=f"SLUICE_X_PORT={port}"):
            await httpside.listen("127.0.0.1", port, setting="SLUICE_X_PORT", explicit=True)
        moved = await httpside.listen("127.0.0.1", port, setting="SLUICE_X_PORT", explicit=False)
        assert httpside.bound_port(moved) != port
        await moved.aclose()
        assert await httpside.listen("127.0.0.1", -1, setting="X", explicit=True) is None
    finally:
        await taken.aclose()


def test_a_slots_output_becomes_timed_levelled_lines_of_the_current_try(tmp_path):
    """What a task prints, and what programs it starts write, are lines of its try's log
    (as a slot captures them); between tries they are the slot's own stderr."""
    log_file = tmp_path / "a" / "attempt=1.log"
    script = textwrap.dedent(f"""
        import os, subprocess, sys
        from worker import sdk_tasklog
        sink = sdk_tasklog.LogSink(os.dup(2))
        forwarders = sdk_tasklog.capture(sink)
        sink.open({str(log_file)!r})
        print("to stdout")
        print("to stderr", file=sys.stderr)
        subprocess.run(["sh", "-c", "echo from a child; echo child error >&2; printf no-newline"])
        for forwarder in forwarders:
            forwarder.drain()
        sink.close()
        print("between tries")
        for forwarder in forwarders:
            forwarder.drain()
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    records = [json.loads(x) for x in log_file.read_text().splitlines()]
    by_stream = {name: [(r["level"], r["event"]) for r in records if r["logger"] == name]
                 for name in ("task.stdout", "task.stderr")}  # two pipes: each in its order
    assert by_stream == {
        "task.stdout": [("info", "to stdout"), ("info", "from a child"), ("info", "no-newline")],
        "task.stderr": [("error", "to stderr"), ("error", "child error")]}
    assert len(records) == 5
    assert all(r["timestamp"].endswith("Z") for r in records)
    between = [json.loads(x) for x in out.stderr.splitlines() if x.startswith("{")]
    assert [r["event"] for r in between] == ["between tries"]  # the slot's own log, not the try's
    assert log_file.stat().st_mode & 0o777 == 0o600
    assert log_file.parent.stat().st_mode & 0o777 == 0o700


async def test_connection_errors_recovered_from_are_counted_by_kind():
    from redis.asyncio import Redis

    configure_logging(json=True, stream=io.StringIO())
    log = structlog.get_logger()
    before = dict(metrics._errors)
    try:
        await asyncpg.connect("postgresql://nobody@127.0.0.1:1/none", timeout=5)
    except OSError:
        log.warning("database_unreachable")
    client = Redis(host="127.0.0.1", port=1, socket_connect_timeout=5)
    try:
        await client.ping()
    except OSError:  # not the kind redis raises
        raise
    except Exception:  # noqa: BLE001 - redis' ConnectionError
        log.warning("redis_unreachable")
    finally:
        await client.aclose()
    try:
        raise ValueError("not a connection error")
    except ValueError:
        log.warning("something_else")
    log.info("no_exception")
    assert metrics._errors["database"] - before.get("database", 0) == 1
    assert metrics._errors["redis"] - before.get("redis", 0) == 1

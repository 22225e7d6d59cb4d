"""Log lines are capped: a huge field keeps its head and tail around a marker saying so."""

from __future__ import annotations

import io
import json
import logging
import time

import pytest
import structlog

from shared.logging import MAX_LINE_CHARS, configure_logging, redact

pytestmark = pytest.mark.timeout(60)

HUGE = 20 * 1024 * 1024


@pytest.fixture
def output():
    """A stream the process's logging writes to; the default configuration comes back after."""
    stream = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield stream
    structlog.reset_defaults()
    root.handlers[:], root.level = handlers, level


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_a_20_mb_field_is_capped_with_a_marker(output):
    configure_logging(json=True, stream=output)
    text = "task failed: " + "x" * HUGE + " postgresql://sluice:secret@db/sluice the end"
    structlog.get_logger().error("task_failed", error=text, dag_id="d")

    [line] = lines(output)
    assert len(line) <= MAX_LINE_CHARS
    doc = json.loads(line)
    assert doc["dag_id"] == "d" and doc["event"] == "task_failed"
    assert doc["error"].startswith("task failed: xxx")
    assert doc["error"].endswith("postgresql://sluice:***@db/sluice the end")
    assert " … [truncated 19.9 MB] … " in doc["error"]


def test_fields_that_are_only_big_together_share_the_line(output):
    configure_logging(json=True, stream=output)
    structlog.get_logger().info("many", a="a" * 50_000, b="b" * 50_000, conf={"k": "c" * 50_000},
                                small="kept whole")

    [line] = lines(output)
    doc = json.loads(line)
    assert len(line) <= MAX_LINE_CHARS
    assert doc["small"] == "kept whole"
    assert all("[truncated" in doc[k] for k in ("a", "b", "conf"))


def test_a_huge_exception_is_capped_as_json_and_on_a_terminal(output):
    for as_json in (True, False):
        configure_logging(json=as_json, stream=output)
        try:
            raise RuntimeError("boom " + "z" * HUGE)
        except RuntimeError:
            structlog.get_logger().exception("handler_raised")
    json_line, console = output.getvalue().split("\n", 1)
    assert len(json_line) <= MAX_LINE_CHARS
    assert "RuntimeError: boom zzz" in json.loads(json_line)["exception"]
    assert len(console) <= MAX_LINE_CHARS + 1024 and "[truncated 19.9 MB]" in console


def test_stdlib_logging_is_capped_too(output):
    configure_logging(json=True, stream=output)
    logging.getLogger("some.library").warning("payload %s", "p" * HUGE)

    [line] = lines(output)
    assert len(line) <= MAX_LINE_CHARS and "[truncated 19.9 MB]" in line


def test_redacting_a_huge_text_takes_linear_time():
    text = "a" * HUGE + " redis://:secret@host:6379/0"
    started = time.monotonic()
    assert redact(text).endswith(" redis://:***@host:6379/0")
    assert redact("://" * 1_000_000 + "x://u:p@h").endswith("x://u:***@h")
    assert time.monotonic() - started < 5

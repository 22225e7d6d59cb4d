"""structlog, configured once per process: JSON when not on a terminal.

Task-instance identity (dag_id, run_id, task_id, map_index, try_number) is
bound with ``structlog.contextvars.bound_contextvars`` by whoever handles a
task instance, so every line about it carries those keys.

A line is at most ``MAX_LINE_CHARS`` long: a huge field (a 20 MB exception
text) keeps its head and tail around ``… [truncated 19.9 MB] …``.
"""

from __future__ import annotations

import json as jsonlib
import logging
import re
import sys
import traceback

import structlog

from shared.textcap import cap_text

#: Longest log line written; longer events have their largest fields cut.
MAX_LINE_CHARS = 64 * 1024
#: Room kept for the timestamp, level and keys when fields share a line.
_LINE_ROOM = 1024
#: Tracebacks a terminal shows with rich; its layout is quadratic in a line's length
#: (6 s for a 20 KB message), so a bigger one is printed plain and capped.
_RICH_MAX_CHARS, _RICH_MAX_LINE = 16 * 1024, 1024

# Linear time: anchored on ``://`` (``[a-z][a-z0-9+.-]*://`` tried from every letter of
# a long run was quadratic, 15 s for 64 KB), and no part crosses a ``/`` (a URL's
# user and password cannot hold one unescaped), so no scan runs past the next ``://``.
_PASSWORD_IN_URL = re.compile(r"(?P<user>://[^:/@\s]*):[^/@\s]*@")


def redact(text: str) -> str:
    """Hide passwords embedded in URLs (``scheme://user:secret@host`` -> ``user:***@``)."""
    return _PASSWORD_IN_URL.sub(r"\g<user>:***@", text)


def _redact_processor(_logger, _name, event_dict):
    for key, value in event_dict.items():
        if isinstance(value, str) and "://" in value:
            event_dict[key] = redact(value)
    return event_dict


class CappedRenderer:
    """A renderer whose lines are at most ``MAX_LINE_CHARS``.

    Most lines are rendered once and measured. An oversize one (a huge field,
    many big ones, a traceback) is rendered again from its whole fields, its
    exception formatted as text, the fields sharing the line: small ones whole,
    the largest cut once around the marker (so it counts what was really cut).
    The line stays valid JSON. Redaction ran before on the whole texts (it is
    linear), so a password is never cut in two.
    """

    def __init__(self, renderer) -> None:
        self.renderer = renderer

    def __call__(self, logger, name, event_dict):
        original = dict(event_dict)  # the console renderer pops what it prints
        line = self.renderer(logger, name, event_dict)
        budget = MAX_LINE_CHARS - _LINE_ROOM
        while len(line) > MAX_LINE_CHARS and budget >= _LINE_ROOM:
            line = self.renderer(logger, name, _share_line(original, budget))
            budget //= 2  # escaping (``\uXXXX``, quotes) can outgrow the share
        return line


def _share_line(event_dict: dict, budget: int) -> dict:
    """The event with its fields cut so that together they fit ``budget`` characters."""
    event = structlog.processors.format_exc_info(None, "", dict(event_dict))
    texts = {k: v if isinstance(v, str) else _as_text(v) for k, v in event.items()}
    left, shares = budget, len(texts)
    for key, text in sorted(texts.items(), key=lambda kv: len(kv[1])):
        limit = max(left // shares, 0)
        if len(text) > limit:
            event[key] = cap_text(text, limit)
        left -= min(len(text), limit)
        shares -= 1
    return event


def _capped_exceptions(fancy):
    """A console exception formatter: ``fancy`` for ordinary tracebacks, capped plain text
    for huge ones."""

    def format_exception(sio, exc_info) -> None:
        plain = "".join(traceback.format_exception(*exc_info))
        if len(plain) <= _RICH_MAX_CHARS and max(map(len, plain.splitlines())) <= _RICH_MAX_LINE:
            fancy(sio, exc_info)
        else:
            sio.write("\n" + cap_text(plain, MAX_LINE_CHARS - _LINE_ROOM))

    return format_exception


def _as_text(value) -> str:
    if value is None or isinstance(value, bool | int | float):
        return str(value)
    try:
        return jsonlib.dumps(value, default=repr)
    except ValueError:  # a circular structure
        return repr(value)


def configure_logging(level: str = "INFO", *, json: bool | None = None, stream=None) -> None:
    """Configure structlog, and route stdlib logging through the same renderer.

    Sluice's own lines go straight from structlog to the stream: the stdlib
    ``logging`` detour (a ``LogRecord``, a handler and a formatter per line)
    cost a worker about as much as a database round trip per task instance.
    Libraries that log through ``logging`` get the same processors and renderer.
    """
    stream = stream or sys.stderr
    if json is None:
        json = not stream.isatty()
    from shared.metrics import count_connection_errors  # counts, for the daemons' /metrics

    shared = [
        count_connection_errors,
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact_processor,
    ]
    # JSON wants the traceback as a string field (redacted too); the console prints its own
    tail = ([structlog.processors.format_exc_info, _redact_processor,
             CappedRenderer(structlog.processors.JSONRenderer())] if json
            else [CappedRenderer(structlog.dev.ConsoleRenderer(
                colors=stream.isatty(),
                exception_formatter=_capped_exceptions(structlog.dev.default_exception_formatter)))])
    structlog.configure(
        processors=[*shared, *tail],
        logger_factory=structlog.WriteLoggerFactory(stream),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)

"""structlog, configured once per process: JSON when not on a terminal.

Task-instance identity (dag_id, run_id, task_id, map_index, try_number) is
bound with ``structlog.contextvars.bound_contextvars`` by whoever handles a
task instance, so every line about it carries those keys.
"""

from __future__ import annotations

import logging
import re
import sys

import structlog

_PASSWORD_IN_URL = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://[^:/@\s]*):[^@\s]*@", re.I)


def redact(text: str) -> str:
    """Hide passwords embedded in URLs (``scheme://user:secret@host`` -> ``user:***@``)."""
    return _PASSWORD_IN_URL.sub(r"\g<scheme>:***@", text)


def _redact_processor(_logger, _name, event_dict):
    for key, value in event_dict.items():
        if isinstance(value, str) and "://" in value:
            event_dict[key] = redact(value)
    return event_dict


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
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact_processor,
    ]
    # JSON wants the traceback as a string field; the console renderer prints its own
    tail = ([structlog.processors.format_exc_info, structlog.processors.JSONRenderer()] if json
            else [structlog.dev.ConsoleRenderer(colors=stream.isatty())])
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

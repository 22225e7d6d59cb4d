"""Texts kept to a size: the head and the tail, with a marker saying how much was cut.

A task can raise an exception whose message is megabytes long; stored whole it
bloats every read of its run and every log line that carries it. The start
(what went wrong) and the end (where) are what a reader needs.
"""

from __future__ import annotations

__all__ = ["MAX_ERROR_CHARS", "cap_error", "cap_text"]

#: Longest error text stored on a task instance or carried by a trigger failure.
MAX_ERROR_CHARS = 64 * 1024

_MARKER_ROOM = 40  # " … [truncated 1023.9 GB] … " fits


def cap_text(text: str, limit: int) -> str:
    """``text`` when it has at most ``limit`` characters; else at most ``limit`` characters:
    its head and tail around ``… [truncated 19.9 MB] …`` (the UTF-8 size of what was cut).
    A limit under 40 keeps only the marker."""
    if len(text) <= limit:
        return text
    keep = max(limit - _MARKER_ROOM, 0)
    head, tail = keep - keep // 2, keep // 2
    cut = text[head:len(text) - tail]
    marker = f" … [truncated {_size(len(cut.encode('utf-8', 'surrogatepass')))}] … "
    return text[:head] + marker + (text[len(text) - tail:] if tail else "")


def cap_error(text: str | None) -> str | None:
    """An error text as it may be stored (:data:`MAX_ERROR_CHARS`); ``None`` stays ``None``."""
    return None if text is None else cap_text(text, MAX_ERROR_CHARS)


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    for unit in ("KB", "MB", "GB"):
        n /= 1024
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}"
    raise AssertionError("unreachable")

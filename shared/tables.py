"""Tables for people: nothing a reader may copy is ever cut.

On a terminal a rich table whose cells wrap (``overflow="fold"``) instead of ending
in "…"; a column named in ``whole`` (a run id, a DAG id) keeps one line while the
terminal is wide enough, so it can be copied with one selection. Anywhere else (a
pipe, a file) plain lines, every value whole: rich would otherwise lay the table
out for 80 columns and cut what does not fit.

Cells are plain text, never rich markup: an error reading ``KeyError: [/x]`` is
printed as it is.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Sequence

from rich import box
from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

__all__ = ["on_terminal", "plain_lines", "print_lines", "print_notes", "print_table"]

#: A plain column is padded to its longest first line, up to this: a long value
#: (a return value, an error) pushes the rest of its own row right, not every row.
PLAIN_PAD_MAX = 40
_NARROWEST = 6  # what each other column keeps while a ``whole`` column is held on one line


def on_terminal() -> bool:
    return sys.stdout.isatty()


def print_lines(text: str, style: str = "") -> None:
    """``text`` as it is: on a terminal in ``style``, wrapped by the terminal itself, so a
    long line is copied as one."""
    if on_terminal():
        Console().print(Text(text, style=style), soft_wrap=True)
    else:
        print(text)


def print_notes(kind: str, notes: Sequence[tuple[str, str]]) -> None:
    """``kind where:`` (red on a terminal), then the text whole, each line indented."""
    for where, text in notes:
        if on_terminal():
            Console().print(Text.assemble((kind, "red"), f" {where}:"), soft_wrap=True)
        else:
            print(f"{kind} {where}:")
        print_lines(textwrap.indent(text, "  "))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]],
                whole: Sequence[str] = ()) -> None:
    """Print ``rows`` under ``headers``: a rich table on a terminal, else ``plain_lines``.

    On a terminal a column with no value in any row is left out, and a column other
    than the last and those in ``whole`` folds at a sixth of the width: the last
    column (an error, a path) keeps the room that is left.
    """
    if not on_terminal():
        for line in plain_lines(headers, rows):
            print(line)
        return
    keep = [i for i in range(len(headers)) if any(row[i] for row in rows)] or [0]
    headers = [headers[i] for i in keep]
    rows = [[row[i] for i in keep] for row in rows]
    console = Console()
    table = Table(*_columns(headers, rows, whole, console.width), box=box.SIMPLE_HEAD,
                  show_edge=False, pad_edge=False)
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    console.print(table)


def _columns(headers: Sequence[str], rows: Sequence[Sequence[str]], whole: Sequence[str],
             console_width: int) -> list[Column]:
    """Folding columns; those in ``whole`` get their longest cell's width when it fits.

    A fixed width is one rich never shrinks, so it is given only when every other
    column still has ``_NARROWEST`` characters (else all fold, none is cut).
    """
    longest = [max((_width(row[i]) for row in rows), default=0) for i in range(len(headers))]
    longest = [max(n, len(h)) for n, h in zip(longest, headers, strict=True)]
    chrome = 3 * len(headers) - 3  # a space either side of each inner cell edge, and a rule
    held = [h in whole for h in headers]
    need = sum(n if keep else min(n, _NARROWEST)
               for n, keep in zip(longest, held, strict=True)) + chrome
    fits = need <= console_width
    sixth = max(12, console_width // 6)
    return [Column(h, overflow="fold", no_wrap=False, width=n if keep and fits else None,
                   max_width=None if keep or i == len(headers) - 1 else sixth)
            for i, (h, n, keep) in enumerate(zip(headers, longest, held, strict=True))]


def _width(cell: str) -> int:
    return max((len(line) for line in cell.splitlines()), default=0)


def plain_lines(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns two spaces apart, each value whole; a value's further lines follow its row,
    indented to its column."""
    table = [list(headers), *(list(r) for r in rows)]
    widths = [min(max(len(_first(r[i])) for r in table), PLAIN_PAD_MAX)
              for i in range(len(headers))]
    offsets = [sum(widths[:i]) + 2 * i for i in range(len(widths))]
    lines: list[str] = []
    for row in table:
        firsts = [_first(c).ljust(w) for c, w in zip(row, widths, strict=True)]
        lines.append("  ".join(firsts).rstrip())
        for cell, offset in zip(row, offsets, strict=True):
            lines.extend(" " * offset + more for more in cell.splitlines()[1:])
    return lines


def _first(cell: str) -> str:
    return cell.split("\n", 1)[0]

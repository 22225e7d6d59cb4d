"""Folders Sluice creates for its users' files: theirs alone, whatever the umask.

No imports beyond the standard library: a worker's slot (task logs) and the
scheduler (callback logs) both use it.
"""

from __future__ import annotations

from pathlib import Path


def private_dirs(folder: Path) -> None:
    """Create ``folder`` and its missing parents, each mode 0700; existing ones are left."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for each in reversed(missing):
        try:
            each.mkdir(mode=0o700)
        except FileExistsError:  # made meanwhile by another process
            pass

"""``make_private`` takes group/other permissions away, and never follows a symlink."""

from __future__ import annotations

import os
import stat

from shared.config import make_private


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_symlink_a_task_left_changes_nothing_it_points_to(tmp_path):
    target = tmp_path / "elsewhere.txt"
    target.write_text("not Sluice's")
    target.chmod(0o644)
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "link").symlink_to(target)
    (logs / "dangling").symlink_to(tmp_path / "gone")
    own = logs / "attempt=1.log"
    own.write_text("x")
    own.chmod(0o644)

    for name in ("link", "dangling", "attempt=1.log"):
        make_private(logs / name)

    assert mode(target) == 0o644
    assert mode(own) == 0o600

"""What another local user can do to Sluice's files and servers: the helpers of the security tests."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from shared.embedded import _postgres_bindir

PSQL = str(_postgres_bindir() / "psql")


def as_another_user(argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` as user ``nobody`` (when we are root; else as ourselves), with
    none of our environment: no password, no PG* variables."""
    prefix = []
    if os.geteuid() == 0:
        import pwd

        nobody = pwd.getpwnam("nobody")
        prefix = ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
                  "--clear-groups"]
    return as_this_user([*prefix, *argv], **env)


def as_this_user(argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env={"PATH": os.defpath, "LC_ALL": "C", **env},
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=30, cwd="/")


def psql(host: str, port: int) -> list[str]:
    return [PSQL, "-X", "-w", "-h", host, "-p", str(port), "-U", "postgres", "-d", "sluice",
            "-tAc", "SELECT 42"]


def assert_private(home: Path) -> None:
    """No file under ``home`` is open to other users; folders at most let them search."""
    for root, dirs, files in os.walk(home):
        for name in (".", *dirs, *files):
            path = Path(root, name)
            mode = stat.S_IMODE(path.lstat().st_mode)
            allowed = 0o001 if path.is_dir() else 0
            assert mode & 0o077 & ~allowed == 0, f"{path} is mode {mode:o}"

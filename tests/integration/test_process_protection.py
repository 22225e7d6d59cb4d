"""Sluice's processes keep their credentials from tasks of the same user.

Tasks run as the worker's user; without ``PR_SET_DUMPABLE=0`` a task could read
``/proc/<worker pid>/environ`` (the database URL with its password). The kernel
shows a non-dumpable process's ``/proc/<pid>`` files as root's (uid and gid 0):
the daemon is started here with group ``nogroup``, so a gid of 0 on its
``environ`` is the mark that only root may read it. And a process of the same
unprivileged user is refused reading a non-dumpable process's environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

pytestmark = pytest.mark.timeout(120)

NOGROUP = 65534
SECRET_URL = "postgresql://sluice:pw-secret@127.0.0.1:1/sluice"  # unreachable: it waits


async def _started(command: list[str], home: Path) -> subprocess.Popen:
    """Start ``command`` with group nogroup and credentials; return once it logged a line."""
    env = {**os.environ, "SLUICE_HOME": str(home), "SLUICE_DATABASE_URL": SECRET_URL,
           "SLUICE_REDIS_URL": "redis://:pw-secret@127.0.0.1:1/0",
           "SLUICE_SCHEDULER_METRICS_PORT": "-1", "SLUICE_TRIGGERER_METRICS_PORT": "-1",
           "SLUICE_WORKER_METRICS_PORT": "-1", "SLUICE_WORKER_LOG_PORT": "-1",
           "SLUICE_DAGS_FOLDER": str(home)}
    proc = subprocess.Popen(["setpriv", f"--regid={NOGROUP}", "--clear-groups", *command],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    line = await anyio.to_thread.run_sync(proc.stdout.readline)
    assert line, "the process logged nothing"
    return proc


@pytest.mark.parametrize("command", [
    [sys.executable, "-m", "worker"],
    [sys.executable, "-m", "scheduler"],
    [sys.executable, "-m", "triggerer"],
    [sys.executable, "-m", "shared.cli", "dags", "list"],
])
async def test_sluice_processes_are_not_dumpable(command, tmp_path):
    proc = await _started(command, tmp_path)
    try:
        owner = os.stat(f"/proc/{proc.pid}/environ")
        assert (owner.st_uid, owner.st_gid) == (0, 0), "environ readable by the daemon's user"
        assert "pw-secret" in Path(f"/proc/{proc.pid}/environ").read_text()  # root still can
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_a_process_of_the_same_user_cannot_read_a_protected_environment(tmp_path):
    """The kernel's rule the above relies on, with an unprivileged user (nobody) on both ends."""
    script = ("import ctypes, sys; sys.path.insert(0, sys.argv[1]);"
              "from shared.daemon import protect_process; protect_process();"
              "print('ready', flush=True); sys.stdin.read()")
    nobody = ["setpriv", "--reuid=65534", f"--regid={NOGROUP}", "--clear-groups"]
    site = next(Path(sys.prefix, "lib").glob("python3*/site-packages"))
    env = {"PATH": os.environ["PATH"], "SECRET": "pw-secret",
           "PYTHONPATH": f"{Path(__file__).parents[2]}:{site}"}
    proc = subprocess.Popen([*nobody, "/usr/bin/python3", "-c", script,
                             str(Path(__file__).parents[2])], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        read = subprocess.run([*nobody, "cat", f"/proc/{proc.pid}/environ"],
                              capture_output=True, text=True)
        assert read.returncode != 0 and "Permission denied" in read.stderr
        assert "pw-secret" not in read.stdout
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stdin.close()

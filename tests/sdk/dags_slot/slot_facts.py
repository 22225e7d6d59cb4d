"""Tasks the fork server tests run: what a slot process looks like from inside a try."""

import gc
import os
import random
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path

from airflow.sdk import dag, task

# not SIGALRM: importing the DAG file leaves Airflow's import-timeout handler installed
SIGNALS = ("SIGINT", "SIGPIPE", "SIGCHLD", "SIGHUP", "SIGUSR1", "SIGTSTP")


def _fd_targets() -> list[str]:
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # the listing's own descriptor, closed meanwhile
            pass
    return targets


@dag(schedule=None, start_date=datetime(2026, 1, 1))
def slot_facts():
    @task
    def facts():
        return {
            "pid": os.getpid(), "ppid": os.getppid(), "sid": os.getsid(0), "pgid": os.getpgrp(),
            "blocked": sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])),
            "handlers": {name: repr(signal.getsignal(getattr(signal, name))) for name in SIGNALS},
            "random": random.random(),
            "fd0": os.readlink("/proc/self/fd/0"),
            "fds": _fd_targets(),
            "sluice": sorted(n for n in os.environ if n.startswith("SLUICE_")),
            "airflow_home": os.environ.get("AIRFLOW_HOME"),
            "frozen": gc.get_freeze_count(),
        }

    @task
    def sleeper():
        """Starts a program in a session of its own, says so, then waits."""
        program = subprocess.Popen(["sleep", "300"], start_new_session=True)
        (Path(os.environ["AIRFLOW_HOME"]) / "sleeper_program").write_text(str(program.pid))
        print("sleeping now")
        time.sleep(300)

    @task
    def noop():
        pass

    facts()
    sleeper()
    noop()


slot_facts()

"""The parse server: Airflow's DagBag imports DAG files, one forked child per file.

``python -m scheduler.parse_child --serve DAGS_FOLDER`` imports Airflow once
(about 1.8 s of CPU) and forks one child per file, so a file costs a fork, not
an interpreter. Requests are JSON lines ``{"id", "path", "timeout_s",
"kill_after_s"}`` on stdin; answers are JSON lines on stdout: first
``{"started": true}`` once Airflow is imported, then, in the order the files
finish, ``{"id", "result": {fileloc, source_hash, dags, error}}``,
``{"id", "failed": "<why>"}`` (the child died; the tail of its output) or
``{"id", "timed_out": true}`` (killed ``kill_after_s`` past its timeout:
Airflow's own ``dagbag_import_timeout`` names the line first, this is the
backstop for a file that swallows it). A child's prints are kept apart and
only shown when it dies. The server ends when its stdin closes, killing the
children still at work.
"""

from __future__ import annotations

import hashlib
import json
import os
import selectors
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

#: What a child gets beyond its import timeout (its own start, walking, answering) when
#: the request does not say.
KILL_AFTER_TIMEOUT_S = 10.0
#: Bytes of a dead child's output shown in its import error.
TAIL_BYTES = 2000


def source_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""


def parse_result(path: Path, dags_folder: Path, timeout_s: float | None) -> dict:
    """One file parsed with Airflow's DagBag: its DagSpecs and its import error, or both."""
    from shared.airflow_spec import parse

    fileloc = str(path.resolve())
    found = {r["fileloc"]: r for r in parse(path, dags_folder, timeout_s)}
    result = found.get(fileloc) or {"fileloc": fileloc, "dags": [], "error": None}
    return {**result, "source_hash": source_hash(path)}


def run_callback(request: dict, dags_folder: Path, timeout_s: float | None) -> dict:
    """Owed callbacks of one run or try, output to the request's log (``callback_child``)."""
    from scheduler import callback_child

    callback_child.redirect_output(request["log_path"])
    return callback_child.run(request, dags_folder, timeout_s)


def preload() -> None:
    """Import what every parse needs before forking, so a child starts with it."""
    from airflow.dag_processing.dagbag import BundleDagBag  # noqa: F401
    from airflow.providers.standard.operators import bash, python  # noqa: F401
    from airflow.sdk import DAG, dag, task  # noqa: F401

    import shared.airflow_spec  # noqa: F401


@dataclass
class Job:
    id: int
    path: str
    pid: int
    result_fd: int
    output_fd: int
    deadline: float | None
    chunks: list[bytes] = field(default_factory=list)


class Server:
    def __init__(self, dags_folder: Path, out):
        self.dags_folder, self.out = dags_folder, out
        self.selector = selectors.DefaultSelector()
        self.jobs: dict[int, Job] = {}  # by the fd of the child's result pipe
        self.pending = b""

    def run(self) -> None:
        self.selector.register(0, selectors.EVENT_READ, None)
        open_input = True
        while open_input or self.jobs:
            for key, _ in self.selector.select(self._wait_s()):
                if key.data is None:
                    open_input = self._read_requests()
                    if not open_input:
                        self.selector.unregister(0)
                        self._kill_all()
                else:
                    self._read_result(key.data)
            self._kill_overdue()

    def _wait_s(self) -> float | None:
        deadlines = [j.deadline for j in self.jobs.values() if j.deadline is not None]
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None

    def _read_requests(self) -> bool:
        data = os.read(0, 65536)
        if not data:
            return False
        self.pending += data
        *lines, self.pending = self.pending.split(b"\n")
        for line in lines:
            if line.strip():
                self._start(json.loads(line))
        return True

    def _start(self, request: dict) -> None:
        timeout_s = request.get("timeout_s")
        result_r, result_w = os.pipe()
        output_fd = os.memfd_create("parse-output")
        pid = os.fork()
        if pid == 0:  # the child: never returns
            os.close(result_r)
            self._child(request, timeout_s, result_w, output_fd)
        os.close(result_w)
        kill_after_s = request.get("kill_after_s", KILL_AFTER_TIMEOUT_S)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s + kill_after_s
        what = request.get("path") or f"callback {request['callback'].get('callback')}"
        job = Job(request["id"], what, pid, result_r, output_fd, deadline)
        self.jobs[result_r] = job
        self.selector.register(result_r, selectors.EVENT_READ, job)

    def _child(self, request: dict, timeout_s: float | None, result_w: int,
               output_fd: int) -> None:
        code = 1
        try:
            self.selector.close()
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(output_fd, 1)  # the file's prints, shown only if the child dies
            os.dup2(output_fd, 2)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            if "callback" in request:
                body = json.dumps(run_callback(request["callback"], self.dags_folder,
                                               timeout_s)).encode()
            else:
                body = json.dumps(parse_result(Path(request["path"]), self.dags_folder,
                                               timeout_s)).encode()
            with os.fdopen(result_w, "wb") as pipe:
                pipe.write(body)
            code = 0
        except BaseException:  # noqa: BLE001 - printed to the output the server shows
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def _read_result(self, job: Job) -> None:
        chunk = os.read(job.result_fd, 1 << 20)
        if chunk:
            job.chunks.append(chunk)
            return
        code = self._reap(job)
        body = b"".join(job.chunks)
        if code == 0 and body:
            self._answer({"id": job.id, "result": json.loads(body)})
        else:
            self._answer({"id": job.id, "failed": f"{job.path}: parser exited with "
                                                  f"{describe(code)}: {self._tail(job)}"})
        os.close(job.output_fd)

    def _kill_overdue(self) -> None:
        now = time.monotonic()
        for job in [j for j in self.jobs.values() if j.deadline is not None and j.deadline <= now]:
            self._kill(job)
            self._answer({"id": job.id, "timed_out": True})

    def _kill_all(self) -> None:
        for job in list(self.jobs.values()):
            self._kill(job)

    def _kill(self, job: Job) -> None:
        try:
            os.kill(job.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._reap(job)
        os.close(job.output_fd)

    def _reap(self, job: Job) -> int:
        self.selector.unregister(job.result_fd)
        os.close(job.result_fd)
        del self.jobs[job.result_fd]
        _, status = os.waitpid(job.pid, 0)
        return os.waitstatus_to_exitcode(status)

    def _tail(self, job: Job) -> str:
        size = os.fstat(job.output_fd).st_size
        data = os.pread(job.output_fd, TAIL_BYTES, max(0, size - TAIL_BYTES))
        return data.decode(errors="replace").strip()

    def _answer(self, message: dict) -> None:
        self.out.write(json.dumps(message).encode() + b"\n")
        self.out.flush()


def describe(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"


def serve(dags_folder: Path) -> None:
    """Answer parse requests until stdin closes (see the module's docstring)."""
    from shared.airflow_spec.loading import use_airflow_home
    from shared.config import Settings

    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    use_airflow_home(Settings().home)
    preload()
    out.write(b'{"started": true}\n')  # the client's deadlines start now, not at our exec
    out.flush()
    Server(dags_folder, out).run()


if __name__ == "__main__":
    if sys.argv[1:2] != ["--serve"] or len(sys.argv) != 3:
        sys.exit("usage: python -m scheduler.parse_child --serve DAGS_FOLDER")
    serve(Path(sys.argv[2]))

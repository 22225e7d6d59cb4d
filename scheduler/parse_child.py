"""Child processes that import DAG files and print their serialized DAGs as JSON.

Legacy runtime: ``python -m scheduler.parse_child FILE DAGS_FOLDER [TIMEOUT_S]``
parses one file with Sluice's own loader. User code's own prints go to stderr;
stdout carries exactly one JSON document. An import that runs past
``TIMEOUT_S`` becomes the file's import error (Airflow's ``dagbag_import_timeout``).

Task SDK runtime: ``python -m scheduler.parse_child --serve DAGS_FOLDER`` is a
parse server. It imports Airflow once (about 1.8 s of CPU) and forks one child
per file, so a file costs a fork, not an interpreter: requests are JSON lines
``{"id", "path", "timeout_s"}`` on stdin, answers JSON lines on stdout: first
``{"started": true}`` once Airflow is imported, then, in the order the files finish: ``{"id", "result": {fileloc, source_hash, dags, error}}``,
``{"id", "failed": "<why>"}`` (the child died; the tail of its output) or
``{"id", "timed_out": true}`` (killed ``KILL_AFTER_TIMEOUT_S`` past its
timeout: Airflow's own timeout names the line first). A child's prints are
kept apart and only shown when it dies. The server ends when its stdin
closes, killing the children still at work.
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

#: What a child gets beyond its import timeout (its own start, walking, answering).
KILL_AFTER_TIMEOUT_S = 10.0
#: Bytes of a dead child's output shown in its import error.
TAIL_BYTES = 2000


def source_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""


def main() -> None:
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    path, dags_folder = Path(sys.argv[1]), Path(sys.argv[2])
    timeout_s = float(sys.argv[3]) if len(sys.argv) > 3 else None
    from shared.dagbag import load_file
    from shared.serialization import serialize_dag

    result = load_file(path, dags_folder, timeout_s)
    dags, error = [], result.error
    if error is None:
        try:
            dags = [serialize_dag(d) for d in result.dags]
        except Exception as exc:  # noqa: BLE001 - reported as the file's import error
            error = f"{path}: cannot serialize DAG: {type(exc).__name__}: {exc}"
    json.dump({"fileloc": result.fileloc, "source_hash": source_hash(path), "dags": dags,
               "error": error}, out)
    out.flush()


# --- the parse server (Task SDK runtime) ---------------------------------------------------

def airflow_result(path: Path, dags_folder: Path, timeout_s: float | None) -> dict:
    """One file parsed with Airflow's DagBag: its DagSpecs and its import error, or both."""
    from shared.airflow_spec import parse

    fileloc = str(path.resolve())
    found = {r["fileloc"]: r for r in parse(path, dags_folder, timeout_s)}
    result = found.get(fileloc) or {"fileloc": fileloc, "dags": [], "error": None}
    return {**result, "source_hash": source_hash(path)}


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
            self._child(Path(request["path"]), timeout_s, result_w, output_fd)
        os.close(result_w)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s + KILL_AFTER_TIMEOUT_S
        job = Job(request["id"], request["path"], pid, result_r, output_fd, deadline)
        self.jobs[result_r] = job
        self.selector.register(result_r, selectors.EVENT_READ, job)

    def _child(self, path: Path, timeout_s: float | None, result_w: int, output_fd: int) -> None:
        code = 1
        try:
            self.selector.close()
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(output_fd, 1)  # the file's prints, shown only if the child dies
            os.dup2(output_fd, 2)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            body = json.dumps(airflow_result(path, self.dags_folder, timeout_s)).encode()
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
    from shared.config import Settings
    from shared.runtime import use_airflow_home

    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    use_airflow_home(Settings())
    preload()
    out.write(b'{"started": true}\n')  # the client's deadlines start now, not at our exec
    out.flush()
    Server(dags_folder, out).run()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(Path(sys.argv[2]))
    else:
        main()

"""The legacy runner's task logs: every line of a try's output with its time and level.

The runner's file descriptors 1 and 2 are pipes read by two forwarder threads,
so ``print``, ``sys.stderr``, tracebacks and the output of programs a task
starts all become lines of the try's log file in Airflow's task-log format
(``shared.tasklogs.line``): stdout at ``info``, stderr at ``error``, as the Task
SDK runtime writes them (``worker.sdk_tasklog``). Between tries the lines go to
the runner's own stderr (the worker's log) as they are.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from shared.tasklogs import line

_DRAIN = b"\x1esluice-drain\x1e"  # a line end no task writes; marks "all before is logged"
_DRAIN_TIMEOUT_S = 5.0
MAX_LINE_BYTES = 64 * 1024  # a longer run of output without a newline is logged in pieces


class Sink:
    """Where lines go now: the current try's log file, or between tries the fallback."""

    def __init__(self, fallback_fd: int):
        self._fallback = fallback_fd
        self._fd = fallback_fd
        self._lock = threading.Lock()

    def emit(self, text: bytes, level: str, logger: str) -> None:
        with self._lock:  # never a write to a descriptor closed (and maybe reused) meanwhile
            data = text + b"\n" if self._fd == self._fallback else line(
                text.decode("utf-8", errors="replace"), level, logger)
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]

    def open(self, path: str) -> None:
        """Append to ``path`` (mode 0600 in 0700 folders: a task's output may hold secrets)."""
        _private_dirs(Path(path).parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, 0o600)  # a file left by an earlier version keeps no wider mode
        with self._lock:
            self._fd = fd

    def close(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, self._fallback
        if fd != self._fallback:
            os.close(fd)


class Forwarder:
    """Makes ``target_fd`` a pipe whose lines a thread sends to ``sink`` at ``level``."""

    def __init__(self, target_fd: int, sink: Sink, level: str, logger: str):
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, target_fd)
        os.close(write_fd)
        self._read_fd, self._target_fd = read_fd, target_fd
        self._sink, self._level, self._logger = sink, level, logger
        self._drained = threading.Event()
        threading.Thread(target=self._run, daemon=True, name=f"sluice-{logger}").start()

    def drain(self) -> None:
        """Return once every byte written to the pipe so far is logged (a partial line too)."""
        self._drained.clear()
        os.write(self._target_fd, _DRAIN + b"\n")
        self._drained.wait(_DRAIN_TIMEOUT_S)

    def _run(self) -> None:
        pending = b""
        while data := os.read(self._read_fd, 65536):
            *lines, pending = (pending + data).split(b"\n")
            for each in lines:
                self._line(each)
            while len(pending) > MAX_LINE_BYTES:
                self._line(pending[:MAX_LINE_BYTES])
                pending = pending[MAX_LINE_BYTES:]

    def _line(self, raw: bytes) -> None:
        drained = raw.endswith(_DRAIN)
        if drained:
            raw = raw[: -len(_DRAIN)]
        text = raw.rstrip()
        if text:
            try:
                self._sink.emit(text, self._level, self._logger)
            except OSError:  # a line that cannot be written must not stop the thread
                pass
        if drained:
            self._drained.set()


class TaskOutput:
    """The runner's stdout and stderr, captured as log lines of the current try."""

    def __init__(self, fallback_fd: int):
        sys.stdout.flush()
        sys.stderr.flush()
        self.sink = Sink(fallback_fd)
        self.forwarders = (Forwarder(1, self.sink, "info", "task.stdout"),
                           Forwarder(2, self.sink, "error", "task.stderr"))
        sys.stdout.reconfigure(line_buffering=True)  # a print is a line now, not at exit
        sys.stderr.reconfigure(line_buffering=True)

    def start_try(self, log_path: str | None) -> None:
        """Lines go to ``log_path`` from now on (raises ``OSError`` if it cannot be opened)."""
        if log_path:
            self.sink.open(log_path)

    def end_try(self) -> None:
        """Every line the try wrote is in its file; later lines go to the fallback."""
        sys.stdout.flush()
        sys.stderr.flush()
        for forwarder in self.forwarders:
            forwarder.drain()
        self.sink.close()


def _private_dirs(folder: Path) -> None:
    """Create ``folder`` and its missing parents, each mode 0700 (``mkdir -p`` ignores the
    mode for parents); directories that exist are left as their owner set them."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for each in reversed(missing):
        try:
            each.mkdir(mode=0o700)
        except FileExistsError:  # another runner made it first, with the same mode
            pass

"""Per-try task logs in a slot: every line, whoever wrote it, with its time and level.

The SDK's logging (its own lines, ``self.log``, stdlib ``logging``) is configured
once per slot to write JSON lines -- Airflow's task-log format -- to a
``LogSink``, which points at the current try's log file. The slot's file
descriptors 1 and 2 are pipes read by two forwarder threads, so ``print``,
``sys.stderr`` and the output of programs a task starts become lines too
(``task.stdout`` at info, ``task.stderr`` at error, as Airflow's supervisor
logs them). Between tries everything goes to the slot's own stderr.
"""

from __future__ import annotations

import fcntl
import logging
import os
import select
import struct
import sys
import termios
import threading
from pathlib import Path

import structlog

from shared.paths import private_dirs

_DRAIN = b"\x1esluice-drain\x1e"  # a line end no task writes; marks "all before is logged"
_DRAIN_TIMEOUT_S = 5.0


class LogSink:
    """A binary stream whose target is swapped per try; writes are whole lines, one ``write`` each."""

    def __init__(self, fallback_fd: int):
        self._fallback = fallback_fd
        self._fd = fallback_fd
        self._lock = threading.Lock()

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        with self._lock:  # never a write to a descriptor closed (and maybe reused) meanwhile
            while view:
                view = view[os.write(self._fd, view):]
        return len(data)

    def flush(self) -> None:
        pass

    def open(self, path: str) -> None:
        """Append to ``path`` (mode 0600 in 0700 folders: a task's output may hold secrets)."""
        private_dirs(Path(path).parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, 0o600)
        with self._lock:
            self._fd = fd

    def close(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, self._fallback
        if fd != self._fallback:
            os.close(fd)


class Forwarder:
    """Makes ``target_fd`` a pipe whose lines a thread logs as ``logger`` at ``level``."""

    def __init__(self, target_fd: int, logger: str, level: int):
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, target_fd)
        os.close(write_fd)
        self._read_fd, self._target_fd = read_fd, target_fd
        self._logger, self._level = logger, level
        self._busy = False
        self._drained = threading.Event()
        threading.Thread(target=self._run, daemon=True, name=f"sluice-{logger}").start()

    def drain(self) -> None:
        """Return once every byte written to the pipe so far is logged (a partial line too)."""
        if not self._busy and _unread(self._read_fd) == 0:
            return
        self._drained.clear()
        os.write(self._target_fd, _DRAIN + b"\n")
        self._drained.wait(_DRAIN_TIMEOUT_S)

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._read_fd, select.POLLIN)
        from airflow.sdk._shared.logging.structlog import reconfigure_logger

        # as Airflow's supervisor forwards a task's output: without this thread as the call site
        target = reconfigure_logger(structlog.get_logger(), structlog.processors.CallsiteParameterAdder)
        pending = b""
        while True:
            poller.poll()
            self._busy = True  # before the read: drain() sees either unread bytes or this
            data = os.read(self._read_fd, 65536)
            if not data:
                return
            *lines, pending = (pending + data).split(b"\n")
            for line in lines:
                self._emit(target, line)
            self._busy = bool(pending)

    def _emit(self, target, line: bytes) -> None:
        drained = line.endswith(_DRAIN)
        if drained:
            line = line[: -len(_DRAIN)]
        text = line.rstrip().decode("utf-8", errors="replace")
        if text:
            try:
                target.log(self._level, text, logger=self._logger)
            except Exception:  # noqa: BLE001 - a line that cannot be logged must not stop the thread
                pass
        if drained:
            self._drained.set()


def capture(sink: LogSink) -> tuple[Forwarder, Forwarder]:
    """Configure the SDK's logging to ``sink`` and route fds 1 and 2 through forwarders."""
    from airflow.sdk.log import configure_logging

    configure_logging(json_output=True, output=sink)
    sys.stdout.flush()
    sys.stderr.flush()
    forwarders = (Forwarder(1, "task.stdout", logging.INFO), Forwarder(2, "task.stderr", logging.ERROR))
    sys.stdout.reconfigure(line_buffering=True)  # a print is a line now, not at exit
    sys.stderr.reconfigure(line_buffering=True)
    return forwarders


def _unread(fd: int) -> int:
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]



"""The slot fork server: Airflow imported once per worker, every slot forked from it.

A slot (``worker.sdk_slot``) needs Airflow's Task SDK, its supervisor and client,
the standard provider's operators and ``shared.airflow_spec``: about 1.8 s of CPU
and 100 MiB of private memory when each slot imports them itself. The fork
server (``python -m worker.sdk_zygote DAGS_FOLDER``, started by the worker with
the slot environment: no Sluice credentials, Airflow's home under Sluice's)
imports them once, freezes them out of the garbage collector's reach
(``gc.freeze``: a slot's collections then leave those pages shared) and forks a
slot per request, single-threaded. A slot starts as a fresh process would: its
own session (its programs are its process group), the signal dispositions and
mask the server had before importing anything, ``random`` reseeded, stdin on
/dev/null, no descriptor but 0-2, its channel to the worker and its lifeline.

Protocol on the ``SOCK_SEQPACKET`` socket that is the server's stdin, one JSON
message per packet, descriptors passed as ``SCM_RIGHTS``:

- worker -> server: ``{"op": "fork", "id"}`` with the slot's end of its channel;
- server -> worker: ``{"op": "forked", "id", "pid"}`` with a pidfd of the slot, or
  ``{"op": "fork_failed", "id", "error"}``; ``{"op": "exited", "pid", "code"}`` once
  a slot is reaped (``code`` as ``Popen.returncode``: -9 for SIGKILL).

The server is a subreaper: a slot's death takes its process group and its
orphaned programs with it. When the worker's end closes, the server kills every
slot and exits; when the server dies, each slot sees its lifeline hang up and
kills its own group (``sdk_slot.die_with``), and the worker kills each slot with
every program below it (``Forked.kill``). The worker's side is ``ForkServer``.
"""

from __future__ import annotations

import gc
import json
import os
import random
import resource
import select
import signal
import socket
import sys
import time
import traceback
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import structlog
from anyio.abc import Process, UNIXSocketStream

log = structlog.get_logger()
MAX_MESSAGE = 4096


class SlotStartError(RuntimeError):
    """No slot could be forked: the fork server died or refused."""


# --- the server process -----------------------------------------------------------------

def preload() -> None:
    """Import what tries need (found by listing a slot's modules after a few tries), so
    each slot starts with it; DAG files are left to the slots (``sdk_slot.DagFiles``)."""
    import encodings.idna  # noqa: F401 - the API's URL

    import jinja2.ext  # noqa: F401
    from airflow.dag_processing.dagbag import BundleDagBag  # noqa: F401
    from airflow.providers.standard.decorators import python as decorators  # noqa: F401
    from airflow.providers.standard.operators import bash, python  # noqa: F401
    from airflow.providers.standard.sensors import date_time, time_delta  # noqa: F401
    from airflow.providers.standard.triggers import temporal  # noqa: F401
    from airflow.sdk import dag, task  # noqa: F401
    from airflow.sdk.api import client  # noqa: F401
    from airflow.sdk.definitions import decorators as sdk_decorators  # noqa: F401
    from airflow.sdk.execution_time import supervisor, task_runner  # noqa: F401

    import shared.airflow_spec.loading  # noqa: F401
    from worker import sdk_elements, sdk_inprocess, sdk_slot, sdk_tasklog, sdk_transport  # noqa: F401

    sdk_slot.share_json_adapter()
    sdk_elements.read_expand_input_lazily()
    sdk_slot.remember_sensitive_names()
    # the SDK's client builds its TLS context (certifi's CAs: 80 ms) even for plain http,
    # cached per class: built once here, every slot's client takes it as it is
    for each in (client.Client, sdk_transport.LeanClient):
        each._get_ssl_context_cached(client.API_SSL_CA_FILE_PATH, client.API_SSL_CERT_PATH)


@dataclass
class Baseline:
    """What a fresh interpreter has, so a slot starts with it whatever an import changed."""

    handlers: dict[int, object] = field(default_factory=lambda: {
        sig: signal.getsignal(sig) for sig in signal.valid_signals()
        if sig not in (signal.SIGKILL, signal.SIGSTOP) and signal.getsignal(sig) is not None})
    mask: set = field(default_factory=lambda: signal.pthread_sigmask(signal.SIG_BLOCK, []))

    def restore(self) -> None:
        signal.set_wakeup_fd(-1)
        for sig, handler in self.handlers.items():
            if signal.getsignal(sig) is not handler:
                signal.signal(sig, handler)
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.pthread_sigmask(signal.SIG_SETMASK, self.mask)


class Server:
    def __init__(self, control: socket.socket, dags_folder: Path, baseline: Baseline):
        self.control, self.dags_folder, self.baseline = control, dags_folder, baseline
        self.lifeline_r, self.lifeline_w = os.pipe()  # the write end only here: slots see us die
        self.slots: dict[int, int] = {}  # pidfd -> pid
        self.poller = select.poll()

    def run(self) -> None:
        """Serve fork requests and reap slots until the worker's end closes."""
        self.poller.register(self.control.fileno(), select.POLLIN)
        while True:
            for fd, _ in self.poller.poll():
                if fd != self.control.fileno():
                    self._reap(fd)
                elif not self._request():
                    self._end()
                    return

    def _request(self) -> bool:
        data, fds, _, _ = socket.recv_fds(self.control, MAX_MESSAGE, 1)
        if not data:
            return False
        request = json.loads(data)
        try:
            if request.get("op") == "fork" and len(fds) == 1:
                self._fork(request.get("id"), fds[0])
            else:
                self._send({"op": "fork_failed", "id": request.get("id"),
                            "error": f"bad request {data[:200]!r}"})
        finally:
            for fd in fds:
                os.close(fd)
        return True

    def _fork(self, request_id: int, channel: int) -> None:
        threads = len(os.listdir("/proc/self/task"))
        if threads != 1:  # a fork would copy locks other threads hold
            self._send({"op": "fork_failed", "id": request_id,
                        "error": f"fork server has {threads} threads"})
            return
        gc.freeze()
        pid = os.fork()
        if pid == 0:
            self._child(channel)  # never returns
        pidfd = os.pidfd_open(pid)
        self.slots[pidfd] = pid
        self.poller.register(pidfd, select.POLLIN)
        self._send({"op": "forked", "id": request_id, "pid": pid}, [pidfd])

    def _child(self, channel: int) -> None:
        code, stderr = 70, 2
        try:
            os.setsid()
            self.baseline.restore()
            random.seed()
            os.close(self.control.detach())
            _close_fds_but(0, 1, 2, channel, self.lifeline_r)
            stderr = os.dup(2)  # the worker's log, whatever the slot makes of fd 2
            from worker.sdk_slot import serve

            serve(channel, self.lifeline_r, self.dags_folder)
            code = 0
        except BaseException:  # noqa: BLE001 - said in the worker's log; the slot ends
            with suppress(Exception):
                os.write(stderr, traceback.format_exc().encode())
        finally:
            with suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)

    def _reap(self, pidfd: int) -> None:
        pid = self.slots.pop(pidfd)
        self.poller.unregister(pidfd)
        os.close(pidfd)
        _kill_group(pid)  # its programs die with it (its zombie still holds the group's id)
        _, status = os.waitpid(pid, 0)
        self._kill_orphans()
        self._send({"op": "exited", "pid": pid, "code": os.waitstatus_to_exitcode(status)})

    def _kill_orphans(self) -> None:
        """Programs of a dead slot that left its group were adopted by us: end them too."""
        path = Path(f"/proc/self/task/{os.getpid()}/children")
        slots = set(self.slots.values())
        while orphans := {int(p) for p in path.read_text().split()} - slots:
            for pid in orphans:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for pid in orphans:
                with suppress(ChildProcessError):
                    os.waitpid(pid, 0)

    def _end(self) -> None:
        for pid in self.slots.values():
            _kill_group(pid)
        for pid in self.slots.values():
            with suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self._kill_orphans()

    def _send(self, message: dict, fds: list[int] | None = None) -> None:
        with suppress(BrokenPipeError, ConnectionResetError):  # the worker is gone: we end soon
            socket.send_fds(self.control, [json.dumps(message).encode()], fds or [])


def _kill_group(pid: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _close_fds_but(*keep: int) -> None:
    """Close every descriptor but ``keep`` (an empty ``os.closerange`` would close them all)."""
    low = 0
    for fd in [*sorted(keep), resource.getrlimit(resource.RLIMIT_NOFILE)[0]]:
        if low < fd:
            os.closerange(low, fd)
        low = fd + 1


def main() -> None:
    """``python -m worker.sdk_zygote DAGS_FOLDER``, its stdin the worker's control socket."""
    baseline = Baseline()
    control = socket.socket(fileno=os.dup(0))
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)  # stray prints go to the worker's log, never into a protocol
    preload()
    from worker.sdk_slot import adopt_orphans

    adopt_orphans()
    gc.collect()
    gc.freeze()
    Server(control, Path(sys.argv[1]), baseline).run()
    sys.stderr.flush()
    os._exit(0)  # no exit handlers: what they would tidy is the slots' own


# --- the worker's side ------------------------------------------------------------------

@dataclass
class Forked:
    """A slot forked by the server: its pid, a pidfd (pollable, readable once it exited)
    and the worker's end of its channel."""

    pid: int
    pidfd: int
    channel: UNIXSocketStream
    server: ServerProcess
    _code: int | None = None
    _reaped: bool = False
    _lock: anyio.Lock = field(default_factory=anyio.Lock)

    def exited(self) -> bool:
        if self._reaped:  # its pidfd is closed (and the number maybe reused)
            return True
        poller = select.poll()
        poller.register(self.pidfd, select.POLLIN)
        return bool(poller.poll(0))

    def signal_group(self, signum: int) -> None:
        """Signal the slot and its programs, unless the slot has exited (its pid may be reused)."""
        if not self.exited():
            _signal_group(self.pid, signum)

    def kill(self) -> None:
        """SIGKILL the slot with every program below it, those in sessions of their own
        too, unless it has exited. Killing the group alone would orphan those to init
        when the server that would reap them is dead (or races the slot's own lifeline
        watch, which ends them)."""
        if not self.exited():
            _kill_tree(self.pid)

    async def wait(self) -> None:
        async with self._lock:
            if not self.exited():
                await anyio.wait_readable(self.pidfd)

    async def exit_code(self) -> int | None:
        """The slot's exit code once it has exited; ``None`` if its server died first."""
        async with self._lock:
            if not self._reaped:
                if not self.exited():
                    await anyio.wait_readable(self.pidfd)
                self._code = await self.server.exit_code(self.pid)
                self._reaped = True
                os.close(self.pidfd)
                self.server.slots.pop(self.pid, None)
            return self._code


def _signal_group(pid: int, signum: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def _kill_tree(pid: int, rounds: int = 100) -> None:
    """SIGKILL ``pid``'s descendants, then its group. ``pid`` (a slot: a subreaper) is
    stopped first, so it forks no more and holds the orphans of each program killed;
    they are found in the next round."""
    _signal_group(pid, signal.SIGSTOP)
    killed: set[int] = set()
    for _ in range(rounds):
        found = _descendants(pid) - killed
        if not found:
            break
        for child in found:
            with suppress(ProcessLookupError, PermissionError):
                os.kill(child, signal.SIGKILL)
        killed |= found
    _signal_group(pid, signal.SIGKILL)


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid``, from ``/proc/PID/task/*/children``."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        with suppress(FileNotFoundError, ProcessLookupError):
            for tid in os.listdir(f"/proc/{parent}/task"):
                with suppress(FileNotFoundError, ProcessLookupError):
                    kids = {int(p) for p in Path(f"/proc/{parent}/task/{tid}/children").read_text().split()}
                    todo.extend(kids - found)
                    found |= kids
    return found


class ServerProcess:
    """One run of the fork server: its process and the worker's end of its socket."""

    def __init__(self, proc: Process, sock: socket.socket):
        self.proc, self.sock = proc, sock
        self.started = time.monotonic()
        self.slots: dict[int, Forked] = {}
        self.exits: dict[int, int] = {}
        self.replies: dict[int, tuple[dict, list[int]]] = {}  # by request id
        self.abandoned: set[int] = set()  # requests whose caller was cancelled
        self.closed = False  # its end of the socket closed: it died or is ending
        self._requests = 0
        self._reading = False
        self._received = anyio.Event()

    @property
    def alive(self) -> bool:
        return not self.closed and self.proc.returncode is None

    async def fork(self) -> Forked:
        self._requests += 1
        request = self._requests
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with theirs:
                await self._send({"op": "fork", "id": request}, [theirs.fileno()])
            answer = await self._until(lambda: self.replies.pop(request, None))
        except BaseException:  # cancelled: a late reply is dropped, the slot sees its channel close
            self.abandoned.add(request)
            ours.close()
            raise
        if answer is None:
            ours.close()
            with anyio.move_on_after(5):  # it closed its end: it is exiting
                await self.proc.wait()
            raise SlotStartError(f"slot fork server died (exit code {self.proc.returncode})")
        reply, fds = answer
        if reply["op"] != "forked":
            ours.close()
            raise SlotStartError(f"slot fork server refused: {reply.get('error')}")
        slot = Forked(reply["pid"], fds[0], await UNIXSocketStream.from_socket(ours), self)
        self.slots[slot.pid] = slot
        return slot

    async def exit_code(self, pid: int) -> int | None:
        """Slot ``pid``'s exit code, once reported; ``None`` if the server ended first."""
        return await self._until(lambda: self.exits.pop(pid, None))

    def kill_slots(self) -> None:
        """Its slots cannot be reaped by it any more: end them and their programs."""
        for slot in list(self.slots.values()):
            slot.kill()

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            self.closed = True
            if self.sock.fileno() >= 0:
                anyio.notify_closing(self.sock)
                self.sock.close()
            with anyio.move_on_after(5):
                await self.proc.wait()
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()
            self.kill_slots()
            await self.proc.aclose()

    async def _send(self, message: dict, fds: list[int]) -> None:
        data = json.dumps(message).encode()
        while True:
            try:
                socket.send_fds(self.sock, [data], fds)
                return
            except BlockingIOError:
                pass
            except OSError as exc:
                self.closed = True
                raise SlotStartError(f"slot fork server gone: {exc}") from None
            await anyio.wait_writable(self.sock)

    async def _until(self, ready):
        """Receive messages (one task at a time) until ``ready()`` has a value; ``None``
        once the server's end is closed."""
        while (value := ready()) is None:
            if self.closed:
                return None
            if self._reading:
                await self._received.wait()
                continue
            self._reading = True
            try:
                self._dispatch(*await self._receive())
            finally:
                self._reading = False
                self._received.set()
                self._received = anyio.Event()
        return value

    async def _receive(self) -> tuple[bytes, list[int]]:
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self.sock, MAX_MESSAGE, 1)
                return data, fds
            except BlockingIOError:
                pass
            except OSError:
                return b"", []
            try:
                await anyio.wait_readable(self.sock)
            except anyio.ClosedResourceError:
                return b"", []

    def _dispatch(self, data: bytes, fds: list[int]) -> None:
        if not data:
            self.closed = True
            self.kill_slots()
            return
        message = json.loads(data)
        if message["op"] == "exited":
            self.exits[message["pid"]] = message["code"]
        elif message.get("id") in self.abandoned:
            self.abandoned.discard(message["id"])
            for fd in fds:
                os.close(fd)
        else:
            self.replies[message.get("id")] = (message, fds)


class ForkServer:
    """The worker's fork server: started on first use, restarted (with a backoff) if it dies.

    When it dies its slots die too (their tries end as lost, as a crashed slot's do).
    """

    def __init__(self, dags_folder: Path, env: dict[str, str], backoff=None):
        from shared.standalone import RestartBackoff

        self.dags_folder, self.env = dags_folder, env
        self.backoff = backoff or RestartBackoff()
        self.current: ServerProcess | None = None
        self.stopped = False
        self._lock = anyio.Lock()

    async def start(self) -> None:
        """Start the server now, unless it runs: its imports take a second or two."""
        async with self._lock:
            await self._running()

    async def fork(self) -> Forked:
        """A new slot; ``SlotStartError`` when the server cannot give one."""
        async with self._lock:
            server = await self._running()
            return await server.fork()

    async def watch(self) -> None:
        """Restart the server as soon as it dies, rather than on the next fork; never raises."""
        while not self.stopped:
            try:
                async with self._lock:
                    server = await self._running()
            except SlotStartError as exc:
                log.error("slot_fork_server_not_started", error=str(exc))
                await anyio.sleep(self.backoff.after_exit(0.0))
                continue
            await server.proc.wait()
            if not self.stopped:
                log.warning("slot_fork_server_exited", code=server.proc.returncode,
                            slots=len(server.slots))
                server.kill_slots()

    async def stop(self) -> None:
        self.stopped = True
        if self.current is not None:
            await self.current.aclose()

    async def _running(self) -> ServerProcess:
        if self.stopped:
            raise SlotStartError("the worker is stopping")
        current = self.current
        if current is not None and current.alive:
            return current
        if current is not None:
            delay = self.backoff.after_exit(time.monotonic() - current.started)
            log.warning("slot_fork_server_restarting", code=current.proc.returncode,
                        delay_s=delay)
            await current.aclose()
            await anyio.sleep(delay)
        self.current = await self._start()
        return self.current

    async def _start(self) -> ServerProcess:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            if home := self.env.get("AIRFLOW_HOME"):
                Path(home).mkdir(mode=0o700, parents=True, exist_ok=True)
            proc = await anyio.open_process(
                [sys.executable, "-m", "worker.sdk_zygote", str(self.dags_folder)],
                stdin=theirs.fileno(), stdout=None, stderr=None, env=self.env,
                start_new_session=True)  # a terminal's ^C is the worker's to handle
        except OSError as exc:
            ours.close()
            raise SlotStartError(f"slot fork server not started: {exc}") from None
        finally:
            theirs.close()
        ours.setblocking(False)
        return ServerProcess(proc, ours)


if __name__ == "__main__":
    main()

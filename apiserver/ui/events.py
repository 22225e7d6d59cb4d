"""Live updates: one follower of Sluice's event stream, fanned out to every open page.

The daemons already announce each change of a run on the events stream
(``RunChanged``: created, a task finished or deferred, resumed) and of the DAG
files (``DagsChanged``). One task per api-server process follows that stream
with a plain ``XREAD`` — no consumer group, so the scheduler's own group is
untouched and nothing is acknowledged — coalesces what it read over a short
window, names the runs with one query per batch (never one per page), and hands
each batch to every subscriber. Batches carry the stream id they reach, and the
last few are kept, so a page that reconnects replays what it missed instead of
reloading; one that fell too far behind is told to resync.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog
from redis.exceptions import RedisError

from shared import bus
from shared.db import DB_ERRORS
from shared.messages import DagsChanged, MessageRejected, RunChanged, decode

log = structlog.get_logger()

FLUSH_S = 0.25  # at most four batches a second, however many tasks finish
BLOCK_MS = 5_000
KEPT_BATCHES = 512
QUEUE_MAX = 64
LINGER_S = 30.0  # the follower outlives its last page this long: a reconnect misses nothing

FOLLOW_ERRORS = bus.REDIS_ERRORS + DB_ERRORS + (RedisError, asyncpg.PostgresError)
Resolver = Callable[[list[int]], Awaitable[list[dict]]]


def stream_key(entry_id: str) -> tuple[int, int]:
    """A stream id ("1700000000000-3") as a comparable pair."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass
class Batch:
    """What changed up to stream id ``id``: runs (named) and whether DAG files did."""

    id: str
    runs: list[dict]
    dags: bool

    def sse(self) -> str:
        out = ""
        if self.runs:
            out += f"id: {self.id}\nevent: runs\ndata: {json.dumps(self.runs)}\n\n"
        if self.dags:
            out += f"id: {self.id}\nevent: dags\ndata: {{}}\n\n"
        return out


@dataclass
class Pending:
    """What one coalescing window has read so far."""

    run_pks: set[int] = field(default_factory=set)
    dags: bool = False
    last_id: str | None = None

    def add(self, entry_id: str, fields: dict) -> None:
        self.last_id = entry_id
        try:
            message = decode(fields)
        except MessageRejected:
            return  # the scheduler dead-letters it; a page has nothing to show for it
        match message:
            case RunChanged(run_pk=pk):
                self.run_pks.add(pk)
            case DagsChanged():
                self.dags = True


class EventHub:
    """Follows ``stream`` while at least one page listens; stops when the last one leaves."""

    def __init__(self, redis_url: str, stream: str, resolve: Resolver, *,
                 flush_s: float = FLUSH_S) -> None:
        self.redis_url = redis_url
        self.stream = stream
        self.resolve = resolve
        self.flush_s = flush_s
        self.kept: deque[Batch] = deque(maxlen=KEPT_BATCHES)
        self.subscribers: set[asyncio.Queue] = set()
        self.task: asyncio.Task | None = None
        self.stopper: asyncio.TimerHandle | None = None
        self.position = "$"

    @contextlib.asynccontextmanager
    async def subscribe(self, since: str | None = None) -> AsyncIterator[asyncio.Queue]:
        """A queue of ``Batch`` (or ``"resync"``), starting after stream id ``since``."""
        queue: asyncio.Queue = asyncio.Queue(QUEUE_MAX)
        for item in self._replay(since):
            queue.put_nowait(item)
        self.subscribers.add(queue)
        if self.stopper is not None:
            self.stopper.cancel()
            self.stopper = None
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._follow())
        try:
            yield queue
        finally:
            self.subscribers.discard(queue)
            if not self.subscribers:
                self.stopper = asyncio.get_running_loop().call_later(LINGER_S, self.stop)

    def stop(self) -> None:
        """Stop following (no page listens); the next subscriber starts afresh."""
        if self.subscribers:
            return
        if self.task is not None:
            self.task.cancel()
        self.task, self.stopper, self.position = None, None, "$"
        self.kept.clear()

    def _replay(self, since: str | None) -> list[Batch | str]:
        if not since:
            return []
        try:
            after = stream_key(since)
        except ValueError:
            return ["resync"]
        missed = [b for b in self.kept if stream_key(b.id) > after]
        if self.kept and stream_key(self.kept[0].id) > after and len(self.kept) == KEPT_BATCHES:
            return ["resync"]  # older than what is kept
        if not self.kept and self.position == "$":
            return ["resync"]  # the follower restarted: nothing is known since then
        return missed[:QUEUE_MAX]

    def publish(self, item: Batch | str) -> None:
        if isinstance(item, Batch):
            self.kept.append(item)
        for queue in list(self.subscribers):
            try:
                queue.put_nowait(item)
            except asyncio.QueueFull:  # a stalled page: it reloads what it shows
                self._drain(queue)
                queue.put_nowait("resync")

    @staticmethod
    def _drain(queue: asyncio.Queue) -> None:
        while not queue.empty():
            queue.get_nowait()

    async def _follow(self) -> None:
        delays = None
        while True:
            redis = bus.connect(self.redis_url)
            try:
                if self.position == "$":  # pin the start, so a reconnect misses nothing
                    last = await redis.xrevrange(self.stream, count=1)
                    self.position = last[0][0].decode() if last else "0-0"
                await self._read_forever(redis)
            except FOLLOW_ERRORS as exc:  # Redis or PostgreSQL away: pages resync after
                log.warning("ui_events_error", error=f"{type(exc).__name__}: {exc}")
                delays = delays or _backoff()
                self.publish("resync")
                await asyncio.sleep(next(delays))
            finally:
                await redis.aclose()

    async def _read_forever(self, redis: Any) -> None:
        loop = asyncio.get_running_loop()
        pending, flush_at = Pending(), None
        while True:
            block = BLOCK_MS if flush_at is None else max(1, int((flush_at - loop.time()) * 1000))
            answer = await redis.xread({self.stream: self.position}, count=1000, block=block)
            for _, entries in answer or []:
                for entry_id, fields in entries:
                    self.position = entry_id.decode()
                    pending.add(self.position, fields)
            if pending.last_id and flush_at is None:
                flush_at = loop.time() + self.flush_s
            if flush_at is not None and loop.time() >= flush_at:
                await self._flush(pending)
                pending, flush_at = Pending(), None

    async def _flush(self, pending: Pending) -> None:
        if not (pending.run_pks or pending.dags):
            return
        runs = await self.resolve(sorted(pending.run_pks)) if pending.run_pks else []
        self.publish(Batch(pending.last_id or self.position, runs, pending.dags))


def _backoff():
    delay = 0.2
    while True:
        yield delay
        delay = min(delay * 2, 5.0)


async def sse_stream(hub: EventHub, since: str | None, *, heartbeat_s: float = 15.0,
                     max_s: float = 300.0) -> AsyncIterator[str]:
    """The text of ``/ui/events``: batches as SSE, a comment as heartbeat.

    Ends after ``max_s`` (the browser reconnects with the last id and misses
    nothing), so a server that stops never waits long on an open page.
    """
    loop = asyncio.get_running_loop()
    ends_at = loop.time() + max_s
    async with hub.subscribe(since) as queue:
        yield "retry: 1000\n: hello\n\n"
        while loop.time() < ends_at:
            try:
                item = await asyncio.wait_for(queue.get(), min(heartbeat_s, ends_at - loop.time()))
            except TimeoutError:
                yield ": ping\n\n"
                continue
            yield "event: resync\ndata: {}\n\n" if item == "resync" else item.sse()

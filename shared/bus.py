"""Redis streams: names, groups and the one consumer helper.

Streams carry commands and wake-ups, at least once. Losing every key loses no
data (the scheduler's reconciler re-sends what the database says is owed), so
a lost stream or group is recreated on the fly and no daemon exits for it.
Entries are acked after the database commit that handled them; entries a dead
consumer left pending are taken over by the others on a claim interval; a
malformed entry, or one whose handling raises, goes to the dead-letter stream
with the reason.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import anyio
import redis.asyncio as aioredis
import structlog
from redis.exceptions import (
    ClusterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.messages import REASON_MAX_CHARS, Message, MessageRejected, _Message, decode, encode

log = structlog.get_logger()

SCHEDULER_GROUP = "scheduler"
WORKER_GROUP = "workers"
TRIGGERER_GROUP = "triggerers"
STREAM_MAXLEN = 100_000
MAX_BLOCK_MS = 30_000  # below SOCKET_TIMEOUT_S
#: Redis unusable for a while, not a message's fault: retried, never dead-lettered. Beside a
#: lost connection (``LOADING`` is a ConnectionError), the server states a failover or a
#: full memory answer with: READONLY, OOM, MASTERDOWN and CLUSTERDOWN, TRYAGAIN.
REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError, ReadOnlyError,
                OutOfMemoryError, ClusterDownError, TryAgainError)
#: The longest pause of a consumer whose reads Redis keeps refusing (a key of the wrong type).
REFUSED_BACKOFF_MAX_S = 30.0
T = TypeVar("T")


@dataclass(frozen=True)
class Streams:
    """Every stream name, derived from one prefix (tests use one prefix each)."""

    prefix: str

    @property
    def events(self) -> str:
        return f"{self.prefix}:events"

    @property
    def triggers(self) -> str:
        return f"{self.prefix}:triggers"

    @property
    def deadletter(self) -> str:
        return f"{self.prefix}:deadletter"

    def queue(self, name: str) -> str:
        return f"{self.prefix}:queue:{name}"


SOCKET_TIMEOUT_S = 60.0  # above every XREADGROUP block time we use (at most 30 s)


def connect(url: str) -> aioredis.Redis:
    return aioredis.from_url(url, health_check_interval=30, socket_keepalive=True,
                             socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=5)


def consumer_name(kind: str) -> str:
    return f"{kind}-{socket.gethostname()}-{os.getpid()}"


async def publish(redis: aioredis.Redis, items: Iterable[tuple[str, _Message]]) -> None:
    """XADD many messages in one pipelined round trip."""
    items = list(items)
    if not items:
        return
    async with redis.pipeline(transaction=False) as pipe:
        for stream, message in items:
            pipe.xadd(stream, encode(message), maxlen=STREAM_MAXLEN, approximate=True)
        replies = await pipe.execute(raise_on_error=False)
    refused = {}
    for (stream, _), reply in zip(items, replies, strict=True):
        if isinstance(reply, REDIS_ERRORS):
            raise reply
        if isinstance(reply, Exception):
            refused[stream] = reason(reply)
    for stream, why in refused.items():  # the reconciler re-sends what the database says is owed
        log.error("stream_refused", stream=stream, error=why)


@dataclass
class Entry:
    id: bytes
    message: Message


Handler = Callable[[list[T]], Awaitable[None]]


def reason(exc: BaseException) -> str:
    """One line saying why handling failed, for the dead-letter entry and the log."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:REASON_MAX_CHARS]


async def isolate(items: list[T], handler: Handler, *,
                  transient: tuple[type[BaseException], ...]) -> list[tuple[T, Exception]]:
    """Run ``handler`` on the whole batch; if it raises, on each item alone.

    Returns the items that still raise, with their error: one bad item costs
    itself, never its batch. A ``transient`` error (a lost connection) is not the
    items' fault: it propagates, and what was not acknowledged comes back.
    """
    try:
        await handler(items)
        return []
    except transient:
        raise
    except Exception as exc:  # noqa: BLE001 - isolated below, then reported by the caller
        if len(items) == 1:
            return [(items[0], exc)]
    failures: list[tuple[T, Exception]] = []
    for item in items:
        failures += await isolate([item], handler, transient=transient)
    return failures


def _lost(exc: ResponseError) -> bool:
    """The stream or its group is gone (FLUSHALL, a restart without persistence, a failover).

    ``NOGROUP`` answers a read of a missing group; ``UNBLOCKED`` ends a read
    blocked on a key that was deleted meanwhile (Redis 7; Valkey says NOGROUP).
    """
    return str(exc).startswith(("NOGROUP", "UNBLOCKED"))


class Consumer:
    """One consumer of one group over one or more streams: the only way daemons read.

    ``read`` hands out idle entries left pending by other consumers (dead ones)
    when a claim is due, else new entries; it recreates lost streams and groups
    on the fly. ``handle`` runs a handler over what was read, dead-letters what
    cannot be handled with the reason, and acknowledges the rest.
    """

    def __init__(self, redis: aioredis.Redis, streams: list[str], group: str, name: str,
                 *, deadletter: str, count: int = 256, claim_interval_s: float = 30.0,
                 refused_backoff_s: float = 0.5):
        self.redis = redis
        self.streams = streams
        self.group = group
        self.name = name
        self.deadletter = deadletter
        self.count = count
        self.claim_interval_s = claim_interval_s
        self._claim_at = 0.0  # the first read claims what a predecessor left pending
        self._cursors = dict.fromkeys(streams, b"0-0")
        self.refused_backoff_s = refused_backoff_s
        self._refusals = 0  # reads refused in a row (see ``_refused``)

    async def ensure_groups(self) -> None:
        """Create the streams and the group where missing; a key Redis refuses is logged."""
        for stream in self.streams:
            try:
                await self.redis.xgroup_create(stream, self.group, id="0", mkstream=True)
            except REDIS_ERRORS:
                raise
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    log.error("stream_unusable", stream=stream, group=self.group,
                              error=reason(exc))

    async def read(self, block_ms: int) -> list[tuple[str, Entry]]:
        """Entries to handle: idle pending ones when a claim is due, else new ones.

        New entries are awaited up to ``block_ms`` (and never past the next
        claim); returns (stream, entry) pairs, malformed entries dead-lettered.
        """
        try:
            if time.monotonic() >= self._claim_at:
                claimed = await self.autoclaim()
                if claimed:
                    return claimed
            reply = await self.redis.xreadgroup(
                self.group, self.name, {s: ">" for s in self.streams},
                count=self.count, block=self._block_ms(block_ms),
            )
        except REDIS_ERRORS:
            raise
        except ResponseError as exc:
            if _lost(exc):
                log.warning("stream_group_recreated", group=self.group, error=str(exc))
                await self.ensure_groups()
            else:
                await self._refused(exc)
            return []
        self._refusals = 0
        return await self._decode(reply or [])

    async def _refused(self, exc: ResponseError) -> None:
        """Redis refused the read itself (WRONGTYPE: someone wrote another kind of value
        under a stream's name): one line naming the keys, a growing pause, the groups
        recreated where they can be. The key is not Sluice's to delete: the read is retried
        until whoever owns it moves it away."""
        self._refusals += 1
        delay = min(self.refused_backoff_s * 2 ** (self._refusals - 1), REFUSED_BACKOFF_MAX_S)
        wrong = [s for s in self.streams if (await self.redis.type(s)) not in (b"stream", b"none",
                                                                              "stream", "none")]
        log.error("stream_read_refused", group=self.group, keys_not_streams=wrong,
                  error=reason(exc), retry_in_s=round(delay, 2))
        await anyio.sleep(delay)
        await self.ensure_groups()

    def _block_ms(self, block_ms: int) -> int:
        until_claim_ms = (self._claim_at - time.monotonic()) * 1000
        return max(1, int(min(block_ms, until_claim_ms, MAX_BLOCK_MS)))  # 0 would block forever

    async def autoclaim(self) -> list[tuple[str, Entry]]:
        """Take over up to ``count`` entries pending longer than the claim interval.

        Each stream is scanned from where the last claim stopped; once every
        scan is through, the next claim is due half an interval later, so an
        entry left by a dead consumer is taken within 1.5 intervals of its read.
        """
        out: list[tuple[str, Entry]] = []
        for stream in self.streams:
            left = self.count - len(out)
            if left <= 0:
                break
            cursor, entries, *_ = await self.redis.xautoclaim(
                stream, self.group, self.name, int(self.claim_interval_s * 1000),
                self._cursors[stream], count=left)
            self._cursors[stream] = cursor
            if entries:
                log.info("stream_entries_reclaimed", stream=stream, count=len(entries))
                out += await self._decode([(stream, entries)])
        if all(c in (b"0-0", "0-0") for c in self._cursors.values()):
            self._claim_at = time.monotonic() + self.claim_interval_s / 2
        return out

    async def handle(self, entries: list[tuple[str, Entry]], handler: Handler, *,
                     transient: tuple[type[BaseException], ...] = REDIS_ERRORS) -> None:
        """Run ``handler`` over the entries, then acknowledge them.

        An entry whose handling raises (see ``isolate``) goes to the dead-letter
        stream with the reason, and the daemon goes on.
        """
        if not entries:
            return
        failures = await isolate(entries, handler, transient=transient)
        failed = {id(item) for item, _ in failures}
        for (stream, entry), exc in failures:
            log.error("stream_message_failed", stream=stream, entry_id=entry.id.decode(),
                      kind=entry.message.kind, error=reason(exc), exc_info=exc)
            await self._dead_letter(stream, entry.id, encode(entry.message), reason(exc))
        await self.ack([item for item in entries if id(item) not in failed])

    async def ack(self, entries: Iterable[tuple[str, Entry]]) -> None:
        by_stream: dict[str, list[bytes]] = {}
        for stream, entry in entries:
            by_stream.setdefault(stream, []).append(entry.id)
        if not by_stream:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream, ids in by_stream.items():
                pipe.xack(stream, self.group, *ids)
            await pipe.execute()

    async def _decode(self, reply) -> list[tuple[str, Entry]]:
        good: list[tuple[str, Entry]] = []
        for stream, entries in reply:
            stream = stream.decode() if isinstance(stream, bytes) else stream
            for entry_id, fields in entries:
                if fields is None:  # deleted while pending
                    await self.redis.xack(stream, self.group, entry_id)
                    continue
                try:
                    good.append((stream, Entry(entry_id, decode(fields))))
                except MessageRejected as exc:
                    log.error("stream_message_rejected", stream=stream,
                              entry_id=entry_id.decode(), error=str(exc))
                    await self._dead_letter(stream, entry_id, fields, str(exc))
        return good

    async def _dead_letter(self, stream: str, entry_id: bytes, fields: dict, why: str) -> None:
        """Keep the entry, why and where from in the dead-letter stream; then ack it.

        When Redis refuses the dead-letter stream itself (a key of another type), the
        entry is logged whole instead, then acked. A lost connection propagates (the
        entry stays pending and comes back).
        """
        payload = {_key(k): v for k, v in fields.items()}
        payload.update({b"error": why.encode(), b"source": stream.encode(), b"entry_id": entry_id,
                        b"group": self.group.encode()})
        try:
            await self.redis.xadd(self.deadletter, payload, maxlen=STREAM_MAXLEN,
                                  approximate=True)
        except REDIS_ERRORS:
            raise
        except ResponseError as exc:
            log.error("deadletter_refused", stream=self.deadletter, source=stream,
                      entry_id=entry_id.decode(), error=reason(exc), reason=why,
                      fields={k.decode(errors="replace"): v for k, v in payload.items()})
        await self.redis.xack(stream, self.group, entry_id)


def _key(key: bytes | str) -> bytes:
    return key if isinstance(key, bytes) else key.encode()


async def wait_for_redis(redis: aioredis.Redis) -> None:
    """Ping with capped exponential backoff until Redis answers."""
    delay = 0.1
    while True:
        try:
            await redis.ping()
            return
        except REDIS_ERRORS as exc:
            log.warning("redis_unavailable", error=str(exc), retry_in_s=round(delay, 2))
            await anyio.sleep(delay)
            delay = min(delay * 2, 5.0)

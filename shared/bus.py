"""Redis streams: names, groups and the one consumer helper.

Streams carry commands and wake-ups, at least once. Losing every key loses no
data (the scheduler's reconciler re-sends what the database says is owed), so
a missing group is recreated on the fly. Entries are acked after the database
commit that handled them; malformed ones go to the dead-letter stream.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass

import anyio
import redis.asyncio as aioredis
import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.messages import Message, _Message, decode, encode

log = structlog.get_logger()

SCHEDULER_GROUP = "scheduler"
WORKER_GROUP = "workers"
TRIGGERER_GROUP = "triggerers"
STREAM_MAXLEN = 100_000
REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)


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
        await pipe.execute()


@dataclass
class Entry:
    id: bytes
    message: Message


class Consumer:
    """One consumer of one group over one or more streams."""

    def __init__(self, redis: aioredis.Redis, streams: list[str], group: str, name: str,
                 *, deadletter: str, count: int = 256, claim_idle_ms: int = 60_000):
        self.redis = redis
        self.streams = streams
        self.group = group
        self.name = name
        self.deadletter = deadletter
        self.count = count
        self.claim_idle_ms = claim_idle_ms

    async def ensure_groups(self) -> None:
        for stream in self.streams:
            try:
                await self.redis.xgroup_create(stream, self.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def read(self, block_ms: int) -> list[tuple[str, Entry]]:
        """Block up to ``block_ms`` for new entries; returns (stream, entry) pairs."""
        try:
            reply = await self.redis.xreadgroup(
                self.group, self.name, {s: ">" for s in self.streams},
                count=self.count, block=min(max(1, int(block_ms)), 30_000),
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            log.warning("stream_group_missing", group=self.group)
            await self.ensure_groups()
            return []
        return await self._decode(reply or [])

    async def autoclaim(self) -> list[tuple[str, Entry]]:
        """Take over entries idle in another consumer's pending list."""
        out: list[tuple[str, Entry]] = []
        for stream in self.streams:
            try:
                reply = await self.redis.xautoclaim(
                    stream, self.group, self.name, self.claim_idle_ms, "0-0", count=self.count
                )
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                await self.ensure_groups()
                continue
            out += await self._decode([(stream, reply[1])])
        return out

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
                except ValueError as exc:
                    await self._dead_letter(stream, entry_id, fields, exc)
        return good

    async def _dead_letter(self, stream: str, entry_id: bytes, fields: dict, exc: Exception) -> None:
        log.error("stream_message_rejected", stream=stream, entry_id=entry_id.decode(),
                  error=str(exc).splitlines()[0])
        payload = {k: v for k, v in fields.items()}
        payload[b"error"] = str(exc).encode()
        payload[b"source"] = stream.encode()
        await self.redis.xadd(self.deadletter, payload, maxlen=STREAM_MAXLEN, approximate=True)
        await self.redis.xack(stream, self.group, entry_id)


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

"""The stream consumer against real Redis: decode, dead-letter, lost groups, autoclaim."""

from __future__ import annotations

from shared import bus
from shared.messages import RunChanged, RunTask


async def test_publish_read_ack_and_dead_letter(redis_url, stream_prefix):
    redis = bus.connect(redis_url)
    streams = bus.Streams(stream_prefix)
    consumer = bus.Consumer(redis, [streams.events], "g", "c1", deadletter=streams.deadletter)
    try:
        await consumer.ensure_groups()
        await consumer.ensure_groups()  # BUSYGROUP tolerated
        await bus.publish(redis, [(streams.events, RunChanged(run_pk=7))])
        await redis.xadd(streams.events, {"m": '{"kind": "no_such_kind"}'})
        await redis.xadd(streams.events, {"junk": "x"})
        got = await consumer.read(100)
        assert [e.message for _, e in got] == [RunChanged(run_pk=7)]
        await consumer.ack(got)
        dead = await redis.xrange(streams.deadletter)
        assert len(dead) == 2
        assert all(fields[b"source"] == streams.events.encode() for _, fields in dead)
        pending = await redis.xpending(streams.events, "g")
        assert pending["pending"] == 0
    finally:
        await redis.delete(streams.events, streams.deadletter)
        await redis.aclose()


async def test_group_lost_with_the_keys_is_recreated(redis_url, stream_prefix):
    redis = bus.connect(redis_url)
    streams = bus.Streams(stream_prefix)
    consumer = bus.Consumer(redis, [streams.queue("default")], "workers", "w1",
                            deadletter=streams.deadletter)
    try:
        await consumer.ensure_groups()
        await redis.delete(streams.queue("default"))  # as after FLUSHALL
        assert await consumer.read(10) == []
        await bus.publish(redis, [(streams.queue("default"), RunTask(ti_id=1, try_number=1))])
        got = await consumer.read(100)
        assert [e.message for _, e in got] == [RunTask(ti_id=1, try_number=1)]
    finally:
        await redis.delete(streams.queue("default"))
        await redis.aclose()


async def test_autoclaim_takes_over_idle_entries(redis_url, stream_prefix):
    redis = bus.connect(redis_url)
    streams = bus.Streams(stream_prefix)
    dead = bus.Consumer(redis, [streams.events], "g", "dead", deadletter=streams.deadletter)
    alive = bus.Consumer(redis, [streams.events], "g", "alive", deadletter=streams.deadletter,
                         claim_idle_ms=0)
    try:
        await dead.ensure_groups()
        await bus.publish(redis, [(streams.events, RunChanged(run_pk=1))])
        assert len(await dead.read(100)) == 1  # read, never acked: its consumer died
        taken = await alive.autoclaim()
        assert [e.message for _, e in taken] == [RunChanged(run_pk=1)]
    finally:
        await redis.delete(streams.events)
        await redis.aclose()

"""The stream consumer against real Redis: validate, dead-letter, lost streams, claims."""

from __future__ import annotations

import time

import anyio
import pytest
from structlog.testing import capture_logs

from shared import bus
from shared.messages import RunChanged, RunTask


@pytest.fixture
async def redis(redis_url, stream_prefix):
    client = bus.connect(redis_url)
    yield client
    keys = [k async for k in client.scan_iter(match=f"{stream_prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def consumer(redis, streams: bus.Streams, name: str, *stream: str, **kw) -> bus.Consumer:
    return bus.Consumer(redis, list(stream) or [streams.events], "g", name,
                        deadletter=streams.deadletter, **kw)


async def dead_letters(redis, streams: bus.Streams) -> list[dict]:
    return [fields for _, fields in await redis.xrange(streams.deadletter)]


async def test_publish_read_ack_and_dead_letter(redis, stream_prefix):
    streams = bus.Streams(stream_prefix)
    c = consumer(redis, streams, "c1")
    await c.ensure_groups()
    await c.ensure_groups()  # BUSYGROUP tolerated
    await bus.publish(redis, [(streams.events, RunChanged(run_pk=7))])
    await redis.xadd(streams.events, {"m": '{"kind": "no_such_kind"}'})
    await redis.xadd(streams.events, {"junk": "x"})
    got = await c.read(100)
    assert [e.message for _, e in got] == [RunChanged(run_pk=7)]
    await c.ack(got)
    dead = await dead_letters(redis, streams)
    assert len(dead) == 2
    assert all(fields[b"source"] == streams.events.encode() for fields in dead)
    assert (await redis.xpending(streams.events, "g"))["pending"] == 0


@pytest.mark.parametrize("raw, field", [
    ('{"kind": "run_changed", "run_pk": 9223372036854775808}', "run_changed.run_pk"),
    ('{"kind": "run_task", "ti_id": 9223372036854775808, "try_number": 1}', "run_task.ti_id"),
    ('{"kind": "run_task", "ti_id": 0, "try_number": 1}', "run_task.ti_id"),
    ('{"kind": "run_task", "ti_id": 1, "try_number": 2147483648}', "run_task.try_number"),
    ('{"kind": "run_task", "ti_id": "12", "try_number": 1}', "run_task.ti_id"),
    ('{"kind": "run_changed", "run_pk": true}', "run_changed.run_pk"),
])
async def test_ids_outside_their_columns_are_dead_lettered_with_the_field(redis, stream_prefix,
                                                                         raw, field):
    streams = bus.Streams(stream_prefix)
    c = consumer(redis, streams, "c1")
    await c.ensure_groups()
    await redis.xadd(streams.events, {"m": raw})
    assert await c.read(100) == []
    [dead] = await dead_letters(redis, streams)
    assert dead[b"m"] == raw.encode()
    assert dead[b"error"].decode().startswith(f"{field}: "), dead[b"error"]
    assert b"\n" not in dead[b"error"]
    assert (await redis.xpending(streams.events, "g"))["pending"] == 0


async def test_largest_bigint_is_a_valid_id(redis, stream_prefix):
    streams = bus.Streams(stream_prefix)
    c = consumer(redis, streams, "c1")
    await c.ensure_groups()
    await bus.publish(redis, [(streams.events, RunChanged(run_pk=2**63 - 1))])
    assert [e.message for _, e in await c.read(100)] == [RunChanged(run_pk=2**63 - 1)]


async def test_group_lost_with_the_keys_is_recreated(redis, stream_prefix):
    streams = bus.Streams(stream_prefix)
    c = consumer(redis, streams, "w1", streams.queue("default"))
    await c.ensure_groups()
    await redis.delete(streams.queue("default"))  # as after FLUSHALL
    assert await c.read(10) == []
    await bus.publish(redis, [(streams.queue("default"), RunTask(ti_id=1, try_number=1))])
    got = await c.read(100)
    assert [e.message for _, e in got] == [RunTask(ti_id=1, try_number=1)]


async def test_a_read_blocked_when_its_stream_is_deleted_goes_on(redis, redis_url,
                                                                 stream_prefix):
    """Redis 7 ends the blocked read with UNBLOCKED (Valkey with NOGROUP): both recover."""
    streams = bus.Streams(stream_prefix)
    c = consumer(redis, streams, "s1")
    await c.ensure_groups()
    await c.read(1)  # the first read claims (nothing); the next one blocks
    other = bus.connect(redis_url)
    got: list = []
    try:
        async with anyio.create_task_group() as tg:
            async def blocked_read():
                got.append(await c.read(5_000))

            tg.start_soon(blocked_read)
            await _wait_blocked(other, c.name)
            await other.delete(streams.events)
        assert got == [[]]
        await bus.publish(redis, [(streams.events, RunChanged(run_pk=3))])
        assert [e.message for _, e in await c.read(1_000)] == [RunChanged(run_pk=3)]
    finally:
        await other.aclose()


async def _wait_blocked(client, name: str) -> None:
    """Until a connection of the consumer sits in XREADGROUP (CLIENT LIST shows it)."""
    with anyio.fail_after(5):
        while True:
            clients = await client.client_list()
            if any(cl.get("cmd") == "xreadgroup" and "b" in cl.get("flags", "")
                   for cl in clients):
                return
            await anyio.sleep(0.01)


async def test_entries_of_a_dead_consumer_are_read_by_another_after_the_interval(
        redis, stream_prefix):
    streams = bus.Streams(stream_prefix)
    interval = 2.0  # far above any pause between two statements of this test
    dead = consumer(redis, streams, "dead", claim_interval_s=interval)
    alive = consumer(redis, streams, "alive", claim_interval_s=interval)
    await dead.ensure_groups()
    await dead.read(1)  # its first claim: nothing pending yet
    await bus.publish(redis, [(streams.events, RunChanged(run_pk=1))])
    assert len(await dead.read(100)) == 1  # read, never acked: its consumer died
    read_at = time.monotonic()
    assert await alive.read(1) == []  # not idle long enough yet
    taken: list = []
    with anyio.fail_after(interval * 1.5 + 10):  # a slow machine's slack, not the contract
        while not taken:
            taken = await alive.read(100)
    waited = time.monotonic() - read_at
    assert [e.message for _, e in taken] == [RunChanged(run_pk=1)]
    assert waited >= interval, "taken before it was idle for one interval"
    idle = (await redis.xpending_range(streams.events, "g", "-", "+", 1))[0]
    assert idle["consumer"] == b"alive" and idle["times_delivered"] == 2
    await alive.ack(taken)
    assert (await redis.xpending(streams.events, "g"))["pending"] == 0


async def test_a_claim_takes_no_more_than_the_consumer_asked_for(redis, stream_prefix):
    streams = bus.Streams(stream_prefix)
    queues = [streams.queue("a"), streams.queue("b")]
    dead = consumer(redis, streams, "dead", *queues)
    alive = consumer(redis, streams, "alive", *queues, claim_interval_s=0.01, count=3)
    await dead.ensure_groups()
    await bus.publish(redis, [(q, RunTask(ti_id=i, try_number=1)) for q in queues
                              for i in range(1, 5)])
    assert len(await dead.read(100)) == 8
    await anyio.sleep(0.02)
    seen = []
    for _ in range(4):
        batch = await alive.autoclaim()
        assert len(batch) <= 3
        seen += batch
        await alive.ack(batch)
    assert len(seen) == 8


async def test_a_handler_that_raises_dead_letters_only_its_entry(redis, stream_prefix):
    streams = bus.Streams(stream_prefix)
    c = consumer(redis, streams, "c1")
    await c.ensure_groups()
    await bus.publish(redis, [(streams.events, RunChanged(run_pk=pk)) for pk in (1, 2, 3)])
    handled: list[int] = []

    async def handler(entries):
        pks = [e.message.run_pk for _, e in entries]
        if 2 in pks:
            raise RuntimeError("run 2 cannot be scheduled\nsecond line")
        handled.extend(pks)

    await c.handle(await c.read(100), handler)
    assert handled == [1, 3]
    [dead] = await dead_letters(redis, streams)
    assert dead[b"error"] == b"RuntimeError: run 2 cannot be scheduled"
    assert dead[b"m"] == RunChanged(run_pk=2).model_dump_json().encode()
    assert dead[b"source"] == streams.events.encode()
    assert (await redis.xpending(streams.events, "g"))["pending"] == 0


async def test_a_transient_error_leaves_the_entries_pending(redis, stream_prefix):
    streams = bus.Streams(stream_prefix)
    c = consumer(redis, streams, "c1")
    await c.ensure_groups()
    await bus.publish(redis, [(streams.events, RunChanged(run_pk=1))])

    async def handler(entries):
        raise ConnectionResetError("database gone")

    with pytest.raises(ConnectionResetError):
        await c.handle(await c.read(100), handler, transient=(OSError,))
    assert await dead_letters(redis, streams) == []
    assert (await redis.xpending(streams.events, "g"))["pending"] == 1


async def test_a_stream_key_of_another_type_stops_no_reader(redis, stream_prefix):
    """``SET <prefix>:events x``: the read is refused (WRONGTYPE), logged, retried; never raised."""
    streams = bus.Streams(stream_prefix)
    c = consumer(redis, streams, "c1", refused_backoff_s=0.01)
    await c.ensure_groups()
    await redis.delete(streams.events)
    await redis.set(streams.events, "x")
    with capture_logs() as logs:
        assert await c.read(10) == []
        assert await c.read(10) == []
        await c.ensure_groups()
    refused = [e for e in logs if e["event"] == "stream_read_refused"]
    assert len(refused) == 2 and refused[0]["keys_not_streams"] == [streams.events]
    assert refused[0]["error"].startswith("ResponseError: WRONGTYPE")
    assert await redis.get(streams.events) == b"x"  # not ours to delete
    await redis.delete(streams.events)
    assert await c.read(10) == []  # the group is recreated
    await bus.publish(redis, [(streams.events, RunChanged(run_pk=5))])
    assert [e.message for _, e in await c.read(1_000)] == [RunChanged(run_pk=5)]


async def test_a_publish_redis_refuses_is_logged_not_raised(redis, stream_prefix):
    streams = bus.Streams(stream_prefix)
    await redis.set(streams.events, "x")
    with capture_logs() as logs:
        await bus.publish(redis, [(streams.events, RunChanged(run_pk=1)),
                                  (streams.triggers, RunChanged(run_pk=2))])
    assert [e["stream"] for e in logs if e["event"] == "stream_refused"] == [streams.events]
    assert await redis.xlen(streams.triggers) == 1


async def test_a_dead_letter_stream_redis_refuses_does_not_escape(redis, stream_prefix):
    streams = bus.Streams(stream_prefix)
    c = consumer(redis, streams, "c1")
    await c.ensure_groups()
    await bus.publish(redis, [(streams.events, RunChanged(run_pk=1))])
    await redis.set(streams.deadletter, "x")

    async def handler(entries):
        raise RuntimeError("bad run")

    with capture_logs() as logs:
        await c.handle(await c.read(100), handler)
    [refused] = [e for e in logs if e["event"] == "deadletter_refused"]
    assert refused["reason"] == "RuntimeError: bad run"
    assert (await redis.xpending(streams.events, "g"))["pending"] == 0


#: Error replies of a Redis that is failing over, full or loading: the server's state.
SERVER_STATES = ["READONLY You can't write against a read only replica.",
                 "OOM command not allowed when used memory > 'maxmemory'.",
                 "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
                 "LOADING Redis is loading the dataset in memory",
                 "TRYAGAIN Multiple keys request during rehashing of slot",
                 "CLUSTERDOWN The cluster is down"]


@pytest.mark.parametrize("reply", SERVER_STATES)
async def test_server_state_replies_are_transient_not_the_messages_fault(redis, stream_prefix,
                                                                         reply):
    """A handler's publish answered READONLY (a failover): the entry stays pending for a
    retry, nothing is dead-lettered. The reply is a real one, sent by Redis from a script."""
    streams = bus.Streams(stream_prefix)
    c = consumer(redis, streams, "c1")
    await c.ensure_groups()
    await bus.publish(redis, [(streams.events, RunChanged(run_pk=1))])

    async def handler(entries):
        await redis.eval("return redis.error_reply(ARGV[1])", 0, reply)

    with pytest.raises(bus.REDIS_ERRORS):
        await c.handle(await c.read(100), handler)
    assert await dead_letters(redis, streams) == []
    assert (await redis.xpending(streams.events, "g"))["pending"] == 1

"""The writer's stream consumer against a real Redis: pending entries first, XAUTOCLAIM of a dead
consumer's entries, the group recreated after NOGROUP, acks."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis

from shared.names import WRITER_GROUP
from writer.consumer import Entry, StreamConsumer


def consumer(redis: aioredis.Redis, streams: list[str], name: str, **kw: Any) -> StreamConsumer:
    return StreamConsumer(redis, streams, name, batch=kw.pop("batch", 10), block_ms=50, **kw)


async def add(redis: aioredis.Redis, stream: str, n: int, start: int = 0) -> list[str]:
    ids = [await redis.xadd(stream, {"n": str(i)}) for i in range(start, start + n)]
    return [i.decode() for i in ids]


def numbers(entries: list[Entry]) -> list[int]:
    return [int(e.fields[b"n"]) for e in entries]


async def pending_of(redis: aioredis.Redis, stream: str) -> dict[str, int]:
    """Pending entries by consumer name."""
    rows = await redis.xpending_range(stream, WRITER_GROUP, "-", "+", 1000)
    out: dict[str, int] = {}
    for r in rows:
        name = r["consumer"].decode()
        out[name] = out.get(name, 0) + 1
    return out


async def test_a_restarted_consumer_reads_its_pending_entries_first(
    redis: aioredis.Redis, prefix: str
) -> None:
    greeks, logs = f"{prefix}greeks", f"{prefix}api_logs"
    first = consumer(redis, [greeks, logs], "writer-1")
    await first.ensure_groups()
    await add(redis, greeks, 3)
    await add(redis, logs, 2, start=100)
    got = await first.read()
    assert sorted(numbers(got)) == [0, 1, 2, 100, 101]
    assert {e.stream for e in got} == {greeks, logs}
    # "restarted" without acking; a new entry arrives meanwhile
    await add(redis, greeks, 1, start=3)
    again = consumer(redis, [greeks, logs], "writer-1")
    await again.ensure_groups()  # BUSYGROUP is fine
    replay = await again.read()
    assert sorted(numbers(replay)) == [0, 1, 2, 100, 101], "the pending entries, not the new one"
    assert [e.id for e in replay if e.stream == greeks] == [e.id for e in got if e.stream == greeks]
    await again.ack(replay)
    assert await pending_of(redis, greeks) == {}
    assert await pending_of(redis, logs) == {}
    assert numbers(await again.read()) == [3]
    assert await again.read() == []  # nothing left: an empty blocking read


async def test_a_dead_consumers_entries_are_claimed_once_idle(
    redis: aioredis.Redis, prefix: str
) -> None:
    stream = f"{prefix}greeks"
    dead = consumer(redis, [stream], "writer-old")
    await dead.ensure_groups()
    await add(redis, stream, 4)
    assert numbers(await dead.read()) == [0, 1, 2, 3]  # delivered, never acked: it died
    alive = consumer(redis, [stream], "writer-new", claim_idle_ms=300)
    await alive.ensure_groups()
    assert await alive.read() == [], "not idle long enough to be claimed"
    assert await pending_of(redis, stream) == {"writer-old": 4}
    await asyncio.sleep(0.4)
    claimed = await alive.read()
    assert numbers(claimed) == [0, 1, 2, 3]
    assert await pending_of(redis, stream) == {"writer-new": 4}
    await alive.ack(claimed)
    assert await pending_of(redis, stream) == {}
    await asyncio.sleep(0.4)
    assert await alive.read() == []  # claimed once, acked: nothing comes back


async def test_a_claimed_entry_deleted_meanwhile_leaves_nothing_pending(
    redis: aioredis.Redis, prefix: str
) -> None:
    stream = f"{prefix}greeks"
    dead = consumer(redis, [stream], "writer-old")
    await dead.ensure_groups()
    ids = await add(redis, stream, 3)
    await dead.read()
    await redis.xdel(stream, ids[1])  # deleted while pending (e.g. trimmed by hand)
    alive = consumer(redis, [stream], "writer-new", claim_idle_ms=100)
    await asyncio.sleep(0.2)
    got = await alive.read()
    assert numbers([e for e in got if e.fields]) == [0, 2]
    # Redis 7 reports the deleted id to XAUTOCLAIM (acked there); Redis 6.2 hands the entry back
    # without its fields (the writer dead-letters it as malformed and acks it)
    assert [e.id for e in got if not e.fields] in ([], [ids[1]])
    await alive.ack(got)
    assert await pending_of(redis, stream) == {}


async def test_nogroup_recreates_the_group_from_0(redis: aioredis.Redis, prefix: str) -> None:
    stream = f"{prefix}greeks"
    reader = consumer(redis, [stream], "writer-1")
    await reader.ensure_groups()
    await add(redis, stream, 2)
    await reader.ack(await reader.read())
    await redis.delete(stream)  # Redis restarted empty: the stream and its group are gone
    assert await redis.exists(stream) == 0
    assert await reader.read() == []
    groups = await redis.xinfo_groups(stream)
    assert [g["name"].decode() for g in groups] == [WRITER_GROUP]
    await add(redis, stream, 2, start=10)
    assert numbers(await reader.read()) == [10, 11]


async def test_nogroup_on_the_pending_read_recreates_the_group(
    redis: aioredis.Redis, prefix: str
) -> None:
    stream = f"{prefix}greeks"
    await redis.xadd(stream, {"n": "0"})  # the stream exists, the group does not
    reader = consumer(redis, [stream], "writer-1")  # pending-first from the start
    got = await reader.read()
    assert [g["name"].decode() for g in await redis.xinfo_groups(stream)] == [WRITER_GROUP]
    assert numbers(got) == [0], "from 0: the entry older than the group"
    assert await pending_of(redis, stream) == {"writer-1": 1}


async def test_ack_takes_entries_of_several_streams(redis: aioredis.Redis, prefix: str) -> None:
    greeks, logs = f"{prefix}greeks", f"{prefix}api_logs"
    reader = consumer(redis, [greeks, logs], "writer-1")
    await reader.ensure_groups()
    await add(redis, greeks, 3)
    await add(redis, logs, 3, start=100)
    got = await reader.read()
    await reader.ack([e for e in got if numbers([e])[0] in (0, 100, 101)])
    assert await pending_of(redis, greeks) == {"writer-1": 2}
    assert await pending_of(redis, logs) == {"writer-1": 1}


async def ids_in(redis: aioredis.Redis, stream: str) -> list[str]:
    return [i.decode() for i, _ in await redis.xrange(stream)]


async def test_trim_keeps_pending_and_undelivered_entries_of_every_consumer(
    redis: aioredis.Redis, prefix: str
) -> None:
    """A retention of 0 ms: only the unacknowledged and the undelivered entries hold the trim."""
    stream = f"{prefix}greeks"
    a = consumer(redis, [stream], "writer-a", batch=4, retention_ms=0)
    b = consumer(redis, [stream], "writer-b", batch=3, retention_ms=0)
    await a.ensure_groups()
    ids = await add(redis, stream, 10)
    got_a = await a.read()  # 0-3
    got_b = await b.read()  # 4-6; 7-9 never delivered
    assert (numbers(got_a), numbers(got_b)) == ([0, 1, 2, 3], [4, 5, 6])
    await a.ack(got_a[:2])  # 2, 3 pending with a
    await b.ack([got_b[0], got_b[2]])  # 5 pending with b
    await a.trim(every_s=0)
    assert await ids_in(redis, stream) == ids[2:], "acked 0 and 1 went; a's pending 2 stays"
    await a.ack(got_a[2:])
    await b.trim(every_s=0)
    assert await ids_in(redis, stream) == ids[5:], "b's pending 5 holds the trim"
    await b.ack([got_b[1]])
    await a.trim(every_s=0)
    assert await ids_in(redis, stream) == ids[7:], "never delivered: kept"
    assert numbers(await b.read()) == [7, 8, 9]


async def test_trim_keeps_what_another_group_has_not_read(
    redis: aioredis.Redis, prefix: str
) -> None:
    stream = f"{prefix}greeks"
    reader = consumer(redis, [stream], "writer-1", retention_ms=0)
    await reader.ensure_groups()
    await redis.xgroup_create(stream, "audit", id="0")
    ids = await add(redis, stream, 5)
    await reader.ack(await reader.read())
    await reader.trim(every_s=0)
    assert await ids_in(redis, stream) == ids, "the other group has read nothing"


async def test_trim_keeps_acked_entries_within_the_retention(
    redis: aioredis.Redis, prefix: str
) -> None:
    stream = f"{prefix}greeks"
    default = consumer(redis, [stream], "writer-1")
    assert default.retention_ms == 24 * 3600 * 1000
    await default.ensure_groups()
    ids = await add(redis, stream, 5)
    await default.ack(await default.read())
    await default.trim(every_s=0)
    assert await ids_in(redis, stream) == ids, "acked, but younger than a day"
    await consumer(redis, [stream], "writer-1", retention_ms=0).trim(every_s=0)
    assert await ids_in(redis, stream) == []

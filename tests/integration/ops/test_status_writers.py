"""`bridge status` with several writers, read from a real Redis: each consumer of the group with
its pending entries and its own heartbeat; a stopped writer with pending entries degrades the
bridge; a writer of an older version (the single heartbeat key) is never called dead."""

from __future__ import annotations

from pathlib import Path

import redis.asyncio as aioredis

from ops.status import classify, gather, render
from shared.config import load_settings
from shared.names import WRITER_GROUP, Keys


async def two_consumers(redis: aioredis.Redis, keys: Keys) -> None:
    """writer-a and writer-b each read (and keep pending) entries of `greeks`."""
    await redis.xgroup_create(keys.greeks, WRITER_GROUP, id="0", mkstream=True)
    for i in range(5):
        await redis.xadd(keys.greeks, {"n": str(i)})
    await redis.xreadgroup(WRITER_GROUP, "writer-a", {keys.greeks: ">"}, count=2)
    await redis.xreadgroup(WRITER_GROUP, "writer-b", {keys.greeks: ">"}, count=3)


async def test_each_writer_is_listed_and_a_stopped_one_with_pending_entries_degrades(
    pg_url: str, redis_url: str, redis: aioredis.Redis, prefix: str, tmp_path: Path
) -> None:
    keys = Keys(prefix)
    await two_consumers(redis, keys)
    await redis.set(keys.writer_heartbeat_of("writer-a"), "2026-12-02T10:00:00+00:00", px=30_000)
    await redis.hset(keys.writer_state_of("writer-a"), mapping={"breaker": "closed"})
    await redis.hset(keys.writer_state_of("writer-b"), mapping={"buffer_rows": "7"})
    settings = load_settings(
        {"DATABASE_URL": pg_url, "REDIS_URL": redis_url, "BRIDGE_REDIS_PREFIX": prefix},
        dotenv=None,
    )
    r = await gather(settings)
    assert r.writer_alive is True
    assert r.writers["writer-a"].alive is True and r.writers["writer-a"].pending == 2
    assert r.writers["writer-b"].alive is False and r.writers["writer-b"].pending == 3
    _, reasons = classify(r)
    assert any("writer writer-b is not running: its 3 pending" in x for x in reasons), reasons
    assert any("writer-b is not running and its buffer holds 7 rows" in x for x in reasons)
    assert not any("writer-a" in x for x in reasons)
    shown = render(r)
    assert "writer writer-a" in shown and "NOT RUNNING, 3 pending" in shown

    # a writer of an older version: only the single heartbeat key, no name of its own
    await redis.delete(keys.writer_heartbeat_of("writer-a"))
    await redis.set(keys.writer_heartbeat, "2026-12-02T10:00:00+00:00", px=30_000)
    r = await gather(settings)
    assert r.writer_alive is True
    assert {v.alive for v in r.writers.values()} == {None}, "unknown, never dead"
    _, reasons = classify(r)
    assert not any("writer" in x for x in reasons), reasons

    await redis.delete(keys.writer_heartbeat)
    r = await gather(settings)
    assert r.writer_alive is False
    assert any("writer heartbeat missing" in x for x in classify(r)[1])

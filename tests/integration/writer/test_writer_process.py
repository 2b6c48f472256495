"""The writer as a real process between a real Redis and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import redis.asyncio as aioredis

from ops.embedded import RedisServer
from shared.codec import encode_greeks
from shared.models import GreeksRow
from shared.names import WRITER_GROUP, Keys
from tests.helpers import bridge_env, wait_for

T0 = datetime(2026, 11, 25, 14, 30, tzinfo=UTC)
Spawn = Callable[..., subprocess.Popen[bytes]]


def rows(n: int, start: int = 0) -> list[dict[str, str]]:
    return [
        encode_greeks(
            GreeksRow(
                T0 + timedelta(seconds=5 * i),
                "PORTFOLIO",
                float(i),
                0.25,
                -3.5,
                12.0,
                600.0 + i / 100,
                "DU1234567",
                "SOCKET",
            )
        )
        for i in range(start, start + n)
    ]


async def xadd_all(redis: aioredis.Redis, stream: str, entries: list[dict[str, str]]) -> None:
    for i in range(0, len(entries), 1000):
        async with redis.pipeline(transaction=False) as pipe:
            for fields in entries[i : i + 1000]:
                pipe.xadd(stream, fields)  # type: ignore[arg-type]
            await pipe.execute()


async def count(pg_url: str, sql: str = "SELECT count(*) FROM portfolio_greeks") -> int:
    conn = await asyncpg.connect(pg_url)
    try:
        return int(await conn.fetchval(sql))
    except asyncpg.UndefinedTableError:
        return 0
    finally:
        await conn.close()


async def pending(redis: aioredis.Redis, stream: str) -> int:
    info = await redis.xpending(stream, WRITER_GROUP)
    return int(info["pending"])


def writer_env(pg_url: str, redis_url: str, prefix: str, **extra: str) -> dict[str, str]:
    # the buffer is `spawn`'s: under the test's tmp_path, shared by its writers, never the
    # operator's ~/.portfolio_bridge_buffer.jsonl
    env = {
        "DATABASE_URL": pg_url,
        "REDIS_URL": redis_url,
        "BRIDGE_REDIS_PREFIX": prefix,
        "BRIDGE_CLAIM_IDLE_S": "1",
        "BRIDGE_WRITER_BATCH": "500",
    }
    return bridge_env(**{**env, **extra})


async def test_10000_rows_exactly_once_and_replay_is_idempotent(
    spawn: Spawn, pg_url: str, redis_url: str, redis: aioredis.Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    entries = rows(10_000)
    await xadd_all(redis, keys.greeks, entries)
    spawn("writer", writer_env(pg_url, redis_url, prefix))
    await wait_for(lambda: _eq(count(pg_url), 10_000), 120, "10,000 rows")
    await xadd_all(redis, keys.greeks, entries[:2_000])  # the same ticks delivered again
    await wait_for(lambda: _zero(pending(redis, keys.greeks)), 60, "no pending entries")
    await wait_for(lambda: _all_delivered(redis, keys.greeks), 30, "all read")
    await _settle(redis, keys.greeks)
    assert await count(pg_url) == 10_000
    ordered = await count(
        pg_url,
        """
        SELECT count(*) FROM (SELECT id, timestamp, lag(timestamp) OVER (ORDER BY id) AS prev
        FROM portfolio_greeks) s WHERE prev > timestamp""",
    )
    assert ordered == 0, "id order differs from timestamp order"


async def writer_waiting_on_a_lock(pg_url: str) -> bool:
    return (
        await count(
            pg_url,
            """SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
           AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO portfolio_greeks%'""",
        )
        > 0
    )


async def test_killed_after_commit_before_ack_then_restarted(
    spawn: Spawn, pg_url: str, private_redis: RedisServer, prefix: str
) -> None:
    """The writer dies between its COMMIT and its XACK: Redis stops taking writes (CLIENT PAUSE
    WRITE, on a Redis of this test alone) while the writer's INSERT is held by a lock of the
    test, so the XACK that follows the COMMIT blocks; then kill -9."""
    keys = Keys(prefix)
    url = private_redis.url()
    redis = aioredis.Redis.from_url(url)
    try:
        crashing = spawn("writer", writer_env(pg_url, url, prefix))
        beat = keys.writer_heartbeat_of("writer-1")
        await wait_for(lambda: redis.exists(beat), 30, "the writer's start")
        blocker = await asyncpg.connect(pg_url)
        hold = blocker.transaction()
        await hold.start()
        await blocker.execute("LOCK TABLE portfolio_greeks IN SHARE ROW EXCLUSIVE MODE")
        try:
            await xadd_all(redis, keys.greeks, rows(3_000))
            await wait_for(lambda: writer_waiting_on_a_lock(pg_url), 30, "the first INSERT held")
            # the batch was delivered (XREADGROUP is a write: it had to happen before the pause)
            held = await pending(redis, keys.greeks)
            assert held > 0
            await redis.client_pause(120_000, all=False)
        finally:
            await hold.rollback()  # the INSERT goes on and commits; the XACK waits
            await blocker.close()
        try:
            await wait_for(lambda: _eq(count(pg_url), held), 30, "the first batch committed")
            await asyncio.sleep(0.5)  # the XACK, were it not paused, would be done by now
            assert await pending(redis, keys.greeks) == held, "the batch must still be unacked"
            crashing.send_signal(signal.SIGKILL)
            await asyncio.to_thread(crashing.wait, 10)
        finally:
            await redis.client_unpause()
        assert crashing.returncode == -signal.SIGKILL
        assert await count(pg_url) == held
        assert await pending(redis, keys.greeks) == held
        spawn("writer", writer_env(pg_url, url, prefix))
        await wait_for(lambda: _eq(count(pg_url), 3_000), 60, "3,000 rows")
        await wait_for(lambda: _zero(pending(redis, keys.greeks)), 30, "no pending entries")
        assert await count(pg_url) == 3_000
        distinct = "SELECT count(DISTINCT timestamp) FROM portfolio_greeks"
        assert await count(pg_url, distinct) == 3_000
    finally:
        await redis.aclose()


async def test_kill_9_in_mid_flow_loses_and_duplicates_nothing(
    spawn: Spawn, pg_url: str, redis_url: str, redis: aioredis.Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    first = spawn("writer", writer_env(pg_url, redis_url, prefix, BRIDGE_WRITER_BATCH="50"))
    produced = rows(4_000)
    for i in range(0, 4_000, 200):
        await xadd_all(redis, keys.greeks, produced[i : i + 200])
        if i == 1_600:
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            spawn("writer", writer_env(pg_url, redis_url, prefix, BRIDGE_WRITER_BATCH="50"))
    await wait_for(lambda: _eq(count(pg_url), 4_000), 90, "4,000 rows")
    await wait_for(lambda: _zero(pending(redis, keys.greeks)), 30, "no pending entries")
    assert await count(pg_url, "SELECT count(DISTINCT timestamp) FROM portfolio_greeks") == 4_000


async def test_malformed_entry_goes_to_dead_letters_with_a_warn(
    spawn: Spawn, pg_url: str, redis_url: str, redis: aioredis.Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    good = rows(3)
    await xadd_all(redis, keys.greeks, [good[0], {**good[1], "delta": "lots"}, good[2]])
    spawn("writer", writer_env(pg_url, redis_url, prefix))
    await wait_for(lambda: _eq(count(pg_url), 2), 60, "the two good rows")
    await wait_for(lambda: _zero(pending(redis, keys.greeks)), 30, "all acked")
    dead = await redis.xrange(keys.dead)
    assert len(dead) == 1
    fields = dead[0][1]
    assert b"delta" in fields[b"reason"] and fields[b"f.delta"] == b"lots"
    warn_sql = (
        "SELECT count(*) FROM api_logs WHERE status = 'WARN' AND message LIKE '%dead letter%'"
    )
    await wait_for(lambda: _eq(count(pg_url, warn_sql), 1), 30, "the WARN row")


async def test_redis_restarted_empty_group_recreated(
    spawn: Spawn, pg_url: str, private_redis: RedisServer, prefix: str
) -> None:
    keys = Keys(prefix)
    url = private_redis.url()
    client = aioredis.Redis.from_url(url)
    try:
        await xadd_all(client, keys.greeks, rows(100))
        spawn("writer", writer_env(pg_url, url, prefix))
        await wait_for(lambda: _eq(count(pg_url), 100), 60, "first 100 rows")
        private_redis.kill()  # no persistence: it comes back empty
        private_redis.start()
        await client.aclose()
        client = aioredis.Redis.from_url(url)
        assert await client.exists(keys.greeks) == 0
        await xadd_all(client, keys.greeks, rows(100, start=100))
        await wait_for(lambda: _eq(count(pg_url), 200), 60, "rows after the Redis restart")
        groups = await client.xinfo_groups(keys.greeks)
        assert [g["name"] for g in groups] == [WRITER_GROUP.encode()]
    finally:
        await client.aclose()


async def test_sigterm_finishes_batch_and_exits_0_within_5s(
    spawn: Spawn, pg_url: str, redis_url: str, redis: aioredis.Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    proc = spawn("writer", writer_env(pg_url, redis_url, prefix))
    await xadd_all(redis, keys.greeks, rows(2_000))
    await wait_for(lambda: _gt(count(pg_url), 0), 60, "writing started")
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    await wait_for(lambda: proc.poll() is not None, 5, "exit after SIGTERM")
    assert proc.returncode == 0
    assert time.monotonic() - start < 5
    stored = await count(pg_url)
    unacked = await pending(redis, keys.greeks)
    assert unacked == 0, "the batch in hand must be acked before exit"
    # every entry handed to the writer was stored before it was acked
    assert stored == await delivered(redis, keys.greeks)


async def _eq(value: object, expected: int) -> bool:
    return await value == expected  # type: ignore[misc]


async def _gt(value: object, floor: int) -> bool:
    return await value > floor  # type: ignore[misc,operator]


async def _zero(value: object) -> bool:
    return await value == 0  # type: ignore[misc]


async def delivered(redis: aioredis.Redis, stream: str) -> int:
    """How many entries the group has been handed (all ids up to last-delivered-id)."""
    info = await redis.xinfo_groups(stream)
    last = info[0]["last-delivered-id"]
    return len(await redis.xrange(stream, max=last))


async def _all_delivered(redis: aioredis.Redis, stream: str) -> bool:
    return await delivered(redis, stream) == await redis.xlen(stream)


async def _settle(redis: aioredis.Redis, stream: str) -> None:
    await wait_for(lambda: _zero(pending(redis, stream)), 30, "settled")

"""Two writers in the consumer group, each with its own consumer name and buffer, behind the
collector (SOCKET, 0.5 s cadence) and the IB Gateway simulator: one of them is killed (kill -9)
again and again and restarted under its name, then killed for good while it holds entries read
but not stored. Every tick lands exactly once (each grid slot from the first row to the last
holds one row), and the dead writer's pending entries are claimed by the other."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable

import asyncpg
import redis.asyncio as aioredis

from shared.names import WRITER_GROUP, Keys
from tests.chaos.checks import grid
from tests.e2e.test_socket_pipeline import bridge_envs, portfolio_rows
from tests.fixtures import Gateway
from tests.helpers import wait_for

Spawn = Callable[..., subprocess.Popen[bytes]]
POLL_S = 0.5
KILLS = 4


def writer(spawn: Spawn, env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
    return spawn(
        "writer",
        {**env, "BRIDGE_WRITER_CONSUMER": name, "BRIDGE_BUFFER_PATH": f"{name}.jsonl"},
        log_name=name,
    )


async def pending_of(redis: aioredis.Redis, stream: str, name: str) -> int:
    consumers = await redis.xinfo_consumers(stream, WRITER_GROUP)
    return sum(int(c["pending"]) for c in consumers if c["name"] in (name, name.encode()))


async def backlog(redis: aioredis.Redis, keys: Keys) -> int:
    """Entries pending or not yet delivered, over both data streams."""
    total = 0
    for stream in keys.data_streams:
        total += int((await redis.xpending(stream, WRITER_GROUP))["pending"])
        group = (await redis.xinfo_groups(stream))[0]
        total += len(await redis.xrange(stream, min=f"({group['last-delivered-id'].decode()}"))
    return total


async def _above(value: object, floor: int) -> bool:
    return await value > floor  # type: ignore[misc,operator]


async def _is(value: object, expected: object) -> bool:
    return await value == expected  # type: ignore[misc]


async def test_two_writers_one_killed_repeatedly_every_tick_lands_once(
    spawn: Spawn,
    pg_url: str,
    redis_url: str,
    redis: aioredis.Redis,
    prefix: str,
    gateway: Gateway,
) -> None:
    keys = Keys(prefix)
    env = bridge_envs(pg_url, redis_url, prefix, gateway.port)
    writer(spawn, env, "writer-a")
    victim = writer(spawn, env, "writer-b")
    collector = spawn("collector", env)
    await wait_for(lambda: _rows_above(pg_url, 2), 60, "the first PORTFOLIO rows")

    for _ in range(KILLS):  # kill -9 at a moment of no choosing, restart under its name
        seen = len(await portfolio_rows(pg_url))
        await wait_for(lambda n=seen: _rows_above(pg_url, n + 4), 30, "more rows")  # type: ignore[misc]
        victim.kill()
        victim.wait(10)
        victim = writer(spawn, env, "writer-b")

    # killed for good while it holds entries read but not stored: the INSERTs wait on a lock
    blocker = await asyncpg.connect(pg_url)
    hold = blocker.transaction()
    await hold.start()
    await blocker.execute("LOCK TABLE portfolio_greeks IN SHARE ROW EXCLUSIVE MODE")
    try:
        await wait_for(lambda: _above(pending_of(redis, keys.greeks, "writer-b"), 0), 30, "b reads")
        victim.kill()
        victim.wait(10)
        held = await pending_of(redis, keys.greeks, "writer-b")
    finally:
        await hold.rollback()
        await blocker.close()
    assert held > 0
    # writer-a claims them after BRIDGE_CLAIM_IDLE_S (1 s)
    await wait_for(lambda: _is(pending_of(redis, keys.greeks, "writer-b"), 0), 30, "the claim")

    collector.send_signal(signal.SIGTERM)
    assert collector.wait(30) == 0
    await wait_for(lambda: _is(backlog(redis, keys), 0), 60, "every entry stored and acked")
    rows = await portfolio_rows(pg_url)
    counted: dict[object, int] = {}
    for r in rows:
        counted[r["timestamp"]] = counted.get(r["timestamp"], 0) + 1
    slots = grid(sorted(counted.items()), POLL_S, [])  # type: ignore[arg-type]
    assert slots.problems() == [], slots.problems()
    assert slots.rows == slots.slots == len(rows) > 20
    assert await redis.xlen(keys.dead) == 0


async def _rows_above(pg_url: str, n: int) -> bool:
    return len(await portfolio_rows(pg_url)) > n

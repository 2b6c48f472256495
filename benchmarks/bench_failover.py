"""Beyond one machine, in figures: a PostgreSQL switchover under a running writer, and a stream
backlog drained by two writers against one.

    .venv/bin/python benchmarks/bench_failover.py [--rows 200000] [--down-s 5] [--retry-s 1]

1. Switchover: a primary and a streaming standby (pg_basebackup), private to this run; the real
   writer (`python -m writer`) with DATABASE_URL listing both hosts and
   `target_session_attrs=read-write`; entries XADDed at a steady cadence (`--cadence-s`).
   The primary is stopped (fast shutdown), the standby promoted `--down-s` later. Printed: when
   the breaker opened, the rows buffered, the time from the promotion (and from the stop) to the
   buffer drained and the breaker closed, and the rows in the new primary (each once?).
2. Backlog: N entries in a stream, consumed into a fresh database by one writer, then (same N,
   another prefix and database) by two writers of the group: rows/s of each.

Prints figures; asserts nothing (that is what benchmarks are for).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis

from ops.embedded import PostgresServer, RedisServer
from shared.codec import encode_greeks
from shared.models import GreeksRow
from shared.names import Keys

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def entry(i: int) -> dict[str, str]:
    row = GreeksRow(T0 + timedelta(seconds=5 * i), "PORTFOLIO", float(i), 0.5, -12.0, 3.0, 600.0)
    return encode_greeks(row)


def start_writer(
    work: Path, db: str, redis: str, prefix: str, name: str, retry_s: float
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": db,
        "REDIS_URL": redis,
        "BRIDGE_REDIS_PREFIX": prefix,
        "BRIDGE_WRITER_CONSUMER": name,
        "BRIDGE_BUFFER_PATH": str(work / f"{prefix.strip(':')}-{name}.jsonl"),
        "BRIDGE_FLUSH_RETRY_S": str(retry_s),
        "BRIDGE_CLAIM_IDLE_S": "5",
        "BRIDGE_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen([sys.executable, "-m", "writer"], env=env, cwd=work)


async def count(url: str) -> tuple[int, int]:
    with contextlib.suppress(OSError, asyncpg.PostgresError):
        conn = await asyncpg.connect(url, timeout=2)
        try:
            return tuple(
                await conn.fetchrow(
                    "SELECT count(*), count(DISTINCT timestamp) FROM portfolio_greeks"
                )
            )
        finally:
            await conn.close()
    return -1, -1


async def until(predicate: object, timeout_s: float, every_s: float = 0.05) -> float:
    """Poll an async predicate (a zero-argument callable); the monotonic time it became true."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if await predicate():  # type: ignore[operator]
            return time.monotonic()
        await asyncio.sleep(every_s)
    raise TimeoutError("not reached")


async def switchover(work: Path, rd: RedisServer, args: argparse.Namespace) -> None:
    primary, standby = PostgresServer(work / "primary"), PostgresServer(work / "standby")
    primary.start()
    standby.init_standby(primary.port)
    standby.start()
    url = (
        f"postgresql://postgres@127.0.0.1:{primary.port},127.0.0.1:{standby.port}/postgres"
        "?target_session_attrs=read-write"
    )
    keys = Keys("failover:")
    redis = aioredis.Redis.from_url(rd.url())
    writer = start_writer(work, url, rd.url(), keys.prefix, "writer-1", args.retry_s)
    state = keys.writer_state_of("writer-1")
    sent = 0
    stop_feed = asyncio.Event()

    async def feed() -> None:
        nonlocal sent
        while not stop_feed.is_set():
            await redis.xadd(keys.greeks, entry(sent))  # type: ignore[arg-type]
            sent += 1
            await asyncio.sleep(args.cadence_s)

    feeding = asyncio.create_task(feed())
    try:
        await until(lambda: _has_rows(primary.url(), 20), 60)
        t_stop = time.monotonic()
        await asyncio.to_thread(primary.stop)
        t_open = await until(lambda: _field_is(redis, state, "breaker", "open"), 60)
        await asyncio.sleep(max(args.down_s - (time.monotonic() - t_stop), 0))
        conn = await asyncpg.connect(standby.url())
        peak = int(await redis.hget(state, "buffer_rows") or 0)
        t_promote = time.monotonic()
        await conn.fetchval("SELECT pg_promote()")
        await conn.close()
        t_closed = await until(lambda: _drained(redis, state), 120)
        stop_feed.set()
        await feeding
        total = sent
        await until(lambda: _eq(count(url), (total, total)), 60)
        rows, distinct = await count(url)
        print(
            f"switchover: fed at {1 / args.cadence_s:.0f} rows/s; "
            f"BRIDGE_FLUSH_RETRY_S={args.retry_s:g}"
        )
        print(f"  breaker open {t_open - t_stop:.2f} s after the primary's stop")
        print(
            f"  standby promoted {t_promote - t_stop:.2f} s after the stop; "
            f"{peak} rows buffered then"
        )
        print(
            f"  buffer drained, breaker closed {t_closed - t_promote:.2f} s after the promotion "
            f"({t_closed - t_stop:.2f} s after the stop)"
        )
        print(f"  new primary: {rows} rows, {distinct} distinct, of {total} sent")
    finally:
        stop_feed.set()
        with contextlib.suppress(BaseException):
            await feeding
        writer.terminate()
        writer.wait(10)
        await redis.aclose()
        standby.remove()
        primary.remove()


async def _has_rows(url: str, n: int) -> bool:
    return (await count(url))[0] >= n


async def _field_is(redis: aioredis.Redis, key: str, field: str, value: str) -> bool:
    return await redis.hget(key, field) == value.encode()


async def _drained(redis: aioredis.Redis, key: str) -> bool:
    got = await redis.hmget(key, ["breaker", "buffer_rows"])
    return got == [b"closed", b"0"]


async def _eq(value: object, expected: object) -> bool:
    got: object = await value  # type: ignore[misc]
    return got == expected


async def backlog(work: Path, rd: RedisServer, pg: PostgresServer, n: int, writers: int) -> float:
    keys = Keys(f"backlog{writers}:")
    admin = await asyncpg.connect(pg.url())
    await admin.execute(f"CREATE DATABASE backlog{writers}")
    await admin.close()
    url = pg.url(f"backlog{writers}")
    redis = aioredis.Redis.from_url(rd.url())
    for base in range(0, n, 10_000):
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(base, min(base + 10_000, n)):
                pipe.xadd(keys.greeks, entry(i))  # type: ignore[arg-type]
            await pipe.execute()
    start = time.monotonic()
    procs = [start_writer(work, url, rd.url(), keys.prefix, f"w{k}", 1.0) for k in range(writers)]
    try:
        done = await until(lambda: _has_rows(url, n), 3600, every_s=0.2)
        rows, distinct = await count(url)
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)
        await redis.aclose()
    took = done - start
    print(
        f"backlog, {writers} writer(s): {n:,} entries in {took:.1f} s = {n / took:,.0f} rows/s "
        f"({rows} rows, {distinct} distinct)"
    )
    return took


async def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-failover-"))
    rd = RedisServer(work / "redis")
    rd.start()
    pg = PostgresServer(work / "pg")
    try:
        print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}")
        await switchover(work, rd, args)
        pg.start()
        one = await backlog(work, rd, pg, args.rows, 1)
        two = await backlog(work, rd, pg, args.rows, 2)
        print(f"two writers / one: {one / two:.2f}x")
    finally:
        rd.stop()
        pg.remove()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--down-s", type=float, default=5.0)
    parser.add_argument("--retry-s", type=float, default=1.0)
    parser.add_argument("--cadence-s", type=float, default=0.02)
    asyncio.run(main(parser.parse_args()))

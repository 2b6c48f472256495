"""Throughput and latency of the writer, against a bare consumer, in one run.

    .venv/bin/python benchmarks/bench_stream_throughput.py [--rows 1000000] [--latency-rows 200]
                                                           [--exposure]

`--exposure`: every other entry is the tick's `portfolio_exposure` row (same timestamp), as the
collector writes them; both tables are counted.

1. A backlog of N entries in `bridge:greeks` (private Redis) consumed into a private PostgreSQL
   by the real writer process (`python -m writer`): rows/s.
2. In the same run, the same backlog read by a bare XREADGROUP + XACK loop that does no database
   work: rows/s, and the ratio writer / bare.
3. End-to-end latency from XADD to the row's insertion in PostgreSQL at a steady cadence
   (`--cadence-s`, default 0.05 s): p50 / p99 / max. The insertion time comes from a
   `clock_timestamp()` default column added to the benchmark's private table.
4. The writer's RSS after the backlog (from /proc).

Prints figures; asserts nothing about speed (that is what benchmarks are for).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis

from ops.embedded import PostgresServer, RedisServer
from shared.codec import encode_exposure, encode_greeks
from shared.models import ExposureRow, GreeksRow
from shared.names import Keys

PREFIX = "bench:"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


MIX = {"exposure": False}  # set from --exposure


def exposure_entry(i: int) -> dict[str, str]:
    ts = T0 + timedelta(seconds=5 * (i // 2))
    return encode_exposure(
        ExposureRow(
            ts,
            "DU1234567",
            "PORTFOLIO",
            float(i),
            0.5,
            -12.25,
            3.75,
            1.2e6,
            3.4e4,
            600.0,
            12,
            11,
            1,
            0,
            4.5,
            "LIVE",
            125.0,
            -80.5,
            None,
            "SOCKET",
        )
    )


def entry(i: int, ts: datetime | None = None) -> dict[str, str]:
    if MIX["exposure"] and ts is None:
        if i % 2:
            return exposure_entry(i)
        ts = T0 + timedelta(seconds=5 * (i // 2))
    return encode_greeks(
        GreeksRow(
            ts or T0 + timedelta(seconds=5 * i),
            "PORTFOLIO",
            float(i),
            0.5,
            -12.25,
            3.75,
            600.0,
            "DU1234567",
            "SOCKET",
        )
    )


async def fill(redis: aioredis.Redis, stream: str, n: int) -> float:
    start = time.perf_counter()
    for base in range(0, n, 10_000):
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(base, min(base + 10_000, n)):
                pipe.xadd(stream, entry(i))  # type: ignore[arg-type]
            await pipe.execute()
    return time.perf_counter() - start


async def bare_consumer(redis: aioredis.Redis, stream: str, n: int) -> float:
    await redis.xgroup_create(stream, "bare", id="0")
    start = time.perf_counter()
    done = 0
    while done < n:
        reply = await redis.xreadgroup("bare", "c1", {stream: ">"}, count=500, block=1000)
        if not reply:
            break
        ids = [eid for _, items in reply for eid, _ in items]
        await redis.xack(stream, "bare", *ids)
        done += len(ids)
    return time.perf_counter() - start


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def wait_rows(url: str, n: int, timeout_s: float) -> float:
    start = time.perf_counter()
    conn = await asyncpg.connect(url)
    try:
        while time.perf_counter() - start < timeout_s:
            try:
                got = await conn.fetchval(
                    "SELECT (SELECT count(*) FROM portfolio_greeks)"
                    " + (SELECT count(*) FROM portfolio_exposure)"
                )
            except asyncpg.UndefinedTableError:
                got = 0
            if got >= n:
                return time.perf_counter() - start
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
    raise TimeoutError(f"fewer than {n} rows after {timeout_s} s")


async def main(args: argparse.Namespace) -> None:
    MIX["exposure"] = args.exposure
    work = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    pg = PostgresServer(work / "pg")
    rd = RedisServer(work / "redis")
    pg.start()
    rd.start()
    keys = Keys(PREFIX)
    redis = aioredis.Redis.from_url(rd.url())
    writer: subprocess.Popen[bytes] | None = None
    try:
        fill_s = await fill(redis, keys.greeks, args.rows)
        bare_s = await bare_consumer(redis, keys.greeks, args.rows)
        env = {
            **os.environ,
            "DATABASE_URL": pg.url(),
            "REDIS_URL": rd.url(),
            "BRIDGE_REDIS_PREFIX": PREFIX,
            "BRIDGE_BUFFER_PATH": str(work / "buf.jsonl"),
            "BRIDGE_LOG_LEVEL": "WARNING",
        }
        writer = subprocess.Popen([sys.executable, "-m", "writer"], env=env, cwd=work)
        writer_s = await wait_rows(pg.url(), args.rows, timeout_s=3600)
        rss_after = rss_mb(writer.pid)

        conn = await asyncpg.connect(pg.url())
        await conn.execute("ALTER TABLE portfolio_greeks ADD COLUMN inserted_at timestamptz")
        await conn.execute(
            "ALTER TABLE portfolio_greeks ALTER COLUMN inserted_at SET DEFAULT clock_timestamp()"
        )
        await conn.close()
        for _ in range(args.latency_rows):
            await redis.xadd(keys.greeks, entry(0, ts=datetime.now(UTC)))  # type: ignore[arg-type]
            await asyncio.sleep(args.cadence_s)
        await wait_rows(pg.url(), args.rows + args.latency_rows, timeout_s=120)
        conn = await asyncpg.connect(pg.url())
        lat = [
            r[0] * 1000
            for r in await conn.fetch(
                "SELECT extract(epoch FROM inserted_at - timestamp)::float8 FROM portfolio_greeks "
                "WHERE inserted_at IS NOT NULL ORDER BY id"
            )
        ]
        await conn.close()
        lat.sort()

        print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}")
        mixed = " (half of them portfolio_exposure rows)" if args.exposure else ""
        print(f"backlog: {args.rows:,} entries{mixed} XADDed in {fill_s:.1f} s")
        print(f"bare XREADGROUP+XACK: {args.rows / bare_s:,.0f} rows/s ({bare_s:.1f} s)")
        print(f"writer -> PostgreSQL: {args.rows / writer_s:,.0f} rows/s ({writer_s:.1f} s)")
        print(f"ratio writer / bare: {bare_s / writer_s:.2f}")
        print(f"writer RSS after the backlog: {rss_after:.1f} MB")
        print(
            f"XADD -> insert latency at {args.cadence_s * 1000:.0f} ms cadence over "
            f"{len(lat)} rows: p50 {statistics.median(lat):.1f} ms, "
            f"p99 {lat[int(len(lat) * 0.99) - 1]:.1f} ms, max {lat[-1]:.1f} ms"
        )
    finally:
        if writer is not None:
            writer.terminate()
            writer.wait(10)
        await redis.aclose()
        rd.stop()
        pg.remove()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--latency-rows", type=int, default=200)
    parser.add_argument("--cadence-s", type=float, default=0.05)
    parser.add_argument("--exposure", action="store_true", help="every other entry an exposure")
    asyncio.run(main(parser.parse_args()))

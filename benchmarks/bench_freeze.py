"""The non-blocking figure: tick jitter while PostgreSQL is frozen, ours against the obvious loop.

    .venv/bin/python benchmarks/bench_freeze.py [--freeze-s 30] [--interval-s 1]

One run, one IB Gateway simulator, one private PostgreSQL, one private Redis:
- ours: `python -m collector` (SOCKET) -> Redis -> `python -m writer` -> PostgreSQL;
- the baseline: what a user would write without this project, in one process: ib_async
  (the same client library, its own client id) polled, net Greeks computed, the row inserted
  inline with asyncpg, then `sleep(interval)`.
PostgreSQL is frozen with SIGSTOP for `--freeze-s` seconds while both run, then thawed.

Jitter of a tick = how late its output is against its schedule:
- ours: the Redis stream entry id (Redis's clock at XADD) minus the tick's grid time `ts`;
- baseline: when the iteration took its sample minus when it should have (start + k x interval).
Both are reported for the ticks whose schedule falls inside the freeze (p50 / p99 / max).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis
from ib_async import IB

from ops.embedded import PostgresServer, RedisServer, free_port
from shared.names import Keys

PREFIX = "freeze:"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def describe(name: str, values: list[float]) -> str:
    if not values:
        return f"{name}: no ticks in the window"
    return (
        f"{name}: n={len(values)} p50 {statistics.median(values):.1f} ms, "
        f"p99 {pct(values, 0.99):.1f} ms, max {max(values):.1f} ms"
    )


async def naive_loop(
    port: int, dsn: str, interval_s: float, until: float, lateness: list[tuple[float, float]]
) -> None:
    """The loop a user would write: poll, compute, insert inline, sleep."""
    ib = IB()
    await ib.connectAsync("127.0.0.1", port, clientId=99, readonly=True, timeout=10)
    conn = await asyncpg.connect(dsn)
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS naive_greeks (ts timestamptz, delta float8, "
        "gamma float8, vega float8, theta float8)"
    )
    tickers = {}
    for pos in ib.positions():
        c = pos.contract
        c.exchange = "SMART"
        if c.secType == "OPT":
            tickers[c.conId] = ib.reqMktData(c)
    start = time.time()
    k = 0
    try:
        while time.time() < until:
            sampled = time.time()
            lateness.append((start + k * interval_s, (sampled - (start + k * interval_s)) * 1000))
            d = g = v = th = 0.0
            for pos in ib.positions():
                if pos.contract.secType == "STK":
                    d += pos.position
                    continue
                t = tickers.get(pos.contract.conId)
                m = t.modelGreeks if t is not None else None
                if m is None or m.delta is None:
                    continue
                mult = float(pos.contract.multiplier or 100) * pos.position
                d += mult * m.delta
                g += mult * (m.gamma or 0)
                v += mult * (m.vega or 0)
                th += mult * (m.theta or 0)
            await conn.execute(
                "INSERT INTO naive_greeks VALUES ($1, $2, $3, $4, $5)",
                datetime.now(UTC),
                d,
                g,
                v,
                th,
            )
            await asyncio.sleep(interval_s)
            k += 1
    finally:
        ib.disconnect()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.close(), 5)


async def collector_lateness(
    redis: aioredis.Redis, keys: Keys, freeze_at: float, thaw_at: float
) -> list[float]:
    """ms from each PORTFOLIO tick of the freeze window to its XADD."""
    ours: list[float] = []
    for entry_id, fields in await redis.xrange(keys.greeks):
        if fields.get(b"contract") != b"PORTFOLIO":
            continue
        tick = datetime.fromisoformat(fields[b"ts"].decode()).timestamp()
        if freeze_at <= tick < thaw_at:
            ms = int(entry_id.split(b"-")[0])
            ours.append(ms - tick * 1000)
    return ours


def report(args: argparse.Namespace, ours: list[float], base: list[float]) -> None:
    print(
        f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}; "
        f"interval {args.interval_s:g} s; freeze {args.freeze_s:g} s"
    )
    print(describe("ours (collector XADD vs grid)", ours))
    print(describe("baseline (inline insert loop)", base))
    if ours and base:
        print(
            f"ratio baseline / ours: p99 {pct(base, 0.99) / max(pct(ours, 0.99), 0.001):.0f}x"
            f", max {max(base) / max(*ours, 0.001):.0f}x"
        )
    print(
        f"baseline ticks expected in the window: {int(args.freeze_s / args.interval_s)}, "
        f"sampled: {len(base)} (the others never happened)"
    )


async def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-freeze-"))
    pg = PostgresServer(work / "pg")
    rd = RedisServer(work / "redis")
    pg.start()
    rd.start()
    gw_port, ctl_port = free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    env = {
        **os.environ,
        "DATABASE_URL": pg.url(),
        "REDIS_URL": rd.url(),
        "BRIDGE_REDIS_PREFIX": PREFIX,
        "IB_PORT": str(gw_port),
        "IB_CLIENT_ID": "17",
        "BRIDGE_POLL_INTERVAL_S": str(args.interval_s),
        "BRIDGE_GREEKS_GRACE_S": "3",
        "BRIDGE_BUFFER_PATH": str(work / "buf.jsonl"),
        "BRIDGE_SPOOL_PATH": str(work / "spool.jsonl"),
        "BRIDGE_LOG_LEVEL": "WARNING",
    }
    try:
        for cmd in (
            [
                "simulator.gateway",
                "--port",
                str(gw_port),
                "--control-port",
                str(ctl_port),
                "--log-level",
                "WARNING",
            ],
            ["writer"],
            ["collector"],
        ):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", *cmd], env=env, cwd=work, stdout=subprocess.DEVNULL
                )
            )
            await asyncio.sleep(1.0)
        redis = aioredis.Redis.from_url(rd.url())
        keys = Keys(PREFIX)
        for _ in range(60):
            if await redis.xlen(keys.greeks) >= 3:
                break
            await asyncio.sleep(0.5)
        lateness: list[tuple[float, float]] = []
        warmup_s = 5.0
        freeze_at = time.time() + warmup_s
        thaw_at = freeze_at + args.freeze_s
        naive = asyncio.create_task(
            naive_loop(gw_port, pg.url(), args.interval_s, thaw_at + 5.0, lateness)
        )
        await asyncio.sleep(freeze_at - time.time())
        pg.freeze()
        print(f"PostgreSQL frozen (SIGSTOP) for {args.freeze_s:g} s", flush=True)
        await asyncio.sleep(thaw_at - time.time())
        pg.thaw()
        print("PostgreSQL thawed (SIGCONT)", flush=True)
        await asyncio.wait_for(naive, args.freeze_s + 60)

        ours = await collector_lateness(redis, keys, freeze_at, thaw_at)
        base = [late for sched, late in lateness if freeze_at <= sched < thaw_at]
        await redis.aclose()
        report(args, ours, base)
    finally:
        pg.thaw()
        for p in reversed(procs):
            p.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(15)
        rd.stop()
        pg.remove()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--freeze-s", type=float, default=30.0)
    parser.add_argument("--interval-s", type=float, default=1.0)
    asyncio.run(main(parser.parse_args()))

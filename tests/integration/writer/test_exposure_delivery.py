"""portfolio_exposure rows on the greeks stream, and two accounts' rows of the same tick, through
the writer process: exactly once directly, with replayed entries; and exactly once through the
JSON Lines buffer and its drain across a real PostgreSQL outage (a private server stopped and
started again).

The producer writes the stream's field format by hand (docs/CONTRACTS.md), not through the
bridge's codec.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis.asyncio as aioredis

from ops.embedded import PostgresServer
from shared.names import Keys
from tests.helpers import wait_for
from tests.integration.writer.test_resilience import (
    _gt,
    _log_has,
    _state_is,
    all_acked,
    buffer_empty,
    buffer_lines,
    env,
    fetchval,
)

T0 = datetime(2026, 11, 25, 14, 30, tzinfo=UTC)
Spawn = Callable[..., subprocess.Popen[bytes]]
ACCOUNTS = ("DU111", "DU222")


def stamp(i: int) -> str:
    return (T0 + timedelta(seconds=i)).isoformat(timespec="microseconds")


def greeks_entry(i: int, account: str) -> dict[str, str]:
    return {
        "v": "1",
        "ts": stamp(i),
        "contract": "PORTFOLIO",
        "delta": repr(float(i)),
        "gamma": "0.25",
        "vega": "-3.5",
        "theta": "12.0",
        "underlying_price": "" if i % 5 == 0 else repr(600.0 + i / 100),
        "account": account,
        "mode": "SOCKET",
    }


def exposure_entry(i: int, account: str) -> dict[str, str]:
    """Unknown numbers as empty strings on every fifth tick."""
    unknown = i % 5 == 0
    return {
        "v": "1",
        "table": "portfolio_exposure",
        "ts": stamp(i),
        "account": account,
        "scope": "PORTFOLIO",
        "delta": repr(float(i)),
        "gamma": "0.25",
        "vega": "-3.5",
        "theta": "12.0",
        "delta_dollars": "" if unknown else repr(i * 600.0),
        "gamma_dollars": "" if unknown else "150.0",
        "underlying_price": "" if unknown else "600.5",
        "greeks_age_max_s": "" if unknown else "1.5",
        "daily_pnl": "" if unknown else "-42.0",
        "unrealized_pnl": "",
        "realized_pnl": "0.0",
        "legs": "4",
        "legs_fresh": "3",
        "legs_carried": "1",
        "legs_excluded": "0",
        "market_data": "" if unknown else "LIVE",
        "mode": "SOCKET",
    }


def tick(i: int) -> list[dict[str, str]]:
    """What one tick of the two bridges and the combined book puts on the stream."""
    entries = [greeks_entry(i, a) for a in ACCOUNTS]
    return [*entries, *(exposure_entry(i, a) for a in (*ACCOUNTS, "ALL"))]


GREEKS_PER_TICK, EXPOSURE_PER_TICK = 2, 3


async def produce(
    redis: aioredis.Redis, stream: str, ticks: range, *, replay_every: int = 0, step_s: float = 0.05
) -> None:
    """Ticks in groups of 10 per step; with `replay_every`, each such tick's entries are added
    a second time (what a collector re-sending from its journal does)."""
    for first in range(ticks.start, ticks.stop, 10):
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(first, min(first + 10, ticks.stop)):
                for fields in tick(i):
                    pipe.xadd(stream, fields)  # type: ignore[arg-type]
                if replay_every and i % replay_every == 0:
                    for fields in tick(i):
                        pipe.xadd(stream, fields)  # type: ignore[arg-type]
            await pipe.execute()
        await asyncio.sleep(step_s)


async def assert_each_row_once(url: str, ticks: int) -> None:
    """Both tables hold every produced row once, with its values and its NULLs."""
    g = GREEKS_PER_TICK * ticks
    e = EXPOSURE_PER_TICK * ticks
    assert await fetchval(url, "SELECT count(*) FROM portfolio_greeks") == g
    distinct = "SELECT count(DISTINCT (timestamp, contract, account)) FROM portfolio_greeks"
    assert await fetchval(url, distinct) == g
    for account in ACCOUNTS:
        sql = f"SELECT count(*) FROM portfolio_greeks WHERE account = '{account}'"
        assert await fetchval(url, sql) == ticks
    assert await fetchval(url, "SELECT count(*) FROM portfolio_exposure") == e
    distinct = "SELECT count(DISTINCT (timestamp, account, scope)) FROM portfolio_exposure"
    assert await fetchval(url, distinct) == e
    nulls = "SELECT count(*) FROM portfolio_exposure WHERE delta_dollars IS NULL"
    assert await fetchval(url, nulls) == EXPOSURE_PER_TICK * len(range(0, ticks, 5))
    wrong = await fetchval(
        url,
        f"""SELECT count(*) FROM portfolio_exposure
            WHERE delta <> extract(epoch FROM timestamp - '{T0.isoformat()}'::timestamptz)
               OR legs <> 4 OR legs_fresh <> 3 OR unrealized_pnl IS NOT NULL
               OR (delta_dollars IS NOT NULL AND (delta_dollars <> delta * 600
                   OR market_data <> 'LIVE' OR realized_pnl <> 0))""",
    )
    assert wrong == 0
    disorder = await fetchval(
        url,
        """SELECT count(*) FROM (SELECT timestamp, lag(timestamp) OVER (ORDER BY id) AS prev
           FROM portfolio_exposure WHERE account = 'ALL') s WHERE prev >= timestamp""",
    )
    assert disorder == 0, "id order is stream order"


async def _count_is(url: str, table: str, n: int) -> bool:
    return await fetchval(url, f"SELECT count(*) FROM {table}") == n


async def test_two_accounts_and_exposure_rows_land_once_through_the_stream(
    spawn: Spawn, pg_url: str, redis_url: str, redis: aioredis.Redis, prefix: str, tmp_path: Path
) -> None:
    keys = Keys(prefix)
    proc = spawn("writer", env(pg_url, redis_url, prefix, tmp_path / "buffer.jsonl"))
    await produce(redis, keys.greeks, range(200), replay_every=7)
    await wait_for(lambda: all_acked(redis, keys.greeks), 60, "every entry acked")
    await assert_each_row_once(pg_url, 200)
    assert await redis.xlen(keys.dead) == 0
    assert _log_has(proc, "replay_skipped"), "the replayed entries were skipped"
    assert proc.poll() is None


async def test_exposure_rows_land_once_through_the_buffer_after_an_outage(
    spawn: Spawn,
    private_pg: PostgresServer,
    redis_url: str,
    redis: aioredis.Redis,
    prefix: str,
    tmp_path: Path,
) -> None:
    keys = Keys(prefix)
    url = private_pg.url()
    buffer = tmp_path / "buffer.jsonl"
    spawn("writer", env(url, redis_url, prefix, buffer))
    producer = asyncio.create_task(produce(redis, keys.greeks, range(600), step_s=0.1))
    await wait_for(
        lambda: _gt(fetchval(url, "SELECT count(*) FROM portfolio_exposure"), 30), 30, "rows"
    )
    await asyncio.to_thread(private_pg.stop)
    await wait_for(lambda: _state_is(redis, keys, "open"), 20, "the breaker to open")
    await wait_for(lambda: buffer_lines(buffer) > 100, 30, "rows in the buffer")
    assert b'"table":"portfolio_exposure"' in buffer.read_bytes(), "exposure rows buffered"
    await asyncio.to_thread(private_pg.start)
    await producer
    total = EXPOSURE_PER_TICK * 600
    await wait_for(lambda: _count_is(url, "portfolio_exposure", total), 60, f"{total} rows")
    await wait_for(lambda: _state_is(redis, keys, "closed"), 20, "the breaker to close")
    await wait_for(lambda: all_acked(redis, keys.greeks), 20, "every entry acked")
    await wait_for(lambda: buffer_empty(buffer), 20, "an empty buffer")
    await assert_each_row_once(url, 600)
    assert await redis.xlen(keys.dead) == 0

"""`bridge drain` of a buffer mixing the lines the previous release's writer wrote (greeks and
api_logs, byte for byte its layout) with exposure lines, into a database the previous release
made: the drain applies the migrations first, then every row lands once, in order, with its
account, over several drain transactions; an exposure row PostgreSQL refuses is dead-lettered
and the rest lands."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import orjson
import redis.asyncio as aioredis

from shared.jsonl import Record
from shared.models import ExposureRow
from shared.names import Keys
from tests.integration.database.test_migrations import OLD_ROWS, release_database
from tests.integration.ops.test_drain import drain
from tests.integration.ops.test_drain_dead_letter import dead_letters, setup, sql
from writer.buffer_drain import DRAIN_CHUNK_ROWS
from writer.lines import encode_line

T0 = datetime(2026, 12, 1, 14, 30, tzinfo=UTC)
TICKS = DRAIN_CHUNK_ROWS // 2 + 500  # three lines a tick: two drain transactions or more


def ts(i: int) -> str:
    return (T0 + timedelta(seconds=i)).isoformat(timespec="microseconds")


def release_line(i: int, account: str) -> bytes:
    """A greeks line exactly as the previous release's writer appended it."""
    return (
        b'{"stream":"greeks","fields":{"v":"1","ts":"%s","contract":"PORTFOLIO","delta":"%r",'
        b'"gamma":"0.5","vega":"-2.0","theta":"3.0","underlying_price":"","account":"%s",'
        b'"mode":"SOCKET"}}' % (ts(i).encode(), float(i), account.encode())
    )


def exposure(i: int, scope: str = "PORTFOLIO") -> Record:
    row = ExposureRow(
        T0 + timedelta(seconds=i), "DU1", scope, float(i), 0.5, -2.0, 3.0,
        None, None, 600.0, 2, 2, 0, 0, 0.25, "FROZEN",
    )  # fmt: skip
    return encode_line(row)


async def test_drain_of_release_lines_and_exposure_lines_into_a_release_database(
    pg_url: str, tmp_path: Path
) -> None:
    await release_database(pg_url)
    env_file = setup(tmp_path, [], DATABASE_URL=pg_url)
    buffer = tmp_path / "buffer.jsonl"
    log_line = b'{"stream":"api_logs","fields":{"v":"1","ts":"%s","api_mode":"SOCKET",'
    log_line += b'"status":"WARN","message":"buffered","source":"writer"}}'
    with buffer.open("wb") as f:
        for i in range(TICKS):
            f.write(release_line(i, "DU1") + b"\n" + release_line(i, "DU2") + b"\n")
            f.write(orjson.dumps(exposure(i)) + b"\n")
        f.write(log_line % ts(0).encode() + b"\n")
    done = drain(env_file)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"drained {3 * TICKS + 1} rows" in done.stdout
    conn = await asyncpg.connect(pg_url)
    try:
        greeks = await conn.fetch(
            "SELECT timestamp, account FROM portfolio_greeks WHERE id > $1 ORDER BY id", OLD_ROWS
        )
        exposures = await conn.fetch("SELECT timestamp, delta FROM portfolio_exposure ORDER BY id")
        versions = await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")
        old = await conn.fetchval("SELECT count(*) FROM portfolio_greeks WHERE account = ''")
        logs = await conn.fetchval("SELECT count(*) FROM api_logs WHERE message = 'buffered'")
    finally:
        await conn.close()
    expected = [(T0 + timedelta(seconds=i), a) for i in range(TICKS) for a in ("DU1", "DU2")]
    assert [(r[0], r[1]) for r in greeks] == expected, "each once, in file order"
    assert [(r[0], r[1]) for r in exposures] == [
        (T0 + timedelta(seconds=i), float(i)) for i in range(TICKS)
    ]
    assert [r[0] for r in versions] == [1, 2, 3]
    assert (old, logs) == (OLD_ROWS, 1)
    assert buffer.stat().st_size == 0


async def test_an_exposure_row_postgresql_refuses_is_dead_lettered(
    pg_url: str, redis_url: str, redis: aioredis.Redis, prefix: str, tmp_path: Path
) -> None:
    await sql(
        pg_url,
        "ALTER TABLE portfolio_exposure ADD CONSTRAINT scope_known CHECK (scope <> 'REFUSED')",
    )
    lines = [exposure(0), exposure(1, "REFUSED"), exposure(2), exposure(3, scope="")]
    env_file = setup(
        tmp_path, lines, DATABASE_URL=pg_url, REDIS_URL=redis_url, BRIDGE_REDIS_PREFIX=prefix
    )
    done = drain(env_file)
    assert done.returncode == 0, done.stdout + done.stderr
    conn = await asyncpg.connect(pg_url)
    try:
        stored = await conn.fetch("SELECT delta FROM portfolio_exposure ORDER BY id")
    finally:
        await conn.close()
    assert [r[0] for r in stored] == [0.0, 2.0]
    dead = sorted(await dead_letters(redis, prefix), key=lambda d: d["reason"])
    assert [d["stream"] for d in dead] == ["buffer:greeks", "buffer:greeks"]
    assert dead[0]["reason"].startswith("buffer line: scope must be 1-64 characters")
    assert "scope_known" in dead[1]["reason"] and dead[1]["f.table"] == "portfolio_exposure"
    assert dead[1]["f.scope"] == "REFUSED"
    assert len(await redis.xrange(Keys(prefix).dead)) == 2

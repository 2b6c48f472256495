"""The database failures the writer treats as outages, caused for real on a real PostgreSQL: a
deadlock, a read-only server, a table gone. The writer runs in-process (its `Writer` and
`BufferedStore` on the real `DBManager` and Redis): each failure opens the breaker, the batch goes
to the buffer and is acked, nothing is dead-lettered, and the rows land once when it is over."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis

from database.db_manager import DBManager
from shared.codec import encode_greeks
from shared.config import load_settings
from shared.jsonl import JsonlFile
from shared.models import GreeksRow
from shared.names import WRITER_GROUP
from tests.helpers import wait_for
from writer.app import Writer
from writer.consumer import Entry
from writer.lines import decode_line

T0 = datetime(2026, 11, 25, 14, 30, tzinfo=UTC)


def ts(i: int) -> datetime:
    return T0 + timedelta(seconds=5 * i)


@pytest.fixture
async def writer(
    pg_url: str, redis_url: str, redis: aioredis.Redis, prefix: str, tmp_path: Path
) -> AsyncIterator[Writer]:
    """The writer as `python -m writer` builds it, started (schema checked, buffer locked)."""
    settings = load_settings(
        {
            "DATABASE_URL": pg_url,
            "REDIS_URL": redis_url,
            "BRIDGE_REDIS_PREFIX": prefix,
            "BRIDGE_BUFFER_PATH": str(tmp_path / "buffer.jsonl"),
            "BRIDGE_SPOOL_PATH": str(tmp_path / "spool.jsonl"),
            "BRIDGE_FLUSH_RETRY_S": "3600",  # the test decides when the flush is tried
        },
        dotenv=None,
    )
    db = DBManager(pg_url, min_size=0, connect_attempts=1)
    w = Writer(settings, redis, db, stop=asyncio.Event())
    await w.store.check_database()
    w.store.open_buffer()
    try:
        yield w
    finally:
        w.store.close()
        await db.close()


async def deliver(w: Writer, first: int, n: int) -> list[Entry]:
    """Rows first..first+n-1 added to the greeks stream and read by the writer's consumer."""
    for i in range(first, first + n):
        row = GreeksRow(ts(i), "PORTFOLIO", float(i), 0.1, 0.2, 0.3, 600.0)
        await w.redis.xadd(w.keys.greeks, encode_greeks(row))  # type: ignore[arg-type]
    await w.consumer.ensure_groups()
    entries = await w.consumer.read()
    assert len(entries) == n
    return entries


async def stored(url: str) -> list[datetime]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT timestamp FROM portfolio_greeks ORDER BY id")
        return [r[0] for r in rows]
    finally:
        await conn.close()


def buffered_greeks(w: Writer) -> list[datetime]:
    """The greeks rows in the writer's buffer file, in file order."""
    rows = [
        decode_line(orjson.loads(line)) for line in w.store.buffer.path.read_bytes().splitlines()
    ]
    return [r.ts for r in rows if isinstance(r, GreeksRow)]


async def assert_buffered_as_outage(w: Writer, error: str, rows: list[datetime]) -> None:
    """Breaker open for `error`, the batch in the buffer and acked, nothing dead-lettered."""
    assert w.store.status()["breaker"] == "open"
    assert error in w.store.breaker.reason
    assert buffered_greeks(w) == rows
    assert (await w.redis.xpending(w.keys.greeks, WRITER_GROUP))["pending"] == 0
    assert await w.redis.xlen(w.keys.dead) == 0


async def assert_recovered(w: Writer, url: str, expected: list[datetime]) -> None:
    """The flush drains the buffer: every row once, in order; breaker closed, buffer empty."""
    assert await w.store.flush(force=True)
    assert not w.store.breaker.is_open
    assert JsonlFile(w.store.buffer.path).count() == (0, 0)
    assert await stored(url) == expected
    assert await w.redis.xlen(w.keys.dead) == 0


async def writer_waits_on_a_lock(monitor: asyncpg.Connection) -> bool:
    n = await monitor.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND query LIKE '%unnest%'"
    )
    return bool(n)


INSERT_ONE = (
    "INSERT INTO portfolio_greeks (timestamp, contract, delta, gamma, vega, theta) "
    "VALUES ($1, 'PORTFOLIO', 0, 0, 0, 0)"
)


async def test_a_deadlock_is_an_outage(writer: Writer, pg_url: str) -> None:
    """The writer inserts rows 0, 1, 2 in that order; another session holds row 2 and then asks
    for row 1 (and, against the writer's retry, row 0): the opposite order, a real deadlock,
    which PostgreSQL breaks by aborting the writer (it waited first)."""
    entries = await deliver(writer, 0, 3)
    other = await asyncpg.connect(pg_url)
    monitor = await asyncpg.connect(pg_url)
    try:
        await other.execute("SET deadlock_timeout = '60s'")  # the writer's check fires first
        await other.execute("BEGIN")
        await other.execute(INSERT_ONE, ts(2))
        handled = asyncio.create_task(writer.handle(entries))
        for key in (1, 0):  # the first try, then the retry on a fresh connection
            await wait_for(
                lambda: handled.done() or writer_waits_on_a_lock(monitor), 20, "the writer"
            )
            if handled.done():
                break  # it gave up (its error is raised below)
            await other.execute(INSERT_ONE, ts(key))  # blocks until the writer is aborted
        await asyncio.wait_for(handled, 20)
        await assert_buffered_as_outage(writer, "DeadlockDetectedError", [ts(0), ts(1), ts(2)])
    finally:
        if other.is_in_transaction():
            await other.execute("ROLLBACK")
        await other.close()
        await monitor.close()
    assert await stored(pg_url) == []
    await assert_recovered(writer, pg_url, [ts(0), ts(1), ts(2)])


async def terminate_other_sessions(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )


async def test_a_read_only_server_is_an_outage(writer: Writer, pg_url: str) -> None:
    """As after a failover onto a standby: the database turns read-only and the writer's
    connections are cut, so its next ones are read-only sessions."""
    await writer.handle(await deliver(writer, 0, 2))
    assert await stored(pg_url) == [ts(0), ts(1)]
    name = urlsplit(pg_url).path.lstrip("/")
    admin = await asyncpg.connect(pg_url)
    try:
        await admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        await terminate_other_sessions(admin)
        await writer.handle(await deliver(writer, 2, 3))
        await assert_buffered_as_outage(
            writer, "ReadOnlySQLTransactionError", [ts(2), ts(3), ts(4)]
        )
        assert not await writer.store.flush(force=True), "still read-only: the flush fails"
        assert writer.store.breaker.is_open and len(buffered_greeks(writer)) == 3
        await admin.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
    finally:
        await admin.close()
    await assert_recovered(writer, pg_url, [ts(i) for i in range(5)])


async def test_a_table_gone_is_an_outage(writer: Writer, pg_url: str) -> None:
    """The table gone under a running writer (renamed away; dropped is the same error): the
    batch is buffered, and each flush fails while the table is missing (the migrations are
    recorded as applied: the writer does not make the table anew behind the operator's back).
    Once it is back, the buffer drains into it, each row once."""
    await writer.handle(await deliver(writer, 0, 2))
    admin = await asyncpg.connect(pg_url)
    try:
        await admin.execute("ALTER TABLE portfolio_greeks RENAME TO portfolio_greeks_away")
        await writer.handle(await deliver(writer, 2, 3))
        await assert_buffered_as_outage(writer, "UndefinedTableError", [ts(2), ts(3), ts(4)])
        assert not await writer.store.flush(force=True), "still missing: the flush fails"
        assert writer.store.breaker.is_open and len(buffered_greeks(writer)) == 3
        await admin.execute("ALTER TABLE portfolio_greeks_away RENAME TO portfolio_greeks")
    finally:
        await admin.close()
    await assert_recovered(writer, pg_url, [ts(i) for i in range(5)])

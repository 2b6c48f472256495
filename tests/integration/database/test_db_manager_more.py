"""DBManager's connection life on a real PostgreSQL: bounded retries on a refused port (and none
on a misconfiguration), use before connect, expiring the pool's sessions after an outage, a
close that cannot hang on a held connection; the batch paths without greeks rows or logs."""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from database.batches import inserted as _inserted
from database.db_manager import DBManager, WriteResult
from ops.embedded import free_port
from shared.models import ApiLogRow, GreeksRow
from tests.helpers import wait_for

T0 = datetime(2026, 11, 25, 14, 30, tzinfo=UTC)
LOGGER = "database.db_manager"


def log_row(i: int) -> ApiLogRow:
    return ApiLogRow(T0 + timedelta(seconds=i), "SOCKET", "INFO", f"note {i}", "writer")


async def test_a_refused_port_is_retried_the_configured_times_then_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = secrets.token_hex(8)
    dsn = f"postgresql://bridge:{secret}@127.0.0.1:{free_port()}/postgres"  # nothing listens
    db = DBManager(dsn, connect_attempts=3, connect_backoff_s=0.01, connect_timeout_s=2)
    with caplog.at_level(logging.WARNING, logger=LOGGER), pytest.raises(OSError):
        await db.connect()
    retries = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(retries) == 2, retries  # a warning before each retry, none after the last try
    assert retries[0].startswith("db_connect_failed attempt 1/3 to postgresql://bridge:***@")
    assert retries[1].startswith("db_connect_failed attempt 2/3")
    assert all(secret not in m for m in retries)
    assert not db.is_connected
    with pytest.raises(RuntimeError, match="connect"):
        _ = db.pool


async def test_a_misconfiguration_is_not_retried(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    missing = urlunsplit(urlsplit(pg_url)._replace(path=f"/nope_{secrets.token_hex(4)}"))
    db = DBManager(missing, connect_attempts=5, connect_backoff_s=0.01)
    with (
        caplog.at_level(logging.WARNING, logger=LOGGER),
        pytest.raises(asyncpg.InvalidCatalogNameError),
    ):
        await db.connect()
    assert [r for r in caplog.records if r.name == LOGGER] == []
    assert not db.is_connected


async def test_unconnected_manager_masks_its_password_and_closes_quietly() -> None:
    secret = secrets.token_hex(8)
    db = DBManager(f"postgresql://bridge:{secret}@127.0.0.1:5/x")
    assert secret not in repr(db) and "bridge:***@" in repr(db)
    await db.expire_connections()  # no pool: nothing to do
    await db.close()
    await db.close()
    assert not db.is_connected
    with pytest.raises(RuntimeError, match=r"DBManager.connect\(\) was not called"):
        await db.newest_portfolio_row()


async def test_expired_connections_are_replaced_on_their_next_use(pg_url: str) -> None:
    async with DBManager(pg_url, min_size=1, max_size=1) as db:
        await db.migrate()
        async with db.pool.acquire() as conn:
            before = await conn.fetchval("SELECT pg_backend_pid()")
        await db.expire_connections()
        async with db.pool.acquire() as conn:
            after = await conn.fetchval("SELECT pg_backend_pid()")
        assert after != before, "a fresh session after expire_connections"
        assert await db.write_batch([], [log_row(0)]) == WriteResult(0, 0, 1, 0)


async def test_close_does_not_hang_on_a_connection_still_held(pg_url: str) -> None:
    """A connection nobody releases (a stuck task): close() gives up waiting and terminates the
    pool, the held session is gone."""
    db = DBManager(pg_url, min_size=1, max_size=1)
    await db.connect()
    held = await db.pool.acquire()
    pid = await held.fetchval("SELECT pg_backend_pid()")
    await db.close()
    assert not db.is_connected
    admin = await asyncpg.connect(pg_url)
    try:

        async def session_gone() -> bool:
            sql = "SELECT count(*) FROM pg_stat_activity WHERE pid = $1"
            return bool(await admin.fetchval(sql, pid) == 0)

        await wait_for(session_gone, 10, "the held session ended")
    finally:
        await admin.close()


async def test_log_rows_alone_by_copy_and_duplicates_without_logs(pg_url: str) -> None:
    async with DBManager(pg_url) as db:
        await db.migrate()
        logs = [log_row(0), log_row(1)]
        assert await db.copy_batch([], logs) == WriteResult(0, 0, 2, 0)
        assert await db.copy_batch([], logs) == WriteResult(0, 0, 0, 2), "each row once"
        rows = [GreeksRow(T0, "SPY", 1.0, 0.5, -2.0, 3.0, None)]
        assert await db.copy_batch(rows, []) == WriteResult(1, 0, 0, 0)
        assert await db.copy_batch(rows, []) == WriteResult(0, 1, 0, 0)
        text = f"{T0.isoformat()}\tSPY\t1\t0.5\t-2\t3\t\\N\t\n".encode()
        assert await db.copy_greeks_text(text) == WriteResult(0, 1, 0, 0)
        async with db.pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM portfolio_greeks") == 1
            assert await conn.fetchval("SELECT count(*) FROM api_logs") == 2


def test_an_unexpected_command_status_counts_no_rows() -> None:
    assert _inserted("INSERT 0 7") == 7
    assert _inserted("COPY") == 0
    assert _inserted(None) == 0  # type: ignore[arg-type]

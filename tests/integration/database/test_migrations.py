"""The versioned migrations on a real PostgreSQL: applied twice is a no-op; a database made by
the previous release (its schema, verbatim below) keeps every row and gains the account key;
processes starting together apply each migration once, the others waiting for the schema lock;
an applied file that changed is reported."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import asyncpg
import pytest

from database import queries
from database.db_manager import DBManager
from shared.models import GreeksRow
from tests.helpers import wait_for

T0 = datetime(2026, 11, 25, 14, 30, tzinfo=UTC)
LABELS = ["0001_initial", "0002_account_key", "0003_portfolio_exposure"]

# The schema of the release before migrations (database/sql/schema.sql), verbatim.
RELEASE_SCHEMA = """
CREATE TABLE IF NOT EXISTS portfolio_greeks (
    id               BIGSERIAL PRIMARY KEY,
    timestamp        TIMESTAMPTZ NOT NULL,
    contract         TEXT NOT NULL,
    delta            DOUBLE PRECISION,
    gamma            DOUBLE PRECISION,
    vega             DOUBLE PRECISION,
    theta            DOUBLE PRECISION,
    underlying_price DOUBLE PRECISION
);
CREATE UNIQUE INDEX IF NOT EXISTS portfolio_greeks_timestamp_contract_key
    ON portfolio_greeks (timestamp, contract);

CREATE TABLE IF NOT EXISTS api_logs (
    id        BIGSERIAL PRIMARY KEY,
    timestamp TIMESTAMPTZ NOT NULL,
    api_mode  TEXT,
    message   TEXT,
    status    TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS api_logs_dedupe_key
    ON api_logs (timestamp, api_mode, status, md5(message));
CREATE INDEX IF NOT EXISTS api_logs_timestamp_idx ON api_logs (timestamp);

CREATE TABLE IF NOT EXISTS greek_snapshots (
    id               BIGSERIAL PRIMARY KEY,
    timestamp        TIMESTAMPTZ NOT NULL DEFAULT now(),
    contract         TEXT NOT NULL,
    delta            DOUBLE PRECISION,
    gamma            DOUBLE PRECISION,
    vega             DOUBLE PRECISION,
    theta            DOUBLE PRECISION,
    implied_vol      DOUBLE PRECISION,
    underlying_price DOUBLE PRECISION
);

CREATE TABLE IF NOT EXISTS trades (
    id         BIGSERIAL PRIMARY KEY,
    timestamp  TIMESTAMPTZ NOT NULL DEFAULT now(),
    contract   TEXT NOT NULL,
    side       TEXT NOT NULL,
    quantity   DOUBLE PRECISION NOT NULL,
    price      DOUBLE PRECISION NOT NULL,
    commission DOUBLE PRECISION,
    order_ref  TEXT
);
"""
OLD_ROWS = 500


async def release_database(url: str) -> list[asyncpg.Record]:
    """The previous release's schema with rows in every table; returns the portfolio_greeks
    rows as stored."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(RELEASE_SCHEMA)
        await conn.execute(f"""
            INSERT INTO portfolio_greeks
                (timestamp, contract, delta, gamma, vega, theta, underlying_price)
            SELECT '{T0.isoformat()}'::timestamptz + g * interval '5 s',
                   CASE WHEN g % 3 = 0 THEN 'SPY' ELSE 'PORTFOLIO' END,
                   g, 0.5, -2.0, 3.0, CASE WHEN g % 7 = 0 THEN NULL ELSE 600 + g END
            FROM generate_series(1, {OLD_ROWS}) AS g;
            INSERT INTO api_logs (timestamp, api_mode, message, status)
                VALUES ('{T0.isoformat()}', 'SOCKET', 'connected', 'INFO');
            INSERT INTO greek_snapshots (contract, delta) VALUES ('SPY 261218C600', 0.45);
            INSERT INTO trades (contract, side, quantity, price) VALUES ('SPY', 'BUY', 1, 2);
        """)
        return list(await conn.fetch("SELECT * FROM portfolio_greeks ORDER BY id"))
    finally:
        await conn.close()


async def recorded(url: str) -> list[tuple[int, str, datetime]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT version, name, applied_at FROM schema_migrations ORDER BY 1"
        )
        return [(r[0], r[1], r[2]) for r in rows]
    finally:
        await conn.close()


async def test_applied_twice_is_a_no_op(pg_url: str) -> None:
    async with DBManager(pg_url) as db:
        assert [s.state for s in await db.migration_states()] == ["pending"] * 3
        assert [m.label for m, _ in await db.migrate()] == LABELS
        first = await recorded(pg_url)
        names = [(1, "initial"), (2, "account_key"), (3, "portfolio_exposure")]
        assert [(v, n) for v, n, _ in first] == names
        assert await db.migrate() == []
        assert await recorded(pg_url) == first, "nothing applied or recorded again"
        states = await db.migration_states()
        assert [(s.label, s.state) for s in states] == [(label, "applied") for label in LABELS]
        assert [s.applied_at for s in states] == [at for _, _, at in first]


async def test_the_previous_releases_database_keeps_every_row(pg_url: str) -> None:
    before = await release_database(pg_url)
    async with DBManager(pg_url) as db:
        assert [m.label for m, _ in await db.migrate()] == LABELS
        # the same tick of another account is a new row; a replay of an old one is not
        old = before[0]
        again = GreeksRow(old["timestamp"], old["contract"], 9.0, 9.0, 9.0, 9.0, None)
        other = GreeksRow(old["timestamp"], old["contract"], 1.0, 2.0, 3.0, 4.0, 5.0, "DU2")
        result = await db.write_batch([again, other], [])
        assert (result.greeks_inserted, result.greeks_skipped) == (1, 1)
    conn = await asyncpg.connect(pg_url)
    try:
        after = await conn.fetch("SELECT * FROM portfolio_greeks ORDER BY id")
        indexes = {r[0] for r in await conn.fetch("SELECT indexname FROM pg_indexes")}
        for table in ("api_logs", "greek_snapshots", "trades"):
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 1
    finally:
        await conn.close()
    assert len(after) == OLD_ROWS + 1
    assert [dict(r) for r in after[:OLD_ROWS]] == [{**dict(r), "account": ""} for r in before]
    assert (after[-1]["account"], after[-1]["delta"]) == ("DU2", 1.0)
    assert "portfolio_greeks_timestamp_contract_account_key" in indexes
    assert "portfolio_greeks_timestamp_contract_key" not in indexes


async def test_processes_starting_together_apply_each_migration_once(pg_url: str) -> None:
    """While a session holds the schema lock, two writers' migrations wait for it; released,
    one applies each migration, the other finds it recorded: no error, each version once."""
    await release_database(pg_url)
    holder = await asyncpg.connect(pg_url)
    monitor = await asyncpg.connect(pg_url)  # outside the holder's transaction: a fresh view
    managers = [DBManager(pg_url), DBManager(pg_url)]
    try:
        await asyncio.gather(*(m.connect() for m in managers))
        async with holder.transaction():
            await holder.execute(queries.LOCK_SCHEMA, queries.SCHEMA_LOCK_KEY)
            runs = [asyncio.create_task(m.migrate()) for m in managers]

            async def both_wait() -> bool:
                sql = (
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event = 'advisory'"
                )
                return bool(await monitor.fetchval(sql) == 2)

            await wait_for(both_wait, 20, "both migrations waiting for the schema lock")
        results = await asyncio.gather(*runs)
    finally:
        await holder.close()
        await monitor.close()
        await asyncio.gather(*(m.close() for m in managers))
    applied = sorted(m.version for result in results for m, _ in result)
    assert applied == [1, 2, 3]
    assert [v for v, _, _ in await recorded(pg_url)] == [1, 2, 3]


async def test_a_changed_applied_file_is_reported(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with DBManager(pg_url) as db:
        await db.migrate()
        async with db.pool.acquire() as conn:
            # what a file edited after it was applied looks like: another checksum
            await conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 2")
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (9, 'later', 'x')"
            )
        with caplog.at_level(logging.WARNING, logger="database.db_manager"):
            assert await db.migrate() == []
        states = {s.label: s.state for s in await db.migration_states()}
    assert states == {
        "0001_initial": "applied",
        "0002_account_key": "changed",
        "0003_portfolio_exposure": "applied",
        "0009_later": "unknown",
    }
    assert "schema_migration_changed 0002_account_key: the file differs" in caplog.text


async def test_a_failed_migration_leaves_nothing_half_done(pg_url: str) -> None:
    """Migration 2 refused (a column of its name was added by hand): its transaction rolls back
    whole, it and the ones after it stay pending, and the one before it stays applied."""
    await release_database(pg_url)
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute("ALTER TABLE portfolio_greeks ADD COLUMN account TEXT")
        async with DBManager(pg_url) as db:
            with pytest.raises(asyncpg.DuplicateColumnError):
                await db.migrate()
            states = [(s.label, s.state) for s in await db.migration_states()]
        assert states == [
            ("0001_initial", "applied"),
            ("0002_account_key", "pending"),
            ("0003_portfolio_exposure", "pending"),
        ]
        indexes = {r[0] for r in await conn.fetch("SELECT indexname FROM pg_indexes")}
        assert "portfolio_greeks_timestamp_contract_key" in indexes
        assert await conn.fetchval("SELECT to_regclass('portfolio_exposure')") is None
    finally:
        await conn.close()


async def test_a_migration_longer_than_the_pools_command_timeout_completes(pg_url: str) -> None:
    """The migrations run on a connection without the pool's command timeout nor the database's
    statement_timeout: a migration that waits (here for a lock a test session holds) longer
    than either is not rolled back."""
    await release_database(pg_url)
    conn = await asyncpg.connect(pg_url)
    try:
        name = await conn.fetchval("SELECT current_database()")
        await conn.execute(f'ALTER DATABASE "{name}" SET statement_timeout = 500')
    finally:
        await conn.close()
    holder = await asyncpg.connect(pg_url)
    monitor = await asyncpg.connect(pg_url)  # outside the holder's transaction: a fresh view
    try:
        async with DBManager(pg_url, command_timeout_s=0.5) as db:
            async with holder.transaction():
                await holder.execute("LOCK TABLE portfolio_greeks IN SHARE MODE")
                run = asyncio.create_task(db.migrate())

                async def waits_for_the_table() -> bool:
                    sql = (
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND wait_event_type = 'Lock' AND query LIKE '%ALTER TABLE%'"
                    )
                    return bool(await monitor.fetchval(sql))

                await wait_for(waits_for_the_table, 20, "migration 2 waiting for the table")
                await asyncio.sleep(1.5)  # the lock held for three command timeouts
            assert [m.label for m, _ in await run] == LABELS
    finally:
        await holder.close()
        await monitor.close()
    assert [v for v, _, _ in await recorded(pg_url)] == [1, 2, 3]


def test_the_release_schema_is_the_first_migration_with_its_own_comments() -> None:
    """Migration 1 is the previous release's DDL (its statements unchanged), so it is a no-op on
    a database that release made."""
    from database.migrate import available

    def statements(sql: str) -> list[str]:
        lines = [ln for ln in sql.splitlines() if not ln.lstrip().startswith("--")]
        return [" ".join(s.split()) for s in "\n".join(lines).split(";") if s.strip()]

    assert statements(available()[0].sql) == statements(RELEASE_SCHEMA)

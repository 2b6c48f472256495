"""The production role README recommends: once the migrations are applied, a role with only
INSERT/SELECT on portfolio_greeks, portfolio_exposure and api_logs (and their id sequences) and
SELECT on schema_migrations starts the writer's schema check, writes batches (also the drain's
COPY and its replay path) and reads for `bridge status` / `bridge tail`; the other tables stay
out of its reach. A migration still pending is refused to it, with a line saying what to do."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from database.db_manager import DBManager
from database.reads import Reader
from ops.embedded import PostgresServer
from shared.models import ApiLogRow, ExposureRow, GreeksRow

T0 = datetime(2026, 11, 25, 14, 30, tzinfo=UTC)
GRANTS = """
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO bridge;
GRANT SELECT, INSERT ON portfolio_greeks, portfolio_exposure, api_logs TO bridge;
GRANT USAGE ON SEQUENCE portfolio_greeks_id_seq, portfolio_exposure_id_seq, api_logs_id_seq
    TO bridge;
GRANT SELECT ON schema_migrations TO bridge;
"""


def rows(n: int, start: int = 0) -> list[GreeksRow]:
    return [
        GreeksRow(T0 + timedelta(seconds=i), "PORTFOLIO", 1.0, 0.5, -2.0, 3.0, 600.0)
        for i in range(start, start + n)
    ]


def exposure(i: int) -> ExposureRow:
    return ExposureRow(
        T0 + timedelta(seconds=i), "DU1", "PORTFOLIO", 1.0, 0.5, -2.0, 3.0,
        None, None, 600.0, 4, 4, 0, 0, 0.5, "LIVE",
    )  # fmt: skip


def log_row(message: str) -> ApiLogRow:
    return ApiLogRow(T0, "SOCKET", "INFO", message, "writer")


async def owner_and_bridge(server: PostgresServer) -> tuple[str, str]:
    """A database `desk` owned by the role `owner`, migrated by it, with GRANTS for `bridge`."""
    admin = await asyncpg.connect(server.url())
    try:
        await admin.execute("CREATE ROLE owner LOGIN")
        await admin.execute("CREATE ROLE bridge LOGIN")
        await admin.execute("CREATE DATABASE desk OWNER owner")
    finally:
        await admin.close()
    owner_url = server.url("desk").replace("postgres@", "owner@")
    async with DBManager(owner_url) as owner:
        await owner.migrate()  # the first start, by a role that may create
        async with owner.pool.acquire() as conn:
            await conn.execute(GRANTS)
    return owner_url, server.url("desk").replace("postgres@", "bridge@")


async def test_a_pending_migration_is_refused_to_the_bridges_role(
    private_pg: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    owner_url, bridge_url = await owner_and_bridge(private_pg)
    async with DBManager(owner_url) as owner:
        async with owner.pool.acquire() as conn:  # as if a new release brought migration 3
            await conn.execute("DROP TABLE portfolio_exposure")
            await conn.execute("DELETE FROM schema_migrations WHERE version = 3")
        async with DBManager(bridge_url) as db:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await db.migrate()
        assert "0003_portfolio_exposure: this role may not apply them" in caplog.text
        assert "run `bridge schema` once as the owner of the tables" in caplog.text
        assert [m.label for m, _ in await owner.migrate()] == ["0003_portfolio_exposure"]


async def test_insert_select_on_the_bridges_tables_is_enough(private_pg: PostgresServer) -> None:
    _, bridge_url = await owner_and_bridge(private_pg)
    async with DBManager(bridge_url) as db:
        assert await db.migrate() == []  # every later start: nothing to create, nothing asked
        first = await db.write_batch(rows(3), [log_row("started")], [exposure(0)])
        assert (first.greeks_inserted, first.logs_inserted, first.exposure_inserted) == (3, 1, 1)
        await db.copy_batch(rows(5, 3), [log_row("drained")], [exposure(1)])  # COPY fast path
        again = await db.copy_batch(rows(6, 2), [log_row("drained")], [exposure(1), exposure(2)])
        assert (again.exposure_inserted, again.exposure_skipped) == (1, 1)  # temp tables
    reader = await Reader.connect(bridge_url)
    try:
        newest = await reader.newest_portfolio_row("PORTFOLIO")
        assert newest is not None and newest["timestamp"] == T0 + timedelta(seconds=7)
    finally:
        await reader.close()
    bridge = await asyncpg.connect(bridge_url)
    try:
        assert await bridge.fetchval("SELECT count(*) FROM portfolio_greeks") == 8
        assert await bridge.fetchval("SELECT count(*) FROM portfolio_exposure") == 3
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await bridge.fetchval("SELECT count(*) FROM trades")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await bridge.execute("DELETE FROM portfolio_greeks")
    finally:
        await bridge.close()

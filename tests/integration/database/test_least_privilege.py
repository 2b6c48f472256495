"""The production role README recommends: once the schema exists, a role with only
INSERT/SELECT on portfolio_greeks and api_logs (and their id sequences) starts the writer's
schema check, writes batches (also the drain's COPY and its replay path) and reads for
`bridge status` / `bridge tail`; the other tables stay out of its reach."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from database.db_manager import DBManager
from database.reads import Reader
from ops.embedded import PostgresServer
from shared.models import ApiLogRow, GreeksRow

T0 = datetime(2026, 11, 25, 14, 30, tzinfo=UTC)
GRANTS = """
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO bridge;
GRANT SELECT, INSERT ON portfolio_greeks, api_logs TO bridge;
GRANT USAGE ON SEQUENCE portfolio_greeks_id_seq, api_logs_id_seq TO bridge;
"""


def rows(n: int, start: int = 0) -> list[GreeksRow]:
    return [
        GreeksRow(T0 + timedelta(seconds=i), "PORTFOLIO", 1.0, 0.5, -2.0, 3.0, 600.0)
        for i in range(start, start + n)
    ]


def log_row(message: str) -> ApiLogRow:
    return ApiLogRow(T0, "SOCKET", "INFO", message, "writer")


async def test_insert_select_on_the_two_tables_is_enough(private_pg: PostgresServer) -> None:
    admin = await asyncpg.connect(private_pg.url())
    try:
        await admin.execute("CREATE ROLE owner LOGIN")
        await admin.execute("CREATE ROLE bridge LOGIN")
        await admin.execute("CREATE DATABASE desk OWNER owner")
    finally:
        await admin.close()
    owner_url = private_pg.url("desk").replace("postgres@", "owner@")
    bridge_url = private_pg.url("desk").replace("postgres@", "bridge@")
    async with DBManager(owner_url) as owner:
        await owner.ensure_schema()  # the first start, by a role that may create
    conn = await asyncpg.connect(owner_url)
    try:
        await conn.execute(GRANTS)
    finally:
        await conn.close()

    async with DBManager(bridge_url) as db:
        await db.ensure_schema()  # every later start: nothing to create, nothing asked
        first = await db.write_batch(rows(3), [log_row("started")])
        assert (first.greeks_inserted, first.logs_inserted) == (3, 1)
        await db.copy_batch(rows(5, 3), [log_row("drained")])  # COPY fast path
        await db.copy_batch(rows(6, 2), [log_row("drained")])  # replayed: temp tables
    reader = await Reader.connect(bridge_url)
    try:
        newest = await reader.newest_portfolio_row("PORTFOLIO")
        assert newest is not None and newest["timestamp"] == T0 + timedelta(seconds=7)
    finally:
        await reader.close()
    bridge = await asyncpg.connect(bridge_url)
    try:
        assert await bridge.fetchval("SELECT count(*) FROM portfolio_greeks") == 8
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await bridge.fetchval("SELECT count(*) FROM trades")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await bridge.execute("DELETE FROM portfolio_greeks")
    finally:
        await bridge.close()

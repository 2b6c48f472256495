"""The role README advises for the web console: SELECT on the three tables it reads and nothing
else, read-only sessions by default. Every endpoint works with exactly that; nothing it could
send would change a row."""

from __future__ import annotations

import asyncpg

from ops.embedded import PostgresServer
from shared.clock import utcnow
from tests.integration.web import tables
from tests.web_console import StartWeb

GRANTS = """
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO bridge_web;
GRANT SELECT ON portfolio_greeks, portfolio_exposure, api_logs TO bridge_web;
"""
ROLE = """
ALTER ROLE bridge_web SET default_transaction_read_only = on;
ALTER ROLE bridge_web SET statement_timeout = '5s';
"""


async def test_a_select_only_role_is_enough(
    private_pg: PostgresServer, start_web: StartWeb
) -> None:
    await tables.execute(
        private_pg.url(), "CREATE ROLE owner LOGIN; CREATE ROLE bridge_web LOGIN;" + ROLE
    )
    await tables.execute(private_pg.url(), "CREATE DATABASE desk OWNER owner")
    owner = private_pg.url("desk").replace("postgres@", "owner@")
    reader = private_pg.url("desk").replace("postgres@", "bridge_web@")
    await tables.execute(owner, tables.FINAL + GRANTS)
    now = utcnow()
    await tables.greeks(owner, [(now, "PORTFOLIO", 1.5, 0.25, 3.0, -4.0, 600.0)], account="U1")
    await tables.copy(
        owner,
        "portfolio_exposure",
        tables.EXPOSURE_COLUMNS,
        [tables.exposure_row(now, "U1", "SPY", 1.0)],
    )
    await tables.logs(owner, [(now, "WARN", "reconnect attempt 1/4 of round 1 (at once) failed")])
    web = await start_web(DATABASE_URL=reader)

    for path in ("/api/series", "/api/exposure", "/api/logs"):
        status, body = await web.json(path)
        assert status == 200, (path, body)
    _, series = await web.json("/api/series")
    assert series["newest"]["delta"] == 1.5
    _, book = await web.json("/api/exposure")
    assert [r["scope"] for r in book["rows"]] == ["SPY"]
    _, status = await web.json("/api/status")
    assert status["db_error"] is None and status["last_row_ts"] == now.isoformat()
    code, metrics = await web.text("/metrics")
    assert code == 200 and "bridge_reconnect_attempts_total 1.0" in metrics
    # the role could not write even if asked to
    conn = await asyncpg.connect(reader)
    try:
        for sql in ("DELETE FROM api_logs", "CREATE TABLE x (a int)"):
            try:
                await conn.execute(sql)
            except asyncpg.PostgresError as exc:
                assert isinstance(
                    exc, asyncpg.ReadOnlySQLTransactionError | asyncpg.InsufficientPrivilegeError
                ), exc
            else:
                raise AssertionError(f"{sql} was allowed")
    finally:
        await conn.close()

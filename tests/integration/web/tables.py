"""The tables the web console reads, made by the tests themselves: the schema with the account
column and portfolio_exposure (FINAL), and the one before several accounts (OLD); rows put in
with COPY; a Redis state like a running bridge's."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from shared.names import WRITER_GROUP, Keys

FINAL = """
CREATE TABLE portfolio_greeks (
    id               BIGSERIAL PRIMARY KEY,
    timestamp        TIMESTAMPTZ NOT NULL,
    contract         TEXT NOT NULL,
    delta            DOUBLE PRECISION,
    gamma            DOUBLE PRECISION,
    vega             DOUBLE PRECISION,
    theta            DOUBLE PRECISION,
    underlying_price DOUBLE PRECISION,
    account          TEXT NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX portfolio_greeks_timestamp_contract_account_key
    ON portfolio_greeks (timestamp, contract, account);
CREATE TABLE api_logs (
    id        BIGSERIAL PRIMARY KEY,
    timestamp TIMESTAMPTZ NOT NULL,
    api_mode  TEXT,
    message   TEXT,
    status    TEXT
);
CREATE INDEX api_logs_timestamp_idx ON api_logs (timestamp);
CREATE TABLE portfolio_exposure (
    id               BIGSERIAL PRIMARY KEY,
    timestamp        TIMESTAMPTZ NOT NULL,
    account          TEXT NOT NULL,
    scope            TEXT NOT NULL,
    delta            DOUBLE PRECISION,
    gamma            DOUBLE PRECISION,
    vega             DOUBLE PRECISION,
    theta            DOUBLE PRECISION,
    delta_dollars    DOUBLE PRECISION,
    gamma_dollars    DOUBLE PRECISION,
    underlying_price DOUBLE PRECISION,
    legs             INTEGER,
    legs_fresh       INTEGER,
    legs_carried     INTEGER,
    legs_excluded    INTEGER,
    greeks_age_max_s DOUBLE PRECISION,
    market_data      TEXT,
    daily_pnl        DOUBLE PRECISION,
    unrealized_pnl   DOUBLE PRECISION,
    realized_pnl     DOUBLE PRECISION
);
CREATE UNIQUE INDEX portfolio_exposure_timestamp_account_scope_key
    ON portfolio_exposure (timestamp, account, scope);
"""

OLD = """
CREATE TABLE portfolio_greeks (
    id               BIGSERIAL PRIMARY KEY,
    timestamp        TIMESTAMPTZ NOT NULL,
    contract         TEXT NOT NULL,
    delta            DOUBLE PRECISION,
    gamma            DOUBLE PRECISION,
    vega             DOUBLE PRECISION,
    theta            DOUBLE PRECISION,
    underlying_price DOUBLE PRECISION
);
CREATE UNIQUE INDEX portfolio_greeks_timestamp_contract_key
    ON portfolio_greeks (timestamp, contract);
CREATE TABLE api_logs (
    id        BIGSERIAL PRIMARY KEY,
    timestamp TIMESTAMPTZ NOT NULL,
    api_mode  TEXT,
    message   TEXT,
    status    TEXT
);
"""

GREEK_COLUMNS = ("timestamp", "contract", "delta", "gamma", "vega", "theta", "underlying_price")
EXPOSURE_COLUMNS = (
    "timestamp",
    "account",
    "scope",
    "delta",
    "gamma",
    "vega",
    "theta",
    "delta_dollars",
    "gamma_dollars",
    "underlying_price",
    "legs",
    "legs_fresh",
    "legs_carried",
    "legs_excluded",
    "greeks_age_max_s",
    "market_data",
    "daily_pnl",
    "unrealized_pnl",
    "realized_pnl",
)


async def execute(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def copy(dsn: str, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.copy_records_to_table(table, records=rows, columns=list(columns))
    finally:
        await conn.close()


async def greeks(dsn: str, rows: Sequence[tuple[Any, ...]], *, account: str | None = None) -> None:
    """Rows of GREEK_COLUMNS (+ account when given: the final schema)."""
    if account is None:
        await copy(dsn, "portfolio_greeks", GREEK_COLUMNS, rows)
    else:
        await copy(
            dsn, "portfolio_greeks", (*GREEK_COLUMNS, "account"), [(*r, account) for r in rows]
        )


async def fetch(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def logs(dsn: str, rows: Sequence[tuple[datetime, str, str]]) -> None:
    """(timestamp, status, message) rows of api_logs."""
    await copy(
        dsn,
        "api_logs",
        ("timestamp", "api_mode", "status", "message"),
        [(ts, "SOCKET", status, message) for ts, status, message in rows],
    )


async def running_bridge(
    client: aioredis.Redis,
    prefix: str,
    now: datetime,
    *,
    link: str = "connected",
    breaker: str = "closed",
    buffer_rows: int = 0,
) -> None:
    """What a running collector and writer leave in Redis: link, heartbeats, writer state."""
    keys = Keys(prefix)
    await client.hset(
        keys.link,
        mapping={"state": link, "since": now.isoformat(), "last_tick": now.isoformat()},
    )
    await client.set(keys.heartbeat, now.isoformat(), ex=60)
    await client.set(keys.writer_heartbeat, now.isoformat(), ex=60)
    await client.hset(
        keys.writer_state,
        mapping={"breaker": breaker, "buffer_rows": str(buffer_rows), "buffer_bytes": "0"},
    )


async def backlog(client: aioredis.Redis, prefix: str, delivered: int, waiting: int) -> None:
    """`delivered` entries pending at consumer writer-1, `waiting` not yet delivered."""
    keys = Keys(prefix)
    await client.xgroup_create(keys.greeks, WRITER_GROUP, id="0", mkstream=True)
    for i in range(delivered + waiting):
        await client.xadd(keys.greeks, {"n": str(i)})
    if delivered:
        await client.xreadgroup(WRITER_GROUP, "writer-1", {keys.greeks: ">"}, count=delivered)


def exposure_row(ts: Any, account: str, scope: str, k: float, **extra: Any) -> tuple[Any, ...]:
    row = {
        "timestamp": ts,
        "account": account,
        "scope": scope,
        "delta": 10.5 * k,
        "gamma": 0.25 * k,
        "vega": 30.75 * k,
        "theta": -4.125 * k,
        "delta_dollars": 6_300.5 * k,
        "gamma_dollars": 120.25 * k,
        "underlying_price": 600.0 + k,
        "legs": 4,
        "legs_fresh": 3,
        "legs_carried": 1,
        "legs_excluded": 0,
        "greeks_age_max_s": 7.5,
        "market_data": "LIVE",
        "daily_pnl": None,
        "unrealized_pnl": None,
        "realized_pnl": None,
        **extra,
    }
    return tuple(row[c] for c in EXPOSURE_COLUMNS)

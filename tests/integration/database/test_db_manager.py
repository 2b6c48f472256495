"""DBManager on a real PostgreSQL: schema check, idempotent batches, the pre-existing tables."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from database.db_manager import DBManager, WriteResult
from shared.models import ApiLogRow, GreeksRow

T0 = datetime(2026, 11, 25, 14, 30, tzinfo=UTC)


def greeks(n: int, start: int = 0) -> list[GreeksRow]:
    return [
        GreeksRow(
            T0 + timedelta(seconds=5 * i),
            "PORTFOLIO",
            i * 1.0,
            0.5,
            -2.0,
            3.0,
            None if i % 2 else 600.0 + i,
        )
        for i in range(start, start + n)
    ]


async def columns(url: str, table: str) -> list[tuple[str, str]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = $1 ORDER BY ordinal_position",
            table,
        )
        return [(r[0], r[1]) for r in rows]
    finally:
        await conn.close()


async def test_migrations_create_exact_columns(pg_url: str) -> None:
    async with DBManager(pg_url) as db:
        assert [m.label for m, _ in await db.migrate()] == [
            "0001_initial",
            "0002_account_key",
            "0003_portfolio_exposure",
        ]
        assert await db.migrate() == []  # twice is a no-op
    dp = "double precision"
    assert await columns(pg_url, "portfolio_greeks") == [
        ("id", "bigint"),
        ("timestamp", "timestamp with time zone"),
        ("contract", "text"),
        ("delta", dp),
        ("gamma", dp),
        ("vega", dp),
        ("theta", dp),
        ("underlying_price", dp),
        ("account", "text"),
    ]
    assert await columns(pg_url, "api_logs") == [
        ("id", "bigint"),
        ("timestamp", "timestamp with time zone"),
        ("api_mode", "text"),
        ("message", "text"),
        ("status", "text"),
    ]
    conn = await asyncpg.connect(pg_url)
    try:
        idx = {r[0] for r in await conn.fetch("SELECT indexname FROM pg_indexes")}
    finally:
        await conn.close()
    assert {"portfolio_greeks_timestamp_contract_account_key", "api_logs_dedupe_key"} <= idx
    assert "portfolio_greeks_timestamp_contract_key" not in idx


TABLES = [
    "api_logs",
    "greek_snapshots",
    "portfolio_exposure",
    "portfolio_greeks",
    "schema_migrations",
    "trades",
]
INDEXES = [
    ("api_logs", "api_logs_dedupe_key"),
    ("api_logs", "api_logs_pkey"),
    ("api_logs", "api_logs_timestamp_idx"),
    ("greek_snapshots", "greek_snapshots_pkey"),
    ("portfolio_exposure", "portfolio_exposure_pkey"),
    ("portfolio_exposure", "portfolio_exposure_timestamp_account_scope_key"),
    ("portfolio_greeks", "portfolio_greeks_pkey"),
    ("portfolio_greeks", "portfolio_greeks_timestamp_contract_account_key"),
    ("schema_migrations", "schema_migrations_pkey"),
    ("trades", "trades_pkey"),
]


async def test_concurrent_schema_checks(pg_url: str) -> None:
    """Eight processes starting at once on an empty database (several rounds, to meet the race
    of CREATE ... IF NOT EXISTS): none fails, each migration is applied once, and each table and
    index exists once."""
    managers = [DBManager(pg_url) for _ in range(8)]
    await asyncio.gather(*(m.connect() for m in managers))
    conn = await asyncpg.connect(pg_url)
    try:
        for _ in range(5):
            await conn.execute(f"DROP TABLE IF EXISTS {', '.join(TABLES)}")
            results = await asyncio.gather(*(m.migrate() for m in managers), return_exceptions=True)
            assert not [r for r in results if isinstance(r, BaseException)], results
            applied = [m.version for r in results if isinstance(r, list) for m, _ in r]
            assert sorted(applied) == [1, 2, 3], "each migration applied by one of them"
            versions = await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")
            assert [r[0] for r in versions] == [1, 2, 3]
            tables = await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
            )
            assert [r[0] for r in tables] == TABLES
            indexes = await conn.fetch(
                "SELECT tablename, indexname FROM pg_indexes WHERE schemaname = 'public' "
                "ORDER BY 1, 2"
            )
            assert [(r[0], r[1]) for r in indexes] == INDEXES
    finally:
        await conn.close()
        await asyncio.gather(*(m.close() for m in managers))


async def test_existing_tables_left_as_they_are(pg_url: str) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute("""
            CREATE TABLE portfolio_greeks (id BIGSERIAL PRIMARY KEY, timestamp TIMESTAMPTZ,
              contract TEXT, delta DOUBLE PRECISION, gamma DOUBLE PRECISION,
              vega DOUBLE PRECISION, theta DOUBLE PRECISION, underlying_price DOUBLE PRECISION,
              note TEXT);
            CREATE TABLE api_logs (id BIGSERIAL PRIMARY KEY, timestamp TIMESTAMPTZ,
              api_mode TEXT, message TEXT, status TEXT);
            CREATE TABLE greek_snapshots (id BIGSERIAL PRIMARY KEY, timestamp TIMESTAMPTZ
              NOT NULL DEFAULT now(), contract TEXT NOT NULL, delta DOUBLE PRECISION,
              gamma DOUBLE PRECISION, vega DOUBLE PRECISION, theta DOUBLE PRECISION,
              implied_vol DOUBLE PRECISION, underlying_price DOUBLE PRECISION, legacy INT);
            CREATE TABLE trades (id BIGSERIAL PRIMARY KEY, timestamp TIMESTAMPTZ NOT NULL
              DEFAULT now(), contract TEXT NOT NULL, side TEXT NOT NULL, quantity
              DOUBLE PRECISION NOT NULL, price DOUBLE PRECISION NOT NULL,
              commission DOUBLE PRECISION, order_ref TEXT);
            INSERT INTO portfolio_greeks (timestamp, contract, delta, note)
              VALUES ('2026-01-01T00:00:00Z', 'PORTFOLIO', 1.5, 'kept');
            INSERT INTO trades (contract, side, quantity, price) VALUES ('SPY', 'BUY', 1, 2);
        """)
        async with DBManager(pg_url) as db:
            await db.migrate()
        assert await conn.fetchval("SELECT note FROM portfolio_greeks") == "kept"
        assert await conn.fetchval("SELECT count(*) FROM trades") == 1
        assert ("legacy", "integer") in await columns(pg_url, "greek_snapshots")
        assert ("note", "text") in await columns(pg_url, "portfolio_greeks")
    finally:
        await conn.close()


async def test_batches_are_idempotent_and_ordered(pg_url: str) -> None:
    async with DBManager(pg_url) as db:
        await db.migrate()
        rows = greeks(50)
        log = ApiLogRow(T0, "SOCKET", "INFO", "connected", "collector")
        first = await db.write_batch(rows, [log])
        again = await db.write_batch(rows[10:30], [log])
        assert (first.greeks_inserted, first.logs_inserted) == (50, 1)
        assert (again.greeks_inserted, again.greeks_skipped, again.logs_skipped) == (0, 20, 1)
        await db.write_batch(greeks(10, start=50), [])
        conn = await asyncpg.connect(pg_url)
        try:
            got = await conn.fetch(
                "SELECT timestamp, underlying_price FROM portfolio_greeks ORDER BY id"
            )
        finally:
            await conn.close()
        assert [r[0] for r in got] == sorted(r[0] for r in got)
        assert len(got) == 60
        assert got[1][1] is None and got[0][1] == 600.0


async def test_greek_snapshots_and_trades_keep_working(pg_url: str) -> None:
    async with DBManager(pg_url) as db:
        await db.migrate()
        sid = await db.insert_greek_snapshot(
            "SPY 261218C600",
            delta=0.45,
            gamma=0.01,
            vega=0.6,
            theta=-0.26,
            implied_vol=0.18,
            underlying_price=600.0,
            timestamp=T0,
        )
        snaps = await db.greek_snapshots("SPY 261218C600")
        assert [s["id"] for s in snaps] == [sid]
        assert snaps[0]["delta"] == 0.45 and snaps[0]["implied_vol"] == 0.18
        tid = await db.insert_trade("SPY", "BUY", 100, 599.5, timestamp=T0, order_ref="abc")
        trades = await db.trades_since(T0 - timedelta(seconds=1))
        assert [(t["id"], t["side"], t["quantity"]) for t in trades] == [(tid, "BUY", 100.0)]
        with pytest.raises(ValueError, match="side"):
            await db.insert_trade("SPY", "HOLD", 1, 1, timestamp=T0)


async def stored_keys(url: str) -> list[datetime]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT timestamp FROM portfolio_greeks ORDER BY id")
        return [r[0] for r in rows]
    finally:
        await conn.close()


async def test_copy_batch_over_stored_rows_takes_the_duplicate_tolerant_path(pg_url: str) -> None:
    """A replayed chunk: the COPY fails as a whole on the first stored row, the staged insert
    (ON CONFLICT DO NOTHING) keeps the new rows, in input order, and reports the skipped ones."""
    async with DBManager(pg_url) as db:
        await db.migrate()
        first = await db.copy_batch(greeks(10), [])
        assert first == WriteResult(10, 0, 0, 0)
        log = ApiLogRow(T0, "SOCKET", "INFO", "drained", "writer")
        replay = await db.copy_batch(greeks(15, start=5), [log])  # rows 5-9 stored already
        assert replay == WriteResult(10, 5, 1, 0)
        again = await db.copy_batch(greeks(15, start=5), [log])
        assert again == WriteResult(0, 15, 0, 1)
    keys = await stored_keys(pg_url)
    assert keys == [r.ts for r in greeks(20)], "each row once, id order is input order"


async def test_copy_text_over_stored_rows_takes_the_duplicate_tolerant_path(pg_url: str) -> None:
    def text(rows: list[GreeksRow]) -> bytes:
        """COPY text lines, as the drain sends them."""
        lines = []
        for r in rows:
            und = "\\N" if r.underlying_price is None else repr(r.underlying_price)
            numbers = [repr(x) for x in (r.delta, r.gamma, r.vega, r.theta)]
            row = [r.ts.isoformat(), r.contract, *numbers, und, r.account]
            lines.append("\t".join(row) + "\n")
        return "".join(lines).encode()

    async with DBManager(pg_url) as db:
        await db.migrate()
        assert await db.copy_greeks_text(text(greeks(10))) == WriteResult(10, 0, 0, 0)
        replay = await db.copy_greeks_text(text(greeks(15, start=5)))
        assert replay == WriteResult(10, 5, 0, 0)
    assert await stored_keys(pg_url) == [r.ts for r in greeks(20)]

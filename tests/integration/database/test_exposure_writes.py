"""portfolio_exposure and the account key on a real PostgreSQL: the table's exact columns, and
each write route (the stream's unnest insert, the drain's COPY and COPY text, and their staged
replay routes) storing every row once, in input order, unknown numbers as NULL, two accounts'
rows of the same tick side by side."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import asyncpg

from database.db_manager import DBManager, WriteResult
from database.queries import EXPOSURE_COLUMNS
from shared.models import ExposureRow, GreeksRow
from tests.integration.database.test_db_manager import columns

T0 = datetime(2026, 11, 25, 14, 30, tzinfo=UTC)
ACCOUNTS = ("DU111", "DU222")


def greeks(n: int, start: int = 0) -> list[GreeksRow]:
    """Row i of each account at the same tick."""
    return [
        GreeksRow(T0 + timedelta(seconds=5 * i), "PORTFOLIO", i + k, 0.5, -2.0, 3.0, None, a)
        for i in range(start, start + n)
        for k, a in enumerate(ACCOUNTS)
    ]


def exposures(n: int, start: int = 0) -> list[ExposureRow]:
    """Each account's PORTFOLIO and SPY rows and the combined book's at tick i; every third tick
    with the unknown numbers unknown."""
    out = []
    for i in range(start, start + n):
        known = i % 3 != 0
        for account in (*ACCOUNTS, "ALL"):
            for scope in ("PORTFOLIO", "SPY"):
                out.append(
                    ExposureRow(
                        T0 + timedelta(seconds=5 * i), account, scope, float(i), 0.5, -2.0, 3.0,
                        i * 600.0 if known else None, 1.5 if known else None,
                        600.0 if known else None, 4, 3, 1, 0, 2.5 if known else None,
                        "LIVE" if known else None,
                        -10.0 if known else None, 20.0 if known else None, None,
                    )
                )  # fmt: skip
    return out


def key(r: ExposureRow) -> tuple[datetime, str, str]:
    return (r.ts, r.account, r.scope)


async def stored(url: str) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
    conn = await asyncpg.connect(url)
    try:
        g = await conn.fetch(
            "SELECT timestamp, contract, account, delta FROM portfolio_greeks ORDER BY id"
        )
        e = await conn.fetch("SELECT * FROM portfolio_exposure ORDER BY id")
        return list(g), list(e)
    finally:
        await conn.close()


def as_rows(records: Sequence[asyncpg.Record]) -> list[ExposureRow]:
    """Stored rows back as row models (the columns are in the model's field order)."""
    return [ExposureRow(*(r[c] for c in EXPOSURE_COLUMNS)) for r in records]


async def test_portfolio_exposure_has_exactly_its_columns(pg_url: str) -> None:
    async with DBManager(pg_url) as db:
        await db.migrate()
    dp, i4, text = "double precision", "integer", "text"
    assert await columns(pg_url, "portfolio_exposure") == [
        ("id", "bigint"),
        ("timestamp", "timestamp with time zone"),
        ("account", text),
        ("scope", text),
        *[(name, dp) for name in ("delta", "gamma", "vega", "theta")],
        *[(name, dp) for name in ("delta_dollars", "gamma_dollars", "underlying_price")],
        *[(name, i4) for name in ("legs", "legs_fresh", "legs_carried", "legs_excluded")],
        ("greeks_age_max_s", dp),
        ("market_data", text),
        *[(name, dp) for name in ("daily_pnl", "unrealized_pnl", "realized_pnl")],
    ]


async def test_the_streams_batches_store_each_row_once(pg_url: str) -> None:
    async with DBManager(pg_url) as db:
        await db.migrate()
        first = await db.write_batch(greeks(4), [], exposures(4))
        assert first == WriteResult(8, 0, 0, 0, 24, 0)
        replay = await db.write_batch(greeks(6, 2), [], exposures(6, 2))
        assert replay == WriteResult(8, 4, 0, 0, 24, 12)
    g, e = await stored(pg_url)
    assert [(r[0], r[2]) for r in g] == [(r.ts, r.account) for r in greeks(8)]
    assert as_rows(e) == exposures(8), "every value as given, NULL for unknown, in input order"
    assert len({(r[0], r[1], r[2]) for r in g}) == len(g) == 16
    assert e[0]["delta_dollars"] is None and e[0]["market_data"] is None
    assert e[6]["delta_dollars"] == 600.0 and e[6]["market_data"] == "LIVE"


async def test_copy_and_its_replay_route_store_each_row_once(pg_url: str) -> None:
    async with DBManager(pg_url) as db:
        await db.migrate()
        assert await db.copy_batch(greeks(5), [], exposures(5)) == WriteResult(10, 0, 0, 0, 30, 0)
        # only the exposure rows overlap: the COPY fails as a whole, the staged route takes it
        replay = await db.copy_batch(greeks(3, 5), [], exposures(6, 2))
        assert replay == WriteResult(6, 0, 0, 0, 18, 18)
        only_exposure = await db.copy_batch([], [], exposures(2, 8))
        assert only_exposure == WriteResult(0, 0, 0, 0, 12, 0)
    g, e = await stored(pg_url)
    assert [(r[0], r[2]) for r in g] == [(r.ts, r.account) for r in greeks(8)]
    assert [key(r) for r in as_rows(e)] == [key(r) for r in exposures(10)]
    assert as_rows(e) == exposures(10)


def copy_text(rows: list[GreeksRow]) -> bytes:
    """COPY text lines, as the drain sends them."""
    lines = []
    for r in rows:
        numbers = [repr(x) for x in (r.delta, r.gamma, r.vega, r.theta)]
        lines.append("\t".join([r.ts.isoformat(), r.contract, *numbers, "\\N", r.account]))
    return ("\n".join(lines) + "\n").encode()


async def test_copy_text_with_exposure_rows_and_its_replay_route(pg_url: str) -> None:
    async with DBManager(pg_url) as db:
        await db.migrate()
        first = await db.copy_greeks_text(copy_text(greeks(3)), [], exposures(3))
        assert first == WriteResult(6, 0, 0, 0, 18, 0)
        replay = await db.copy_greeks_text(copy_text(greeks(4)), [], exposures(4))
        assert replay == WriteResult(2, 6, 0, 0, 6, 18)
        alone = await db.copy_greeks_text(b"", [], exposures(1, 4))
        assert alone == WriteResult(0, 0, 0, 0, 6, 0)
    g, e = await stored(pg_url)
    assert [(r[0], r[2], r[3]) for r in g] == [(r.ts, r.account, r.delta) for r in greeks(4)]
    assert as_rows(e) == exposures(5)

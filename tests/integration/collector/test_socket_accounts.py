"""Several accounts under one login (ib_async 2.1 against the IB Gateway simulator): each
account's rows equal its own book, the ALL row equals the combined book, every exposure row has
its tick's timestamp, and each account's P&L is its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from collector.books import ALL_ACCOUNTS, Books, TickRows
from collector.socket.transport import SocketTransport
from collector.transport import TransportError
from shared.clock import utcnow
from shared.config import Settings, load_settings
from simulator.book import generate_book, linked_book
from simulator.gateway import GatewaySimulator
from simulator.portfolio import SimPortfolio, combined

A, B = "DU1111111", "DU2222222"


def books() -> tuple[SimPortfolio, SimPortfolio]:
    first = generate_book(12, 3, seed=5, account=A, step_s=0)
    return first, linked_book(first, 8, 3, seed=6, account=B)


def settings(port: int, account: str) -> Settings:
    return load_settings(
        {
            "IB_HOST": "127.0.0.1",
            "IB_PORT": str(port),
            "IB_CLIENT_ID": "8",
            "IB_ACCOUNT": account,
            "IB_MARKET_DATA_TYPE": "LIVE",
        },
        dotenv=None,
    )


@asynccontextmanager
async def reading(account: str) -> AsyncIterator[tuple[GatewaySimulator, SocketTransport]]:
    first, second = books()
    async with GatewaySimulator(first, more=[second]) as sim:
        t = SocketTransport(settings(sim.port, account))
        await t.connect()
        try:
            yield sim, t
        finally:
            await t.disconnect()


def net(book: SimPortfolio) -> tuple[float, float, float, float]:
    g = book.net_greeks_at_step(0)
    return (g.delta, g.gamma, g.vega, g.theta)


async def first_complete(t: SocketTransport, b: Books, want: set[str]) -> TickRows:
    for _ in range(60):
        now = utcnow()
        rows = b.evaluate(await t.snapshot(now), now)
        accounts = {r.account for r in rows.greeks}
        complete = rows.greeks and not any("excluded" in r.message for r in rows.reports)
        if complete and accounts == want:
            return rows
        await asyncio.sleep(0.25)
    raise AssertionError("no complete tick within 15 s")


async def test_all_accounts_each_book_and_the_combined_book() -> None:
    first, second = books()
    async with reading("ALL") as (sim, t):
        b = Books(t.settings, "SOCKET")
        rows = await first_complete(t, b, {A, B, ALL_ACCOUNTS})
        snap = await t.snapshot(utcnow())
        lines = sim.status()["lines"]
    by_account = {r.account: r for r in rows.greeks if r.contract == "PORTFOLIO"}
    assert set(by_account) == {A, B, ALL_ACCOUNTS}
    for account, book in ((A, first), (B, second), (ALL_ACCOUNTS, combined([first, second]))):
        r = by_account[account]
        assert (r.delta, r.gamma, r.vega, r.theta) == pytest.approx(net(book), rel=1e-9, abs=1e-9)
    # one request per contract however many accounts hold it
    contracts = {p.con_id for p in snap.positions} | {
        u.con_id
        for u in first.underlyings.values()
        if u.symbol in {p.symbol for p in snap.positions}
    }
    assert lines["requests"] == len(contracts)
    # every exposure row at the tick's timestamp, its PORTFOLIO scope equal to the greeks row
    ts = {r.ts for r in rows.greeks}
    assert {e.ts for e in rows.exposure} == ts
    exp = {(e.account, e.scope): e for e in rows.exposure}
    for account, r in by_account.items():
        e = exp[(account, "PORTFOLIO")]
        assert (e.delta, e.gamma, e.vega, e.theta) == (r.delta, r.gamma, r.vega, r.theta)
        assert e.legs_excluded == 0 and e.legs == e.legs_fresh + e.legs_carried
    # P&L: each account's own, the ALL row their sum
    pnl_a, pnl_b = snap.pnl[A], snap.pnl[B]
    assert pnl_a.unrealized is not None and pnl_b.unrealized is not None
    assert pnl_a.unrealized != pnl_b.unrealized
    assert exp[(ALL_ACCOUNTS, "PORTFOLIO")].unrealized_pnl == pytest.approx(
        pnl_a.unrealized + pnl_b.unrealized
    )


async def test_one_account_of_several_reads_only_that_one_without_an_all_row() -> None:
    first, _ = books()
    async with reading(A) as (_, t):
        rows = await first_complete(t, Books(t.settings, "SOCKET"), {A})
    assert {r.account for r in rows.greeks} == {A}
    [r] = [r for r in rows.greeks if r.contract == "PORTFOLIO"]
    assert (r.delta, r.gamma, r.vega, r.theta) == pytest.approx(net(first), rel=1e-9, abs=1e-9)


async def test_an_account_the_login_does_not_have_is_refused_by_name() -> None:
    first, second = books()
    async with GatewaySimulator(first, more=[second]) as sim:
        t = SocketTransport(settings(sim.port, f"{A},DU9999999"))
        with pytest.raises(TransportError, match="IB_ACCOUNT=DU9999999 is not an account"):
            await t.connect()
        await t.disconnect()

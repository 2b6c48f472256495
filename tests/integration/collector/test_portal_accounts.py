"""Several accounts under one login in PORTAL mode (the Client Portal simulator, real HTTPS): each
account's rows equal its own book, the ALL row the combined book, every exposure row has its
tick's timestamp, each account's P&L is its own (/iserver/account/pnl/partitioned) and the ALL
row's their sum; one market-data stream per conid; the P&L call within its pacing; a single
account with its P&L; an account the login does not have refused by name.

Expected values come from the simulator's books (`SimPortfolio`), never from the bridge."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from collector.books import ALL_ACCOUNTS, Books, TickRows
from collector.portal.accounts import PNL_PATH
from collector.portal.session import AccountChoiceError
from collector.portal.transport import PortalTransport
from collector.transport import Pnl, Snapshot
from shared.clock import utcnow
from shared.config import Settings, load_settings
from simulator.book import generate_book, linked_book
from simulator.portal.server import PortalSimulator
from simulator.portfolio import SimPortfolio, combined

A, B = "DU1111111", "DU2222222"


def books() -> tuple[SimPortfolio, SimPortfolio]:
    first = generate_book(12, 3, seed=5, account=A, step_s=0)
    return first, linked_book(first, 8, 3, seed=6, account=B)


def settings(sim: PortalSimulator, account: str) -> Settings:
    return load_settings(
        {
            "IB_API_MODE": "PORTAL",
            "IBKR_GATEWAY_URL": sim.url,
            "IBKR_CA_FILE": str(sim.ca_file),
            "IB_CONNECT_TIMEOUT_S": "5",
            "IB_MARKET_DATA_LINES": "10000",
            "IB_ACCOUNT": account,
        },
        dotenv=None,
    )


@asynccontextmanager
async def reading(
    account: str, *portfolios: SimPortfolio, **switches: object
) -> AsyncIterator[tuple[PortalSimulator, PortalTransport]]:
    first, *more = portfolios or books()
    async with PortalSimulator(first, more=more) as sim:
        sim.switches.update(switches)
        t = PortalTransport(settings(sim, account))
        try:
            await t.connect()
            yield sim, t
        finally:
            await t.disconnect()


def net(book: SimPortfolio) -> tuple[float, float, float, float]:
    g = book.net_greeks_at_step(0)
    return (g.delta, g.gamma, g.vega, g.theta)


def book_pnl(book: SimPortfolio) -> Pnl:
    """The book's P&L worked out here: value minus cost of every position, daily a tenth of it
    (the simulator's model); no realized figure (the endpoint has none)."""
    unrealized = 0.0
    for pos in book.positions:
        price = (
            book.quote_at_step(pos, 0).price if pos.is_option else book.price_at_step(pos.symbol, 0)
        )
        unrealized += pos.quantity * price * pos.multiplier - pos.quantity * pos.avg_cost
    return Pnl(round(0.1 * unrealized, 2), round(unrealized, 2), None)


async def first_complete(t: PortalTransport, b: Books, want: set[str]) -> tuple[Snapshot, TickRows]:
    """The first tick with every account's rows, nothing excluded, and every P&L known."""
    for _ in range(60):
        now = utcnow()
        snap = await t.snapshot(now)
        rows = b.evaluate(snap, now)
        accounts = {r.account for r in rows.greeks}
        complete = rows.greeks and not any("excluded" in r.message for r in rows.reports)
        pnl_known = all(p.unrealized is not None for p in snap.pnl.values())
        if complete and accounts == want and pnl_known:
            return snap, rows
        await asyncio.sleep(0.25)
    raise AssertionError("no complete tick within 15 s")


async def test_all_accounts_each_book_and_the_combined_book() -> None:
    first, second = books()
    async with reading("ALL", first, second) as (sim, t):
        b = Books(t.settings, "PORTAL")
        snap, rows = await first_complete(t, b, {A, B, ALL_ACCOUNTS})
        streams = set(sim.session.streams.open)
        asked = dict(sim.stats.conid_requests)
        lines = t.lines.status()
        status = t.status()
    assert (snap.account, snap.accounts) == (f"{A},{B}", (A, B))
    assert {p.account for p in snap.positions} == {A, B}
    by_account = {r.account: r for r in rows.greeks if r.contract == "PORTFOLIO"}
    assert set(by_account) == {A, B, ALL_ACCOUNTS}
    for account, book in ((A, first), (B, second), (ALL_ACCOUNTS, combined([first, second]))):
        r = by_account[account]
        assert (r.delta, r.gamma, r.vega, r.theta) == pytest.approx(net(book), rel=1e-9, abs=1e-9)
        assert r.mode == "PORTAL"
    # one stream per contract however many accounts hold it (the line budget counts conids)
    shared = {p.con_id for p in first.positions} & {p.con_id for p in second.positions}
    assert any(p.is_option for p in first.positions if p.con_id in shared)
    held = {p.symbol for p in (*first.positions, *second.positions)}
    wanted = {p.con_id for p in (*first.positions, *second.positions) if p.is_option} | {
        u.con_id for u in first.underlyings.values() if u.symbol in held
    }
    assert streams == wanted
    assert lines["lines_in_use"] == str(len(wanted))
    # a contract both accounts hold is asked for as often as one only A holds: once a call
    only_a = {p.con_id for p in first.positions if p.is_option} - shared
    assert {asked[c] for c in shared | only_a if c in asked} == {asked[min(only_a)]}
    # every exposure row at the tick's timestamp, its PORTFOLIO scope equal to the greeks row
    ts = {r.ts for r in rows.greeks}
    assert len(ts) == 1 and {e.ts for e in rows.exposure} == ts
    exp = {(e.account, e.scope): e for e in rows.exposure}
    for account, r in by_account.items():
        e = exp[(account, "PORTFOLIO")]
        assert (e.delta, e.gamma, e.vega, e.theta) == (r.delta, r.gamma, r.vega, r.theta)
        assert e.legs_excluded == 0 and e.legs == e.legs_fresh + e.legs_carried
        assert e.market_data == "LIVE"  # field 6509 as delivered
    assert snap.market_data == ("LIVE",)
    # P&L: each account's own book's, the ALL row their sum; realized unknown, never 0
    assert snap.pnl == {A: book_pnl(first), B: book_pnl(second)}
    assert snap.pnl[A] != snap.pnl[B]
    for account in (A, B):
        e = exp[(account, "PORTFOLIO")]
        assert (e.daily_pnl, e.unrealized_pnl) == (
            snap.pnl[account].daily,
            snap.pnl[account].unrealized,
        )
    total = exp[(ALL_ACCOUNTS, "PORTFOLIO")]
    assert total.daily_pnl == pytest.approx(snap.pnl[A].daily + snap.pnl[B].daily)  # type: ignore[operator]
    assert total.unrealized_pnl == pytest.approx(
        snap.pnl[A].unrealized + snap.pnl[B].unrealized  # type: ignore[operator]
    )
    assert total.realized_pnl is None
    assert float(status["pnl_unrealized"]) == pytest.approx(total.unrealized_pnl)
    assert status["pnl_realized"] == ""
    # each account's positions, summary and one P&L call for both
    counts = sim.stats.as_dict()["counts"]
    assert counts["/portfolio/{acct}/positions"] >= 4  # pages 0 and 1 of each account
    assert counts["/portfolio/{acct}/summary"] >= 2


async def test_a_list_of_accounts_in_its_order() -> None:
    first, second = books()
    async with reading(f"{B},{A}", first, second) as (_, t):
        snap, _ = await first_complete(t, Books(t.settings, "PORTAL"), {A, B, ALL_ACCOUNTS})
    assert (snap.account, snap.accounts) == (f"{B},{A}", (B, A))
    assert snap.pnl == {A: book_pnl(first), B: book_pnl(second)}


async def test_one_account_of_several_reads_only_that_one_without_an_all_row() -> None:
    first, second = books()
    async with reading(A, first, second) as (sim, t):
        snap, rows = await first_complete(t, Books(t.settings, "PORTAL"), {A})
        status = t.status()
        streams = set(sim.session.streams.open)
    assert (snap.account, snap.accounts) == (A, (A,))
    assert {p.account for p in snap.positions} == {A}
    only_b = {p.con_id for p in second.positions if p.is_option} - {
        p.con_id for p in first.positions
    }
    assert only_b and streams.isdisjoint(only_b)  # B's own options are not priced
    [r] = [r for r in rows.greeks if r.contract == "PORTFOLIO"]
    assert (r.delta, r.gamma, r.vega, r.theta) == pytest.approx(net(first), rel=1e-9, abs=1e-9)
    assert snap.pnl == {A: book_pnl(first)}
    [e] = [e for e in rows.exposure if e.scope == "PORTFOLIO"]
    assert (e.daily_pnl, e.unrealized_pnl, e.realized_pnl) == (
        book_pnl(first).daily, book_pnl(first).unrealized, None,
    )  # fmt: skip
    assert status["pnl_unrealized"] == repr(book_pnl(first).unrealized)


async def test_a_single_account_login_has_its_pnl() -> None:
    only = generate_book(12, 3, seed=5, account=A, step_s=0)
    async with reading("", only) as (_, t):
        snap, rows = await first_complete(t, Books(t.settings, "PORTAL"), {A})
    assert (snap.account, snap.accounts, snap.pnl) == (A, (A,), {A: book_pnl(only)})
    assert {r.account for r in rows.greeks} == {A}


async def test_pnl_refused_is_unknown_not_the_last_value() -> None:
    async with reading("ALL") as (sim, t):
        b = Books(t.settings, "PORTAL")
        await first_complete(t, b, {A, B, ALL_ACCOUNTS})
        sim.switches.update({"missing_endpoints": [PNL_PATH]})
        t._pnl_at = None  # due now
        for _ in range(40):
            now = utcnow()
            snap = await t.snapshot(now)
            if snap.pnl == {A: Pnl(), B: Pnl()}:
                break
            await asyncio.sleep(0.25)
        rows = b.evaluate(snap, now)
        assert snap.pnl == {A: Pnl(), B: Pnl()}
        assert t.status()["pnl_unrealized"] == ""
    assert {r.account for r in rows.greeks} == {A, B, ALL_ACCOUNTS}  # the Greeks go on
    for e in rows.exposure:
        assert (e.daily_pnl, e.unrealized_pnl, e.realized_pnl) == (None, None, None)


async def test_pnl_call_kept_within_its_pacing() -> None:
    """Due at every tick (one a second) with the positions of both accounts read again each
    time, the P&L call still goes at most once per 5 s (IBKR's limit, which the simulator
    enforces with a 429), and it goes."""
    async with reading("ALL", enforce_pacing=True, penalty_s=2.0) as (sim, t):
        for _ in range(30):
            t._pnl_at = None  # due now: the pacer holds it back
            t._positions_at = None
            await t.snapshot(utcnow())
            if sim.stats.counts.get(PNL_PATH, 0) >= 2:
                break
            await asyncio.sleep(1.0)
        stats = sim.stats.as_dict()
    assert stats["counts"][PNL_PATH] >= 2
    assert stats["rate_limited"] == 0
    assert stats["min_gap_s"][PNL_PATH] >= 5.0


async def test_an_account_the_login_does_not_have_is_refused_by_name() -> None:
    first, second = books()
    async with PortalSimulator(first, more=[second]) as sim:
        t = PortalTransport(settings(sim, f"{A},DU9999999"))
        try:
            with pytest.raises(
                AccountChoiceError,
                match=rf"IB_ACCOUNT=DU9999999 is not an account of this login \({A}, {B}\)",
            ):
                await t.connect()
        finally:
            await t.disconnect()

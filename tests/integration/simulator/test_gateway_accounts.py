"""One login, two accounts: the IB Gateway simulator against the real ib_async client.

The second account's book is linked to the first (`linked_book`): other positions, the same
market, and contracts held by both (one instrument, one price, two positions)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable

import pytest
from ib_async import IB, Contract

from simulator.book import linked_book
from simulator.gateway import GatewaySimulator, send_command
from simulator.gateway.control import ControlServer
from simulator.portfolio import SimPortfolio, default_portfolio
from tests.fixtures import ACCOUNT, StartGateway
from tests.integration.simulator.conftest import wait_until

OTHER = "DU7654321"
MakeIB = Callable[[], IB]


@pytest.fixture
async def sim() -> AsyncIterator[GatewaySimulator]:
    first = default_portfolio(ACCOUNT, step_s=0.2)
    second = linked_book(first, 5, 2, 3, account=OTHER)
    gateway = GatewaySimulator(first, more=[second], push_interval_s=0.1)
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.stop()


async def connect_as(ib: IB, port: int, account: str = ACCOUNT, client_id: int = 7) -> IB:
    await ib.connectAsync("127.0.0.1", port, client_id, timeout=3, readonly=True, account=account)
    return ib


def holdings(book: SimPortfolio) -> dict[int, float]:
    return {p.con_id: p.quantity for p in book.positions}


def shared_con_ids(sim: GatewaySimulator) -> set[int]:
    first, second = sim.portfolios
    return set(holdings(first)) & set(holdings(second))


def unrealized_by_hand(book: SimPortfolio, t: float) -> float:
    """Market value less cost, position by position, from the book's own model."""
    total = 0.0
    for pos in book.positions:
        if pos.is_option:
            value = pos.quantity * book.quote(pos, t).price * pos.multiplier
        else:
            value = pos.quantity * book.price(pos.symbol, t)
        total += value - pos.quantity * pos.avg_cost
    return total


def errors_of(ib: IB) -> list[tuple[int, int]]:
    seen: list[tuple[int, int]] = []
    ib.errorEvent += lambda req_id, code, _text, _contract: seen.append((req_id, code))
    return seen


def test_the_two_books_differ_and_share_a_contract(sim: GatewaySimulator) -> None:
    first, second = sim.portfolios
    assert sim.accounts == [ACCOUNT, OTHER]
    assert shared_con_ids(sim)
    assert any(holdings(first)[c] != holdings(second)[c] for c in shared_con_ids(sim))
    assert set(holdings(second)) - set(holdings(first))  # contracts of its own too


async def test_managed_accounts_and_each_accounts_positions(
    sim: GatewaySimulator, make_ib: MakeIB
) -> None:
    ib = await connect_as(make_ib(), sim.port)
    assert ib.managedAccounts() == [ACCOUNT, OTHER]
    for book in sim.portfolios:
        got = ib.positions(book.account)
        assert {p.contract.conId: p.position for p in got} == holdings(book)
        assert {p.account for p in got} == {book.account}
    assert len(ib.positions()) == sum(len(b.positions) for b in sim.portfolios)
    assert sim.status()["accounts"] == [
        {"account": b.account, "positions": len(b.positions)} for b in sim.portfolios
    ]


async def test_pnl_is_each_accounts_own(sim: GatewaySimulator, make_ib: MakeIB) -> None:
    t = sim.freeze(True)
    ib = await connect_as(make_ib(), sim.port)
    errors = errors_of(ib)
    pnls = {acct: ib.reqPnL(acct) for acct in sim.accounts}
    assert await wait_until(lambda: not any(math.isnan(p.unrealizedPnL) for p in pnls.values()))
    for book in sim.portfolios:
        pnl, unreal = pnls[book.account], unrealized_by_hand(book, t)
        assert pnl.unrealizedPnL == pytest.approx(unreal, abs=0.006)  # sent in cents
        assert pnl.dailyPnL == pytest.approx(0.1 * unreal, abs=0.006)
        assert (pnl.dailyPnL, pnl.unrealizedPnL, pnl.realizedPnL) == sim.catalog.pnl(
            t, book.account
        )
    assert abs(pnls[ACCOUNT].unrealizedPnL - pnls[OTHER].unrealizedPnL) > 1.0
    stranger = ib.reqPnL("U999")
    assert await wait_until(lambda: any(code == 321 for _, code in errors))
    assert math.isnan(stranger.unrealizedPnL)
    assert sim.status()["clients"][0]["pnl"] == 2


async def test_pnl_single_of_a_shared_contract_per_account(
    sim: GatewaySimulator, make_ib: MakeIB
) -> None:
    t = sim.freeze(True)
    ib = await connect_as(make_ib(), sim.port)
    con_id = min(shared_con_ids(sim))
    singles = {acct: ib.reqPnLSingle(acct, "", con_id) for acct in sim.accounts}
    assert await wait_until(lambda: not any(math.isnan(s.value) for s in singles.values()))
    for book in sim.portfolios:
        pos = book.by_con_id()[con_id]
        single = singles[book.account]
        assert single.position == pos.quantity
        assert single.unrealizedPnL == pytest.approx(sim.catalog.unrealized(pos, t), abs=0.006)
        mark = book.quote(pos, t).price if pos.is_option else book.price(pos.symbol, t)
        assert single.value == pytest.approx(pos.quantity * mark * pos.multiplier, abs=0.006)
    assert singles[ACCOUNT].position != singles[OTHER].position


async def test_account_updates_serve_the_account_asked(
    sim: GatewaySimulator, make_ib: MakeIB
) -> None:
    t = sim.freeze(True)
    first, second = sim.portfolios
    ib = await connect_as(make_ib(), sim.port, account=OTHER)
    assert {i.contract.conId: i.position for i in ib.portfolio(OTHER)} == holdings(second)
    assert ib.portfolio(ACCOUNT) == []
    assert {i.account for i in ib.portfolio()} == {OTHER}
    assert sim.status()["clients"][0]["account_updates_account"] == OTHER
    net_liq = {
        v.account: float(v.value)
        for v in ib.accountValues()
        if v.tag == "NetLiquidation" and not v.modelCode
    }
    assert net_liq == {a: sim.catalog.net_liquidation(t, a) for a in sim.accounts}
    assert net_liq[ACCOUNT] != net_liq[OTHER]
    await ib.reqAccountUpdatesAsync(ACCOUNT)  # replaces the subscription, as IB does
    assert {i.contract.conId: i.position for i in ib.portfolio(ACCOUNT)} == holdings(first)
    assert sim.status()["clients"][0]["account_updates_account"] == ACCOUNT


async def test_account_summary_answers_every_account(
    sim: GatewaySimulator, make_ib: MakeIB
) -> None:
    t = sim.freeze(True)
    ib = await connect_as(make_ib(), sim.port)
    summary = await ib.accountSummaryAsync()
    net_liq = {v.account: float(v.value) for v in summary if v.tag == "NetLiquidation"}
    assert net_liq == {a: sim.catalog.net_liquidation(t, a) for a in sim.accounts}
    assert {v.tag for v in await ib.accountSummaryAsync(OTHER)} >= {"NetLiquidation"}


async def test_one_market_data_line_per_contract_and_one_set_of_greeks(
    sim: GatewaySimulator, make_ib: MakeIB
) -> None:
    t = sim.freeze(True)
    ib = await connect_as(make_ib(), sim.port)
    con_ids = {p.contract.conId for p in ib.positions()}
    assert len(con_ids) < len(ib.positions())  # the shared contracts are listed twice
    tickers = {c: ib.reqMktData(Contract(conId=c, exchange="SMART")) for c in con_ids}
    options = {p.con_id for b in sim.portfolios for p in b.positions if p.is_option}
    assert await wait_until(lambda: all(tickers[c].modelGreeks for c in options))
    assert sim.status()["lines"]["open"] == len(con_ids)
    for book in sim.portfolios:
        for pos in book.positions:
            if pos.is_option:
                assert tickers[pos.con_id].modelGreeks.delta == pytest.approx(
                    book.quote(pos, t).delta, rel=1e-12
                )


async def test_a_position_change_carries_its_account(
    sim: GatewaySimulator, make_ib: MakeIB
) -> None:
    ib = await connect_as(make_ib(), sim.port)
    con_id = min(shared_con_ids(sim))
    mine = holdings(sim.portfolios[0])[con_id]
    async with ControlServer(sim) as control:
        reply = await send_command(control.port, f"position {con_id} 9 {OTHER}")
        assert reply["ok"], reply
        assert await wait_until(
            lambda: {p.contract.conId: p.position for p in ib.positions(OTHER)}.get(con_id) == 9
        )
        assert {p.contract.conId: p.position for p in ib.positions(ACCOUNT)}[con_id] == mine
        assert sim.portfolio_of(OTHER).by_con_id()[con_id].quantity == 9
        bad = await send_command(control.port, f"position {con_id} 9 U999")
        assert not bad["ok"] and "U999" in bad["error"]


def test_accounts_must_differ_and_share_one_market() -> None:
    first = default_portfolio(ACCOUNT)
    with pytest.raises(ValueError, match="twice"):
        GatewaySimulator(first, more=[default_portfolio(ACCOUNT)])
    other = default_portfolio(OTHER, step_s=0.5)
    with pytest.raises(ValueError, match="step"):
        GatewaySimulator(first, more=[other])


async def test_the_program_serves_a_second_account(
    make_ib: MakeIB, start_gateway: StartGateway
) -> None:
    gateway = await start_gateway(extra=["--account2", OTHER, "--book2", "5:2:4"])
    ib = await connect_as(make_ib(), gateway.port)
    assert ib.managedAccounts() == [ACCOUNT, OTHER]
    first = default_portfolio(ACCOUNT, step_s=0.0)
    second = linked_book(first, 5, 2, 4, account=OTHER)
    assert {p.contract.conId: p.position for p in ib.positions(OTHER)} == holdings(second)
    assert {p.contract.conId: p.position for p in ib.positions(ACCOUNT)} == holdings(first)
    status = await asyncio.wait_for(gateway.cmd("status"), 5)
    assert status["accounts"] == [
        {"account": ACCOUNT, "positions": len(first.positions)},
        {"account": OTHER, "positions": len(second.positions)},
    ]

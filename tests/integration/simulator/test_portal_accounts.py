"""Several accounts under one login in the Client Portal simulator (real HTTPS): both listed by
/portfolio/accounts and /iserver/accounts, each account's own positions and summary, each
account's P&L from /iserver/account/pnl/partitioned, and a contract both accounts hold priced
once, by one stream."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import aiohttp
import pytest

from simulator.book import linked_book
from simulator.portal.server import PortalSimulator
from simulator.portfolio import SimPortfolio, default_portfolio
from tests.integration.simulator.test_portal_simulator import call

API = "/v1/api"
A, B = "DU1234567", "DU7654321"
PNL = API + "/iserver/account/pnl/partitioned"


def books() -> tuple[SimPortfolio, SimPortfolio]:
    first = default_portfolio(A, step_s=0)
    return first, linked_book(first, 6, 3, seed=1, account=B)


@pytest.fixture
async def sim() -> AsyncIterator[PortalSimulator]:
    first, second = books()
    async with PortalSimulator(first, more=[second]) as server:
        yield server


@pytest.fixture
async def http(sim: PortalSimulator) -> AsyncIterator[aiohttp.ClientSession]:
    context = ssl.create_default_context(cafile=str(sim.ca_file))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        yield session


def unrealized(book: SimPortfolio) -> float:
    total = 0.0
    for pos in book.positions:
        price = (
            book.quote_at_step(pos, 0).price if pos.is_option else book.price_at_step(pos.symbol, 0)
        )
        total += pos.quantity * (price * pos.multiplier - pos.avg_cost)
    return total


async def test_accounts_positions_and_summaries(
    sim: PortalSimulator, http: aiohttp.ClientSession
) -> None:
    assert sim.accounts == [A, B]
    status, body = await call(http, sim, "GET", API + "/portfolio/accounts")
    assert status == 200 and [a["accountId"] for a in body] == [A, B]
    status, body = await call(http, sim, "GET", API + "/iserver/accounts")
    assert status == 200 and body["accounts"] == [A, B] and body["selectedAccount"] == A
    assert set(body["acctProps"]) == {A, B}
    for account in (A, B):
        book = sim.books[account]
        status, rows = await call(http, sim, "GET", API + f"/portfolio/{account}/positions/0")
        assert status == 200 and {r["acctId"] for r in rows} == {account}
        assert {(r["conid"], r["position"]) for r in rows} == {
            (p.con_id, float(p.quantity)) for p in book.positions
        }
        status, body = await call(http, sim, "GET", API + f"/portfolio/{account}/summary")
        assert status == 200 and body["accountcode"]["value"] == account
    status, body = await call(http, sim, "GET", API + "/portfolio/U0000000/positions/0")
    assert status == 400 and body["error"] == "account U0000000 not found"


async def test_pnl_partitioned_gives_each_account_its_own(
    sim: PortalSimulator, http: aiohttp.ClientSession
) -> None:
    status, body = await call(http, sim, "GET", PNL)
    assert status == 400 and "/accounts first" in body["error"]
    await call(http, sim, "GET", API + "/iserver/accounts")
    status, body = await call(http, sim, "GET", PNL)
    assert status == 200 and set(body["upnl"]) == {f"{A}.Core", f"{B}.Core"}
    for account in (A, B):
        entry = body["upnl"][f"{account}.Core"]
        upl = unrealized(sim.books[account])
        assert entry["upl"] == pytest.approx(upl, abs=0.01)
        assert entry["dpl"] == pytest.approx(0.1 * upl, abs=0.01)
        assert entry["rowType"] == 1 and entry["nl"] > 0 and "rpl" not in entry
    assert body["upnl"][f"{A}.Core"]["upl"] != body["upnl"][f"{B}.Core"]["upl"]


async def test_a_contract_both_accounts_hold_is_one_stream(
    sim: PortalSimulator, http: aiohttp.ClientSession
) -> None:
    first, second = sim.books[A], sim.books[B]
    shared = sorted(
        p.con_id for p in second.positions if p.is_option and first.by_con_id().get(p.con_id)
    )
    own = sorted({p.con_id for p in second.positions if p.is_option} - set(first.by_con_id()))
    assert shared and own
    await call(http, sim, "GET", API + "/iserver/accounts")
    conids = [shared[0], own[0]]
    params = {"conids": ",".join(map(str, conids))}
    snapshot = API + "/iserver/marketdata/snapshot"
    await call(http, sim, "GET", snapshot, params=params)  # the pre-flight
    status, rows = await call(http, sim, "GET", snapshot, params=params)
    assert status == 200 and len(sim.session.streams.open) == 2
    for row, con_id in zip(rows, conids, strict=True):
        pos = second.by_con_id()[con_id]
        assert float(row["7308"]) == pytest.approx(second.quote_at_step(pos, 0).delta, abs=1e-12)


def test_accounts_must_differ_and_share_one_market() -> None:
    first, second = books()
    with pytest.raises(ValueError, match="given twice"):
        PortalSimulator(first, more=[first])
    other = default_portfolio(B, step_s=1.0)  # another step: not the same market
    with pytest.raises(ValueError, match="step"):
        PortalSimulator(first, more=[other])
    assert second.account == B

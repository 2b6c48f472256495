"""The Client Portal simulator's API answers a client relies on: the session endpoints while
logged out, bad accounts, pages and conids, /portfolio2, and the gateway's number quirks."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from simulator.portal.server import PortalSimulator
from simulator.portfolio import SimPortfolio, SimPosition, Underlying, default_portfolio
from tests.integration.simulator.test_portal_simulator import call

API = "/v1/api"


@pytest.fixture
async def sim() -> AsyncIterator[PortalSimulator]:
    async with PortalSimulator(default_portfolio()) as server:
        yield server


@pytest.fixture
async def http(sim: PortalSimulator) -> AsyncIterator[aiohttp.ClientSession]:
    context = ssl.create_default_context(cafile=str(sim.ca_file))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        yield session


async def switches(http: aiohttp.ClientSession, sim: PortalSimulator, **values: Any) -> None:
    status, body = await call(http, sim, "POST", "/sim/switches", json=values)
    assert status == 200, body


async def test_session_endpoints_logged_in_then_out(
    sim: PortalSimulator, http: aiohttp.ClientSession
) -> None:
    status, body = await call(http, sim, "POST", API + "/tickle")
    assert status == 200 and body["session"].startswith("sim")
    assert body["iserver"]["authStatus"]["authenticated"] is True
    status, body = await call(http, sim, "POST", API + "/iserver/reauthenticate")
    assert (status, body) == (200, {"message": "triggered"})
    status, body = await call(http, sim, "GET", "/sso/Login")
    assert status == 200 and "login" in body.lower()

    # a competing session is taken over by ssodh/init
    await switches(http, sim, competing=True)
    status, body = await call(http, sim, "GET", API + "/iserver/accounts")
    assert (status, body) == (200, {})
    status, body = await call(http, sim, "POST", API + "/iserver/auth/ssodh/init")
    assert status == 200 and body["competing"] is False and sim.switches.competing is False

    # /logout ends the session: the auth endpoints say so, by the configured style
    status, body = await call(http, sim, "POST", API + "/logout")
    assert (status, body) == (200, {"status": True})
    assert sim.switches.logged_out is True
    status, body = await call(http, sim, "POST", API + "/tickle")
    assert status == 401 and body["error"] == "not authenticated"
    status, body = await call(http, sim, "POST", API + "/iserver/auth/ssodh/init")
    assert status == 401
    status, body = await call(http, sim, "GET", API + "/iserver/auth/status")
    assert status == 200 and body["authenticated"] is False

    await switches(http, sim, logout_style="no_bridge")
    status, body = await call(http, sim, "POST", API + "/tickle")
    assert (status, body) == (200, {"error": "no session"})


async def test_portfolio_bad_account_page_and_prerequisites(
    sim: PortalSimulator, http: aiohttp.ClientSession
) -> None:
    acct = sim.portfolio.account
    for path in (
        f"/portfolio/{acct}/summary",
        f"/portfolio2/{acct}/positions",
    ):
        status, body = await call(http, sim, "GET", API + path)
        assert status == 400 and "/portfolio/accounts first" in body["error"], path
    status, body = await call(http, sim, "POST", API + f"/portfolio/{acct}/positions/invalidate")
    assert status == 400

    await call(http, sim, "GET", API + "/portfolio/accounts")
    for method, path in (
        ("GET", "/portfolio/U0000000/positions/0"),
        ("GET", "/portfolio/U0000000/summary"),
        ("GET", "/portfolio2/U0000000/positions"),
        ("POST", "/portfolio/U0000000/positions/invalidate"),
    ):
        status, body = await call(http, sim, method, API + path)
        assert status == 400 and body["error"] == "account U0000000 not found", path

    status, body = await call(http, sim, "GET", API + f"/portfolio/{acct}/positions/first")
    assert status == 400 and "integer" in body["error"]
    status, body = await call(http, sim, "GET", API + f"/portfolio/{acct}/positions/-1")
    assert (status, body) == (200, [])
    status, body = await call(http, sim, "POST", API + f"/portfolio/{acct}/positions/invalidate")
    assert (status, body) == (200, {"message": "success"})
    status, body = await call(http, sim, "GET", API + f"/portfolio/{acct}/summary")
    assert status == 200 and body["accountcode"]["value"] == acct


async def test_portfolio2_lists_every_position_at_once(
    sim: PortalSimulator, http: aiohttp.ClientSession
) -> None:
    acct = sim.portfolio.account
    await call(http, sim, "GET", API + "/portfolio/accounts")
    status, rows = await call(http, sim, "GET", API + f"/portfolio2/{acct}/positions")
    assert status == 200
    assert {int(r["conid"]) for r in rows} == set(sim.portfolio.by_con_id())
    stock = next(r for r in rows if r["conid"] == "756733")
    assert stock["secType"] == "STK" and stock["position"] == 100.0
    assert stock["marketValue"] == pytest.approx(100 * stock["marketPrice"])
    option = next(r for r in rows if r["conid"] == "600000001")
    assert option["secType"] == "OPT" and option["position"] == -2.0
    assert option["marketValue"] == pytest.approx(-2 * 100 * option["marketPrice"])


async def test_snapshot_bad_and_unknown_conids(
    sim: PortalSimulator, http: aiohttp.ClientSession
) -> None:
    snapshot = API + "/iserver/marketdata/snapshot"
    status, body = await call(http, sim, "GET", snapshot, params={"conids": "600000001"})
    assert status == 400 and "/accounts first" in body["error"]
    await call(http, sim, "GET", API + "/iserver/accounts")
    status, body = await call(http, sim, "GET", snapshot, params={"conids": "SPY"})
    assert status == 400 and body["error"] == "conids must be integers"
    status, body = await call(http, sim, "GET", snapshot, params={"conids": " , "})
    assert status == 400 and body["error"] == "conids required"
    status, body = await call(http, sim, "GET", snapshot)
    assert status == 400

    params = {"conids": "999,756733"}
    await call(http, sim, "GET", snapshot, params=params)  # the preflight
    status, rows = await call(http, sim, "GET", snapshot, params=params)
    assert status == 200
    unknown, stock = rows
    assert unknown == {"conid": 999, "conidEx": "999"}  # no fields for an unknown conid
    assert float(stock["31"]) > 0 and "7308" not in stock


async def test_snapshot_quirks_write_large_numbers_with_commas() -> None:
    """With `quirks`, prices of 1000 and more come as the gateway sometimes writes them."""
    und = {"BIG": Underlying(1001, "BIG", 4200.0, 0.2, "ARCA")}
    positions = [
        SimPosition(1001, "BIG", "STK", 1, 1001, avg_cost=4000.0),
        SimPosition(1002, "BIG", "OPT", 1, 1001, "20271217", 3000.0, "C", 100, 120000.0),
    ]
    portfolio = SimPortfolio(account="DU7654321", underlyings=und, positions=positions)
    async with PortalSimulator(portfolio) as sim:
        context = ssl.create_default_context(cafile=str(sim.ca_file))
        connector = aiohttp.TCPConnector(ssl=context)
        async with aiohttp.ClientSession(connector=connector) as http:
            await switches(http, sim, quirks=True, preflight=False)
            await call(http, sim, "GET", API + "/iserver/accounts")
            params = {"conids": "1001,1002"}
            snapshot = API + "/iserver/marketdata/snapshot"
            status, rows = await call(http, sim, "GET", snapshot, params=params)
    assert status == 200
    stock, option = rows
    assert "," in stock["31"] and float(stock["31"].replace(",", "")) >= 1000
    assert option["31"].startswith("C") and "," in option["31"]
    assert float(option["7308"]) > 0  # the Greeks themselves stay plain numbers

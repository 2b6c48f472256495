"""The Client Portal simulator's market-data streams over HTTP: the line limit, unsubscribe and
unsubscribeall, field 6509, expired contracts, a stall, and the counters tests read."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from simulator.portal.market import EXPIRED_ERROR, LINE_LIMIT_ERROR
from simulator.portal.server import PortalSimulator
from simulator.portfolio import default_portfolio
from tests.integration.simulator.test_portal_simulator import call

API = "/v1/api"
SNAPSHOT = API + "/iserver/marketdata/snapshot"
OPTIONS = (600000001, 600000002, 600000011, 600000012)


@pytest.fixture
async def sim() -> AsyncIterator[PortalSimulator]:
    async with PortalSimulator(default_portfolio()) as server:
        yield server


@pytest.fixture
async def http(sim: PortalSimulator) -> AsyncIterator[aiohttp.ClientSession]:
    context = ssl.create_default_context(cafile=str(sim.ca_file))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        await call(session, sim, "GET", API + "/iserver/accounts")
        yield session


async def snapshot(http: aiohttp.ClientSession, sim: PortalSimulator, *conids: int) -> Any:
    status, rows = await call(
        http, sim, "GET", SNAPSHOT, params={"conids": ",".join(map(str, conids))}
    )
    assert status == 200, rows
    return {row["conid"]: row for row in rows}


async def test_line_limit_refuses_beyond_it_until_a_line_is_released(
    sim: PortalSimulator, http: aiohttp.ClientSession
) -> None:
    await call(http, sim, "POST", "/sim/switches", json={"line_limit": 2})
    rows = await snapshot(http, sim, *OPTIONS[:3])
    assert rows[OPTIONS[0]] == {"conid": OPTIONS[0], "conidEx": str(OPTIONS[0])}  # pre-flight
    assert rows[OPTIONS[2]]["error"] == LINE_LIMIT_ERROR
    status, body = await call(
        http, sim, "POST", API + "/iserver/marketdata/unsubscribe", json={"conid": OPTIONS[0]}
    )
    assert (status, body) == (200, {"success": True})
    status, body = await call(
        http, sim, "POST", API + "/iserver/marketdata/unsubscribe", json={"conid": OPTIONS[0]}
    )
    assert status == 404  # no stream of it any more
    status, _ = await call(http, sim, "POST", API + "/iserver/marketdata/unsubscribe", json={})
    assert status == 400
    rows = await snapshot(http, sim, OPTIONS[1], OPTIONS[2])
    assert "7308" in rows[OPTIONS[1]] and rows[OPTIONS[1]]["6509"] == "RpB"
    assert set(rows[OPTIONS[2]]) == {"conid", "conidEx"}  # its line now: a pre-flight
    status, body = await call(http, sim, "GET", API + "/iserver/marketdata/unsubscribeall")
    assert (status, body) == (200, {"unsubscribed": True})
    _, stats = await call(http, sim, "GET", "/sim/stats")
    assert stats["max_streams"] == 2 and stats["line_refusals"] == 1
    assert stats["unsubscribed"] == 3 and stats["streams"] == 0
    assert stats["conid_requests"][str(OPTIONS[2])] == 2


async def test_availability_expired_and_a_stall(
    sim: PortalSimulator, http: aiohttp.ClientSession
) -> None:
    switches = {
        "availability": {str(OPTIONS[0]): "n", "756733": "Z"},
        "expired_conids": [OPTIONS[1]],
    }
    status, body = await call(http, sim, "POST", "/sim/switches", json=switches)
    assert status == 200 and body["availability"] == {str(OPTIONS[0]): "N", "756733": "Z"}
    status, body = await call(http, sim, "POST", "/sim/switches", json={"availability": ["N"]})
    assert status == 400 and "availability" in body["error"]
    conids = (OPTIONS[0], OPTIONS[1], OPTIONS[2], 756733)
    await snapshot(http, sim, *conids)
    rows = await snapshot(http, sim, *conids)
    assert rows[OPTIONS[0]]["6509"] == "N" and "7308" not in rows[OPTIONS[0]]
    assert rows[OPTIONS[1]] == {
        "conid": OPTIONS[1],
        "conidEx": str(OPTIONS[1]),
        "error": EXPIRED_ERROR,
    }
    assert rows[756733]["6509"] == "ZpB" and float(rows[756733]["31"]) > 0
    assert OPTIONS[1] not in sim.session.streams.open
    # a stall: the open streams repeat their last row, `_updated` included
    before = rows[OPTIONS[2]]
    await call(http, sim, "POST", "/sim/switches", json={"stall_at": True})
    await asyncio.sleep(0.01)
    assert (await snapshot(http, sim, OPTIONS[2]))[OPTIONS[2]] == before
    await call(
        http, sim, "POST", API + "/iserver/marketdata/unsubscribe", json={"conid": OPTIONS[2]}
    )
    await asyncio.sleep(0.01)
    await snapshot(http, sim, OPTIONS[2])  # a new pre-flight: a new, live stream
    again = (await snapshot(http, sim, OPTIONS[2]))[OPTIONS[2]]
    assert again["_updated"] > before["_updated"]
    _, body = await call(http, sim, "POST", "/sim/switches", json={"stall_at": False})
    assert body["stall_at"] is None

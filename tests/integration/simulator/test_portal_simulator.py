"""The Client Portal simulator itself: shapes, paging, pre-flight, switches over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from simulator.portal.server import PortalSimulator
from simulator.portfolio import default_portfolio


@pytest.fixture
async def sim() -> AsyncIterator[PortalSimulator]:
    async with PortalSimulator(default_portfolio(extra_options=120)) as server:
        yield server


@pytest.fixture
async def http(sim: PortalSimulator) -> AsyncIterator[aiohttp.ClientSession]:
    context = ssl.create_default_context(cafile=str(sim.ca_file))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        yield session


async def call(
    http: aiohttp.ClientSession, sim: PortalSimulator, method: str, path: str, **kw: Any
) -> tuple[int, Any]:
    if method == "POST":
        kw.setdefault("json", {})
    async with http.request(method, sim.url + path, allow_redirects=False, **kw) as resp:
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text


async def test_paging_preflight_and_shapes(
    sim: PortalSimulator, http: aiohttp.ClientSession
) -> None:
    acct = sim.portfolio.account
    status, body = await call(http, sim, "GET", f"/v1/api/portfolio/{acct}/positions/0")
    assert status == 400  # /portfolio/accounts first
    status, body = await call(http, sim, "GET", "/v1/api/portfolio/accounts")
    assert status == 200 and body[0]["accountId"] == acct
    pages = []
    for page in range(5):
        _, rows = await call(http, sim, "GET", f"/v1/api/portfolio/{acct}/positions/{page}")
        pages.append(rows)
        if not rows:
            break
    assert [len(p) for p in pages] == [100, 28, 0]
    option = next(r for r in pages[0] if r["assetClass"] == "OPT")
    assert isinstance(option["strike"], str) and option["multiplier"] == 100.0
    assert option["undConid"] and option["pageSize"] == 100
    status, _ = await call(
        http,
        sim,
        "GET",
        "/v1/api/iserver/marketdata/snapshot",
        params={"conids": "600000001", "fields": "31,7308"},
    )
    assert status == 400  # /iserver/accounts first
    await call(http, sim, "GET", "/v1/api/iserver/accounts")
    _, first = await call(
        http,
        sim,
        "GET",
        "/v1/api/iserver/marketdata/snapshot",
        params={"conids": "600000001,756733", "fields": "31,7308"},
    )
    assert first == [
        {"conid": 600000001, "conidEx": "600000001"},
        {"conid": 756733, "conidEx": "756733"},
    ]
    _, second = await call(
        http,
        sim,
        "GET",
        "/v1/api/iserver/marketdata/snapshot",
        params={"conids": "600000001,756733"},
    )
    assert isinstance(second[0]["7308"], str) and "7308" not in second[1]
    assert float(second[1]["31"]) > 0


async def test_switches_from_another_process_over_http(
    sim: PortalSimulator, http: aiohttp.ClientSession
) -> None:
    status, body = await call(
        http, sim, "POST", "/sim/switches", json={"logged_out": True, "logout_style": "302"}
    )
    assert status == 200 and body["logged_out"] is True
    status, _ = await call(http, sim, "POST", "/v1/api/iserver/auth/status")
    assert status == 302
    status, body = await call(http, sim, "POST", "/sim/switches", json={"nope": 1})
    assert status == 400 and "nope" in body["error"]
    await call(http, sim, "POST", "/sim/login")
    status, body = await call(http, sim, "POST", "/v1/api/iserver/auth/status")
    assert status == 200 and body["authenticated"] is True
    _, stats = await call(http, sim, "GET", "/sim/stats")
    assert stats["session"] == 2  # a new login is a new session


async def test_pacing_enforced_with_429(sim: PortalSimulator, http: aiohttp.ClientSession) -> None:
    sim.switches.update({"enforce_pacing": True})
    statuses = [(await call(http, sim, "GET", "/v1/api/portfolio/accounts"))[0] for _ in range(3)]
    assert statuses == [200, 429, 429]  # 1 per 5 s
    assert sim.stats.rate_limited == 2


async def test_missing_greeks_outage_and_post_without_body(
    sim: PortalSimulator, http: aiohttp.ClientSession
) -> None:
    sim.switches.update({"greeks_missing_calls": 1, "iserver_outage": False})
    await call(http, sim, "GET", "/v1/api/iserver/accounts")
    params = {"conids": "600000001"}
    await call(http, sim, "GET", "/v1/api/iserver/marketdata/snapshot", params=params)
    _, late = await call(http, sim, "GET", "/v1/api/iserver/marketdata/snapshot", params=params)
    assert "7308" not in late[0] and "31" in late[0]
    _, ok = await call(http, sim, "GET", "/v1/api/iserver/marketdata/snapshot", params=params)
    assert "7308" in ok[0]
    sim.switches.update({"iserver_outage": True})
    status, _ = await call(http, sim, "GET", "/v1/api/iserver/marketdata/snapshot", params=params)
    assert status == 503
    # a POST without a body: the gateway needs its length. aiohttp sends Content-Length: 0,
    # which it accepts; a request without any length (nor chunked) it refuses with 411
    async with http.post(sim.url + "/v1/api/tickle", data=None) as resp:
        assert resp.request_info.headers["Content-Length"] == "0"
        assert resp.status == 200 and (await resp.json())["session"]
    assert await raw_status(sim, "POST /v1/api/tickle HTTP/1.1") == 411
    assert await raw_status(sim, "POST /v1/api/tickle HTTP/1.1", "Content-Length: 0") == 200


async def raw_status(sim: PortalSimulator, request_line: str, *headers: str) -> int:
    """The status of a request written by hand (no header added by a client library)."""
    host = f"127.0.0.1:{sim.port}"
    context = ssl.create_default_context(cafile=str(sim.ca_file))
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port, ssl=context)
    try:
        head = [request_line, f"Host: {host}", "Connection: close", *headers]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 5)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    return int(status_line.split()[1])


def test_nightly_outage_window() -> None:
    from datetime import UTC, datetime

    from simulator.portal.state import Switches

    sw = Switches(nightly_outage_et="01:00-01:05")
    assert sw.iserver_down(datetime(2026, 11, 25, 6, 2, tzinfo=UTC))  # 01:02 EST
    assert not sw.iserver_down(datetime(2026, 11, 25, 6, 6, tzinfo=UTC))
    assert Switches(nightly_outage_et="23:58-00:02").iserver_down(
        datetime(2026, 7, 1, 4, 1, tzinfo=UTC)
    )  # 00:01 EDT, across midnight
    assert not Switches(nightly_outage_et="bogus").iserver_down(datetime.now(UTC))


async def test_runs_on_its_own_as_a_process() -> None:
    import asyncio
    import subprocess
    import sys

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulator.portal",
            "--port",
            "0",
            "--extra-options",
            "5",
            "--switches",
            '{"quirks": true}',
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)).decode()
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        context = ssl.create_default_context(cafile=fields["ca_file"])
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http,
            http.get(fields["url"] + "/sim/switches") as resp,
        ):
            assert (await resp.json())["quirks"] is True
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
        if proc.stdout is not None:
            proc.stdout.close()

"""The account's market-data line limit in the gateway simulator, against the real ib_async
client: 101 past the limit (streaming and snapshot), lines shared by every session and by the
account's other sessions, cancel frees a line, the counters, the control commands, and the
program's --lines and --book."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from ib_async import IB, Contract

from simulator.book import generate_book
from simulator.gateway import ControlServer, GatewaySimulator, send_command
from simulator.portfolio import default_portfolio
from tests.fixtures import ACCOUNT
from tests.integration.simulator.conftest import connect, wait_until
from tests.integration.simulator.wire import Wire

MakeIB = Callable[[], IB]
MakeSim = Callable[..., Awaitable[GatewaySimulator]]
CONTRACTS = (600000001, 600000002, 600000011, 600000012, 600000021, 600000022, 756733)
MAX_TICKERS_TEXT = "Max number of tickers has been reached"


@pytest.fixture
async def make_sim() -> AsyncIterator[MakeSim]:
    made: list[GatewaySimulator] = []

    async def make(**kwargs: Any) -> GatewaySimulator:
        sim = GatewaySimulator(
            default_portfolio(ACCOUNT, step_s=0.2), push_interval_s=0.1, **kwargs
        )
        made.append(sim)
        await sim.start()
        return sim

    try:
        yield make
    finally:
        for sim in made:
            await sim.stop()


async def wire_to(sim: GatewaySimulator, ib: IB, client_id: int = 7) -> Wire:
    wire = Wire(ib)
    await connect(ib, sim.port, client_id)
    wire.start_clock()
    return wire


def lines(sim: GatewaySimulator) -> dict[str, Any]:
    status: dict[str, Any] = sim.status()["lines"]
    return status


async def test_requests_past_the_limit_get_101_and_no_data(
    make_sim: MakeSim, make_ib: MakeIB
) -> None:
    sim = await make_sim(lines=3)
    wire = await wire_to(sim, make_ib())
    req_ids = [wire.request(c) for c in CONTRACTS[:5]]
    served, refused = req_ids[:3], req_ids[3:]
    assert await wire.has_data(*served)
    assert await wait_until(lambda: all(wire.errors(r) == [101] for r in refused))
    assert wire.texts[(refused[0], 101)] == MAX_TICKERS_TEXT
    await wire.rounds(3)
    assert all(not wire.data(r) and not wire.types(r) for r in refused)
    assert all(wire.errors(r) == [] for r in served)
    assert lines(sim) == {
        "limit": 3, "others": 0, "open": 3, "max_open": 3,
        "refused": 2, "requests": 5, "cancels": 0,
    }  # fmt: skip
    assert sim.status()["clients"][0]["subscriptions"] == sorted(CONTRACTS[:3])


async def test_lines_are_shared_by_every_session_and_the_others(
    make_sim: MakeSim, make_ib: MakeIB
) -> None:
    sim = await make_sim(lines=4)
    sim.market_data.set_others(1)  # the trader's screen holds one
    first = await wire_to(sim, make_ib(), 7)
    second = await wire_to(sim, make_ib(), 8)
    a = [first.request(c) for c in CONTRACTS[:2]]
    assert await first.has_data(*a)
    b = [second.request(c) for c in CONTRACTS[2:4]]
    assert await second.has_error(b[1], 101)
    assert await second.has_data(b[0])
    assert first.errors(a[0]) == first.errors(a[1]) == []
    assert lines(sim)["open"] == 4 and lines(sim)["max_open"] == 4
    # the screens close: their line is free for this client
    sim.market_data.set_others(0)
    again = second.request(CONTRACTS[3])
    assert await second.has_data(again)
    assert lines(sim) | {"requests": 0} == {
        "limit": 4, "others": 0, "open": 4, "max_open": 4,
        "refused": 1, "requests": 0, "cancels": 0,
    }  # fmt: skip
    # a session that ends frees its lines
    first.ib.disconnect()
    assert await wait_until(lambda: lines(sim)["open"] == 2)


async def test_others_alone_can_fill_the_lines(make_sim: MakeSim, make_ib: MakeIB) -> None:
    sim = await make_sim(lines=3)
    sim.market_data.set_others(2)
    assert lines(sim)["max_open"] == 2  # others count in the high-water mark
    wire = await wire_to(sim, make_ib())
    ok, refused = wire.request(CONTRACTS[0]), wire.request(CONTRACTS[1])
    assert await wire.has_error(refused, 101)
    assert await wire.has_data(ok)
    assert (lines(sim)["open"], lines(sim)["max_open"], lines(sim)["refused"]) == (3, 3, 1)


async def test_cancel_frees_a_line(make_sim: MakeSim, make_ib: MakeIB) -> None:
    sim = await make_sim(lines=2)
    wire = await wire_to(sim, make_ib())
    first, second = wire.request(CONTRACTS[0]), wire.request(CONTRACTS[1])
    third = wire.request(CONTRACTS[2])
    assert await wire.has_error(third, 101)
    wire.cancel(CONTRACTS[0])
    assert await wait_until(lambda: lines(sim)["cancels"] == 1 and lines(sim)["open"] == 1)
    again = wire.request(CONTRACTS[2])
    assert await wire.has_data(again)
    assert wire.errors(again) == [] and wire.errors(second) == []
    assert lines(sim) == {
        "limit": 2, "others": 0, "open": 2, "max_open": 2,
        "refused": 1, "requests": 4, "cancels": 1,
    }  # fmt: skip
    cut = wire.data(again)[-1].seq
    await wire.rounds(3)
    assert not wire.data(first, after=cut)  # the cancelled one gets nothing more
    assert wire.data(again, after=cut)


async def test_a_snapshot_holds_no_line_but_is_refused_when_full(
    make_sim: MakeSim, make_ib: MakeIB
) -> None:
    sim = await make_sim(lines=2)
    ib = make_ib()
    wire = await wire_to(sim, ib)
    wire.request(CONTRACTS[0])
    (ticker,) = await asyncio.wait_for(
        ib.reqTickersAsync(Contract(conId=600000021, exchange="SMART")), 3
    )
    assert ticker.modelGreeks is not None
    assert (lines(sim)["open"], lines(sim)["max_open"], lines(sim)["refused"]) == (1, 2, 0)
    wire.request(CONTRACTS[1])
    assert await wait_until(lambda: lines(sim)["open"] == 2)
    snap = wire.request(600000022, snapshot=True)
    assert await wire.has_error(snap, 101)
    (refused,) = await asyncio.wait_for(
        ib.reqTickersAsync(Contract(conId=600000012, exchange="SMART")), 3
    )
    assert refused.modelGreeks is None
    await wire.rounds(2)
    assert not wire.data(snap)
    assert lines(sim) == {
        "limit": 2, "others": 0, "open": 2, "max_open": 2,
        "refused": 2, "requests": 5, "cancels": 0,
    }  # fmt: skip


async def test_control_commands_set_lines_and_reset_counters(
    make_sim: MakeSim, make_ib: MakeIB
) -> None:
    sim = await make_sim()
    assert lines(sim)["limit"] is None
    async with ControlServer(sim) as control:

        async def cmd(line: str) -> dict[str, Any]:
            return await send_command(control.port, line)

        assert await cmd("lines 3") == {
            "ok": True,
            "lines": {
                "limit": 3, "others": 0, "open": 0, "max_open": 0,
                "refused": 0, "requests": 0, "cancels": 0,
            },
        }  # fmt: skip
        assert (await cmd("others 1"))["lines"]["others"] == 1
        wire = await wire_to(sim, make_ib())
        req_ids = [wire.request(c) for c in CONTRACTS[:3]]
        assert await wire.has_error(req_ids[2], 101)
        wire.cancel(CONTRACTS[0])
        assert await wait_until(lambda: lines(sim)["cancels"] == 1)
        shown = (await cmd("lines"))["lines"]
        assert shown == {
            "limit": 3, "others": 1, "open": 2, "max_open": 3,
            "refused": 1, "requests": 3, "cancels": 1,
        }  # fmt: skip
        assert (await cmd("status"))["lines"] == shown
        reset = (await cmd("LINES reset"))["lines"]
        assert reset == shown | {"max_open": 2, "refused": 0, "requests": 0, "cancels": 0}
        assert (await cmd("lines off"))["lines"]["limit"] is None
        more = [wire.request(c) for c in CONTRACTS[3:]]
        assert await wire.has_data(*more)
        assert lines(sim)["max_open"] == 2 + len(more) and lines(sim)["refused"] == 0
        for bad, error in (
            ("lines many", "lines: invalid literal"),
            ("lines -1", "cannot be negative"),
            ("others -2", "cannot be negative"),
            ("others", "missing argument for 'others'"),
        ):
            reply = await cmd(bad)
            assert reply["ok"] is False and error in reply["error"], (bad, reply)


async def test_the_program_serves_a_generated_book_under_a_line_limit(make_ib: MakeIB) -> None:
    book = generate_book(30, 4, 5, account=ACCOUNT, step_s=0.0)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulator.gateway", "--port", "0", "--control-port", "0",
        "--account", ACCOUNT, "--step-s", "0", "--push-interval-s", "0.2",
        "--book", "30:4:5", "--lines", "5", "--log-level", "WARNING",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode()
        ports = dict(w.split("=", 1) for w in line.split() if "=" in w)
        ib = await connect(make_ib(), int(ports["port"]))
        held = {p.contract.conId: p for p in ib.positions()}
        assert {c: p.position for c, p in held.items()} == {
            p.con_id: p.quantity for p in book.positions
        }
        multipliers = {p.contract.multiplier for p in held.values() if p.contract.secType == "OPT"}
        assert multipliers == {"10", "50", "100", "1000"}
        control = int(ports["control_port"])
        wire = Wire(ib)
        req_ids = {p.con_id: wire.request(p.con_id) for p in book.positions if p.is_option}
        n = len(req_ids)
        assert await wait_until(
            lambda: sum(101 in wire.errors(r) for r in req_ids.values()) == n - 5
        )
        status = await send_command(control, "status")
        assert status["lines"] == {
            "limit": 5, "others": 0, "open": 5, "max_open": 5,
            "refused": n - 5, "requests": n, "cancels": 0,
        }  # fmt: skip
        served = [c for c, r in req_ids.items() if not wire.errors(r)]
        assert len(served) == 5
        tickers = {t.contract.conId: t for t in ib.tickers()}
        assert await wait_until(lambda: all(tickers[c].modelGreeks for c in served))
        for con_id in served:
            pos = book.by_con_id()[con_id]
            assert tickers[con_id].modelGreeks.delta == pytest.approx(
                book.quote(pos, 0.0).delta, rel=1e-12
            )
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 10) == 0

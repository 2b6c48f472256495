"""The market-data errors a real gateway sends, from the simulator to the real ib_async client:
entitlement errors per contract (354, 10168, 10090, 10167), expired contracts (200), a
competing live session (10197), a silent stall (with and without a farm flap), and the
marketDataType that says what each request gets."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from ib_async import IB, Contract

from simulator.gateway import ControlServer, GatewaySimulator, send_command
from simulator.portfolio import default_portfolio
from tests.fixtures import ACCOUNT
from tests.integration.simulator.conftest import connect, wait_until
from tests.integration.simulator.wire import GREEKS, Wire

MakeIB = Callable[[], IB]
CALL, PUT, QQQ_CALL, AAPL_LONG, AAPL_SHORT = 600000001, 600000002, 600000011, 600000021, 600000022
LIVE_TICKS, DELAYED_TICKS = {1, 2, 4, 9}, {66, 67, 68, 75}


async def wire_to(sim: GatewaySimulator, ib: IB, md_type: int = 1, client_id: int = 7) -> Wire:
    wire = Wire(ib)
    await connect(ib, sim.port, client_id)
    ib.reqMarketDataType(md_type)
    wire.start_clock()
    return wire


def subscribed(sim: GatewaySimulator) -> list[int]:
    subs: list[int] = sim.status()["clients"][0]["subscriptions"]
    return subs


def open_lines(sim: GatewaySimulator) -> int:
    n: int = sim.status()["lines"]["open"]
    return n


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (354, "Requested market data is not subscribed."),
        (10168, "Requested market data is not subscribed. Delayed market data is not enabled."),
    ],
)
async def test_not_subscribed_answers_with_the_error_and_ends_open_subscriptions(
    sim: GatewaySimulator, make_ib: MakeIB, code: int, text: str
) -> None:
    wire = await wire_to(sim, make_ib())
    old, other = wire.request(CALL), wire.request(PUT)
    assert await wire.has_data(old, other)
    assert sim.market_data.data_error(code, [CALL]) == 1
    assert await wire.has_error(old, code)
    assert wire.texts[(old, code)] == text
    assert subscribed(sim) == [PUT] and open_lines(sim) == 1  # IB keeps no line for it
    new = wire.request(CALL)
    assert await wire.has_error(new, code)
    await wire.rounds(3)
    assert not wire.data(old, after=wire.error_seq(old, code))
    assert not wire.data(new) and not wire.types(new)
    assert wire.data(other, after=wire.error_seq(new, code))  # the rest flows
    assert subscribed(sim) == [PUT] and open_lines(sim) == 1


async def test_an_error_for_all_contracts_and_a_clear_for_one(
    sim: GatewaySimulator, make_ib: MakeIB
) -> None:
    wire = await wire_to(sim, make_ib())
    a, b = wire.request(CALL), wire.request(PUT)
    assert await wire.has_data(a, b)
    assert sim.market_data.data_error(354, None) == 2
    assert await wire.has_error(a, 354) and await wire.has_error(b, 354)
    assert subscribed(sim) == []
    sim.market_data.clear_data_errors([PUT])
    refused, served = wire.request(CALL), wire.request(PUT)
    assert await wire.has_error(refused, 354)
    assert await wire.has_data(served)
    sim.market_data.clear_data_errors(None)
    again = wire.request(CALL)
    assert await wire.has_data(again)
    assert wire.errors(again) == [] and wire.errors(served) == []


async def test_10090_serves_prices_but_no_greeks(sim: GatewaySimulator, make_ib: MakeIB) -> None:
    wire = await wire_to(sim, make_ib())
    old = wire.request(QQQ_CALL)
    assert await wire.has_data(old)
    assert sim.market_data.data_error(10090, [CALL, QQQ_CALL]) == 1
    new, other = wire.request(CALL), wire.request(PUT)
    assert await wire.has_data(new, other)
    await wire.rounds(3)
    assert wire.errors(new) == [10090] and wire.errors(old) == [10090]  # once per request
    assert wire.texts[(new, 10090)].startswith("Part of requested market data is not subscribed.")
    assert wire.tick_types(new) == LIVE_TICKS and wire.types(new) == [1]
    assert wire.tick_types(new, GREEKS) == set()
    cut = wire.error_seq(old, 10090)
    after = wire.data(old, after=cut)
    assert after and all(e.kind != GREEKS for e in after)  # prices go on, Greeks stopped
    assert wire.tick_types(other, GREEKS) == {13}
    tickers = {t.contract.conId: t for t in wire.ib.tickers()}
    assert tickers[CALL].modelGreeks is None and tickers[CALL].bid > 0
    assert subscribed(sim) == sorted([CALL, PUT, QQQ_CALL])


async def test_10167_serves_delayed_data(sim: GatewaySimulator, make_ib: MakeIB) -> None:
    wire = await wire_to(sim, make_ib())
    sim.market_data.data_error(10167, [AAPL_LONG])
    delayed, live = wire.request(AAPL_LONG), wire.request(AAPL_SHORT)
    assert await wire.has_data(delayed, live)
    await wire.rounds(2)
    assert wire.errors(delayed) == [10167]
    assert wire.texts[(delayed, 10167)] == (
        "Requested market data is not subscribed. Displaying delayed market data."
    )
    assert wire.types(delayed) == [3]
    assert wire.tick_types(delayed) == DELAYED_TICKS
    assert wire.tick_types(delayed, GREEKS) == {83}
    assert wire.types(live) == [1] and wire.tick_types(live) == LIVE_TICKS
    tickers = {t.contract.conId: t for t in wire.ib.tickers()}
    assert tickers[AAPL_LONG].marketDataType == 3 and tickers[AAPL_LONG].modelGreeks is not None
    # an open subscription hit later: the error, then marketDataType 3 and delayed ticks
    sim.market_data.data_error(10167, [AAPL_SHORT])
    assert await wire.has_error(live, 10167)
    cut = wire.error_seq(live, 10167)
    assert await wait_until(lambda: wire.types(live) == [1, 3])
    assert await wire.has_data(live, after=cut)
    assert {e.value for e in wire.data(live, after=cut)} <= DELAYED_TICKS | {83}


async def test_10167_when_closed_and_frozen_asked_says_delayed_frozen(
    sim: GatewaySimulator, make_ib: MakeIB
) -> None:
    sim.set_market_closed(True)
    wire = await wire_to(sim, make_ib(), md_type=2)
    sim.market_data.data_error(10167, [CALL])
    delayed, frozen = wire.request(CALL), wire.request(PUT)
    assert await wire.has_data(delayed, frozen)
    assert wire.errors(delayed) == [10167] and wire.types(delayed) == [4]
    assert wire.tick_types(delayed) == {66, 67, 75}
    assert wire.types(frozen) == [2] and wire.tick_types(frozen) == {1, 2, 9}


async def test_market_data_type_says_what_is_delivered(
    sim: GatewaySimulator, make_ib: MakeIB
) -> None:
    frozen_asked = await wire_to(sim, make_ib(), md_type=2)
    req = frozen_asked.request(CALL)
    assert await frozen_asked.has_data(req)
    assert frozen_asked.types(req) == [1]  # frozen asked, market open: live is delivered
    sim.set_market_closed(True)
    assert await wait_until(lambda: frozen_asked.types(req) == [1, 2])
    sim.set_market_closed(False)
    assert await wait_until(lambda: frozen_asked.types(req) == [1, 2, 1])
    sim.set_market_closed(True)
    delayed_frozen = await wire_to(sim, make_ib(), md_type=4, client_id=8)
    live_asked = await wire_to(sim, make_ib(), md_type=1, client_id=9)
    a, b = delayed_frozen.request(PUT), live_asked.request(PUT)
    assert await delayed_frozen.has_data(a) and await live_asked.has_data(b)
    assert delayed_frozen.types(a) == [4] and delayed_frozen.tick_types(a) == {66, 67, 75}
    assert live_asked.types(b) == [1] and live_asked.tick_types(b) == {1, 2, 9}


async def test_an_expired_contract_gets_200_and_stays_a_position(
    sim: GatewaySimulator, make_ib: MakeIB
) -> None:
    ib = make_ib()
    wire = await wire_to(sim, ib)
    old, other = wire.request(AAPL_SHORT), wire.request(AAPL_LONG)
    assert await wire.has_data(old, other)
    assert sim.market_data.expire(AAPL_SHORT) == 1
    assert await wire.has_error(old, 200)
    assert wire.texts[(old, 200)] == "No security definition has been found for the request"
    new = wire.request(AAPL_SHORT)
    assert await wire.has_error(new, 200)
    await wire.rounds(3)
    assert not wire.data(old, after=wire.error_seq(old, 200)) and not wire.data(new)
    assert subscribed(sim) == [AAPL_LONG]
    assert AAPL_SHORT in {p.contract.conId for p in await ib.reqPositionsAsync()}
    assert AAPL_SHORT in {i.contract.conId for i in ib.portfolio()}
    assert await ib.reqContractDetailsAsync(Contract(conId=AAPL_SHORT)) == []
    sim.market_data.expire(AAPL_SHORT, False)
    revived = wire.request(AAPL_SHORT)
    assert await wire.has_data(revived)
    assert len(await ib.reqContractDetailsAsync(Contract(conId=AAPL_SHORT))) == 1


async def test_a_competing_session_silences_every_subscription_until_it_ends(
    make_ib: MakeIB,
) -> None:
    # no push rounds of its own: the test makes each one, so data sent at once is told apart
    async with GatewaySimulator(default_portfolio(ACCOUNT), push_interval_s=3600) as sim:
        wire = await wire_to(sim, make_ib())
        a, b = wire.request(CALL), wire.request(PUT)
        assert await wire.has_data(a, b)
        assert sim.market_data.compete(True) == 2
        assert await wire.has_error(a, 10197) and await wire.has_error(b, 10197)
        assert wire.texts[(a, 10197)] == "No market data during competing live session"
        new = wire.request(QQQ_CALL)
        assert await wire.has_error(new, 10197)
        await wire.rounds(3, sim.push_all)
        assert not wire.data(a, after=wire.error_seq(a, 10197))
        assert not wire.data(b, after=wire.error_seq(b, 10197)) and not wire.data(new)
        assert subscribed(sim) == sorted([CALL, PUT, QQQ_CALL]) and open_lines(sim) == 3
        pnl_before = wire.pnl_updates
        mark = max(e.seq for events in wire.events.values() for e in events)
        assert sim.market_data.compete(False) == 3
        assert await wire.has_data(a, b, new, after=mark)  # at once, with no push round
        assert wire.pnl_updates == pnl_before
        assert wire.types(new) == [1]
        before = len(wire.data(new))
        await wire.rounds(1, sim.push_all)
        assert len(wire.data(new)) > before


async def test_a_stall_silences_the_open_subscriptions_and_serves_new_ones(
    sim: GatewaySimulator, make_ib: MakeIB
) -> None:
    wire = await wire_to(sim, make_ib())
    a, b = wire.request(CALL), wire.request(PUT)
    assert await wire.has_data(a, b)
    assert sim.market_data.stall(True) == 2
    fresh = wire.request(QQQ_CALL)  # made after the stall began: served
    assert await wire.has_data(fresh)
    mark = wire.first_data_seq(fresh)
    await wire.rounds(3)
    assert not wire.data(a, after=mark) and not wire.data(b, after=mark)
    assert wire.data(fresh, after=mark)
    assert wire.errors(a) == wire.errors(b) == [] and wire.system_errors() == [2104, 2106, 2158]
    assert wire.ib.isConnected()
    status = sim.status()
    assert status["stalled"] == 2 and status["lines"]["open"] == 3
    # the client revives one: cancel and ask again
    wire.cancel(CALL)
    revived = wire.request(CALL)
    assert await wire.has_data(revived)
    assert sim.market_data.stall(False) == 1
    assert await wire.has_data(b, after=wire.first_data_seq(revived))
    assert sim.status()["stalled"] == 0


async def test_a_stall_with_a_farm_flap_keeps_the_stalled_dead(
    sim: GatewaySimulator, make_ib: MakeIB
) -> None:
    wire = await wire_to(sim, make_ib())
    seen: dict[int, float] = {}
    loop = asyncio.get_running_loop()
    wire.ib.errorEvent += lambda req_id, code, *_: seen.setdefault(code, loop.time())
    old = wire.request(CALL)
    assert await wire.has_data(old)
    sim.market_data.stall(True, farm=True)
    assert await wait_until(lambda: 2104 in seen, timeout_s=3)
    assert wire.system_errors()[-2:] == [2103, 2104]
    assert seen[2104] - seen[2103] >= 0.9
    assert wire.texts[(-1, 2103)] == "Market data farm connection is broken:usfarm"
    fresh = wire.request(PUT)
    assert await wire.has_data(fresh)
    mark = wire.first_data_seq(fresh)
    await wire.rounds(3)
    assert not wire.data(old, after=wire.error_seq(-1, 2103))
    assert wire.data(fresh, after=mark)
    assert subscribed(sim) == sorted([CALL, PUT]) and sim.status()["stalled"] == 1


async def test_the_control_commands_and_their_replies(
    sim: GatewaySimulator, make_ib: MakeIB
) -> None:
    async with ControlServer(sim) as control:

        async def cmd(line: str) -> dict[str, object]:
            return await send_command(control.port, line)

        wire = await wire_to(sim, make_ib())
        a, b = wire.request(CALL), wire.request(PUT)
        assert await wire.has_data(a, b)
        assert await cmd(f"data-error 10090 {CALL}") == {
            "ok": True, "code": 10090, "con_ids": [CALL], "hit": 1,
        }  # fmt: skip
        assert await cmd("data-error 354 all") == {
            "ok": True, "code": 354, "con_ids": "all", "hit": 2,
        }  # fmt: skip
        assert await cmd(f"DATA-ERROR clear {PUT}") == {"ok": True, "cleared": [PUT]}
        status = await cmd("status")
        assert status["data_errors"] == {str(PUT): None} and status["data_error_all"] == 354
        assert await cmd("data-error clear") == {"ok": True, "cleared": "all"}
        status = await cmd("status")
        assert status["data_errors"] == {} and status["data_error_all"] is None
        c = wire.request(CALL)
        assert await wire.has_data(c)
        assert await cmd(f"expire {CALL}") == {"ok": True, "con_id": CALL, "ended": 1}
        assert (await cmd("status"))["expired"] == [CALL]
        assert await cmd(f"unexpire {CALL}") == {"ok": True, "con_id": CALL, "ended": 0}
        d = wire.request(CALL)
        assert await wire.has_data(d)
        assert await cmd("compete on") == {"ok": True, "competing": True, "subscriptions": 1}
        assert (await cmd("status"))["competing"] is True
        assert await cmd("compete off") == {"ok": True, "competing": False, "subscriptions": 1}
        assert await cmd("stall on farm") == {"ok": True, "stalled": 1}
        assert (await cmd("status"))["stalled"] == 1
        assert await wire.has_error(-1, 2103)
        assert await cmd("stall off") == {"ok": True, "stalled": 1}
        assert await wait_until(lambda: 2104 in wire.system_errors(), timeout_s=3)

"""The IB Gateway simulator against the real ib_async 2.1 client over real loopback sockets."""

from __future__ import annotations

import asyncio
import math
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from ib_async import IB, Contract, Option, Stock

from simulator.gateway import GatewaySimulator, protocol, send_command
from simulator.gateway.catalog import Catalog
from simulator.gateway.control import send_command_sync
from simulator.portfolio import SimPosition, default_portfolio
from tests.fixtures import ACCOUNT, StartGateway
from tests.integration.simulator.conftest import connect, wait_until

REPO = Path(__file__).resolve().parents[3]
MakeIB = Callable[[], IB]


def option_positions(sim: GatewaySimulator) -> list[SimPosition]:
    return [p for p in sim.portfolio.positions if p.is_option]


def subscribe_all(ib: IB, md_type: int = 1) -> dict[int, object]:
    ib.reqMarketDataType(md_type)
    return {
        pos.contract.conId: ib.reqMktData(Contract(conId=pos.contract.conId, exchange="SMART"))
        for pos in ib.positions()
    }


def errors_of(ib: IB) -> list[tuple[int, int]]:
    seen: list[tuple[int, int]] = []
    ib.errorEvent += lambda req_id, code, _text, _contract: seen.append((req_id, code))
    return seen


# ---------------------------------------------------------------- wire format
def test_exact_field_counts_of_fixed_shape_messages() -> None:
    portfolio = default_portfolio()
    cat = Catalog(portfolio)
    opt = next(p for p in portfolio.positions if p.is_option)
    stk = next(p for p in portfolio.positions if not p.is_option)
    inst = cat.instrument(opt.con_id)
    assert inst is not None
    assert len(protocol.handshake_reply("20261125 10:00:00 US/Eastern")) == 2
    assert len(protocol.next_valid_id(1)) == 3
    assert len(protocol.managed_accounts([ACCOUNT])) == 3
    assert len(protocol.tick_price(1, 1, 1.0, 1.0)) == 7
    for pos in (opt, stk):
        assert len(cat.position_msg(ACCOUNT, pos)) == 16
        assert len(cat.portfolio_msg(ACCOUNT, pos, 0.0)) == 20
    for mode in ("normal", "sentinel", "max"):
        msg = cat.greeks_msg(3, inst, 0.0, 1, mode)
        assert msg is not None and len(msg) == 12
        assert all(protocol.fmt(f) != "" for f in msg)
    assert cat.greeks_msg(3, inst, 0.0, 1, "absent") is None


def test_frames_round_trip() -> None:
    data = protocol.frame([1, 6, 2, 4, 600.5, 1.0, 0])
    assert int.from_bytes(data[:4], "big") == len(data) - 4
    assert protocol.split_payload(data[4:]) == ["1", "6", "2", "4", "600.5", "1.0", "0"]
    assert protocol.parse_client_versions(b"v157..178") == (157, 178)
    assert protocol.parse_client_versions(b"v100..178 +PACEAPI") == (100, 178)
    with pytest.raises(protocol.ProtocolError):
        protocol.parse_client_versions(b"hello")


def test_loopback_only() -> None:
    with pytest.raises(ValueError, match="loopback"):
        GatewaySimulator(host="0.0.0.0")


# ---------------------------------------------------------------- connect and sync
async def test_connect_syncs_positions_portfolio_and_accounts(
    sim: GatewaySimulator, make_ib: MakeIB
) -> None:
    ib = await connect(make_ib(), sim.port)
    assert ib.isConnected()
    assert ib.managedAccounts() == [ACCOUNT]
    expected = {p.con_id: p.quantity for p in sim.portfolio.positions}
    assert {p.contract.conId: p.position for p in ib.positions()} == expected
    assert all(p.account == ACCOUNT for p in ib.positions())
    assert {i.contract.conId: i.position for i in ib.portfolio()} == expected
    by_con = {p.contract.conId: p.contract for p in ib.positions()}
    spy_call = by_con[600000001]
    assert (spy_call.secType, spy_call.symbol, spy_call.multiplier) == ("OPT", "SPY", "100")
    assert (spy_call.strike, spy_call.right, spy_call.lastTradeDateOrContractMonth) == (
        600.0,
        "C",
        "20261218",
    )
    net_liq = [v for v in ib.accountValues() if v.tag == "NetLiquidation"]
    assert net_liq and float(net_liq[0].value) > 0
    assert sim.status()["client_ids"] == [7]


async def test_greeks_arrive_in_model_greeks_for_every_option(
    sim: GatewaySimulator, make_ib: MakeIB
) -> None:
    t = sim.freeze()
    ib = await connect(make_ib(), sim.port)
    tickers = subscribe_all(ib)
    options = option_positions(sim)
    assert await wait_until(lambda: all(tickers[p.con_id].modelGreeks for p in options))
    for pos in options:
        mg = tickers[pos.con_id].modelGreeks
        q = sim.portfolio.quote(pos, t)
        assert mg.delta == pytest.approx(q.delta, rel=1e-12)
        assert mg.gamma == pytest.approx(q.gamma, rel=1e-12)
        assert mg.vega == pytest.approx(q.vega, rel=1e-12)
        assert mg.theta == pytest.approx(q.theta, rel=1e-12)
        assert mg.undPrice == pytest.approx(q.und_price)
        assert tickers[pos.con_id].marketDataType == 1
    spy = tickers[756733]
    assert spy.bid < spy.ask and spy.marketPrice() == pytest.approx(sim.portfolio.price("SPY", t))


async def test_greeks_move_over_time(sim: GatewaySimulator, make_ib: MakeIB) -> None:
    ib = await connect(make_ib(), sim.port)
    tickers = subscribe_all(ib)
    call = tickers[600000001]
    assert await wait_until(lambda: call.modelGreeks is not None)
    seen = {call.modelGreeks.delta}
    assert await wait_until(
        lambda: (seen.add(call.modelGreeks.delta), len(seen) > 2)[1], timeout_s=4
    )


async def test_delayed_frozen_uses_delayed_tick_types(
    sim: GatewaySimulator, make_ib: MakeIB
) -> None:
    ib = await connect(make_ib(), sim.port)
    tick_types: set[int] = set()
    tickers = subscribe_all(ib, md_type=4)
    ib.pendingTickersEvent += lambda ts: tick_types.update(
        tk.tickType for t in ts for tk in t.ticks
    )
    call = tickers[600000001]
    assert await wait_until(lambda: call.modelGreeks is not None and call.close > 0)
    assert call.marketDataType == 3  # DELAYED_FROZEN asked, market open: delayed is delivered
    assert sim.status()["clients"][0]["market_data_type"] == 4
    assert await wait_until(lambda: {66, 67, 68} <= tick_types)
    assert not tick_types & {1, 2, 4}


def unrealized_by_hand(sim: GatewaySimulator, t: float) -> float:
    """Market value less cost, position by position: a stock at its price, an option at its
    per-share price x multiplier; the average cost of an option is per contract."""
    total = 0.0
    for pos in sim.portfolio.positions:
        if pos.is_option:
            value = pos.quantity * sim.portfolio.quote(pos, t).price * pos.multiplier
        else:
            value = pos.quantity * sim.portfolio.price(pos.symbol, t)
        total += value - pos.quantity * pos.avg_cost
    return total


async def test_pnl_fills_and_cancel_stops_it(sim: GatewaySimulator, make_ib: MakeIB) -> None:
    t = sim.freeze(True)  # the values the client gets are those of this model time
    ib = await connect(make_ib(), sim.port)
    pnl = ib.reqPnL(ACCOUNT)
    assert await wait_until(lambda: not math.isnan(pnl.unrealizedPnL))
    unreal = unrealized_by_hand(sim, t)  # between about -300 and 2,700 as prices move
    assert pnl.unrealizedPnL == pytest.approx(unreal, abs=0.006)  # sent in cents
    assert pnl.dailyPnL == pytest.approx(0.1 * unreal, abs=0.006)  # the simulator's rule
    assert pnl.realizedPnL == 0.0
    assert await wait_until(lambda: sim.status()["clients"][0]["pnl"] == 1)
    ib.cancelPnL(ACCOUNT)
    assert await wait_until(lambda: sim.status()["clients"][0]["pnl"] == 0)


async def test_contract_details_qualify_and_unknown(sim: GatewaySimulator, make_ib: MakeIB) -> None:
    ib = await connect(make_ib(), sim.port)
    errors = errors_of(ib)
    aapl = Stock("AAPL", "SMART", "USD")
    opt = Option("QQQ", "20270115", 520.0, "C", "SMART")
    assert await ib.qualifyContractsAsync(aapl, opt) == [aapl, opt]
    assert (aapl.conId, opt.conId, opt.multiplier) == (265598, 600000011, "100")
    details = await ib.reqContractDetailsAsync(Contract(conId=600000001))
    assert details[0].contract.symbol == "SPY" and details[0].underConId == 756733
    assert await ib.reqContractDetailsAsync(Stock("NOPE", "SMART", "USD")) == []
    assert any(code == 200 for _, code in errors)
    assert (await ib.reqCurrentTimeAsync()).year >= 2026
    summary = await ib.accountSummaryAsync(ACCOUNT)
    assert {"NetLiquidation", "BuyingPower"} <= {v.tag for v in summary}
    bars = await ib.reqHistoricalDataAsync(
        Contract(symbol="EUR", secType="CASH", exchange="IDEALPRO", currency="USD"),
        "",
        "30 S",
        "5 secs",
        "MIDPOINT",
        False,
    )
    assert len(bars) == 5


async def test_reqtickers_snapshot(sim: GatewaySimulator, make_ib: MakeIB) -> None:
    ib = await connect(make_ib(), sim.port)
    (ticker,) = await asyncio.wait_for(
        ib.reqTickersAsync(Contract(conId=600000021, exchange="SMART")), 3
    )
    assert ticker.modelGreeks is not None and ticker.modelGreeks.delta > 0
    assert sim.status()["clients"][0]["subscriptions"] == []


async def test_position_changes_are_streamed(sim: GatewaySimulator, make_ib: MakeIB) -> None:
    ib = await connect(make_ib(), sim.port)
    sim.set_position(600000022, 0)
    assert await wait_until(lambda: 600000022 not in {p.contract.conId for p in ib.positions()})
    assert 600000022 not in {i.contract.conId for i in ib.portfolio()}
    sim.add_position(
        SimPosition(600000031, "QQQ", "OPT", 7, 320227571, "20270115", 500.0, "C", 100, 2000.0)
    )
    assert await wait_until(
        lambda: any(p.contract.conId == 600000031 and p.position == 7 for p in ib.positions())
    )


# ---------------------------------------------------------------- faults
async def test_client_id_in_use_gets_326_and_timeout(
    sim: GatewaySimulator, make_ib: MakeIB
) -> None:
    sim.hold_client_id(9)
    ib = make_ib()
    errors = errors_of(ib)
    with pytest.raises(TimeoutError):
        await connect(ib, sim.port, client_id=9, connect_timeout_s=0.5)
    assert (-1, 326) in errors
    # a live session also holds its id
    await connect(make_ib(), sim.port, client_id=10)
    second = make_ib()
    with pytest.raises(TimeoutError):
        await connect(second, sim.port, client_id=10, connect_timeout_s=0.5)
    sim.release_client_id(9)
    assert (await connect(make_ib(), sim.port, client_id=9)).isConnected()


async def test_drop_all_fires_disconnected_and_reconnect_works(
    sim: GatewaySimulator, make_ib: MakeIB
) -> None:
    ib = await connect(make_ib(), sim.port)
    dropped = asyncio.Event()
    ib.disconnectedEvent += dropped.set
    assert sim.drop_all() == 1
    await asyncio.wait_for(dropped.wait(), 1.0)
    assert not ib.isConnected()
    assert await wait_until(lambda: sim.status()["client_ids"] == [])
    await connect(ib, sim.port)
    assert len(ib.positions()) == len(sim.portfolio.positions)


async def test_refuse_then_listen_again(sim: GatewaySimulator, make_ib: MakeIB) -> None:
    port = sim.port
    await sim.refuse(0.5)
    ib = make_ib()
    with pytest.raises(ConnectionRefusedError):
        await connect(ib, port, connect_timeout_s=1)
    assert await wait_until(lambda: sim.listening, timeout_s=2)
    assert sim.port == port
    assert (await connect(ib, port)).isConnected()


async def test_server_reset_1100_1102_keeps_socket(sim: GatewaySimulator, make_ib: MakeIB) -> None:
    ib = await connect(make_ib(), sim.port)
    errors = errors_of(ib)
    dropped: list[bool] = []
    ib.disconnectedEvent += lambda: dropped.append(True)
    tickers = subscribe_all(ib)
    await sim.reset(0.3, 1102)
    assert await wait_until(lambda: (-1, 1102) in errors and (-1, 2104) in errors)
    codes = [code for _, code in errors]
    assert codes.index(1100) < codes.index(1102)
    assert {2103, 2104} <= set(codes)
    assert ib.isConnected() and not dropped
    assert sim.status()["clients"][0]["subscriptions"]  # data maintained
    tickers[600000001].modelGreeks = None
    assert await wait_until(lambda: tickers[600000001].modelGreeks is not None)


async def test_server_reset_1101_loses_subscriptions(
    sim: GatewaySimulator, make_ib: MakeIB
) -> None:
    ib = await connect(make_ib(), sim.port)
    errors = errors_of(ib)
    subscribe_all(ib)
    assert await wait_until(lambda: len(sim.status()["clients"][0]["subscriptions"]) == 8)
    await sim.reset(0.1, 1101)
    assert await wait_until(lambda: (-1, 1101) in errors)
    assert ib.isConnected()
    assert sim.status()["clients"][0]["subscriptions"] == []


async def test_sentinel_greeks_reach_the_client_as_ib_async_leaves_them(
    sim: GatewaySimulator, make_ib: MakeIB
) -> None:
    sim.set_greeks_mode("sentinel", [600000001])
    ib = await connect(make_ib(), sim.port)
    tickers = subscribe_all(ib)
    call, put = tickers[600000001], tickers[600000002]
    assert await wait_until(lambda: call.modelGreeks is not None and put.modelGreeks is not None)
    mg = call.modelGreeks
    assert (mg.delta, mg.gamma, mg.impliedVol, mg.undPrice) == (None, None, None, None)
    assert (mg.vega, mg.theta) == (-2.0, -2.0)  # the 2.1.0 quirk the bridge must handle
    assert put.modelGreeks.delta is not None and put.modelGreeks.delta < 0
    sim.set_greeks_mode("max")
    assert await wait_until(lambda: put.modelGreeks.delta == sys.float_info.max)


async def test_closed_market(sim: GatewaySimulator, make_ib: MakeIB) -> None:
    sim.set_market_closed(True)
    t = sim.freeze()
    ib = await connect(make_ib(), sim.port)
    tickers = subscribe_all(ib, md_type=2)
    spy = tickers[756733]
    assert await wait_until(lambda: spy.close > 0)
    assert (spy.bid, spy.ask, spy.bidSize, spy.askSize) == (-1, -1, 0, 0)
    assert math.isnan(spy.last) and math.isnan(spy.marketPrice())
    assert spy.close == sim.portfolio.price("SPY", t)
    assert await wait_until(lambda: tickers[600000001].modelGreeks is not None)


# ---------------------------------------------------------------- control port
async def test_control_port_from_another_task(sim: GatewaySimulator, make_ib: MakeIB) -> None:
    from simulator.gateway import ControlServer

    async with ControlServer(sim) as control:
        ib = await connect(make_ib(), sim.port)
        status = await send_command(control.port, "status")
        assert status["ok"] and status["client_ids"] == [7]
        assert (await send_command(control.port, "bogus"))["ok"] is False
        assert (await send_command(control.port, "greeks sentinel"))["ok"]
        assert sim.greeks_mode == "sentinel"
        assert (await send_command(control.port, "market closed"))["ok"] and sim.market_closed
        assert (await send_command(control.port, "freeze on"))["ok"]
        assert (await send_command(control.port, "hold 33"))["ok"] and 33 in sim.held_client_ids
        dropped = asyncio.Event()
        ib.disconnectedEvent += dropped.set
        assert (await send_command(control.port, "drop"))["dropped"] == 1
        await asyncio.wait_for(dropped.wait(), 1)
        assert (await send_command(control.port, "refuse 0.3"))["ok"]
        assert not sim.listening
        assert await wait_until(lambda: sim.listening, timeout_s=2)


async def test_runs_as_a_process_with_control_port_and_stops_on_sigterm(
    make_ib: MakeIB, start_gateway: StartGateway
) -> None:
    gateway = await start_gateway(step_s=0.5, push_interval_s=0.5)
    ib = await connect(make_ib(), gateway.port)
    assert len(ib.positions()) == 8
    status = await asyncio.to_thread(send_command_sync, gateway.control_port, "status")
    assert status["client_ids"] == [7]
    dropped = asyncio.Event()
    ib.disconnectedEvent += dropped.set
    await send_command(gateway.control_port, "drop")
    await asyncio.wait_for(dropped.wait(), 1)
    gateway.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(gateway.proc.wait(), 10) == 0

"""The SOCKET transport (real ib_async 2.1) against the IB Gateway simulator over loopback."""

from __future__ import annotations

import asyncio
import math
import sys
from collections.abc import AsyncIterator, Callable
from datetime import datetime

import pytest

from collector import ib_errors, ib_values
from collector.greeks import GreeksPolicy
from collector.socket.transport import SocketTransport
from collector.transport import LinkEvent, LinkState, PositionData, Snapshot, TransportError
from shared.clock import utcnow
from shared.config import Settings, load_settings
from simulator.gateway import GatewaySimulator
from simulator.portfolio import SimPosition
from tests.fixtures import ACCOUNT

N_SUBS = 9  # 8 positions + the AAPL underlying (the account holds only AAPL options)


def settings_for(port: int, **extra: str) -> Settings:
    env = {
        "IB_HOST": "127.0.0.1",
        "IB_PORT": str(port),
        "IB_CLIENT_ID": "17",
        "IB_ACCOUNT": ACCOUNT,
        "IB_CONNECT_TIMEOUT_S": "3",
        "IB_MARKET_DATA_TYPE": "FROZEN",
        **extra,
    }
    return load_settings(env, dotenv=None)


async def wait_until(cond: Callable[[], bool], timeout_s: float = 3.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if cond():
            return True
        await asyncio.sleep(0.02)
    return cond()


async def next_event(t: SocketTransport, timeout_s: float = 1.0) -> LinkEvent:
    return await asyncio.wait_for(t.events.get(), timeout_s)


def drain(t: SocketTransport) -> list[LinkEvent]:
    out = []
    while not t.events.empty():
        out.append(t.events.get_nowait())
    return out


async def snapshot_when(
    t: SocketTransport, cond: Callable[[Snapshot], bool], timeout_s: float = 3.0
) -> Snapshot:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    snap = await t.snapshot(utcnow())
    while not cond(snap) and loop.time() < deadline:
        await asyncio.sleep(0.05)
        snap = await t.snapshot(utcnow())
    return snap


async def fresh_ticks(t: SocketTransport, rounds: int = 1, timeout_s: float = 5.0) -> None:
    """Wait until every subscription's Ticker has taken a tick that arrived after this call,
    `rounds` times over: whatever the gateway sent before has then been read (one socket, read
    in order), so an assertion that something did not arrive is not just early."""
    for n in range(1, rounds + 1):
        mark = utcnow()

        def fresh(mark: datetime = mark) -> bool:
            subs = list(t.market.subs.values())
            return len(subs) == N_SUBS and all(
                s.ticker is not None and s.ticker.time is not None and s.ticker.time > mark
                for s in subs
            )

        assert await wait_until(fresh, timeout_s), f"round {n}: no fresh tick on every ticker"


def options_of(snap: Snapshot) -> list[PositionData]:
    return [p for p in snap.positions if p.sec_type == "OPT"]


def all_greeks(snap: Snapshot) -> bool:
    return all(p.delta is not None and p.theta is not None for p in options_of(snap))


def subs_at_server(sim: GatewaySimulator) -> list[int]:
    clients = sim.status()["clients"]
    return clients[0]["subscriptions"] if clients else []


@pytest.fixture
def sim(gateway_sim: GatewaySimulator) -> GatewaySimulator:
    return gateway_sim


@pytest.fixture
async def transport(sim: GatewaySimulator) -> AsyncIterator[SocketTransport]:
    t = SocketTransport(settings_for(sim.port))
    try:
        yield t
    finally:
        await t.disconnect()


@pytest.fixture
async def connected(transport: SocketTransport) -> SocketTransport:
    await transport.connect()
    event = await next_event(transport)
    assert event.state is LinkState.CONNECTED
    return transport


# ---------------------------------------------------------------- values and codes (pure)
def test_ib_values_never_turn_missing_into_zero() -> None:
    for bad in (None, float("nan"), float("inf"), sys.float_info.max, "x", -2.0, -2):
        assert ib_values.greek(bad) is None
    assert ib_values.greek(0.0) == 0.0 and ib_values.greek(-0.5) == -0.5
    for bad in (None, -1.0, 0.0, float("nan"), sys.float_info.max):
        assert ib_values.price(bad) is None
    assert ib_values.price(600.5) == 600.5
    assert not ib_values.model_greeks(None).any


def test_error_codes_map_to_link_states() -> None:
    assert ib_errors.classify(1100, -1).state is LinkState.DISCONNECTED
    assert ib_errors.classify(1101, -1).resubscribe
    assert ib_errors.classify(1102, -1).state is LinkState.CONNECTED
    assert ib_errors.classify(326, -1).status == "ERROR"
    assert ib_errors.classify(1300, -1).state is LinkState.DISCONNECTED
    assert ib_errors.classify(2103, -1).status == "WARN"
    assert ib_errors.classify(2104, -1).status == "INFO"
    assert ib_errors.classify(200, 5).state is None
    farms = ib_errors.FarmWatch()
    assert not farms.worth_reporting(2104)  # the OK of every connect: log only
    assert farms.worth_reporting(2103) and not farms.worth_reporting(2103)
    assert farms.worth_reporting(2104)


# ---------------------------------------------------------------- snapshot values
async def test_snapshot_positions_equal_the_simulator_portfolio(
    sim: GatewaySimulator, connected: SocketTransport
) -> None:
    snap = await connected.snapshot(utcnow())
    assert snap.account == ACCOUNT
    got = {p.con_id: (p.symbol, p.sec_type, p.quantity, p.multiplier) for p in snap.positions}
    want = {
        p.con_id: (p.symbol, p.sec_type, p.quantity, float(p.multiplier))
        for p in sim.portfolio.positions
    }
    assert got == want
    assert all(p.subscribed_at is not None for p in snap.positions)
    assert await wait_until(lambda: len(subs_at_server(sim)) == N_SUBS)
    assert sim.status()["clients"][0]["market_data_type"] == 2  # FROZEN asked before reqMktData


async def test_frozen_greeks_equal_the_model_and_the_net_matches(
    sim: GatewaySimulator, connected: SocketTransport
) -> None:
    t = sim.freeze()
    frozen_at = utcnow()
    # Greeks that arrived after the freeze: earlier ones may be of an earlier model step
    snap = await snapshot_when(
        connected,
        lambda s: (
            all_greeks(s)
            and all(p.greeks_at is not None and p.greeks_at > frozen_at for p in options_of(s))
        ),
    )
    by_con = sim.portfolio.by_con_id()
    for pos in options_of(snap):
        q = sim.portfolio.quote(by_con[pos.con_id], t)
        assert pos.delta == pytest.approx(q.delta, rel=1e-12)
        assert pos.gamma == pytest.approx(q.gamma, rel=1e-12)
        assert pos.vega == pytest.approx(q.vega, rel=1e-12)
        assert pos.theta == pytest.approx(q.theta, rel=1e-12)
        assert pos.und_price == pytest.approx(q.und_price)
        assert pos.greeks_at is not None and pos.subscribed_at is not None
        assert pos.greeks_at >= pos.subscribed_at
    # the net, computed here independently of the collector
    net = [0.0, 0.0, 0.0, 0.0]
    for pos in snap.positions:
        if pos.sec_type == "STK":
            net[0] += pos.quantity
            continue
        k = pos.quantity * (pos.multiplier or 0)
        assert pos.delta is not None and pos.gamma is not None
        assert pos.vega is not None and pos.theta is not None
        for i, g in enumerate((pos.delta, pos.gamma, pos.vega, pos.theta)):
            net[i] += k * g
    ref = sim.portfolio.net_greeks(t)
    assert net == pytest.approx([ref.delta, ref.gamma, ref.vega, ref.theta], rel=1e-9)
    # and through the collector's own sum
    evaluation = GreeksPolicy(grace_s=0, max_age_s=60).evaluate(snap, utcnow())
    row = evaluation.rows[0]
    assert (row.delta, row.gamma, row.vega, row.theta) == pytest.approx(
        (ref.delta, ref.gamma, ref.vega, ref.theta), rel=1e-9
    )
    for symbol in ("SPY", "QQQ", "AAPL"):  # AAPL: found by contract details (options only)
        assert snap.prices[symbol] == pytest.approx(sim.portfolio.price(symbol, t))


async def test_pnl_in_status(sim: GatewaySimulator, connected: SocketTransport) -> None:
    """The account's P&L as the simulator sends it (values pinned: the pushes repeat them)."""
    daily, unrealized, realized = sim.catalog.pnl(sim.freeze(True))
    sent = {"pnl_daily": daily, "pnl_unrealized": unrealized, "pnl_realized": realized}

    def shown() -> dict[str, float | None]:
        status = connected.status()
        return {k: float(status[k]) if status[k] else None for k in sent}

    await wait_until(lambda: shown() == sent)
    assert shown() == sent
    assert connected.status()["account"] == ACCOUNT
    assert await wait_until(lambda: connected.status()["subscriptions"] == str(N_SUBS))


async def test_greeks_move_and_greeks_at_advances(connected: SocketTransport) -> None:
    first = await snapshot_when(connected, all_greeks)
    call = next(p for p in first.positions if p.con_id == 600000001)
    later = await snapshot_when(
        connected,
        lambda s: next(p for p in s.positions if p.con_id == 600000001).delta != call.delta,
    )
    moved = next(p for p in later.positions if p.con_id == 600000001)
    assert moved.delta != call.delta
    assert moved.greeks_at is not None and call.greeks_at is not None
    assert moved.greeks_at > call.greeks_at


# ---------------------------------------------------------------- missing values
async def test_sentinel_max_and_absent_greeks_are_none_never_zero(
    sim: GatewaySimulator, connected: SocketTransport
) -> None:
    await snapshot_when(connected, all_greeks)
    sim.set_greeks_mode("sentinel", [600000001])
    sim.set_greeks_mode("max", [600000002])

    def by_con(s: Snapshot) -> dict[int, PositionData]:
        return {p.con_id: p for p in s.positions}

    snap = await snapshot_when(
        connected,
        lambda s: by_con(s)[600000001].delta is None and by_con(s)[600000002].delta is None,
    )
    for con_id in (600000001, 600000002):
        pos = by_con(snap)[con_id]
        assert (pos.delta, pos.gamma, pos.vega, pos.theta) == (None, None, None, None)
        assert pos.greeks_at is None
    assert by_con(snap)[600000011].delta is not None  # the others keep flowing
    # ib_async 2.1.0 leaves vega/theta at -2.0: the transport must not pass them on
    sub_call = connected.market.subs[600000001]
    assert (sub_call.ticker.modelGreeks.vega, sub_call.ticker.modelGreeks.theta) == (-2.0, -2.0)
    # the collector's policy excludes them (after the grace period) rather than summing zeros
    evaluation = GreeksPolicy(grace_s=0, max_age_s=60).evaluate(snap, utcnow())
    assert len(evaluation.excluded) == 2


async def test_absent_greeks_stay_none(sim: GatewaySimulator, transport: SocketTransport) -> None:
    sim.set_greeks_mode("absent")
    await transport.connect()
    await fresh_ticks(transport, rounds=2)  # a whole push after the subscriptions was read
    snap = await transport.snapshot(utcnow())
    assert len(options_of(snap)) == sum(p.sec_type == "OPT" for p in sim.portfolio.positions)
    assert all(p.delta is None and p.greeks_at is None for p in options_of(snap))
    assert snap.prices["SPY"] > 0  # prices still flow


async def test_closed_market_prices_fall_back_to_close(
    sim: GatewaySimulator, transport: SocketTransport
) -> None:
    sim.set_market_closed(True)
    t = sim.freeze()
    await transport.connect()
    snap = await snapshot_when(transport, lambda s: all_greeks(s) and len(s.prices) == 3)
    for symbol in ("SPY", "QQQ", "AAPL"):
        assert snap.prices[symbol] == pytest.approx(sim.portfolio.price(symbol, t))
    spy = transport.market.subs[756733].ticker
    assert (spy.bid, spy.ask) == (-1, -1) and math.isnan(spy.marketPrice())
    stock = next(p for p in snap.positions if p.con_id == 756733)
    assert stock.und_price == pytest.approx(sim.portfolio.price("SPY", t))
    assert all(p.und_price is not None and p.und_price > 0 for p in snap.positions)


# ---------------------------------------------------------------- link events
async def test_drop_is_reported_within_one_second(
    sim: GatewaySimulator, connected: SocketTransport
) -> None:
    sim.drop_all()
    event = await next_event(connected, 1.0)
    assert event.state is LinkState.DISCONNECTED and event.status == "ERROR"
    assert connected.state is LinkState.DISCONNECTED
    with pytest.raises(TransportError):
        await connected.snapshot(utcnow())


async def test_own_disconnect_is_not_a_drop(
    sim: GatewaySimulator, connected: SocketTransport
) -> None:
    await connected.disconnect()
    # the socket's close has been handled on both ends (ib_async emits disconnectedEvent, which
    # the transport must ignore, in the same callback that clears the connection)
    assert await wait_until(lambda: not connected._ib.client.isConnected())
    assert await wait_until(lambda: sim.status()["client_ids"] == [])
    assert drain(connected) == []
    assert connected.state is LinkState.DISCONNECTED


async def test_reconnect_restores_subscriptions_and_greeks(
    sim: GatewaySimulator, connected: SocketTransport
) -> None:
    await snapshot_when(connected, all_greeks)
    sim.drop_all()
    assert (await next_event(connected)).state is LinkState.DISCONNECTED
    before = utcnow()
    await connected.connect()
    assert (await next_event(connected)).state is LinkState.CONNECTED
    snap = await snapshot_when(
        connected,
        lambda s: all(p.greeks_at is not None and p.greeks_at > before for p in options_of(s)),
    )
    assert all(p.greeks_at is not None and p.greeks_at > before for p in options_of(snap))
    assert await wait_until(lambda: len(subs_at_server(sim)) == N_SUBS)


@pytest.mark.parametrize("code", [1102, 1101])
async def test_server_reset_resubscribes_without_reconnect(
    sim: GatewaySimulator, connected: SocketTransport, code: int
) -> None:
    await snapshot_when(connected, all_greeks)
    assert await wait_until(lambda: len(subs_at_server(sim)) == N_SUBS)
    requests_before = sim.status()["clients"][0]["mkt_requests"]
    await sim.reset(0.3, code)
    lost = await next_event(connected)
    assert (lost.state, lost.code) == (LinkState.DISCONNECTED, 1100)
    events = [lost]
    while not any(e.code == code for e in events):
        events.append(await next_event(connected))
    restored = events[-1]
    assert restored.state is LinkState.CONNECTED and connected.state is LinkState.CONNECTED
    assert sim.status()["client_ids"] == [17]  # the same socket: no reconnect
    assert await wait_until(
        lambda: (
            len(subs_at_server(sim)) == N_SUBS
            and sim.status()["clients"][0]["mkt_requests"] >= requests_before + N_SUBS
        )
    )
    assert sim.status()["clients"][0]["mkt_requests"] == requests_before + N_SUBS
    after = utcnow()
    snap = await snapshot_when(
        connected,
        lambda s: all(p.greeks_at is not None and p.greeks_at > after for p in options_of(s)),
    )
    assert all(p.greeks_at is not None and p.greeks_at > after for p in options_of(snap))
    assert not any(e.state is LinkState.DISCONNECTED and e.code is None for e in drain(connected))


async def test_handlers_are_not_doubled_by_reconnects(
    sim: GatewaySimulator, transport: SocketTransport
) -> None:
    for _ in range(3):
        await transport.connect()
        await transport.disconnect()
    await transport.connect()
    assert [e.state for e in drain(transport)] == [LinkState.CONNECTED] * 4
    await fresh_ticks(transport)  # every contract requested and answered
    requests_before = sim.status()["clients"][0]["mkt_requests"]
    assert requests_before == N_SUBS
    await sim.reset(0.1, 1102)
    events: list[LinkEvent] = []
    # 2158 (sec-def farm OK) is the last code the reset sends: the 1100 and 1102 before it have
    # been handled, by every handler registered
    while not any(e.code == 2158 for e in events):
        events.append(await next_event(transport, 3.0))
    assert [e.code for e in events].count(1100) == 1
    assert [e.code for e in events].count(1102) == 1
    assert await wait_until(
        lambda: (
            len(subs_at_server(sim)) == N_SUBS
            and sim.status()["clients"][0]["mkt_requests"] >= 2 * N_SUBS
        )
    )
    await fresh_ticks(transport)  # every request answered: nothing more is on its way
    assert sim.status()["clients"][0]["mkt_requests"] == 2 * N_SUBS  # connect + one resubscribe
    sim.drop_all()
    assert (await next_event(transport)).state is LinkState.DISCONNECTED
    # a doubled handler would have queued its event in the same emit of disconnectedEvent,
    # before the one above was handed out
    assert drain(transport) == []  # exactly one drop event


async def test_client_id_in_use_fails_fast_with_326(
    sim: GatewaySimulator, transport: SocketTransport
) -> None:
    sim.hold_client_id(17)
    # "already in use at": the 326 cut the attempt short; after ib_async's full timeout the
    # reason would read "already in use (timed out after 3 s ...)"
    with pytest.raises(TransportError, match=r"already in use at 127\.0\.0\.1"):
        await transport.connect()
    event = await next_event(transport)
    assert (event.code, event.state, event.status) == (326, LinkState.DISCONNECTED, "ERROR")
    assert transport.state is LinkState.DISCONNECTED
    sim.release_client_id(17)
    await transport.connect()
    assert transport.state is LinkState.CONNECTED


async def test_refused_and_wrong_account(sim: GatewaySimulator) -> None:
    await sim.refuse(0.5)
    refused = SocketTransport(settings_for(sim.port))
    try:
        with pytest.raises(TransportError, match="refused"):
            await refused.connect()
        assert refused.state is LinkState.DISCONNECTED
    finally:
        await refused.disconnect()
    assert await wait_until(lambda: sim.listening)
    wrong = SocketTransport(settings_for(sim.port, IB_ACCOUNT="U999"))
    try:
        with pytest.raises(TransportError, match="U999"):
            await wrong.connect()
        assert await wait_until(lambda: sim.status()["client_ids"] == [])
    finally:
        await wrong.disconnect()


async def test_1300_and_farm_codes_are_reported(
    sim: GatewaySimulator, connected: SocketTransport
) -> None:
    sim.inject_error(2103)
    event = await next_event(connected)
    assert (event.code, event.status, event.state) == (2103, "WARN", LinkState.CONNECTED)
    sim.inject_error(2104)
    assert (await next_event(connected)).code == 2104
    sim.inject_error(1300)
    event = await next_event(connected)
    assert (event.code, event.state, event.status) == (1300, LinkState.DISCONNECTED, "ERROR")


# ---------------------------------------------------------------- positions follow
async def test_subscriptions_follow_positions(
    sim: GatewaySimulator, connected: SocketTransport
) -> None:
    await snapshot_when(connected, all_greeks)
    sim.set_position(600000022, 0)
    assert await wait_until(lambda: 600000022 not in subs_at_server(sim))
    snap = await connected.snapshot(utcnow())
    assert 600000022 not in {p.con_id for p in snap.positions}
    sim.add_position(
        SimPosition(600000031, "QQQ", "OPT", 7, 320227571, "20270115", 500.0, "C", 100, 2000.0)
    )
    snap = await snapshot_when(
        connected, lambda s: any(p.con_id == 600000031 and p.delta is not None for p in s.positions)
    )
    new = next(p for p in snap.positions if p.con_id == 600000031)
    assert new.quantity == 7 and new.delta is not None and new.subscribed_at is not None
    assert 600000031 in subs_at_server(sim)


async def test_times_come_from_shared_clock(
    monkeypatch: pytest.MonkeyPatch, sim: GatewaySimulator, transport: SocketTransport
) -> None:
    from datetime import UTC

    fixed = datetime(2026, 11, 25, 14, 30, tzinfo=UTC)
    monkeypatch.setattr("shared.clock.utcnow", lambda: fixed)
    await transport.connect()
    snap = await snapshot_when(transport, all_greeks)
    assert {p.subscribed_at for p in snap.positions} == {fixed}
    assert {p.greeks_at for p in options_of(snap)} == {fixed}


async def test_resubscribe_keeps_old_greeks_time_until_new_greeks_arrive(
    sim: GatewaySimulator, connected: SocketTransport
) -> None:
    await snapshot_when(connected, all_greeks)
    sim.set_greeks_mode("absent")  # prices keep ticking, Greeks stop
    await fresh_ticks(connected, rounds=2)  # Greeks sent before the switch have been read
    before = {p.con_id: p.greeks_at for p in options_of(await connected.snapshot(utcnow()))}
    requests_before = sim.status()["clients"][0]["mkt_requests"]
    await sim.reset(0.1, 1102)
    assert await wait_until(
        lambda: sim.status()["clients"][0]["mkt_requests"] == requests_before + N_SUBS
    )
    await fresh_ticks(connected)  # price ticks on the same Ticker objects, after the resubscribe
    snap = await connected.snapshot(utcnow())
    for pos in options_of(snap):
        assert pos.greeks_at == before[pos.con_id]  # not refreshed by a price tick
        assert pos.subscribed_at is not None and pos.greeks_at is not None
        assert pos.subscribed_at > pos.greeks_at
    assert all(p.delta is not None for p in options_of(snap))  # kept, with their age


async def test_quote_greeks_are_read_when_the_gateway_sends_no_model_greeks(
    sim: GatewaySimulator, transport: SocketTransport
) -> None:
    sim.set_greeks_mode("last")
    t = sim.freeze()
    await transport.connect()
    snap = await snapshot_when(transport, all_greeks)
    by_con = sim.portfolio.by_con_id()
    for pos in options_of(snap):
        assert transport.market.subs[pos.con_id].ticker.modelGreeks is None
        assert pos.delta == pytest.approx(sim.portfolio.quote(by_con[pos.con_id], t).delta)

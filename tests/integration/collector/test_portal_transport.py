"""The PORTAL transport against the Client Portal simulator, over real HTTPS."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from collector.greeks import GreeksPolicy
from collector.portal.pacing import Pacer
from collector.portal.session import AccountChoiceError
from collector.portal.transport import PortalTransport
from collector.transport import LinkEvent, LinkState, Snapshot, TransportError
from shared.config import Settings, load_settings
from simulator.portal.server import PortalSimulator
from simulator.portfolio import SimPosition, default_portfolio

FROZEN = 1_795_600_000.0  # a fixed model time (epoch seconds)
ODD = {600000031: 10.0, 600000032: 50.0, 600000033: 1000.0}  # con_id -> multiplier, not 100


@pytest.fixture
async def sim() -> AsyncIterator[PortalSimulator]:
    # minis (10) and adjusted contracts (50, 1000) first among the options: a multiplier read
    # wrong, or the default of 100 taken instead, changes the net Greeks
    portfolio = default_portfolio(extra_options=120, step_s=1.0, odd_multipliers=True)
    async with PortalSimulator(portfolio) as server:
        server.switches.update({"frozen_at": FROZEN})
        yield server


def settings_for(sim: PortalSimulator, **extra: str) -> Settings:
    env = {
        "IB_API_MODE": "PORTAL",
        "IBKR_GATEWAY_URL": sim.url,
        "IBKR_CA_FILE": str(sim.ca_file),
        "IB_CONNECT_TIMEOUT_S": "5",
        # lines for every contract: each streams, as without a budget (rotation: test_portal_lines)
        "IB_MARKET_DATA_LINES": "10000",
    }
    env.update(extra)
    return load_settings(env, dotenv=None)


@pytest.fixture
async def transport(sim: PortalSimulator) -> AsyncIterator[PortalTransport]:
    t = PortalTransport(settings_for(sim))
    try:
        yield t
    finally:
        await t.disconnect()


def drain(t: PortalTransport) -> list[LinkEvent]:
    out = []
    while not t.events.empty():
        out.append(t.events.get_nowait())
    return out


def now() -> datetime:
    return datetime.now(UTC)


def assert_equals_portfolio(sim: PortalSimulator, snap: Snapshot, **policy_kw: object) -> None:
    policy = GreeksPolicy(10, 60, **policy_kw)  # type: ignore[arg-type]
    ev = policy.evaluate(snap, now())
    assert not ev.held and ev.excluded == () and ev.assumed_multiplier == ()
    expected = sim.portfolio.net_greeks(FROZEN)
    row = ev.rows[0]
    assert row.contract == "PORTFOLIO"
    assert row.delta == pytest.approx(expected.delta, rel=1e-9, abs=1e-9)
    assert row.gamma == pytest.approx(expected.gamma, rel=1e-9, abs=1e-12)
    assert row.vega == pytest.approx(expected.vega, rel=1e-9, abs=1e-9)
    assert row.theta == pytest.approx(expected.theta, rel=1e-9, abs=1e-9)


def assert_multipliers(sim: PortalSimulator, snap: Snapshot) -> None:
    """Every option carries its own multiplier, the odd ones included."""
    got = {p.con_id: p.multiplier for p in snap.positions if p.sec_type == "OPT"}
    want = {p.con_id: float(p.multiplier) for p in sim.portfolio.positions if p.is_option}
    assert got == want
    assert {c: got[c] for c in ODD} == ODD


def assert_net_by_hand(sim: PortalSimulator, snap: Snapshot, odd: dict[int, float] = ODD) -> None:
    """The PORTFOLIO row against a sum worked out here with the contracts' multipliers written
    out (10 for the mini, 50 and 1000 for the adjusted ones, 100 for the rest): shares add
    delta, an option quantity x multiplier x its per-share Greek."""
    want = dict.fromkeys(("delta", "gamma", "vega", "theta"), 0.0)
    for pos in sim.portfolio.positions:
        if not pos.is_option:
            want["delta"] += pos.quantity
            continue
        q = sim.portfolio.quote(pos, FROZEN)
        k = pos.quantity * odd.get(pos.con_id, 100)
        for name in want:
            want[name] += k * getattr(q, name)
    ev = GreeksPolicy(10, 60).evaluate(snap, now())
    assert not ev.held and ev.excluded == () and ev.assumed_multiplier == ()
    row = ev.rows[0]
    for name, value in want.items():
        assert getattr(row, name) == pytest.approx(value, rel=1e-9, abs=1e-9), name


async def test_values_equal_the_simulated_portfolio(
    sim: PortalSimulator, transport: PortalTransport
) -> None:
    await transport.connect()
    assert transport.state == LinkState.CONNECTED
    assert transport.account == "DU1234567"
    snap = await transport.snapshot(now())
    assert len(snap.positions) == len(sim.portfolio.positions) > 100  # paged
    assert_equals_portfolio(sim, snap)
    # per underlying, and the underlying price of the largest dollar delta
    ev = GreeksPolicy(10, 60, per_underlying=True).evaluate(snap, now())
    by = {r.contract: r for r in ev.rows}
    for symbol in ("SPY", "QQQ", "AAPL"):
        expected = sim.portfolio.net_greeks(FROZEN, symbol)
        assert by[symbol].delta == pytest.approx(expected.delta, rel=1e-9, abs=1e-9)
        assert by[symbol].underlying_price == sim.portfolio.price(symbol, FROZEN)
    dollar = {s: abs(by[s].delta * sim.portfolio.price(s, FROZEN)) for s in ("SPY", "QQQ", "AAPL")}
    assert by["PORTFOLIO"].underlying_price == sim.portfolio.price(
        max(dollar, key=dollar.get), FROZEN
    )
    stats = sim.stats.as_dict()
    assert stats["counts"]["/portfolio/accounts"] == 1
    assert stats["counts"]["/portfolio/{acct}/positions"] >= 3  # pages 0, 1 and the empty 2


@pytest.mark.parametrize("style", ["401", "302", "no_bridge", "init_session_first", "competing"])
async def test_logged_out_mid_run_then_resume(
    sim: PortalSimulator, transport: PortalTransport, style: str
) -> None:
    await transport.connect()
    await transport.snapshot(now())
    drain(transport)
    if style == "competing":
        sim.switches.update({"competing": True})
    else:
        sim.switches.update({"logout_style": style})
        sim.logout()
    for _ in range(3):
        with pytest.raises(TransportError):
            await transport.snapshot(now())
    assert transport.state == LinkState.UNAUTHENTICATED
    events = drain(transport)
    assert len(events) == 1, events  # reported once, not every tick
    assert events[0].state == LinkState.UNAUTHENTICATED and events[0].reason
    if style == "competing":
        assert "competing" in events[0].reason
        sim.switches.update({"competing": False})
    else:
        sim.login()
    snap = await transport.snapshot(now())  # resumes by itself
    assert transport.state == LinkState.CONNECTED
    assert [e.state for e in drain(transport)] == [LinkState.CONNECTED]
    # the new session re-opens the market data streams: values come on the next call
    snap = await transport.snapshot(now())
    assert_equals_portfolio(sim, snap)


async def test_pacing_keeps_under_the_limits_when_enforced(
    sim: PortalSimulator, transport: PortalTransport
) -> None:
    sim.switches.update({"enforce_pacing": True, "penalty_s": 2.0})
    await transport.connect()
    for _ in range(10):  # ticks as fast as we can, positions refreshed every time
        transport._positions_at = None
        transport._last_tickle = None
        await transport.snapshot(now())
    stats = sim.stats.as_dict()
    assert stats["rate_limited"] == 0
    assert stats["max_per_s"] <= 10
    assert stats["max_per_endpoint_1s"].get("/tickle", 0) <= 1
    assert stats["total"] > 20


async def test_429_backs_off(sim: PortalSimulator) -> None:
    """An impatient client (no pacing) gets a 429; nothing is sent until the back-off ends."""
    sim.switches.update({"enforce_pacing": True})
    fast = Pacer(global_per_s=1000, limits={}, backoff_base_s=0.5, backoff_cap_s=2.0)
    t = PortalTransport(settings_for(sim), pacer=fast)
    try:
        await t.connect()
        got_429 = False
        for _ in range(30):
            t._positions_at = None
            try:
                await t.snapshot(now())
            except TransportError as exc:
                assert "429" in str(exc)
                got_429 = True
                break
        assert got_429 and fast.rate_limited >= 1
        assert fast.blocked_until > time.monotonic()
        before = sim.stats.total
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(t.snapshot(now()), 0.15)
        assert sim.stats.total == before  # held back by the pacer, not sent
        assert t.state == LinkState.CONNECTED  # a 429 is not a lost session
    finally:
        await t.disconnect()


async def test_quirks_secdef_missing_and_late_greeks(
    sim: PortalSimulator, transport: PortalTransport
) -> None:
    sim.switches.update({"no_secdef": 5, "greeks_missing_calls": 2, "quirks": True})
    await transport.connect()  # pre-flight
    before = sim.stats.counts.get("/iserver/marketdata/snapshot", 0)
    snap = await transport.snapshot(now())  # Greeks arrive late: asked again within the tick
    assert sim.stats.counts["/iserver/marketdata/snapshot"] - before >= 2 * 3
    assert_equals_portfolio(sim, snap)
    assert sim.stats.counts.get("/portfolio/{acct}/positions", 0) >= 6  # asked again
    assert_multipliers(sim, snap)  # from the definitions the second asking brought
    assert_net_by_hand(sim, snap)
    # the next tick needs no retry
    before = sim.stats.counts["/iserver/marketdata/snapshot"]
    await transport.snapshot(now())
    assert sim.stats.counts["/iserver/marketdata/snapshot"] - before == 2
    # a mini bought now comes without its definition, and the gateway is not asked again
    # before SECDEF_RETRY_S: its multiplier (10) is read from its contractDesc meanwhile
    mini = SimPosition(600000034, "SPY", "OPT", -9, 756733, "20261218", 590.0, "P", 10, 45.0)
    sim.portfolio.positions.insert(1, mini)
    odd_now = {**ODD, mini.con_id: 10.0}
    transport._positions_at = None
    await transport.snapshot(now())  # starts the refresh, which runs beside the ticks
    for _ in range(200):
        if transport._positions_at is not None:
            break
        await asyncio.sleep(0.05)
    for _ in range(5):  # the new conid's stream opens, its Greeks come late
        snap = await transport.snapshot(now())
        got = {p.con_id: p for p in snap.positions}
        if got[mini.con_id].delta is not None:
            break
    assert got[mini.con_id].multiplier == 10.0
    held = {r.con_id: r for r in transport.book.rows}
    assert not held[mini.con_id].has_secdef  # not asked again: the value is the description's
    assert_multipliers(sim, snap)
    assert_net_by_hand(sim, snap, odd_now)


async def test_greeks_later_than_the_tick_budget_hold_the_tick(sim: PortalSimulator) -> None:
    sim.switches.update({"greeks_missing_calls": 50})
    t = PortalTransport(settings_for(sim, BRIDGE_POLL_INTERVAL_S="0.5"))
    try:
        await t.connect()
        snap = await t.snapshot(now())
        ev = GreeksPolicy(10, 60).evaluate(snap, now())
        assert ev.held and ev.rows == []
        assert len(ev.pending) == sum(1 for p in sim.portfolio.positions if p.is_option)
    finally:
        await t.disconnect()


async def test_gateway_ignoring_page_id_is_not_counted_twice(
    sim: PortalSimulator, transport: PortalTransport
) -> None:
    sim.switches.update({"ignore_page_id": True})
    await transport.connect()
    snap = await transport.snapshot(now())
    assert len(snap.positions) == 100  # page 0 only, once
    assert len({p.con_id for p in snap.positions}) == 100


async def test_secdef_never_comes_multiplier_from_description(
    sim: PortalSimulator, transport: PortalTransport
) -> None:
    sim.switches.update({"no_secdef": 3, "no_secdef_always": True})
    await transport.connect()
    snap = await transport.snapshot(now())
    assert_equals_portfolio(sim, snap)
    assert_multipliers(sim, snap)
    assert_net_by_hand(sim, snap)


async def test_iserver_outage_then_back(sim: PortalSimulator, transport: PortalTransport) -> None:
    await transport.connect()
    await transport.snapshot(now())
    drain(transport)
    sim.switches.update({"iserver_outage": True})
    with pytest.raises(TransportError, match="503"):
        await transport.snapshot(now())
    assert transport.state == LinkState.DISCONNECTED
    sim.switches.update({"iserver_outage": False})
    snap = await transport.snapshot(now())
    assert transport.state == LinkState.CONNECTED
    assert snap.positions


async def test_tls_untrusted_and_skip_verification(sim: PortalSimulator) -> None:
    untrusted = PortalTransport(settings_for(sim, IBKR_CA_FILE=""))
    try:
        with pytest.raises(TransportError, match="IBKR_CA_FILE"):
            await untrusted.connect()
        assert untrusted.state == LinkState.DISCONNECTED
    finally:
        await untrusted.disconnect()
    insecure = PortalTransport(settings_for(sim, IBKR_CA_FILE="", IBKR_TLS_VERIFY="0"))
    try:
        await insecure.connect()
        assert insecure.state == LinkState.CONNECTED
    finally:
        await insecure.disconnect()


async def test_several_accounts_need_ib_account(sim: PortalSimulator) -> None:
    sim.switches.update({"extra_accounts": ["DU7654321"]})
    t = PortalTransport(settings_for(sim))
    try:
        with pytest.raises(AccountChoiceError, match=r"IB_ACCOUNT must name one of .*DU7654321"):
            await t.connect()
    finally:
        await t.disconnect()
    chosen = PortalTransport(settings_for(sim, IB_ACCOUNT="DU1234567"))
    try:
        await chosen.connect()
        assert chosen.state == LinkState.CONNECTED and chosen.account == "DU1234567"
    finally:
        await chosen.disconnect()


async def test_account_must_be_offered(sim: PortalSimulator) -> None:
    t = PortalTransport(settings_for(sim, IB_ACCOUNT="U999"))
    try:
        with pytest.raises(AccountChoiceError, match="IB_ACCOUNT=U999"):
            await t.connect()
        assert t.state == LinkState.DISCONNECTED
        before = sim.stats.total
        with pytest.raises(TransportError, match="not connected"):
            await t.snapshot(now())  # no probing on a configuration error
        assert sim.stats.total == before
    finally:
        await t.disconnect()


async def test_reauth_and_deliberate_disconnect(
    sim: PortalSimulator, transport: PortalTransport
) -> None:
    await transport.connect()
    sim.switches.update({"competing": True})
    with pytest.raises(TransportError):
        await transport.snapshot(now())
    await transport.reauthenticate()  # ssodh/init takes the session back
    assert transport.state == LinkState.CONNECTED
    drain(transport)
    await transport.disconnect()
    assert drain(transport) == []  # deliberate: not reported as a drop
    with pytest.raises(TransportError, match="not connected"):
        await transport.snapshot(now())


async def test_slow_gateway_ticks_still_produce(sim: PortalSimulator) -> None:
    """Answers take 0.35 s: the positions refresh (3 pages) runs beside the ticks, so 1 s ticks
    still get their Greeks instead of restarting the refresh and overrunning forever."""
    from collector.ticker import GridTicker

    t = PortalTransport(settings_for(sim, BRIDGE_POLL_INTERVAL_S="1"))
    try:
        await t.connect()
        sim.switches.update({"slow_s": 0.35})
        results: list[bool] = []

        async def on_tick(ts: datetime) -> None:
            snap = await t.snapshot(ts)
            assert_equals_portfolio(sim, snap)
            results.append(True)

        ticker = GridTicker(1.0, max_ticks=6)
        await ticker.run(on_tick, asyncio.Event())
        assert len(results) >= 5, (results, ticker.overruns)
        assert sim.stats.counts["/portfolio/{acct}/positions"] > 3  # a refresh ran meanwhile
    finally:
        await t.disconnect()


async def test_other_gateways_get_only_auth_and_no_invalidate(
    sim: PortalSimulator, transport: PortalTransport
) -> None:
    sim.switches.update({"auth_get_only": True, "no_invalidate": True, "no_secdef": 2})
    await transport.connect()
    assert transport.state == LinkState.CONNECTED
    snap = await transport.snapshot(now())
    assert_equals_portfolio(sim, snap)  # multipliers read from contractDesc
    assert_multipliers(sim, snap)
    assert_net_by_hand(sim, snap)


async def test_minimal_gateway_without_optional_endpoints(sim: PortalSimulator) -> None:
    """A stand-in without /iserver/accounts, /portfolio/accounts or the summary still works
    (IB_ACCOUNT given); an auth status without `connected` is not a reason to stop."""
    sim.switches.update(
        {
            "require_prerequisites": False,
            "missing_endpoints": [
                "/iserver/accounts",
                "/portfolio/accounts",
                "/portfolio/DU1234567/summary",
            ],
        }
    )
    t = PortalTransport(settings_for(sim, IB_ACCOUNT="DU1234567"))
    try:
        await t.connect()
        assert t.state == LinkState.CONNECTED
        snap = await t.snapshot(now())
        assert_equals_portfolio(sim, snap)
    finally:
        await t.disconnect()


async def test_empty_preflight(sim: PortalSimulator, transport: PortalTransport) -> None:
    sim.switches.update({"empty_preflight": True})
    await transport.connect()  # the pre-flight answers [] for every conid
    snap = await transport.snapshot(now())
    assert_equals_portfolio(sim, snap)


async def test_large_account_comes_up_even_when_connect_is_cut() -> None:
    """900 positions (9 pages, 10 snapshot calls a tick): a connect cut by its timeout does not
    make every later tick start the positions over; rows come within a few ticks."""
    from collector.ticker import GridTicker

    async with PortalSimulator(default_portfolio(extra_options=900)) as big:
        big.switches.update({"frozen_at": FROZEN})
        t = PortalTransport(settings_for(big, BRIDGE_POLL_INTERVAL_S="2"))
        try:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(t.connect(), 0.3)
            produced: list[bool] = []

            async def on_tick(ts: datetime) -> None:
                snap = await t.snapshot(ts)
                ev = GreeksPolicy(10, 60).evaluate(snap, ts)
                if ev.rows:
                    assert ev.rows[0].delta == pytest.approx(
                        big.portfolio.net_greeks(FROZEN).delta, rel=1e-9
                    )
                    produced.append(True)

            await GridTicker(2.0, max_ticks=4).run(on_tick, asyncio.Event())
            assert len(produced) >= 2
            assert big.stats.counts["/portfolio/{acct}/positions"] <= 2 * 10  # not restarted
        finally:
            await t.disconnect()

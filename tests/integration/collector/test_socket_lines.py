"""Market-data lines on a real socket: a book larger than the account's lines, a gateway limit
lower than the budget, silent feeds and the gateway's data errors (ib_async 2.1 against the IB
Gateway simulator; the expected Greeks come from the simulator's model, not from the bridge)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from collector.greeks import Evaluation, GreeksPolicy
from collector.socket.transport import SocketTransport
from collector.transport import LinkEvent, LinkState, TransportError
from shared.clock import utcnow
from shared.config import load_settings
from simulator.book import generate_book
from simulator.gateway import GatewaySimulator
from simulator.gateway.control import execute
from simulator.portfolio import SimPortfolio, default_portfolio

ACCOUNT = "DU1234567"


def expected(book: SimPortfolio, skip: frozenset[int] = frozenset()) -> tuple[float, ...]:
    net = [0.0, 0.0, 0.0, 0.0]
    for pos in book.positions:
        if pos.con_id in skip:
            continue
        if pos.is_option:
            q = book.quote_at_step(pos, 0)
            k = pos.quantity * pos.multiplier
            for i, g in enumerate((q.delta, q.gamma, q.vega, q.theta)):
                net[i] += k * g
        else:
            net[0] += pos.quantity
    return tuple(net)


def row_of(ev: Evaluation) -> tuple[float, ...]:
    r = ev.rows[0]
    return (r.delta, r.gamma, r.vega, r.theta)


@asynccontextmanager
async def bridge(
    book: SimPortfolio, sim_lines: int | None, **env: str
) -> AsyncIterator[tuple[GatewaySimulator, SocketTransport]]:
    async with GatewaySimulator(book, lines=sim_lines, push_interval_s=0.25) as sim:
        settings = load_settings(
            {
                "IB_HOST": "127.0.0.1",
                "IB_PORT": str(sim.port),
                "IB_CLIENT_ID": "5",
                "IB_ACCOUNT": ACCOUNT,
                "IB_MARKET_DATA_TYPE": "LIVE",
                **env,
            },
            dotenv=None,
        )
        t = SocketTransport(settings)
        await t.connect()
        try:
            yield sim, t
        finally:
            await t.disconnect()


def events(t: SocketTransport) -> list[LinkEvent]:
    out = []
    while not t.events.empty():
        out.append(t.events.get_nowait())
    return out


async def rows_for(
    t: SocketTransport,
    policy: GreeksPolicy,
    seconds: float,
    *,
    until: Callable[[Evaluation], bool] | None = None,
) -> list[Evaluation]:
    """Evaluate a tick every 0.5 s for `seconds` (or until `until` holds); the ticks with rows."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    out: list[Evaluation] = []
    while loop.time() < end:
        now = utcnow()
        ev = policy.evaluate(await t.snapshot(now), now)
        if ev.rows:
            out.append(ev)
            if until is not None and until(ev):
                break
        await asyncio.sleep(0.5)
    return out


async def test_a_book_beyond_the_lines_rotates_and_every_row_is_the_whole_book() -> None:
    book = generate_book(150, 12, seed=7, account=ACCOUNT, step_s=0)
    want = expected(book)
    async with bridge(book, 30, IB_MARKET_DATA_LINES="30", BRIDGE_POLL_INTERVAL_S="1") as (sim, t):
        policy = GreeksPolicy(grace_s=30.0, max_age_s=60.0)
        first = await rows_for(t, policy, 40, until=lambda ev: True)
        assert first, "no complete row within 40 s"
        rows = await rows_for(t, policy, 12)
        lines = sim.status()["lines"]
        status = t.status()
    assert len(rows) >= 10
    for ev in first + rows:
        assert not ev.excluded and not ev.pending
        assert row_of(ev) == pytest.approx(want, rel=1e-9, abs=1e-9)
    assert lines["max_open"] <= 30 and lines["refused"] == 0
    assert lines["cancels"] > 0  # it rotated: lines were given back and reused
    assert status["rotating"] == "1" and int(status["lines_in_use"]) <= 30
    assert status["lines_wanted"] == str(
        len({p.con_id for p in book.positions} | {u.con_id for u in book.underlyings.values()})
    )


async def test_every_contract_is_refreshed_within_the_max_age_while_rotating() -> None:
    book = generate_book(150, 12, seed=11, account=ACCOUNT, step_s=0)
    async with bridge(book, 30, IB_MARKET_DATA_LINES="30", BRIDGE_POLL_INTERVAL_S="1") as (_, t):
        policy = GreeksPolicy(grace_s=30.0, max_age_s=60.0)
        await rows_for(t, policy, 40, until=lambda ev: True)
        await asyncio.sleep(8)
        now = utcnow()
        snap = await t.snapshot(now)
    ages = [(now - p.greeks_at).total_seconds() for p in snap.positions if p.sec_type == "OPT"]
    assert all(p.greeks_at is not None for p in snap.positions if p.sec_type == "OPT")
    assert max(ages) < 20.0  # one rotation (~8 s at 20 requests/s) plus the 1 s refresh floor


async def test_a_lower_limit_at_the_gateway_lowers_the_budget_with_few_refusals() -> None:
    # 26 legs and 4 underlyings fit the budget of 30, not the gateway's 20: it must rotate
    book = generate_book(26, 4, seed=7, account=ACCOUNT, step_s=0)
    want = expected(book)
    async with bridge(book, 20, IB_MARKET_DATA_LINES="30", BRIDGE_POLL_INTERVAL_S="1") as (sim, t):
        policy = GreeksPolicy(grace_s=30.0, max_age_s=60.0)
        assert await rows_for(t, policy, 40, until=lambda ev: True)
        rows = await rows_for(t, policy, 10)
        lines = sim.status()["lines"]
        seen = events(t)
    for ev in rows:
        assert not ev.excluded
        assert row_of(ev) == pytest.approx(want, rel=1e-9, abs=1e-9)
    assert 0 < lines["refused"] < 10
    assert lines["max_open"] <= 20
    lowered = [e for e in seen if e.code == 101]
    assert len(lowered) == 1 and lowered[0].status == "WARN"
    assert "lowered from 30 to" in lowered[0].reason
    assert t.status()["rotating"] == "1"


async def wait_event(t: SocketTransport, cond: Callable[[LinkEvent], bool], s: float) -> LinkEvent:
    loop = asyncio.get_running_loop()
    end = loop.time() + s
    while loop.time() < end:
        try:
            event = await asyncio.wait_for(t.events.get(), max(0.01, end - loop.time()))
        except TimeoutError:
            break
        if cond(event):
            return event
    raise AssertionError("the expected event did not come")


@pytest.mark.parametrize("farm", [False, True])
async def test_a_silent_stall_is_revived_and_rows_stay_complete(farm: bool) -> None:
    book = default_portfolio(ACCOUNT, step_s=0)
    want = expected(book)
    stall_s = "30" if farm else "2"  # with the farm's messages no waiting for the threshold
    async with bridge(book, None, BRIDGE_FEED_STALL_S=stall_s) as (sim, t):
        policy = GreeksPolicy(grace_s=10.0, max_age_s=60.0)
        assert await rows_for(t, policy, 10, until=lambda ev: True)
        requests = sim.status()["lines"]["requests"]
        await execute(sim, "stall on farm" if farm else "stall on")
        stalled_at = utcnow()
        revived = await wait_event(t, lambda e: "revived" in e.reason, 15)
        assert revived.status == "WARN"
        assert sim.status()["lines"]["requests"] > requests

        def all_fresh(ev: Evaluation) -> bool:  # only a new request gets data after the stall
            return all(
                p.greeks_at is not None and p.greeks_at > stalled_at
                for p in snap_of[0].positions
                if p.sec_type == "OPT"
            )

        snap_of = [await t.snapshot(utcnow())]
        loop = asyncio.get_running_loop()
        end = loop.time() + 10
        while not all_fresh(Evaluation([], False)) and loop.time() < end:
            await asyncio.sleep(0.2)
            snap_of[0] = await t.snapshot(utcnow())
        assert all_fresh(Evaluation([], False)), "some stalled feed was never revived"
        rows = await rows_for(t, policy, 5, until=lambda ev: True)
        assert t.state is LinkState.CONNECTED  # revived on the same socket
    assert rows and not rows[-1].excluded
    assert row_of(rows[-1]) == pytest.approx(want, rel=1e-9, abs=1e-9)


LEG = 600000001  # a SPY call of the default book


@pytest.mark.parametrize(
    ("code", "on"),
    [(354, f"data-error 354 {LEG}"), (10090, f"data-error 10090 {LEG}"), (200, f"expire {LEG}")],
)
async def test_a_data_error_is_one_audit_row_and_never_a_wrong_number(code: int, on: str) -> None:
    book = default_portfolio(ACCOUNT, step_s=0)
    full, without = expected(book), expected(book, frozenset({LEG}))
    async with bridge(book, None) as (sim, t):
        policy = GreeksPolicy(grace_s=2.0, max_age_s=3.0)
        assert await rows_for(t, policy, 10, until=lambda ev: not ev.excluded)
        events(t)
        await execute(sim, on)
        audit = await wait_event(t, lambda e: e.code == code, 5)
        requests = sim.status()["lines"]["requests"]
        rows = await rows_for(t, policy, 6)
        seen = events(t)
        requests_after = sim.status()["lines"]["requests"]
    assert audit.status == "WARN" and "SPY 20261218 600 C" in audit.reason
    assert [e.code for e in seen].count(code) == 0  # one row per change, not one per tick
    for ev in rows:  # carried while young enough, then left out and named: never anything else
        if ev.excluded:
            assert ev.excluded == ("SPY 20261218 600 C",)
            assert row_of(ev) == pytest.approx(without, rel=1e-9, abs=1e-9)
        else:
            assert row_of(ev) == pytest.approx(full, rel=1e-9, abs=1e-9)
    assert rows[-1].excluded  # 6 s > the 3 s max age
    if code != 10090:  # the request ended: not made again every tick
        assert requests_after == requests


async def test_a_competing_session_stops_the_rows_and_they_resume_when_it_ends() -> None:
    book = default_portfolio(ACCOUNT, step_s=0)
    full = expected(book)
    async with bridge(book, None) as (sim, t):
        policy = GreeksPolicy(grace_s=2.0, max_age_s=3.0)
        assert await rows_for(t, policy, 10, until=lambda ev: not ev.excluded)
        events(t)
        await execute(sim, "compete on")
        audit = await wait_event(t, lambda e: e.code == 10197, 5)
        await asyncio.sleep(4)  # past the max age: every leg's Greeks too old
        now = utcnow()
        gone = policy.evaluate(await t.snapshot(now), now)
        await execute(sim, "compete off")
        back = await wait_event(t, lambda e: e.code == 10197, 5)
        rows = await rows_for(t, policy, 5, until=lambda ev: not ev.excluded)
    assert audit.status == "WARN" and "competing live session" in audit.reason
    assert gone.rows == [] and gone.held  # no row rather than a wrong one
    assert back.status == "INFO" and "flows again" in back.reason
    assert rows and not rows[-1].excluded
    assert row_of(rows[-1]) == pytest.approx(full, rel=1e-9, abs=1e-9)


async def test_a_rotation_that_cannot_fit_the_max_age_is_one_error_naming_the_numbers() -> None:
    book = generate_book(150, 12, seed=7, account=ACCOUNT, step_s=0)
    env = {
        "IB_MARKET_DATA_LINES": "3",
        "BRIDGE_GREEKS_MAX_AGE_S": "5",
        "BRIDGE_POLL_INTERVAL_S": "1",
    }
    async with bridge(book, None, **env) as (_, t):
        error = await wait_event(t, lambda e: e.status == "ERROR", 10)
        await asyncio.sleep(2)  # more pumps: the same state is not told again
        again = [e for e in events(t) if e.status == "ERROR"]
    assert "IB_MARKET_DATA_LINES=3" in error.reason and "BRIDGE_GREEKS_MAX_AGE_S=5" in error.reason
    wanted = int(error.reason.split(" contracts need market data")[0])
    assert wanted >= 150  # the legs, and the underlyings found so far
    assert again == []


async def test_a_rotation_task_that_died_is_reported_by_the_next_snapshot() -> None:
    """A bug that ends the lines' task must not leave rows silently stale: the tick says so."""
    async with bridge(default_portfolio(ACCOUNT, step_s=0), None) as (_, t):
        assert await rows_for(t, GreeksPolicy(10.0, 60.0), 10, until=lambda ev: True)
        pump = t._pump
        assert pump is not None
        pump.cancel()
        with pytest.raises(TransportError, match="market data rotation stopped: cancelled"):
            for _ in range(50):
                await asyncio.sleep(0.02)
                await t.snapshot(utcnow())

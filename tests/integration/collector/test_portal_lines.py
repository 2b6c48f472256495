"""PORTAL market-data lines against the Client Portal simulator, over real HTTPS: a book larger
than IB_MARKET_DATA_LINES rotates within it, a gateway with fewer lines than the budget, a
rotation too slow for the Greeks' age limit, contracts without a market-data subscription, an
expired contract, and streams that stall.

Expected values come from the simulator's book (`SimPortfolio`), never from the bridge."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from collector.greeks import Evaluation, GreeksPolicy
from collector.portal.transport import PortalTransport
from collector.transport import LinkEvent, Snapshot
from shared.config import load_settings
from simulator.book import generate_book
from simulator.portal.server import PortalSimulator
from simulator.portfolio import NetGreeks, SimPortfolio, default_portfolio

FROZEN = 1_795_600_000.0  # a fixed model time: the values a row must equal do not move
BOOK = (60, 5, 11)  # 60 option legs over 5 underlyings: 65 conids to price


@asynccontextmanager
async def simulator(portfolio: SimPortfolio, **switches: object) -> AsyncIterator[PortalSimulator]:
    async with PortalSimulator(portfolio) as sim:
        sim.switches.update({"frozen_at": FROZEN, "enforce_pacing": True, **switches})
        yield sim


@asynccontextmanager
async def transport(sim: PortalSimulator, **env: str) -> AsyncIterator[PortalTransport]:
    values = {
        "IB_API_MODE": "PORTAL",
        "IBKR_GATEWAY_URL": sim.url,
        "IBKR_CA_FILE": str(sim.ca_file),
        "IB_CONNECT_TIMEOUT_S": "5",
        "BRIDGE_POLL_INTERVAL_S": "1",
        **env,
    }
    t = PortalTransport(load_settings(values, dotenv=None))
    try:
        await t.connect()
        yield t
    finally:
        await t.disconnect()


@dataclass
class Run:
    snaps: list[tuple[Snapshot, Evaluation]] = field(default_factory=list)
    events: list[LinkEvent] = field(default_factory=list)

    @property
    def rows(self) -> list[tuple[Snapshot, Evaluation]]:
        return [(s, e) for s, e in self.snaps if e.rows]

    def said(self, status: str, text: str) -> list[str]:
        return [e.reason for e in self.events if e.status == status and text in e.reason]


async def ticks(
    t: PortalTransport,
    policy: GreeksPolicy,
    run: Run,
    *,
    until: Callable[[Run], bool],
    limit: int = 60,
    interval_s: float = 0.5,
) -> Run:
    """Ticks every `interval_s` until `until(run)` holds (at most `limit` ticks)."""
    for _ in range(limit):
        ts = datetime.now(UTC)
        snap = await t.snapshot(ts)
        run.snaps.append((snap, policy.evaluate(snap, ts)))
        while not t.events.empty():
            run.events.append(t.events.get_nowait())
        if until(run):
            return run
        await asyncio.sleep(interval_s)
    raise AssertionError(f"not reached in {limit} ticks: {[e.reason for e in run.events]}")


def more(run: Run, n: int) -> Callable[[Run], bool]:
    """Until `n` more ticks have run."""
    target = len(run.snaps) + n
    return lambda r: len(r.snaps) >= target


def net_without(sim: PortalSimulator, skip: set[int]) -> NetGreeks:
    """The book's net Greeks by hand, leaving the `skip` positions out."""
    d = g = v = th = 0.0
    for pos in sim.portfolio.positions:
        if pos.con_id in skip:
            continue
        if not pos.is_option:
            d += pos.quantity
            continue
        q = sim.portfolio.quote(pos, FROZEN)
        k = pos.quantity * pos.multiplier
        d, g, v, th = d + k * q.delta, g + k * q.gamma, v + k * q.vega, th + k * q.theta
    return NetGreeks(d, g, v, th)


def assert_rows_equal(sim: PortalSimulator, run: Run) -> None:
    """Every row equals the book's net Greeks without the positions it names as excluded."""
    assert run.rows
    for snap, ev in run.rows:
        excluded = {p.con_id for p in snap.positions if p.description in ev.excluded}
        want = net_without(sim, excluded) if excluded else sim.portfolio.net_greeks(FROZEN)
        row = ev.rows[0]
        for name in ("delta", "gamma", "vega", "theta"):
            got, expected = getattr(row, name), getattr(want, name)
            assert got == pytest.approx(expected, rel=1e-9, abs=1e-9), (name, ev.excluded)


def wanted(sim: PortalSimulator) -> set[int]:
    return {p.con_id for p in sim.portfolio.positions if p.is_option} | {
        u.con_id for u in sim.portfolio.underlyings.values()
    }


async def test_a_book_beyond_the_budget_rotates_within_the_lines() -> None:
    async with (
        simulator(generate_book(*BOOK), line_limit=15) as sim,
        transport(sim, IB_MARKET_DATA_LINES="15") as t,
    ):
        run = await ticks(
            t, GreeksPolicy(10, 60), Run(), until=lambda r: len(r.rows) >= 8, interval_s=1.0
        )
        assert_rows_equal(sim, run)
        assert not any(ev.excluded for _, ev in run.rows)
        # between its turns a contract's last Greeks are used, never older than the age limit
        ages = [
            (snap.taken_at - p.greeks_at).total_seconds()
            for snap, _ in run.rows
            for p in snap.positions
            if p.greeks_at is not None
        ]
        assert 1.0 < max(ages) <= 60
        stats = sim.stats
        assert len(wanted(sim)) == 65
        assert 0 < stats.max_streams <= 15
        assert stats.line_refusals == 0
        assert stats.rate_limited == 0 and t.client.pacer.rate_limited == 0
        assert stats.unsubscribed >= len(wanted(sim))  # every line given back at least once
        status = t.status()
        assert status["rotating"] == "true"
        assert (status["lines_budget"], status["lines_working"]) == ("15", "15")
        assert int(status["lines_in_use"]) <= 15
        assert 0 < float(status["rotation_s"]) <= 60
        assert status["market_data"] == "LIVE"
        assert len(run.said("INFO", "market data rotating")) == 1
        assert not run.said("ERROR", "")


async def test_a_gateway_with_fewer_lines_costs_few_refusals() -> None:
    async with (
        simulator(generate_book(*BOOK), line_limit=10) as sim,
        transport(sim, IB_MARKET_DATA_LINES="15") as t,
    ):
        run = await ticks(
            t, GreeksPolicy(10, 60), Run(), until=lambda r: len(r.rows) >= 6, interval_s=1.0
        )
        assert_rows_equal(sim, run)
        assert not any(ev.excluded for _, ev in run.rows)
        assert 0 < sim.stats.line_refusals <= 5  # the first turn's requests beyond 10
        assert sim.stats.max_streams <= 10
        assert sim.stats.rate_limited == 0
        assert t.status()["lines_working"] == "10"
        refused = run.said("WARN", "refused")
        assert len(refused) == 1 and "working budget now 10 of 15" in refused[0]


async def test_a_rotation_slower_than_the_age_limit_is_said_once() -> None:
    async with (
        simulator(generate_book(*BOOK)) as sim,
        transport(sim, IB_MARKET_DATA_LINES="2", BRIDGE_GREEKS_MAX_AGE_S="5") as t,
    ):
        policy = GreeksPolicy(10, 5)
        run = await ticks(t, policy, Run(), until=lambda r: bool(r.said("ERROR", "")))
        await ticks(t, policy, run, until=lambda r: len(r.snaps) >= 10)
        errors = run.said("ERROR", "")
        assert len(errors) == 1, errors
        assert "65 contracts over 2 line(s)" in errors[0]
        assert "IB_MARKET_DATA_LINES" in errors[0] and "BRIDGE_GREEKS_MAX_AGE_S=5" in errors[0]
        assert sim.stats.max_streams <= 2


async def test_contracts_without_market_data_are_said_once_per_change() -> None:
    first = {"600000001": "N", "600000012": "N"}
    async with (
        simulator(default_portfolio(), availability=first) as sim,
        transport(sim, IB_MARKET_DATA_LINES="100") as t,
    ):
        policy = GreeksPolicy(1, 2)
        both = {600000001, 600000012}

        def excluded(n: int) -> Callable[[Run], bool]:
            return lambda r: bool(r.rows) and len(r.rows[-1][1].excluded) == n

        run = await ticks(t, policy, Run(), until=excluded(2))
        await ticks(t, policy, run, until=more(run, 4))
        said = run.said("WARN", "not subscribed")
        assert len(said) == 1, said
        assert all(str(c) in said[0] for c in both)
        assert "BRIDGE_GREEKS_MAX_AGE_S" in said[0]
        assert sim.stats.unsubscribed >= 2  # their streams were given back
        # one more, and an underlying delayed: a second row, with all three
        sim.switches.update({"availability": {**first, "600000021": "N", "756733": "D"}})
        await ticks(t, policy, run, until=excluded(3))
        await ticks(t, policy, run, until=more(run, 4))
        said = run.said("WARN", "not subscribed")
        assert len(said) == 2 and "600000021" in said[1]
        assert_rows_equal(sim, run)  # never a made-up number: the three are left out, named
        assert t.status()["market_data"] == "DELAYED,LIVE,NOT_SUBSCRIBED"


async def test_an_expired_contract_is_dropped_not_asked_every_tick() -> None:
    gone = 600000021
    async with (
        simulator(default_portfolio(), expired_conids=[gone]) as sim,
        transport(sim, IB_MARKET_DATA_LINES="100") as t,
    ):
        policy = GreeksPolicy(1, 60)
        run = await ticks(t, policy, Run(), until=lambda r: bool(r.rows))
        asked = sim.stats.conid_requests[gone]
        await ticks(t, policy, run, until=lambda r: len(r.snaps) >= 8)
        assert sim.stats.conid_requests[gone] == asked == 1
        said = run.said("WARN", "does not know")
        assert len(said) == 1 and str(gone) in said[0]
        assert_rows_equal(sim, run)
        assert all(len(ev.excluded) == 1 for _, ev in run.rows)


async def test_stalled_streams_are_reopened_and_rows_stay_complete() -> None:
    async with (
        simulator(default_portfolio()) as sim,
        transport(sim, IB_MARKET_DATA_LINES="100", BRIDGE_FEED_STALL_S="1") as t,
    ):
        policy = GreeksPolicy(10, 60)
        run = await ticks(t, policy, Run(), until=lambda r: len(r.rows) >= 2)
        sim.switches.update({"stall_at": True})
        start = len(run.snaps)
        stall_at = sim.switches.stall_at
        assert stall_at is not None
        await ticks(t, policy, run, until=lambda r: bool(r.said("WARN", "silent")))
        await ticks(t, policy, run, until=more(run, 8))
        said = run.said("WARN", "silent")
        assert len(said) == 1, said  # one row per revival round, and one round sufficed
        assert "9 live contract(s)" in said[0]
        streams = sim.session.streams.open
        assert set(streams) == wanted(sim)
        assert all(s.opened_at > stall_at for s in streams.values())  # opened again
        assert all(ev.rows for _, ev in run.snaps[start:])  # a row every tick, through the stall
        assert_rows_equal(sim, run)
        assert not any(ev.excluded for _, ev in run.rows)

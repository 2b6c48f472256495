"""The line schedule (pure): contracts, budget and `now` in; requests and cancels out.

A tiny model gateway answers the plan: it holds the lines it granted, refuses above its own
limit with 101, and delivers each granted request's data `latency` seconds later."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from collector.lines.budget import WorkingBudget
from collector.lines.schedule import GRANT_S, LineSchedule, Plan


@dataclass
class ModelGateway:
    limit: int
    latency: float = 0.3
    open: dict[int, float] = field(default_factory=dict)  # key -> requested at
    refused: int = 0
    max_open: int = 0
    silent: set[int] = field(default_factory=set)  # keys that never deliver

    def apply(self, sched: LineSchedule[int], plan: Plan[int], now: float) -> None:
        for key in plan.cancel:
            assert key in self.open, f"cancelled {key}, which was never granted"
            del self.open[key]
        for key in plan.request:
            assert key not in self.open, f"requested {key} twice"
            if len(self.open) >= self.limit:
                self.refused += 1
                sched.refused(key, now)
            else:
                self.open[key] = now
        self.max_open = max(self.max_open, len(self.open))

    def deliver(self, sched: LineSchedule[int], now: float) -> None:
        for key, at in self.open.items():
            if now - at >= self.latency and key not in self.silent:
                sched.delivered(key, now)


def run(
    sched: LineSchedule[int], gw: ModelGateway, wanted: list[int], seconds: float, step: float = 0.1
) -> dict[int, float]:
    """Drive the schedule; the worst age of any contract's data seen after the first rotation."""
    worst: dict[int, float] = {}
    now = 1000.0
    end = now + seconds
    while now < end:
        gw.apply(sched, sched.plan(wanted, now), now)
        gw.deliver(sched, now)
        if now > 1000.0 + 30:
            for key in wanted:
                age = now - sched.refreshed.get(key, -1e9)
                worst[key] = max(worst.get(key, 0.0), age)
        now = round(now + step, 6)
    return worst


def schedule(budget: int, refresh_s: float = 5.0) -> LineSchedule[int]:
    return LineSchedule(WorkingBudget(budget), refresh_s=refresh_s)


def test_a_book_within_the_budget_streams_every_contract_and_never_cancels() -> None:
    sched, gw = schedule(40), ModelGateway(limit=100)
    wanted = list(range(25))
    run(sched, gw, wanted, 20)
    assert sorted(gw.open) == wanted
    assert not sched.rotating
    assert sched.stats(2000.0).rotation_s == 0


def test_a_book_beyond_the_budget_rotates_within_it_and_keeps_every_contract_fresh() -> None:
    sched, gw = schedule(30), ModelGateway(limit=1000)
    wanted = list(range(150))
    worst = run(sched, gw, wanted, 120)
    assert gw.max_open <= 30
    assert sched.rotating
    assert set(worst) == set(wanted)
    # every contract is refreshed every refresh_s plus one pass of the queue
    assert max(worst.values()) < 5.0 + 150 / 20 + 1
    stats = sched.stats(1120.0)
    assert stats.rotating and stats.wanted == 150 and stats.in_use <= 30
    assert stats.fits(60.0)
    assert not stats.fits(1.0)


def test_unwanted_contracts_are_cancelled_and_forgotten() -> None:
    sched, gw = schedule(10), ModelGateway(limit=100)
    run(sched, gw, [1, 2, 3], 5)
    plan = sched.plan([1, 3], 2000.0)
    assert plan.cancel == (2,)
    assert 2 not in sched.refreshed


def test_a_lower_limit_at_the_gateway_costs_few_refusals_and_the_rows_stay_fresh() -> None:
    sched, gw = schedule(30), ModelGateway(limit=20, latency=2.0)
    wanted = list(range(150))
    worst = run(sched, gw, wanted, 600)
    assert gw.max_open <= 20
    assert 0 < gw.refused < 10
    assert sched.budget.value <= 20
    assert max(worst.values()) < 60


def test_lowered_budget_is_probed_back_up_when_the_gateway_has_room_again() -> None:
    sched, gw = schedule(30), ModelGateway(limit=20, latency=2.0)
    wanted = list(range(150))
    run(sched, gw, wanted, 30)
    assert sched.budget.value <= 20
    gw.limit = 30  # the trader closed some screens
    run(sched, gw, wanted, 1200)
    assert sched.budget.value == 30


def test_a_silent_request_gives_its_line_back_after_the_dwell_and_waits_its_turn() -> None:
    sched, gw = schedule(5), ModelGateway(limit=100, silent={0})
    wanted = list(range(20))
    run(sched, gw, wanted, 30)
    assert 0 not in sched.refreshed
    assert all(k in sched.refreshed for k in wanted[1:])
    # the silent one was tried again after others, not held for ever
    assert gw.max_open <= 5


def test_a_failed_request_is_not_retried_before_its_retry_time() -> None:
    sched = schedule(10)
    plan = sched.plan([1, 2], 0.0)
    assert set(plan.request) == {1, 2}
    sched.failed(1, 0.1, retry_s=60.0)
    assert 1 not in sched.held
    assert sched.plan([1, 2], 30.0).request == ()
    assert sched.plan([1, 2], 60.2).request == (1,)


def test_no_more_than_max_pending_requests_wait_unproven() -> None:
    sched = schedule(40)
    first = sched.plan(list(range(40)), 0.0)
    assert len(first.request) == 5  # nothing proven yet
    assert sched.plan(list(range(40)), 0.1).request == ()
    sched.delivered(first.request[-1], 0.2)  # the last one answered: all earlier were granted
    assert len(sched.plan(list(range(40)), 0.3).request) == 5
    assert sched.proven == 5


def test_unanswered_requests_count_as_granted_when_no_refusal_came_in_time() -> None:
    sched = schedule(40)
    sched.plan(list(range(40)), 0.0)
    assert not sched.plan(list(range(40)), GRANT_S - 0.1).request
    assert sched.plan(list(range(40)), GRANT_S + 0.1).request  # no refusal came: granted
    assert sched.proven == 5


def test_requests_are_paced() -> None:
    sched = LineSchedule(WorkingBudget(1000), refresh_s=5.0, max_pending=1000, rate_per_s=20)
    assert len(sched.plan(list(range(500)), 0.0).request) == 20
    assert len(sched.plan(list(range(500)), 0.5).request) == 10


def test_a_revived_feed_is_cancelled_and_requested_again_first() -> None:
    sched = schedule(5)
    sched.plan([1, 2, 3], 0.0)
    for key in (1, 2, 3):
        sched.delivered(key, 0.1)
    sched.revive(2)
    sched.revive(9)  # not held: nothing happens
    plan = sched.plan([1, 2, 3], 50.0)
    assert plan.cancel == (2,) and plan.request == (2,)
    assert not sched.held[2].answered and sched.held[2].requested_at == 50.0
    assert sched.plan([1, 2, 3], 51.0) == Plan()


def test_forget_holds_nothing() -> None:
    sched = schedule(5)
    sched.plan([1, 2], 0.0)
    sched.forget()
    assert sched.held == {} and sched.proven == 0
    assert set(sched.plan([1, 2], 0.1).request) == {1, 2}


def test_stats_oldest_age_only_once_every_contract_has_data() -> None:
    sched = schedule(5)
    sched.plan([1, 2], 0.0)
    sched.delivered(1, 1.0)
    assert sched.stats(2.0).oldest_s is None
    sched.delivered(2, 1.5)
    assert sched.stats(3.0).oldest_s == pytest.approx(2.0)


class TestWorkingBudget:
    def test_refusal_lowers_to_what_is_held(self) -> None:
        b = WorkingBudget(30)
        assert b.refused(holding=20, now=0.0)
        assert b.value == 20 and b.lowered
        assert not b.refused(holding=20, now=0.1)  # the same burst: not lowered again

    def test_never_below_one(self) -> None:
        b = WorkingBudget(5)
        b.refused(holding=0, now=0.0)
        assert b.value == 1

    def test_probing_raises_one_line_per_interval_and_slows_after_a_failed_probe(self) -> None:
        b = WorkingBudget(30, probe_s=60.0, probe_max_s=960.0)
        b.refused(holding=20, now=0.0)
        assert not b.probe(59.0)
        assert b.probe(60.0) and b.value == 21
        assert not b.probe(100.0)
        b.refused(holding=20, now=110.0)  # the probe found the limit: back, and slower
        assert b.value == 20
        assert not b.probe(110.0 + 60.0)
        assert b.probe(110.0 + 120.0)

    def test_no_probe_at_the_configured_budget(self) -> None:
        b = WorkingBudget(3)
        assert not b.probe(1e9)
        with pytest.raises(ValueError, match="at least 1"):
            WorkingBudget(0)


def test_a_line_reopened_by_the_transport_restarts_unanswered() -> None:
    sched = schedule(5)
    sched.plan([1], 0.0)
    sched.delivered(1, 0.1)
    sched.rerequested(1, 50.0)
    assert not sched.held[1].answered and sched.held[1].requested_at == 50.0
    sched.rerequested(2, 50.0)  # not held: nothing happens
    assert 2 not in sched.held

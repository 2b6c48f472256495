"""The request pacer: sliding windows, per-endpoint limits, room kept for ticks, 429 back-off."""

from __future__ import annotations

import pytest

from collector.portal.pacing import Limit, Pacer, endpoint_of


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def test_global_window_and_endpoint_limits() -> None:
    clock = Clock()
    pacer = Pacer(8, {"/portfolio/accounts": Limit(1, 5.5)}, clock=clock)
    for _ in range(8):
        assert pacer.delay_s("/iserver/marketdata/snapshot") == 0
        await pacer.acquire("/iserver/marketdata/snapshot")
    assert pacer.delay_s("/iserver/marketdata/snapshot") == 1.0  # the 9th waits a second
    clock.t += 1.0
    await pacer.acquire("/portfolio/accounts")
    clock.t += 1.0
    assert pacer.delay_s("/portfolio/accounts") == 4.5


async def test_only_the_limited_endpoints_have_a_window_of_their_own() -> None:
    """The positions pages and the summary name the account and the page: each is its own
    class, paced by the global window only, never held by the /portfolio/accounts limit."""
    assert endpoint_of("/portfolio/accounts") == "/portfolio/accounts"
    assert endpoint_of("/iserver/marketdata/snapshot") == "/iserver/marketdata/snapshot"
    assert endpoint_of("/portfolio/DU1/positions/0") == "/portfolio/DU1/positions/0"
    clock = Clock()
    pacer = Pacer(8, clock=clock)  # the real table of limits
    await pacer.acquire("/portfolio/accounts")
    assert pacer.delay_s("/portfolio/accounts") == pytest.approx(5.5)
    assert pacer.delay_s("/portfolio/subaccounts") == 0  # a window of its own
    for page in range(3):
        assert pacer.delay_s(f"/portfolio/DU1/positions/{page}") == 0
        await pacer.acquire(f"/portfolio/DU1/positions/{page}")
    assert pacer.delay_s("/portfolio/DU1/summary") == 0
    await pacer.acquire("/tickle")
    assert pacer.delay_s("/tickle") == pytest.approx(1.1)
    await pacer.acquire("/iserver/account/pnl/partitioned")  # IBKR: 1 per 5 s
    assert pacer.delay_s("/iserver/account/pnl/partitioned") == pytest.approx(5.5)


async def test_background_requests_leave_room_for_ticks() -> None:
    clock = Clock()
    pacer = Pacer(8, {}, clock=clock)
    for _ in range(5):
        await pacer.acquire("/portfolio/DU1/positions/0", background=True)
    assert pacer.delay_s("/portfolio/DU1/positions/1", background=True) > 0
    assert pacer.delay_s("/iserver/marketdata/snapshot") == 0  # a tick's request still goes


async def test_429_blocks_everything_with_growing_capped_backoff() -> None:
    clock = Clock()
    pacer = Pacer(8, {}, clock=clock, backoff_base_s=1.0, backoff_cap_s=4.0)
    first = pacer.throttled()
    assert 0.8 <= first <= 1.2
    assert pacer.delay_s("/tickle") > 0.7
    second = pacer.throttled()
    assert 1.6 <= second <= 2.4
    for _ in range(10):
        last = pacer.throttled()
    assert last <= 4.0 * 1.2
    assert pacer.throttled(retry_after_s=30) >= 30
    pacer.succeeded()
    assert pacer.strikes == 0

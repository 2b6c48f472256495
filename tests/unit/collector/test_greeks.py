"""Net Greeks on hand-computed portfolios, and the grace / carry-forward / exclusion policy."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from collector.greeks import (
    DEFAULT_OPTION_MULTIPLIER,
    Exposure,
    Greeks,
    GreeksPolicy,
    clean_greek,
    net_rows,
    valid_greeks,
)
from collector.transport import PositionData, Snapshot

T0 = datetime(2026, 11, 25, 15, 0, 0, tzinfo=UTC)


def opt(
    con_id: int,
    symbol: str,
    qty: float,
    delta: float | None,
    *,
    gamma: float | None = 0.01,
    vega: float | None = 0.2,
    theta: float | None = -0.05,
    mult: float | None = 100,
    at: datetime | None = T0,
    sub: datetime | None = T0,
    und: float | None = None,
    sec: str = "OPT",
) -> PositionData:
    return PositionData(
        con_id,
        symbol,
        sec,
        qty,
        mult,
        delta,
        gamma,
        vega,
        theta,
        at,
        sub,
        und,
        f"{symbol} opt {con_id}",
    )


def stk(con_id: int, symbol: str, qty: float) -> PositionData:
    return PositionData(con_id, symbol, "STK", qty, 0.0, description=f"{symbol} stock")


def snap(
    positions: list[PositionData], prices: dict[str, float] | None = None, at: datetime = T0
) -> Snapshot:
    return Snapshot(at, "DU1", tuple(positions), prices or {})


def policy(**kw: object) -> GreeksPolicy:
    return GreeksPolicy(grace_s=10, max_age_s=60, **kw)  # type: ignore[arg-type]


def test_long_short_calls_puts_and_stock_hand_computed() -> None:
    positions = [
        opt(1, "SPY", 2, 0.5, gamma=0.02, vega=0.3, theta=-0.1),  # long 2 calls
        opt(2, "SPY", -3, -0.4, gamma=0.01, vega=0.25, theta=-0.08),  # short 3 puts
        opt(3, "SPY", -1, 0.25, gamma=0.015, vega=0.1, theta=-0.02),  # short 1 call
        opt(4, "SPY", 4, -0.6, gamma=0.005, vega=0.2, theta=-0.04),  # long 4 puts
        stk(5, "SPY", 150),
    ]
    ev = policy().evaluate(snap(positions, {"SPY": 600.0}), T0)
    assert not ev.held
    (row,) = ev.rows
    # delta: 2*100*0.5 - 3*100*-0.4 - 1*100*0.25 + 4*100*-0.6 + 150
    #      = 100 + 120 - 25 - 240 + 150 = 105
    assert row.contract == "PORTFOLIO"
    assert row.delta == pytest.approx(105.0)
    # gamma: 200*0.02 - 300*0.01 - 100*0.015 + 400*0.005 = 4 - 3 - 1.5 + 2 = 1.5
    assert row.gamma == pytest.approx(1.5)
    # vega: 200*0.3 - 300*0.25 - 100*0.1 + 400*0.2 = 60 - 75 - 10 + 80 = 55
    assert row.vega == pytest.approx(55.0)
    # theta: 200*-0.1 - 300*-0.08 - 100*-0.02 + 400*-0.04 = -20 + 24 + 2 - 16 = -10
    assert row.theta == pytest.approx(-10.0)
    assert row.underlying_price == 600.0


def test_several_underlyings_per_underlying_rows_and_price_choice() -> None:
    positions = [
        opt(1, "SPY", 1, 0.5),  # SPY delta 50  -> dollar 50*600 = 30,000
        opt(2, "AAPL", 10, 0.6),  # AAPL delta 600 -> dollar 600*230 = 138,000
        stk(3, "QQQ", -100),  # QQQ delta -100 -> dollar 51,000
    ]
    prices = {"SPY": 600.0, "AAPL": 230.0, "QQQ": 510.0}
    ev = policy(per_underlying=True).evaluate(snap(positions, prices), T0)
    by = {r.contract: r for r in ev.rows}
    assert ev.rows[0].contract == "PORTFOLIO"
    assert set(by) == {"PORTFOLIO", "SPY", "AAPL", "QQQ"}
    assert by["PORTFOLIO"].delta == pytest.approx(50 + 600 - 100)
    assert by["PORTFOLIO"].underlying_price == 230.0  # AAPL carries the largest dollar delta
    assert by["SPY"].delta == pytest.approx(50)
    assert by["SPY"].underlying_price == 600.0
    assert by["AAPL"].gamma == pytest.approx(10 * 100 * 0.01)
    assert by["QQQ"].delta == -100 and by["QQQ"].gamma == 0.0
    assert by["QQQ"].underlying_price == 510.0
    # short positions count by absolute dollar delta
    ev2 = policy().evaluate(snap([opt(1, "SPY", -30, 0.5), opt(2, "AAPL", 1, 0.5)], prices), T0)
    assert ev2.rows[0].underlying_price == 600.0


def test_configured_underlying_wins() -> None:
    prices = {"SPY": 600.0, "AAPL": 230.0}
    positions = [opt(1, "SPY", 1, 0.1), opt(2, "AAPL", 10, 0.6)]
    ev = policy(underlying="SPY").evaluate(snap(positions, prices), T0)
    assert ev.rows[0].underlying_price == 600.0
    # a configured symbol without a price gives an unknown price, not another symbol's
    ev = policy(underlying="IWM").evaluate(snap(positions, prices), T0)
    assert ev.rows[0].underlying_price is None


def test_price_from_position_when_snapshot_has_none() -> None:
    ev = policy().evaluate(snap([opt(1, "SPY", 1, 0.5, und=601.5)]), T0)
    assert ev.rows[0].underlying_price == 601.5


def test_multiplier_quirks() -> None:
    positions = [
        opt(1, "SPY", 1, 0.5, mult=None),
        opt(2, "SPY", 1, 0.5, mult=0.0),
        opt(3, "ES", 1, 0.5, mult=50.0, sec="FOP"),
        opt(4, "XSP", 2, 0.5, mult=10.0),
    ]
    ev = policy().evaluate(snap(positions), T0)
    assert ev.rows[0].delta == pytest.approx(
        2 * DEFAULT_OPTION_MULTIPLIER * 0.5 + 50 * 0.5 + 2 * 10 * 0.5
    )
    assert len(ev.assumed_multiplier) == 2
    warns = [r for r in ev.reports if r.status == "WARN" and "Multiplier" in r.message]
    assert len(warns) == 1 and "opt 1" in warns[0].message and "opt 2" in warns[0].message
    # the same state again: no repeated report
    pol = GreeksPolicy(10, 60)
    first = pol.evaluate(snap(positions), T0)
    second = pol.evaluate(snap(positions), T0 + timedelta(seconds=5))
    assert any("Multiplier" in r.message for r in first.reports)
    assert not any("Multiplier" in r.message for r in second.reports)


@pytest.mark.parametrize("bad", [None, math.nan, math.inf, -math.inf, 1e300, -2e6])
def test_clean_greek_rejects(bad: float | None) -> None:
    assert clean_greek(bad) is None


def test_valid_greeks_rejects_absurd_and_sentinel_like_values() -> None:
    assert valid_greeks(opt(1, "SPY", 1, 0.5)) == Greeks(0.5, 0.01, 0.2, -0.05)
    assert valid_greeks(opt(1, "SPY", 1, -1.0)) is not None  # deep ITM put
    assert valid_greeks(opt(1, "SPY", 1, -2.0)) is None  # IB "not computed" sentinel
    assert valid_greeks(opt(1, "SPY", 1, 0.5, gamma=-1.0)) is None
    assert valid_greeks(opt(1, "SPY", 1, 0.5, vega=-2.0)) is None
    assert valid_greeks(opt(1, "SPY", 1, math.nan)) is None
    assert valid_greeks(opt(1, "SPY", 1, 0.5, theta=None)) is None


def test_missing_greek_is_never_summed_as_zero_pending_holds_the_tick() -> None:
    positions = [opt(1, "SPY", 1, 0.5), opt(2, "SPY", 1, None)]
    pol = policy()
    ev = pol.evaluate(snap(positions), T0 + timedelta(seconds=3))
    assert ev.held and ev.rows == []
    assert ev.pending == ("SPY opt 2",)
    assert [r.status for r in ev.reports] == ["INFO"]
    # NaN in one Greek also counts as missing (not as zero)
    ev = pol.evaluate(
        snap([opt(1, "SPY", 1, 0.5), opt(2, "SPY", 1, 0.3, gamma=math.nan)]),
        T0 + timedelta(seconds=4),
    )
    assert ev.held and ev.rows == []
    assert ev.reports == []  # still holding: reported once


def test_grace_expired_excludes_and_reports_once_per_change() -> None:
    pol = policy()
    positions = [opt(1, "SPY", 2, 0.5), opt(2, "SPY", 1, None)]
    ev = pol.evaluate(snap(positions), T0 + timedelta(seconds=11))
    assert not ev.held
    assert ev.excluded == ("SPY opt 2",)
    assert ev.rows[0].delta == pytest.approx(100.0)  # only position 1
    warns = [r for r in ev.reports if r.status == "WARN"]
    assert len(warns) == 1 and "SPY opt 2" in warns[0].message
    ev = pol.evaluate(snap(positions), T0 + timedelta(seconds=16))
    assert ev.reports == []  # no change, no new row in api_logs
    # the Greeks come back: one INFO
    back = [opt(1, "SPY", 2, 0.5), opt(2, "SPY", 1, 0.4, at=T0 + timedelta(seconds=21))]
    ev = pol.evaluate(snap(back), T0 + timedelta(seconds=21))
    assert ev.excluded == ()
    assert ev.rows[0].delta == pytest.approx(140.0)
    assert [r.status for r in ev.reports] == ["INFO"]


def test_carry_forward_then_exclusion_after_max_age() -> None:
    pol = policy()
    fresh = [opt(1, "SPY", 1, 0.5, at=T0), opt(2, "SPY", 1, 0.3, at=T0)]
    assert pol.evaluate(snap(fresh), T0).rows[0].delta == pytest.approx(80.0)
    gone = [opt(1, "SPY", 1, 0.5, at=T0 + timedelta(seconds=30)), opt(2, "SPY", 1, None, at=None)]
    ev = pol.evaluate(snap(gone), T0 + timedelta(seconds=30))
    assert ev.carried == ("SPY opt 2",)
    assert ev.rows[0].delta == pytest.approx(80.0)  # position 2 carried at 0.3
    assert ev.reports == []
    ev = pol.evaluate(snap(gone), T0 + timedelta(seconds=60))  # exactly max age: still carried
    assert ev.rows[0].delta == pytest.approx(80.0)
    ev = pol.evaluate(snap(gone), T0 + timedelta(seconds=61))
    assert ev.excluded == ("SPY opt 2",)
    assert ev.rows[0].delta == pytest.approx(50.0)
    assert [r.status for r in ev.reports] == ["WARN"]


def test_resubscription_within_grace_carries_known_value_instead_of_holding() -> None:
    pol = policy()
    pol.evaluate(snap([opt(1, "SPY", 1, 0.5, at=T0)]), T0)
    resub = T0 + timedelta(seconds=20)
    ev = pol.evaluate(
        snap([opt(1, "SPY", 1, None, at=None, sub=resub)]), resub + timedelta(seconds=1)
    )
    assert not ev.held and ev.carried == ("SPY opt 1",)
    # a position with no known value and a fresh subscription holds the tick
    ev = pol.evaluate(
        snap([opt(1, "SPY", 1, None, sub=resub), opt(9, "SPY", 1, None, sub=resub)]),
        resub + timedelta(seconds=2),
    )
    assert ev.held and ev.pending == ("SPY opt 9",)


def test_stale_greeks_from_transport_are_not_fresh() -> None:
    """Values the transport still holds but which arrived long ago count by their age."""
    pol = policy()
    old = T0 - timedelta(seconds=120)
    ev = pol.evaluate(snap([opt(1, "SPY", 1, 0.5, at=old, sub=old), opt(2, "SPY", 1, 0.2)]), T0)
    assert ev.excluded == ("SPY opt 1",)
    assert ev.rows[0].delta == pytest.approx(20.0)


def test_all_options_excluded_writes_no_row() -> None:
    pol = policy()
    ev = pol.evaluate(
        snap([stk(1, "SPY", 100), opt(2, "SPY", 1, None)]), T0 + timedelta(seconds=30)
    )
    assert ev.rows == [] and ev.held
    assert any("No option position" in r.message for r in ev.reports)


def test_zero_quantity_and_other_types_ignored_empty_account_is_zero() -> None:
    pol = policy()
    positions = [
        opt(1, "SPY", 0, None),  # closed position: needs no Greeks
        PositionData(2, "EUR", "CASH", 1000.0, None),
        PositionData(3, "BTC", "CRYPTO", 1.0, None),
    ]
    ev = pol.evaluate(snap(positions), T0)
    assert not ev.held
    assert (ev.rows[0].delta, ev.rows[0].gamma, ev.rows[0].vega, ev.rows[0].theta) == (0, 0, 0, 0)
    assert ev.rows[0].underlying_price is None


def test_net_rows_pure_function() -> None:
    rows = net_rows(
        [
            Exposure("SPY", "OPT", -2, 100, Greeks(0.25, 0.01, 0.5, -0.2)),
            Exposure("SPY", "STK", 10, 1, None),
        ],
        {"SPY": 500.0},
    )
    assert rows[0].delta == pytest.approx(-50 + 10)
    assert rows[0].gamma == pytest.approx(-2.0)
    assert rows[0].vega == pytest.approx(-100.0)
    assert rows[0].theta == pytest.approx(40.0)

"""Exposure rows for a hand-computed book: dollar Greeks and completeness counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from collector.exposure import exposure_rows, market_data_kind
from collector.greeks import GreeksPolicy
from collector.transport import Pnl, PositionData, Snapshot
from shared.models import ExposureRow

NOW = datetime(2026, 12, 2, 15, 0, tzinfo=UTC)


def opt(con_id: int, symbol: str, qty: float, mult: float, greeks: tuple[float, ...] | None,
        age_s: float = 0.0) -> PositionData:  # fmt: skip
    d, g, v, t = greeks if greeks else (None, None, None, None)
    return PositionData(
        con_id=con_id,
        symbol=symbol,
        sec_type="OPT",
        quantity=qty,
        multiplier=mult,
        delta=d,
        gamma=g,
        vega=v,
        theta=t,
        greeks_at=NOW - timedelta(seconds=age_s) if greeks else None,
        subscribed_at=NOW - timedelta(seconds=100),
        description=f"{symbol} opt {con_id}",
    )


BOOK = Snapshot(
    NOW,
    "DU1",
    (
        opt(1, "SPY", 2, 100, (0.5, 0.01, 0.2, -0.1)),  # fresh
        opt(2, "SPY", -3, 10, (0.4, 0.02, 0.1, -0.05), age_s=30),  # a mini, carried
        PositionData(3, "SPY", "STK", 100, 1.0),
        opt(4, "IWM", 5, 100, (-0.3, 0.015, 0.25, -0.08)),  # fresh
        opt(5, "IWM", 1, 100, None),  # no Greeks past the grace: excluded
    ),
    {"SPY": 500.0, "IWM": 200.0},
    ("LIVE",),
)


def rows() -> dict[str, ExposureRow]:
    ev = GreeksPolicy(grace_s=10, max_age_s=60).evaluate(BOOK, NOW)
    out = exposure_rows(
        ev, BOOK.prices, NOW, account="DU1", poll_s=5, kinds=BOOK.market_data, pnl=Pnl(1.5, 2, 0)
    )
    return {r.scope: r for r in out}


def test_dollar_greeks_per_underlying_and_for_the_book() -> None:
    r = rows()
    spy, iwm, book = r["SPY"], r["IWM"], r["PORTFOLIO"]
    assert spy.delta == pytest.approx(2 * 100 * 0.5 - 3 * 10 * 0.4 + 100)
    assert spy.delta_dollars == pytest.approx(188 * 500)
    assert spy.gamma_dollars == pytest.approx((2 - 0.6) * 500**2 / 100)
    assert iwm.delta_dollars == pytest.approx(-150 * 200)
    assert iwm.gamma_dollars == pytest.approx(7.5 * 200**2 / 100)
    assert book.delta == pytest.approx(188 - 150)
    assert book.delta_dollars == pytest.approx(94_000 - 30_000)
    assert book.gamma_dollars == pytest.approx(3_500 + 3_000)


def test_completeness_counts_and_age() -> None:
    r = rows()
    spy, iwm, book = r["SPY"], r["IWM"], r["PORTFOLIO"]

    def counts(x: ExposureRow) -> tuple[int, ...]:
        return (x.legs, x.legs_fresh, x.legs_carried, x.legs_excluded)

    assert counts(spy) == (2, 1, 1, 0)
    assert counts(iwm) == (2, 1, 0, 1)
    assert counts(book) == (4, 2, 1, 1)
    assert book.greeks_age_max_s == pytest.approx(30)
    assert iwm.greeks_age_max_s == pytest.approx(0)


def test_pnl_only_on_the_portfolio_scope_and_the_data_kind() -> None:
    r = rows()
    assert (r["PORTFOLIO"].daily_pnl, r["PORTFOLIO"].unrealized_pnl) == (1.5, 2)
    assert r["SPY"].daily_pnl is None
    assert {x.market_data for x in r.values()} == {"LIVE"}
    assert market_data_kind(["LIVE", "DELAYED"]) == "MIXED"
    assert market_data_kind([]) is None


def test_an_unknown_price_gives_no_dollar_figures_never_a_partial_sum() -> None:
    ev = GreeksPolicy(grace_s=10, max_age_s=60).evaluate(BOOK, NOW)
    out = {x.scope: x for x in exposure_rows(ev, {"SPY": 500.0}, NOW, account="A", poll_s=5)}
    assert out["IWM"].delta_dollars is None and out["IWM"].gamma_dollars is None
    assert out["PORTFOLIO"].delta_dollars is None
    assert out["SPY"].delta_dollars == pytest.approx(94_000)
    assert out["PORTFOLIO"].market_data is None and out["PORTFOLIO"].daily_pnl is None


def test_no_row_when_the_tick_is_held() -> None:
    pending = Snapshot(NOW, "A", (opt(9, "SPY", 1, 100, None),), {"SPY": 500.0})
    fresh = pending.positions[0]
    snap = Snapshot(NOW, "A", (PositionData(**{**_fields(fresh), "subscribed_at": NOW}),), {})
    ev = GreeksPolicy(grace_s=10, max_age_s=60).evaluate(snap, NOW)
    assert ev.held and exposure_rows(ev, {}, NOW, account="A", poll_s=5) == []


def _fields(p: PositionData) -> dict[str, object]:
    return {name: getattr(p, name) for name in p.__dataclass_fields__}

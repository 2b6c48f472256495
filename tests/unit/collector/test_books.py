"""Rows per account: the ALL row is the sum of the accounts' rows (property test)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.books import ALL_ACCOUNTS, Books, combined_pnl
from collector.transport import Pnl, PositionData, Snapshot
from shared.config import load_settings

NOW = datetime(2026, 12, 2, 15, 0, tzinfo=UTC)
PRICES = {"SPY": 600.0, "IWM": 220.0, "QQQ": 510.0}
ACCOUNTS = ("DU1", "DU2", "DU3")


@st.composite
def position(draw: st.DrawFn, con_id: int) -> PositionData:
    symbol = draw(st.sampled_from(sorted(PRICES)))
    account = draw(st.sampled_from(ACCOUNTS))
    qty = float(draw(st.integers(-50, 50).filter(bool)))
    if draw(st.booleans()):
        return PositionData(con_id, symbol, "STK", qty, 1.0, account=account)
    unit = st.floats(0.0, 1.0, allow_nan=False)
    return PositionData(
        con_id,
        symbol,
        "OPT",
        qty,
        float(draw(st.sampled_from((10, 100, 1000)))),
        delta=draw(st.floats(-1.0, 1.0, allow_nan=False)),
        gamma=draw(unit),
        vega=draw(unit),
        theta=-draw(unit),
        greeks_at=NOW,
        subscribed_at=NOW,
        account=account,
    )


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    n = draw(st.integers(1, 12))
    positions = tuple(draw(position(i)) for i in range(1, n + 1))
    accounts = tuple(sorted({p.account for p in positions}))
    return Snapshot(NOW, ",".join(accounts), positions, PRICES, ("LIVE",), accounts)


@settings(max_examples=200, deadline=None)
@given(snapshots())
def test_the_all_row_is_the_sum_of_the_accounts_rows(snap: Snapshot) -> None:
    rows = Books(load_settings({}, dotenv=None), "SOCKET").evaluate(snap, NOW)
    greeks = {r.account: r for r in rows.greeks if r.contract == "PORTFOLIO"}
    exposure = {e.account: e for e in rows.exposure if e.scope == "PORTFOLIO"}
    if len(snap.accounts) == 1:
        assert set(greeks) == set(snap.accounts)
        return
    assert set(greeks) == {*snap.accounts, ALL_ACCOUNTS}
    parts = [greeks[a] for a in snap.accounts]
    for name in ("delta", "gamma", "vega", "theta"):
        total = sum(getattr(r, name) for r in parts)
        assert getattr(greeks[ALL_ACCOUNTS], name) == pytest.approx(total, rel=1e-9, abs=1e-6)
    whole = exposure[ALL_ACCOUNTS]
    accounts = [exposure[a] for a in snap.accounts]
    assert whole.legs == sum(e.legs for e in accounts)
    assert whole.delta_dollars == pytest.approx(
        sum(e.delta_dollars or 0.0 for e in accounts), rel=1e-9, abs=1e-6
    )
    assert whole.gamma_dollars == pytest.approx(
        sum(e.gamma_dollars or 0.0 for e in accounts), rel=1e-9, abs=1e-6
    )


def test_combined_pnl_is_unknown_when_any_account_is() -> None:
    assert combined_pnl([Pnl(1, 2, 3), Pnl(4, 5, 6)]) == Pnl(5, 7, 9)
    assert combined_pnl([Pnl(1, 2, 3), Pnl(None, 5, 6)]) == Pnl(None, 7, 9)
    assert combined_pnl([]) == Pnl()


def test_reports_name_their_account() -> None:
    held = PositionData(9, "SPY", "OPT", 1, 100, subscribed_at=NOW, account="DU2")
    snap = Snapshot(
        NOW, "DU1,DU2", (PositionData(1, "SPY", "STK", 5, 1.0, account="DU1"), held), PRICES,
        accounts=("DU1", "DU2"),
    )  # fmt: skip
    rows = Books(load_settings({}, dotenv=None), "SOCKET").evaluate(snap, NOW)
    assert any(r.message.startswith("[DU2] Greeks pending") for r in rows.reports)
    assert {r.account for r in rows.greeks} == {"DU1"}  # DU2 and ALL held back this tick

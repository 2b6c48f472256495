"""Several accounts of one login: the linked book, the market they share, the combined book."""

from __future__ import annotations

from dataclasses import replace

import pytest

from simulator.book import LINKED_OPTION_CON_ID, generate_book, linked_book
from simulator.gateway.catalog import Catalog
from simulator.portfolio import (
    ALL,
    NetGreeks,
    SimPortfolio,
    Underlying,
    combined,
    default_portfolio,
    net_greeks_sum,
    shared_market,
)

T = 1_700_000_123.0


def held(book: SimPortfolio) -> dict[int, float]:
    return {p.con_id: p.quantity for p in book.positions}


def as_tuple(g: NetGreeks) -> tuple[float, float, float, float]:
    return (g.delta, g.gamma, g.vega, g.theta)


@pytest.fixture
def pair() -> tuple[SimPortfolio, SimPortfolio]:
    first = default_portfolio("DU1", extra_options=3)
    return first, linked_book(first, 9, 3, 7, account="DU2")


def test_a_linked_book_shares_the_market_and_some_contracts(
    pair: tuple[SimPortfolio, SimPortfolio],
) -> None:
    first, second = pair
    assert second.account == "DU2"
    assert (second.step_s, second.valuation_date) == (first.step_s, first.valuation_date)
    assert all(first.underlyings[s] == u for s, u in second.underlyings.items())
    assert len(second.underlyings) == 3
    assert sum(p.is_option for p in second.positions) == 9
    shared = set(held(first)) & set(held(second))
    assert shared
    by_con = first.by_con_id()
    for pos in second.positions:
        if pos.con_id in shared:
            assert replace(pos, quantity=0, avg_cost=0) == replace(
                by_con[pos.con_id], quantity=0, avg_cost=0
            )
        else:
            assert pos.con_id >= LINKED_OPTION_CON_ID or not pos.is_option
    assert linked_book(first, 9, 3, 7, account="DU2") == second
    assert linked_book(first, 9, 3, 8, account="DU2").positions != second.positions
    shared_market([first, second])  # one market: no error


def test_a_linked_book_of_a_generated_book() -> None:
    first = generate_book(40, 6, 2)
    second = linked_book(first, 20, 6, 5, account="DU2")
    assert set(held(first)) & set(held(second))
    own = [p for p in second.positions if p.is_option and p.con_id not in held(first)]
    assert own and not {p.con_id for p in own} & {u.con_id for u in first.underlyings.values()}
    Catalog(first, [second])


def test_the_combined_book_is_the_sum_of_the_accounts(
    pair: tuple[SimPortfolio, SimPortfolio],
) -> None:
    first, second = pair
    both = combined([first, second])
    assert both.account == ALL
    expected: dict[int, float] = {}
    for book in pair:
        for con_id, qty in held(book).items():
            expected[con_id] = expected.get(con_id, 0.0) + qty
    assert held(both) == {c: q for c, q in expected.items() if q != 0}
    for symbol in (None, "SPY", "QQQ", "AAPL"):
        total = as_tuple(net_greeks_sum([first, second], T, symbol))
        parts = [as_tuple(b.net_greeks(T, symbol)) for b in pair]
        assert as_tuple(both.net_greeks(T, symbol)) == pytest.approx(total, rel=1e-12)
        assert total == pytest.approx([a + b for a, b in zip(*parts, strict=True)], rel=1e-12)
    assert as_tuple(both.net_greeks(T)) != pytest.approx(as_tuple(first.net_greeks(T)))
    con_id = min(set(held(first)) & set(held(second)))
    a, b, c = (bk.by_con_id()[con_id] for bk in (first, second, both))
    assert c.quantity * c.avg_cost == pytest.approx(
        a.quantity * a.avg_cost + b.quantity * b.avg_cost
    )


def test_holdings_that_cancel_out_leave_the_combined_book() -> None:
    first = default_portfolio("DU1")
    mirror = replace(first, account="DU2", positions=[replace(first.positions[1], quantity=2)])
    assert first.positions[1].quantity == -2
    assert first.positions[1].con_id not in held(combined([first, mirror]))


def test_accounts_that_disagree_on_the_market_are_refused() -> None:
    first = default_portfolio("DU1")
    other_price = replace(
        first,
        account="DU2",
        underlyings={**first.underlyings, "SPY": Underlying(756733, "SPY", 601.0, 0.18)},
    )
    with pytest.raises(ValueError, match="SPY"):
        shared_market([first, other_price])
    other_terms = replace(
        first, account="DU2", positions=[replace(first.positions[1], strike=605.0)]
    )
    with pytest.raises(ValueError, match=str(first.positions[1].con_id)):
        Catalog(first, [other_terms])
    with pytest.raises(ValueError, match="valuation"):
        shared_market([first, replace(first, valuation_date=first.valuation_date.replace(day=1))])
    with pytest.raises(ValueError):
        shared_market([])


def test_the_catalog_keeps_each_accounts_positions(
    pair: tuple[SimPortfolio, SimPortfolio],
) -> None:
    first, second = pair
    cat = Catalog(first, [second])
    assert cat.accounts() == ["DU1", "DU2"]
    assert cat.book("") is first and cat.book("DU2") is second
    with pytest.raises(KeyError, match="U999"):
        cat.book("U999")
    only_first = next(c for c in held(first) if c not in held(second) and c != 756733)
    cat.set_position(only_first, 4, "DU2")  # a contract the other account holds: no cost
    assert held(second)[only_first] == 4 and second.by_con_id()[only_first].avg_cost == 0.0
    assert held(first)[only_first] != 4
    assert cat.pnl(T, "DU1") != cat.pnl(T, "DU2")
    assert cat.net_liquidation(T) == cat.net_liquidation(T, "DU1")

"""The generated book: the same seed gives the same book, the counts asked for, varied terms,
and a portfolio the simulators' machinery serves (catalog, P&L, net Greeks)."""

from __future__ import annotations

import math
from collections import Counter
from datetime import date

import pytest

from simulator.book import generate_book, parse_book_spec
from simulator.gateway.catalog import Catalog
from simulator.gateway.protocol import ContractFields
from simulator.portfolio import VALUATION_DATE, SimPortfolio, SimPosition


def options(book: SimPortfolio) -> list[SimPosition]:
    return [p for p in book.positions if p.is_option]


def test_the_same_seed_gives_the_same_book_and_another_seed_another() -> None:
    a, b = generate_book(60, 8, 11), generate_book(60, 8, 11)
    assert a.positions == b.positions and a.underlyings == b.underlyings
    c = generate_book(60, 8, 12)
    assert c.positions != a.positions
    assert [u.base_price for u in c.underlyings.values()] != [
        u.base_price for u in a.underlyings.values()
    ]


@pytest.mark.parametrize(("legs", "unds"), [(1, 1), (7, 3), (250, 20), (120, 45)])
def test_the_counts_asked_for(legs: int, unds: int) -> None:
    book = generate_book(legs, unds, 5, account="DU999", step_s=0.5)
    assert (book.account, book.step_s) == ("DU999", 0.5)
    opts = options(book)
    assert len(opts) == legs
    assert len(book.underlyings) == unds
    assert len({u.symbol for u in book.underlyings.values()}) == unds
    assert len({u.con_id for u in book.underlyings.values()}) == unds
    used = {p.symbol for p in opts}
    assert used == set(book.underlyings) if legs >= unds else len(used) == legs
    stocks = [p for p in book.positions if not p.is_option]
    assert 1 <= len(stocks) <= unds
    assert all(p.con_id == book.underlyings[p.symbol].con_id and p.quantity for p in stocks)
    con_ids = [p.con_id for p in book.positions]
    assert len(con_ids) == len(set(con_ids))


def test_terms_vary_like_a_real_book() -> None:
    book = generate_book(250, 20, 3)
    opts = options(book)
    mults = Counter(p.multiplier for p in opts)
    assert set(mults) == {10, 50, 100, 1000}
    assert mults[100] > len(opts) / 2 > mults[10] > 0
    expiries = {date(int(p.expiry[:4]), int(p.expiry[4:6]), int(p.expiry[6:])) for p in opts}
    assert len(expiries) >= 8
    days = sorted((e - VALUATION_DATE).days for e in expiries)
    assert days[0] >= 7 and 300 <= days[-1] <= 410
    assert all(e.weekday() == 4 for e in expiries)
    assert {p.right for p in opts} == {"C", "P"}
    assert all(-20 <= p.quantity <= 20 and p.quantity != 0 for p in opts)
    assert min(p.quantity for p in opts) < 0 < max(p.quantity for p in opts)
    for p in opts:
        spot = book.underlyings[p.symbol].base_price
        assert 0.75 * spot <= p.strike <= 1.3 * spot, p
    prices = [u.base_price for u in book.underlyings.values()]
    assert all(20 <= x <= 600 for x in prices) and len(set(prices)) == len(prices)
    assert len({u.vol for u in book.underlyings.values()}) > 1
    contracts = [(p.symbol, p.expiry, p.strike, p.right) for p in opts]
    assert len(contracts) == len(set(contracts))  # one position per contract


def test_every_size_of_multiplier_even_in_a_small_book() -> None:
    assert {p.multiplier for p in options(generate_book(4, 2, 1))} == {10, 50, 100, 1000}


def test_expiries_count_from_the_day_given() -> None:
    today = date(2027, 3, 1)
    book = generate_book(30, 4, 9, today=today)
    assert book.valuation_date == today
    assert min(p.expiry for p in options(book)) >= "20270308"


def test_net_greeks_are_the_sum_over_positions() -> None:
    book = generate_book(80, 6, 21, step_s=1.0)
    t = 1234.5
    total = {"delta": 0.0, "gamma": 0.0, "vega": 0.0, "theta": 0.0}
    for pos in book.positions:
        if not pos.is_option:
            total["delta"] += pos.quantity
            continue
        q = book.quote(pos, t)
        for name in total:
            total[name] += pos.quantity * pos.multiplier * getattr(q, name)
    net = book.net_greeks(t)
    for name, value in total.items():
        assert getattr(net, name) == pytest.approx(value, rel=1e-12), name
    per_symbol = [book.net_greeks(t, s) for s in book.underlyings]
    assert sum(g.delta for g in per_symbol) == pytest.approx(net.delta, rel=1e-12)
    assert sum(g.vega for g in per_symbol) == pytest.approx(net.vega, rel=1e-12)
    assert net != book.net_greeks(t + 7.0)  # prices move with the step


def test_the_catalog_serves_the_book() -> None:
    book = generate_book(40, 5, 2)
    cat = Catalog(book)
    for pos in book.positions:
        inst = cat.instrument(pos.con_id)
        assert inst is not None and inst.symbol == pos.symbol
        assert len(cat.position_msg(book.account, pos)) == 16
        if pos.is_option:
            assert inst.multiplier == str(pos.multiplier)
            by_name = ContractFields(
                0, "", "OPT", "", 0.0, "", "", "SMART", "", "USD", pos.local_symbol, ""
            )
            assert cat.find(by_name) == inst
            assert cat.greeks_msg(1, inst, 0.0, 1, "normal") is not None
    daily, unreal, _ = cat.pnl(0.0)
    assert (
        math.isfinite(unreal) and unreal != 0.0 and daily == pytest.approx(0.1 * unreal, abs=0.01)
    )
    assert math.isfinite(cat.net_liquidation(0.0))


def test_book_spec() -> None:
    assert parse_book_spec("300:20:7") == (300, 20, 7)
    for bad in ("300:20", "a:b:c", "10:0:1", "-1:2:3"):
        with pytest.raises(ValueError):
            parse_book_spec(bad)
    with pytest.raises(ValueError):
        generate_book(5, 0, 1)

"""`python -m simulator.portal` options: a generated book, the line limit, a second account."""

from __future__ import annotations

import pytest

from simulator.portal.__main__ import parse_args
from simulator.program import ACCOUNT2, make_more, make_portfolio


def test_book_and_lines() -> None:
    args = parse_args(["--book", "12:3:7", "--lines", "5"])
    portfolio = make_portfolio(args)
    assert sum(p.is_option for p in portfolio.positions) == 12
    assert len(portfolio.underlyings) == 3
    assert args.lines == 5
    default = make_portfolio(parse_args([]))
    assert len(default.positions) == 8 + 120 and parse_args([]).lines == 0


def test_bad_book_and_both_books(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--book", "12:3"], ["--book", "12:3:7", "--extra-options", "5"]):
        with pytest.raises(SystemExit):
            parse_args(argv)
    assert "LEGS:UNDERLYINGS:SEED" in capsys.readouterr().err


def test_a_second_account() -> None:
    args = parse_args(["--account2", "DU2"])
    first = make_portfolio(args)
    [second] = make_more(args, first)
    assert second.account == "DU2"
    assert sum(p.is_option for p in second.positions) == 6  # the default book of 6:3:1
    assert set(second.underlyings) <= set(first.underlyings)
    args = parse_args(["--book2", "4:2:3"])
    [second] = make_more(args, make_portfolio(args))
    assert second.account == ACCOUNT2 and sum(p.is_option for p in second.positions) == 4
    assert make_more(parse_args([]), first) == []


def test_the_second_account_must_differ(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--account", "DU1", "--account2", "DU1"])
    assert "must differ" in capsys.readouterr().err

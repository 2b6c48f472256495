"""`python -m simulator.portal` options: a generated book and the line limit."""

from __future__ import annotations

import pytest

from simulator.portal.__main__ import make_portfolio, parse_args


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

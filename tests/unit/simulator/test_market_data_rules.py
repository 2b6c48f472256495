"""The gateway simulator's market-data rules that need no socket: the marketDataType that says
what is delivered, the data-error switches, and the line counters."""

from __future__ import annotations

import pytest

from simulator.gateway.faults import DataFaults, delivered_type
from simulator.gateway.lines import LineBook

LIVE, FROZEN, DELAYED, DELAYED_FROZEN = 1, 2, 3, 4


@pytest.mark.parametrize(
    ("asked", "closed", "delayed_only", "delivered"),
    [
        (LIVE, False, False, LIVE),
        (LIVE, True, False, LIVE),
        (FROZEN, False, False, LIVE),
        (FROZEN, True, False, FROZEN),
        (DELAYED, False, False, DELAYED),
        (DELAYED, True, False, DELAYED),
        (DELAYED_FROZEN, False, False, DELAYED),
        (DELAYED_FROZEN, True, False, DELAYED_FROZEN),
        (LIVE, False, True, DELAYED),
        (LIVE, True, True, DELAYED),
        (FROZEN, True, True, DELAYED_FROZEN),
        (FROZEN, False, True, DELAYED),
    ],
)
def test_delivered_type(asked: int, closed: bool, delayed_only: bool, delivered: int) -> None:
    assert delivered_type(asked, closed, delayed_only) == delivered


def test_data_errors_by_contract_for_all_and_cleared() -> None:
    f = DataFaults()
    assert f.code_for(1) is None
    f.set(354, [1, 2])
    assert (f.code_for(1), f.code_for(2), f.code_for(3)) == (354, 354, None)
    f.set(10090, None)  # every contract: replaces the named ones
    assert (f.code_for(1), f.code_for(3)) == (10090, 10090)
    f.clear([3])  # exempted from the code for all
    assert (f.code_for(1), f.code_for(3)) == (10090, None)
    f.set(10167, [3])
    assert f.code_for(3) == 10167
    f.clear(None)
    assert (f.code_for(1), f.code_for(3)) == (None, None)
    f.set(10168, [5])
    f.clear([5])
    assert f.by_con == {} and f.code_for(5) is None
    with pytest.raises(ValueError, match="data error code"):
        f.set(200, [1])


def test_line_book() -> None:
    book = LineBook()
    assert not book.full(10_000)  # unlimited
    book.set_limit(2)
    assert not book.full(1) and book.full(2) and book.full(3)
    book.seen(2)
    book.seen(1)
    assert book.max_open == 2
    book.set_others(3, open_without_others=1)
    assert book.max_open == 4
    book.refused, book.requests, book.cancels = 1, 5, 2
    book.reset(open_now=3)
    assert book.as_dict(3) == {
        "limit": 2, "others": 3, "open": 3, "max_open": 3,
        "refused": 0, "requests": 0, "cancels": 0,
    }  # fmt: skip
    with pytest.raises(ValueError):
        book.set_limit(-1)
    with pytest.raises(ValueError):
        book.set_others(-1, 0)

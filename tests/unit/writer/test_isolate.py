"""The bisection of refused rows: a fake insert function that refuses given rows."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from shared.models import ApiLogRow, ExposureRow, GreeksRow
from writer.isolate import Row, find_refused

T0 = datetime(2026, 11, 25, 14, 30, tzinfo=UTC)


def greeks(i: int) -> GreeksRow:
    return GreeksRow(
        T0 + timedelta(seconds=i), "PORTFOLIO", float(i), 0.1, 0.2, 0.3, 600.0, "DU1", "SOCKET"
    )


def exposure(i: int) -> ExposureRow:
    return ExposureRow(
        T0 + timedelta(seconds=i), "DU1", "PORTFOLIO", 1.0, 0.5, -2.0, 3.0,
        None, None, None, 1, 1, 0, 0, None, None,
    )  # fmt: skip


def api_log(i: int) -> ApiLogRow:
    return ApiLogRow(T0 + timedelta(seconds=i), "SOCKET", "INFO", f"message {i}", "writer")


class FakeTable:
    """Stores a call's rows all or nothing, like one transaction; refuses the given rows with a
    data error, or fails every call with `outage`."""

    def __init__(self, refused: list[Row], outage: BaseException | None = None) -> None:
        self.refused_ids = {id(r) for r in refused}
        self.outage = outage
        self.stored: list[Row] = []
        self.calls = 0

    async def store(self, g: list[GreeksRow], a: list[ApiLogRow], e: list[ExposureRow]) -> None:
        self.calls += 1
        if self.outage is not None:
            raise self.outage
        assert all(isinstance(r, GreeksRow) for r in g)
        assert all(isinstance(r, ApiLogRow) for r in a)
        assert all(isinstance(r, ExposureRow) for r in e)
        part: list[Row] = [*g, *a, *e]
        if any(id(r) in self.refused_ids for r in part):
            raise asyncpg.exceptions.NumericValueOutOfRangeError("value out of range")
        self.stored.extend(part)


async def test_nothing_refused_is_one_call() -> None:
    rows: list[Row] = [greeks(i) for i in range(10)]
    table = FakeTable([])
    assert await find_refused(rows, table.store) == []
    assert table.calls == 1
    assert table.stored == rows


async def test_empty_input_stores_nothing() -> None:
    table = FakeTable([])
    assert await find_refused([], table.store) == []
    assert table.calls == 0


@pytest.mark.parametrize("bad", [[0], [9], [3, 7], [4, 5], list(range(10))])
async def test_refused_rows_found_the_rest_stored_once_in_order(bad: list[int]) -> None:
    rows: list[Row] = [greeks(i) for i in range(10)]
    table = FakeTable([rows[i] for i in bad])
    refused = await find_refused(rows, table.store)
    assert [r for r, _ in refused] == [rows[i] for i in bad]
    assert all("database refused the row" in why and "out of range" in why for _, why in refused)
    assert table.stored == [r for i, r in enumerate(rows) if i not in bad]


async def test_mixed_kinds_reach_the_store_split_by_kind() -> None:
    rows: list[Row] = [greeks(0), api_log(1), exposure(2), greeks(3), exposure(4), api_log(5)]
    table = FakeTable([rows[1], rows[4]])
    refused = await find_refused(rows, table.store)
    assert [r for r, _ in refused] == [rows[1], rows[4]]
    assert sorted(table.stored, key=rows.index) == [rows[0], rows[2], rows[3], rows[5]]


async def test_one_bad_row_costs_a_logarithmic_number_of_calls() -> None:
    rows: list[Row] = [greeks(i) for i in range(1024)]
    table = FakeTable([rows[517]])
    refused = await find_refused(rows, table.store)
    assert [r for r, _ in refused] == [rows[517]]
    assert len(table.stored) == 1023
    assert table.calls <= 2 * math.log2(len(rows)) + 1


@pytest.mark.parametrize(
    "outage",
    [
        ConnectionRefusedError("refused"),
        asyncpg.exceptions.AdminShutdownError("shutting down"),
        asyncpg.exceptions.DeadlockDetectedError("deadlock detected"),
        asyncpg.exceptions.ReadOnlySQLTransactionError("read-only transaction"),
        asyncpg.exceptions.UndefinedTableError('relation "portfolio_greeks" does not exist'),
    ],
    ids=type,
)
async def test_an_outage_is_no_refusal_and_is_raised(outage: BaseException) -> None:
    table = FakeTable([], outage=outage)
    with pytest.raises(type(outage)):
        await find_refused([greeks(i) for i in range(4)], table.store)
    assert table.calls == 1


async def test_a_bug_is_raised_not_bisected() -> None:
    table = FakeTable([], outage=RuntimeError("a bug"))
    with pytest.raises(RuntimeError, match="a bug"):
        await find_refused([greeks(i) for i in range(4)], table.store)
    assert table.calls == 1

"""The exposure entry of the greeks stream (shared/codec.py): round trip with bytes and str
fields, NULLs as empty strings, bad counts refused with their reason (never an exception), and
an unknown `table` refused rather than read as a greeks row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.codec import (
    EXPOSURE_COUNTS,
    Rejected,
    decode_data_entry,
    decode_exposure,
    encode_exposure,
    encode_greeks,
)
from shared.models import ExposureRow, GreeksRow

T0 = datetime(2026, 11, 25, 14, 30, 5, 250_000, tzinfo=UTC)
ROW = ExposureRow(
    ts=T0,
    account="DU1234567",
    scope="PORTFOLIO",
    delta=-10.0,
    gamma=-2.4,
    vega=-220.0,
    theta=16.0,
    delta_dollars=-6012.5,
    gamma_dollars=-1443.0,
    underlying_price=601.25,
    legs=5,
    legs_fresh=3,
    legs_carried=1,
    legs_excluded=1,
    greeks_age_max_s=42.5,
    market_data="MIXED",
    daily_pnl=-120.5,
    unrealized_pnl=3400.0,
    realized_pnl=0.0,
    mode="SOCKET",
)
UNKNOWN = ExposureRow(
    T0, "ALL", "SPY", 0.0, 0.0, 0.0, 0.0, None, None, None, 0, 0, 0, 0, None, None
)  # fmt: skip


def as_bytes(fields: dict[str, str]) -> dict[bytes, bytes]:
    """The fields as a Redis reply holds them."""
    return {k.encode(): v.encode() for k, v in fields.items()}


def fields(row: ExposureRow = ROW, **changes: str | None) -> dict[str, str]:
    out = encode_exposure(row)
    for key, value in changes.items():
        if value is None:
            out.pop(key)
        else:
            out[key] = value
    return out


def test_the_wire_format_is_flat_and_readable() -> None:
    assert encode_exposure(ROW) == {
        "v": "1",
        "table": "portfolio_exposure",
        "ts": "2026-11-25T14:30:05.250000+00:00",
        "account": "DU1234567",
        "scope": "PORTFOLIO",
        "delta": "-10.0",
        "gamma": "-2.4",
        "vega": "-220.0",
        "theta": "16.0",
        "delta_dollars": "-6012.5",
        "gamma_dollars": "-1443.0",
        "underlying_price": "601.25",
        "greeks_age_max_s": "42.5",
        "daily_pnl": "-120.5",
        "unrealized_pnl": "3400.0",
        "realized_pnl": "0.0",
        "legs": "5",
        "legs_fresh": "3",
        "legs_carried": "1",
        "legs_excluded": "1",
        "market_data": "MIXED",
        "mode": "SOCKET",
    }


@pytest.mark.parametrize("row", [ROW, UNKNOWN], ids=["known", "nulls"])
def test_round_trip_with_str_and_bytes_fields(row: ExposureRow) -> None:
    assert decode_exposure(encode_exposure(row)) == row
    assert decode_exposure(as_bytes(encode_exposure(row))) == row
    assert decode_data_entry(encode_exposure(row)) == row
    assert decode_data_entry(as_bytes(encode_exposure(row))) == row


def test_unknown_numbers_travel_as_empty_strings_and_come_back_none() -> None:
    wire = encode_exposure(UNKNOWN)
    for name in ("delta_dollars", "gamma_dollars", "underlying_price", "greeks_age_max_s"):
        assert wire[name] == ""
    for name in ("daily_pnl", "unrealized_pnl", "realized_pnl", "market_data"):
        assert wire[name] == ""
    back = decode_exposure(wire)
    assert isinstance(back, ExposureRow)
    assert back.delta_dollars is None and back.market_data is None and back.realized_pnl is None
    # optional fields absent altogether (an older producer): None as well
    bare = fields(UNKNOWN, daily_pnl=None, unrealized_pnl=None, realized_pnl=None)
    assert decode_exposure(bare) == UNKNOWN


finite = st.floats(allow_nan=False, allow_infinity=False)
maybe = st.none() | finite
count = st.integers(min_value=0, max_value=2**31 - 1)


@given(
    st.datetimes(
        min_value=datetime(1990, 1, 1),
        max_value=datetime(2100, 1, 1),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5))]),
    ),
    st.text(max_size=64).filter(lambda s: "\x00" not in s),
    st.text(min_size=1, max_size=64).filter(lambda s: "\x00" not in s),
    st.tuples(finite, finite, finite, finite),
    st.tuples(maybe, maybe, maybe, maybe, maybe, maybe, maybe),
    st.tuples(count, count, count, count),
    st.sampled_from([None, "LIVE", "FROZEN", "DELAYED", "DELAYED_FROZEN", "MIXED"]),
)
def test_any_row_round_trips(ts, account, scope, greeks, optional, counts, kind) -> None:  # type: ignore[no-untyped-def]
    dd, gd, und, age, daily, unrealized, realized = optional
    row = ExposureRow(
        ts, account, scope, *greeks, dd, gd, und, *counts, age, kind,
        daily, unrealized, realized, "PORTAL",
    )  # fmt: skip
    assert decode_exposure(encode_exposure(row)) == row
    assert decode_data_entry(as_bytes(encode_exposure(row))) == row


@pytest.mark.parametrize("name", EXPOSURE_COUNTS)
@pytest.mark.parametrize(
    "bad", ["", "-1", "1.5", "x", "²", "٣", " 1", "1e3", "2147483648", "9" * 40]
)
def test_a_bad_count_is_refused_with_its_reason(name: str, bad: str) -> None:
    got = decode_exposure(fields(**{name: bad}))
    assert got == Rejected(f"{name} {bad[:16]!r} is not a count")
    assert decode_data_entry(as_bytes(fields(**{name: bad}))) == got


def test_the_largest_integer_count_is_taken() -> None:
    got = decode_exposure(fields(legs="2147483647"))
    assert isinstance(got, ExposureRow) and got.legs == 2**31 - 1


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"legs": None}, "missing field legs"),
        ({"scope": None}, "missing field scope"),
        ({"account": None}, "missing field account"),
        ({"v": "2"}, "unsupported codec version v='2'"),
        ({"ts": "2026-11-25T14:30:05"}, "has no UTC offset"),
        ({"scope": ""}, "scope must be 1-64 characters"),
        ({"account": "A" * 65}, "account at most 64"),
        ({"delta": ""}, "delta '' is not a number"),
        ({"vega": "inf"}, "vega 'inf' is not finite"),
        ({"realized_pnl": "n/a"}, "realized_pnl 'n/a' is not a number"),
        ({"market_data": "REALTIME"}, "market_data 'REALTIME' is not one of"),
        ({"account": "DU\x00"}, "contains a NUL character"),
    ],
)
def test_a_malformed_entry_is_refused_never_raised(
    changes: dict[str, str | None], reason: str
) -> None:
    got = decode_data_entry(fields(**changes))
    assert isinstance(got, Rejected), got
    assert reason in got.reason


@pytest.mark.parametrize("table", ["trades", "portfolio_greeks", "PORTFOLIO_EXPOSURE"])
def test_an_unknown_table_is_refused_not_read_as_greeks(table: str) -> None:
    greeks = {**encode_greeks(GreeksRow(T0, "PORTFOLIO", 1.0, 2.0, 3.0, 4.0, None)), "table": table}
    assert decode_data_entry(greeks) == Rejected(f"unknown table {table!r}")
    assert decode_data_entry(as_bytes(greeks)) == Rejected(f"unknown table {table!r}")


def test_an_entry_without_table_is_a_greeks_row() -> None:
    row = GreeksRow(T0, "PORTFOLIO", 1.0, 2.0, 3.0, 4.0, None, "DU1", "SOCKET")
    assert decode_data_entry(encode_greeks(row)) == row
    assert decode_data_entry(as_bytes(encode_greeks(row))) == row
    assert decode_data_entry({**encode_greeks(row), "table": ""}) == row


def test_a_table_field_that_is_not_utf8_is_refused() -> None:
    raw = {**as_bytes(encode_exposure(ROW)), b"table": b"\xff\xfe"}
    got = decode_data_entry(raw)
    assert isinstance(got, Rejected) and got.reason.startswith("unknown table")

"""Client Portal parsers: no exception escapes; what cannot be read is reported, never 0."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.portal.parsers import (
    PortalPosition,
    SnapshotRow,
    Unreadable,
    multiplier_from_desc,
    parse_auth_status,
    parse_int,
    parse_number,
    parse_portfolio_accounts,
    parse_position,
    parse_snapshot_row,
    summary_amount,
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
quirky_text = st.one_of(
    st.text(max_size=24),
    st.from_regex(r"[CH]?-?[0-9]{1,3}(,[0-9]{3})*(\.[0-9]{0,4})?[%KMB]?", fullmatch=True),
    st.from_regex(r"\s*[CH]?[-+]?[0-9.,eE%KMBkmb ]{0,12}\s*", fullmatch=True),
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("168.42", 168.42),
        ("C168.42", 168.42),
        ("H189.60", 189.60),
        ("1,300", 1300.0),
        ("1,234,567.5", 1234567.5),
        ("25.3%", 25.3),
        ("1.2M", 1_200_000.0),
        ("250K", 250_000.0),
        ("-0.4321", -0.4321),
        (0.04, 0.04),
        (7, 7.0),
        (" 0.5 ", 0.5),
        ("0", 0.0),
        ("1e-3", 0.001),
    ],
)
def test_readable_values(raw: object, expected: float) -> None:
    value = parse_number(raw, price=True)
    assert value.value == pytest.approx(expected)
    assert value.reason == ""


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "",
        "  ",
        "N/A",
        "-",
        "abc",
        "1,30",
        "12,34.5",
        "nan",
        "inf",
        "--1",
        True,
        [1],
        {"a": 1},
        math.nan,
        math.inf,
        "1.2.3",
        "%",
        "K",
        "C",
        "0x10",
    ],
)
def test_unreadable_values_are_reported_not_zero(raw: object) -> None:
    value = parse_number(raw, price=True)
    assert value.value is None
    assert value.reason


def test_prefixes_only_on_prices() -> None:
    assert parse_number("C168.42").value is None
    assert parse_number("C168.42", price=True).value == 168.42


@settings(max_examples=600, deadline=None)
@given(st.one_of(json_values, quirky_text), st.booleans())
def test_parse_number_never_raises_and_never_invents_zero(raw: Any, price: bool) -> None:
    value = parse_number(raw, price=price)
    if value.value is None:
        assert value.reason
        return
    assert math.isfinite(value.value)
    if value.value == 0.0:
        # a zero must come from a zero in the input, not from something unreadable
        assert isinstance(raw, int | float) or (isinstance(raw, str) and re.search(r"0", raw))
    if isinstance(raw, str):
        assert re.search(r"\d", raw), "a number out of a string without digits"


OPTION_ROW: dict[str, Any] = {
    "acctId": "DU123456",
    "conid": 584891614,
    "contractDesc": "SPY    JAN2025 440 C [SPY   250117C00440000 100]",
    "position": 1.0,
    "mktPrice": 95.7,
    "assetClass": "OPT",
    "undConid": 756733,
    "multiplier": 100.0,
    "strike": "440",
    "putOrCall": "C",
    "expiry": "20250117",
    "ticker": "SPY",
    "undSym": "SPY",
    "pageSize": 100,
}


def test_option_row() -> None:
    pos = parse_position(OPTION_ROW)
    assert isinstance(pos, PortalPosition)
    assert (
        pos.con_id,
        pos.symbol,
        pos.sec_type,
        pos.quantity,
        pos.multiplier,
        pos.und_con_id,
        pos.has_secdef,
    ) == (584891614, "SPY", "OPT", 1.0, 100.0, 756733, True)


def test_stock_row_multiplier_zero_is_fine() -> None:
    row = {
        "conid": 8314,
        "position": "-1,200",
        "assetClass": "STK",
        "multiplier": 0.0,
        "strike": "0",
        "undConid": 0,
        "ticker": "IBM",
        "contractDesc": "IBM",
    }
    pos = parse_position(row)
    assert isinstance(pos, PortalPosition)
    assert pos.quantity == -1200 and pos.und_con_id == 8314 and pos.symbol == "IBM"
    assert pos.problems == ()


def test_row_without_secdef() -> None:
    row = {
        "conid": 580947749,
        "contractDesc": "META JUN2024 330 P [META 240621P00330000 100]",
        "position": -1.0,
        "assetClass": "OPT",
        "multiplier": None,
        "strike": 0.0,
        "putOrCall": None,
        "expiry": None,
        "undConid": 0,
    }
    pos = parse_position(row)
    assert isinstance(pos, PortalPosition)
    assert not pos.has_secdef
    assert pos.multiplier == 100.0  # read from contractDesc
    assert pos.symbol == "META" and pos.und_con_id is None
    assert any("security definition" in p for p in pos.problems)
    bare = dict(row, contractDesc="META put")
    pos = parse_position(bare)
    assert isinstance(pos, PortalPosition) and pos.multiplier is None


def test_multiplier_from_desc() -> None:
    assert multiplier_from_desc("SPY JAN2025 440 C [SPY   250117C00440000 100]") == 100.0
    assert multiplier_from_desc("ES MAR2026 6000 C [ESH6 C6000 50]") == 50.0
    assert multiplier_from_desc("SPY") is None


@pytest.mark.parametrize("position", [None, "", "abc", math.nan, True, [1]])
def test_unreadable_position_is_reported(position: object) -> None:
    result = parse_position(dict(OPTION_ROW, position=position))
    assert isinstance(result, Unreadable) and "position" in result.reason


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "conid",
                "position",
                "assetClass",
                "multiplier",
                "undConid",
                "undSym",
                "ticker",
                "contractDesc",
                "putOrCall",
                "strike",
                "mktPrice",
                "expiry",
                "fullName",
            ]
        ),
        st.one_of(json_values, quirky_text),
        max_size=13,
    )
    | json_values
)
def test_parse_position_never_raises(row: Any) -> None:
    result = parse_position(row)
    if isinstance(result, Unreadable):
        assert result.reason
        return
    assert math.isfinite(result.quantity)
    raw_qty = row["position"]
    if result.quantity == 0:
        assert isinstance(raw_qty, int | float) or (isinstance(raw_qty, str) and "0" in raw_qty)
    if result.multiplier is not None:
        assert result.multiplier > 0


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "conid",
                "conidEx",
                "31",
                "7635",
                "7308",
                "7309",
                "7310",
                "7311",
                "7633",
                "_updated",
                "6509",
            ]
        ),
        st.one_of(json_values, quirky_text),
        max_size=11,
    )
    | json_values
)
def test_parse_snapshot_row_never_raises(row: Any) -> None:
    result = parse_snapshot_row(row)
    if isinstance(result, Unreadable):
        assert result.reason
        return
    assert isinstance(result, SnapshotRow)
    for key, value in (
        ("7308", result.delta),
        ("7309", result.gamma),
        ("7311", result.vega),
        ("7310", result.theta),
    ):
        if value.value is None:
            assert value.reason
        elif value.value == 0:
            raw = row[key]
            assert isinstance(raw, int | float) or (isinstance(raw, str) and "0" in raw)


def test_snapshot_rows() -> None:
    pre = parse_snapshot_row({"conid": 265598, "conidEx": "265598"})
    assert isinstance(pre, SnapshotRow) and pre.preflight and not pre.has_greeks
    full = parse_snapshot_row(
        {
            "conid": 600000001,
            "31": "C12.5",
            "7308": "0.5432",
            "7309": "0.0123",
            "7310": "-0.0456",
            "7311": "0.3",
            "7633": "18.2%",
            "_updated": 1712596911593,
        }
    )
    assert isinstance(full, SnapshotRow) and full.has_greeks
    assert (full.delta.value, full.theta.value, full.price) == (0.5432, -0.0456, 12.5)
    late = parse_snapshot_row({"conid": "600000001", "31": "12.5", "6509": "RpB"})
    assert isinstance(late, SnapshotRow) and not late.preflight and not late.has_greeks
    assert late.delta.reason == "absent"
    bad = parse_snapshot_row({"conid": 1, "7308": "N/A", "7309": "1", "7310": "1", "7311": "1"})
    assert isinstance(bad, SnapshotRow) and not bad.has_greeks
    assert bad.problems() and "delta" in bad.problems()[0]


def test_snapshot_rows_availability_and_errors() -> None:
    """Field 6509 is kept (on a row without values too: "not subscribed" carries none), and a
    row's own error (no line left, a contract the gateway does not know) is neither a
    pre-flight nor values."""
    late = parse_snapshot_row({"conid": 7, "31": "12.5", "6509": "DpB", "_updated": 5})
    assert isinstance(late, SnapshotRow) and late.availability == "DpB"
    assert late.updated_ms == 5
    none = parse_snapshot_row({"conid": 7, "conidEx": "7", "_updated": 6, "6509": "N"})
    assert isinstance(none, SnapshotRow) and none.preflight and none.availability == "N"
    refused = parse_snapshot_row(
        {"conid": 7, "conidEx": "7", "error": "Max number of tickers has been reached"}
    )
    assert isinstance(refused, SnapshotRow) and not refused.preflight
    assert refused.error.startswith("Max number") and not refused.has_greeks
    assert parse_snapshot_row({"conid": 7, "error": 404}) == SnapshotRow(7, preflight=True)


def test_auth_status_and_accounts() -> None:
    ok = parse_auth_status({"authenticated": True, "competing": False, "connected": True})
    assert ok.usable
    competing = parse_auth_status({"authenticated": True, "competing": True, "connected": True})
    assert not competing.usable and "competing" in competing.reason()
    tickle = parse_auth_status(
        {
            "session": "x",
            "iserver": {
                "authStatus": {"authenticated": False, "competing": False, "connected": True}
            },
        }
    )
    assert not tickle.usable and "not authenticated" in tickle.reason()
    assert not parse_auth_status("<html>").usable
    assert parse_portfolio_accounts([{"id": "DU1", "accountId": "DU1"}, {"id": "DU2"}, 3]) == [
        "DU1",
        "DU2",
    ]
    assert parse_portfolio_accounts({}) == []


def test_summary_amount() -> None:
    body = {
        "netliquidation": {
            "amount": 206415536.0,
            "currency": "USD",
            "isNull": False,
            "value": None,
        },
        "cushion": {"amount": 0.0, "currency": None, "isNull": False, "value": "0.994598"},
        "gone": {"amount": 0.0, "currency": None, "isNull": True, "value": None},
    }
    assert summary_amount(body, "netliquidation") == 206415536.0
    assert summary_amount(body, "cushion") == 0.994598
    assert summary_amount(body, "gone") is None
    assert summary_amount(body, "missing") is None


@pytest.mark.parametrize("raw", ["\u00b2", "\u0663", "12\u00b2", "", " ", "-1x"])
def test_parse_int_takes_ascii_digits_only(raw: str) -> None:
    # str.isdigit() is true for superscripts and other scripts' digits, which int() refuses
    assert parse_int(raw) is None


def test_parse_int_reads_conids() -> None:
    assert parse_int(" 265598 ") == 265598
    assert parse_int(265598.0) == 265598
    assert parse_int(True) is None

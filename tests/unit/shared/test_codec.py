"""Stream codec: round trip, the documented wire format, and rejection with a reason."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from shared.codec import (
    Rejected,
    decode_api_log,
    decode_greeks,
    encode_api_log,
    encode_greeks,
)
from shared.models import ApiLogRow, GreeksRow

finite = st.floats(allow_nan=False, allow_infinity=False)
aware = st.datetimes(
    min_value=datetime(1990, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5)), timezone(timedelta(hours=9))]),
)
text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=50
)


@given(
    aware,
    st.text(min_size=1, max_size=64).filter(lambda s: "\x00" not in s),
    finite,
    finite,
    finite,
    finite,
    st.none() | finite,
    text,
)
def test_greeks_round_trip(ts, contract, d, g, v, t, und, account) -> None:  # type: ignore[no-untyped-def]
    row = GreeksRow(ts, contract, d, g, v, t, und, account, "SOCKET")
    back = decode_greeks(encode_greeks(row))
    assert back == row


@given(aware, st.sampled_from(["INFO", "WARN", "ERROR"]), text, text)
def test_api_log_round_trip(ts, status, message, mode) -> None:  # type: ignore[no-untyped-def]
    row = ApiLogRow(ts, mode, status, message, "writer")
    assert decode_api_log(encode_api_log(row)) == row


def test_wire_format_is_flat_and_readable() -> None:
    row = GreeksRow(
        datetime(2026, 11, 25, 14, 30, 5, tzinfo=UTC),
        "PORTFOLIO",
        -10.0,
        -2.4,
        -220.0,
        16.0,
        None,
        "DU1234567",
        "SOCKET",
    )
    assert encode_greeks(row) == {
        "v": "1",
        "ts": "2026-11-25T14:30:05.000000+00:00",
        "contract": "PORTFOLIO",
        "delta": "-10.0",
        "gamma": "-2.4",
        "vega": "-220.0",
        "theta": "16.0",
        "underlying_price": "",
        "account": "DU1234567",
        "mode": "SOCKET",
    }


def test_independent_producer_bytes_decode() -> None:
    fields = {
        b"v": b"1",
        b"ts": b"2026-11-25T09:30:05-05:00",
        b"contract": b"PORTFOLIO",
        b"delta": b"1e2",
        b"gamma": b"0",
        b"vega": b"3.5",
        b"theta": b"-1",
        b"underlying_price": b"600.25",
    }
    row = decode_greeks(fields)
    assert isinstance(row, GreeksRow)
    assert row.ts == datetime(2026, 11, 25, 14, 30, 5, tzinfo=UTC)
    assert row.delta == 100.0 and row.underlying_price == 600.25


BASE = {
    "v": "1",
    "ts": "2026-11-25T14:30:05+00:00",
    "contract": "PORTFOLIO",
    "delta": "1",
    "gamma": "1",
    "vega": "1",
    "theta": "1",
    "underlying_price": "",
}


def test_rejections_say_why() -> None:
    cases = {
        "missing field v": {k: v for k, v in BASE.items() if k != "v"},
        "unsupported codec version": {**BASE, "v": "2"},
        "missing field delta": {k: v for k, v in BASE.items() if k != "delta"},
        "is not ISO-8601": {**BASE, "ts": "yesterday"},
        "has no UTC offset": {**BASE, "ts": "2026-11-25T14:30:05"},
        "is not a number": {**BASE, "gamma": "abc"},
        "is not finite": {**BASE, "vega": "nan"},
        "contract must be": {**BASE, "contract": ""},
        "NUL": {**BASE, "contract": "A\x00B"},
    }
    for reason, fields in cases.items():
        result = decode_greeks(fields)
        assert isinstance(result, Rejected), reason
        assert reason in result.reason
    assert isinstance(decode_greeks({b"v": b"\xff\xfe"}), Rejected)
    bad_status = decode_api_log(
        {"v": "1", "ts": BASE["ts"], "api_mode": "SOCKET", "status": "DEBUG", "message": "x"}
    )
    assert isinstance(bad_status, Rejected) and "status" in bad_status.reason


@given(st.dictionaries(st.binary(max_size=20), st.binary(max_size=40), max_size=12))
def test_decoder_never_raises_on_arbitrary_bytes(fields: dict[bytes, bytes]) -> None:
    for decode in (decode_greeks, decode_api_log):
        result = decode(fields)
        assert isinstance(result, Rejected | GreeksRow | ApiLogRow)


@given(st.dictionaries(st.sampled_from(list(BASE)), st.text(max_size=30), max_size=10))
def test_decoder_on_mutated_entries(mutation: dict[str, str]) -> None:
    result = decode_greeks({**BASE, **mutation})
    if isinstance(result, GreeksRow):
        assert all(
            math.isfinite(x) for x in (result.delta, result.gamma, result.vega, result.theta)
        )
        assert result.ts.tzinfo is not None
    else:
        assert isinstance(result, Rejected) and result.reason

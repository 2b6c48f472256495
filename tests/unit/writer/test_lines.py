"""The buffer's line format (writer/lines.py): every malformed, torn, non-finite or impossible
line is refused with its reason and never becomes a row; the drain's fast paths (`copy_line`,
`raw_line`) never take a line the codec would refuse."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from shared.codec import Rejected
from shared.jsonl import Record
from shared.models import ApiLogRow, ExposureRow, GreeksRow
from writer.lines import (
    Fast,
    as_record,
    buffer_entry,
    copy_line,
    decode_line,
    encode_line,
    prepare,
    raw_line,
)

T0 = datetime(2026, 11, 25, 14, 30, 0, 250_000, tzinfo=UTC)
ROW = GreeksRow(T0, "PORTFOLIO", 12.5, -0.25, 3.0, -1.75, 601.25)
LOG = ApiLogRow(T0, "SOCKET", "WARN", "gateway disconnected", "writer")
EXPOSURE = ExposureRow(
    T0, "DU1234567", "PORTFOLIO", 12.5, -0.25, 3.0, -1.75,
    7512.5, None, 601.25, 4, 3, 1, 0, 12.0, "LIVE", daily_pnl=-120.5, mode="SOCKET",
)  # fmt: skip


def greeks_fields(**changes: Any) -> dict[str, Any]:
    """The fields of ROW's buffer line, with `changes` (None: the field removed)."""
    fields: dict[str, Any] = dict(encode_line(ROW)["fields"])
    for key, value in changes.items():
        if value is None:
            fields.pop(key, None)
        else:
            fields[key] = value
    return fields


def api_log_line(**changes: str) -> Record:
    return {"stream": "api_logs", "fields": {**encode_line(LOG)["fields"], **changes}}


def greeks(**changes: Any) -> Record:
    return {"stream": "greeks", "fields": greeks_fields(**changes)}


def exposure(**changes: str) -> Record:
    return {"stream": "greeks", "fields": {**encode_line(EXPOSURE)["fields"], **changes}}


# ---- decode_line ---------------------------------------------------------------------------
def test_rows_round_trip_through_their_buffer_line() -> None:
    assert decode_line(encode_line(ROW)) == ROW
    assert decode_line(encode_line(LOG)) == LOG
    no_price = GreeksRow(T0, "SPY", 1.0, 0.0, 0.0, 0.0, None)
    assert decode_line(encode_line(no_price)) == no_price
    assert decode_line(encode_line(EXPOSURE)) == EXPOSURE
    line = encode_line(EXPOSURE)
    assert line["stream"] == "greeks" and line["fields"]["table"] == "portfolio_exposure"


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"stream": "greeks"}, "buffer line without string fields"),
        ({"stream": "greeks", "fields": ["ts", "x"]}, "buffer line without string fields"),
        ({"stream": "greeks", "fields": {"v": 1}}, "buffer line without string fields"),
        ({"stream": "trades", "fields": {}}, "buffer line of unknown stream 'trades'"),
        ({"fields": {}}, "buffer line of unknown stream 'None'"),
        (greeks(v="2"), "unsupported codec version v='2'"),
        (greeks(v=None), "missing field v"),
        (greeks(delta=None), "missing field delta"),
        (greeks(delta="abc"), "delta 'abc' is not a number"),
        (greeks(gamma="nan"), "gamma 'nan' is not finite"),
        (greeks(vega="inf"), "vega 'inf' is not finite"),
        (greeks(theta="1e309"), "theta '1e309' is not finite"),  # overflows to infinity
        (greeks(underlying_price="-inf"), "underlying_price '-inf' is not finite"),
        (greeks(underlying_price="n/a"), "underlying_price 'n/a' is not a number"),
        (greeks(ts="2026-02-30T10:00:00+00:00"), "is not ISO-8601"),  # no such day
        (greeks(ts="2026-11-25T25:00:00+00:00"), "is not ISO-8601"),  # no such hour
        (greeks(ts="2026-11-25T14:30:00"), "has no UTC offset"),
        (greeks(ts="2026-11-25T14:3"), "is not ISO-8601"),  # torn
        (greeks(contract=""), "contract must be 1-64 characters"),
        (greeks(contract="X" * 65), "contract must be 1-64 characters"),
        (greeks(contract="SP\x00Y"), "contains a NUL character"),
        (greeks(account="DU\x00"), "contains a NUL character"),
        (greeks(table="trades"), "unknown table 'trades'"),  # never taken for a greeks row
        (exposure(legs="-1"), "legs '-1' is not a count"),
        (exposure(scope=""), "scope must be 1-64 characters"),
        (exposure(market_data="SOMETIMES"), "market_data 'SOMETIMES' is not one of"),
        (exposure(delta_dollars="nan"), "delta_dollars 'nan' is not finite"),
        (api_log_line(status="LOUD"), "status 'LOUD' is not one of"),
        (api_log_line(source="cron"), "source 'cron' is not one of"),
    ],
)
def test_a_malformed_line_gives_its_reason_and_never_a_row(record: Record, reason: str) -> None:
    result = decode_line(record)
    assert isinstance(result, Rejected), result
    assert reason in result.reason


def test_unusual_yet_valid_greeks_are_left_to_the_codec_and_accepted() -> None:
    """What the fast decoder does not take (an exponent, a 64-character contract) the codec
    decides: same row either way."""
    row = decode_line(greeks(delta="1.25E+1", contract="C" * 64))
    assert row == GreeksRow(T0, "C" * 64, 12.5, -0.25, 3.0, -1.75, 601.25)


# ---- copy_line -----------------------------------------------------------------------------
def test_an_ordinary_line_becomes_its_copy_text() -> None:
    f = greeks_fields(account="DU1234567")
    assert copy_line(f) == "\t".join(
        (
            f["ts"],
            "PORTFOLIO",
            *(f["delta"], f["gamma"], f["vega"], f["theta"], f["underlying_price"]),
            "DU1234567",
        )
    )
    assert copy_line(greeks_fields(underlying_price=""))
    assert copy_line(greeks_fields(underlying_price="")).endswith("\t\\N\t")  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "fields",
    [
        "not a dict",
        ["ts"],
        greeks_fields(v="2"),
        greeks_fields(contract="SP\x00Y"),
        greeks_fields(underlying_price="\\N"),  # the NULL marker as a value: text, no number
        greeks_fields(delta=None),
        greeks_fields(delta=1.5),  # not text
        greeks_fields(contract="SPY\tOPT"),  # would split the COPY row
        greeks_fields(contract="SPY\\OPT"),  # a COPY escape
        greeks_fields(contract="X" * 65),
        greeks_fields(account="DU\t1"),  # would split the COPY row
        greeks_fields(account="DU\\1"),  # a COPY escape
        greeks_fields(table="portfolio_greeks"),  # any table field: the codec decides
        encode_line(EXPOSURE)["fields"],
        greeks_fields(delta="0x10"),
        greeks_fields(ts="2026-11-25T14:30:00"),  # no offset
        greeks_fields(ts="2026-02-30T10:00:00+00:00"),  # no such day: the regex cannot see it
        greeks_fields(delta="1e308", gamma="1e308"),  # each finite, the sum is not
        greeks_fields(underlying_price="1e309"),
    ],
)
def test_copy_line_leaves_every_unusual_line_to_the_codec(fields: object) -> None:
    assert copy_line(fields) is None


# ---- raw_line ------------------------------------------------------------------------------
def raw(record: Record) -> bytes:
    return orjson.dumps(record)


def test_the_writers_own_line_is_taken_without_a_parse() -> None:
    line = raw(encode_line(ROW))
    fast = raw_line(line)
    assert isinstance(fast, Fast)
    assert fast.copy.decode() == copy_line(greeks_fields())
    assert as_record(fast) == encode_line(ROW)
    no_price = raw_line(raw(greeks(underlying_price="")))
    assert no_price is not None and no_price.copy.endswith(b"\t\\N\t")
    account = raw_line(raw(greeks(account="DU1234567")))
    assert account is not None and account.copy.endswith(b"\tDU1234567")
    assert account.copy.decode() == copy_line(greeks_fields(account="DU1234567"))


@pytest.mark.parametrize(
    "line",
    [
        raw(greeks(ts="2026-02-30T10:00:00+00:00")),  # no such day
        raw(greeks(delta="1e308", gamma="1e308")),  # overflows to infinity
        raw(greeks(underlying_price="1e309")),
        raw(greeks(delta="nan")),
        raw(greeks(contract='SP"Y')),  # an escaped quote: the JSON parse decides
        raw(greeks(v="2")),
        raw(encode_line(LOG)),
        raw(encode_line(EXPOSURE)),
        raw(greeks(account="A" * 65)),  # longer than the fast path takes: the codec decides
        raw(encode_line(ROW))[:-5],  # torn
        b"",
    ],
)
def test_raw_line_refuses_anything_but_the_plain_layout(line: bytes) -> None:
    assert raw_line(line) is None


def test_as_record_keeps_a_parsed_record() -> None:
    record = greeks()
    assert as_record(record) is record


# ---- prepare / buffer_entry ----------------------------------------------------------------
def test_a_chunk_of_ordinary_lines_is_copy_text_plus_the_log_rows() -> None:
    fast = raw_line(raw(encode_line(ROW)))
    assert fast is not None
    parsed = greeks(ts="2026-11-25T14:31:00+00:00")
    prepared = prepare([fast, encode_line(LOG), parsed], 99)
    assert prepared.end_offset == 99
    assert prepared.logs == [LOG]
    assert prepared.rejected == []
    assert prepared.text == fast.copy + b"\n" + copy_line(parsed["fields"]).encode() + b"\n"  # type: ignore[union-attr]


def test_a_chunk_with_a_refused_log_line_dead_letters_it_and_keeps_the_rest() -> None:
    bad_log = api_log_line(status="?")
    unknown: Record = {"stream": "trades", "fields": "torn"}
    prepared = prepare([encode_line(ROW), bad_log, unknown], 7)
    assert prepared.text is not None and prepared.text.count(b"\n") == 1
    assert prepared.rejected_ids == {id(bad_log), id(unknown)}
    (entry1, why1), (entry2, why2) = prepared.rejected
    assert why1.startswith("buffer line: status '?' is not one of")
    assert entry1.stream == "buffer:api_logs" and entry1.id == "buffer"
    assert entry1.fields[b"status"] == b"?" and entry1.fields[b"message"] == LOG.message.encode()
    assert why2 == "buffer line: buffer line without string fields"
    assert entry2.stream == "buffer:trades"
    assert orjson.loads(entry2.fields[b"line"]) == unknown  # the whole line, as stored


def test_a_chunk_with_one_unusual_greeks_line_goes_to_the_codec_whole() -> None:
    prepared = prepare([encode_line(ROW), greeks(contract="SPY\tOPT"), encode_line(LOG)], 5)
    assert prepared.text is None
    assert prepared.logs == [] and prepared.rejected == []


def test_an_empty_chunk_is_empty_copy_text() -> None:
    assert prepare([], 0).text == b""


def test_buffer_entry_of_a_line_without_a_stream() -> None:
    entry = buffer_entry({"fields": {"a": 1}})
    assert entry.stream == "buffer:buffer"
    assert entry.fields == {b"a": b"1"}


def test_a_chunk_with_exposure_lines_keeps_its_copy_text_and_decodes_them() -> None:
    """Exposure lines between greeks lines: the greeks lines stay COPY text, the exposure rows
    are decoded by the codec in order, a bad one is dead-lettered with its reason."""
    bad = exposure(legs_fresh="x")
    second = exposure(scope="SPY")
    prepared = prepare([encode_line(ROW), encode_line(EXPOSURE), bad, encode_line(LOG), second], 9)
    assert prepared.text is not None and prepared.text.count(b"\n") == 1
    assert prepared.exposures == [EXPOSURE, decode_line(second)]
    assert prepared.logs == [LOG]
    assert prepared.rejected_ids == {id(bad)}
    ((entry, why),) = prepared.rejected
    assert why == "buffer line: legs_fresh 'x' is not a count"
    assert entry.stream == "buffer:greeks" and entry.fields[b"table"] == b"portfolio_exposure"


def test_a_greeks_line_with_an_empty_table_field_goes_to_the_codec() -> None:
    odd = greeks(table="")
    assert decode_line(odd) == ROW
    assert prepare([encode_line(ROW), odd], 3).text is None


def test_an_old_greeks_line_without_account_still_drains() -> None:
    """A line written before the account was a field: read as account ''."""
    old = greeks(account=None, mode=None)
    assert decode_line(old) == ROW
    assert copy_line(old["fields"]) is not None
    assert copy_line(old["fields"]).endswith("\t601.25\t")  # type: ignore[union-attr]

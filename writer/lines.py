"""The buffer's line format, and the drain's fast paths over it.

A line is one row: `{"stream": "greeks" | "api_logs", "fields": {...}}` with the stream codec's
own flat string fields (shared/codec.py), so the same codec decodes it, and a prefix change
keeps the buffer readable. An exposure row is a line of the greeks stream whose fields carry
`table=portfolio_exposure`, as on the stream itself.

The drain takes the common case quickly and never more permissively than the codec: a greeks
line in the writer's own layout (`raw_line`, a regex over the raw bytes, no JSON parse) or a
parsed greeks line of the ordinary shape (`copy_line`) becomes one line of COPY text, whose
values the server parses; exposure lines are decoded by the codec and copied as records. A
chunk with anything unusual goes through the codec, line by line.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from shared.codec import (
    Rejected,
    decode_api_log,
    decode_data_entry,
    encode_api_log,
    encode_exposure,
    encode_greeks,
)
from shared.jsonl import Record
from shared.models import ApiLogRow, ExposureRow, GreeksRow
from shared.names import CODEC_VERSION
from shared.names import STREAM_API_LOGS as API_LOGS
from shared.names import STREAM_GREEKS as GREEKS
from writer.consumer import Entry
from writer.isolate import Row

_fromiso = datetime.fromisoformat
_isfinite = math.isfinite


def encode_line(row: Row) -> Record:
    if isinstance(row, GreeksRow):
        return {"stream": GREEKS, "fields": encode_greeks(row)}
    if isinstance(row, ExposureRow):
        return {"stream": GREEKS, "fields": encode_exposure(row)}
    return {"stream": API_LOGS, "fields": encode_api_log(row)}


def _fast_greeks(fields: dict[str, Any]) -> GreeksRow | None:
    """The common case of `decode_greeks`, about 3x faster; None when anything is unusual, and
    the codec decides (with the reason). Never more permissive."""
    try:
        if fields["v"] != CODEC_VERSION or "table" in fields:
            return None
        ts = _fromiso(fields["ts"])
        contract = fields["contract"]
        delta = float(fields["delta"])
        gamma = float(fields["gamma"])
        vega = float(fields["vega"])
        theta = float(fields["theta"])
        und_text = fields.get("underlying_price", "")
        und = float(und_text) if und_text != "" else None
        account = fields.get("account", "")
        mode = fields.get("mode", "")
    except (KeyError, ValueError, TypeError):
        return None
    if (
        ts.tzinfo is None
        or not isinstance(contract, str)
        or not 0 < len(contract) <= 64
        or not isinstance(account, str)
        or not isinstance(mode, str)
        or "\x00" in contract
        or "\x00" in account
        or "\x00" in mode
        or not _isfinite(delta + gamma + vega + theta + (und or 0.0))
    ):
        return None
    return GreeksRow(ts, contract, delta, gamma, vega, theta, und, account, mode)


def decode_line(record: Record) -> Row | Rejected:
    """A buffer line back to its row, with the stream codec (never raises)."""
    stream = record.get("stream")
    fields = record.get("fields")
    if not isinstance(fields, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in fields.items()
    ):
        return Rejected("buffer line without string fields")
    if stream == GREEKS:
        return _fast_greeks(fields) or decode_data_entry(fields)
    if stream == API_LOGS:
        return decode_api_log(fields)
    return Rejected(f"buffer line of unknown stream {str(stream)[:32]!r}")


# ---- COPY text -------------------------------------------------------------------------------
_TS = (
    r"\d{4}-\d\d-\d\dT(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d{1,6})?"
    r"[+-](?:[01]\d|2[0-3]):[0-5]\d"
)
_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_TEXT = r"[^\t\n\r\\\x00]"  # nothing COPY text must escape
_COPY_LINE = re.compile(
    _TS
    + r"\t"
    + _TEXT
    + "{1,64}"
    + (r"\t" + _NUM) * 4
    + r"\t(?:"
    + _NUM
    + r"|\\N)\t"
    + _TEXT
    + "{0,64}"
)
# printable ASCII but `"` and `\`: a JSON string without escapes, and nothing COPY must escape
_PLAIN = rb"[\x20\x21\x23-\x5b\x5d-\x7e]"
_RAW_GREEKS = re.compile(
    rb'\{"stream":"greeks","fields":\{"v":"1","ts":"('
    + _TS.encode()
    + rb')","contract":"('
    + _PLAIN
    + rb'{1,64})","delta":"('
    + _NUM.encode()
    + rb')","gamma":"('
    + _NUM.encode()
    + rb')","vega":"('
    + _NUM.encode()
    + rb')","theta":"('
    + _NUM.encode()
    + rb')","underlying_price":"('
    + _NUM.encode()
    + rb')?","account":"('
    + _PLAIN
    + rb'{0,64})","mode":"'
    + _PLAIN
    + rb'*"\}\}'
)


def _finite(ts: str, numbers: tuple[str | bytes, ...], und: str | bytes | None) -> bool:
    """What a regex cannot see: a real calendar date, no overflow to infinity."""
    try:
        _fromiso(ts)
        total = float(numbers[0]) + float(numbers[1]) + float(numbers[2]) + float(numbers[3])
        return _isfinite(total) and (not und or _isfinite(float(und)))
    except ValueError:
        return False


def copy_line(fields: object) -> str | None:
    """A parsed greeks line's fields as one line of COPY text, when their shape is the ordinary
    one (ISO time with offset, plain finite decimals, a contract and an account without
    tab/newline/backslash); None otherwise, and the codec decides. Never more permissive than
    `decode_greeks`."""
    if not isinstance(fields, dict) or "table" in fields:
        return None
    try:
        if fields["v"] != CODEC_VERSION or "\x00" in "".join(fields.values()):
            return None
        ts = fields["ts"]
        numbers = (fields["delta"], fields["gamma"], fields["vega"], fields["theta"])
        und = fields.get("underlying_price", "")
        if und == "\\N":
            return None  # text, not a number: the codec rejects it
        account = fields.get("account", "")
        line = "\t".join((ts, fields["contract"], *numbers, und or "\\N", account))
    except (KeyError, TypeError):
        return None
    if _COPY_LINE.fullmatch(line) is None or not _finite(ts, numbers, und):
        return None
    return line


@dataclass(frozen=True, slots=True)
class Fast:
    """A greeks line taken by `raw_line`: the line as stored, and its COPY text."""

    line: bytes
    copy: bytes


def raw_line(line: bytes) -> Fast | None:
    """The writer's own greeks line layout, recognised without a JSON parse (the drain's hot
    path); None for anything else. Never more permissive than `decode_greeks`."""
    m = _RAW_GREEKS.fullmatch(line)
    if m is None:
        return None
    ts, contract, delta, gamma, vega, theta, und, account = m.groups()
    if not _finite(ts.decode(), (delta, gamma, vega, theta), und):
        return None
    copy = b"\t".join((ts, contract, delta, gamma, vega, theta, und or b"\\N", account))
    return Fast(line, copy)


def as_record(item: Record | Fast) -> Record:
    if isinstance(item, Fast):
        record: Record = orjson.loads(item.line)
        return record
    return item


# ---- a chunk ready to write ------------------------------------------------------------------
@dataclass
class Prepared:
    """One chunk of the buffer, ready to write: COPY text (`text`) for its greeks lines plus the
    decoded exposure and api_logs rows, or `text` None when the codec must decode every line."""

    records: list[Record | Fast]
    end_offset: int
    text: bytes | None = None
    logs: list[ApiLogRow] = field(default_factory=list)
    exposures: list[ExposureRow] = field(default_factory=list)
    rejected: list[tuple[Entry, str]] = field(default_factory=list)
    rejected_ids: set[int] = field(default_factory=set)
    bad: list[tuple[int, str]] = field(default_factory=list)


def prepare(records: list[Record | Fast], end_offset: int) -> Prepared:
    prepared = Prepared(records, end_offset)
    lines: list[bytes] = []
    for item in records:
        if isinstance(item, Fast):
            lines.append(item.copy)
            continue
        fields = item.get("fields")
        if item.get("stream") == GREEKS and not (isinstance(fields, dict) and "table" in fields):
            line = copy_line(fields)
            if line is None:  # text None: the codec decodes the whole chunk, in order
                return Prepared(records, end_offset)
            lines.append(line.encode())
            continue
        row = decode_line(item)
        if isinstance(row, ApiLogRow):
            prepared.logs.append(row)
        elif isinstance(row, ExposureRow):
            prepared.exposures.append(row)
        elif isinstance(row, Rejected):
            prepared.rejected.append((buffer_entry(item), f"buffer line: {row.reason}"))
            prepared.rejected_ids.add(id(item))
        else:
            return Prepared(records, end_offset)  # not a greeks line, yet a greeks row
    lines.append(b"")
    prepared.text = b"\n".join(lines) if len(lines) > 1 else b""
    return prepared


def buffer_entry(record: Record) -> Entry:
    """A buffer line as a dead-letter entry: its stream, id `buffer`, its original fields."""
    fields: Any = record.get("fields")
    out: dict[bytes, bytes] = {}
    if isinstance(fields, dict):
        for k, v in fields.items():
            out[str(k).encode()] = str(v).encode()
    else:
        out[b"line"] = orjson.dumps(record)
    stream = str(record.get("stream", "buffer"))[:64]
    return Entry(stream=f"buffer:{stream}", id="buffer", fields=out)

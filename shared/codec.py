"""The versioned, flat, human-readable stream codec (docs/DELIVERY.md).

Encoding is total; decoding never raises: a malformed entry comes back as `Rejected` with a
reason, which the writer sends to the dead-letter stream.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from shared.config.redact import scrub
from shared.models import ApiLogRow, ExposureRow, GreeksRow
from shared.names import CODEC_VERSION, MARKET_DATA_KINDS, SOURCES, STATUSES

Fields = Mapping[bytes, bytes] | Mapping[str, str] | Mapping[bytes | str, bytes | str]

GREEK_FIELDS = ("delta", "gamma", "vega", "theta")
MAX_TEXT = 10_000


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str


def format_ts(ts: datetime) -> str:
    if ts.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return ts.isoformat(timespec="microseconds")


def format_number(value: float) -> str:
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {value!r}")
    return repr(float(value))


def encode_greeks(row: GreeksRow) -> dict[str, str]:
    return {
        "v": CODEC_VERSION,
        "ts": format_ts(row.ts),
        "contract": row.contract,
        "delta": format_number(row.delta),
        "gamma": format_number(row.gamma),
        "vega": format_number(row.vega),
        "theta": format_number(row.theta),
        "underlying_price": (
            "" if row.underlying_price is None else format_number(row.underlying_price)
        ),
        "account": row.account,
        "mode": row.mode,
    }


EXPOSURE_TABLE = "portfolio_exposure"  # the `table` field of an exposure entry
EXPOSURE_FLOATS = ("delta_dollars", "gamma_dollars", "underlying_price", "greeks_age_max_s")
EXPOSURE_PNL = ("daily_pnl", "unrealized_pnl", "realized_pnl")
EXPOSURE_COUNTS = ("legs", "legs_fresh", "legs_carried", "legs_excluded")
EXPOSURE_KINDS = (*MARKET_DATA_KINDS, "MIXED")
MAX_COUNT = 2**31 - 1  # the counts are INTEGER columns


def _optional(value: float | None) -> str:
    return "" if value is None else format_number(value)


def encode_exposure(row: ExposureRow) -> dict[str, str]:
    """An exposure row travels on the greeks stream, told apart by its `table` field."""
    out = {
        "v": CODEC_VERSION,
        "table": EXPOSURE_TABLE,
        "ts": format_ts(row.ts),
        "account": row.account,
        "scope": row.scope,
        **{name: format_number(getattr(row, name)) for name in GREEK_FIELDS},
        **{name: _optional(getattr(row, name)) for name in EXPOSURE_FLOATS + EXPOSURE_PNL},
        **{name: str(int(getattr(row, name))) for name in EXPOSURE_COUNTS},
        "market_data": row.market_data or "",
        "mode": row.mode,
    }
    return out


def encode_api_log(row: ApiLogRow) -> dict[str, str]:
    return {
        "v": CODEC_VERSION,
        "ts": format_ts(row.ts),
        "api_mode": row.api_mode,
        "status": row.status,
        "message": scrub(row.message),  # messages quote exceptions, which may quote a DSN
        "source": row.source,
    }


def as_text(value: object) -> str:
    """A Redis reply value as text: None is empty, bytes are decoded (bad UTF-8 replaced)."""
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _text_fields(fields: Fields) -> dict[str, str] | Rejected:
    out: dict[str, str] = {}
    for key, value in fields.items():
        try:
            k = key.decode() if isinstance(key, bytes) else str(key)
            v = value.decode() if isinstance(value, bytes) else str(value)
        except UnicodeDecodeError:
            return Rejected("field is not valid UTF-8")
        if "\x00" in v:
            return Rejected(f"field {k[:32]!r} contains a NUL character")
        out[k] = v
    return out


def _parse_ts(text: str) -> datetime | Rejected:
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        return Rejected(f"ts {text[:64]!r} is not ISO-8601")
    if ts.tzinfo is None or ts.utcoffset() is None:
        return Rejected(f"ts {text[:64]!r} has no UTC offset")
    return ts


def _parse_number(name: str, text: str) -> float | Rejected:
    try:
        value = float(text)
    except ValueError:
        return Rejected(f"{name} {text[:64]!r} is not a number")
    if not math.isfinite(value):
        return Rejected(f"{name} {text[:64]!r} is not finite")
    return value


def _check_version(f: dict[str, str]) -> Rejected | None:
    version = f.get("v")
    if version is None:
        return Rejected("missing field v")
    if version != CODEC_VERSION:
        return Rejected(f"unsupported codec version v={version[:16]!r}")
    return None


def _envelope(
    fields: Fields, required: tuple[str, ...]
) -> tuple[dict[str, str], datetime] | Rejected:
    """The text fields of an entry of this codec version with the `required` ones, and its ts."""
    f = _text_fields(fields)
    if isinstance(f, Rejected):
        return f
    bad = _check_version(f)
    if bad:
        return bad
    for name in required:
        if name not in f:
            return Rejected(f"missing field {name}")
    ts = _parse_ts(f["ts"])
    if isinstance(ts, Rejected):
        return ts
    return f, ts


def decode_greeks(fields: Fields) -> GreeksRow | Rejected:
    envelope = _envelope(fields, ("ts", "contract", *GREEK_FIELDS))
    if isinstance(envelope, Rejected):
        return envelope
    f, ts = envelope
    contract = f["contract"]
    if not contract or len(contract) > 64:
        return Rejected("contract must be 1-64 characters")
    greeks: list[float] = []
    for name in GREEK_FIELDS:
        value = _parse_number(name, f[name])
        if isinstance(value, Rejected):
            return value
        greeks.append(value)
    und_text = f.get("underlying_price", "")
    underlying: float | None = None
    if und_text != "":
        parsed = _parse_number("underlying_price", und_text)
        if isinstance(parsed, Rejected):
            return parsed
        underlying = parsed
    delta, gamma, vega, theta = greeks
    return GreeksRow(
        ts=ts,
        contract=contract,
        delta=delta,
        gamma=gamma,
        vega=vega,
        theta=theta,
        underlying_price=underlying,
        account=f.get("account", ""),
        mode=f.get("mode", ""),
    )


def decode_api_log(fields: Fields) -> ApiLogRow | Rejected:
    envelope = _envelope(fields, ("ts", "api_mode", "status", "message"))
    if isinstance(envelope, Rejected):
        return envelope
    f, ts = envelope
    if f["status"] not in STATUSES:
        return Rejected(f"status {f['status'][:16]!r} is not one of {', '.join(STATUSES)}")
    source = f.get("source", "")
    if source and source not in SOURCES:
        return Rejected(f"source {source[:16]!r} is not one of {', '.join(SOURCES)}")
    if len(f["message"]) > MAX_TEXT:
        return Rejected("message longer than 10000 characters")
    return ApiLogRow(
        ts=ts,
        api_mode=f["api_mode"],
        status=f["status"],
        message=scrub(f["message"]),
        source=source,
    )


def _parse_optional(name: str, text: str) -> float | Rejected | None:
    return None if text == "" else _parse_number(name, text)


def decode_exposure(fields: Fields) -> ExposureRow | Rejected:  # noqa: PLR0911  one check each
    required = ("ts", "account", "scope", *GREEK_FIELDS, *EXPOSURE_COUNTS)
    envelope = _envelope(fields, required)
    if isinstance(envelope, Rejected):
        return envelope
    f, ts = envelope
    if not f["scope"] or len(f["scope"]) > 64 or len(f["account"]) > 64:
        return Rejected("scope must be 1-64 characters, account at most 64")
    numbers: dict[str, float | None] = {}
    for name in GREEK_FIELDS:
        value = _parse_number(name, f[name])
        if isinstance(value, Rejected):
            return value
        numbers[name] = value
    for name in EXPOSURE_FLOATS + EXPOSURE_PNL:
        optional = _parse_optional(name, f.get(name, ""))
        if isinstance(optional, Rejected):
            return optional
        numbers[name] = optional
    counts: dict[str, int] = {}
    for name in EXPOSURE_COUNTS:
        # ASCII digits only (str.isdigit takes '²', which int() refuses), within an INTEGER
        text = f[name]
        if not (text.isascii() and text.isdigit()) or len(text) > 10 or int(text) > MAX_COUNT:
            return Rejected(f"{name} {text[:16]!r} is not a count")
        counts[name] = int(text)
    kind = f.get("market_data", "")
    if kind and kind not in EXPOSURE_KINDS:
        return Rejected(f"market_data {kind[:16]!r} is not one of {', '.join(EXPOSURE_KINDS)}")
    return ExposureRow(
        ts=ts,
        account=f["account"],
        scope=f["scope"],
        delta=numbers["delta"] or 0.0,
        gamma=numbers["gamma"] or 0.0,
        vega=numbers["vega"] or 0.0,
        theta=numbers["theta"] or 0.0,
        delta_dollars=numbers["delta_dollars"],
        gamma_dollars=numbers["gamma_dollars"],
        underlying_price=numbers["underlying_price"],
        greeks_age_max_s=numbers["greeks_age_max_s"],
        market_data=kind or None,
        daily_pnl=numbers["daily_pnl"],
        unrealized_pnl=numbers["unrealized_pnl"],
        realized_pnl=numbers["realized_pnl"],
        mode=f.get("mode", ""),
        **counts,
    )


def decode_data_entry(fields: Fields) -> GreeksRow | ExposureRow | Rejected:
    """An entry of the greeks stream: a portfolio_greeks row, or (`table` field) an exposure."""
    table = fields.get("table") or fields.get(b"table")  # type: ignore[call-overload]
    if table in (EXPOSURE_TABLE, EXPOSURE_TABLE.encode()):
        return decode_exposure(fields)
    if table:
        return Rejected(f"unknown table {as_text(table)[:32]!r}")
    return decode_greeks(fields)

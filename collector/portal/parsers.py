"""Parsers for Client Portal answers. They never raise: a value that cannot be read comes back as
missing with the reason, never as 0.

Quirks of the Client Portal API handled here: snapshot values are strings
("168.42", "1,300", "C168.42" = previous close, "H168.42" = halted, "25.3%", "1.2M", "250K"),
sometimes numbers; `strike` is a string or a number; `multiplier` is a number, null or 0; rows
without their security definition lack expiry/putOrCall/undConid and carry multiplier null; the
multiplier then still shows at the end of `contractDesc` ("[SPY   250117C00440000 100]").
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from shared.names import OPTION_TYPES, STOCK_TYPES

FIELD_LAST = "31"
FIELD_MARK = "7635"
FIELD_DELTA = "7308"
FIELD_GAMMA = "7309"
FIELD_THETA = "7310"
FIELD_VEGA = "7311"
FIELD_IV = "7633"
SNAPSHOT_FIELDS = (
    FIELD_LAST,
    FIELD_MARK,
    FIELD_DELTA,
    FIELD_GAMMA,
    FIELD_THETA,
    FIELD_VEGA,
    FIELD_IV,
)
MAX_TEXT = 64

_SUFFIX = {"K": 1e3, "M": 1e6, "B": 1e9}
_PLAIN = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_GROUPED = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d*)?")
_DESC_MULT = re.compile(r"\[[^\]]*\s(\d+(?:\.\d+)?)\s*\]\s*$")


class Value(NamedTuple):
    """A parsed number, or None with the reason it could not be read."""

    value: float | None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.value is not None


ABSENT = Value(None, "absent")


def _short(raw: object) -> str:
    text = repr(raw)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 3] + "..."


def parse_number(raw: object, *, price: bool = False) -> Value:
    """A Client Portal number: int/float, or a string with the quirks above. Never raises.

    `price=True` also accepts the C (previous close) and H (halted) prefixes of field 31.
    """
    if raw is None:
        return ABSENT
    if isinstance(raw, bool):
        return Value(None, f"boolean {raw!r} is not a number")
    if isinstance(raw, int | float):
        return _native_number(raw)
    if not isinstance(raw, str):
        return Value(None, f"{type(raw).__name__} {_short(raw)} is not a number")
    return _text_number(raw, price=price)


def _native_number(raw: float) -> Value:
    try:
        number = float(raw)
    except OverflowError:
        return Value(None, f"{_short(raw)} is out of range")
    if not math.isfinite(number):
        return Value(None, f"{_short(raw)} is not finite")
    return Value(number)


def _text_number(raw: str, *, price: bool) -> Value:  # noqa: PLR0911  one answer per malformed case
    text = raw.strip()
    if not text:
        return Value(None, "empty string")
    if _PLAIN.fullmatch(text):  # the common case: a plain decimal string
        number = float(text)
        if math.isfinite(number):
            return Value(number)
        return Value(None, f"{_short(raw)} is not finite")
    if price and text[0] in "CH" and len(text) > 1:
        text = text[1:].strip()
    scale = 1.0
    if text.endswith("%"):
        text = text[:-1].strip()
    elif text[-1].upper() in _SUFFIX and len(text) > 1:
        scale = _SUFFIX[text[-1].upper()]
        text = text[:-1].strip()
    if _GROUPED.fullmatch(text):
        text = text.replace(",", "")
    if not _PLAIN.fullmatch(text):
        return Value(None, f"unreadable number {_short(raw)}")
    try:
        number = float(text) * scale
    except (ValueError, OverflowError):
        return Value(None, f"unreadable number {_short(raw)}")
    if not math.isfinite(number):
        return Value(None, f"{_short(raw)} is not finite")
    return Value(number)


def parse_int(raw: object) -> int | None:
    """A conid-like integer (int or digit string); None when unreadable."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and math.isfinite(raw) and raw.is_integer():
        return int(raw)
    if (
        isinstance(raw, str)
        and raw.strip().isascii()
        and raw.strip().isdigit()
        and len(raw.strip()) < 20
    ):
        return int(raw.strip())
    return None


def _str(raw: object) -> str:
    return raw.strip() if isinstance(raw, str) else ""


# ---- positions ----


@dataclass(frozen=True, slots=True)
class PortalPosition:
    con_id: int
    symbol: str  # the underlying's symbol ("" when not known)
    sec_type: str
    quantity: float
    multiplier: float | None
    und_con_id: int | None
    description: str
    has_secdef: bool
    mkt_price: float | None = None
    problems: tuple[str, ...] = ()
    account: str = ""  # the account it was read from


@dataclass(frozen=True, slots=True)
class Unreadable:
    reason: str


def multiplier_from_desc(desc: str) -> float | None:
    match = _DESC_MULT.search(desc)
    if not match:
        return None
    value = parse_number(match.group(1)).value
    return value if value is not None and value > 0 else None


def parse_position(row: object) -> PortalPosition | Unreadable:
    """One row of /portfolio/{acct}/positions/{page}. Never raises."""
    if not isinstance(row, Mapping):
        return Unreadable(f"position row is a {type(row).__name__}, not an object")
    con_id = parse_int(row.get("conid"))
    if con_id is None:
        return Unreadable(f"conid {_short(row.get('conid'))} unreadable")
    qty = parse_number(row.get("position"))
    if qty.value is None:
        return Unreadable(f"conid {con_id}: position {qty.reason}")
    problems: list[str] = []
    sec_type = (_str(row.get("assetClass")) or _str(row.get("secType"))).upper()
    if not sec_type and _str(row.get("putOrCall")).upper() in ("P", "C"):
        sec_type = "OPT"
    desc = _str(row.get("contractDesc")) or _str(row.get("fullName")) or f"conid {con_id}"
    is_option = sec_type in OPTION_TYPES
    multiplier: float | None = None
    mult = parse_number(row.get("multiplier"))
    if mult.value is not None and mult.value > 0:
        multiplier = mult.value
    elif is_option:
        multiplier = multiplier_from_desc(desc)
        problems.append(
            f"multiplier {_short(row.get('multiplier'))}"
            + (f", {multiplier:g} read from contractDesc" if multiplier else "")
        )
    und = parse_int(row.get("undConid"))
    und_con_id = und if und else None
    if sec_type in STOCK_TYPES:
        und_con_id = con_id
    symbol = _str(row.get("undSym")) if is_option else ""
    symbol = symbol or _str(row.get("ticker"))
    if not symbol and desc and not desc.startswith("conid "):
        symbol = desc.split()[0]
    has_secdef = True
    if is_option:
        right = _str(row.get("putOrCall"))
        has_secdef = bool(right) and und_con_id is not None and mult.value not in (None, 0.0)
        if not has_secdef:
            problems.append("security definition missing")
    price = parse_number(row.get("mktPrice"))
    return PortalPosition(
        con_id=con_id,
        symbol=symbol.upper(),
        sec_type=sec_type,
        quantity=qty.value,
        multiplier=multiplier,
        und_con_id=und_con_id,
        description=desc,
        has_secdef=has_secdef,
        mkt_price=price.value,
        problems=tuple(problems),
    )


# ---- snapshot ----


class SnapshotRow(NamedTuple):
    con_id: int
    preflight: bool  # only conid/conidEx: the stream has just been opened
    delta: Value = ABSENT
    gamma: Value = ABSENT
    vega: Value = ABSENT
    theta: Value = ABSENT
    last: Value = ABSENT
    mark: Value = ABSENT
    updated_ms: int | None = None
    availability: str = ""  # field 6509: R realtime, D delayed, Z frozen, Y frozen delayed, N ...
    error: str = ""  # the row's own error (no line left, contract not found)

    @property
    def price(self) -> float | None:
        return self.last.value if self.last.value is not None else self.mark.value

    @property
    def has_greeks(self) -> bool:
        return all(v.ok for v in (self.delta, self.gamma, self.vega, self.theta))

    def problems(self) -> list[str]:
        out = []
        for name, value in (
            ("delta", self.delta),
            ("gamma", self.gamma),
            ("vega", self.vega),
            ("theta", self.theta),
        ):
            if not value.ok and value is not ABSENT:
                out.append(f"{name}: {value.reason}")
        return out


_META_KEYS = frozenset({"conid", "conidEx", "_updated", "server_id", "6119", "6509", "error"})


def parse_snapshot_row(row: object) -> SnapshotRow | Unreadable:
    """One object of /iserver/marketdata/snapshot. Never raises."""
    if not isinstance(row, Mapping):
        return Unreadable(f"snapshot row is a {type(row).__name__}, not an object")
    con_id = parse_int(row.get("conid"))
    if con_id is None:
        con_id = parse_int(row.get("conidEx"))
    if con_id is None:
        return Unreadable(f"snapshot conid {_short(row.get('conid'))} unreadable")
    keys = {str(k) for k in row}
    availability = _str(row.get("6509"))[:MAX_TEXT]
    error = _str(row.get("error"))[:200]
    updated = parse_int(row.get("_updated"))
    if error:
        return SnapshotRow(con_id, preflight=False, availability=availability, error=error)
    if not keys - _META_KEYS:
        return SnapshotRow(con_id, preflight=True, updated_ms=updated, availability=availability)

    def get(field: str, *, price: bool = False) -> Value:
        return parse_number(row.get(field), price=price) if field in row else ABSENT

    return SnapshotRow(
        con_id=con_id,
        preflight=False,
        delta=get(FIELD_DELTA),
        gamma=get(FIELD_GAMMA),
        vega=get(FIELD_VEGA),
        theta=get(FIELD_THETA),
        last=get(FIELD_LAST, price=True),
        mark=get(FIELD_MARK, price=True),
        updated_ms=updated,
        availability=availability,
    )


# ---- session ----


@dataclass(frozen=True, slots=True)
class AuthStatus:
    authenticated: bool
    competing: bool
    connected: bool
    message: str = ""

    @property
    def usable(self) -> bool:
        return self.authenticated and self.connected and not self.competing

    def reason(self) -> str:
        if self.competing:
            return "competing session (another login took the brokerage session)"
        if not self.authenticated:
            base = "brokerage session not authenticated"
            extra = self.message if self.message and self.message not in base else ""
            return base + (f": {extra}" if extra else "")
        if not self.connected:
            return "gateway not connected to IBKR"
        return ""


def _flag(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    return isinstance(raw, str) and raw.strip().lower() == "true"


def parse_auth_status(body: object) -> AuthStatus:
    """/iserver/auth/status, ssodh/init, or the `iserver.authStatus` part of /tickle."""
    if not isinstance(body, Mapping):
        return AuthStatus(False, False, False, "unreadable auth status")
    status: Mapping[Any, Any] = body
    inner = body.get("iserver")
    if isinstance(inner, Mapping) and isinstance(inner.get("authStatus"), Mapping):
        status = inner["authStatus"]
    return AuthStatus(
        authenticated=_flag(status.get("authenticated")),
        competing=_flag(status.get("competing")),
        connected=_flag(status.get("connected", True)),  # absent: not a reason to stop
        message=_str(status.get("message")) or _str(status.get("fail")),
    )


def parse_portfolio_accounts(body: object) -> list[str]:
    """/portfolio/accounts: the account ids (accountId, else id)."""
    if not isinstance(body, list):
        return []
    out = []
    for item in body:
        if isinstance(item, Mapping):
            acct = _str(item.get("accountId")) or _str(item.get("id"))
            if acct:
                out.append(acct)
    return out


def summary_amount(body: object, key: str) -> float | None:
    """`amount` (or the numeric `value`) of one /portfolio/{acct}/summary key."""
    if not isinstance(body, Mapping):
        return None
    item: Any = body.get(key)
    if not isinstance(item, Mapping) or item.get("isNull") is True:
        return None
    amount = parse_number(item.get("amount")).value
    if item.get("currency") is None and item.get("value") not in (None, "null"):
        return parse_number(item.get("value")).value
    return amount


def error_text(body: object) -> str:
    """The `error` of an error body (`{"error": ..., "statusCode": ...}`), or the text."""
    if isinstance(body, Mapping):
        return _str(body.get("error")) or _str(body.get("message"))
    if isinstance(body, str):
        return body.strip()[:200]
    return ""

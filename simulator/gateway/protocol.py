"""TWS API framing and message encoding, as the `ib_async` 2.1.0 client expects at server 178.

Framing (both directions after the client's first packet): a 4-byte big-endian length, then text
fields each terminated by NUL. The client's very first packet is `API\\0` followed by one framed
version string such as `v157..178` (no trailing NUL).

Only the server side lives here: decoding what the client sends and encoding what it reads. Every
builder returns the field list of one message; a unit test pins the field counts that the
client's decoder unpacks exactly (handshake 2, nextValidId 3, managedAccounts 3, tickPrice 7,
updatePortfolio 20, tickOptionComputation 12, position 16).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

SERVER_VERSION = 178
MIN_CLIENT_VERSION = 157
API_PREFIX = b"API\0"
MAX_FRAME = 16 * 1024 * 1024

Field = str | int | float | bool | None


class ProtocolError(Exception):
    """The peer sent something that is not the TWS API."""


# incoming request ids
class In:
    REQ_MKT_DATA = 1
    CANCEL_MKT_DATA = 2
    REQ_OPEN_ORDERS = 5
    REQ_ACCOUNT_UPDATES = 6
    REQ_EXECUTIONS = 7
    REQ_IDS = 8
    REQ_CONTRACT_DETAILS = 9
    REQ_AUTO_OPEN_ORDERS = 15
    REQ_MANAGED_ACCTS = 17
    REQ_HISTORICAL_DATA = 20
    CANCEL_HISTORICAL_DATA = 25
    REQ_CURRENT_TIME = 49
    REQ_MARKET_DATA_TYPE = 59
    REQ_POSITIONS = 61
    REQ_ACCOUNT_SUMMARY = 62
    CANCEL_ACCOUNT_SUMMARY = 63
    CANCEL_POSITIONS = 64
    START_API = 71
    REQ_ACCOUNT_UPDATES_MULTI = 76
    CANCEL_ACCOUNT_UPDATES_MULTI = 77
    REQ_PNL = 92
    CANCEL_PNL = 93
    REQ_PNL_SINGLE = 94
    CANCEL_PNL_SINGLE = 95
    REQ_COMPLETED_ORDERS = 99


# outgoing message ids
class Out:
    TICK_PRICE = 1
    TICK_SIZE = 2
    ERR_MSG = 4
    ACCT_VALUE = 6
    PORTFOLIO_VALUE = 7
    ACCT_UPDATE_TIME = 8
    NEXT_VALID_ID = 9
    CONTRACT_DATA = 10
    MANAGED_ACCTS = 15
    HISTORICAL_DATA = 17
    TICK_OPTION_COMPUTATION = 21
    CURRENT_TIME = 49
    CONTRACT_DATA_END = 52
    OPEN_ORDER_END = 53
    ACCT_DOWNLOAD_END = 54
    EXECUTION_DATA_END = 55
    TICK_SNAPSHOT_END = 57
    MARKET_DATA_TYPE = 58
    POSITION_DATA = 61
    POSITION_END = 62
    ACCOUNT_SUMMARY = 63
    ACCOUNT_SUMMARY_END = 64
    ACCOUNT_UPDATE_MULTI = 73
    ACCOUNT_UPDATE_MULTI_END = 74
    PNL = 94
    PNL_SINGLE = 95
    COMPLETED_ORDERS_END = 102


# tick types: live and delayed
BID, ASK, LAST, CLOSE = 1, 2, 4, 9
DELAYED_BID, DELAYED_ASK, DELAYED_LAST, DELAYED_CLOSE = 66, 67, 68, 75
MODEL_GREEKS, DELAYED_MODEL_GREEKS = 13, 83
LAST_GREEKS, DELAYED_LAST_GREEKS = 12, 82
LIVE, FROZEN, DELAYED, DELAYED_FROZEN = 1, 2, 3, 4


def is_delayed(market_data_type: int) -> bool:
    return market_data_type in (DELAYED, DELAYED_FROZEN)


def fmt(value: Field) -> str:
    """One field as text: the same conventions as the client's encoder."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value)
    return str(value)


def frame(fields: Iterable[Field]) -> bytes:
    payload = b"".join(fmt(f).encode() + b"\0" for f in fields)
    return struct.pack(">I", len(payload)) + payload


def split_payload(payload: bytes) -> list[str]:
    """The text fields of one frame (the trailing NUL gives an empty last element: dropped)."""
    parts = payload.decode(errors="backslashreplace").split("\0")
    if parts and parts[-1] == "":
        parts.pop()
    return parts


def parse_client_versions(payload: bytes) -> tuple[int, int]:
    """`v157..178` (optionally followed by connect options) -> (min, max)."""
    text = payload.decode(errors="replace").strip("\0").split(" ", 1)[0]
    if not text.startswith("v"):
        raise ProtocolError(f"bad version string {text!r}")
    lo, sep, hi = text[1:].partition("..")
    try:
        return (int(lo), int(hi)) if sep else (int(lo), int(lo))
    except ValueError:
        raise ProtocolError(f"bad version string {text!r}") from None


# ---------------------------------------------------------------- contracts sent by the client
@dataclass(frozen=True, slots=True)
class ContractFields:
    """The 12 contract fields the client writes: conId .. tradingClass."""

    con_id: int
    symbol: str
    sec_type: str
    expiry: str
    strike: float
    right: str
    multiplier: str
    exchange: str
    primary_exchange: str
    currency: str
    local_symbol: str
    trading_class: str

    @classmethod
    def parse(cls, f: Sequence[str]) -> ContractFields:
        if len(f) < 12:
            raise ProtocolError(f"contract needs 12 fields, got {len(f)}")
        return cls(
            con_id=int(f[0] or 0),
            symbol=f[1],
            sec_type=f[2],
            expiry=f[3],
            strike=float(f[4] or 0.0),
            right=f[5],
            multiplier=f[6],
            exchange=f[7],
            primary_exchange=f[8],
            currency=f[9],
            local_symbol=f[10],
            trading_class=f[11],
        )

    def describe(self) -> str:
        if self.con_id:
            return f"conId={self.con_id}"
        return " ".join(x for x in (self.symbol, self.sec_type, self.expiry, self.right) if x)


# ---------------------------------------------------------------- builders
def handshake_reply(conn_time: str, server_version: int = SERVER_VERSION) -> list[Field]:
    return [server_version, conn_time]


def error(req_id: int, code: int, text: str) -> list[Field]:
    return [Out.ERR_MSG, 2, req_id, code, text, ""]


def managed_accounts(accounts: Sequence[str]) -> list[Field]:
    return [Out.MANAGED_ACCTS, 1, ",".join(accounts)]


def next_valid_id(order_id: int) -> list[Field]:
    return [Out.NEXT_VALID_ID, 1, order_id]


def tick_price(req_id: int, tick_type: int, price: float, size: float) -> list[Field]:
    return [Out.TICK_PRICE, 6, req_id, tick_type, price, size, 0]


def tick_option_computation(
    req_id: int,
    tick_type: int,
    *,
    iv: float,
    delta: float,
    opt_price: float,
    pv_dividend: float,
    gamma: float,
    vega: float,
    theta: float,
    und_price: float,
) -> list[Field]:
    # no version field at server >= 156; all 8 numbers must be present (never "")
    return [
        Out.TICK_OPTION_COMPUTATION, req_id, tick_type, 0,
        iv, delta, opt_price, pv_dividend, gamma, vega, theta, und_price,
    ]  # fmt: skip


def market_data_type(req_id: int, md_type: int) -> list[Field]:
    return [Out.MARKET_DATA_TYPE, 1, req_id, md_type]


def tick_snapshot_end(req_id: int) -> list[Field]:
    return [Out.TICK_SNAPSHOT_END, 1, req_id]

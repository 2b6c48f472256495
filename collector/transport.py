"""What the collector core needs from a broker transport (SOCKET or PORTAL), and nothing more.

A transport owns one broker connection. It never reconnects by itself: it reports link changes
through `events` and obeys `connect()` / `disconnect()` calls that the collector makes on the
watchdog's orders. `snapshot()` returns raw per-position values; the Greeks policy (grace period,
carry-forward, exclusion) lives in `collector.greeks`, not here.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


class LinkState(enum.StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    UNAUTHENTICATED = "unauthenticated"
    PAUSED = "paused"


class TransportError(Exception):
    """The broker link cannot serve the request (down, unauthenticated, timed out)."""


@dataclass(frozen=True, slots=True)
class PositionData:
    """One position as the transport last saw it. `None` means unknown, never zero."""

    con_id: int
    symbol: str  # the underlying's symbol (for a stock: its own)
    sec_type: str  # STK, OPT, FOP, ... (anything else is ignored by the Greeks math)
    quantity: float
    multiplier: float | None  # None: unknown (missing security definition)
    delta: float | None = None
    gamma: float | None = None
    vega: float | None = None
    theta: float | None = None
    greeks_at: datetime | None = None  # when these Greeks arrived from the broker
    subscribed_at: datetime | None = None  # when market data for it was (re)requested
    und_price: float | None = None  # the underlying price carried with the Greeks
    description: str = ""  # e.g. 'SPY 20261218 600 C' for log lines
    account: str = ""  # the account holding it (several accounts: IB_ACCOUNT list or ALL)


@dataclass(frozen=True, slots=True)
class Pnl:
    """An account's P&L from the broker; None is unknown, never 0."""

    daily: float | None = None
    unrealized: float | None = None
    realized: float | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    taken_at: datetime
    account: str
    positions: tuple[PositionData, ...]
    prices: Mapping[str, float] = field(default_factory=dict)  # underlying symbol -> price
    market_data: tuple[str, ...] = ()  # the market data types delivered (LIVE, DELAYED, ...)
    accounts: tuple[str, ...] = ()  # every account read (empty: just `account`)
    pnl: Mapping[str, Pnl] = field(default_factory=dict)  # account -> its P&L


@dataclass(frozen=True, slots=True)
class LinkEvent:
    """A change of the link, or something the audit trail must hear about."""

    state: LinkState
    since: datetime
    reason: str
    status: str = "INFO"  # api_logs status: INFO, WARN, ERROR
    code: int | None = None  # broker error code when there is one (1100, 326, 401, ...)
    extra: Mapping[str, str] = field(default_factory=dict)  # pnl, auth flags, ...


class Transport(Protocol):
    mode: str  # "SOCKET" or "PORTAL"
    events: asyncio.Queue[LinkEvent]

    @property
    def state(self) -> LinkState: ...

    async def connect(self) -> None:
        """One bounded attempt; raises TransportError on failure (never retries by itself)."""

    async def disconnect(self) -> None:
        """Deliberate close: must not be reported as a drop."""

    async def snapshot(self, now: datetime) -> Snapshot:
        """The current positions and Greeks; raises TransportError when the link is down."""

    def status(self) -> Mapping[str, str]:
        """Extra fields for the published link state (P&L, auth flags, keepalive age)."""

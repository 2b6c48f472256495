"""Row models: what the collector produces and the writer stores."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class GreeksRow:
    ts: datetime  # the collector's tick time, timezone-aware
    contract: str  # 'PORTFOLIO' or an underlying symbol
    delta: float
    gamma: float
    vega: float
    theta: float
    underlying_price: float | None
    account: str = ""
    mode: str = ""


@dataclass(frozen=True, slots=True)
class ExposureRow:
    """One row of `portfolio_exposure`: a tick's exposure for one account and scope, in share
    and dollar units, with how complete it is. None is unknown (NULL), never 0."""

    ts: datetime  # the same tick time as the tick's portfolio_greeks rows
    account: str  # an account id, or 'ALL' for the combined book
    scope: str  # 'PORTFOLIO' or an underlying's symbol
    delta: float
    gamma: float
    vega: float
    theta: float
    delta_dollars: float | None
    gamma_dollars: float | None
    underlying_price: float | None
    legs: int  # positions that need Greeks
    legs_fresh: int
    legs_carried: int
    legs_excluded: int
    greeks_age_max_s: float | None  # the oldest Greeks in the sums
    market_data: str | None  # LIVE, FROZEN, DELAYED, DELAYED_FROZEN or MIXED
    daily_pnl: float | None = None
    unrealized_pnl: float | None = None
    realized_pnl: float | None = None
    mode: str = ""


@dataclass(frozen=True, slots=True)
class ApiLogRow:
    ts: datetime
    api_mode: str
    status: str  # INFO, WARN, ERROR
    message: str
    source: str  # collector, writer, watchdog, supervisor

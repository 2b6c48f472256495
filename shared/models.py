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
class ApiLogRow:
    ts: datetime
    api_mode: str
    status: str  # INFO, WARN, ERROR
    message: str
    source: str  # collector, writer, watchdog, supervisor

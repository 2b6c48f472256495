"""ib_async's contracts and tickers as the SOCKET transport uses them: routable copies, names for
the operator, the Greeks a ticker carries, and one streaming subscription per contract."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ib_async import Contract

from collector import ib_values
from collector.transport import PositionData
from shared.names import OPTION_TYPES, STOCK_TYPES


@dataclass(slots=True)
class Subscription:
    """One wanted contract (an option position or an underlying) and its last values, whether
    or not it holds a market-data line right now."""

    contract: Any  # ib_async Contract
    ticker: Any  # ib_async Ticker while a request is open, else None
    subscribed_at: datetime  # the grace period runs from here
    is_option: bool
    greeks: ib_values.ModelGreeks = field(default_factory=lambda: ib_values.model_greeks(None))
    greeks_at: datetime | None = None
    last_comp: Any = None  # the OptionComputation object last seen (identity check)
    price: float | None = None  # an underlying's last price
    price_at: datetime | None = None
    md_type: int | None = None  # the market data type IB says it delivers (1..4)
    requested_at: datetime | None = None  # the last request of this session
    error: str = ""


def describe(c: Any) -> str:
    if c.secType in OPTION_TYPES:
        strike = f"{c.strike:g}" if c.strike else ""
        parts = (c.symbol, c.lastTradeDateOrContractMonth, strike, c.right)
        return " ".join(str(p) for p in parts if p)
    return f"{c.symbol} {c.secType}"


def routable(c: Any) -> Any:
    """A copy IB can route: conId plus exchange SMART (position contracts may carry an empty or
    a primary exchange, which gives error 200)."""
    return Contract(
        conId=c.conId,
        symbol=c.symbol,
        secType=c.secType,
        lastTradeDateOrContractMonth=c.lastTradeDateOrContractMonth,
        strike=c.strike,
        right=c.right,
        multiplier=c.multiplier,
        exchange="SMART",
        currency=c.currency,
        localSymbol=c.localSymbol,
        tradingClass=c.tradingClass,
    )


def greeks_source(ticker: Any) -> Any:
    """IB's model Greeks (tick 13/83); a gateway that sends only quote-based Greeks (last, then
    bid, then ask) is still read rather than left without any."""
    for attr in ("modelGreeks", "lastGreeks", "bidGreeks", "askGreeks"):
        comp = getattr(ticker, attr, None)
        if comp is not None:
            return comp
    return None


def position_data(
    pos: Any, sub: Subscription | None, prices: Mapping[str, float], now: datetime
) -> PositionData:
    """An ib_async Position and its subscription (None when not wanted) as PositionData. A
    contract still waiting for its first line this session is pending: subscribed `now`."""
    c = pos.contract
    mult = ib_values.number(c.multiplier) if c.multiplier else None
    if c.secType in STOCK_TYPES:
        mult = mult or 1.0
    elif mult is not None and mult <= 0:
        mult = None
    und_price = prices.get(c.symbol)
    g = sub.greeks if sub is not None and sub.is_option else ib_values.NO_GREEKS
    return PositionData(
        con_id=c.conId,
        symbol=c.symbol,
        sec_type=c.secType,
        quantity=float(pos.position),
        multiplier=mult,
        delta=g.delta,
        gamma=g.gamma,
        vega=g.vega,
        theta=g.theta,
        greeks_at=sub.greeks_at if sub is not None and sub.is_option else None,
        subscribed_at=None if sub is None else sub.subscribed_at if sub.requested_at else now,
        und_price=g.und_price if g.und_price is not None else und_price,
        description=describe(c),
        account=pos.account,
    )

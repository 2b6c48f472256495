"""IB's numbers made honest: sentinels, NaN, Double.MAX and absent values become None.

IB marks "not computed" with -1 (implied vol, option price, PV dividend, underlying price) and -2
(the Greeks); ib_async 2.1.0 turns most of them into None but leaves vega and theta at -2.0.
A closed market sends bid/ask -1 with size 0 and no last (NaN). Unset doubles may arrive as
Double.MAX (1.7976931348623157e308). None of these may ever be summed as a number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from shared.names import MARKET_DATA_KINDS

HUGE = 1e300  # anything this large is Double.MAX or garbage, never a price or a Greek
GREEK_SENTINEL = -2.0
PRICE_SENTINEL = -1.0


def number(value: Any) -> float | None:
    """A finite float of sane magnitude, or None."""
    if value is None or isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(f) or abs(f) >= HUGE:
        return None
    return f


def greek(value: Any) -> float | None:
    """A Greek from `OptionComputation`: None for IB's -2 sentinel as well."""
    f = number(value)
    return None if f is None or f == GREEK_SENTINEL else f


def price(value: Any) -> float | None:
    """A price: None unless strictly positive (covers IB's -1 sentinel and 0 'no quote')."""
    f = number(value)
    return f if f is not None and f > 0 else None


@dataclass(frozen=True, slots=True)
class ModelGreeks:
    delta: float | None
    gamma: float | None
    vega: float | None
    theta: float | None
    und_price: float | None

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.delta, self.gamma, self.vega, self.theta))


NO_GREEKS = ModelGreeks(None, None, None, None, None)


def model_greeks(comp: Any) -> ModelGreeks:
    """The usable parts of an ib_async `OptionComputation` (None: absent)."""
    if comp is None:
        return NO_GREEKS
    return ModelGreeks(
        delta=greek(getattr(comp, "delta", None)),
        gamma=greek(getattr(comp, "gamma", None)),
        vega=greek(getattr(comp, "vega", None)),
        theta=greek(getattr(comp, "theta", None)),
        und_price=price(getattr(comp, "undPrice", None)),
    )


def ticker_price(ticker: Any) -> float | None:
    """The ticker's market price (last within bid/ask, else the midpoint), falling back to the
    close when the market is closed (bid/ask -1, last NaN)."""
    if ticker is None:
        return None
    try:
        market = ticker.marketPrice()
    except (TypeError, ValueError, ArithmeticError):
        market = None
    return price(market) or price(getattr(ticker, "close", None))


def md_kind(md_type: int) -> str | None:
    """IB's market data type number (the marketDataType message) as a name; None for a number
    IB does not define (never a name the exposure record would refuse)."""
    return MARKET_DATA_KINDS[md_type - 1] if 1 <= md_type <= len(MARKET_DATA_KINDS) else None

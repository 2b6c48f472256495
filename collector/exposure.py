"""A tick's exposure rows (`portfolio_exposure`): per account and scope (PORTFOLIO and every
underlying), the net Greeks of the row, the dollar Greeks, and how complete the sums were. Pure:
the Greeks policy's evaluation in, rows out. The rules are written once, in docs/GREEKS.md.

- delta_dollars: options position x multiplier x delta x price, plus shares x price;
  gamma_dollars: position x multiplier x gamma x price^2 / 100 (delta dollars per 1 % move).
  A scope whose price is unknown has no dollar figures (NULL), never a partial sum.
- legs: option positions in the scope that need Greeks; fresh: Greeks at most one poll interval
  old; carried: older, within the maximum age; excluded: left out of the sums.
- A scope with nothing usable in the sums has no row (as in portfolio_greeks).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from collector.greeks import Evaluation, Exposure, NetRow
from collector.transport import Pnl
from shared.models import ExposureRow
from shared.names import PORTFOLIO_CONTRACT, STOCK_TYPES

MIXED = "MIXED"


@dataclass
class _Scope:
    dollars: float = 0.0
    gamma_dollars: float = 0.0
    priced: bool = True
    fresh: int = 0
    carried: int = 0
    excluded: int = 0
    age_max: float | None = None
    symbols: set[str] = field(default_factory=set)


def market_data_kind(kinds: Sequence[str]) -> str | None:
    unique = set(kinds)
    if not unique:
        return None
    return unique.pop() if len(unique) == 1 else MIXED


def _valid(value: float | None) -> float | None:
    if value is None or not math.isfinite(value) or value <= 0:
        return None
    return float(value)


def _add(scope: _Scope, exp: Exposure, price: float | None, poll_s: float) -> None:
    if exp.sec_type not in STOCK_TYPES:
        age = exp.age_s if exp.age_s is not None else 0.0
        if scope.age_max is None or age > scope.age_max:
            scope.age_max = age
        if age <= poll_s:
            scope.fresh += 1
        else:
            scope.carried += 1
    if price is None:
        scope.priced = False
    elif exp.sec_type in STOCK_TYPES:
        scope.dollars += exp.quantity * price
    elif exp.greeks is not None:
        k = exp.quantity * exp.multiplier
        scope.dollars += k * exp.greeks.delta * price
        scope.gamma_dollars += k * exp.greeks.gamma * price * price / 100.0


def _whole(parts: Sequence[_Scope]) -> _Scope:
    """The PORTFOLIO scope: the underlyings' scopes added up."""
    ages = [p.age_max for p in parts if p.age_max is not None]
    return _Scope(
        dollars=sum(p.dollars for p in parts),
        gamma_dollars=sum(p.gamma_dollars for p in parts),
        priced=all(p.priced for p in parts),
        fresh=sum(p.fresh for p in parts),
        carried=sum(p.carried for p in parts),
        excluded=sum(p.excluded for p in parts),
        age_max=max(ages) if ages else None,
        symbols={s for p in parts for s in p.symbols},
    )


def exposure_rows(
    ev: Evaluation,
    prices: Mapping[str, float],
    ts: datetime,
    *,
    account: str,
    poll_s: float,
    kinds: Sequence[str] = (),
    pnl: Pnl | None = None,
    mode: str = "",
) -> list[ExposureRow]:
    if not ev.rows:
        return []
    scopes: dict[str, _Scope] = {}
    price_of: dict[str, float | None] = {}
    for exp in ev.exposures:
        symbol = exp.symbol
        scope = scopes.get(symbol)
        if scope is None:
            scope = scopes[symbol] = _Scope(symbols={symbol})
            price_of[symbol] = _valid(prices.get(symbol))
        _add(scope, exp, price_of[symbol] or _valid(exp.und_price), poll_s)
    excluded_elsewhere = 0
    for symbol in ev.excluded_symbols:
        if symbol in scopes:
            scopes[symbol].excluded += 1
        else:
            excluded_elsewhere += 1  # no usable exposure on that underlying: no row of its own
    whole = _whole(list(scopes.values()))
    whole.excluded += excluded_elsewhere
    scopes = {PORTFOLIO_CONTRACT: whole, **scopes}
    by_scope: dict[str, NetRow] = {r.contract: r for r in ev.scope_rows}
    kind = market_data_kind(kinds)
    out = []
    for name, scope in scopes.items():
        row = by_scope.get(name)
        if row is None or not scope.symbols:
            continue
        known = scope.priced
        p = pnl if name == PORTFOLIO_CONTRACT else None
        out.append(
            ExposureRow(
                ts=ts,
                account=account,
                scope=name,
                delta=row.delta,
                gamma=row.gamma,
                vega=row.vega,
                theta=row.theta,
                delta_dollars=scope.dollars if known else None,
                gamma_dollars=scope.gamma_dollars if known else None,
                underlying_price=row.underlying_price,
                legs=scope.fresh + scope.carried + scope.excluded,
                legs_fresh=scope.fresh,
                legs_carried=scope.carried,
                legs_excluded=scope.excluded,
                greeks_age_max_s=scope.age_max,
                market_data=kind,
                daily_pnl=p.daily if p else None,
                unrealized_pnl=p.unrealized if p else None,
                realized_pnl=p.realized if p else None,
                mode=mode,
            )
        )
    return out

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

from collector.greeks import Evaluation, Exposure, NetRow, net_rows
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


def _price(prices: Mapping[str, float], exp: Exposure) -> float | None:
    value = prices.get(exp.symbol)
    if value is None or not math.isfinite(value) or value <= 0:
        value = exp.und_price
    if value is None or not math.isfinite(value) or value <= 0:
        return None
    return float(value)


def _add(scope: _Scope, exp: Exposure, price: float | None, poll_s: float) -> None:
    scope.symbols.add(exp.symbol)
    if exp.sec_type not in STOCK_TYPES:
        age = exp.age_s if exp.age_s is not None else 0.0
        scope.age_max = age if scope.age_max is None else max(scope.age_max, age)
        if age <= poll_s:
            scope.fresh += 1
        else:
            scope.carried += 1
    if price is None:
        scope.priced = False
        return
    if exp.sec_type in STOCK_TYPES:
        scope.dollars += exp.quantity * price
    elif exp.greeks is not None:
        k = exp.quantity * exp.multiplier
        scope.dollars += k * exp.greeks.delta * price
        scope.gamma_dollars += k * exp.greeks.gamma * price * price / 100.0


def exposure_rows(
    ev: Evaluation,
    prices: Mapping[str, float],
    ts: datetime,
    *,
    account: str,
    poll_s: float,
    kinds: Sequence[str] = (),
    pnl: Pnl | None = None,
    underlying: str | None = None,
    mode: str = "",
) -> list[ExposureRow]:
    if not ev.rows:
        return []
    scopes: dict[str, _Scope] = {PORTFOLIO_CONTRACT: _Scope()}
    for exp in ev.exposures:
        price = _price(prices, exp)
        _add(scopes[PORTFOLIO_CONTRACT], exp, price, poll_s)
        _add(scopes.setdefault(exp.symbol, _Scope()), exp, price, poll_s)
    for symbol in ev.excluded_symbols:
        scopes[PORTFOLIO_CONTRACT].excluded += 1
        if symbol in scopes:
            scopes[symbol].excluded += 1
    by_scope: dict[str, NetRow] = {
        r.contract: r
        for r in net_rows(ev.exposures, prices, underlying=underlying, per_underlying=True)
    }
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

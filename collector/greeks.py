"""Net portfolio Greeks: the pure sum and the missing-Greeks policy (`GreeksPolicy`), decided
here and nowhere else. The rules (what counts as missing, grace, carry-forward, exclusion, the
default multiplier, the underlying price) are written once, in docs/GREEKS.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from collector.transport import PositionData, Snapshot
from shared.names import OPTION_TYPES, PORTFOLIO_CONTRACT, STOCK_TYPES

DEFAULT_OPTION_MULTIPLIER = 100.0
MAX_ABS_GREEK = 1e6
MAX_ABS_DELTA = 1.0 + 1e-9


class Greeks(NamedTuple):
    delta: float
    gamma: float
    vega: float
    theta: float


class Exposure(NamedTuple):
    """One position reduced to what the sum needs: Greeks already decided upon."""

    symbol: str
    sec_type: str
    quantity: float
    multiplier: float
    greeks: Greeks | None  # None only for stock
    und_price: float | None = None
    age_s: float | None = None  # how old the Greeks are (options)


@dataclass(frozen=True, slots=True)
class NetRow:
    contract: str
    delta: float
    gamma: float
    vega: float
    theta: float
    underlying_price: float | None


def clean_greek(value: float | None) -> float | None:
    """The value, or None when it is missing, non-finite or absurdly large."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number) or abs(number) > MAX_ABS_GREEK:
        return None
    return number


def valid_greeks(pos: PositionData) -> Greeks | None:
    """All four Greeks of a position if every one is usable, else None (hot path: inlined)."""
    d, g, v, t = pos.delta, pos.gamma, pos.vega, pos.theta
    if d is None or g is None or v is None or t is None:
        return None
    try:
        d, g, v, t = float(d), float(g), float(v), float(t)
    except (TypeError, ValueError):
        return None
    # written so that NaN (every comparison false) and infinities fail
    if (
        -MAX_ABS_DELTA <= d <= MAX_ABS_DELTA
        and 0.0 <= g <= MAX_ABS_GREEK
        and 0.0 <= v <= MAX_ABS_GREEK
        and -MAX_ABS_GREEK <= t <= MAX_ABS_GREEK
    ):
        return Greeks(d, g, v, t)
    return None


def _price(prices: Mapping[str, float], symbol: str) -> float | None:
    value = prices.get(symbol)
    if value is None or not math.isfinite(value) or value <= 0:
        return None
    return float(value)


def net_rows(
    exposures: Iterable[Exposure],
    prices: Mapping[str, float],
    *,
    underlying: str | None = None,
    per_underlying: bool = False,
) -> list[NetRow]:
    """The PORTFOLIO row (first) and, with `per_underlying`, one row per underlying symbol."""
    sums: dict[str, list[float]] = {}
    seen_price: dict[str, float] = {}
    for exp in exposures:
        acc = sums.setdefault(exp.symbol, [0.0, 0.0, 0.0, 0.0])
        if exp.sec_type in STOCK_TYPES:
            acc[0] += exp.quantity
        elif exp.greeks is not None:
            k = exp.quantity * exp.multiplier
            acc[0] += k * exp.greeks.delta
            acc[1] += k * exp.greeks.gamma
            acc[2] += k * exp.greeks.vega
            acc[3] += k * exp.greeks.theta
        if exp.und_price is not None and math.isfinite(exp.und_price) and exp.und_price > 0:
            seen_price.setdefault(exp.symbol, exp.und_price)
    price_of = {sym: _price(prices, sym) or seen_price.get(sym) for sym in sums}
    if underlying:
        portfolio_price = _price(prices, underlying) or seen_price.get(underlying)
    else:
        portfolio_price = None
        best = -1.0
        for sym in sorted(sums):
            price = price_of[sym]
            if price is None:
                continue
            dollar = abs(sums[sym][0] * price)
            if dollar > best:
                best, portfolio_price = dollar, price
    total = [0.0, 0.0, 0.0, 0.0]
    for acc in sums.values():
        for i in range(4):
            total[i] += acc[i]
    rows = [_row(PORTFOLIO_CONTRACT, total, portfolio_price)]
    if per_underlying:
        rows.extend(_row(sym, sums[sym], price_of[sym]) for sym in sorted(sums))
    return rows


def _row(contract: str, acc: list[float], price: float | None) -> NetRow:
    return NetRow(contract, acc[0], acc[1], acc[2], acc[3], price)


@dataclass(frozen=True, slots=True)
class Report:
    status: str  # INFO or WARN
    message: str


@dataclass(frozen=True, slots=True)
class Evaluation:
    rows: list[NetRow]
    held: bool  # True: pending positions, no row this tick
    pending: tuple[str, ...] = ()
    carried: tuple[str, ...] = ()
    excluded: tuple[str, ...] = ()
    assumed_multiplier: tuple[str, ...] = ()
    reports: list[Report] = field(default_factory=list)
    scope_rows: tuple[NetRow, ...] = ()  # PORTFOLIO and every underlying, whatever is written
    exposures: tuple[Exposure, ...] = ()  # what the sums used
    excluded_symbols: tuple[str, ...] = ()  # the underlying of each excluded position


class _Known(NamedTuple):
    greeks: Greeks
    at_s: float  # epoch seconds


def _label(pos: PositionData) -> str:
    return pos.description or f"{pos.symbol} {pos.sec_type} conid {pos.con_id}"


def _names(labels: Iterable[str], limit: int = 20) -> str:
    items = sorted(labels)
    shown = ", ".join(items[:limit])
    if len(items) > limit:
        shown += f" and {len(items) - limit} more"
    return shown


@dataclass
class _Tally:
    """What one evaluation found, position by position."""

    exposures: list[Exposure] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    carried: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    excluded_symbols: list[str] = field(default_factory=list)
    assumed: list[str] = field(default_factory=list)
    needing: int = 0  # option positions that need Greeks
    live: set[int] = field(default_factory=set)  # their conIds


class GreeksPolicy:
    """Grace period, carry-forward and exclusion over successive snapshots (see module doc)."""

    def __init__(
        self,
        grace_s: float,
        max_age_s: float,
        *,
        underlying: str | None = None,
        per_underlying: bool = False,
    ) -> None:
        self.grace_s = grace_s
        self.max_age_s = max_age_s
        self.underlying = underlying
        self.per_underlying = per_underlying
        self._known: dict[int, _Known] = {}
        self._first_seen: dict[int, float] = {}  # epoch seconds
        self._excluded: frozenset[str] = frozenset()
        self._assumed: frozenset[str] = frozenset()
        self._holding = False
        self._all_out = False

    def forget(self) -> None:
        """Drop remembered Greeks (e.g. the account changed)."""
        self._known.clear()
        self._first_seen.clear()

    def evaluate(self, snap: Snapshot, now: datetime) -> Evaluation:
        t = _Tally()
        now_s = now.timestamp()
        for pos in snap.positions:
            qty = pos.quantity
            if not math.isfinite(qty):
                t.excluded.append(_label(pos) + " (quantity unreadable)")
                t.excluded_symbols.append(pos.symbol)
            elif qty == 0:
                continue
            elif pos.sec_type in STOCK_TYPES:
                t.exposures.append(
                    Exposure(pos.symbol, pos.sec_type, qty, 1.0, None, pos.und_price)
                )
            elif pos.sec_type in OPTION_TYPES:
                self._option(pos, now_s, t)
        # forget contracts no longer held
        for con_id in [c for c in self._first_seen if c not in t.live]:
            self._first_seen.pop(con_id, None)
            self._known.pop(con_id, None)
        reports = self._reports(t.pending, t.excluded, t.assumed, t.needing)
        held = bool(t.pending)
        all_out = t.needing > 0 and len(t.excluded) >= t.needing and not t.pending
        scope_rows: list[NetRow] = []
        if not held and not all_out:  # every scope once; the rows written are a choice of them
            scope_rows = net_rows(
                t.exposures, snap.prices, underlying=self.underlying, per_underlying=True
            )
        return Evaluation(
            rows=scope_rows if self.per_underlying else scope_rows[:1],
            scope_rows=tuple(scope_rows),
            held=held or all_out,
            pending=tuple(t.pending),
            carried=tuple(t.carried),
            excluded=tuple(t.excluded),
            assumed_multiplier=tuple(t.assumed),
            reports=reports,
            exposures=tuple(t.exposures),
            excluded_symbols=tuple(t.excluded_symbols),
        )

    def _option(self, pos: PositionData, now_s: float, t: _Tally) -> None:
        """One option position: its fresh or carried Greeks, else pending or excluded."""
        t.needing += 1
        con_id = pos.con_id
        t.live.add(con_id)
        first_seen = self._first_seen.setdefault(con_id, now_s)
        multiplier = pos.multiplier
        if multiplier is None or not math.isfinite(multiplier) or multiplier <= 0:
            multiplier = DEFAULT_OPTION_MULTIPLIER
            t.assumed.append(_label(pos))
        greeks = valid_greeks(pos)
        known = self._known.get(con_id)
        if greeks is not None:
            at_s = pos.greeks_at.timestamp() if pos.greeks_at is not None else now_s
            if known is None or at_s >= known.at_s:
                known = _Known(greeks, at_s)
                self._known[con_id] = known
        if known is not None and now_s - known.at_s <= self.max_age_s:
            if greeks is None:
                t.carried.append(_label(pos))
            t.exposures.append(
                Exposure(
                    pos.symbol,
                    pos.sec_type,
                    pos.quantity,
                    multiplier,
                    known.greeks,
                    pos.und_price,
                    max(0.0, now_s - known.at_s),
                )
            )
            return
        since_s = pos.subscribed_at.timestamp() if pos.subscribed_at is not None else first_seen
        if now_s - since_s < self.grace_s:
            t.pending.append(_label(pos))
        else:
            t.excluded.append(_label(pos))
            t.excluded_symbols.append(pos.symbol)

    def _reports(
        self, pending: list[str], excluded: list[str], assumed: list[str], needing: int
    ) -> list[Report]:
        reports: list[Report] = []
        holding = bool(pending)
        if holding and not self._holding:
            reports.append(
                Report(
                    "INFO",
                    f"Greeks pending for {len(pending)} position(s) within the {self.grace_s:g} s "
                    f"grace period; tick held back: {_names(pending)}",
                )
            )
        self._holding = holding
        new_excluded = frozenset(excluded)
        if new_excluded != self._excluded:
            reports.append(
                Report(
                    "WARN",
                    f"Greeks incomplete: {len(new_excluded)} position(s) excluded from the net "
                    f"Greeks (no Greeks within {self.max_age_s:g} s): {_names(new_excluded)}",
                )
                if new_excluded
                else Report("INFO", "Greeks complete again: no position excluded")
            )
            self._excluded = new_excluded
        all_out = needing > 0 and len(excluded) >= needing and not pending
        if all_out and not self._all_out:
            reports.append(
                Report(
                    "WARN", "No option position has usable Greeks: no row written until they return"
                )
            )
        self._all_out = all_out
        new_assumed = frozenset(assumed)
        if new_assumed and new_assumed != self._assumed:
            reports.append(
                Report(
                    "WARN",
                    f"Multiplier unknown for {len(new_assumed)} option position(s); assumed "
                    f"{DEFAULT_OPTION_MULTIPLIER:g}: {_names(new_assumed)}",
                )
            )
        self._assumed = new_assumed
        return reports

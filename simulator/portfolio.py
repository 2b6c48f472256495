"""The simulated account: positions on several underlyings whose prices and Greeks move over time.

Both simulators (IB Gateway and Client Portal) serve the same model, and tests compute the
expected net Greeks from it independently of the bridge (`SimPortfolio.net_greeks`). A login
may manage several accounts, one `SimPortfolio` each: `shared_market` checks that they see one
market, `combined` / `net_greeks_sum` give what a bridge reading all of them must show.

Prices and Greeks are a deterministic function of a *step* (`floor(t / step_s)`), so a test can
recompute exactly what the simulator served at a given moment. Greeks are Black-Scholes values per
share (IB's convention): the bridge multiplies by position and multiplier.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date
from zoneinfo import ZoneInfo

RISK_FREE = 0.04
EASTERN = ZoneInfo("America/New_York")  # the exchanges' clock: market hours, IB's time stamps
VALUATION_DATE = date(2026, 11, 25)  # the model's today unless a portfolio says otherwise


@dataclass(frozen=True)
class Underlying:
    con_id: int
    symbol: str
    base_price: float
    vol: float = 0.2
    exchange: str = "ARCA"


@dataclass(frozen=True)
class SimPosition:
    con_id: int
    symbol: str  # the underlying's symbol
    sec_type: str  # STK or OPT
    quantity: float
    und_con_id: int
    expiry: str = ""  # YYYYMMDD for options
    strike: float = 0.0
    right: str = ""  # C or P
    multiplier: int = 1
    avg_cost: float = 0.0

    @property
    def is_option(self) -> bool:
        return self.sec_type == "OPT"

    @property
    def local_symbol(self) -> str:
        if not self.is_option:
            return self.symbol
        return f"{self.symbol:<6}{self.expiry[2:]}{self.right}{int(self.strike * 1000):08d}"


@dataclass(frozen=True)
class OptionQuote:
    delta: float
    gamma: float
    vega: float  # per 1 vol point
    theta: float  # per calendar day
    price: float
    iv: float
    und_price: float


@dataclass(frozen=True)
class NetGreeks:
    delta: float
    gamma: float
    vega: float
    theta: float


def _norm_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _norm_pdf(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def black_scholes(
    spot: float,
    strike: float,
    years: float,
    vol: float,
    right: str,
    *,
    rate: float = RISK_FREE,
) -> OptionQuote:
    years = max(years, 1.0 / 365.0)
    sqrt_t = math.sqrt(years)
    d1 = (math.log(spot / strike) + (rate + 0.5 * vol * vol) * years) / (vol * sqrt_t)
    d2 = d1 - vol * sqrt_t
    disc = math.exp(-rate * years)
    gamma = _norm_pdf(d1) / (spot * vol * sqrt_t)
    vega = spot * _norm_pdf(d1) * sqrt_t / 100.0
    if right == "C":
        delta = _norm_cdf(d1)
        price = spot * _norm_cdf(d1) - strike * disc * _norm_cdf(d2)
        theta = -spot * _norm_pdf(d1) * vol / (2 * sqrt_t) - rate * strike * disc * _norm_cdf(d2)
    else:
        delta = _norm_cdf(d1) - 1.0
        price = strike * disc * _norm_cdf(-d2) - spot * _norm_cdf(-d1)
        theta = -spot * _norm_pdf(d1) * vol / (2 * sqrt_t) + rate * strike * disc * _norm_cdf(-d2)
    return OptionQuote(
        delta=delta,
        gamma=gamma,
        vega=vega,
        theta=theta / 365.0,
        price=max(price, 0.01),
        iv=vol,
        und_price=spot,
    )


@dataclass
class SimPortfolio:
    account: str
    underlyings: dict[str, Underlying]
    positions: list[SimPosition]
    step_s: float = 1.0  # prices and Greeks change once per step; 0 freezes them
    valuation_date: date = VALUATION_DATE

    def step(self, t: float) -> int:
        return 0 if self.step_s <= 0 else math.floor(t / self.step_s)

    def price_at_step(self, symbol: str, step: int) -> float:
        und = self.underlyings[symbol]
        wiggle = 0.01 * math.sin(2 * math.pi * step / 60.0) + 0.002 * math.sin(step * 1.7)
        return round(und.base_price * (1.0 + wiggle), 2)

    def price(self, symbol: str, t: float) -> float:
        return self.price_at_step(symbol, self.step(t))

    def quote_at_step(self, pos: SimPosition, step: int) -> OptionQuote:
        und = self.underlyings[pos.symbol]
        spot = self.price_at_step(pos.symbol, step)
        exp = date(int(pos.expiry[:4]), int(pos.expiry[4:6]), int(pos.expiry[6:8]))
        years = (exp - self.valuation_date).days / 365.0
        return black_scholes(spot, pos.strike, years, und.vol, pos.right)

    def quote(self, pos: SimPosition, t: float) -> OptionQuote:
        return self.quote_at_step(pos, self.step(t))

    def net_greeks_at_step(self, step: int, symbol: str | None = None) -> NetGreeks:
        """Independent reference: sum of position x multiplier x Greek, stock adds shares."""
        d = g = v = th = 0.0
        for pos in self.positions:
            if symbol is not None and pos.symbol != symbol:
                continue
            if pos.is_option:
                q = self.quote_at_step(pos, step)
                k = pos.quantity * pos.multiplier
                d += k * q.delta
                g += k * q.gamma
                v += k * q.vega
                th += k * q.theta
            else:
                d += pos.quantity
        return NetGreeks(d, g, v, th)

    def net_greeks(self, t: float, symbol: str | None = None) -> NetGreeks:
        return self.net_greeks_at_step(self.step(t), symbol)

    def by_con_id(self) -> dict[int, SimPosition]:
        return {p.con_id: p for p in self.positions}


# Options whose multiplier is not 100: a SPY mini (10 shares) and two contracts of
# non-standard size (50 and 1000), as adjusted or foreign contracts have.
ODD_MULTIPLIER_OPTIONS = (
    SimPosition(600000031, "SPY", "OPT", 7, 756733, "20261218", 610.0, "C", 10, 65.0),
    SimPosition(600000032, "AAPL", "OPT", -6, 265598, "20261218", 220.0, "P", 50, 140.0),
    SimPosition(600000033, "QQQ", "OPT", 2, 320227571, "20270115", 500.0, "C", 1000, 21500.0),
)


def default_portfolio(
    account: str = "DU1234567",
    extra_options: int = 0,
    step_s: float = 1.0,
    *,
    odd_multipliers: bool = False,
) -> SimPortfolio:
    """SPY and QQQ stock and options, an AAPL option spread; `extra_options` adds more SPY
    options (for paging: the Client Portal serves 100 positions a page).

    `odd_multipliers` puts `ODD_MULTIPLIER_OPTIONS` first among the options, so a test can tell
    a multiplier read right from the default of 100 (and the first options are the ones a
    gateway serves without their security definition)."""
    und = {
        "SPY": Underlying(756733, "SPY", 600.0, 0.18, "ARCA"),
        "QQQ": Underlying(320227571, "QQQ", 510.0, 0.22, "NASDAQ"),
        "AAPL": Underlying(265598, "AAPL", 230.0, 0.28, "NASDAQ"),
    }
    p = [
        SimPosition(756733, "SPY", "STK", 100, 756733, avg_cost=580.0),
        SimPosition(600000001, "SPY", "OPT", -2, 756733, "20261218", 600.0, "C", 100, 1250.0),
        SimPosition(600000002, "SPY", "OPT", 3, 756733, "20261218", 580.0, "P", 100, 980.0),
        SimPosition(320227571, "QQQ", "STK", -50, 320227571, avg_cost=505.0),
        SimPosition(600000011, "QQQ", "OPT", 5, 320227571, "20270115", 520.0, "C", 100, 1530.0),
        SimPosition(600000012, "QQQ", "OPT", -4, 320227571, "20270115", 480.0, "P", 100, 1110.0),
        SimPosition(600000021, "AAPL", "OPT", 10, 265598, "20261218", 240.0, "C", 100, 420.0),
        SimPosition(600000022, "AAPL", "OPT", -10, 265598, "20261218", 250.0, "C", 100, 190.0),
    ]
    if odd_multipliers:
        p[1:1] = ODD_MULTIPLIER_OPTIONS
    for i in range(extra_options):
        strike = 500.0 + 5.0 * (i % 40)
        right = "C" if i % 2 == 0 else "P"
        qty = (i % 7) - 3 or 1
        p.append(
            SimPosition(
                610000000 + i, "SPY", "OPT", qty, 756733, "20270115", strike, right, 100, 800.0
            )
        )
    return SimPortfolio(account=account, underlyings=und, positions=p, step_s=step_s)


# ---------------------------------------------------------------- several accounts of one login
ALL = "ALL"  # the account id of a combined book


def contract_terms(pos: SimPosition) -> tuple[object, ...]:
    """What makes a contract itself (not a holding of it)."""
    return (pos.symbol, pos.sec_type, pos.und_con_id, pos.expiry, pos.strike, pos.right,
            pos.multiplier)  # fmt: skip


def shared_market(portfolios: Sequence[SimPortfolio]) -> SimPortfolio:
    """The one market several accounts of a login see: their underlyings merged, no positions.

    Prices and Greeks are a function of the underlying, the step and the valuation date, so the
    accounts must agree on them, and a conId held by two accounts must be the same contract in
    both (ValueError otherwise): one instrument, one price, whichever account holds it."""
    if not portfolios:
        raise ValueError("no portfolio")
    first = portfolios[0]
    underlyings: dict[str, Underlying] = {}
    und_symbol: dict[int, str] = {}
    terms: dict[int, tuple[object, ...]] = {}
    for pf in portfolios:
        if (pf.step_s, pf.valuation_date) != (first.step_s, first.valuation_date):
            raise ValueError(f"{pf.account}: another step or valuation date than {first.account}")
        for und in pf.underlyings.values():
            if underlyings.setdefault(und.symbol, und) != und:
                raise ValueError(f"{pf.account}: underlying {und.symbol} differs between accounts")
            if und_symbol.setdefault(und.con_id, und.symbol) != und.symbol:
                raise ValueError(f"{pf.account}: conId {und.con_id} names two underlyings")
        for pos in pf.positions:
            if terms.setdefault(pos.con_id, contract_terms(pos)) != contract_terms(pos):
                raise ValueError(f"{pf.account}: conId {pos.con_id} is another contract elsewhere")
    return SimPortfolio(
        account="",
        underlyings=underlyings,
        positions=[],
        step_s=first.step_s,
        valuation_date=first.valuation_date,
    )


def combined(portfolios: Sequence[SimPortfolio], account: str = ALL) -> SimPortfolio:
    """The accounts' books as one (what a bridge reading every account shows in its ALL row):
    one position per contract with the quantities summed and the cost of the holdings summed
    (a contract whose holdings cancel out is left out). Its net Greeks are the sum of the
    accounts' net Greeks (`net_greeks_sum`)."""
    market = shared_market(portfolios)
    qty: dict[int, float] = {}
    cost: dict[int, float] = {}
    first: dict[int, SimPosition] = {}
    for pf in portfolios:
        for pos in pf.positions:
            first.setdefault(pos.con_id, pos)
            qty[pos.con_id] = qty.get(pos.con_id, 0.0) + pos.quantity
            cost[pos.con_id] = cost.get(pos.con_id, 0.0) + pos.quantity * pos.avg_cost
    market.account = account
    market.positions = [
        replace(pos, quantity=qty[con_id], avg_cost=cost[con_id] / qty[con_id])
        for con_id, pos in first.items()
        if qty[con_id] != 0
    ]
    return market


def net_greeks_sum(
    portfolios: Sequence[SimPortfolio], t: float, symbol: str | None = None
) -> NetGreeks:
    """The accounts' net Greeks added up, account by account (independent of `combined`)."""
    parts = [pf.net_greeks(t, symbol) for pf in portfolios]
    return NetGreeks(
        delta=sum(g.delta for g in parts),
        gamma=sum(g.gamma for g in parts),
        vega=sum(g.vega for g in parts),
        theta=sum(g.theta for g in parts),
    )

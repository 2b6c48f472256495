"""A large simulated book made from a seed: many option legs over many underlyings.

`generate_book(legs, underlyings, seed)` gives a `SimPortfolio` that the simulators serve like
the default one, so a test can put the bridge against more tickers than the account's
market-data lines. The same arguments give the same book: every choice comes from one
`random.Random(seed)`, and expiries count from `today` (by default the model's own valuation
date, so the seed alone fixes the book). `linked_book` makes another account of the same login
beside a book: the same market, some of the same contracts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import date, timedelta

from simulator.portfolio import (
    VALUATION_DATE,
    SimPortfolio,
    SimPosition,
    Underlying,
    black_scholes,
)

TICKERS = (
    "SPY", "QQQ", "IWM", "DIA", "AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META",
    "TSLA", "AMD", "NFLX", "JPM", "BAC", "XOM", "CVX", "KO", "PEP", "DIS",
    "INTC", "CSCO", "ORCL", "CRM", "ADBE", "PYPL", "UBER", "BA", "CAT", "GE",
    "F", "GM", "T", "VZ", "WMT", "COST", "HD", "LOW", "NKE", "SBUX",
)  # fmt: skip
EXCHANGES = ("ARCA", "NASDAQ", "NYSE")
# days to expiry before rounding to the next Friday: weeklies to a LEAP of ~13 months
EXPIRY_DAYS = (7, 14, 21, 30, 45, 60, 90, 120, 180, 270, 365, 400)
# mostly standard contracts, some minis (10), a few of odd size (50: adjusted, 1000: foreign)
MULTIPLIERS = (100, 10, 50, 1000)
MULTIPLIER_WEIGHTS = (80, 12, 5, 3)
STOCK_CON_ID = 700_000_000
OPTION_CON_ID = 800_000_000


def _friday_on_or_after(day: date) -> date:
    return day + timedelta(days=(4 - day.weekday()) % 7)


def _strike_step(spot: float) -> float:
    return 1.0 if spot < 50 else 2.5 if spot < 200 else 5.0


def _underlyings(n: int, rng: random.Random) -> list[Underlying]:
    out = []
    for i in range(n):
        symbol = TICKERS[i] if i < len(TICKERS) else f"U{i:02d}"
        out.append(
            Underlying(
                con_id=STOCK_CON_ID + i,
                symbol=symbol,
                base_price=round(rng.uniform(20.0, 600.0), 2),
                vol=round(rng.uniform(0.15, 0.6), 3),
                exchange=rng.choice(EXCHANGES),
            )
        )
    return out


def _multipliers(legs: int, rng: random.Random) -> list[int]:
    mults = rng.choices(MULTIPLIERS, MULTIPLIER_WEIGHTS, k=legs)
    if legs >= len(MULTIPLIERS):  # every size at least once, at places the seed picks
        for i, mult in zip(rng.sample(range(legs), len(MULTIPLIERS)), MULTIPLIERS, strict=True):
            mults[i] = mult
    return mults


@dataclass(frozen=True)
class _Leg:
    con_id: int
    expiry: date
    multiplier: int


def _option_leg(
    rng: random.Random,
    und: Underlying,
    leg: _Leg,
    valuation: date,
    taken: set[tuple[str, str, float, str]],
) -> SimPosition:
    """A new option position on `und`: side, strike near the spot (a contract not in `taken`,
    which it joins), quantity -20..20 (never 0), a cost near the model's price."""
    right = rng.choice("CP")
    step = _strike_step(und.base_price)
    strike = max(round(und.base_price * rng.uniform(0.85, 1.15) / step) * step, step)
    key = (und.symbol, leg.expiry.strftime("%Y%m%d"), strike, right)
    while key in taken:  # one position per contract, as an account holds them
        strike += step
        key = (und.symbol, key[1], strike, right)
    taken.add(key)
    years = (leg.expiry - valuation).days / 365.0
    price = black_scholes(und.base_price, strike, years, und.vol, right).price
    return SimPosition(
        con_id=leg.con_id,
        symbol=und.symbol,
        sec_type="OPT",
        quantity=_quantity(rng),
        und_con_id=und.con_id,
        expiry=key[1],
        strike=strike,
        right=right,
        multiplier=leg.multiplier,
        avg_cost=round(price * leg.multiplier * rng.uniform(0.8, 1.2), 2),
    )


def _quantity(rng: random.Random) -> int:
    return rng.choice([q for q in range(-20, 21) if q != 0])


def generate_book(
    legs: int,
    underlyings: int,
    seed: int,
    *,
    account: str = "DU1234567",
    step_s: float = 1.0,
    today: date | None = None,
) -> SimPortfolio:
    """`legs` option positions over `underlyings` distinct symbols (each with its own price and
    vol; each gets a leg when there are enough), expiries 7 to ~400 days after `today` on
    Fridays, strikes near the spot, calls and puts, quantities -20..20 (never 0), multipliers
    mostly 100 with some 10, 50 and 1000; a stock position on about a third of the
    underlyings (at least one)."""
    if legs < 0 or underlyings < 1:
        raise ValueError("a book needs legs >= 0 and underlyings >= 1")
    rng = random.Random(seed)
    valuation = today if today is not None else VALUATION_DATE
    unds = _underlyings(underlyings, rng)
    with_stock = {i for i in range(underlyings) if rng.random() < 1 / 3} or {
        rng.randrange(underlyings)
    }
    ladder = [_friday_on_or_after(valuation + timedelta(days=d)) for d in EXPIRY_DAYS]
    order = rng.sample(range(len(ladder)), len(ladder))  # the first legs get distinct expiries
    mults = _multipliers(legs, rng)
    by_und: dict[int, list[SimPosition]] = {i: [] for i in range(underlyings)}
    taken: set[tuple[str, str, float, str]] = set()
    for j in range(legs):
        k = j if j < underlyings else rng.randrange(underlyings)
        expiry = ladder[order[j]] if j < len(order) else rng.choice(ladder)
        leg = _Leg(OPTION_CON_ID + j, expiry, mults[j])
        by_und[k].append(_option_leg(rng, unds[k], leg, valuation, taken))
    positions: list[SimPosition] = []
    for i, und in enumerate(unds):
        if i in with_stock:
            shares = rng.choice([-1, 1]) * 100 * rng.randint(1, 20)
            cost = round(und.base_price * rng.uniform(0.9, 1.1), 2)
            positions.append(
                SimPosition(und.con_id, und.symbol, "STK", shares, und.con_id, avg_cost=cost)
            )
        positions.extend(by_und[i])
    return SimPortfolio(
        account=account,
        underlyings={u.symbol: u for u in unds},
        positions=positions,
        step_s=step_s,
        valuation_date=valuation,
    )


def parse_book_spec(spec: str) -> tuple[int, int, int]:
    """`LEGS:UNDERLYINGS:SEED` -> (legs, underlyings, seed), for the simulators' --book."""
    parts = spec.split(":")
    if len(parts) != 3:
        raise ValueError(f"--book takes LEGS:UNDERLYINGS:SEED, not {spec!r}")
    legs, unds, seed = (int(x) for x in parts)
    if legs < 0 or unds < 1:
        raise ValueError("--book needs LEGS >= 0 and UNDERLYINGS >= 1")
    return legs, unds, seed


LINKED_OPTION_CON_ID = 900_000_000


def linked_book(
    base: SimPortfolio,
    legs: int,
    underlyings: int,
    seed: int,
    *,
    account: str,
    first_con_id: int = LINKED_OPTION_CON_ID,
) -> SimPortfolio:
    """Another account of the login that holds `base`: the same market (`base`'s underlyings,
    step and valuation date) and a book of its own made from `seed`: `legs` option positions on
    the first `underlyings` of `base`'s underlyings, the first of them (and about a third of
    the others) on contracts `base` holds too (the same conId, another quantity and cost) while
    some are left, the rest on contracts of its own (conIds from `first_con_id`, never one
    `base` uses); a stock position on its first underlying."""
    if legs < 0 or underlyings < 1:
        raise ValueError("a book needs legs >= 0 and underlyings >= 1")
    rng = random.Random(seed)
    unds = list(base.underlyings.values())[:underlyings]
    symbols = {u.symbol for u in unds}
    shareable = [p for p in base.positions if p.is_option and p.symbol in symbols]
    rng.shuffle(shareable)
    used = {p.con_id for p in base.positions} | {u.con_id for u in base.underlyings.values()}
    taken = {(p.symbol, p.expiry, p.strike, p.right) for p in base.positions if p.is_option}
    ladder = [_friday_on_or_after(base.valuation_date + timedelta(days=d)) for d in EXPIRY_DAYS]
    con_id = first_con_id
    by_symbol: dict[str, list[SimPosition]] = {u.symbol: [] for u in unds}
    for j in range(legs):
        if shareable and (j == 0 or rng.random() < 1 / 3):
            theirs = shareable.pop()
            cost = round(theirs.avg_cost * rng.uniform(0.8, 1.2), 2)
            mine = replace(theirs, quantity=_quantity(rng), avg_cost=cost)
        else:
            while con_id in used:
                con_id += 1
            used.add(con_id)
            und = unds[j] if j < len(unds) else rng.choice(unds)
            leg = _Leg(con_id, rng.choice(ladder), rng.choices(MULTIPLIERS, MULTIPLIER_WEIGHTS)[0])
            mine = _option_leg(rng, und, leg, base.valuation_date, taken)
        by_symbol[mine.symbol].append(mine)
    first = unds[0]
    shares = rng.choice([-1, 1]) * 100 * rng.randint(1, 20)
    cost = round(first.base_price * rng.uniform(0.9, 1.1), 2)
    stock = SimPosition(first.con_id, first.symbol, "STK", shares, first.con_id, avg_cost=cost)
    positions = [stock, *(p for u in unds for p in by_symbol[u.symbol])]
    return SimPortfolio(
        account=account,
        underlyings={u.symbol: u for u in unds},
        positions=positions,
        step_s=base.step_s,
        valuation_date=base.valuation_date,
    )

"""The simulated accounts seen as TWS messages: contracts, positions, portfolio, prices, Greeks.

Wraps the `simulator.portfolio.SimPortfolio` of each account of the login (the account model
both simulators serve) and turns them into the field lists of the TWS messages. Holds no socket
state.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace

from simulator.gateway import protocol as p
from simulator.portfolio import SimPortfolio, SimPosition, Underlying, contract_terms, shared_market

DOUBLE_MAX = sys.float_info.max
GREEKS_MODES = ("normal", "sentinel", "max", "absent", "last")


@dataclass(frozen=True, slots=True)
class Instrument:
    """A contract the simulated gateway knows (a stock underlying or an option)."""

    con_id: int
    symbol: str
    sec_type: str
    expiry: str = ""
    strike: float = 0.0
    right: str = ""
    multiplier: str = ""
    primary_exchange: str = ""
    currency: str = "USD"
    local_symbol: str = ""
    trading_class: str = ""
    und_con_id: int = 0

    @property
    def is_option(self) -> bool:
        return self.sec_type == "OPT"

    def contract_fields(self, exchange: str) -> list[p.Field]:
        """conId, symbol, secType, expiry, strike, right, multiplier, exchange, currency,
        localSymbol, tradingClass: the shape of the position message (61)."""
        return [
            self.con_id, self.symbol, self.sec_type, self.expiry, self.strike, self.right,
            self.multiplier, exchange, self.currency, self.local_symbol, self.trading_class,
        ]  # fmt: skip


def stock_instrument(und: Underlying) -> Instrument:
    return Instrument(
        con_id=und.con_id,
        symbol=und.symbol,
        sec_type="STK",
        primary_exchange=und.exchange,
        local_symbol=und.symbol,
        trading_class=und.symbol,
        und_con_id=und.con_id,
    )


def option_instrument(pos: SimPosition) -> Instrument:
    return Instrument(
        con_id=pos.con_id,
        symbol=pos.symbol,
        sec_type="OPT",
        expiry=pos.expiry,
        strike=pos.strike,
        right=pos.right,
        multiplier=str(pos.multiplier),
        primary_exchange="",
        local_symbol=pos.local_symbol,
        trading_class=pos.symbol,
        und_con_id=pos.und_con_id,
    )


@dataclass(frozen=True, slots=True)
class Tick:
    tick_type: int
    price: float
    size: float


class Catalog:
    """Instruments, positions and quotes of the accounts of one login: a SimPortfolio each (the
    first is the primary account, the one an empty account code means), whose positions it may
    change. One instrument has one price and one set of Greeks whichever account holds it: they
    come from the market the accounts share (`shared_market`)."""

    def __init__(self, portfolio: SimPortfolio, more: Sequence[SimPortfolio] = ()) -> None:
        self.portfolio = portfolio
        self.books: dict[str, SimPortfolio] = {}
        for book in (portfolio, *more):
            if book.account in self.books:
                raise ValueError(f"account {book.account} given twice")
            self.books[book.account] = book
        self.market = shared_market(list(self.books.values()))
        self._known: dict[tuple[str, int], SimPosition] = {}  # the last holding per account
        self._terms: dict[int, SimPosition] = {}  # conId -> a position on it: its contract
        self._instruments: dict[int, Instrument] = {}
        for und in self.market.underlyings.values():
            self._instruments[und.con_id] = stock_instrument(und)
        for book in self.books.values():
            for pos in book.positions:
                self._learn(book.account, pos)

    def _learn(self, account: str, pos: SimPosition) -> None:
        self._known[account, pos.con_id] = pos
        self._terms.setdefault(pos.con_id, pos)
        if pos.is_option:
            self._instruments.setdefault(pos.con_id, option_instrument(pos))

    # ------------------------------------------------------------ accounts
    def accounts(self) -> list[str]:
        return list(self.books)

    def book(self, account: str | None = None) -> SimPortfolio:
        """The portfolio of `account` (None or '': the primary one); KeyError if unknown."""
        if not account:
            return self.portfolio
        book = self.books.get(account)
        if book is None:
            raise KeyError(f"unknown account {account}")
        return book

    # ------------------------------------------------------------ lookups
    def instrument(self, con_id: int) -> Instrument | None:
        return self._instruments.get(con_id)

    def find(self, c: p.ContractFields) -> Instrument | None:
        """The instrument a request names: by conId, else by symbol/type (and option terms)."""
        if c.con_id:
            return self._instruments.get(c.con_id)
        for inst in self._instruments.values():
            if inst.symbol != c.symbol and inst.local_symbol != c.local_symbol:
                continue
            if c.sec_type and c.sec_type != inst.sec_type:
                continue
            if not c.sec_type and inst.sec_type != "STK":
                continue
            if inst.is_option:
                if c.local_symbol and c.local_symbol.strip() == inst.local_symbol.strip():
                    return inst
                if (
                    c.expiry == inst.expiry
                    and abs(c.strike - inst.strike) < 1e-9
                    and c.right[:1] == inst.right
                ):
                    return inst
                continue
            return inst
        return None

    def positions(self, account: str | None = None) -> list[SimPosition]:
        return list(self.book(account).positions)

    def position(self, con_id: int, account: str | None = None) -> SimPosition | None:
        for pos in self.book(account).positions:
            if pos.con_id == con_id:
                return pos
        return None

    # ------------------------------------------------------------ changes
    def set_position(self, con_id: int, quantity: float, account: str | None = None) -> SimPosition:
        """Change (0 closes) or reopen a position that the account has held before, open one on
        a contract another account holds (at no cost), or open a stock position on a known
        underlying. Returns the position with its new quantity."""
        book = self.book(account)
        base = self._known.get((book.account, con_id))
        if base is None and con_id in self._terms:
            base = replace(self._terms[con_id], quantity=0, avg_cost=0.0)
        if base is None:
            inst = self._instruments.get(con_id)
            if inst is None or inst.is_option:
                raise KeyError(f"unknown conId {con_id}")
            base = SimPosition(con_id, inst.symbol, "STK", 0, con_id)
        new = replace(base, quantity=quantity)
        kept = [q for q in book.positions if q.con_id != con_id]
        if quantity != 0:
            kept.append(new)
        book.positions = kept
        self._known[book.account, con_id] = new
        return new

    def add_position(self, pos: SimPosition, account: str | None = None) -> None:
        known = self._terms.get(pos.con_id)
        if known is not None and known.is_option and contract_terms(known) != contract_terms(pos):
            raise ValueError(f"conId {pos.con_id} is another contract already")
        self._learn(self.book(account).account, pos)
        self.set_position(pos.con_id, pos.quantity, account)

    # ------------------------------------------------------------ values
    def stock_price(self, symbol: str, t: float) -> float:
        return self.market.price(symbol, t)

    def mark(self, pos: SimPosition, t: float) -> float:
        """The price of one unit (per share for options: IB's marketPrice convention)."""
        if pos.is_option:
            return self.market.quote(pos, t).price
        return self.stock_price(pos.symbol, t)

    def unrealized(self, pos: SimPosition, t: float) -> float:
        return pos.quantity * self.mark(pos, t) * pos.multiplier - pos.quantity * pos.avg_cost

    def pnl(self, t: float, account: str | None = None) -> tuple[float, float, float]:
        """(daily, unrealized, realized) of the account (None: the primary one)."""
        unreal = sum(self.unrealized(pos, t) for pos in self.book(account).positions)
        daily = 0.1 * unreal
        return round(daily, 2), round(unreal, 2), 0.0

    def net_liquidation(self, t: float, account: str | None = None) -> float:
        value = sum(
            pos.quantity * self.mark(pos, t) * pos.multiplier
            for pos in self.book(account).positions
        )
        return round(100_000.0 + value, 2)

    # ------------------------------------------------------------ messages
    def position_msg(self, account: str, pos: SimPosition) -> list[p.Field]:
        inst = self._instrument_of(pos)
        exchange = inst.primary_exchange if not inst.is_option else ""
        return [
            p.Out.POSITION_DATA, 3, account, *inst.contract_fields(exchange),
            float(pos.quantity), pos.avg_cost,
        ]  # fmt: skip

    def closed_position_msg(self, account: str, con_id: int) -> list[p.Field]:
        pos = self._known[account, con_id]
        return self.position_msg(account, replace(pos, quantity=0))

    def portfolio_msg(self, account: str, pos: SimPosition, t: float) -> list[p.Field]:
        inst = self._instrument_of(pos)
        mark = self.mark(pos, t)
        value = pos.quantity * mark * pos.multiplier
        avg = pos.avg_cost / pos.multiplier if pos.multiplier else pos.avg_cost
        return [
            p.Out.PORTFOLIO_VALUE, 8, inst.con_id, inst.symbol, inst.sec_type, inst.expiry,
            inst.strike, inst.right, inst.multiplier, inst.primary_exchange, inst.currency,
            inst.local_symbol, inst.trading_class, float(pos.quantity), mark, round(value, 2),
            avg, round(self.unrealized(pos, t), 2), 0.0, account,
        ]  # fmt: skip

    def contract_data_msg(self, req_id: int, inst: Instrument) -> list[p.Field]:
        und = self.instrument(inst.und_con_id) if inst.is_option else None
        long_name = f"{inst.symbol} option" if inst.is_option else f"{inst.symbol} simulated"
        return [
            p.Out.CONTRACT_DATA, req_id, inst.symbol, inst.sec_type, inst.expiry, inst.strike,
            inst.right, "SMART", inst.currency, inst.local_symbol, inst.trading_class,
            inst.trading_class, inst.con_id, 0.01, inst.multiplier, "LMT,MKT",
            f"SMART,{inst.primary_exchange or 'CBOE'}", 1, inst.und_con_id if und else 0,
            long_name, inst.primary_exchange or "CBOE", inst.expiry[:6], "", "", "",
            "US/Eastern", "", "", "", "", 0,
            "1", und.symbol if und else "", und.sec_type if und else "", "26", inst.expiry,
            "COMMON" if not inst.is_option else "", "1", "1", "1",
        ]  # fmt: skip

    def price_ticks(self, inst: Instrument, t: float, md_type: int, closed: bool) -> list[Tick]:
        if inst.is_option:
            pos = self._option_position(inst)
            price = round(self.market.quote(pos, t).price, 4)
        else:
            price = self.stock_price(inst.symbol, t)
        delayed = p.is_delayed(md_type)
        bid_t, ask_t, last_t, close_t = (
            (p.DELAYED_BID, p.DELAYED_ASK, p.DELAYED_LAST, p.DELAYED_CLOSE)
            if delayed
            else (p.BID, p.ASK, p.LAST, p.CLOSE)
        )
        if closed:
            return [Tick(bid_t, -1.0, 0.0), Tick(ask_t, -1.0, 0.0), Tick(close_t, price, 0.0)]
        spread = 0.01 if not inst.is_option else 0.05
        und = self.market.underlyings.get(inst.symbol)
        prev_close = und.base_price if (und is not None and not inst.is_option) else price
        return [
            Tick(bid_t, round(price - spread, 4), 100.0),
            Tick(ask_t, round(price + spread, 4), 100.0),
            Tick(last_t, price, 1.0),
            Tick(close_t, prev_close, 0.0),
        ]

    def greeks_msg(
        self, req_id: int, inst: Instrument, t: float, md_type: int, mode: str
    ) -> list[p.Field] | None:
        tick_type = p.DELAYED_MODEL_GREEKS if p.is_delayed(md_type) else p.MODEL_GREEKS
        if mode == "last":  # quote-based (last trade) Greeks only, no model Greeks
            tick_type = p.DELAYED_LAST_GREEKS if p.is_delayed(md_type) else p.LAST_GREEKS
        if mode == "absent" or not inst.is_option:
            return None
        if mode == "sentinel":
            return p.tick_option_computation(
                req_id, tick_type, iv=-1.0, delta=-2.0, opt_price=-1.0, pv_dividend=-1.0,
                gamma=-2.0, vega=-2.0, theta=-2.0, und_price=-1.0,
            )  # fmt: skip
        if mode == "max":
            m = DOUBLE_MAX
            return p.tick_option_computation(
                req_id, tick_type, iv=m, delta=m, opt_price=m, pv_dividend=m, gamma=m, vega=m,
                theta=m, und_price=m,
            )  # fmt: skip
        q = self.market.quote(self._option_position(inst), t)
        return p.tick_option_computation(
            req_id, tick_type, iv=q.iv, delta=q.delta, opt_price=q.price, pv_dividend=0.0,
            gamma=q.gamma, vega=q.vega, theta=q.theta, und_price=q.und_price,
        )  # fmt: skip

    def _option_position(self, inst: Instrument) -> SimPosition:
        pos = self._terms.get(inst.con_id)
        assert pos is not None, f"option {inst.con_id} without a position"
        return pos

    def _instrument_of(self, pos: SimPosition) -> Instrument:
        inst = self._instruments.get(pos.con_id)
        if inst is None:  # a stock position on an underlying not declared: make one up
            inst = Instrument(
                pos.con_id,
                pos.symbol,
                "STK",
                local_symbol=pos.symbol,
                trading_class=pos.symbol,
                und_con_id=pos.con_id,
            )
            self._instruments[pos.con_id] = inst
        return inst

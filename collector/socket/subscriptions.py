"""The SOCKET transport's market data: one request per option position and per underlying (its
stock contract, found by `reqContractDetails` when the account holds no shares of it), held open
within the line budget (`collector.lines`: streaming when the book fits, rotating when not).

Every wanted contract has a `Subscription` that keeps its last values whether or not it holds a
line right now. `pump(now)` applies the schedule; the transport calls it on a short period."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from ib_async import Stock

from collector import data_errors as de
from collector import ib_values
from collector.lines.budget import WorkingBudget
from collector.lines.report import LineReport, Report
from collector.lines.revival import Revival
from collector.lines.schedule import LineSchedule
from collector.socket.contracts import Subscription, describe, greeks_source, routable
from shared import clock
from shared.names import OPTION_TYPES, STOCK_TYPES

log = logging.getLogger(__name__)

LIVE = 1


class Subscriptions:
    """conId -> `Subscription`, for the positions `positions()` returns."""

    def __init__(
        self,
        ib: Any,
        positions: Callable[[], list[Any]],
        *,
        lookup_timeout_s: float,
        budget: int,
        refresh_s: float,
        stall_s: float,
        max_age_s: float,
        report: Report,
    ) -> None:
        self._ib = ib
        self._positions = positions
        self.lookup_timeout_s = lookup_timeout_s
        self.subs: dict[int, Subscription] = {}
        self.schedule: LineSchedule[int] = LineSchedule(WorkingBudget(budget), refresh_s=refresh_s)
        self.revival: Revival[int] = Revival(stall_s)
        self.errors = de.DataErrors()
        self.lines = LineReport(max_age_s, report)
        self._report = report
        self._underlyings: dict[str, Any] = {}  # symbol -> routable stock contract
        self._unresolved: set[str] = set()  # symbols whose stock contract was not found
        self._expired: set[int] = set()  # answered 200: not requested again this session
        self._resolver: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ sessions
    def new_session(self) -> None:
        """At connect: underlyings not found and contracts refused before are tried again."""
        self._unresolved.clear()
        self._expired.clear()
        self.errors.reset()

    def forget(self) -> None:
        """ib_async reset every Ticker of the session: ours are orphans, no line is held."""
        for sub in self.subs.values():
            sub.ticker = None
            sub.requested_at = None
        self.schedule.forget()

    def cancel_lookup(self) -> None:
        if self._resolver is not None:
            self._resolver.cancel()
            self._resolver = None

    async def stop_lookup(self) -> None:
        """Cancel the underlyings' lookup and wait until it is gone."""
        if self._resolver is not None:
            self._resolver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._resolver
            self._resolver = None

    def cancel_all(self) -> None:
        """Cancel every open request (all are made again: 1101/1102)."""
        for sub in self.subs.values():
            if sub.ticker is not None:
                self._ib.cancelMktData(sub.contract)
                sub.ticker = None
        self.schedule.forget()

    # ------------------------------------------------------------------ answers
    def of_request(self, req_id: int) -> Subscription | None:
        ticker = self._ib.wrapper.reqId2Ticker.get(req_id)
        if ticker is None:
            return None
        sub = self.subs.get(getattr(ticker.contract, "conId", 0))
        if sub is None or sub.ticker is not ticker:
            return None
        current = self._ib.wrapper.ticker2ReqId["mktData"].get(ticker)
        return sub if current == req_id else None

    def on_tickers(self, tickers: Any) -> None:
        """New data: an option's new OptionComputation (tick 13/83), an underlying's price."""
        now: datetime | None = None
        for ticker in tickers:
            con_id = getattr(ticker.contract, "conId", 0)
            sub = self.subs.get(con_id)
            if sub is None or sub.ticker is not ticker:
                continue
            now = now or clock.utcnow()
            sub.md_type = getattr(ticker, "marketDataType", None) or sub.md_type
            if sub.is_option:
                comp = greeks_source(ticker)
                if comp is None or comp is sub.last_comp:
                    continue
                sub.last_comp = comp
                sub.greeks = ib_values.model_greeks(comp)
                sub.greeks_at = now if sub.greeks.any else None
                if sub.greeks_at is None:
                    continue
            else:
                value = ib_values.ticker_price(ticker)
                if value is None:
                    continue
                sub.price, sub.price_at = value, now
            self._fresh(con_id, now)

    def _fresh(self, con_id: int, now: datetime) -> None:
        t = now.timestamp()
        self.schedule.delivered(con_id, t)
        self.revival.updated(con_id, t)
        self.errors.clear(con_id, de.CODES - {de.DELAYED_INSTEAD})

    def on_error(self, sub: Subscription, code: int, text: str) -> bool:
        """A market-data error for `sub`'s request; False when it is not one of ours."""
        now = clock.utcnow().timestamp()
        con_id = sub.contract.conId
        if code == de.TOO_MANY_TICKERS:
            self._end(sub)
            before = self.schedule.budget.value
            if self.schedule.refused(con_id, now):
                self.lines.lowered(before)
            return True
        if code not in de.CODES:
            return False
        sub.error = f"{code}: {text}"
        self.errors.set(code, con_id, describe(sub.contract))
        if code in de.ENDS_REQUEST:
            self._end(sub)
            self.schedule.failed(con_id, now, de.RETRY_S)
            self.revival.dropped(con_id)
            if code == de.NO_SECURITY_DEFINITION:
                self._expired.add(con_id)
        return True

    def _end(self, sub: Subscription) -> None:
        """The gateway ended the request: forget its id without sending a cancel for it."""
        if sub.ticker is not None:
            self._ib.wrapper.endTicker(sub.ticker, "mktData")
            sub.ticker = None

    # ------------------------------------------------------------------ what a row uses
    def prices(self) -> dict[str, float]:
        """Underlying prices by symbol: the stock's last price, else the model's underlying."""
        prices: dict[str, float] = {}
        for symbol, und in self._underlyings.items():
            sub = self.subs.get(und.conId)
            if sub is not None and sub.price is not None:
                prices[symbol] = sub.price
        for sub in self.subs.values():  # last resort: the model's underlying price
            symbol = sub.contract.symbol
            if sub.is_option and symbol not in prices and sub.greeks.und_price is not None:
                prices[symbol] = sub.greeks.und_price
        return prices

    def kinds(self) -> tuple[str, ...]:
        """The market data types delivered for the contracts in use (LIVE, FROZEN, ...)."""
        kinds = {ib_values.md_kind(s.md_type) for s in self.subs.values() if s.md_type}
        return tuple(sorted(k for k in kinds if k is not None))

    # ------------------------------------------------------------------ the lines
    def sync(self) -> None:
        """The wanted set follows the positions (no awaits: safe from event handlers)."""
        if not self._ib.isConnected():
            return
        wanted, missing = self._wanted()
        for con_id in [c for c in self.subs if c not in wanted]:
            sub = self.subs.pop(con_id)
            if sub.ticker is not None:
                self._ib.cancelMktData(sub.contract)
            self.revival.dropped(con_id)
            self.errors.drop(con_id)
            log.info("socket_unwanted %s", describe(sub.contract))
        now = clock.utcnow()
        for con_id, contract in wanted.items():
            if con_id not in self.subs:
                self.subs[con_id] = Subscription(
                    contract, None, now, contract.secType in OPTION_TYPES
                )
        if missing and (self._resolver is None or self._resolver.done()):
            self._resolver = asyncio.get_running_loop().create_task(
                self._resolve_underlyings(missing), name="socket-underlyings"
            )
        self.pump(now)

    def pump(self, now: datetime) -> None:
        """Apply the schedule (cancel, request), revive silent feeds, report changes."""
        if not self._ib.isConnected():
            return
        t = now.timestamp()
        wanted = [c for c in self.subs if c not in self._expired]
        for con_id in self.revival.due(self._live(), t):
            self.schedule.revive(con_id)
            self.lines.revived(describe(self.subs[con_id].contract))
        plan = self.schedule.plan(wanted, t)
        for con_id in plan.cancel:
            sub = self.subs.get(con_id)
            if sub is not None and sub.ticker is not None:
                self._ib.cancelMktData(sub.contract)
                sub.ticker = None
        for con_id in plan.request:
            self._request(self.subs[con_id], now)
        for audit in self.errors.audits():
            self._report(audit.message, audit.status, audit.code)
        self.lines.tick(self.schedule.stats(t), now)

    def farm_back(self, broken_at: datetime) -> None:
        """A market-data farm is back: feeds requested before it broke that got nothing since
        are revived."""
        for con_id in self._live():
            sub = self.subs[con_id]
            last = sub.greeks_at if sub.is_option else sub.price_at
            asked_since = sub.requested_at is not None and sub.requested_at >= broken_at
            if not asked_since and (last is None or last < broken_at):
                self.schedule.revive(con_id)
                self.lines.revived(describe(sub.contract))

    def _live(self) -> list[int]:
        return [
            c
            for c, s in self.subs.items()
            if s.ticker is not None and s.md_type == LIVE and not self.errors.codes_of(c)
        ]

    def _request(self, sub: Subscription, now: datetime) -> None:
        ticker = self._ib.reqMktData(sub.contract)
        sub.ticker = ticker
        sub.last_comp = greeks_source(ticker)  # ib_async hands back the old Ticker, old values
        if sub.requested_at is None:
            sub.subscribed_at = now  # the grace period runs from the first request
        sub.requested_at = now
        self.revival.requested(sub.contract.conId, now.timestamp())

    def _wanted(self) -> tuple[dict[int, Any], dict[str, str]]:
        """The contracts to request (conId -> routable contract), and the underlyings whose
        stock contract is still to be found (symbol -> currency)."""
        wanted: dict[int, Any] = {}
        options_on: dict[str, str] = {}  # underlying symbol -> currency
        for pos in self._positions():
            c = pos.contract
            if not c.conId:
                continue
            known = self.subs.get(c.conId)  # a routable copy is made once per contract
            if c.secType in OPTION_TYPES:
                wanted[c.conId] = known.contract if known is not None else routable(c)
                options_on.setdefault(c.symbol, c.currency or "USD")
            elif c.secType in STOCK_TYPES:
                wanted[c.conId] = known.contract if known is not None else routable(c)
                if c.symbol not in self._underlyings:
                    self._underlyings[c.symbol] = wanted[c.conId]
        missing: dict[str, str] = {}
        for symbol, currency in options_on.items():
            und = self._underlyings.get(symbol)
            if und is not None:
                wanted.setdefault(und.conId, und)
            elif symbol not in self._unresolved:
                missing[symbol] = currency
        return wanted, missing

    async def _resolve_underlyings(self, symbols: Mapping[str, str]) -> None:
        """Find the stock contract of underlyings the account holds only options on."""
        for symbol, currency in symbols.items():
            try:
                details = await asyncio.wait_for(
                    self._ib.reqContractDetailsAsync(Stock(symbol, "SMART", currency)),
                    self.lookup_timeout_s,
                )
            except (TimeoutError, ConnectionError) as exc:
                log.warning("socket_underlying_unresolved %s: %r", symbol, exc)
                details = []
            if details:
                self._underlyings[symbol] = routable(details[0].contract)
            else:
                self._unresolved.add(symbol)  # until the next connect: undPrice is the fallback
        self.sync()

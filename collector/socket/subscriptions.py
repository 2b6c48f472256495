"""The SOCKET transport's streaming market data: one `reqMktData` per option position and per
underlying (its stock contract, found by `reqContractDetails` when the account holds no shares of
it). Subscriptions follow the positions: new ones are subscribed, closed ones cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from ib_async import Stock

from collector import ib_values
from collector.socket.contracts import (
    Subscription,
    describe,
    greeks_source,
    routable,
)
from shared import clock
from shared.names import OPTION_TYPES, STOCK_TYPES

log = logging.getLogger(__name__)


class Subscriptions:
    """conId -> `Subscription`, for the positions `positions()` returns."""

    def __init__(
        self, ib: Any, positions: Callable[[], list[Any]], *, lookup_timeout_s: float
    ) -> None:
        self._ib = ib
        self._positions = positions
        self.lookup_timeout_s = lookup_timeout_s
        self.subs: dict[int, Subscription] = {}
        self._underlyings: dict[str, Any] = {}  # symbol -> routable stock contract
        self._unresolved: set[str] = set()  # symbols whose stock contract was not found
        self._resolver: asyncio.Task[None] | None = None

    def new_session(self) -> None:
        """At connect: underlyings not found before are looked up again."""
        self._unresolved.clear()

    def forget(self) -> None:
        """ib_async reset every Ticker of the session: ours are orphans now."""
        self.subs.clear()

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

    def cancel_all(self) -> dict[int, Subscription]:
        """Cancel every subscription (to be remade); returns them."""
        previous = dict(self.subs)
        for sub in previous.values():
            self._ib.cancelMktData(sub.contract)
        self.subs.clear()
        return previous

    def of_request(self, req_id: int) -> Subscription | None:
        ticker = self._ib.wrapper.reqId2Ticker.get(req_id)
        if ticker is None:
            return None
        sub = self.subs.get(getattr(ticker.contract, "conId", 0))
        return sub if sub is not None and sub.ticker is ticker else None

    def on_tickers(self, tickers: Any) -> None:
        """New Greeks of the options: a new OptionComputation object is a new tick 13/83."""
        now: datetime | None = None
        for ticker in tickers:
            sub = self.subs.get(getattr(ticker.contract, "conId", 0))
            if sub is None or sub.ticker is not ticker or not sub.is_option:
                continue
            comp = greeks_source(ticker)
            if comp is None or comp is sub.last_comp:
                continue
            sub.last_comp = comp
            greeks = ib_values.model_greeks(comp)
            now = now or clock.utcnow()
            sub.greeks = greeks
            sub.greeks_at = now if greeks.any else None

    def prices(self) -> dict[str, float]:
        """Underlying prices by symbol: the stock's ticker, else the model's underlying price."""
        prices: dict[str, float] = {}
        for symbol, und in self._underlyings.items():
            sub = self.subs.get(und.conId)
            value = ib_values.ticker_price(sub.ticker) if sub is not None else None
            if value is not None:
                prices[symbol] = value
        for sub in self.subs.values():  # last resort: the model's underlying price
            symbol = sub.contract.symbol
            if sub.is_option and symbol not in prices and sub.greeks.und_price is not None:
                prices[symbol] = sub.greeks.und_price
        return prices

    def sync(self, previous: Mapping[int, Subscription] | None = None) -> None:
        """Subscriptions follow the positions (no awaits: safe from event handlers).

        `previous`: the subscriptions being remade on the same socket (1101/1102). ib_async
        hands back the same Ticker for the same contract, still holding the old Greeks: those
        keep their old `greeks_at`; only a new tick 13/83 counts as fresh Greeks."""
        if not self._ib.isConnected():
            return
        wanted, missing = self._wanted()
        for con_id in [c for c in self.subs if c not in wanted]:
            sub = self.subs.pop(con_id)
            self._ib.cancelMktData(sub.contract)
            log.info("socket_unsubscribed %s", describe(sub.contract))
        for con_id, contract in wanted.items():
            if con_id not in self.subs:
                self.subs[con_id] = self._subscribe(contract, (previous or {}).get(con_id))
        if missing and (self._resolver is None or self._resolver.done()):
            self._resolver = asyncio.get_running_loop().create_task(
                self._resolve_underlyings(missing), name="socket-underlyings"
            )

    def _wanted(self) -> tuple[dict[int, Any], dict[str, str]]:
        """The contracts to subscribe (conId -> routable contract), and the underlyings whose
        stock contract is still to be found (symbol -> currency)."""
        wanted: dict[int, Any] = {}
        options_on: dict[str, str] = {}  # underlying symbol -> currency
        for pos in self._positions():
            c = pos.contract
            if not c.conId:
                continue
            if c.secType in OPTION_TYPES:
                wanted[c.conId] = routable(c)
                options_on.setdefault(c.symbol, c.currency or "USD")
            elif c.secType in STOCK_TYPES:
                wanted[c.conId] = routable(c)
                self._underlyings.setdefault(c.symbol, routable(c))
        missing: dict[str, str] = {}
        for symbol, currency in options_on.items():
            und = self._underlyings.get(symbol)
            if und is not None:
                wanted.setdefault(und.conId, und)
            elif symbol not in self._unresolved:
                missing[symbol] = currency
        return wanted, missing

    def _subscribe(self, contract: Any, old: Subscription | None) -> Subscription:
        ticker = self._ib.reqMktData(contract)
        sub = Subscription(
            contract,
            ticker,
            clock.utcnow(),
            contract.secType in OPTION_TYPES,
            last_comp=greeks_source(ticker),
        )
        if old is not None and old.ticker is ticker:
            sub.greeks, sub.greeks_at = old.greeks, old.greeks_at
        return sub

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

"""The SOCKET transport: IB Gateway through `ib_async` 2.1 (read-only).

- `connect()`: one bounded attempt (`IB_CONNECT_TIMEOUT_S`) to `IB_HOST:IB_PORT` as
  `IB_CLIENT_ID`, `readonly=True`, `account=IB_ACCOUNT`. ib_async syncs positions (reqPositions)
  and the portfolio (reqAccountUpdates; there is no reqPortfolioUpdates). Error 326 (client id in
  use) fails the attempt at once instead of waiting for ib_async's timeout.
- Then: `reqMarketDataType(IB_MARKET_DATA_TYPE)`, `reqPnL(account)` (kept in `status()`), and one
  streaming `reqMktData` per option position (conId + exchange SMART; Greeks from `modelGreeks`)
  and per underlying (its stock contract, found by `reqContractDetails` when the account holds
  no shares of it). Subscriptions follow the positions: new ones are subscribed, closed ones
  cancelled (on every position event and every snapshot).
- After every connect, and on 1101/1102, all market data is requested again (ib_async forgets
  every subscription on disconnect; IB drops them on 1101 and may on 1102).
- Errors become link states and `LinkEvent`s (`collector.ib_errors`); a dropped socket is a
  DISCONNECTED event at once. The transport never reconnects by itself and never orders.
- Handlers are registered once, in `__init__`: reconnects never double them. Our own
  `disconnect()` is not reported as a drop.
- During 1100 (IB's servers unreachable, socket kept) `snapshot()` still answers with the last
  values; their `greeks_at` shows their age, and the Greeks policy decides.

Sentinels, NaN, Double.MAX and absent values are None in `PositionData`, never 0
(`collector.ib_values`). Times come from `shared.clock.utcnow`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from ib_async import IB, Contract, Stock

from collector import ib_errors, ib_values
from collector.transport import LinkEvent, LinkState, PositionData, Snapshot, TransportError
from shared import clock
from shared.config import Settings
from shared.names import OPTION_TYPES, STOCK_TYPES

log = logging.getLogger(__name__)

CLOSE_WAIT_S = 0.5  # bound on waiting for our own socket to finish closing


@dataclass(slots=True)
class _Sub:
    """One streaming market data subscription (an option position or an underlying)."""

    contract: Any  # ib_async Contract
    ticker: Any  # ib_async Ticker
    subscribed_at: datetime
    is_option: bool
    greeks: ib_values.ModelGreeks = field(default_factory=lambda: ib_values.model_greeks(None))
    greeks_at: datetime | None = None
    last_comp: Any = None  # the OptionComputation object last seen (identity check)
    error: str = ""


def _describe(c: Any) -> str:
    if c.secType in OPTION_TYPES:
        strike = f"{c.strike:g}" if c.strike else ""
        parts = (c.symbol, c.lastTradeDateOrContractMonth, strike, c.right)
        return " ".join(str(p) for p in parts if p)
    return f"{c.symbol} {c.secType}"


def _routable(c: Any) -> Any:
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


def _greeks_source(ticker: Any) -> Any:
    """IB's model Greeks (tick 13/83); a gateway that sends only quote-based Greeks (last, then
    bid, then ask) is still read rather than left without any."""
    for attr in ("modelGreeks", "lastGreeks", "bidGreeks", "askGreeks"):
        comp = getattr(ticker, attr, None)
        if comp is not None:
            return comp
    return None


def _fmt(value: Any) -> str:
    f = ib_values.number(value)
    return "" if f is None else repr(f)


class SocketTransport:
    mode = "SOCKET"

    def __init__(self, settings: Settings, *, ib: Any = None) -> None:
        self.settings = settings
        self.events: asyncio.Queue[LinkEvent] = asyncio.Queue()
        self._ib: Any = ib if ib is not None else IB()
        self._state = LinkState.DISCONNECTED
        self._account = settings.ib_account
        self._closing = False  # our own disconnect: not a drop
        self._connecting = False
        self._id_in_use = asyncio.Event()
        self._subs: dict[int, _Sub] = {}  # conId -> subscription
        self._underlyings: dict[str, Any] = {}  # symbol -> routable stock contract
        self._unresolved: set[str] = set()  # symbols whose stock contract was not found
        self._resolver: asyncio.Task[None] | None = None
        self._pnl: Any = None
        self._farms = ib_errors.FarmWatch()
        self._reported: set[tuple[int, int]] = set()  # (reqId, code) of request errors
        self._last_error = ""
        self._connected_at: datetime | None = None
        # registered once, here: a reconnect reuses the same IB object and never doubles them
        self._ib.errorEvent += self._on_error
        self._ib.disconnectedEvent += self._on_disconnected
        self._ib.pendingTickersEvent += self._on_tickers
        self._ib.positionEvent += self._on_position

    # ------------------------------------------------------------------ state and events
    @property
    def state(self) -> LinkState:
        return self._state

    def _emit(
        self, state: LinkState | None, reason: str, status: str = "INFO", code: int | None = None
    ) -> None:
        if state is not None:
            self._state = state
        event = LinkEvent(self._state, clock.utcnow(), reason, status, code)
        log.info(
            "socket_link_event state=%s status=%s code=%s reason=%s",
            event.state,
            status,
            code,
            reason,
        )
        self.events.put_nowait(event)

    @property
    def _where(self) -> str:
        s = self.settings
        return f"{s.ib_host}:{s.ib_port} client id {s.ib_client_id}"

    # ------------------------------------------------------------------ connect / disconnect
    async def connect(self) -> None:
        """One bounded attempt; raises TransportError (the caller reports the failure)."""
        s = self.settings
        if self._ib.client.isConnected():
            await self._close_quietly()
        self._state = LinkState.CONNECTING
        self._closing = False
        self._connecting = True
        self._id_in_use.clear()
        self._farms.clear()
        self._reported.clear()
        self._unresolved.clear()
        attempt = asyncio.ensure_future(
            self._ib.connectAsync(
                s.ib_host,
                s.ib_port,
                s.ib_client_id,
                timeout=s.ib_connect_timeout_s,
                readonly=True,
                account=s.ib_account,
            )
        )
        in_use = asyncio.ensure_future(self._id_in_use.wait())
        reason = ""
        try:
            done, _ = await asyncio.wait(
                {attempt, in_use},
                timeout=s.ib_connect_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if attempt in done:
                attempt.result()  # raises what the attempt raised
            elif in_use in done:
                reason = f"client id {s.ib_client_id} is already in use at {s.ib_host}:{s.ib_port}"
            else:
                reason = f"timed out after {s.ib_connect_timeout_s:g} s connecting to {self._where}"
        except ConnectionRefusedError:
            reason = (
                f"connection refused by {s.ib_host}:{s.ib_port}: is IB Gateway running "
                "with its API port open?"
            )
        except TimeoutError:
            reason = f"timed out after {s.ib_connect_timeout_s:g} s connecting to {self._where}"
            if self._id_in_use.is_set():
                reason = f"client id {s.ib_client_id} is already in use ({reason})"
        except (ConnectionError, OSError) as exc:
            reason = f"cannot connect to {self._where}: {exc or type(exc).__name__}"
        finally:
            for fut in (attempt, in_use):
                if not fut.done():
                    fut.cancel()
            await asyncio.gather(attempt, in_use, return_exceptions=True)
            self._connecting = False
        if not reason:
            reason = self._check_account()
        if reason:
            await self._close_quietly()
            self._last_error = reason
            log.warning("socket_connect_failed %s", reason)
            raise TransportError(reason)
        self._connected_at = clock.utcnow()
        self._subscribe_all(fresh=True)
        self._emit(
            LinkState.CONNECTED,
            f"connected to IB Gateway at {self._where}, account {self._account}",
        )

    def _check_account(self) -> str:
        """'' when the account to read is known, else why not."""
        accounts = [a for a in self._ib.managedAccounts() if a]
        wanted = self.settings.ib_account
        if wanted:
            if wanted not in accounts:
                listed = ", ".join(accounts)
                return f"IB_ACCOUNT={wanted} is not an account of this login ({listed})"
            self._account = wanted
            return ""
        if len(accounts) == 1:
            self._account = accounts[0]
            return ""
        return f"IB_ACCOUNT must name one of the login's accounts: {', '.join(accounts)}"

    async def disconnect(self) -> None:
        """Deliberate close: never reported as a drop."""
        self._closing = True
        await self._close_quietly()

    async def _close_quietly(self) -> None:
        closing, self._closing = self._closing, True
        try:
            if self._resolver is not None:
                self._resolver.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._resolver
                self._resolver = None
            conn = self._ib.client.conn
            closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            def on_closed(_msg: str) -> None:
                if not closed.done():
                    closed.set_result(None)

            was_open = conn.transport is not None
            conn.disconnected += on_closed
            try:
                self._ib.disconnect()  # emits disconnectedEvent synchronously: ignored (_closing)
                self._forget_session()
                self._state = LinkState.DISCONNECTED
                if was_open:
                    # let the socket finish closing in this loop (no unclosed-transport warnings)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(closed, CLOSE_WAIT_S)
            finally:
                conn.disconnected -= on_closed
        finally:
            self._closing = closing

    def _forget_session(self) -> None:
        """ib_async reset every Ticker and PnL of the session: ours are orphans now."""
        self._subs.clear()
        self._pnl = None

    # ------------------------------------------------------------------ ib_async events
    def _on_disconnected(self) -> None:
        if self._closing or self._connecting:
            return
        self._forget_session()
        if self._resolver is not None:
            self._resolver.cancel()
            self._resolver = None
        self._last_error = "socket closed by the gateway"
        self._emit(
            LinkState.DISCONNECTED,
            f"connection to IB Gateway at {self._where} lost (socket closed)",
            "ERROR",
        )

    def _on_error(self, req_id: int, code: int, text: str, contract: Any) -> None:
        if code == ib_errors.CLIENT_ID_IN_USE and self._connecting:
            self._id_in_use.set()
        action = ib_errors.classify(code, req_id)
        sub = self._sub_of_request(req_id) if req_id > 0 else None
        if sub is not None:
            sub.error = f"{code}: {text}"
        report = action.report and self._farms.worth_reporting(code)
        if req_id > 0:
            key = (req_id, code)
            report = report and key not in self._reported
            self._reported.add(key)
        if action.state is not None or code in (1300, 326):
            self._last_error = f"{code}: {text}"
        state = action.state
        if state is LinkState.CONNECTED and not self._ib.isConnected():
            state = None  # a late 1101/1102 on a dead socket restores nothing
        if report:
            what = text
            if contract is not None:
                what += f" ({_describe(contract)})"
            elif sub is not None:
                what += f" ({_describe(sub.contract)})"
            self._emit(state, what, action.status, code)
        elif state is not None:
            self._state = state
        if action.resubscribe and self._ib.isConnected() and not self._connecting:
            self._subscribe_all(fresh=False)

    def _on_position(self, position: Any) -> None:
        if self._state is LinkState.CONNECTED and not self._connecting:
            self._sync()

    def _on_tickers(self, tickers: Any) -> None:
        now: datetime | None = None
        for ticker in tickers:
            sub = self._subs.get(getattr(ticker.contract, "conId", 0))
            if sub is None or sub.ticker is not ticker or not sub.is_option:
                continue
            comp = _greeks_source(ticker)
            if comp is None or comp is sub.last_comp:
                continue
            sub.last_comp = comp
            greeks = ib_values.model_greeks(comp)
            now = now or clock.utcnow()
            sub.greeks = greeks
            sub.greeks_at = now if greeks.any else None

    def _sub_of_request(self, req_id: int) -> _Sub | None:
        ticker = self._ib.wrapper.reqId2Ticker.get(req_id)
        if ticker is None:
            return None
        sub = self._subs.get(getattr(ticker.contract, "conId", 0))
        return sub if sub is not None and sub.ticker is ticker else None

    # ------------------------------------------------------------------ subscriptions
    def _positions(self) -> list[Any]:
        return [
            p
            for p in self._ib.positions()
            if p.position != 0 and (not self._account or p.account == self._account)
        ]

    def _subscribe_all(self, *, fresh: bool) -> None:
        """(Re)make every request of the session: market data type, P&L, market data."""
        ib = self._ib
        previous = {} if fresh else dict(self._subs)
        for sub in previous.values():
            ib.cancelMktData(sub.contract)
        if not fresh and self._pnl is not None:
            ib.cancelPnL(self._account)
        self._subs.clear()
        self._pnl = None
        ib.reqMarketDataType(self.settings.ib_market_data_type)
        if self._account:
            self._pnl = ib.reqPnL(self._account)
        self._sync(previous)
        log.info("socket_subscribed fresh=%s n=%d", fresh, len(self._subs))

    def _sync(self, previous: Mapping[int, _Sub] | None = None) -> None:
        """Subscriptions follow the positions (no awaits: safe from event handlers).

        `previous`: the subscriptions being remade on the same socket (1101/1102). ib_async
        hands back the same Ticker for the same contract, still holding the old Greeks: those
        keep their old `greeks_at`; only a new tick 13/83 counts as fresh Greeks."""
        if not self._ib.isConnected():
            return
        wanted: dict[int, Any] = {}
        options_on: dict[str, str] = {}  # underlying symbol -> currency
        for pos in self._positions():
            c = pos.contract
            if not c.conId:
                continue
            if c.secType in OPTION_TYPES:
                wanted[c.conId] = _routable(c)
                options_on.setdefault(c.symbol, c.currency or "USD")
            elif c.secType in STOCK_TYPES:
                wanted[c.conId] = _routable(c)
                self._underlyings.setdefault(c.symbol, _routable(c))
        missing: dict[str, str] = {}
        for symbol, currency in options_on.items():
            und = self._underlyings.get(symbol)
            if und is not None:
                wanted.setdefault(und.conId, und)
            elif symbol not in self._unresolved:
                missing[symbol] = currency
        for con_id in [c for c in self._subs if c not in wanted]:
            sub = self._subs.pop(con_id)
            self._ib.cancelMktData(sub.contract)
            log.info("socket_unsubscribed %s", _describe(sub.contract))
        for con_id, contract in wanted.items():
            if con_id not in self._subs:
                ticker = self._ib.reqMktData(contract)
                sub = _Sub(
                    contract,
                    ticker,
                    clock.utcnow(),
                    contract.secType in OPTION_TYPES,
                    last_comp=_greeks_source(ticker),
                )
                old = (previous or {}).get(con_id)
                if old is not None and old.ticker is ticker:
                    sub.greeks, sub.greeks_at = old.greeks, old.greeks_at
                self._subs[con_id] = sub
        if missing and (self._resolver is None or self._resolver.done()):
            self._resolver = asyncio.get_running_loop().create_task(
                self._resolve_underlyings(missing), name="socket-underlyings"
            )

    async def _resolve_underlyings(self, symbols: Mapping[str, str]) -> None:
        """Find the stock contract of underlyings the account holds only options on."""
        timeout_s = self.settings.ib_connect_timeout_s
        for symbol, currency in symbols.items():
            try:
                details = await asyncio.wait_for(
                    self._ib.reqContractDetailsAsync(Stock(symbol, "SMART", currency)), timeout_s
                )
            except (TimeoutError, ConnectionError) as exc:
                log.warning("socket_underlying_unresolved %s: %r", symbol, exc)
                details = []
            if details:
                self._underlyings[symbol] = _routable(details[0].contract)
            else:
                self._unresolved.add(symbol)  # until the next connect: undPrice is the fallback
        self._sync()

    # ------------------------------------------------------------------ snapshot and status
    async def snapshot(self, now: datetime) -> Snapshot:
        if not self._ib.isConnected():
            raise TransportError(
                f"not connected to IB Gateway ({self._last_error or self._state.value})"
            )
        self._sync()
        prices: dict[str, float] = {}
        for symbol, und in self._underlyings.items():
            sub = self._subs.get(und.conId)
            value = ib_values.ticker_price(sub.ticker) if sub is not None else None
            if value is not None:
                prices[symbol] = value
        for sub in self._subs.values():  # last resort: the model's underlying price
            symbol = sub.contract.symbol
            if sub.is_option and symbol not in prices and sub.greeks.und_price is not None:
                prices[symbol] = sub.greeks.und_price
        positions = [self._position_data(p, prices) for p in self._positions()]
        return Snapshot(now, self._account, tuple(positions), prices)

    def _position_data(self, pos: Any, prices: Mapping[str, float]) -> PositionData:
        c = pos.contract
        sub = self._subs.get(c.conId)
        mult = ib_values.number(c.multiplier) if c.multiplier else None
        if c.secType in STOCK_TYPES:
            mult = mult or 1.0
        elif mult is not None and mult <= 0:
            mult = None
        data = PositionData(
            con_id=c.conId,
            symbol=c.symbol,
            sec_type=c.secType,
            quantity=float(pos.position),
            multiplier=mult,
            subscribed_at=sub.subscribed_at if sub is not None else None,
            und_price=prices.get(c.symbol),
            description=_describe(c),
        )
        if sub is None or not sub.is_option:
            return data
        g = sub.greeks
        return replace(
            data,
            delta=g.delta,
            gamma=g.gamma,
            vega=g.vega,
            theta=g.theta,
            greeks_at=sub.greeks_at,
            und_price=g.und_price if g.und_price is not None else data.und_price,
        )

    def status(self) -> Mapping[str, str]:
        pnl = self._pnl
        return {
            "pnl_daily": _fmt(getattr(pnl, "dailyPnL", None)),
            "pnl_unrealized": _fmt(getattr(pnl, "unrealizedPnL", None)),
            "pnl_realized": _fmt(getattr(pnl, "realizedPnL", None)),
            "account": self._account,
            "client_id": str(self.settings.ib_client_id),
            "subscriptions": str(len(self._subs)),
            "last_error": self._last_error,
        }

"""The SOCKET transport: IB Gateway through `ib_async` 2.1 (read-only).

- `connect()`: one bounded attempt (`IB_CONNECT_TIMEOUT_S`) to `IB_HOST:IB_PORT` as
  `IB_CLIENT_ID`, `readonly=True`, `account=IB_ACCOUNT`. ib_async syncs positions (reqPositions)
  and the portfolio (reqAccountUpdates; there is no reqPortfolioUpdates). Error 326 (client id in
  use) fails the attempt at once instead of waiting for ib_async's timeout.
- Then: `reqMarketDataType(IB_MARKET_DATA_TYPE)`, `reqPnL(account)` (kept in `status()`), and the
  market data subscriptions (`collector.socket.subscriptions`: one per option position and per
  underlying), which follow the positions on every position event and every snapshot.
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
from datetime import datetime
from typing import Any

from ib_async import IB

from collector import ib_errors, ib_values
from collector.accounts import resolve_accounts
from collector.books import combined_pnl
from collector.socket.contracts import describe, position_data
from collector.socket.subscriptions import Subscriptions
from collector.transport import LinkEvent, LinkState, Pnl, Snapshot, TransportError
from shared import clock
from shared.config import Settings

log = logging.getLogger(__name__)

CLOSE_WAIT_S = 0.5  # bound on waiting for our own socket to finish closing
PUMP_S = 0.2  # how often the market-data lines are rotated, paced and checked


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
        self.market = Subscriptions(
            self._ib,
            self._positions,
            lookup_timeout_s=settings.ib_connect_timeout_s,
            budget=settings.ib_market_data_lines,
            refresh_s=settings.poll_interval_s,
            stall_s=settings.feed_stall_s,
            max_age_s=settings.greeks_max_age_s,
            report=self._report_market,
        )
        self._pump: asyncio.Task[None] | None = None
        self._farm_broken_at: datetime | None = None
        self._pnl: dict[str, Any] = {}  # account -> ib_async PnL object
        self._accounts: list[str] = []
        self._farms = ib_errors.FarmWatch()
        self._reported: set[tuple[int, int]] = set()  # (reqId, code) of request errors
        self._last_error = ""
        self._connected_at: datetime | None = None
        # registered once, here: a reconnect reuses the same IB object and never doubles them
        self._ib.errorEvent += self._on_error
        self._ib.disconnectedEvent += self._on_disconnected
        self._ib.pendingTickersEvent += self.market.on_tickers
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

    def _report_market(self, reason: str, status: str, code: int | None) -> None:
        self._emit(None, reason, status, code)

    @property
    def _where(self) -> str:
        s = self.settings
        return f"{s.ib_host}:{s.ib_port} client id {s.ib_client_id}"

    # ------------------------------------------------------------------ connect / disconnect
    async def connect(self) -> None:
        """One bounded attempt; raises TransportError (the caller reports the failure)."""
        if self._ib.client.isConnected():
            await self._close_quietly()
        self._state = LinkState.CONNECTING
        self._closing = False
        self._connecting = True
        self._id_in_use.clear()
        self._farms.clear()
        self._reported.clear()
        self.market.new_session()
        try:
            reason = await self._attempt()
        finally:
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
        self._pump = asyncio.get_running_loop().create_task(self._pump_loop(), name="socket-lines")
        self._emit(
            LinkState.CONNECTED,
            f"connected to IB Gateway at {self._where}, account {self._account}",
        )

    async def _attempt(self) -> str:
        """connectAsync, cut short by error 326 (client id in use); '' or why it failed."""
        s = self.settings
        attempt = asyncio.ensure_future(
            self._ib.connectAsync(
                s.ib_host,
                s.ib_port,
                s.ib_client_id,
                timeout=s.ib_connect_timeout_s,
                readonly=True,
                # one named account: its updates only; a list or ALL: ib_async syncs every one
                account=""
                if s.ib_account.upper() == "ALL" or "," in s.ib_account
                else s.ib_account,
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
        return reason

    def _check_account(self) -> str:
        """'' when the accounts to read are known, else why not."""
        accounts, why = resolve_accounts(self.settings.ib_account, self._ib.managedAccounts())
        self._accounts = accounts
        self._account = ",".join(accounts)
        return why

    async def disconnect(self) -> None:
        """Deliberate close: never reported as a drop."""
        self._closing = True
        await self._close_quietly()

    async def _close_quietly(self) -> None:
        closing, self._closing = self._closing, True
        try:
            await self.market.stop_lookup()
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
        if self._pump is not None:
            self._pump.cancel()
            self._pump = None
        self.market.forget()
        self._pnl = {}

    async def _pump_loop(self) -> None:
        """Rotate and pace the market-data requests; a failure ends the task and `snapshot()`
        reports it (a bug, not a state of the link)."""
        while True:
            await asyncio.sleep(PUMP_S)
            self.market.pump(clock.utcnow())

    # ------------------------------------------------------------------ ib_async events
    def _on_disconnected(self) -> None:
        if self._closing or self._connecting:
            return
        self._forget_session()
        self.market.cancel_lookup()
        self._last_error = "socket closed by the gateway"
        self._emit(
            LinkState.DISCONNECTED,
            f"connection to IB Gateway at {self._where} lost (socket closed)",
            "ERROR",
        )

    def _on_error(self, req_id: int, code: int, text: str, contract: Any) -> None:
        if code == ib_errors.CLIENT_ID_IN_USE and self._connecting:
            self._id_in_use.set()
        sub = self.market.of_request(req_id) if req_id > 0 else None
        if sub is not None and self.market.on_error(sub, code, text):
            return  # a market-data answer: audited per change of state by the subscriptions
        self._farm_news(code)
        action = ib_errors.classify(code, req_id)
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
                what += f" ({describe(contract)})"
            elif sub is not None:
                what += f" ({describe(sub.contract)})"
            self._emit(state, what, action.status, code)
        elif state is not None:
            self._state = state
        if action.resubscribe and self._ib.isConnected() and not self._connecting:
            self._subscribe_all(fresh=False)

    def _farm_news(self, code: int) -> None:
        """2103 broken, then 2104 OK: feeds that got nothing in between are revived."""
        if code == ib_errors.MARKET_FARM_BROKEN:
            self._farm_broken_at = self._farm_broken_at or clock.utcnow()
        elif code in ib_errors.MARKET_FARM_BACK and self._farm_broken_at is not None:
            self.market.farm_back(self._farm_broken_at)
            self._farm_broken_at = None

    def _on_position(self, position: Any) -> None:
        if self._state is LinkState.CONNECTED and not self._connecting:
            self.market.sync()

    # ------------------------------------------------------------------ subscriptions
    def _positions(self) -> list[Any]:
        accounts = self._accounts
        return [
            p
            for p in self._ib.positions()
            if p.position != 0 and (not accounts or p.account in accounts)
        ]

    def _subscribe_all(self, *, fresh: bool) -> None:
        """(Re)make every request of the session: market data type, P&L, market data."""
        ib = self._ib
        if not fresh:
            self.market.cancel_all()
        if not fresh:
            for account in self._pnl:
                ib.cancelPnL(account)
        self.market.forget()
        self._pnl = {}
        ib.reqMarketDataType(self.settings.ib_market_data_type)
        for account in self._accounts:
            self._pnl[account] = ib.reqPnL(account)
        self.market.sync()
        log.info("socket_subscribed fresh=%s wanted=%d", fresh, len(self.market.subs))

    # ------------------------------------------------------------------ snapshot and status
    async def snapshot(self, now: datetime) -> Snapshot:
        if not self._ib.isConnected():
            raise TransportError(
                f"not connected to IB Gateway ({self._last_error or self._state.value})"
            )
        if self._pump is not None and self._pump.done():
            raise TransportError(f"market data rotation stopped: {_ended(self._pump)}")
        self.market.sync()
        prices = self.market.prices()
        positions = [
            position_data(p, self.market.subs.get(p.contract.conId), prices, now)
            for p in self._positions()
        ]
        return Snapshot(
            now,
            self._account,
            tuple(positions),
            prices,
            self.market.kinds(),
            tuple(self._accounts),
            {a: _pnl(p) for a, p in self._pnl.items()},
        )

    def status(self) -> Mapping[str, str]:
        pnl = combined_pnl([_pnl(p) for p in self._pnl.values()])
        return {
            "pnl_daily": _fmt(pnl.daily),
            "pnl_unrealized": _fmt(pnl.unrealized),
            "pnl_realized": _fmt(pnl.realized),
            "account": self._account,
            "client_id": str(self.settings.ib_client_id),
            "subscriptions": str(len(self.market.schedule.held)),
            "market_data": ",".join(self.market.kinds()),
            "last_error": self._last_error,
            **self.market.lines.status(),
        }


def _pnl(pnl: Any) -> Pnl:
    return Pnl(
        ib_values.number(getattr(pnl, "dailyPnL", None)),
        ib_values.number(getattr(pnl, "unrealizedPnL", None)),
        ib_values.number(getattr(pnl, "realizedPnL", None)),
    )


def _ended(task: asyncio.Task[None]) -> str:
    if task.cancelled():
        return "cancelled"
    exc = task.exception()
    return repr(exc) if exc is not None else "ended"

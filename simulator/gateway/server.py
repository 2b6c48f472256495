"""The IB Gateway simulator: an asyncio TCP server speaking the TWS API at server version 178.

One `GatewaySimulator` listens on a loopback port; each client connection is a `Session`
(`session.py`: the protocol). Here: the lifecycle, the streaming of market data and P&L, and the
fault controls. The login manages one account or several (a `SimPortfolio` each, sharing one
market: a contract two accounts hold is one instrument with one price, one market-data line).
Controls (in process, and through `simulator.gateway.control` from another process):
`drop_all`, `refuse`, `reset`, `hold_client_id`, `set_greeks_mode` (sentinel Greeks),
`set_market_closed`, `freeze`, `set_position` / `add_position`, `inject_error`, `status`;
market data (line limit, data errors, expired contracts, competing session, stall) through
`market_data` (`mktdata.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Sequence
from typing import Any

from simulator.gateway import protocol as p
from simulator.gateway.catalog import GREEKS_MODES, Catalog
from simulator.gateway.mktdata import MarketDataDesk, MktSub
from simulator.gateway.session import FARMS_BROKEN, FARMS_OK, Session
from simulator.portfolio import SimPortfolio, SimPosition, default_portfolio

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "::1")  # one address: port 0 then means one port


class GatewaySimulator:
    """A simulated IB Gateway on a loopback port. Use `async with` or `start()` / `stop()`."""

    def __init__(
        self,
        portfolio: SimPortfolio | None = None,
        *,
        more: Sequence[SimPortfolio] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        push_interval_s: float = 0.5,
        server_version: int = p.SERVER_VERSION,
        lines: int | None = None,
    ) -> None:
        """`portfolio`: the primary account (default: `default_portfolio()`); `more`: the other
        accounts of the login, each with its own account id (ValueError if two accounts share an
        id or disagree on the market: `shared_market`). `lines`: the login's market-data line
        limit, shared by every session and account (None: unlimited)."""
        if host not in LOOPBACK:
            raise ValueError(f"the simulator listens on loopback only, not {host!r}")
        self.portfolio = portfolio if portfolio is not None else default_portfolio()
        self.catalog = Catalog(self.portfolio, more)
        self.market_data = MarketDataDesk(self, lines)
        self.host = host
        self.port = port
        self.push_interval_s = push_interval_s
        self.server_version = server_version
        self.sessions: dict[int, Session] = {}  # clientId -> session (after startApi)
        self.held_client_ids: set[int] = set()
        self.greeks_mode = "normal"
        self.greeks_mode_by_con: dict[int, str] = {}
        self.market_closed = False
        self.feeds_down = False
        self._frozen_t: float | None = None
        self._server: asyncio.Server | None = None
        self._conns: set[Session] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pusher: asyncio.Task[None] | None = None
        self._relisten: asyncio.Task[None] | None = None
        self._stopped = False

    @property
    def account(self) -> str:
        """The primary account."""
        return self.portfolio.account

    @property
    def accounts(self) -> list[str]:
        """Every account of the login, the primary one first (managedAccounts)."""
        return self.catalog.accounts()

    @property
    def portfolios(self) -> list[SimPortfolio]:
        return list(self.catalog.books.values())

    def portfolio_of(self, account: str) -> SimPortfolio:
        return self.catalog.book(account)

    # ------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> GatewaySimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        await self.start_listening()
        self._pusher = asyncio.create_task(self._push_loop(), name="gateway-sim-pusher")

    async def start_listening(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._on_client, self.host, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("gateway.listening host=%s port=%s", self.host, self.port)

    async def stop_listening(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            # close() shuts the listening socket at once; no wait_closed(): since Python 3.12
            # it waits for every live session, and refusing new clients must not end them
            server.close()
            log.info("gateway.not_listening port=%s", self.port)

    async def stop(self) -> None:
        """Close the listener and every session; harmless when called twice."""
        if self._stopped:
            return
        self._stopped = True
        for task in (self._relisten, self._pusher):
            if task is not None:
                task.cancel()
        await self.stop_listening()
        for sess in list(self._conns):
            sess.writer.close()
        for task in list(self._tasks):
            task.cancel()
        pending = [t for t in (self._relisten, self._pusher, *self._tasks) if t is not None]
        await asyncio.gather(*pending, return_exceptions=True)

    @property
    def listening(self) -> bool:
        return self._server is not None

    def model_time(self) -> float:
        """The time the portfolio model is evaluated at (pinned while frozen)."""
        return self._frozen_t if self._frozen_t is not None else time.time()

    # ------------------------------------------------------------ sessions
    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        sess = Session(self, reader, writer)
        peer = writer.get_extra_info("peername")
        sess.peer = f"{peer[0]}:{peer[1]}" if peer else ""
        self._conns.add(sess)
        try:
            await sess.run()
        except (asyncio.IncompleteReadError, ConnectionError, p.ProtocolError) as exc:
            if not isinstance(exc, asyncio.IncompleteReadError):
                log.info("gateway.session_ended client_id=%s reason=%s", sess.client_id, exc)
        finally:
            self._conns.discard(sess)
            if sess.client_id is not None and self.sessions.get(sess.client_id) is sess:
                del self.sessions[sess.client_id]
                log.info("gateway.client_gone client_id=%s", sess.client_id)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
                await writer.wait_closed()
            self._tasks.discard(task)

    def claim(self, client_id: int, sess: Session) -> bool:
        if client_id in self.held_client_ids or client_id in self.sessions:
            return False
        self.sessions[client_id] = sess
        return True

    # ------------------------------------------------------------ streaming
    async def _push_loop(self) -> None:
        while True:
            await asyncio.sleep(self.push_interval_s)
            self.push_all()
            for sess in list(self.sessions.values()):
                if not sess.writer.is_closing():
                    with contextlib.suppress(ConnectionError):
                        await sess.writer.drain()

    def push_all(self) -> None:
        """One round of market data and P&L to every subscriber."""
        t = self.model_time()
        for sess in list(self.sessions.values()):
            if not self.feeds_down:
                self.market_data.push_session(sess, t)
            for req_id in list(sess.pnl):
                sess.send_pnl(req_id, t)
            for req_id in list(sess.pnl_single):
                sess.send_pnl_single(req_id, t)

    def push_one(self, sess: Session, sub: MktSub, t: float | None = None) -> None:
        self.market_data.push_one(sess, sub, t)

    def _broadcast_error(self, code: int, text: str | None = None) -> None:
        for sess in list(self.sessions.values()):
            sess.error(-1, code, text)

    # ------------------------------------------------------------ controls
    def drop_all(self) -> int:
        """Abort every client socket (the gateway's nightly restart). Returns how many."""
        conns = list(self._conns)
        for sess in conns:
            sess.abort()
        log.info("gateway.drop_all n=%s", len(conns))
        return len(conns)

    async def refuse(self, seconds: float, *, drop: bool = False) -> None:
        """Stop listening (refused connects), then listen again on the same port after
        `seconds`. With `drop`, also abort the connected clients (a full gateway restart)."""
        if self._relisten is not None:
            self._relisten.cancel()
        await self.stop_listening()
        if drop:
            self.drop_all()
        self._relisten = asyncio.create_task(self._listen_later(seconds), name="gateway-relisten")

    async def _listen_later(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self.start_listening()

    async def reset(self, delay_s: float = 1.0, restored_code: int = 1102) -> None:
        """The IB server reset: 1100 and farms broken, feeds stop, then after `delay_s` the
        farms come back and `restored_code` (1102 data maintained, or 1101 data lost: every
        market data subscription is dropped and must be made again). Sockets stay open."""
        if restored_code not in (1101, 1102):
            raise ValueError("restored_code must be 1101 or 1102")
        self.feeds_down = True
        self._broadcast_error(1100)
        for code in FARMS_BROKEN:
            self._broadcast_error(code)
        try:
            await asyncio.sleep(delay_s)
        finally:
            if restored_code == 1101:
                for sess in self.sessions.values():
                    sess.mkt.clear()
            self.feeds_down = False
            self._broadcast_error(restored_code)
            for code in FARMS_OK:
                self._broadcast_error(code)
        log.info("gateway.reset_done code=%s", restored_code)

    def start_reset(self, delay_s: float = 1.0, restored_code: int = 1102) -> asyncio.Task[None]:
        return self.spawn(self.reset(delay_s, restored_code), "gateway-reset")

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run `coro` as a task that `stop()` cancels."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def inject_error(self, code: int, text: str | None = None) -> None:
        """Send a system error (reqId -1) to every client: farm codes, 1300, ..."""
        self._broadcast_error(code, text)

    def hold_client_id(self, client_id: int) -> None:
        """Treat `client_id` as in use: a client connecting with it gets 326 and is closed."""
        self.held_client_ids.add(client_id)

    def release_client_id(self, client_id: int) -> None:
        self.held_client_ids.discard(client_id)

    def set_greeks_mode(self, mode: str, con_ids: Sequence[int] | None = None) -> None:
        """normal, sentinel (-1/-2), max (Double.MAX), absent (no tick 21) or last (tick 12/82
        instead of model tick 13/83), for every option or only for `con_ids`."""
        if mode not in GREEKS_MODES:
            raise ValueError(f"greeks mode must be one of {GREEKS_MODES}")
        if con_ids is None:
            self.greeks_mode = mode
            self.greeks_mode_by_con.clear()
        else:
            for con_id in con_ids:
                self.greeks_mode_by_con[con_id] = mode

    def set_market_closed(self, closed: bool) -> None:
        """Closed: bid/ask -1 with size 0, no last, close present (model Greeks still sent)."""
        self.market_closed = closed

    def freeze(self, on: bool = True) -> float:
        """Pin the model time (prices and Greeks stop moving). Returns the pinned time."""
        self._frozen_t = (self._frozen_t or time.time()) if on else None
        return self.model_time()

    def set_position(self, con_id: int, quantity: float, account: str | None = None) -> None:
        """Change a position of `account` (None: the primary one; 0 closes it) and stream it
        to subscribed clients."""
        pos = self.catalog.set_position(con_id, quantity, account)
        self._announce(self.catalog.book(account).account, pos)

    def add_position(self, pos: SimPosition, account: str | None = None) -> None:
        self.catalog.add_position(pos, account)
        self._announce(self.catalog.book(account).account, pos)

    def _announce(self, account: str, pos: SimPosition) -> None:
        t = self.model_time()
        for sess in self.sessions.values():
            if sess.positions_on:
                sess.send(self.catalog.position_msg(account, pos))
            if sess.account_updates == account:
                sess.send(self.catalog.portfolio_msg(account, pos, t))

    def status(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "listening": self.listening,
            "account": self.account,
            "accounts": [
                {"account": b.account, "positions": len(b.positions)}
                for b in self.catalog.books.values()
            ],
            "clients": [s.describe() for s in self.sessions.values()],
            "client_ids": sorted(self.sessions),
            "held_client_ids": sorted(self.held_client_ids),
            "greeks_mode": self.greeks_mode,
            "greeks_mode_by_con": {str(k): v for k, v in self.greeks_mode_by_con.items()},
            "market_closed": self.market_closed,
            "feeds_down": self.feeds_down,
            "frozen": self._frozen_t is not None,
            "model_time": self.model_time(),
            "positions": len(self.portfolio.positions),
            **self.market_data.status(),
        }

"""The IB Gateway simulator: an asyncio TCP server speaking the TWS API at server version 178.

One `GatewaySimulator` listens on a loopback port; each client connection is a `Session`.
Controls (in process, and through `simulator.gateway.control` from another process):
`drop_all`, `refuse`, `reset`, `hold_client_id`, `set_greeks_mode` (sentinel Greeks),
`set_market_closed`, `freeze`, `set_position` / `add_position`, `inject_error`, `status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from simulator.gateway import protocol as p
from simulator.gateway.catalog import GREEKS_MODES, Catalog, Instrument
from simulator.portfolio import EASTERN, SimPortfolio, SimPosition, default_portfolio

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "::1")  # one address: port 0 then means one port

TEXTS = {
    200: "No security definition has been found for the request",
    326: "Unable to connect as the client id is already in use. Retry with a unique client id.",
    1100: "Connectivity between IB and Trader Workstation has been lost.",
    1101: "Connectivity between IB and Trader Workstation has been restored - data lost.",
    1102: "Connectivity between IB and Trader Workstation has been restored - data maintained.",
    1300: "TWS socket port has been reset and this connection is being dropped. "
    "Please reconnect on the new port",
    2103: "Market data farm connection is broken:usfarm",
    2104: "Market data farm connection is OK:usfarm",
    2105: "HMDS data farm connection is broken:ushmds",
    2106: "HMDS data farm connection is OK:ushmds",
    2157: "Sec-def data farm connection is broken:secdefil",
    2158: "Sec-def data farm connection is OK:secdefil",
}
FARMS_OK = (2104, 2106, 2158)
FARMS_BROKEN = (2103, 2105, 2157)
ACCOUNT_SUMMARY_TAGS = ("NetLiquidation", "TotalCashValue", "BuyingPower", "AvailableFunds")


def error_text(code: int) -> str:
    return TEXTS.get(code, f"simulated error {code}")


@dataclass(slots=True)
class MktSub:
    req_id: int
    inst: Instrument
    md_type: int


@dataclass(eq=False)
class Session:
    """One client connection."""

    sim: GatewaySimulator
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    client_id: int | None = None
    md_type: int = p.LIVE
    mkt: dict[int, MktSub] = field(default_factory=dict)
    pnl: dict[int, str] = field(default_factory=dict)  # reqId -> account
    pnl_single: dict[int, int] = field(default_factory=dict)  # reqId -> conId
    positions_on: bool = False
    account_updates_on: bool = False
    mkt_requests: int = 0  # reqMktData received over the session's life
    peer: str = ""

    def send(self, fields: Sequence[p.Field]) -> None:
        if not self.writer.is_closing():
            self.writer.write(p.frame(fields))

    def error(self, req_id: int, code: int, text: str | None = None) -> None:
        self.send(p.error(req_id, code, text if text is not None else error_text(code)))

    def abort(self) -> None:
        transport = self.writer.transport
        transport.abort()

    async def run(self) -> None:
        if await self._handshake():
            await self._serve()

    async def _read_frame(self) -> bytes:
        (size,) = struct.unpack(">I", await self.reader.readexactly(4))
        if size > p.MAX_FRAME:
            raise p.ProtocolError(f"frame of {size} bytes")
        return await self.reader.readexactly(size)

    async def _handshake(self) -> bool:
        prefix = await self.reader.readexactly(len(p.API_PREFIX))
        if prefix != p.API_PREFIX:
            raise p.ProtocolError(f"expected API prefix, got {prefix!r}")
        lo, hi = p.parse_client_versions(await self._read_frame())
        if hi < p.MIN_CLIENT_VERSION or lo > self.sim.server_version:
            raise p.ProtocolError(f"client versions {lo}..{hi} not supported")
        now = datetime.now(EASTERN)
        self.send(
            p.handshake_reply(now.strftime("%Y%m%d %H:%M:%S US/Eastern"), self.sim.server_version)
        )
        fields = p.split_payload(await self._read_frame())
        if not fields or int(fields[0]) != p.In.START_API:
            raise p.ProtocolError(f"expected startApi, got {fields[:2]}")
        client_id = int(fields[2]) if len(fields) > 2 and fields[2] else 0
        if not self.sim.claim(client_id, self):
            log.info("gateway.client_id_in_use client_id=%s", client_id)
            self.error(-1, 326)
            await self.writer.drain()
            return False
        self.client_id = client_id
        self.send(p.managed_accounts([self.sim.account]))
        self.send(p.next_valid_id(1))
        for code in FARMS_OK:
            self.error(-1, code)
        log.info("gateway.client_connected client_id=%s peer=%s", client_id, self.peer)
        return True

    async def _serve(self) -> None:
        while True:
            fields = p.split_payload(await self._read_frame())
            if not fields:
                continue
            try:
                self.handle(int(fields[0]), fields)
            except (ValueError, IndexError, p.ProtocolError) as exc:
                log.warning("gateway.bad_request fields=%s error=%s", fields[:4], exc)
            await self.writer.drain()

    # ------------------------------------------------------------ requests
    def handle(self, msg_id: int, f: list[str]) -> None:
        sim, cat, acct = self.sim, self.sim.catalog, self.sim.account
        t = sim.model_time()
        match msg_id:
            case p.In.REQ_MKT_DATA:
                self._req_mkt_data(f)
            case p.In.CANCEL_MKT_DATA:
                self.mkt.pop(int(f[2]), None)
            case p.In.REQ_MARKET_DATA_TYPE:
                self.md_type = int(f[2])
            case p.In.REQ_POSITIONS:
                self.positions_on = True
                for pos in cat.positions():
                    self.send(cat.position_msg(acct, pos))
                self.send([p.Out.POSITION_END, 1])
            case p.In.CANCEL_POSITIONS:
                self.positions_on = False
            case p.In.REQ_OPEN_ORDERS:
                self.send([p.Out.OPEN_ORDER_END, 1])
            case p.In.REQ_COMPLETED_ORDERS:
                self.send([p.Out.COMPLETED_ORDERS_END])
            case p.In.REQ_EXECUTIONS:
                self.send([p.Out.EXECUTION_DATA_END, 1, int(f[2])])
            case p.In.REQ_ACCOUNT_UPDATES:
                self.account_updates_on = f[2] == "1"
                if self.account_updates_on:
                    self._account_download(t)
            case p.In.REQ_ACCOUNT_UPDATES_MULTI:
                req_id = int(f[2])
                for key, value in self._account_values(t):
                    self.send(
                        [p.Out.ACCOUNT_UPDATE_MULTI, 1, req_id, acct, f[4], key, value, "USD"]
                    )
                self.send([p.Out.ACCOUNT_UPDATE_MULTI_END, 1, req_id])
            case p.In.REQ_ACCOUNT_SUMMARY:
                req_id = int(f[2])
                values = dict(self._account_values(t))
                tags = [x for x in f[4].split(",") if x] if len(f) > 4 else []
                for tag in tags or ACCOUNT_SUMMARY_TAGS:
                    if tag in values:
                        self.send([p.Out.ACCOUNT_SUMMARY, 1, req_id, acct, tag, values[tag], "USD"])
                self.send([p.Out.ACCOUNT_SUMMARY_END, 1, req_id])
            case p.In.REQ_CONTRACT_DETAILS:
                req_id = int(f[2])
                inst = cat.find(p.ContractFields.parse(f[3:15]))
                if inst is None:
                    self.error(req_id, 200)
                else:
                    self.send(cat.contract_data_msg(req_id, inst))
                    self.send([p.Out.CONTRACT_DATA_END, 1, req_id])
            case p.In.REQ_CURRENT_TIME:
                self.send([p.Out.CURRENT_TIME, 1, int(time.time())])
            case p.In.REQ_HISTORICAL_DATA:
                self._historical(int(f[1]))
            case p.In.REQ_PNL:
                req_id = int(f[1])
                self.pnl[req_id] = f[2]
                self._send_pnl(req_id, t)
            case p.In.CANCEL_PNL:
                self.pnl.pop(int(f[1]), None)
            case p.In.REQ_PNL_SINGLE:
                req_id = int(f[1])
                self.pnl_single[req_id] = int(f[4] or 0)
                self._send_pnl_single(req_id, t)
            case p.In.CANCEL_PNL_SINGLE:
                self.pnl_single.pop(int(f[1]), None)
            case (
                p.In.REQ_AUTO_OPEN_ORDERS
                | p.In.CANCEL_ACCOUNT_SUMMARY
                | p.In.CANCEL_ACCOUNT_UPDATES_MULTI
                | p.In.CANCEL_HISTORICAL_DATA
            ):
                pass
            case p.In.REQ_IDS:
                self.send(p.next_valid_id(1))
            case p.In.REQ_MANAGED_ACCTS:
                self.send(p.managed_accounts([acct]))
            case _:
                log.info("gateway.unhandled_request msg_id=%s", msg_id)

    def _req_mkt_data(self, f: list[str]) -> None:
        req_id = int(f[2])
        contract = p.ContractFields.parse(f[3:15])
        rest = f[15:]
        if contract.sec_type == "BAG":
            n_legs = int(rest[0] or 0)
            rest = rest[1 + 4 * n_legs :]
        dnc = rest[0] == "1" if rest else False
        rest = rest[4:] if dnc else rest[1:]
        snapshot = len(rest) > 1 and rest[1] == "1"
        self.mkt_requests += 1
        inst = self.sim.catalog.find(contract)
        if inst is None:
            self.error(req_id, 200)
            return
        sub = MktSub(req_id, inst, self.md_type)
        self.send(p.market_data_type(req_id, self.md_type))
        self.sim.push_one(self, sub)
        if snapshot:
            self.send(p.tick_snapshot_end(req_id))
        else:
            self.mkt[req_id] = sub

    def _account_values(self, t: float) -> list[tuple[str, str]]:
        net = self.sim.catalog.net_liquidation(t)
        return [
            ("NetLiquidation", f"{net:.2f}"),
            ("TotalCashValue", "100000.00"),
            ("BuyingPower", f"{4 * net:.2f}"),
            ("AvailableFunds", f"{net:.2f}"),
        ]

    def _account_download(self, t: float) -> None:
        acct, cat = self.sim.account, self.sim.catalog
        for key, value in self._account_values(t):
            self.send([p.Out.ACCT_VALUE, 2, key, value, "USD", acct])
        for pos in cat.positions():
            self.send(cat.portfolio_msg(acct, pos, t))
        self.send([p.Out.ACCT_UPDATE_TIME, 1, datetime.now(EASTERN).strftime("%H:%M")])
        self.send([p.Out.ACCT_DOWNLOAD_END, 1, acct])

    def _historical(self, req_id: int) -> None:
        now = int(time.time())
        bars: list[p.Field] = []
        n = 5
        for i in range(n):
            ts = now - (n - i) * 5
            stamp = datetime.fromtimestamp(ts, EASTERN).strftime("%Y%m%d %H:%M:%S")
            bars += [stamp, 1.1, 1.1002, 1.0998, 1.1001, -1, 1.1, -1]
        first = datetime.fromtimestamp(now - 30, EASTERN).strftime("%Y%m%d %H:%M:%S")
        last = datetime.fromtimestamp(now, EASTERN).strftime("%Y%m%d %H:%M:%S")
        self.send([p.Out.HISTORICAL_DATA, req_id, first, last, n, *bars])

    def _send_pnl(self, req_id: int, t: float) -> None:
        daily, unreal, real = self.sim.catalog.pnl(t)
        self.send([p.Out.PNL, req_id, daily, unreal, real])

    def _send_pnl_single(self, req_id: int, t: float) -> None:
        con_id = self.pnl_single[req_id]
        pos = self.sim.catalog.position(con_id)
        if pos is None:
            self.send([p.Out.PNL_SINGLE, req_id, 0.0, 0.0, 0.0, 0.0, 0.0])
            return
        unreal = round(self.sim.catalog.unrealized(pos, t), 2)
        value = pos.quantity * self.sim.catalog.mark(pos, t) * pos.multiplier
        self.send(
            [
                p.Out.PNL_SINGLE,
                req_id,
                float(pos.quantity),
                round(0.1 * unreal, 2),
                unreal,
                0.0,
                round(value, 2),
            ]
        )

    def describe(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "peer": self.peer,
            "market_data_type": self.md_type,
            "subscriptions": sorted(s.inst.con_id for s in self.mkt.values()),
            "mkt_requests": self.mkt_requests,
            "pnl": len(self.pnl),
            "positions": self.positions_on,
            "account_updates": self.account_updates_on,
        }


class GatewaySimulator:
    """A simulated IB Gateway on a loopback port. Use `async with` or `start()` / `stop()`."""

    def __init__(
        self,
        portfolio: SimPortfolio | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        push_interval_s: float = 0.5,
        server_version: int = p.SERVER_VERSION,
    ) -> None:
        if host not in LOOPBACK:
            raise ValueError(f"the simulator listens on loopback only, not {host!r}")
        self.portfolio = portfolio if portfolio is not None else default_portfolio()
        self.catalog = Catalog(self.portfolio)
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
        return self.portfolio.account

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
                for sub in list(sess.mkt.values()):
                    self.push_one(sess, sub, t)
            for req_id in list(sess.pnl):
                sess._send_pnl(req_id, t)
            for req_id in list(sess.pnl_single):
                sess._send_pnl_single(req_id, t)

    def push_one(self, sess: Session, sub: MktSub, t: float | None = None) -> None:
        if self.feeds_down:
            return
        t = self.model_time() if t is None else t
        for tick in self.catalog.price_ticks(sub.inst, t, sub.md_type, self.market_closed):
            sess.send(p.tick_price(sub.req_id, tick.tick_type, tick.price, tick.size))
        mode = self.greeks_mode_by_con.get(sub.inst.con_id, self.greeks_mode)
        msg = self.catalog.greeks_msg(sub.req_id, sub.inst, t, sub.md_type, mode)
        if msg is not None:
            sess.send(msg)

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
        task = asyncio.create_task(self.reset(delay_s, restored_code), name="gateway-reset")
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

    def set_position(self, con_id: int, quantity: float) -> None:
        """Change a position (0 closes it) and stream it to subscribed clients."""
        pos = self.catalog.set_position(con_id, quantity)
        self._announce(pos)

    def add_position(self, pos: SimPosition) -> None:
        self.catalog.add_position(pos)
        self._announce(pos)

    def _announce(self, pos: SimPosition) -> None:
        t = self.model_time()
        for sess in self.sessions.values():
            if sess.positions_on:
                sess.send(self.catalog.position_msg(self.account, pos))
            if sess.account_updates_on:
                sess.send(self.catalog.portfolio_msg(self.account, pos, t))

    def status(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "listening": self.listening,
            "account": self.account,
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
        }

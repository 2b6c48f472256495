"""One client connection of the IB Gateway simulator: the TWS API handshake, then the requests
(one handler per request message id) and their answers."""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from simulator.gateway import faults
from simulator.gateway import protocol as p
from simulator.gateway.mktdata import MktSub
from simulator.portfolio import EASTERN

if TYPE_CHECKING:
    from simulator.gateway.server import GatewaySimulator

log = logging.getLogger(__name__)


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
    **faults.TEXTS,
}
FARMS_OK = (2104, 2106, 2158)
FARMS_BROKEN = (2103, 2105, 2157)
ACCOUNT_SUMMARY_TAGS = ("NetLiquidation", "TotalCashValue", "BuyingPower", "AvailableFunds")
INVALID_ACCOUNT = 321


def invalid_account_text(code: str) -> str:
    return f"Error validating request: invalid account code '{code}'."


def error_text(code: int) -> str:
    return TEXTS.get(code, f"simulated error {code}")


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
    pnl_single: dict[int, tuple[str, int]] = field(default_factory=dict)  # reqId -> account, conId
    positions_on: bool = False
    account_updates: str = ""  # the account whose values and portfolio stream ('': none)
    mkt_requests: int = 0  # reqMktData received over the session's life
    peer: str = ""
    _handlers: dict[int, Callable[[list[str]], None]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._handlers = self._handler_table()

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
        self.send(p.managed_accounts(self.sim.accounts))
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
        handler = self._handlers.get(msg_id)
        if handler is None:
            log.info("gateway.unhandled_request msg_id=%s", msg_id)
        else:
            handler(f)

    def _handler_table(self) -> dict[int, Callable[[list[str]], None]]:
        """Request message id -> handler; requests acknowledged and ignored map to `_ignore`."""
        return {
            p.In.REQ_MKT_DATA: self._req_mkt_data,
            p.In.CANCEL_MKT_DATA: self._cancel_mkt_data,
            p.In.REQ_MARKET_DATA_TYPE: self._req_market_data_type,
            p.In.REQ_POSITIONS: self._req_positions,
            p.In.CANCEL_POSITIONS: self._cancel_positions,
            p.In.REQ_OPEN_ORDERS: lambda f: self.send([p.Out.OPEN_ORDER_END, 1]),
            p.In.REQ_COMPLETED_ORDERS: lambda f: self.send([p.Out.COMPLETED_ORDERS_END]),
            p.In.REQ_EXECUTIONS: lambda f: self.send([p.Out.EXECUTION_DATA_END, 1, int(f[2])]),
            p.In.REQ_ACCOUNT_UPDATES: self._req_account_updates,
            p.In.REQ_ACCOUNT_UPDATES_MULTI: self._req_account_updates_multi,
            p.In.REQ_ACCOUNT_SUMMARY: self._req_account_summary,
            p.In.REQ_CONTRACT_DETAILS: self._req_contract_details,
            p.In.REQ_CURRENT_TIME: lambda f: self.send([p.Out.CURRENT_TIME, 1, int(time.time())]),
            p.In.REQ_HISTORICAL_DATA: lambda f: self._historical(int(f[1])),
            p.In.REQ_PNL: self._req_pnl,
            p.In.CANCEL_PNL: self._cancel_pnl,
            p.In.REQ_PNL_SINGLE: self._req_pnl_single,
            p.In.CANCEL_PNL_SINGLE: self._cancel_pnl_single,
            p.In.REQ_AUTO_OPEN_ORDERS: _ignore,
            p.In.CANCEL_ACCOUNT_SUMMARY: _ignore,
            p.In.CANCEL_ACCOUNT_UPDATES_MULTI: _ignore,
            p.In.CANCEL_HISTORICAL_DATA: _ignore,
            p.In.REQ_IDS: lambda f: self.send(p.next_valid_id(1)),
            p.In.REQ_MANAGED_ACCTS: lambda f: self.send(p.managed_accounts(self.sim.accounts)),
        }

    def _cancel_mkt_data(self, f: list[str]) -> None:
        self.sim.market_data.cancel(self, int(f[2]))

    def _cancel_pnl(self, f: list[str]) -> None:
        self.pnl.pop(int(f[1]), None)

    def _cancel_pnl_single(self, f: list[str]) -> None:
        self.pnl_single.pop(int(f[1]), None)

    def _req_market_data_type(self, f: list[str]) -> None:
        self.md_type = int(f[2])

    def _account(self, code: str, req_id: int) -> str | None:
        """The account a request names ('' names the primary one); None after error 321 when
        the login has no such account."""
        try:
            return self.sim.catalog.book(code).account
        except KeyError:
            self.error(req_id, INVALID_ACCOUNT, invalid_account_text(code))
            return None

    def _req_positions(self, f: list[str]) -> None:
        self.positions_on = True
        cat = self.sim.catalog
        for acct in cat.accounts():
            for pos in cat.positions(acct):
                self.send(cat.position_msg(acct, pos))
        self.send([p.Out.POSITION_END, 1])

    def _cancel_positions(self, f: list[str]) -> None:
        self.positions_on = False

    def _req_account_updates(self, f: list[str]) -> None:
        """One account at a time, as IB does: subscribing to another replaces it. An account
        the login lacks gets 321, then an empty download's end (a client waiting for the
        download goes on, and finds the account missing from managedAccounts)."""
        if f[2] != "1":
            self.account_updates = ""
            return
        code = f[3] if len(f) > 3 else ""
        acct = self._account(code, -1)
        if acct is None:
            self.send([p.Out.ACCT_DOWNLOAD_END, 1, code])
            return
        self.account_updates = acct
        self._account_download(acct, self.sim.model_time())

    def _req_account_updates_multi(self, f: list[str]) -> None:
        """One account, or every account when it names none (or `All`)."""
        req_id, code, t = int(f[2]), f[3], self.sim.model_time()
        accounts = self.sim.accounts if code in ("", "All") else [code]
        if code not in ("", "All") and self._account(code, req_id) is None:
            accounts = []
        for acct in accounts:
            for key, value in self._account_values(acct, t):
                self.send([p.Out.ACCOUNT_UPDATE_MULTI, 1, req_id, acct, f[4], key, value, "USD"])
        self.send([p.Out.ACCOUNT_UPDATE_MULTI_END, 1, req_id])

    def _req_account_summary(self, f: list[str]) -> None:
        """The group `All`: every account of the login, account by account."""
        req_id, t = int(f[2]), self.sim.model_time()
        tags = [x for x in f[4].split(",") if x] if len(f) > 4 else []
        for acct in self.sim.catalog.accounts():
            values = dict(self._account_values(acct, t))
            for tag in tags or ACCOUNT_SUMMARY_TAGS:
                if tag in values:
                    self.send([p.Out.ACCOUNT_SUMMARY, 1, req_id, acct, tag, values[tag], "USD"])
        self.send([p.Out.ACCOUNT_SUMMARY_END, 1, req_id])

    def _req_contract_details(self, f: list[str]) -> None:
        req_id, cat = int(f[2]), self.sim.catalog
        inst = cat.find(p.ContractFields.parse(f[3:15]))
        include_expired = len(f) > 15 and f[15] == "1"
        expired = inst is not None and inst.con_id in self.sim.market_data.faults.expired
        if inst is None or (expired and not include_expired):
            self.error(req_id, 200)
        else:
            self.send(cat.contract_data_msg(req_id, inst))
            self.send([p.Out.CONTRACT_DATA_END, 1, req_id])

    def _req_pnl(self, f: list[str]) -> None:
        req_id = int(f[1])
        acct = self._account(f[2], req_id)
        if acct is not None:
            self.pnl[req_id] = acct
            self.send_pnl(req_id, self.sim.model_time())

    def _req_pnl_single(self, f: list[str]) -> None:
        req_id = int(f[1])
        acct = self._account(f[2], req_id)
        if acct is not None:
            self.pnl_single[req_id] = (acct, int(f[4] or 0))
            self.send_pnl_single(req_id, self.sim.model_time())

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
        self.sim.market_data.request(self, req_id, contract, snapshot)

    def _account_values(self, acct: str, t: float) -> list[tuple[str, str]]:
        net = self.sim.catalog.net_liquidation(t, acct)
        return [
            ("NetLiquidation", f"{net:.2f}"),
            ("TotalCashValue", "100000.00"),
            ("BuyingPower", f"{4 * net:.2f}"),
            ("AvailableFunds", f"{net:.2f}"),
        ]

    def _account_download(self, acct: str, t: float) -> None:
        cat = self.sim.catalog
        for key, value in self._account_values(acct, t):
            self.send([p.Out.ACCT_VALUE, 2, key, value, "USD", acct])
        for pos in cat.positions(acct):
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

    def send_pnl(self, req_id: int, t: float) -> None:
        daily, unreal, real = self.sim.catalog.pnl(t, self.pnl[req_id])
        self.send([p.Out.PNL, req_id, daily, unreal, real])

    def send_pnl_single(self, req_id: int, t: float) -> None:
        acct, con_id = self.pnl_single[req_id]
        pos = self.sim.catalog.position(con_id, acct)
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
            "account_updates": bool(self.account_updates),
            "account_updates_account": self.account_updates,
        }


def _ignore(f: list[str]) -> None:
    """A request the simulator acknowledges by silence (as the gateway does for these)."""

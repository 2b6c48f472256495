"""Market data of the gateway simulator: reqMktData answered under the account's line limit and
the data faults (`faults.py`), the ticks pushed to each subscription, and the fault controls.

A subscription that an error ends (354, 10168, 200) is dropped, as IB drops it: it holds no line
and a client must request it again. Subscriptions silenced by a competing session (10197) or a
stall stay registered and keep their lines.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from simulator.gateway import protocol as p
from simulator.gateway.catalog import Instrument
from simulator.gateway.faults import (
    COMPETING,
    DELAYED_INSTEAD,
    MAX_TICKERS,
    NO_SECDEF,
    PART_NOT_SUBSCRIBED,
    REFUSING_CODES,
    DataFaults,
    delivered_type,
)
from simulator.gateway.lines import LineBook

if TYPE_CHECKING:
    from simulator.gateway.server import GatewaySimulator
    from simulator.gateway.session import Session

log = logging.getLogger(__name__)

FARM_BROKEN, FARM_OK = 2103, 2104


@dataclass(slots=True)
class MktSub:
    """One market-data request being served. `md_type` is the type the session asked for;
    `sent_type` the marketDataType last sent for it (what it actually gets)."""

    req_id: int
    inst: Instrument
    md_type: int
    delayed_only: bool = False  # 10167: delayed data in place of live
    greeks: bool = True  # 10090: prices only
    stalled: bool = False
    sent_type: int = 0


class MarketDataDesk:
    """The market data of one `GatewaySimulator`: requests, pushes, lines and faults."""

    def __init__(self, sim: GatewaySimulator, lines: int | None = None) -> None:
        self.sim = sim
        self.lines = LineBook()
        self.lines.set_limit(lines)
        self.faults = DataFaults()

    # ------------------------------------------------------------ lines
    def subscriptions(self) -> Iterator[tuple[Session, MktSub]]:
        for sess in list(self.sim.sessions.values()):
            for sub in list(sess.mkt.values()):
                yield sess, sub

    def client_lines(self) -> int:
        return sum(len(sess.mkt) for sess in self.sim.sessions.values())

    def open_lines(self) -> int:
        return self.client_lines() + self.lines.others

    def set_limit(self, limit: int | None) -> None:
        self.lines.set_limit(limit)

    def set_others(self, others: int) -> None:
        self.lines.set_others(others, self.client_lines())

    def reset_counters(self) -> None:
        self.lines.reset(self.open_lines())

    def lines_status(self) -> dict[str, Any]:
        return self.lines.as_dict(self.open_lines())

    # ------------------------------------------------------------ requests
    def request(
        self, sess: Session, req_id: int, contract: p.ContractFields, snapshot: bool
    ) -> None:
        self.lines.requests += 1
        if self.lines.full(self.open_lines()):  # checked before the contract, as the gateway does
            self.lines.refused += 1
            sess.error(req_id, MAX_TICKERS)
            return
        inst = self.sim.catalog.find(contract)
        if inst is None or inst.con_id in self.faults.expired:
            sess.error(req_id, NO_SECDEF)
            return
        code = self.faults.code_for(inst.con_id)
        if code in REFUSING_CODES:
            sess.error(req_id, code)
            return
        sub = MktSub(
            req_id,
            inst,
            sess.md_type,
            delayed_only=code == DELAYED_INSTEAD,
            greeks=code != PART_NOT_SUBSCRIBED,
        )
        if code is not None:
            sess.error(req_id, code)
        if self.faults.competing:
            sess.error(req_id, COMPETING)
        else:
            self._send_type(sess, sub)
            self.push_one(sess, sub)
        if snapshot:
            self.lines.seen(self.open_lines() + 1)  # its line is held while it is answered
            if not self.faults.competing:
                sess.send(p.tick_snapshot_end(req_id))
        else:
            sess.mkt[req_id] = sub
            self.lines.seen(self.open_lines())

    def cancel(self, sess: Session, req_id: int) -> None:
        self.lines.cancels += 1
        sess.mkt.pop(req_id, None)

    # ------------------------------------------------------------ pushing
    def _send_type(self, sess: Session, sub: MktSub) -> None:
        """Send marketDataType when what the subscription gets has changed (or never sent)."""
        md = delivered_type(sub.md_type, self.sim.market_closed, sub.delayed_only)
        if md != sub.sent_type:
            sub.sent_type = md
            sess.send(p.market_data_type(sub.req_id, md))

    def push_one(self, sess: Session, sub: MktSub, t: float | None = None) -> None:
        if self.sim.feeds_down or self.faults.competing or sub.stalled:
            return
        self._send_type(sess, sub)
        sim = self.sim
        t = sim.model_time() if t is None else t
        md = sub.sent_type
        for tick in sim.catalog.price_ticks(sub.inst, t, md, sim.market_closed):
            sess.send(p.tick_price(sub.req_id, tick.tick_type, tick.price, tick.size))
        if not sub.greeks:
            return
        mode = sim.greeks_mode_by_con.get(sub.inst.con_id, sim.greeks_mode)
        msg = sim.catalog.greeks_msg(sub.req_id, sub.inst, t, md, mode)
        if msg is not None:
            sess.send(msg)

    def push_session(self, sess: Session, t: float) -> None:
        for sub in list(sess.mkt.values()):
            self.push_one(sess, sub, t)

    # ------------------------------------------------------------ fault controls
    def _known(self, con_ids: Iterable[int]) -> list[int]:
        ids = list(con_ids)
        unknown = [c for c in ids if self.sim.catalog.instrument(c) is None]
        if unknown:
            raise KeyError(f"unknown conId {unknown[0]}")
        return ids

    def data_error(self, code: int, con_ids: Iterable[int] | None) -> int:
        """Requests for `con_ids` (None: every contract) get `code` from now on, and so do
        their open subscriptions. Returns how many subscriptions it hit."""
        ids = None if con_ids is None else set(self._known(con_ids))
        self.faults.set(code, ids)
        hit = 0
        for sess, sub in self.subscriptions():
            if ids is not None and sub.inst.con_id not in ids:
                continue
            if code in REFUSING_CODES:
                del sess.mkt[sub.req_id]
            elif code == PART_NOT_SUBSCRIBED and sub.greeks:
                sub.greeks = False
            elif code == DELAYED_INSTEAD and not sub.delayed_only:
                sub.delayed_only = True  # the next push sends marketDataType 3 first
            else:
                continue
            sess.error(sub.req_id, code)
            hit += 1
        log.info("gateway.data_error code=%s con_ids=%s hit=%s", code, ids or "all", hit)
        return hit

    def clear_data_errors(self, con_ids: Iterable[int] | None) -> None:
        """New requests are served normally again; open subscriptions keep what they were
        granted (IB decides entitlements per request: a client asks again)."""
        self.faults.clear(None if con_ids is None else self._known(con_ids))

    def expire(self, con_id: int, expired: bool = True) -> int:
        """An expired contract: requests get 200 and its subscriptions get 200 and end; the
        position stays listed. Returns how many subscriptions ended."""
        self._known([con_id])
        if not expired:
            self.faults.expired.discard(con_id)
            return 0
        self.faults.expired.add(con_id)
        ended = 0
        for sess, sub in self.subscriptions():
            if sub.inst.con_id == con_id:
                del sess.mkt[sub.req_id]
                sess.error(sub.req_id, NO_SECDEF)
                ended += 1
        return ended

    def compete(self, on: bool) -> int:
        """A live session elsewhere takes the account's data (10197 on every subscription,
        which stays registered); off: every subscription gets its current values at once.
        Returns how many subscriptions it touched."""
        was, self.faults.competing = self.faults.competing, on
        subs = list(self.subscriptions())
        if on and not was:
            for sess, sub in subs:
                sess.error(sub.req_id, COMPETING)
        elif was and not on:
            t = self.sim.model_time()
            for sess, sub in subs:
                self.push_one(sess, sub, t)
        return len(subs)

    def stall(self, on: bool, *, farm: bool = False, farm_ok_after_s: float = 1.0) -> int:
        """On: every subscription open now stops getting ticks (registered, holding its line)
        while the socket stays healthy; later requests are served. With `farm`, 2103 now and
        2104 `farm_ok_after_s` later, the stalled subscriptions still dead. Off: they resume.
        Returns how many subscriptions changed."""
        subs = list(self.subscriptions())
        changed = 0
        t = self.sim.model_time()
        for sess, sub in subs:
            if sub.stalled != on:
                sub.stalled = on
                changed += 1
                if not on:
                    self.push_one(sess, sub, t)
        if on and farm:
            self.sim.inject_error(FARM_BROKEN)
            self.sim.spawn(self._farm_ok_later(farm_ok_after_s), "gateway-farm-ok")
        log.info("gateway.stall on=%s farm=%s subscriptions=%s", on, farm, changed)
        return changed

    async def _farm_ok_later(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        self.sim.inject_error(FARM_OK)

    def stalled(self) -> int:
        return sum(1 for _, sub in self.subscriptions() if sub.stalled)

    def status(self) -> dict[str, Any]:
        return {"lines": self.lines_status(), **self.faults.as_dict(), "stalled": self.stalled()}

"""What one ib_async client receives from the gateway simulator, per request id and in order.

`Wire` wraps the client's wrapper callbacks (tick prices, option computations, marketDataType,
errors) and its P&L event, numbering every event as it is decoded. P&L is pushed after the
market data of each push round, so a P&L update is the positive signal that a round was
delivered: "no data on this request for N rounds" is asserted after N P&L updates.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ib_async import IB, Contract

from tests.fixtures import ACCOUNT
from tests.integration.simulator.conftest import wait_until

PRICE, GREEKS, TYPE, ERROR = "price", "greeks", "type", "error"


@dataclass(frozen=True)
class Event:
    seq: int
    kind: str
    value: int  # tick type, market data type or error code


class Wire:
    def __init__(self, ib: IB) -> None:
        self.ib = ib
        self.events: dict[int, list[Event]] = defaultdict(list)
        self.texts: dict[tuple[int, int], str] = {}
        self.pnl_updates = 0
        self._seq = itertools.count()
        w = ib.wrapper
        price, greeks, md_type, error = (
            w.priceSizeTick,
            w.tickOptionComputation,
            w.marketDataType,
            w.error,
        )

        def on_price(req_id: int, tick_type: int, *args: Any) -> None:
            self._add(req_id, PRICE, tick_type)
            price(req_id, tick_type, *args)

        def on_greeks(req_id: int, tick_type: int, *args: Any) -> None:
            self._add(req_id, GREEKS, tick_type)
            greeks(req_id, tick_type, *args)

        def on_type(req_id: int, value: int) -> None:
            self._add(req_id, TYPE, value)
            md_type(req_id, value)

        def on_error(req_id: int, code: int, text: str, *args: Any) -> None:
            self._add(req_id, ERROR, code)
            self.texts[(req_id, code)] = text
            error(req_id, code, text, *args)

        w.priceSizeTick, w.tickOptionComputation = on_price, on_greeks
        w.marketDataType, w.error = on_type, on_error
        ib.pnlEvent += self._on_pnl

    def _add(self, req_id: int, kind: str, value: int) -> None:
        self.events[req_id].append(Event(next(self._seq), kind, value))

    def _on_pnl(self, _pnl: object) -> None:
        self.pnl_updates += 1

    # ------------------------------------------------------------ requests
    def start_clock(self) -> None:
        """Subscribe to the account's P&L: the round clock of `rounds`."""
        self.ib.reqPnL(ACCOUNT)

    def request(self, con_id: int, *, snapshot: bool = False) -> int:
        """reqMktData for `con_id`; its request id."""
        req_id: int = self.ib.client._reqIdSeq
        self.ib.reqMktData(Contract(conId=con_id, exchange="SMART"), snapshot=snapshot)
        return req_id

    def cancel(self, con_id: int) -> None:
        assert self.ib.cancelMktData(Contract(conId=con_id, exchange="SMART"))

    async def rounds(self, n: int = 3, push: Callable[[], object] | None = None) -> None:
        """Wait until `n` more push rounds have been delivered (each made by `push` first,
        for a simulator that makes none of its own)."""
        for _ in range(n):
            target = self.pnl_updates + 1
            if push is not None:
                push()
            assert await wait_until(lambda t=target: self.pnl_updates >= t), "no push rounds"

    # ------------------------------------------------------------ reading
    def data(self, req_id: int, after: int = -1) -> list[Event]:
        """Price and Greeks events of `req_id` (those numbered after `after`)."""
        return [e for e in self.events[req_id] if e.kind in (PRICE, GREEKS) and e.seq > after]

    def errors(self, req_id: int) -> list[int]:
        return [e.value for e in self.events[req_id] if e.kind == ERROR]

    def types(self, req_id: int) -> list[int]:
        return [e.value for e in self.events[req_id] if e.kind == TYPE]

    def tick_types(self, req_id: int, kind: str = PRICE) -> set[int]:
        return {e.value for e in self.events[req_id] if e.kind == kind}

    def error_seq(self, req_id: int, code: int) -> int:
        """The number of the first `code` error on `req_id`."""
        return next(e.seq for e in self.events[req_id] if e.kind == ERROR and e.value == code)

    def first_data_seq(self, req_id: int) -> int:
        return self.data(req_id)[0].seq

    async def has_data(self, *req_ids: int, after: int = -1) -> bool:
        return await wait_until(lambda: all(self.data(r, after) for r in req_ids))

    async def has_error(self, req_id: int, code: int) -> bool:
        return await wait_until(lambda: code in self.errors(req_id))

    def system_errors(self) -> list[int]:
        return self.errors(-1)

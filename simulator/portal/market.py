"""The simulated gateway's market data: the streams one session holds, and the snapshot rows.

The first snapshot of a conid opens its stream (the pre-flight: only conid/conidEx); later calls
carry the values. A stream stays open until POST /iserver/marketdata/unsubscribe ({"conid": N})
or GET /iserver/marketdata/unsubscribeall; the next snapshot of that conid is a pre-flight again.

What IBKR does not document, and this simulator assumes (the collector relies on no more):
- `line_limit` (the account's market-data lines left to this session): a conid that would open
  one stream too many gets no stream; its row carries only conid/conidEx and
  `"error": "Max number of tickers has been reached"` (the text of the gateway's error 101), on
  every call until a line is free.
- an expired (unknown to IBKR) conid's row carries `"error": "Contract not found"` and no stream.
- field 6509 (market data availability) on every data row: first letter R realtime, D delayed,
  Z frozen, Y frozen delayed, N not subscribed (no values then), followed by "pB".
- a stall: streams open when it begins keep answering their last row (the same values and the
  same `_updated`) until they are unsubscribed and opened again.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from simulator.portal.state import Stats, Switches
from simulator.portfolio import SimPortfolio, SimPosition, shared_market

LINE_LIMIT_ERROR = "Max number of tickers has been reached"
EXPIRED_ERROR = "Contract not found"


@dataclass
class Stream:
    opened_at: float  # wall clock, seconds
    calls: int = 0  # snapshot calls since it opened (the first is the pre-flight)
    last: dict[str, Any] | None = None  # the last data row (a stalled stream repeats it)


@dataclass
class Streams:
    """The market-data streams of one session (conid -> stream)."""

    open: dict[int, Stream] = field(default_factory=dict)

    def unsubscribe(self, con_id: int) -> bool:
        return self.open.pop(con_id, None) is not None

    def unsubscribe_all(self) -> int:
        count = len(self.open)
        self.open.clear()
        return count


def market_view(books: Sequence[SimPortfolio]) -> SimPortfolio:
    """One portfolio holding each contract any of the accounts holds (once, whichever account
    holds it), in their shared market: what the snapshot endpoint prices. One account: its own
    book."""
    if len(books) == 1:
        return books[0]
    view = shared_market(books)
    contracts: dict[int, SimPosition] = {}
    for book in books:
        for pos in book.positions:
            contracts.setdefault(pos.con_id, pos)
    view.positions = list(contracts.values())
    return view


def fmt(sw: Switches, value: float, digits: int | None = None) -> str:
    if sw.quirks and abs(value) >= 1000 and digits is not None:
        return f"{value:,.{digits}f}"
    return repr(float(value)) if digits is None else f"{value:.{digits}f}"


class SnapshotMaker:
    """The rows of one /iserver/marketdata/snapshot call."""

    def __init__(
        self, portfolio: SimPortfolio, sw: Switches, streams: Streams, stats: Stats
    ) -> None:
        self.portfolio = portfolio
        self.sw = sw
        self.streams = streams
        self.stats = stats

    def rows(self, conids: list[int], t: float) -> list[dict[str, Any]]:
        by_con = self.portfolio.by_con_id()
        und_by_con = {u.con_id: u for u in self.portfolio.underlyings.values()}
        now = time.time()
        out: list[dict[str, Any]] = []
        for con_id in conids:
            self.stats.conid_requests[con_id] = self.stats.conid_requests.get(con_id, 0) + 1
            base: dict[str, Any] = {"conid": con_id, "conidEx": str(con_id)}
            if con_id in self.sw.expired_conids:
                self.streams.unsubscribe(con_id)
                out.append({**base, "error": EXPIRED_ERROR})
                continue
            stream = self.streams.open.get(con_id)
            if stream is None:
                limit = self.sw.line_limit
                if limit > 0 and len(self.streams.open) >= limit:
                    self.stats.line_refusals += 1
                    out.append({**base, "error": LINE_LIMIT_ERROR})
                    continue
                stream = self.streams.open[con_id] = Stream(now)
                self.stats.max_streams = max(self.stats.max_streams, len(self.streams.open))
            stream.calls += 1
            stall_at = self.sw.stall_at
            if stall_at is not None and stream.opened_at <= stall_at:
                out.append(dict(stream.last or base))  # stalled: nothing moves
                continue
            if self.sw.preflight and stream.calls == 1:
                if not self.sw.empty_preflight:
                    out.append(base)
                continue
            if con_id not in by_con and con_id not in und_by_con:
                out.append(base)
                continue
            pos = by_con.get(con_id)
            und = und_by_con.get(con_id)
            symbol = und.symbol if und is not None else pos.symbol if pos is not None else ""
            row = self._data_row(base, pos, symbol, stream.calls, t=t, index=len(out))
            stream.last = row
            out.append(row)
        return out

    def _data_row(
        self,
        base: dict[str, Any],
        pos: SimPosition | None,
        symbol: str,
        calls: int,
        *,
        t: float,
        index: int,
    ) -> dict[str, Any]:
        sw = self.sw
        con_id = int(base["conid"])
        letter = (sw.availability.get(str(con_id)) or "R")[:1].upper()
        row = dict(base)
        row.update(
            {
                "_updated": int(time.time() * 1000),
                "server_id": f"q{index}",
                "6119": f"q{index}",
                "6509": letter if letter == "N" else letter + "pB",
            }
        )
        if letter == "N":  # not subscribed: neither real-time nor delayed data
            return row
        if pos is not None and pos.is_option:
            quote = self.portfolio.quote(pos, t)
            row["31"] = ("C" if sw.quirks else "") + fmt(sw, quote.price, 2)
            row["7635"] = fmt(sw, quote.price, 2)
            data_calls = calls - (1 if sw.preflight else 0)
            if data_calls > sw.greeks_missing_calls and con_id not in sw.greeks_missing_conids:
                row["7308"] = fmt(sw, quote.delta)
                row["7309"] = fmt(sw, quote.gamma)
                row["7310"] = fmt(sw, quote.theta)
                row["7311"] = fmt(sw, quote.vega)
                row["7633"] = f"{quote.iv * 100:.1f}%"
            return row
        price = self.portfolio.price(symbol, t)
        row["31"] = fmt(sw, price, 2)
        row["7635"] = fmt(sw, price, 2)
        return row

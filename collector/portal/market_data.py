"""Market data from the gateway's snapshot endpoint, and the `Snapshot` a tick hands on.

One snapshot call per `SNAPSHOT_CHUNK` conids with fields 31, 7635, 7308-7311, 7633, 6509, for
the options and for their underlyings (the underlying price comes from the underlying's own
conid). The first snapshot of a conid opens its stream and carries no values (the pre-flight);
the Greeks may come a little later, so a tick asks again, briefly (`MarketData.late_greeks`).
Which conids are asked for, and when their streams are released, `lines.PortalLines` decides.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from collector.portal.client import BadAnswer, PortalClient
from collector.portal.parsers import (
    SNAPSHOT_FIELDS,
    PortalPosition,
    SnapshotRow,
    Unreadable,
    parse_snapshot_row,
)
from collector.portal.positions import PositionBook
from collector.transport import Pnl, PositionData, Snapshot
from shared.clock import age_s
from shared.names import MARKET_DATA_KINDS, OPTION_TYPES, STOCK_TYPES

log = logging.getLogger(__name__)

SNAPSHOT_CHUNK = 100
LATE_GREEKS_SHARE = 0.4
LATE_GREEKS_MAX_S = 2.0
LATE_GREEKS_PAUSE_S = 0.25
GREEKS = ("delta", "gamma", "vega", "theta")
DELIVERED_KINDS = frozenset(MARKET_DATA_KINDS)


@dataclass(slots=True)
class _Field:
    value: float
    at: datetime


class MarketData:
    """The latest Greeks and prices per conid, and when each conid's stream was opened."""

    def __init__(self, client: PortalClient) -> None:
        self.client = client
        self.subscribed: dict[int, datetime] = {}  # when each conid was (re)requested
        self.kinds: dict[int, str] = {}  # what field 6509 says is delivered (LIVE, FROZEN, ...)
        self._fields: dict[int, dict[str, _Field]] = {}
        self._prices: dict[int, _Field] = {}

    def forget_except(self, wanted: set[int]) -> None:
        """Drop the contracts no longer held (no growth over months)."""
        for table in (self._fields, self._prices, self.subscribed, self.kinds):
            for con_id in [c for c in table if c not in wanted]:
                del table[con_id]

    async def fetch(self, conids: list[int], now: datetime) -> list[SnapshotRow]:
        """One snapshot call per SNAPSHOT_CHUNK conids, the calls side by side; the rows."""
        chunks = [conids[i : i + SNAPSHOT_CHUNK] for i in range(0, len(conids), SNAPSHOT_CHUNK)]
        results = await asyncio.gather(
            *(self._snapshot_chunk(c) for c in chunks), return_exceptions=True
        )
        rows: list[SnapshotRow] = []
        for result in results:
            if isinstance(result, BaseException):
                raise result
            for row in result:
                self._remember(row, now)
            rows.extend(result)
        return rows

    async def _snapshot_chunk(self, chunk: list[int]) -> list[SnapshotRow]:
        body = await self.client.get(
            "/iserver/marketdata/snapshot",
            {"conids": ",".join(map(str, chunk)), "fields": ",".join(SNAPSHOT_FIELDS)},
        )
        if not isinstance(body, list):
            raise BadAnswer("snapshot answer is not a list")
        rows = []
        for raw in body:
            parsed = parse_snapshot_row(raw)
            if isinstance(parsed, Unreadable):
                log.debug("portal_snapshot_row_unreadable %s", parsed.reason)
                continue
            rows.append(parsed)
        return rows

    async def late_greeks(
        self,
        book: PositionBook,
        now: datetime,
        refetch: Callable[[], Awaitable[object]],
        *,
        poll_interval_s: float,
        grace_s: float,
    ) -> None:
        """Greeks arrive late after a pre-flight: ask again within this tick, briefly.

        Only while some option without any Greeks yet is inside its grace period, and for at
        most `LATE_GREEKS_SHARE` of the tick interval (bounded by LATE_GREEKS_MAX_S).
        """
        budget_s = min(LATE_GREEKS_MAX_S, LATE_GREEKS_SHARE * poll_interval_s)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget_s
        for _ in range(20):
            waiting = [
                p.con_id
                for p in book.rows
                if p.quantity != 0
                and p.sec_type in OPTION_TYPES
                and len(self._fields.get(p.con_id, {})) < 4
                and (age_s(self.subscribed.get(p.con_id), now) or 0.0) < grace_s
            ]
            if not waiting or loop.time() + LATE_GREEKS_PAUSE_S > deadline:
                return
            await asyncio.sleep(LATE_GREEKS_PAUSE_S)
            await refetch()

    def _remember(self, row: SnapshotRow, now: datetime) -> None:
        if row.preflight or row.error:
            return
        fields = self._fields.setdefault(row.con_id, {})
        for name, value in zip(GREEKS, (row.delta, row.gamma, row.vega, row.theta), strict=True):
            if value.value is not None:
                fields[name] = _Field(value.value, now)
        problems = row.problems()
        if problems:
            log.debug("portal_snapshot_values_unreadable conid %s: %s", row.con_id, problems)
        price = row.price
        if price is not None and price > 0:
            self._prices[row.con_id] = _Field(price, now)

    def has_greeks(self, con_id: int) -> bool:
        return len(self._fields.get(con_id, {})) == len(GREEKS)

    # ---- the Snapshot ----------------------------------------------------------------------
    def build(
        self,
        positions: Sequence[PortalPosition],
        accounts: Sequence[str],
        now: datetime,
        *,
        max_age_s: float | None = None,
        pnl: Mapping[str, Pnl] | None = None,
    ) -> Snapshot:
        """The tick's `Snapshot` of the accounts read (each position carries its own; a contract
        two accounts hold has one set of values); an underlying price older than `max_age_s`
        is not used."""
        fresh: dict[int, float] = {
            con_id: f.value
            for con_id, f in self._prices.items()
            if max_age_s is None or (age_s(f.at, now) or 0.0) <= max_age_s
        }
        prices: dict[str, float] = {}
        for pos in positions:
            if pos.und_con_id and pos.und_con_id in fresh and pos.symbol:
                prices.setdefault(pos.symbol, fresh[pos.und_con_id])
        for pos in positions:  # fallback: the stock position's own market price
            if pos.sec_type in STOCK_TYPES and pos.symbol and pos.mkt_price and pos.mkt_price > 0:
                prices.setdefault(pos.symbol, pos.mkt_price)
        out = [self._position_data(pos, prices.get(pos.symbol)) for pos in positions]
        # the data types delivered for the contracts in use (NOT_SUBSCRIBED delivers nothing)
        delivered = {self.kinds.get(pos.con_id) for pos in positions} | {
            self.kinds.get(pos.und_con_id) for pos in positions if pos.und_con_id
        }
        return Snapshot(
            taken_at=now,
            account=",".join(accounts),
            positions=tuple(out),
            prices=prices,
            market_data=tuple(sorted(k for k in delivered if k in DELIVERED_KINDS)),
            accounts=tuple(accounts),
            pnl=dict(pnl or {}),
        )

    def _position_data(self, pos: PortalPosition, und_price: float | None) -> PositionData:
        fields = self._fields.get(pos.con_id, {})
        values = {name: fields[name] for name in GREEKS if name in fields}
        greeks_at = min((f.at for f in values.values()), default=None)
        if len(values) < 4:
            greeks_at = None
        return PositionData(
            con_id=pos.con_id,
            symbol=pos.symbol,
            sec_type=pos.sec_type,
            quantity=pos.quantity,
            multiplier=pos.multiplier,
            delta=_val(values.get("delta")),
            gamma=_val(values.get("gamma")),
            vega=_val(values.get("vega")),
            theta=_val(values.get("theta")),
            greeks_at=greeks_at,
            subscribed_at=self.subscribed.get(pos.con_id),
            und_price=und_price,
            description=pos.description,
            account=pos.account,
        )


def _val(field: _Field | None) -> float | None:
    return None if field is None else field.value

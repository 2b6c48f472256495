"""Market-data lines in PORTAL mode: which conids the gateway streams, within IB_MARKET_DATA_LINES.

A line here is a conid whose stream the gateway holds for us: the first snapshot of a conid (the
pre-flight) opens it, POST /iserver/marketdata/unsubscribe {"conid": N} releases it, and GET
/iserver/marketdata/unsubscribeall releases all of ours at once (one call instead of one per
conid when a whole turn of the rotation ends together). The pure schedule
(`collector.lines.schedule`) decides what to hold; a *round* here applies it:

1. one snapshot of the open streams: values, field 6509 (what is delivered), the rows' errors;
2. the plan: streams to release, conids to open; silent live streams to open again
   (`collector.lines.revival`), released first;
3. one snapshot of the conids to open: their pre-flight.

When the book fits the working budget each tick runs one round (the values of every conid and
the pre-flight of new ones, as without a budget). When it does not, a background task of the
transport runs a round every ROUND_S (about three calls: values, unsubscribeall, pre-flight) and
the ticks read what the rounds brought; the Greeks policy carries each contract's last Greeks
between its turns, for at most BRIDGE_GREEKS_MAX_AGE_S.

Errors in a row (assumed, as the Client Portal documents none): "Max number of tickers has been
reached" is the line limit (the gateway opened no stream): the working budget goes down and the
conid waits for its next turn; "not found" / "expired" / "invalid": the contract is dropped from
the wanted set for GONE_RETRY_S; field 6509 "N" (not subscribed): no data, the stream is
released and asked again after NOT_SUBSCRIBED_RETRY_S.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from datetime import datetime

from collector.lines.budget import WorkingBudget
from collector.lines.revival import Revival
from collector.lines.schedule import LineSchedule, LineStats
from collector.portal.client import BadAnswer, PortalClient
from collector.portal.market_data import MarketData
from collector.portal.parsers import SnapshotRow
from collector.portal.positions import PositionBook
from shared.config import Settings
from shared.names import OPTION_TYPES

log = logging.getLogger(__name__)

ROUND_S = 1.0  # a round every second while rotating: about 3 of the 8 requests/s we allow
NOT_SUBSCRIBED_RETRY_S = 300.0
FAILED_RETRY_S = 60.0
GONE_RETRY_S = 3600.0
LOG_EVERY_S = 60.0
SLOW_CLEARS_AT = 0.8  # the too-slow ERROR is armed again once a rotation fits with this margin
UNSUBSCRIBE = "/iserver/marketdata/unsubscribe"
UNSUBSCRIBE_ALL = "/iserver/marketdata/unsubscribeall"
LIVE = "LIVE"
NOT_SUBSCRIBED = "NOT_SUBSCRIBED"
KINDS = {"R": LIVE, "D": "DELAYED", "Z": "FROZEN", "Y": "DELAYED_FROZEN", "N": NOT_SUBSCRIBED}
LIMIT_WORDS = ("max number of tickers", "limit")
GONE_WORDS = ("not found", "expired", "invalid", "no such", "unknown")

Report = Callable[[str, str], None]  # (api_logs status, message)


def kind_of(availability: str) -> str:
    """Field 6509's first letter as a kind (LIVE, DELAYED, FROZEN, DELAYED_FROZEN, ...)."""
    return KINDS.get(availability[:1], "UNKNOWN") if availability else ""


def error_kind(text: str) -> str:
    """A snapshot row's error: "limit" (no line left), "gone" (no such contract) or "other"."""
    low = text.lower()
    if any(word in low for word in LIMIT_WORDS):
        return "limit"
    if any(word in low for word in GONE_WORDS):
        return "gone"
    return "other"


class PortalLines:
    def __init__(
        self,
        client: PortalClient,
        market: MarketData,
        book: PositionBook,
        settings: Settings,
        report: Report,
    ) -> None:
        self.client = client
        self.market = market
        self.book = book
        self.report = report
        budget = settings.ib_market_data_lines
        # a refused pre-flight costs nothing but the refusal: no need to open lines slowly
        self.schedule: LineSchedule[int] = LineSchedule(
            WorkingBudget(budget),
            refresh_s=settings.poll_interval_s,
            max_pending=budget,
            rate_per_s=2.0 * budget,
        )
        self.revival: Revival[int] = Revival(settings.feed_stall_s)
        self.max_age_s = settings.greeks_max_age_s
        self.round_s = ROUND_S
        self.stats: LineStats | None = None
        self._open: set[int] = set()  # conids whose stream the gateway holds for us
        self._requested: set[int] = set()  # asked for this session (the others wait their turn)
        self._gone: dict[int, float] = {}  # conid -> when to ask again (the gateway knows it not)
        self._release: set[int] = set()  # streams to release this round
        self._seen: dict[int, object] = {}  # last `_updated` (or values) per conid
        self._lock = asyncio.Lock()
        self._not_subscribed: frozenset[int] = frozenset()
        self._too_slow = False
        self._rotating = False
        self._logged_at = 0.0
        self._all_ok = True  # the gateway has /iserver/marketdata/unsubscribeall
        self._refused = 0  # refusals this round
        self._lowered = False
        self._newly_gone: list[int] = []
        self._fresh = True  # a new session: release what it may still hold from an earlier run

    @property
    def rotating(self) -> bool:
        return self.schedule.rotating

    def forget(self) -> None:
        """A new brokerage session: the gateway holds none of our streams."""
        self.schedule.forget()
        self._open.clear()
        self._requested.clear()
        self._release.clear()
        self._seen.clear()
        self.revival = Revival(self.revival.stall_s)
        self._fresh = True

    async def run(self, clock: Callable[[], datetime]) -> None:
        """A round every `round_s` while the book needs more lines than the working budget."""
        while self.rotating:
            await asyncio.sleep(self.round_s)
            await self.round(clock())

    def stamp_waiting(self, now: datetime) -> None:
        """Contracts never asked for yet wait their first turn: pending (within grace), not
        excluded, however long the first rotation takes."""
        for con_id in self.book.wanted_conids():
            if con_id not in self._requested and con_id not in self._gone:
                self.market.subscribed[con_id] = now

    # ---- one round -------------------------------------------------------------------------
    async def round(self, now: datetime) -> None:
        """One round. A tick cut at its deadline may cancel it at any await: the bookkeeping
        is done between awaits, and every held line is in the next round's first snapshot
        (whose pre-flight it then is, if this round never sent it)."""
        async with self._lock:
            t = now.timestamp()
            if self._fresh:
                await self._start_clean()
            held = list(self.schedule.held)
            if held:
                self._open.update(held)
                self._process(await self.market.fetch(held, now), t, opening=False)
            plan = self.schedule.plan(self._wanted(t), t)
            self._release.update(plan.cancel)
            for con_id in plan.cancel:
                self.revival.dropped(con_id)
            for con_id in plan.request:
                if con_id not in self._requested:  # its first request: the grace starts
                    self._requested.add(con_id)
                    self.market.subscribed[con_id] = now
                self.revival.requested(con_id, t)
                self._seen.pop(con_id, None)
            revived = self._revive(now, t)
            await self._unsubscribe()
            opening = [*plan.request, *revived]
            if opening:
                self._open.update(opening)
                self._process(await self.market.fetch(opening, now), t, opening=True)
                await self._unsubscribe()
            self._report(t)

    def _wanted(self, t: float) -> list[int]:
        for con_id in [c for c, until in self._gone.items() if until <= t]:
            del self._gone[con_id]
        book = self.book.wanted_conids()
        held = set(book)
        for con_id in [c for c in self._seen if c not in held]:  # no growth over months
            del self._seen[con_id]
        self._requested &= held
        return [c for c in book if c not in self._gone]

    def _process(self, rows: Iterable[SnapshotRow], t: float, *, opening: bool) -> None:
        options = {p.con_id for p in self.book.rows if p.sec_type in OPTION_TYPES}
        for row in rows:
            con_id = row.con_id
            if row.availability:
                self.market.kinds[con_id] = kind_of(row.availability)
            if row.error:
                self._on_error(con_id, row.error, t, opening=opening)
                continue
            data = row.has_greeks if con_id in options else (row.price or 0.0) > 0
            if self.market.kinds.get(con_id) == NOT_SUBSCRIBED and not data:
                self.schedule.failed(con_id, t, NOT_SUBSCRIBED_RETRY_S)
                self._drop(con_id, release=True)
                continue
            if row.preflight:
                continue
            if data:
                self.schedule.delivered(con_id, t)
            mark: object = row.updated_ms
            if mark is None:  # no time stamp: the values themselves tell whether it moved
                mark = (row.delta, row.gamma, row.vega, row.theta, row.last, row.mark)
            if self._seen.get(con_id) != mark:
                self._seen[con_id] = mark
                self.revival.updated(con_id, t)

    def _on_error(self, con_id: int, text: str, t: float, *, opening: bool) -> None:
        kind = error_kind(text)
        if kind == "limit":
            self._refused += 1
            self._lowered |= self.schedule.refused(con_id, t)
            self._requested.discard(con_id)  # it waits for its next turn
            self._drop(con_id, release=not opening)
        elif kind == "gone":
            self._gone[con_id] = t + GONE_RETRY_S
            self._newly_gone.append(con_id)
            self.schedule.failed(con_id, t, GONE_RETRY_S)
            self._drop(con_id, release=not opening)
        else:
            log.warning("portal_market_data_refused conid %s: %s", con_id, text)
            self.schedule.failed(con_id, t, FAILED_RETRY_S)
            self._drop(con_id, release=not opening)

    def _drop(self, con_id: int, *, release: bool) -> None:
        """No line for it now: released (its stream may be open) or just forgotten."""
        self.revival.dropped(con_id)
        if release:
            self._release.add(con_id)
        else:
            self._open.discard(con_id)

    def _revive(self, now: datetime, t: float) -> list[int]:
        live = [
            k
            for k, line in self.schedule.held.items()
            if line.answered and k in self._open and self.market.kinds.get(k) == LIVE
        ]
        due = self.revival.due(live, t)
        for con_id in due:
            self._release.add(con_id)
            self.schedule.rerequested(con_id, t)
            self._seen.pop(con_id, None)
            self.market.subscribed[con_id] = now
        if due:
            self.report(
                "WARN",
                f"market data silent for {self.revival.stall_s:g} s or more on {len(due)} live "
                f"contract(s): re-opened (unsubscribe, then a new pre-flight): "
                f"{self._names(due)}",
            )
        return due

    async def _start_clean(self) -> None:
        """Streams the gateway session kept from an earlier run of the collector would hold
        lines nobody releases: one unsubscribeall when a session starts."""
        try:
            await self.client.get(UNSUBSCRIBE_ALL)
        except BadAnswer as exc:
            if exc.status != 404:
                raise
            self._all_ok = False
        self._fresh = False

    async def _unsubscribe(self) -> None:
        """Release the streams of `_release`; what a cancelled round did not release stays
        there for the next one."""
        self._release.intersection_update(self._open)
        release = list(self._release)
        if not release:
            return
        if len(release) > 1 and self._all_ok and self._open.issubset(release):
            try:
                await self.client.get(UNSUBSCRIBE_ALL)
            except BadAnswer as exc:
                if exc.status != 404:
                    raise
                self._all_ok = False  # an older gateway: one conid at a time
            else:
                self._open.clear()
                self._release.clear()
                return
        for con_id in release:
            try:
                await self.client.post(UNSUBSCRIBE, {"conid": con_id})
            except BadAnswer as exc:  # 404: no such stream (any more): nothing to release
                if exc.status != 404:
                    log.warning("portal_unsubscribe_failed conid %s: %s", con_id, exc)
            self._open.discard(con_id)
            self._release.discard(con_id)

    # ---- what the operator sees ------------------------------------------------------------
    def status(self) -> dict[str, str]:
        stats = self.stats
        kinds = {self.market.kinds.get(k, "") for k in self.book.wanted_conids()} - {""}
        return {
            "lines_in_use": str(len(self._open)),
            "lines_budget": str(self.schedule.budget.budget),
            "lines_working": str(self.schedule.budget.value),
            "rotation_s": f"{stats.rotation_s:.1f}" if stats else "0.0",
            "rotating": str(self.rotating).lower(),
            "market_data": ",".join(sorted(kinds)),
        }

    def _names(self, conids: Iterable[int], limit: int = 20) -> str:
        labels: dict[int, str] = {}
        for pos in self.book.rows:
            labels.setdefault(pos.con_id, pos.description or f"conid {pos.con_id}")
            if pos.und_con_id:
                labels.setdefault(pos.und_con_id, pos.symbol or f"conid {pos.und_con_id}")
        names = sorted(f"{labels.get(c, 'conid')} ({c})" for c in conids)
        more = f" and {len(names) - limit} more" if len(names) > limit else ""
        return ", ".join(names[:limit]) + more

    def _report(self, t: float) -> None:
        self.stats = stats = self.schedule.stats(t)
        lines = f"{len(self._open)} line(s) in use, budget {stats.budget}, working {stats.working}"
        if stats.rotating != self._rotating or t - self._logged_at >= LOG_EVERY_S:
            self._logged_at = t
            log.info(
                "portal_lines %s, %d contract(s), rotating=%s, rotation %.1f s",
                lines,
                stats.wanted,
                stats.rotating,
                stats.rotation_s,
            )
        if stats.rotating != self._rotating:
            self._rotating = stats.rotating
            self.report(
                "INFO",
                f"market data rotating: {stats.wanted} contracts need more than the working "
                f"budget of {stats.working} line(s) (IB_MARKET_DATA_LINES={stats.budget}); each "
                f"is refreshed in turn, one rotation about {stats.rotation_s:.1f} s"
                if stats.rotating
                else f"market data streaming: {stats.wanted} contracts within {stats.working} "
                "line(s)",
            )
        if self._lowered:
            self.report(
                "WARN",
                f"the gateway refused {self._refused} market-data line(s): the account's lines "
                f"are shared with its other sessions; working budget now {stats.working} of "
                f"{stats.budget}, probing for more later",
            )
        self._lowered, self._refused = False, 0
        self._report_slow(stats)
        self._report_data()

    def _report_slow(self, stats: LineStats) -> None:
        if not stats.rotating or stats.rotation_s <= SLOW_CLEARS_AT * self.max_age_s:
            self._too_slow = False
        elif stats.rotation_s > self.max_age_s and not self._too_slow:
            self._too_slow = True
            self.report(
                "ERROR",
                f"market data rotation too slow: one rotation of {stats.wanted} contracts over "
                f"{stats.working} line(s) takes about {stats.rotation_s:.0f} s, more than "
                f"BRIDGE_GREEKS_MAX_AGE_S={self.max_age_s:g} s: Greeks age out between turns; "
                f"raise IB_MARKET_DATA_LINES (now {stats.budget}) or BRIDGE_GREEKS_MAX_AGE_S",
            )

    def _report_data(self) -> None:
        if self._newly_gone:
            gone, self._newly_gone = self._newly_gone, []
            self.report(
                "WARN",
                f"the gateway does not know {len(gone)} contract(s) (expired?): no longer asked "
                f"for (again in {GONE_RETRY_S:g} s); their Greeks are missing: "
                f"{self._names(gone)}",
            )
        wanted = set(self.book.wanted_conids())
        now_ns = frozenset(k for k in wanted if self.market.kinds.get(k) == NOT_SUBSCRIBED)
        if now_ns == self._not_subscribed:
            return
        self._not_subscribed = now_ns
        if not now_ns:
            self.report("INFO", "market data subscribed again for every contract")
            return
        self.report(
            "WARN",
            f"market data not subscribed for {len(now_ns)} contract(s) (field 6509 = N): no "
            "values come for them; an option's last Greeks are carried for up to "
            f"BRIDGE_GREEKS_MAX_AGE_S={self.max_age_s:g} s, then it is left out of the rows "
            f"(named in a WARN); an underlying's price is missing: {self._names(now_ns)}",
        )

"""The account's positions from the gateway: paged, with their security definitions remembered.

The positions are paged from page 0 until an empty page. A position may come without its
security definition (symbol, multiplier, underlying); the gateway is then asked again with
waitForSecDef=true (at most every `SECDEF_RETRY_S`), and a definition once seen is kept for as
long as the contract is held.
"""

from __future__ import annotations

import logging
from datetime import datetime

from collector.portal.client import BadAnswer, PortalClient
from collector.portal.parsers import PortalPosition, Unreadable, parse_position, summary_amount
from shared.clock import age_s
from shared.names import OPTION_TYPES

log = logging.getLogger(__name__)

SECDEF_RETRY_S = 60.0
MAX_PAGES = 200
SUMMARY_FIELDS = (("netliquidation", "net_liquidation"), ("availablefunds", "available_funds"))


class PositionBook:
    """The positions last read (`rows`) and the security definitions seen."""

    def __init__(self, client: PortalClient) -> None:
        self.client = client
        self.rows: list[PortalPosition] = []
        self._secdef: dict[int, PortalPosition] = {}
        self._secdef_retry_at: datetime | None = None
        self._problems: frozenset[str] = frozenset()

    def wanted_conids(self) -> list[int]:
        """The conids to price: the options held and their underlyings, in order, once each."""
        conids: dict[int, None] = {}
        for pos in self.rows:
            if pos.quantity == 0:
                continue
            if pos.sec_type in OPTION_TYPES:
                conids[pos.con_id] = None
            if pos.und_con_id:
                conids[pos.und_con_id] = None
        return list(conids)

    async def refresh(self, account: str, now: datetime) -> None:
        """Read the positions again; a missing definition is asked for again when due."""
        rows = await self._fetch(account, wait_secdef=False)
        if any(not r.has_secdef and r.con_id not in self._secdef for r in rows):
            retry_age = age_s(self._secdef_retry_at, now)
            if retry_age is None or retry_age >= SECDEF_RETRY_S:
                self._secdef_retry_at = now
                log.info("portal_secdef_missing asking again with waitForSecDef=true")
                try:
                    await self.client.post(f"/portfolio/{account}/positions/invalidate")
                    rows = await self._fetch(account, wait_secdef=True)
                except BadAnswer as exc:  # a gateway without these: keep what we have
                    log.warning("portal_secdef_retry_failed %s", exc)
        self.rows = [self._with_secdef(row) for row in rows]
        wanted = set(self.wanted_conids())
        for con_id in [c for c in self._secdef if c not in wanted]:
            del self._secdef[con_id]

    def _with_secdef(self, row: PortalPosition) -> PortalPosition:
        if row.has_secdef:
            self._secdef[row.con_id] = row
            return row
        known = self._secdef.get(row.con_id)
        if known is None:
            return row
        return PortalPosition(
            row.con_id,
            known.symbol,
            known.sec_type or row.sec_type,
            row.quantity,
            known.multiplier,
            known.und_con_id,
            known.description,
            True,
            row.mkt_price,
        )

    async def _fetch(self, account: str, wait_secdef: bool) -> list[PortalPosition]:
        params = {"waitForSecDef": "true"} if wait_secdef else None
        rows: list[PortalPosition] = []
        unreadable: list[str] = []
        seen: set[int] = set()
        for page in range(MAX_PAGES):
            body = await self.client.get(f"/portfolio/{account}/positions/{page}", params)
            if not isinstance(body, list):
                raise BadAnswer(f"positions page {page} is not a list")
            if not body:
                break
            fresh = 0
            for raw in body:
                parsed = parse_position(raw)
                if isinstance(parsed, Unreadable):
                    unreadable.append(parsed.reason)
                elif parsed.con_id not in seen:
                    seen.add(parsed.con_id)
                    rows.append(parsed)
                    fresh += 1
            if fresh == 0 and page > 0:
                # a gateway that ignores pageId serves page 0 again: stop, do not count twice
                log.warning("portal_paging_repeats page %d repeats earlier rows: stopped", page)
                break
        self._report_problems(unreadable, rows)
        return rows

    def _report_problems(self, unreadable: list[str], rows: list[PortalPosition]) -> None:
        problems = set(unreadable)
        for row in rows:
            problems.update(f"{row.description}: {p}" for p in row.problems)
        frozen = frozenset(problems)
        if frozen != self._problems and frozen:
            log.warning("portal_position_problems %s", "; ".join(sorted(frozen))[:2000])
        self._problems = frozen


async def account_summary(client: PortalClient, account: str) -> dict[str, str]:
    """Net liquidation and available funds, as the link status shows them; {} if refused."""
    try:
        body = await client.get(f"/portfolio/{account}/summary")
    except BadAnswer as exc:
        log.info("portal_summary_unavailable %s", exc)
        return {}
    out: dict[str, str] = {}
    for key, name in SUMMARY_FIELDS:
        value = summary_amount(body, key)
        if value is not None:
            out[name] = repr(value)
    return out

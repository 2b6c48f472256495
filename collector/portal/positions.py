"""The accounts' positions from the gateway: paged, with their security definitions remembered.

Each account's positions are paged from page 0 until an empty page, one account after the
other; every row carries the account it was read from. A position may come without its
security definition (symbol, multiplier, underlying); that account is then asked again with
waitForSecDef=true (at most every `SECDEF_RETRY_S`), and a definition once seen is kept for as
long as the contract is held (by a conid: the same one in every account).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from collector.portal.client import BadAnswer, PortalClient
from collector.portal.parsers import PortalPosition, Unreadable, parse_position
from shared.clock import age_s
from shared.names import OPTION_TYPES

log = logging.getLogger(__name__)

SECDEF_RETRY_S = 60.0
MAX_PAGES = 200


class PositionBook:
    """The positions last read (`rows`, every account's) and the security definitions seen."""

    def __init__(self, client: PortalClient) -> None:
        self.client = client
        self.rows: list[PortalPosition] = []
        self._secdef: dict[int, PortalPosition] = {}
        self._secdef_retry_at: datetime | None = None
        self._problems: frozenset[str] = frozenset()
        self._unreadable: set[str] = set()  # rows of this refresh that could not be read

    def wanted_conids(self) -> list[int]:
        """The conids to price: the options held and their underlyings, in order, once each
        (however many accounts hold one)."""
        conids: dict[int, None] = {}
        for pos in self.rows:
            if pos.quantity == 0:
                continue
            if pos.sec_type in OPTION_TYPES:
                conids[pos.con_id] = None
            if pos.und_con_id:
                conids[pos.und_con_id] = None
        return list(conids)

    async def refresh(self, accounts: Sequence[str], now: datetime) -> None:
        """Read every account's positions again; a missing definition is asked for when due."""
        rows = {account: await self._fetch(account, wait_secdef=False) for account in accounts}
        lacking = [
            account
            for account, got in rows.items()
            if any(not r.has_secdef and r.con_id not in self._secdef for r in got)
        ]
        retry_age = age_s(self._secdef_retry_at, now)
        if lacking and (retry_age is None or retry_age >= SECDEF_RETRY_S):
            self._secdef_retry_at = now
            log.info("portal_secdef_missing asking again with waitForSecDef=true: %s", lacking)
            for account in lacking:
                try:
                    await self.client.post(f"/portfolio/{account}/positions/invalidate")
                    rows[account] = await self._fetch(account, wait_secdef=True)
                except BadAnswer as exc:  # a gateway without these: keep what we have
                    log.warning("portal_secdef_retry_failed %s", exc)
        self.rows = [self._with_secdef(row) for got in rows.values() for row in got]
        self._report_problems()
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
        return replace(
            row,
            symbol=known.symbol,
            sec_type=known.sec_type or row.sec_type,
            multiplier=known.multiplier,
            und_con_id=known.und_con_id,
            description=known.description,
            has_secdef=True,
            problems=(),
        )

    async def _fetch(self, account: str, wait_secdef: bool) -> list[PortalPosition]:
        params = {"waitForSecDef": "true"} if wait_secdef else None
        rows: list[PortalPosition] = []
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
                    self._unreadable.add(f"{account}: {parsed.reason}")
                elif parsed.con_id not in seen:
                    seen.add(parsed.con_id)
                    rows.append(replace(parsed, account=account))
                    fresh += 1
            if fresh == 0 and page > 0:
                # a gateway that ignores pageId serves page 0 again: stop, do not count twice
                log.warning("portal_paging_repeats page %d repeats earlier rows: stopped", page)
                break
        return rows

    def _report_problems(self) -> None:
        problems, self._unreadable = self._unreadable, set()
        for row in self.rows:
            problems.update(f"{row.account} {row.description}: {p}" for p in row.problems)
        frozen = frozenset(problems)
        if frozen != self._problems and frozen:
            log.warning("portal_position_problems %s", "; ".join(sorted(frozen))[:2000])
        self._problems = frozen

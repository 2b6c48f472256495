"""What the web process keeps between requests: its settings, its PostgreSQL reader, and short
caches so that a page polling every few seconds, several browsers and a Prometheus scrape
cost PostgreSQL and Redis little:

- the status report (`bridge status`'s own gathering) for STATUS_TTL_S, one gathering at a time;
- the schema and the accounts for CONTEXT_TTL_S;
- a downsampled window's series for up to SERIES_TTL_MAX_S (its buckets are coarser anyway);
- the count of reconnect attempts, read incrementally from api_logs (by id).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from database.web_reads import Schema, WebReader
from ops.status import gather
from ops.status_report import Report
from shared.clock import utcnow
from shared.config import Settings

STATUS_TTL_S = 1.0
CONTEXT_TTL_S = 30.0
SERIES_TTL_MAX_S = 60.0
SERIES_CACHE_MAX = 64
READ_TIMEOUT_S = 3.0


class Console:
    def __init__(
        self,
        settings: Settings,
        supervisor_url: str = "",
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.supervisor_url = supervisor_url
        self.clock = clock
        self.reader = WebReader(settings.require_database(), timeout_s=READ_TIMEOUT_S)
        self._report: tuple[float, Report] | None = None
        self._report_lock = asyncio.Lock()
        self._context: tuple[float, Schema, list[str]] | None = None
        self._series: dict[tuple[str, ...], tuple[float, dict[str, Any]]] = {}
        self._reconnects: int | None = None
        self._reconnects_after = 0
        self._reconnects_lock = asyncio.Lock()

    async def close(self) -> None:
        await self.reader.close()

    @property
    def poll_s(self) -> float:
        return self.settings.poll_interval_s

    async def report(self) -> Report:
        """`bridge status`'s report, at most STATUS_TTL_S old."""
        async with self._report_lock:
            cached = self._report
            if cached is not None and time.monotonic() - cached[0] < STATUS_TTL_S:
                return cached[1]
            report = await gather(self.settings, self.supervisor_url)
            self._report = (time.monotonic(), report)
            return report

    async def context(self) -> tuple[Schema, list[str]]:
        """(what the database holds, the accounts of the last day's PORTFOLIO rows); raises
        READ_ERRORS when PostgreSQL cannot be read."""
        cached = self._context
        if cached is not None and time.monotonic() - cached[0] < CONTEXT_TTL_S:
            return cached[1], cached[2]
        schema = await self.reader.schema()
        if not schema.greeks_table:
            accounts: list[str] = []
        elif schema.account_column:
            accounts = await self.reader.accounts()
        else:
            accounts = [""]
        self._context = (time.monotonic(), schema, accounts)
        return schema, accounts

    def cached_series(self, key: tuple[str, ...]) -> dict[str, Any] | None:
        found = self._series.get(key)
        if found is None or time.monotonic() > found[0]:
            return None
        return found[1]

    def keep_series(self, key: tuple[str, ...], body: dict[str, Any], ttl_s: float) -> None:
        if len(self._series) >= SERIES_CACHE_MAX:
            self._series.clear()
        self._series[key] = (time.monotonic() + min(ttl_s, SERIES_TTL_MAX_S), body)

    @property
    def reconnects_known(self) -> int | None:
        """The last count read (None: never read)."""
        return self._reconnects

    async def reconnect_attempts(self) -> int | None:
        """Reconnect and reauth attempts recorded in api_logs (None: never read yet); what is
        new since the last read is counted, the rest is remembered. Raises READ_ERRORS."""
        async with self._reconnects_lock:
            schema, _ = await self.context()
            if not schema.api_logs_table:
                return self._reconnects
            found, last_id = await self.reader.reconnect_attempts(self._reconnects_after)
            self._reconnects = (self._reconnects or 0) + found
            self._reconnects_after = last_id
            return self._reconnects

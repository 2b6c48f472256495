"""The web console's reads of PostgreSQL: a small pool of read-only sessions with a statement
timeout, so that a slow or stuck query ends on the server and never holds the pipeline's tables.

Read-only by construction: every session starts with `default_transaction_read_only = on` (an
INSERT would fail), and the statements are the SELECTs of `database.web_queries`. PostgreSQL
down: each call raises one of `READ_ERRORS` within the connect timeout; the pool connects again
at the next call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from database import web_queries as q
from database.reads import READ_ERRORS

__all__ = ["READ_ERRORS", "Schema", "Span", "WebReader"]

# the connection was lost under us (a restarted server): worth one more try on a new one
_LOST: tuple[type[BaseException], ...] = (
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
    ConnectionResetError,
)


@dataclass(frozen=True)
class Schema:
    """What this database holds, of what the console reads."""

    greeks_table: bool = False
    api_logs_table: bool = False
    exposure_table: bool = False
    account_column: bool = False


@dataclass(frozen=True)
class Span:
    """One scope's rows of one account over a time window."""

    scope: str
    account: str
    start: datetime
    end: datetime


class WebReader:
    def __init__(self, dsn: str, *, timeout_s: float = 3.0, max_size: int = 4) -> None:
        self._dsn = dsn
        self._timeout_s = timeout_s
        self._max_size = max_size
        self._pool: asyncpg.Pool | None = None

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            # min_size=0: no connection at creation; PostgreSQL may be down now
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=0,
                max_size=self._max_size,
                timeout=self._timeout_s,
                command_timeout=self._timeout_s + 1.0,
                max_inactive_connection_lifetime=60.0,
                server_settings={
                    "application_name": "bridge-web",
                    "default_transaction_read_only": "on",
                    "statement_timeout": str(int(self._timeout_s * 1000)),
                    "idle_in_transaction_session_timeout": str(int(self._timeout_s * 1000)),
                },
            )
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.terminate()

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        for attempt in (1, 2):
            pool = await self._get_pool()
            try:
                async with pool.acquire(timeout=self._timeout_s) as conn:
                    return list(await conn.fetch(sql, *args, timeout=self._timeout_s + 1.0))
            except _LOST:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        rows = await self._fetch(sql, *args)
        return rows[0] if rows else None

    # ---- reads -----------------------------------------------------------------------------
    async def schema(self) -> Schema:
        row = await self._fetchrow(q.SCHEMA)
        return Schema(**dict(row)) if row is not None else Schema()

    async def accounts(self) -> list[str]:
        return [r["account"] for r in await self._fetch(q.ACCOUNTS)]

    async def newest(self, s: Schema, scope: str, account: str) -> asyncpg.Record | None:
        return await self._fetchrow(q.newest_row(s.account_column), scope, account)

    async def newest_per_account(self, s: Schema, accounts: list[str]) -> list[Mapping[str, Any]]:
        """The newest PORTFOLIO row of each account (without the column: of account '')."""
        if not s.account_column:
            row = await self.newest(s, "PORTFOLIO", "")
            return [] if row is None else [{"account": "", **dict(row)}]
        return list(await self._fetch(q.NEWEST_PER_ACCOUNT, accounts))

    async def raw_series(self, s: Schema, span: Span, limit: int) -> list[asyncpg.Record]:
        """The window's rows, oldest first (the newest `limit` when there are more)."""
        sql = q.raw_series(s.account_column)
        rows = await self._fetch(sql, span.scope, span.start, span.end, limit, span.account)
        return list(reversed(rows))

    async def bucket_series(
        self, s: Schema, span: Span, bucket_s: float, limit: int
    ) -> list[asyncpg.Record]:
        sql = q.bucket_series(s.account_column)
        return await self._fetch(
            sql, span.scope, span.start, span.end, bucket_s, limit, span.account
        )

    async def gaps(self, s: Schema, span: Span, gap_s: float, limit: int) -> list[asyncpg.Record]:
        sql = q.gaps(s.account_column)
        return await self._fetch(sql, span.scope, span.start, span.end, gap_s, limit, span.account)

    async def marks(self, span: Span, bucket_s: float | None, limit: int) -> list[asyncpg.Record]:
        """Ticks that left legs out or carried Greeks (portfolio_exposure), oldest first."""
        args = (span.scope, span.account, span.start, span.end)
        if bucket_s is None:
            return list(reversed(await self._fetch(q.MARKS, *args, limit)))
        return await self._fetch(q.MARK_BUCKETS, *args, bucket_s, limit)

    async def exposure(self, account: str, since: datetime) -> list[asyncpg.Record]:
        return await self._fetch(q.EXPOSURE, account, since)

    async def exposure_fallback(
        self, s: Schema, account: str, since: datetime
    ) -> list[asyncpg.Record]:
        return await self._fetch(q.exposure_fallback(s.account_column), since, account)

    async def problem_logs(self, since: datetime, limit: int) -> list[asyncpg.Record]:
        return await self._fetch(q.PROBLEM_LOGS, since, limit)

    async def reconnect_attempts(self, after_id: int) -> tuple[int, int]:
        """(attempts recorded after `after_id`, the newest id seen)."""
        row = await self._fetchrow(q.RECONNECT_ATTEMPTS, after_id)
        if row is None:
            return 0, after_id
        return int(row["attempts"]), int(row["last_id"])

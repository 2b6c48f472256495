"""One plain connection for the operator's read-only commands (`bridge status`, `tail`, `demo`).

No pool and no retries: a command that cannot reach PostgreSQL says so and goes on or ends.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from database import queries

# What a read can fail with when the server is away, refuses us or times out.
READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,  # a connection left mid-operation by a failed read
)


class Reader:
    def __init__(self, conn: asyncpg.Connection, timeout_s: float) -> None:
        self._conn = conn
        self._timeout_s = timeout_s

    @classmethod
    async def connect(cls, dsn: str, timeout_s: float = 5.0) -> Reader:
        return cls(await asyncpg.connect(dsn, timeout=timeout_s), timeout_s)

    def is_closed(self) -> bool:
        return bool(self._conn.is_closed())

    def terminate(self) -> None:
        """Drop the connection at once: after a failed or timed-out read it may be unusable."""
        self._conn.terminate()

    async def close(self) -> None:
        if not self._conn.is_closed():
            await self._conn.close(timeout=self._timeout_s)

    async def newest_portfolio_row(self, contract: str) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self._conn.fetchrow(
            queries.NEWEST_PORTFOLIO_ROW, contract, timeout=self._timeout_s
        )
        return row

    async def newest_by_account(self) -> dict[str, datetime]:
        """Each account's newest PORTFOLIO row time (the last day)."""
        rows = await self._conn.fetch(queries.NEWEST_BY_ACCOUNT, timeout=self._timeout_s)
        return {str(r["account"]): r["timestamp"] for r in rows}

    async def newest_rows(self, count: int) -> list[asyncpg.Record]:
        """The `count` newest rows of portfolio_greeks, oldest first."""
        rows = await self._conn.fetch(queries.NEWEST_ROWS, count, timeout=self._timeout_s)
        return list(reversed(rows))

    async def rows_after(self, after_id: int, limit: int) -> list[asyncpg.Record]:
        return list(
            await self._conn.fetch(queries.ROWS_AFTER, after_id, limit, timeout=self._timeout_s)
        )

    async def max_id(self) -> int:
        return int(await self._conn.fetchval(queries.MAX_ID, timeout=self._timeout_s))

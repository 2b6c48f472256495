"""DBManager: the asyncpg pool, the schema check, and every write the bridge makes.

Only the writer process writes `portfolio_greeks` and `api_logs`. The pre-existing tables
`greek_snapshots` and `trades` keep their own small API here, unchanged by the bridge.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from database import queries
from shared.config import mask_url
from shared.models import ApiLogRow, GreeksRow
from shared.names import TABLE_GREEKS

log = logging.getLogger(__name__)

# Failures that mean "the database is not reachable right now", as opposed to a bad row.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable (ConnectionError is a subclass)
    asyncio.TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,  # pool closed, connection in a bad state
    asyncpg.exceptions.PostgresConnectionError,  # class 08
    asyncpg.exceptions.OperatorInterventionError,  # 57P01 admin shutdown, 57P03 starting up
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.InsufficientResourcesError,  # class 53: disk full, out of memory
    asyncpg.exceptions.InternalClientError,
)


# asyncpg's client-side "this value cannot be encoded" is an InterfaceError too: a bad row.
CLIENT_DATA_ERROR: type[BaseException] = asyncpg.exceptions._base.DataError


def is_connection_error(exc: BaseException) -> bool:
    return isinstance(exc, CONNECTION_ERRORS) and not isinstance(exc, CLIENT_DATA_ERROR)


# Errors about the rows themselves: a bad value (class 22), a constraint (class 23), or a value
# the client library cannot encode. Anything else (auth, permissions, a missing table, a
# read-only server...) is about the database, not the rows.
ROW_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.DataError,
    asyncpg.exceptions.IntegrityConstraintViolationError,
    CLIENT_DATA_ERROR,
)


def is_data_error(exc: BaseException) -> bool:
    """The database (or the client library, encoding a value) refused the rows themselves."""
    return isinstance(exc, ROW_ERRORS) and not is_connection_error(exc)


# the row fields in the order of the parameters of queries.INSERT_GREEKS / INSERT_API_LOGS
GREEKS_FIELDS = ("ts", "contract", "delta", "gamma", "vega", "theta", "underlying_price")
API_LOG_FIELDS = ("ts", "api_mode", "status", "message")


@dataclass(frozen=True, slots=True)
class WriteResult:
    greeks_inserted: int
    greeks_skipped: int
    logs_inserted: int
    logs_skipped: int


class DBManager:
    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 4,
        connect_attempts: int = 5,
        connect_backoff_s: float = 0.5,
        command_timeout_s: float = 30.0,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self._dsn = dsn
        self._min = min_size
        self._max = max_size
        self._attempts = connect_attempts
        self._backoff_s = connect_backoff_s
        self._command_timeout_s = command_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._pool: asyncpg.Pool | None = None

    def __repr__(self) -> str:
        return f"DBManager({mask_url(self._dsn)})"

    @property
    def is_connected(self) -> bool:
        """True once `connect()` succeeded (and until `close()`)."""
        return self._pool is not None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("DBManager.connect() was not called")
        return self._pool

    async def connect(self) -> None:
        """Create the pool, with bounded retries and capped exponential back-off."""
        last: BaseException | None = None
        for attempt in range(1, self._attempts + 1):
            try:
                self._pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=self._min,
                    max_size=self._max,
                    command_timeout=self._command_timeout_s,
                    timeout=self._connect_timeout_s,
                )
                return
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                last = exc
                if attempt == self._attempts:
                    break
                delay = min(self._backoff_s * 2 ** (attempt - 1), 10.0) * (
                    1 + random.random() * 0.1
                )
                log.warning(
                    "db_connect_failed attempt %d/%d to %s: %r; retrying in %.1f s",
                    attempt,
                    self._attempts,
                    mask_url(self._dsn),
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
        assert last is not None
        raise last

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), 5.0)
            except (TimeoutError, OSError):
                pool.terminate()

    async def __aenter__(self) -> DBManager:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- schema --------------------------------------------------------------------------
    async def ensure_schema(self) -> None:
        """Create the four tables and the idempotency indexes that are absent (nothing, and no
        CREATE privilege needed, when all are present)."""
        async with self.pool.acquire() as conn:
            if await conn.fetchval(queries.SCHEMA_PRESENT, queries.schema_objects()):
                return
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(queries.LOCK_SCHEMA, queries.SCHEMA_LOCK_KEY)
            await conn.execute(queries.schema_sql())

    # ---- the writer's batch ------------------------------------------------------------------
    async def write_batch(
        self, greeks: Sequence[GreeksRow], logs: Sequence[ApiLogRow]
    ) -> WriteResult:
        """Insert both kinds of rows in one transaction; rows already present are skipped."""
        async with self.pool.acquire() as conn, conn.transaction():
            g = await self._insert_greeks(conn, greeks) if greeks else 0
            n = await self._insert_logs(conn, logs) if logs else 0
        return WriteResult(g, len(greeks) - g, n, len(logs) - n)

    async def copy_batch(
        self, greeks: Sequence[GreeksRow], logs: Sequence[ApiLogRow]
    ) -> WriteResult:
        """Like `write_batch`, for large batches (the buffer drain), one transaction.

        Fast path: a binary COPY straight into `portfolio_greeks` (rows in input order, so `id`
        order is input order). When a row is already stored (a replay), the COPY fails as a
        whole and the batch goes through session temp tables instead: COPY into the staging
        table, then INSERT ... SELECT ... ORDER BY input order ON CONFLICT DO NOTHING.
        """
        records = [_record(r) for r in greeks]

        async def fast(conn: Any) -> None:
            await conn.copy_records_to_table(
                TABLE_GREEKS, records=records, columns=queries.GREEKS_COLUMNS
            )

        async def staged(conn: Any) -> int:
            await conn.execute(queries.STAGE_TABLES)
            await conn.copy_records_to_table(
                queries.STAGE_GREEKS_TABLE,
                records=[(i, *rec) for i, rec in enumerate(records)],
                columns=queries.STAGE_GREEKS_COLUMNS,
            )
            return _inserted(await conn.execute(queries.INSERT_GREEKS_FROM_STAGE))

        return await self._fast_or_staged(len(records), logs, fast, staged)

    async def copy_greeks_text(self, payload: bytes, logs: Sequence[ApiLogRow] = ()) -> WriteResult:
        """Greeks rows given as COPY text lines (`ts contract delta gamma vega theta und`,
        tab-separated, `\\N` for NULL, no escapes needed) plus api_logs rows, one transaction.

        The server parses the values: the caller has checked their shape. Fast path: COPY
        straight into `portfolio_greeks`; on a row already stored, the staging table and
        INSERT ... SELECT ... ORDER BY input order ON CONFLICT DO NOTHING instead.
        """
        rows = payload.count(b"\n")

        async def copy(conn: Any, table: str, columns: Sequence[str]) -> None:
            # a memoryview: asyncpg would take `bytes` for a file name
            source = memoryview(payload)
            await conn.copy_to_table(table, source=source, columns=columns, format="text")

        async def fast(conn: Any) -> None:
            await copy(conn, TABLE_GREEKS, queries.GREEKS_COLUMNS)

        async def staged(conn: Any) -> int:
            await conn.execute(queries.STAGE_TEXT_TABLE)
            await copy(conn, queries.STAGE_TEXT_TABLE_NAME, queries.STAGE_TEXT_COLUMNS)
            return _inserted(await conn.execute(queries.INSERT_GREEKS_FROM_TEXT_STAGE))

        return await self._fast_or_staged(rows, logs, fast, staged)

    async def _fast_or_staged(
        self,
        count: int,
        logs: Sequence[ApiLogRow],
        fast: Callable[[Any], Awaitable[None]],
        staged: Callable[[Any], Awaitable[int]],
    ) -> WriteResult:
        """`count` greeks rows by `fast` (a COPY straight into the table, which fails as a whole
        on a row already stored) or else by `staged` (returns the rows inserted), with `logs`, in
        one transaction."""
        async with self.pool.acquire() as conn:
            if count:
                try:
                    async with conn.transaction():
                        await fast(conn)
                        n = await self._insert_logs(conn, logs) if logs else 0
                    return WriteResult(count, 0, n, len(logs) - n)
                except asyncpg.UniqueViolationError:
                    pass  # some rows are stored already: the conflict-tolerant path below
            async with conn.transaction():
                g = n = 0
                if count:
                    g = await staged(conn)
                if logs:
                    n = await self._insert_logs(conn, logs)
        return WriteResult(g, count - g, n, len(logs) - n)

    async def expire_connections(self) -> None:
        """After an outage: replace the pool's connections on their next use (no I/O)."""
        if self._pool is not None:
            await self._pool.expire_connections()

    @staticmethod
    async def _insert_greeks(conn: Any, rows: Sequence[GreeksRow]) -> int:
        return await _insert_columns(conn, queries.INSERT_GREEKS, rows, GREEKS_FIELDS)

    @staticmethod
    async def _insert_logs(conn: Any, rows: Sequence[ApiLogRow]) -> int:
        return await _insert_columns(conn, queries.INSERT_API_LOGS, rows, API_LOG_FIELDS)

    async def newest_portfolio_row(self, contract: str = "PORTFOLIO") -> asyncpg.Record | None:
        async with self.pool.acquire() as conn:
            row: asyncpg.Record | None = await conn.fetchrow(queries.NEWEST_PORTFOLIO_ROW, contract)
            return row

    # ---- pre-existing tables -----------------------------------------------------------------
    async def insert_greek_snapshot(
        self,
        contract: str,
        *,
        delta: float | None,
        gamma: float | None,
        vega: float | None,
        theta: float | None,
        implied_vol: float | None = None,
        underlying_price: float | None = None,
        timestamp: datetime,
    ) -> int:
        values = (timestamp, contract, delta, gamma, vega, theta, implied_vol, underlying_price)
        return await self._new_id(queries.INSERT_GREEK_SNAPSHOT, *values)

    async def _new_id(self, sql: str, *args: object) -> int:
        """Run an INSERT ... RETURNING id."""
        async with self.pool.acquire() as conn:
            new_id: int = await conn.fetchval(sql, *args)
            return new_id

    async def greek_snapshots(self, contract: str, limit: int = 100) -> list[asyncpg.Record]:
        async with self.pool.acquire() as conn:
            rows: list[asyncpg.Record] = await conn.fetch(
                queries.SELECT_GREEK_SNAPSHOTS, contract, limit
            )
            return rows

    async def insert_trade(
        self,
        contract: str,
        side: str,
        quantity: float,
        price: float,
        *,
        timestamp: datetime,
        commission: float | None = None,
        order_ref: str | None = None,
    ) -> int:
        if side not in ("BUY", "SELL"):
            raise ValueError(f"side must be BUY or SELL, not {side!r}")
        values = (timestamp, contract, side, quantity, price, commission, order_ref)
        return await self._new_id(queries.INSERT_TRADE, *values)

    async def trades_since(self, since: datetime) -> list[asyncpg.Record]:
        async with self.pool.acquire() as conn:
            rows: list[asyncpg.Record] = await conn.fetch(queries.SELECT_TRADES, since)
            return rows


def _inserted(status: str) -> int:
    # "INSERT 0 <n>"
    try:
        return int(status.rsplit(" ", 1)[-1])
    except (ValueError, AttributeError):
        return 0


async def _insert_columns(conn: Any, sql: str, rows: Sequence[Any], fields: Sequence[str]) -> int:
    """Run an INSERT ... SELECT FROM unnest(...) with one array a field, in `fields` order."""
    status = await conn.execute(sql, *([getattr(r, name) for r in rows] for name in fields))
    return _inserted(status)


def _record(r: GreeksRow) -> tuple[Any, ...]:
    """A greeks row as COPY values, in the order of `queries.GREEKS_COLUMNS`."""
    return (r.ts, r.contract, r.delta, r.gamma, r.vega, r.theta, r.underlying_price)

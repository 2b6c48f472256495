"""DBManager: the asyncpg pool, the schema's migrations, and every write the bridge makes.

Only the writer process writes `portfolio_greeks`, `portfolio_exposure` and `api_logs`. The
pre-existing tables `greek_snapshots` and `trades` keep their own small API here, unchanged by
the bridge.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from database import batches, migrate, queries
from database.batches import WriteResult
from database.migrate import Migration, MigrationState
from shared.config import mask_url
from shared.models import ApiLogRow, ExposureRow, GreeksRow

log = logging.getLogger(__name__)

__all__ = ["DBManager", "WriteResult", "is_connection_error", "is_data_error"]

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
    async def migrate(self) -> list[tuple[Migration, float]]:
        """Apply the pending migrations (database/migrate.py); returns those this call applied,
        with their seconds. When none is pending: one read, no lock, no CREATE privilege."""
        known = migrate.available()
        async with self.pool.acquire() as conn:
            applied = await migrate.read_applied(conn)
        for state in migrate.states(known, applied):
            if state.state == "changed":
                log.warning(
                    "schema_migration_changed %s: the file differs from the one applied at %s",
                    state.label,
                    state.applied_at,
                )
        pending = [m for m in known if m.version not in applied]
        if not pending:
            return []
        # a connection of its own, without the pool's command timeout: building an index on a
        # large table may take longer, and a timeout would roll the migration back every time
        conn = await asyncpg.connect(self._dsn, timeout=self._connect_timeout_s)
        try:
            done = await migrate.apply(conn, pending)
        except asyncpg.InsufficientPrivilegeError as exc:
            log.error(
                "schema_migrations_pending %s: this role may not apply them (%s); run "
                "`bridge schema` once as the owner of the tables",
                ", ".join(m.label for m in pending),
                exc,
            )
            raise
        finally:
            await conn.close()
        for m, seconds in done:
            log.info("schema_migration_applied %s in %.2f s", m.label, seconds)
        return done

    async def migration_states(self) -> list[MigrationState]:
        """Every migration, applied or pending (read-only)."""
        async with self.pool.acquire() as conn:
            applied = await migrate.read_applied(conn)
        return migrate.states(migrate.available(), applied)

    # ---- the writer's batch ------------------------------------------------------------------
    async def write_batch(
        self,
        greeks: Sequence[GreeksRow],
        logs: Sequence[ApiLogRow],
        exposures: Sequence[ExposureRow] = (),
    ) -> WriteResult:
        """Insert every kind of row in one transaction; rows already present are skipped."""
        async with self.pool.acquire() as conn, conn.transaction():
            return await batches.insert_rows(conn, greeks, logs, exposures)

    async def copy_batch(
        self,
        greeks: Sequence[GreeksRow],
        logs: Sequence[ApiLogRow],
        exposures: Sequence[ExposureRow] = (),
    ) -> WriteResult:
        """Like `write_batch`, for large batches (the buffer drain), one transaction: COPY
        straight into the tables, or, when a row is stored already (a replay), through the
        staging tables (database/batches.py)."""
        records = [batches.greeks_record(r) for r in greeks]
        exposure = [batches.exposure_record(r) for r in exposures]

        async def fast(conn: Any) -> None:
            await batches.copy_greeks_records(conn, records)
            await batches.copy_exposure(conn, exposure)

        async def staged(conn: Any) -> tuple[int, int]:
            g = await batches.stage_greeks_records(conn, records)
            return g, await batches.stage_exposure(conn, exposure)

        async with self.pool.acquire() as conn:
            counts = (len(records), len(exposure))
            return await batches.fast_or_staged(conn, counts, logs, fast, staged)

    async def copy_greeks_text(
        self,
        payload: bytes,
        logs: Sequence[ApiLogRow] = (),
        exposures: Sequence[ExposureRow] = (),
    ) -> WriteResult:
        """Greeks rows given as COPY text lines (`ts contract delta gamma vega theta und
        account`, tab-separated, `\\N` for NULL, no escapes needed) plus exposure and api_logs
        rows, one transaction; COPY straight into the tables, or the staging tables on a replay.

        The server parses the values: the caller has checked their shape.
        """
        exposure = [batches.exposure_record(r) for r in exposures]

        async def fast(conn: Any) -> None:
            await batches.copy_greeks_text(conn, payload, staged=False)
            await batches.copy_exposure(conn, exposure)

        async def staged(conn: Any) -> tuple[int, int]:
            g = await batches.copy_greeks_text(conn, payload, staged=True)
            return g, await batches.stage_exposure(conn, exposure)

        async with self.pool.acquire() as conn:
            counts = (payload.count(b"\n"), len(exposure))
            return await batches.fast_or_staged(conn, counts, logs, fast, staged)

    async def expire_connections(self) -> None:
        """After an outage: replace the pool's connections on their next use (no I/O)."""
        if self._pool is not None:
            await self._pool.expire_connections()

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

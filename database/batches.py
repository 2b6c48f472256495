"""The writer's batches on one connection: `portfolio_greeks`, `portfolio_exposure` and
`api_logs` rows in one transaction, each table's rows once (ON CONFLICT DO NOTHING on its
idempotency key) and in input order (`id` order is stream order).

Three routes: INSERT ... SELECT FROM unnest(...) for the stream's batches; for the drain's large
chunks a COPY straight into the tables (fast, but it fails as a whole when a row is stored
already), and on that failure COPY into session temp tables, then INSERT ... SELECT ... ORDER BY
input order ON CONFLICT DO NOTHING.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from database import queries
from shared.codec import EXPOSURE_TABLE as TABLE_EXPOSURE
from shared.models import ApiLogRow, ExposureRow, GreeksRow
from shared.names import TABLE_GREEKS

# the row fields in the order of the parameters of queries.INSERT_GREEKS / INSERT_API_LOGS /
# INSERT_EXPOSURE (the exposure row's fields are named as its columns, but `ts`)
GREEKS_FIELDS = ("ts", "contract", "delta", "gamma", "vega", "theta", "underlying_price", "account")
API_LOG_FIELDS = ("ts", "api_mode", "status", "message")
EXPOSURE_FIELDS = ("ts", *queries.EXPOSURE_COLUMNS[1:])


@dataclass(frozen=True, slots=True)
class WriteResult:
    greeks_inserted: int
    greeks_skipped: int
    logs_inserted: int
    logs_skipped: int
    exposure_inserted: int = 0
    exposure_skipped: int = 0


def inserted(status: str) -> int:
    # "INSERT 0 <n>"
    try:
        return int(status.rsplit(" ", 1)[-1])
    except (ValueError, AttributeError):
        return 0


async def insert_columns(conn: Any, sql: str, rows: Sequence[Any], fields: Sequence[str]) -> int:
    """Run an INSERT ... SELECT FROM unnest(...) with one array a field, in `fields` order."""
    status = await conn.execute(sql, *([getattr(r, name) for r in rows] for name in fields))
    return inserted(status)


def greeks_record(r: GreeksRow) -> tuple[Any, ...]:
    """A greeks row as COPY values, in the order of `queries.GREEKS_COLUMNS`."""
    return (r.ts, r.contract, r.delta, r.gamma, r.vega, r.theta, r.underlying_price, r.account)


def exposure_record(r: ExposureRow) -> tuple[Any, ...]:
    """An exposure row as COPY values, in the order of `queries.EXPOSURE_COLUMNS`."""
    return tuple(getattr(r, name) for name in EXPOSURE_FIELDS)


async def insert_rows(
    conn: Any,
    greeks: Sequence[GreeksRow],
    logs: Sequence[ApiLogRow],
    exposures: Sequence[ExposureRow],
) -> WriteResult:
    """The unnest route, inside the caller's transaction."""
    g = await insert_columns(conn, queries.INSERT_GREEKS, greeks, GREEKS_FIELDS) if greeks else 0
    e = 0
    if exposures:
        e = await insert_columns(conn, queries.INSERT_EXPOSURE, exposures, EXPOSURE_FIELDS)
    n = await insert_logs(conn, logs) if logs else 0
    return WriteResult(g, len(greeks) - g, n, len(logs) - n, e, len(exposures) - e)


async def insert_logs(conn: Any, logs: Sequence[ApiLogRow]) -> int:
    return await insert_columns(conn, queries.INSERT_API_LOGS, logs, API_LOG_FIELDS)


async def copy_exposure(conn: Any, records: list[tuple[Any, ...]]) -> None:
    """The fast route of exposure rows: COPY straight into the table."""
    if records:
        await conn.copy_records_to_table(
            TABLE_EXPOSURE, records=records, columns=queries.EXPOSURE_COLUMNS
        )


async def stage_exposure(conn: Any, records: list[tuple[Any, ...]]) -> int:
    """The replay route of exposure rows; returns the rows inserted."""
    if not records:
        return 0
    await conn.execute(queries.STAGE_EXPOSURE)
    await conn.copy_records_to_table(
        queries.STAGE_EXPOSURE_TABLE,
        records=[(i, *rec) for i, rec in enumerate(records)],
        columns=queries.STAGE_EXPOSURE_COLUMNS,
    )
    return inserted(await conn.execute(queries.INSERT_EXPOSURE_FROM_STAGE))


async def copy_greeks_records(conn: Any, records: list[tuple[Any, ...]]) -> None:
    if records:
        await conn.copy_records_to_table(
            TABLE_GREEKS, records=records, columns=queries.GREEKS_COLUMNS
        )


async def stage_greeks_records(conn: Any, records: list[tuple[Any, ...]]) -> int:
    if not records:
        return 0
    await conn.execute(queries.STAGE_TABLES)
    await conn.copy_records_to_table(
        queries.STAGE_GREEKS_TABLE,
        records=[(i, *rec) for i, rec in enumerate(records)],
        columns=queries.STAGE_GREEKS_COLUMNS,
    )
    return inserted(await conn.execute(queries.INSERT_GREEKS_FROM_STAGE))


async def copy_greeks_text(conn: Any, payload: bytes, *, staged: bool) -> int:
    """Greeks rows as COPY text lines: straight into the table (returns the line count), or
    through the staging table (returns the rows inserted)."""
    if not payload:
        return 0
    # a memoryview: asyncpg would take `bytes` for a file name
    source = memoryview(payload)
    if not staged:
        await conn.copy_to_table(
            TABLE_GREEKS, source=source, columns=queries.GREEKS_COLUMNS, format="text"
        )
        return payload.count(b"\n")
    await conn.execute(queries.STAGE_TEXT_TABLE)
    await conn.copy_to_table(
        queries.STAGE_TEXT_TABLE_NAME,
        source=source,
        columns=queries.STAGE_TEXT_COLUMNS,
        format="text",
    )
    return inserted(await conn.execute(queries.INSERT_GREEKS_FROM_TEXT_STAGE))


Fast = Callable[[Any], Awaitable[None]]
Staged = Callable[[Any], Awaitable[tuple[int, int]]]


async def fast_or_staged(
    conn: Any,
    counts: tuple[int, int],
    logs: Sequence[ApiLogRow],
    fast: Fast,
    staged: Staged,
) -> WriteResult:
    """`counts` = (greeks rows, exposure rows) written by `fast` (COPY straight into the tables,
    which fails as a whole on a row already stored) or else by `staged` (returns the rows each
    table took), with `logs`, in one transaction."""
    greeks, exposures = counts
    if greeks or exposures:
        try:
            async with conn.transaction():
                await fast(conn)
                n = await insert_logs(conn, logs) if logs else 0
            return WriteResult(greeks, 0, n, len(logs) - n, exposures, 0)
        except asyncpg.UniqueViolationError:
            pass  # some rows are stored already: the conflict-tolerant route below
    async with conn.transaction():
        g = e = n = 0
        if greeks or exposures:
            g, e = await staged(conn)
        if logs:
            n = await insert_logs(conn, logs)
    return WriteResult(g, greeks - g, n, len(logs) - n, e, exposures - e)

"""`bridge tail`: follow new `portfolio_greeks` rows as an aligned table, each with its account
and how complete its sums were (`12/12` legs: used of needed, from `portfolio_exposure`).

A bounded poll loop: it starts with the newest `--last` rows, then asks PostgreSQL every
`--interval` seconds for rows with a larger `id`, and stops after `--count` rows (when given),
on Ctrl-C (exit 0), or when the database stays unreachable for `--give-up` seconds.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

import asyncpg

from database.reads import READ_ERRORS, Reader

PAGE_ROWS = 500


@dataclass(frozen=True)
class Column:
    title: str
    width: int
    align: str  # "<" or ">"


COLUMNS = (
    Column("timestamp (UTC)", 23, "<"),
    Column("account", 10, "<"),
    Column("contract", 9, "<"),
    Column("delta", 12, ">"),
    Column("gamma", 10, ">"),
    Column("vega", 11, ">"),
    Column("theta", 11, ">"),
    Column("underlying", 10, ">"),
    Column("legs", 9, ">"),
)


def fmt_number(value: float | None, decimals: int) -> str:
    if value is None:
        return "NULL"
    if not math.isfinite(value):
        return str(value)
    return f"{value:,.{decimals}f}"


def fmt_ts(ts: datetime) -> str:
    """UTC, milliseconds: `2026-11-25 14:30:05.000`."""
    return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def fmt_legs(row: dict[str, Any] | asyncpg.Record) -> str:
    """`used/needed` option legs; `-` when the tick's exposure row is not there (yet)."""
    legs, excluded = row.get("legs"), row.get("legs_excluded")
    if legs is None or excluded is None:
        return "-"
    return f"{legs - excluded}/{legs}"


def cells(row: dict[str, Any] | asyncpg.Record) -> list[str]:
    return [
        fmt_ts(row["timestamp"]),
        str(row.get("account") or "-"),
        str(row["contract"]),
        fmt_number(row["delta"], 2),
        fmt_number(row["gamma"], 4),
        fmt_number(row["vega"], 2),
        fmt_number(row["theta"], 2),
        fmt_number(row["underlying_price"], 2),
        fmt_legs(row),
    ]


def _line(values: Sequence[str]) -> str:
    out = []
    for col, value in zip(COLUMNS, values, strict=True):
        out.append(f"{value:{col.align}{col.width}}")
    return "  ".join(out).rstrip()


def header() -> str:
    titles = _line([c.title for c in COLUMNS])
    rule = "  ".join("-" * c.width for c in COLUMNS)
    return f"{titles}\n{rule}"


def format_row(row: dict[str, Any] | asyncpg.Record) -> str:
    """One row, aligned under `header()` (a value wider than its column pushes the rest right)."""
    return _line(cells(row))


async def tail(
    dsn: str,
    out: TextIO,
    *,
    count: int | None = None,
    last: int = 5,
    interval_s: float = 1.0,
    give_up_s: float = 60.0,
    sleep: Callable[[float], Any] = asyncio.sleep,
) -> int:
    """Print rows until `count` rows were shown (None: until cancelled); returns rows shown."""
    shown = 0
    conn = await Reader.connect(dsn, timeout_s=5.0)
    try:
        out.write(header() + "\n")
        out.flush()
        newest = await conn.newest_rows(last) if last > 0 else []
        after = await conn.max_id() if not newest else int(newest[-1]["id"])
        for row in newest:
            if count is not None and shown >= count:
                return shown
            out.write(format_row(row) + "\n")
            shown += 1
        out.flush()
        failing_since: float | None = None
        loop = asyncio.get_running_loop()
        while count is None or shown < count:
            try:
                if conn.is_closed():
                    conn = await Reader.connect(dsn, timeout_s=5.0)
                rows = await conn.rows_after(after, PAGE_ROWS)
                failing_since = None
            except READ_ERRORS as exc:
                conn.terminate()  # reconnect next time: a failed read can leave it mid-operation
                now = loop.time()
                failing_since = failing_since or now
                if now - failing_since > give_up_s:
                    raise
                out.write(f"-- PostgreSQL unavailable ({type(exc).__name__}); retrying\n")
                out.flush()
                rows = []
            for row in rows:
                after = max(after, int(row["id"]))
                if count is not None and shown >= count:
                    break
                out.write(format_row(row) + "\n")
                shown += 1
            out.flush()
            if count is not None and shown >= count:
                break
            await sleep(interval_s)
    finally:
        await conn.close()
    return shown

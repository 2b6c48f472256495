"""Find the rows the database refuses (a data error, not an outage) by bisection."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from shared.config import scrub
from shared.models import ApiLogRow, ExposureRow, GreeksRow
from writer.errors import is_row_error

Row = GreeksRow | ExposureRow | ApiLogRow
# (greeks, api_logs, exposures): one transaction
StoreFn = Callable[[list[GreeksRow], list[ApiLogRow], list[ExposureRow]], Awaitable[None]]


def split(rows: Sequence[Row]) -> tuple[list[GreeksRow], list[ApiLogRow], list[ExposureRow]]:
    """The rows by kind, each kind in input order."""
    return (
        [r for r in rows if isinstance(r, GreeksRow)],
        [r for r in rows if isinstance(r, ApiLogRow)],
        [r for r in rows if isinstance(r, ExposureRow)],
    )


async def find_refused(rows: Sequence[Row], store: StoreFn) -> list[tuple[Row, str]]:
    """Store every row that the database accepts (in input order, part by part) and return the
    ones it refuses, each with the reason. Anything but a data error (an outage, a bug) is
    re-raised."""
    stack: list[list[Row]] = [list(rows)]
    refused: list[tuple[Row, str]] = []
    while stack:
        part = stack.pop()
        if not part:
            continue
        try:
            await store(*split(part))
        except Exception as exc:
            if not is_row_error(exc):
                raise
            if len(part) == 1:
                refused.append((part[0], scrub(f"database refused the row: {exc!r}")[:500]))
            else:
                mid = len(part) // 2
                stack.extend([part[mid:], part[:mid]])
    return refused

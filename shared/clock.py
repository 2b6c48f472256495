"""The one place production reads the wall clock; tests pass `now` or replace `utcnow`."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

EASTERN = ZoneInfo("America/New_York")


def utcnow() -> datetime:
    return datetime.now(UTC)


def next_grid_time(now: datetime, interval_s: float) -> datetime:
    """The first instant strictly after `now` on the wall-clock grid of `interval_s`."""
    epoch = now.timestamp()
    k = math.floor(epoch / interval_s + 1e-9) + 1
    return datetime.fromtimestamp(k * interval_s, UTC)


def grid_floor(now: datetime, interval_s: float) -> datetime:
    """The grid instant at or before `now`."""
    k = math.floor(now.timestamp() / interval_s + 1e-9)
    return datetime.fromtimestamp(k * interval_s, UTC)


def parse_time(text: str) -> datetime | None:
    """An ISO-8601 time with a UTC offset, or None (empty, malformed or naive)."""
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        return None
    return ts if ts.tzinfo is not None and ts.utcoffset() is not None else None


def age_s(then: datetime | None, now: datetime) -> float | None:
    if then is None:
        return None
    return (now - then) / timedelta(seconds=1)

"""The nightly reset window and the back-off schedule: pure functions of their arguments.

IB Gateway restarts itself every night at about 23:45 US/Eastern, which drops every API
connection. A link that goes down while the Eastern wall clock reads 23:40:00 to 23:59:59 is left
alone until 00:05 ET of the next day; at any other time it is reconnected at once.

Every function takes an aware `now` (any time zone); the Eastern wall time is derived with
`zoneinfo`, so both DST changes are handled by the time zone database, not by offsets here.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, time, timedelta

from shared.clock import EASTERN

WINDOW_START = time(23, 40, 0)  # inclusive
WINDOW_END = time(23, 59, 59)  # inclusive, to the end of that second
RESUME_AT = time(0, 5, 0)  # the reconnect time, ET, on the day after the window
JITTER_FRACTION = 0.1  # back-off delays are stretched by up to 10 %


def _eastern(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(EASTERN)


def in_reset_window(now: datetime) -> bool:
    """True when the US/Eastern wall time of `now` is from 23:40:00 to 23:59:59 (inclusive)."""
    wall = _eastern(now).time()
    return wall >= WINDOW_START  # 23:40:00.000000 .. 23:59:59.999999


def resume_time(now: datetime) -> datetime:
    """00:05 ET of the day after the Eastern date of `now` (an aware datetime in EASTERN).

    Meant for a `now` inside the window: the reconnect falls after midnight, on the next day.
    00:05 is never skipped or repeated by a US DST change (they happen at 02:00).
    """
    day = _eastern(now).date() + timedelta(days=1)
    return datetime.combine(day, RESUME_AT, tzinfo=EASTERN)


def eastern_text(ts: datetime) -> str:
    """`2026-11-25 23:45:03 EST`: how an operator reads a time in a log line."""
    return _eastern(ts).strftime("%Y-%m-%d %H:%M:%S %Z")


def backoff_delay_s(
    retry: int,
    base_s: float,
    cap_s: float,
    rand: Callable[[], float] = random.random,
) -> float:
    """The delay before retry number `retry` (1, 2, 3, ...): base x 2^(retry-1), capped, then
    stretched by a jitter of 0 to JITTER_FRACTION of itself (so the cap can be exceeded by at
    most 10 %). With base 2 s: about 2, 4, 8 s.
    """
    if retry < 1:
        raise ValueError("retry numbers start at 1")
    delay = min(cap_s, base_s * 2.0 ** min(retry - 1, 62))
    return delay + delay * JITTER_FRACTION * rand()


def round_delays_s(
    retries: int,
    base_s: float,
    cap_s: float,
    rand: Callable[[], float] = random.random,
) -> list[float]:
    """Delays before each attempt of one round: the first attempt at once, then `retries`
    retries with growing back-off. `[0, ~2, ~4, ~8]` for 3 retries with base 2 s."""
    return [0.0] + [backoff_delay_s(n, base_s, cap_s, rand) for n in range(1, retries + 1)]

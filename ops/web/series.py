"""The chart's numbers, from the rows PostgreSQL returns: pure, `now` is a parameter.

- A window (1 h, 1 day, 1 week) is read whole when it holds at most MAX_RAW_POINTS ticks of
  BRIDGE_POLL_INTERVAL_S; a longer one is read in TARGET_BUCKETS buckets, each giving, per Greek,
  its first, last, smallest and largest value at their own times (a spike is never averaged
  away, the line starts and ends where the rows do).
- A gap is two consecutive rows further apart than GAP_FACTOR ticks: the series gets a `null`
  point inside it, so no line is drawn across it (never interpolated); the window's start before
  the first row and its end after the last one are gaps too.
- Points are `[epoch milliseconds, value]`; a value is `null` where the line breaks.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

GREEKS = ("delta", "gamma", "vega", "theta")
WINDOWS = {"1h": 3600.0, "1d": 86400.0, "1w": 7 * 86400.0}
DEFAULT_WINDOW = "1h"
MAX_RAW_POINTS = 1500
TARGET_BUCKETS = 400
RAW_ROW_LIMIT = 5000  # a bound even when the poll interval is not the collector's
GAP_LIMIT = 500
MARK_LIMIT = 2000
GAP_FACTOR = 1.5  # one missed tick on the wall-clock grid is a gap

Point = list[Any]  # [epoch ms, float | None]


@dataclass(frozen=True)
class Plan:
    window: str
    start: datetime
    end: datetime
    bucket_s: float | None  # None: every row
    gap_s: float


def plan(window: str, now: datetime, poll_s: float) -> Plan:
    """How to read `window` (a key of WINDOWS; ValueError otherwise) ending at `now`."""
    if window not in WINDOWS:
        raise ValueError(f"window must be one of {', '.join(WINDOWS)}")
    seconds = WINDOWS[window]
    bucket = None if seconds / poll_s <= MAX_RAW_POINTS else seconds / TARGET_BUCKETS
    return Plan(window, now - timedelta(seconds=seconds), now, bucket, GAP_FACTOR * poll_s)


def ms(ts: datetime) -> int:
    return round(ts.timestamp() * 1000)


def _number(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def raw_points(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Point]]:
    """Every row, oldest first: one point per Greek (null where the row has no value)."""
    return {g: [[ms(r["timestamp"]), _number(r[g])] for r in rows] for g in GREEKS}


def bucket_points(buckets: Sequence[Mapping[str, Any]]) -> dict[str, list[Point]]:
    """Per bucket and Greek: first, smallest, largest and last value at their own times, each
    time once (a bucket of one row gives one point)."""
    out: dict[str, list[Point]] = {g: [] for g in GREEKS}
    for b in buckets:
        for g in GREEKS:
            found = {
                ms(b["first_ts"]): b[f"{g}_first"],
                ms(b[f"{g}_min_ts"]): b[f"{g}_min"],
                ms(b[f"{g}_max_ts"]): b[f"{g}_max"],
                ms(b["last_ts"]): b[f"{g}_last"],
            }
            # first/last win over an extreme at the same time: the same row, the same value
            found[ms(b["first_ts"])] = b[f"{g}_first"]
            found[ms(b["last_ts"])] = b[f"{g}_last"]
            out[g] += [[t, _number(v)] for t, v in sorted(found.items()) if v is not None]
    return out


@dataclass(frozen=True)
class Gap:
    start: datetime  # the last row before it (or the window's start)
    end: datetime  # the first row after it (or the window's end)

    def as_json(self) -> dict[str, Any]:
        return {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "seconds": (self.end - self.start).total_seconds(),
        }


def all_gaps(
    inner: Iterable[tuple[datetime, datetime]],
    first: datetime | None,
    last: datetime | None,
    p: Plan,
) -> list[Gap]:
    """The gaps between rows, plus the window's edges without rows (all of it when empty)."""
    if first is None or last is None:
        return [Gap(p.start, p.end)]
    gaps = [Gap(a, b) for a, b in inner]
    if (first - p.start).total_seconds() > p.gap_s:
        gaps.insert(0, Gap(p.start, first))
    if (p.end - last).total_seconds() > p.gap_s:
        gaps.append(Gap(last, p.end))
    return gaps


def break_at_gaps(points: list[Point], gaps: Sequence[Gap]) -> list[Point]:
    """`points` with a null point in the middle of each gap between two of them."""
    breaks = [
        [(ms(g.start) + ms(g.end)) // 2, None]
        for g in gaps
        if points and points[0][0] <= ms(g.start) and ms(g.end) <= points[-1][0]
    ]
    if not breaks:
        return points
    return sorted(points + breaks, key=lambda point: (point[0], point[1] is not None))


def breaks_between_buckets(
    buckets: Sequence[Mapping[str, Any]], p: Plan
) -> list[tuple[datetime, datetime]]:
    """Pairs of non-empty buckets with empty ones between them: no rows there at all (a bound
    when the gap list itself was cut at GAP_LIMIT)."""
    out = []
    for before, after in itertools.pairwise(buckets):
        if after["b"] - before["b"] > 1 and (
            (after["first_ts"] - before["last_ts"]).total_seconds() > p.gap_s
        ):
            out.append((before["last_ts"], after["first_ts"]))
    return out


def merge_gaps(gaps: Iterable[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    """Sorted, the same pair once."""
    return sorted(set(gaps))


def newest_json(row: Mapping[str, Any] | None, now: datetime) -> dict[str, Any] | None:
    if row is None:
        return None
    ts: datetime = row["timestamp"]
    out: dict[str, Any] = {
        "timestamp": ts.isoformat(),
        "t": ms(ts),
        "age_s": (now - ts).total_seconds(),
    }
    for key in (*GREEKS, "underlying_price"):
        out[key] = _number(row[key])
    return out


def mark_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """A tick (or a bucket's first such tick) whose sums left legs out or carried Greeks."""
    ts: datetime = row["timestamp"]
    out: dict[str, Any] = {"timestamp": ts.isoformat(), "t": ms(ts)}
    for key in ("legs", "legs_carried", "legs_excluded", "greeks_age_max_s", "ticks"):
        if key in row:
            out[key] = row[key]
    out.setdefault("ticks", 1)
    out["kind"] = "excluded" if (row["legs_excluded"] or 0) > 0 else "carried"
    return out


def default_account(accounts: Sequence[str]) -> str:
    """The combined book when there are several accounts, else the only one ('' without any)."""
    if "ALL" in accounts:
        return "ALL"
    return accounts[0] if accounts else ""

"""The chaos run's checks that need no word from the collector: the tick grid, and api_logs.

The collector's ledger says which rows it handed off; a row it never produced (or produced and
never recorded) is invisible to a check against it. These checks read PostgreSQL alone and judge
it by the test's own record of the faults:

- `grid`: every PORTFOLIO timestamp lies on the wall-clock grid of the poll interval, each grid
  slot from the first row to the last holds exactly one row, and an empty slot is allowed only
  in a gap that a fault stopping production (the collector killed, the gateway gone) opened
  while it lasted, and that closed within a recovery bound;
- `match`: each fault's api_logs row lies in that fault's own window, and no row serves two
  faults, so two faults of one kind need two rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)
# the collector's grid instants are k * interval as a float, rounded to the microsecond
GRID_TOLERANCE_US = 1


@dataclass(frozen=True)
class Excuse:
    """A fault that kept the collector from producing. It explains a gap (a run of empty slots)
    that opens between `start` (a tick before it struck: the tick in hand dies with it) and
    `onset` (its end plus the moment the product needs to notice), up to `until` (its end plus
    the recovery bound). A gap that opens later is not this fault's doing."""

    start: datetime
    onset: datetime
    until: datetime


@dataclass
class Grid:
    interval_s: float
    rows: int = 0
    first: datetime | None = None
    last: datetime | None = None
    slots: int = 0
    off_grid: list[datetime] = field(default_factory=list)
    duplicated: list[datetime] = field(default_factory=list)
    excused: dict[int, list[datetime]] = field(default_factory=dict)  # fault index -> slots
    unexcused: list[datetime] = field(default_factory=list)

    def problems(self) -> list[str]:
        out = [
            f"PORTFOLIO row off the {self.interval_s:g} s grid at {_t(t)}" for t in self.off_grid
        ]
        out += [f"grid slot {_t(t)} holds more than one PORTFOLIO row" for t in self.duplicated]
        out += [
            f"grid slot {_t(t)} holds no PORTFOLIO row and no fault excuses it"
            for t in self.unexcused
        ]
        return out


def _t(t: datetime) -> str:
    return t.isoformat(timespec="microseconds")


def slot_of(ts: datetime, interval_us: int) -> tuple[int, bool]:
    """(nearest grid slot index, whether `ts` lies on it)."""
    us = (ts - EPOCH) // MICROSECOND
    k = (us + interval_us // 2) // interval_us
    return k, abs(us - k * interval_us) <= GRID_TOLERANCE_US


def grid(
    rows: Sequence[tuple[datetime, int]],
    interval_s: float,
    excuses: Sequence[Excuse | None],
) -> Grid:
    """Judge `(timestamp, row count)` pairs against the grid; `excuses[i]` is fault i's, if any.

    A gap is credited to the first fault during which it opened; its slots past that fault's
    recovery bound stay unexcused.
    """
    out = Grid(interval_s)
    interval_us = round(interval_s * 1_000_000)
    filled: set[int] = set()
    for ts, n in rows:
        out.rows += n
        k, on_grid = slot_of(ts, interval_us)
        if not on_grid:
            out.off_grid.append(ts)
            continue
        if n > 1 or k in filled:
            out.duplicated.append(ts)
        filled.add(k)
    if not filled:
        return out
    lo, hi = min(filled), max(filled)
    out.first, out.last = _at(lo, interval_us), _at(hi, interval_us)
    out.slots = hi - lo + 1
    for gap in _gaps(filled, lo, hi):
        times = [_at(k, interval_us) for k in gap]
        owner = next(
            (
                (i, e)
                for i, e in enumerate(excuses)
                if e is not None and e.start <= times[0] <= e.onset
            ),
            None,
        )
        for t in times:
            if owner is not None and t <= owner[1].until:
                out.excused.setdefault(owner[0], []).append(t)
            else:
                out.unexcused.append(t)
    return out


def _gaps(filled: set[int], lo: int, hi: int) -> list[list[int]]:
    """The runs of empty slots between `lo` and `hi`."""
    gaps: list[list[int]] = []
    for k in range(lo, hi + 1):
        if k in filled:
            continue
        if gaps and gaps[-1][-1] == k - 1:
            gaps[-1].append(k)
        else:
            gaps.append([k])
    return gaps


def _at(k: int, interval_us: int) -> datetime:
    return EPOCH + k * interval_us * MICROSECOND


def match(candidates: Sequence[Sequence[int]]) -> list[int | None]:
    """Give each fault its own row: `candidates[i]` are the row ids fault i may claim.

    A maximum bipartite matching (augmenting paths), so a row claimed by an earlier fault is
    moved when that fault has another one; `None` where a fault is left without a row.
    """
    owner: dict[int, int] = {}  # row id -> fault index

    def claim(i: int, seen: set[int]) -> bool:
        for row in candidates[i]:
            if row in seen:
                continue
            seen.add(row)
            if row not in owner or claim(owner[row], seen):
                owner[row] = i
                return True
        return False

    for i in range(len(candidates)):
        claim(i, set())
    got: list[int | None] = [None] * len(candidates)
    for row, i in owner.items():
        got[i] = row
    return got

"""What the operator hears about the lines: the log line and status fields (in use, budget,
rotation time), and the audit rows: an ERROR once when one rotation cannot fit within the Greeks'
maximum age, a WARN once per lowering of the working budget by error 101, one row per round of
revived feeds."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from collector.lines.schedule import LineStats

log = logging.getLogger(__name__)

LOG_EVERY_S = 60.0
Report = Callable[[str, str, int | None], None]  # reason, api_logs status, code


class LineReport:
    def __init__(self, max_age_s: float, report: Report) -> None:
        self.max_age_s = max_age_s
        self._report = report
        self._revived: list[str] = []
        self._unfit = False
        self._last: LineStats | None = None
        self._logged_at: datetime | None = None
        self._lowered_from: int | None = None

    def lowered(self, before: int) -> None:
        """Error 101 lowered the working budget; told once per burst, at the next tick."""
        if self._lowered_from is None:
            self._lowered_from = before

    def _tell_lowered(self, stats: LineStats) -> None:
        before, self._lowered_from = self._lowered_from, None
        self._report(
            f"error 101 (max number of tickers reached) with {stats.in_use} line(s) held: "
            f"working line budget lowered from {before} to {stats.working} (IB_MARKET_DATA_LINES"
            f"={stats.budget}); the account's other sessions use the rest. Rotating within it; "
            "one more line is tried later",
            "WARN",
            101,
        )

    def revived(self, label: str) -> None:
        self._revived.append(label)

    def tick(self, stats: LineStats, now: datetime) -> None:
        if self._lowered_from is not None:
            self._tell_lowered(stats)
        if self._revived:
            names = ", ".join(sorted(self._revived)[:20])
            more = len(self._revived) - 20
            self._report(
                f"revived {len(self._revived)} silent market-data feed(s) (live, no new data "
                f"for too long while connected): cancelled and requested again: {names}"
                + (f" and {more} more" if more > 0 else ""),
                "WARN",
                None,
            )
            self._revived.clear()
        unfit = not stats.fits(self.max_age_s)
        if unfit and not self._unfit:
            self._report(
                f"{stats.wanted} contracts need market data but only {stats.working} line(s) "
                f"may be held (IB_MARKET_DATA_LINES={stats.budget}): one rotation takes about "
                f"{stats.rotation_s:.0f} s, more than BRIDGE_GREEKS_MAX_AGE_S={self.max_age_s:g}"
                " s, so some legs will be left out: raise IB_MARKET_DATA_LINES or "
                "BRIDGE_GREEKS_MAX_AGE_S",
                "ERROR",
                None,
            )
        self._unfit = unfit
        last, self._last = self._last, stats
        changed = last is None or (last.rotating, last.working) != (stats.rotating, stats.working)
        due = self._logged_at is None or (now - self._logged_at).total_seconds() >= LOG_EVERY_S
        if changed or (stats.rotating and due):
            self._logged_at = now
            log.info(
                "market_data_lines in_use=%d working=%d budget=%d wanted=%d rotating=%s "
                "rotation_s=%.1f oldest_s=%s",
                stats.in_use,
                stats.working,
                stats.budget,
                stats.wanted,
                stats.rotating,
                stats.rotation_s,
                "" if stats.oldest_s is None else f"{stats.oldest_s:.1f}",
            )

    def status(self) -> dict[str, str]:
        s = self._last
        if s is None:
            return {}
        return {
            "lines_in_use": str(s.in_use),
            "lines_budget": str(s.budget),
            "lines_working": str(s.working),
            "lines_wanted": str(s.wanted),
            "rotating": "1" if s.rotating else "0",
            "rotation_s": f"{s.rotation_s:.1f}",
        }

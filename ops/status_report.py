"""What `bridge status` knows (`Report`) and its thresholds; gathered by `ops.status_gather`,
classified and shown by `ops.status`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from ops.status_writers import WriterView

HEALTHY, DEGRADED, DOWN = "healthy", "degraded", "down"
EXIT_CODES = {HEALTHY: 0, DEGRADED: 1, DOWN: 2}
BACKLOG_LIMIT = 100
MIN_STALE_S = 15.0
UNDELIVERED_SCAN_MAX = 10_000
TIMEOUT_S = 3.0


def stale_after_s(poll_interval_s: float) -> float:
    return max(3.0 * poll_interval_s, MIN_STALE_S)


@dataclass
class Report:
    """Everything `bridge status` shows; None means "unknown" (the source was not reachable)."""

    mode: str
    prefix: str
    now: datetime
    stale_s: float
    redis_error: str | None = None
    link: str | None = None
    link_since: str | None = None
    link_reason: str = ""
    market_data: dict[str, str] = field(default_factory=dict)  # lines and data types in use
    heartbeat_age_s: float | None = None
    last_tick_age_s: float | None = None
    streams: dict[str, int] = field(default_factory=dict)
    pending_by_consumer: dict[str, dict[str, int]] = field(default_factory=dict)
    undelivered: dict[str, int] = field(default_factory=dict)
    dead_letters: int | None = None
    writer_alive: bool | None = None  # any writer
    writers: dict[str, WriterView] = field(default_factory=dict)  # by consumer name
    breaker: str = "unknown"
    breaker_since: str = ""
    breaker_reason: str = ""
    buffer_rows: int | None = None
    buffer_bytes: int | None = None
    buffer_path: str = ""
    db_error: str | None = None
    last_row_ts: str | None = None
    last_row_age_s: float | None = None
    accounts: dict[str, float] = field(default_factory=dict)  # account -> newest row's age, s
    supervisor_url: str = ""
    supervisor_error: str | None = None
    processes: dict[str, str] = field(default_factory=dict)
    watchdog: dict[str, str] = field(default_factory=dict)

    @property
    def pending(self) -> int:
        return sum(n for by in self.pending_by_consumer.values() for n in by.values())

    @property
    def backlog(self) -> int:
        return self.pending + sum(self.undelivered.values())

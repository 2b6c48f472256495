"""The writer's circuit breaker: closed (rows go to PostgreSQL) or open (rows go to the buffer).

A pure state machine: the caller passes the monotonic time, so tests drive it without sleeping.
Opened by a connection-level failure; while open a flush is due every `retry_s`; a successful
flush closes it. A data error never touches it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"


@dataclass
class Breaker:
    retry_s: float
    state: State = State.CLOSED
    since: datetime | None = None  # wall-clock time of the last change, for the operator
    reason: str = ""
    failed_retries: int = 0
    _next_retry: float = 0.0  # monotonic

    @property
    def is_open(self) -> bool:
        return self.state is State.OPEN

    def open(self, reason: str, *, now: datetime, mono: float) -> bool:
        """Open (or stay open); True when this call changed the state."""
        changed = self.state is State.CLOSED
        if changed:
            self.state = State.OPEN
            self.since = now
            self.failed_retries = 0
        self.reason = reason
        self._next_retry = mono + self.retry_s
        return changed

    def retry_failed(self, reason: str, *, mono: float) -> None:
        self.failed_retries += 1
        self.reason = reason
        self._next_retry = mono + self.retry_s

    def retry_due(self, mono: float) -> bool:
        return self.state is State.OPEN and mono >= self._next_retry

    def seconds_to_retry(self, mono: float) -> float:
        return max(self._next_retry - mono, 0.0) if self.is_open else 0.0

    def close(self, *, now: datetime) -> bool:
        changed = self.state is State.OPEN
        if changed:
            self.state = State.CLOSED
            self.since = now
            self.reason = ""
            self.failed_retries = 0
        return changed

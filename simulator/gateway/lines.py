"""The account's market-data lines: how many tickers may stream at once, and what was asked.

IB sells an account a number of market-data lines shared by all of its sessions (the API clients
and the trader's own screens). A streaming subscription holds a line until it is cancelled; a
snapshot holds one only while it is answered. A request when every line is taken is refused with
error 101 and nothing is subscribed. The open count is the simulator's to give (it knows the
sessions); here only the rule and the counters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class LineBook:
    """The limit (None: unlimited), the lines the account's other sessions use, and counters:
    `max_open` (high-water mark of open lines, others included), `refused` (101s sent),
    `requests` (reqMktData received), `cancels` (cancelMktData received)."""

    limit: int | None = None
    others: int = 0
    max_open: int = 0
    refused: int = 0
    requests: int = 0
    cancels: int = 0

    def full(self, open_now: int) -> bool:
        """True when a new request must be refused (`open_now` counts the others too)."""
        return self.limit is not None and open_now >= self.limit

    def seen(self, open_now: int) -> None:
        """Record a moment with `open_now` lines open (raises the high-water mark)."""
        self.max_open = max(self.max_open, open_now)

    def set_limit(self, limit: int | None) -> None:
        if limit is not None and limit < 0:
            raise ValueError("the line limit cannot be negative")
        self.limit = limit

    def set_others(self, others: int, open_without_others: int) -> None:
        if others < 0:
            raise ValueError("the other sessions' lines cannot be negative")
        self.others = others
        self.seen(open_without_others + others)

    def reset(self, open_now: int) -> None:
        """Zero the counters; the high-water mark restarts from what is open now."""
        self.refused = self.requests = self.cancels = 0
        self.max_open = open_now

    def as_dict(self, open_now: int) -> dict[str, Any]:
        return {
            "limit": self.limit,
            "others": self.others,
            "open": open_now,
            "max_open": self.max_open,
            "refused": self.refused,
            "requests": self.requests,
            "cancels": self.cancels,
        }

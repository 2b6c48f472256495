"""Feeds that die quietly: which streaming requests to cancel and make again (pure).

A market-data farm blip can leave a request open but silent while the link looks healthy. A
contract whose data has not changed for `stall_s` while its data is live is due for a revival
(cancel, request again). A contract that goes quiet again right after its revival is quiet for a
reason (a closed market, a contract that does not trade): its next revival waits twice as long,
and the wait goes back to `stall_s` once its data moves by itself again.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

MAX_BACKOFF = 64  # the longest wait is 64 x stall_s


@dataclass(slots=True)
class _Feed:
    since: float  # the request (or revival) time
    last: float  # the last data update (or `since`)
    updates: int = 0  # updates since `since`
    backoff: int = 1


class Revival(Generic[K]):
    def __init__(self, stall_s: float) -> None:
        self.stall_s = stall_s
        self._feeds: dict[K, _Feed] = {}

    def requested(self, key: K, now: float) -> None:
        """A new request for `key` (not a revival): its clock starts, its back-off is kept."""
        feed = self._feeds.get(key)
        backoff = feed.backoff if feed is not None else 1
        self._feeds[key] = _Feed(now, now, 0, backoff)

    def updated(self, key: K, now: float) -> None:
        feed = self._feeds.get(key)
        if feed is None:
            return
        feed.last = now
        feed.updates += 1
        if feed.updates >= 2:  # moved after the first answer: alive by itself
            feed.backoff = 1

    def dropped(self, key: K) -> None:
        self._feeds.pop(key, None)

    def due(self, live: Iterable[K], now: float) -> list[K]:
        """The streaming contracts with live data that have been silent too long. The caller
        revives them now (each is marked as revived)."""
        out: list[K] = []
        for key in live:
            feed = self._feeds.get(key)
            if feed is None or now - feed.last < self.stall_s * feed.backoff:
                continue
            out.append(key)
            # not moved since its (re)request, beyond the first answer: quiet for a reason
            backoff = min(feed.backoff * 2, MAX_BACKOFF) if feed.updates <= 1 else feed.backoff
            self._feeds[key] = _Feed(now, now, 0, backoff)
        return out

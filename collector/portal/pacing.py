"""Request pacing below the Client Portal gateway's limits, and back-off after a 429.

Limits (IBKR's Client Portal API pacing rules): 10 requests/s overall through the CP gateway;
/portfolio/accounts 1 per 5 s; /tickle 1 per s; /iserver/marketdata/snapshot 10 per s;
/iserver/account/pnl/partitioned 1 per 5 s. We keep a margin under each (sliding windows
measured when a request is sent). A 429 puts every request behind a capped exponential back-off
with jitter (the gateway may keep a violator in a penalty box for minutes, so hammering it would
only extend the outage).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

GLOBAL_PER_S = 8
RESERVED_FOR_TICKS = 3
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 60.0


@dataclass(frozen=True, slots=True)
class Limit:
    count: int
    window_s: float


ENDPOINT_LIMITS: dict[str, Limit] = {
    "/portfolio/accounts": Limit(1, 5.5),
    "/portfolio/subaccounts": Limit(1, 5.5),
    "/tickle": Limit(1, 1.1),
    "/iserver/marketdata/snapshot": Limit(8, 1.0),
    "/iserver/account/pnl/partitioned": Limit(1, 5.5),
    "/sso/validate": Limit(1, 61.0),
}


def endpoint_of(path: str) -> str:
    """The pacing class of a path: the limited endpoint it starts with, else the path itself.

    Only the endpoints of `ENDPOINT_LIMITS` have a window of their own; any other path (e.g.
    /portfolio/DU1/positions/0, which IBKR does not limit by itself) is paced by the global
    window alone, so its class needs no grouping by account or page."""
    for known in ENDPOINT_LIMITS:
        if path.startswith(known):
            return known
    return path


class _Window:
    def __init__(self, limit: Limit) -> None:
        self.limit = limit
        self.sent: deque[float] = deque()

    def wait_s(self, now: float, reserve: int = 0) -> float:
        """0 when one more request fits (keeping `reserve` slots free), else the wait."""
        while self.sent and now - self.sent[0] >= self.limit.window_s:
            self.sent.popleft()
        allowed = max(1, self.limit.count - reserve)
        if len(self.sent) < allowed:
            return 0.0
        return self.sent[len(self.sent) - allowed] + self.limit.window_s - now

    def record(self, now: float) -> None:
        self.sent.append(now)


class Pacer:
    def __init__(
        self,
        global_per_s: int = GLOBAL_PER_S,
        limits: dict[str, Limit] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        backoff_base_s: float = BACKOFF_BASE_S,
        backoff_cap_s: float = BACKOFF_CAP_S,
    ) -> None:
        self.clock = clock
        self._global = _Window(Limit(global_per_s, 1.0))
        self._limits = ENDPOINT_LIMITS if limits is None else limits
        self._windows: dict[str, _Window] = {}
        self._lock = asyncio.Lock()
        self.blocked_until = 0.0
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.strikes = 0
        self.sent = 0
        self.rate_limited = 0

    def _window(self, endpoint: str) -> _Window | None:
        limit = self._limits.get(endpoint)
        if limit is None:
            return None
        return self._windows.setdefault(endpoint, _Window(limit))

    def delay_s(self, path: str, *, background: bool = False) -> float:
        """How long a request to `path` would have to wait now (0 = it may go).

        Background requests (positions, summary, tickle) leave `RESERVED_FOR_TICKS` slots of
        the global window to the ticks' snapshot calls, so they never delay a tick.
        """
        now = self.clock()
        window = self._window(endpoint_of(path))
        reserve = RESERVED_FOR_TICKS if background else 0
        waits = [self.blocked_until - now, self._global.wait_s(now, reserve)]
        if window is not None:
            waits.append(window.wait_s(now))
        return float(max(0.0, *waits))

    async def acquire(self, path: str, *, background: bool = False) -> None:
        """Wait until a request to `path` is within every limit, then count it as sent.

        Waiting happens outside the lock: a background request waiting for its slot does not
        hold up a tick's request that may go now.
        """
        for _ in range(100_000):
            async with self._lock:
                delay = self.delay_s(path, background=background)
                if delay <= 0:
                    now = self.clock()
                    self._global.record(now)
                    window = self._window(endpoint_of(path))
                    if window is not None:
                        window.record(now)
                    self.sent += 1
                    return
            await asyncio.sleep(max(delay, 0.005))
        raise RuntimeError(f"pacer: no slot for {path}")  # unreachable in practice

    def throttled(self, retry_after_s: float | None = None) -> float:
        """A 429 arrived: block everything for a growing, jittered delay; returns it."""
        self.strikes += 1
        self.rate_limited += 1
        delay: float = min(self.backoff_cap_s, self.backoff_base_s * 2.0 ** (self.strikes - 1))
        delay = delay * random.uniform(0.8, 1.2)
        if retry_after_s is not None:
            delay = max(delay, retry_after_s)
        self.blocked_until = max(self.blocked_until, self.clock() + delay)
        return delay

    def succeeded(self) -> None:
        self.strikes = 0

"""The wall-clock tick grid: no drift, no stacking.

Tick k fires at the k-th multiple of `interval_s` since the epoch (`shared.clock.next_grid_time`),
so hours of ticks never drift. A tick gets until (just before) the next grid instant to finish;
one still running then is cancelled and reported (`on_overrun`). Grid instants that passed while
a tick ran (or while the process was descheduled) are reported as missed (`on_missed`), never
run late one after another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from shared.clock import next_grid_time, utcnow

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
Sleep = Callable[[float], Awaitable[None]]
TickFn = Callable[[datetime], Awaitable[None]]
MissedFn = Callable[[list[datetime]], Awaitable[None]]
OverrunFn = Callable[[datetime], Awaitable[None]]


class GridTicker:
    def __init__(
        self,
        interval_s: float,
        *,
        clock: Clock = utcnow,
        sleep: Sleep | None = None,
        max_ticks: int | None = None,
    ) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self._sleep = sleep
        self.max_ticks = max_ticks  # bound for tests; None in production
        self.ticks = 0
        self.missed = 0
        self.overruns = 0

    async def _wait(self, delay_s: float, stop: asyncio.Event) -> None:
        if delay_s <= 0:
            return
        if self._sleep is not None:
            await self._sleep(delay_s)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay_s)

    async def run(
        self,
        on_tick: TickFn,
        stop: asyncio.Event,
        *,
        on_missed: MissedFn | None = None,
        on_overrun: OverrunFn | None = None,
    ) -> None:
        """Tick until `stop` is set (the tick in hand is finished, never cut by `stop`)."""
        step = timedelta(seconds=self.interval_s)
        due = next_grid_time(self.clock(), self.interval_s)
        while not stop.is_set():
            if self.max_ticks is not None and self.ticks >= self.max_ticks:
                return
            await self._wait((due - self.clock()).total_seconds(), stop)
            if stop.is_set():
                return
            # finish a little before the next grid instant, so that one can run on time
            margin_s = min(0.1 * self.interval_s, 0.25)
            budget = (due + step - self.clock()).total_seconds() - margin_s
            self.ticks += 1
            try:
                async with asyncio.timeout(max(budget, 0.0)):
                    await on_tick(due)
            except TimeoutError:
                self.overruns += 1
                log.warning(
                    "tick_overrun tick %s did not finish within %.3f s: cancelled",
                    due.isoformat(),
                    self.interval_s,
                )
                if on_overrun is not None:
                    await on_overrun(due)
            after = next_grid_time(self.clock(), self.interval_s)
            missed: list[datetime] = []
            t = due + step
            while t < after and len(missed) < 100_000:
                missed.append(t)
                t += step
            if missed:
                self.missed += len(missed)
                log.warning(
                    "ticks_missed %d grid tick(s) skipped after %s (first %s)",
                    len(missed),
                    due.isoformat(),
                    missed[0].isoformat(),
                )
                if on_missed is not None:
                    await on_missed(missed)
            due = after

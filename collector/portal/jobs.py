"""The PORTAL transport's background jobs: /tickle, the positions, the summaries, the P&L, and the
market-data rounds while rotating.

They run beside the ticks, so a slow gateway delays only them, and a tick cut at its deadline
does not restart them from scratch. A job's failure surfaces in `reap` (called by the ticks):
passing trouble (429, an answer we cannot use) is logged and the job runs again when next due;
a lost session or an unreachable gateway is raised, so the link state changes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from datetime import datetime
from typing import Any

from collector.portal.client import BACKGROUND, BadAnswer, RateLimited
from shared.clock import age_s

log = logging.getLogger(__name__)

Job = Callable[[datetime], Coroutine[Any, Any, None]]


class Jobs:
    def __init__(self) -> None:
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.tasks

    def get(self, name: str) -> asyncio.Task[None] | None:
        return self.tasks.get(name)

    def start(self, name: str, job: Job, now: datetime) -> None:
        self.tasks[name] = asyncio.create_task(_in_background(job, now), name=f"portal-{name}")

    def start_due(
        self, now: datetime, due: Mapping[str, tuple[datetime | None, float, Job]]
    ) -> None:
        """Start each job (name -> when it last ran, every how many seconds, the job) that is
        due and not running."""
        for name, (last, every_s, job) in due.items():
            age = age_s(last, now)
            if name in self.tasks or (age is not None and age < every_s):
                continue
            self.start(name, job, now)

    def reap(self) -> None:
        """Forget finished jobs; raise the first that lost the session or link."""
        failure: BaseException | None = None
        for name, task in list(self.tasks.items()):
            if not task.done():
                continue
            del self.tasks[name]
            if task.cancelled():
                continue
            exc = task.exception()
            if isinstance(exc, RateLimited | BadAnswer):
                log.warning("portal_background_failed %s: %s", name, exc)
            elif exc is not None and failure is None:
                failure = exc
            elif exc is not None:
                log.info("portal_background_failed %s: %r", name, exc)
        if failure is not None:
            raise failure

    async def stop(self) -> None:
        tasks = list(self.tasks.values())
        self.tasks.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


async def _in_background(job: Job, now: datetime) -> None:
    """The job's coroutine is made here, so a task cancelled before it starts leaves none behind
    never awaited."""
    BACKGROUND.set(True)  # this task's own context: its requests yield to the ticks'
    await job(now)

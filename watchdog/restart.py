"""The watchdog's restart of a collector whose heartbeat went stale, through supervisord.

Each reason it cannot (no supervisord configured, supervisord unreachable, the process stopped
by an operator) is said once in `api_logs`, not at every check; a fresh heartbeat resets that.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from watchdog.redis_io import WatchdogRedis
from watchdog.supervisor import (
    NotRestarted,
    RestartFailed,
    SupervisorClient,
    SupervisorUnavailable,
)

log = logging.getLogger(__name__)

PublishState = Callable[[str, str], Awaitable[None]]


class CollectorRestart:
    def __init__(
        self, supervisor: SupervisorClient, process: str, io: WatchdogRedis, publish: PublishState
    ) -> None:
        self.supervisor = supervisor
        self.process = process
        self.io = io
        self.publish = publish
        self._said_no_supervisor = False
        self._said_not_running = ""  # the supervisord state last reported (not RUNNING)

    def beat_seen(self) -> None:
        """The collector beats again: a later trouble is worth saying again."""
        self._said_no_supervisor = False
        self._said_not_running = ""

    async def run(self, reason: str, restarted: Callable[[], None]) -> None:
        """Restart the collector; `restarted()` once supervisord has acted (or failed to)."""
        if not self.supervisor.configured:
            if not self._said_no_supervisor:
                self._said_no_supervisor = True
                await self.io.api_log(
                    "WARN",
                    f"{reason}; not running under supervisord "
                    "(BRIDGE_SUPERVISOR_URL not set): cannot restart the collector; "
                    "still watching",
                )
            await self.publish("collector_stale", reason)
            return
        await self.publish("restarting", reason)
        text = (
            f"{reason}: restarting {self.process} through supervisord at {self.supervisor.where()}"
        )
        if self._said_no_supervisor:  # unreachable last time, already said: try quietly
            log.info("watchdog_restart_retry %s", text)
        else:
            await self.io.api_log("WARN", text)
        try:
            result = await self.supervisor.restart()
        except SupervisorUnavailable as exc:
            if not self._said_no_supervisor:
                self._said_no_supervisor = True
                await self.io.api_log(
                    "WARN",
                    f"cannot restart the collector: not reachable under "
                    f"supervisord ({exc}); still watching",
                )
            await self.publish("collector_stale", reason)
            return
        except NotRestarted as exc:
            if exc.state != self._said_not_running:
                self._said_not_running = exc.state
                await self.io.api_log(
                    "WARN",
                    f"collector {self.process} not restarted: supervisord "
                    f"reports it {exc} (stopped by an operator, or being started "
                    f"by supervisord); still watching",
                )
            await self.publish("collector_stale", f"{reason}; {exc}")
            return
        except RestartFailed as exc:
            restarted()
            await self.io.api_log(
                "ERROR", f"restart of {self.process} through supervisord failed: {exc}"
            )
            return
        restarted()
        await self.io.api_log(
            "INFO",
            f"collector {self.process} restarted through supervisord "
            f"(pid {result.pid_before} -> {result.pid_after}, "
            f"{result.state_after})",
        )
        await self.publish("restarted", reason)

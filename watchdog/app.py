"""The watchdog loop: observe the collector in Redis, decide (watchdog.policy), act.

Wakes up
- every `watchdog_interval_s` (the periodic check; it also starts a new round after a spent one),
- at once on a link-down event on `link_events` (XREAD BLOCK of at most a second), and
- when a pause it ordered for the nightly gateway restart ends (00:05 ET).

Acts only through Redis (docs/CONTRACTS.md): `reconnect` / `reauth` / `pause` commands on
`control`, the `pause_until` key, rows on `api_logs`, its state in the `watchdog` hash, and, for
a collector whose heartbeat went stale, a restart through supervisord's XML-RPC interface.
Every decision is one log line (event name `watchdog_*`) and, when it acts, an `api_logs` row.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

import redis.asyncio as aioredis

from shared import clock as shared_clock
from shared.config import Settings
from shared.names import Keys
from watchdog.policy import (
    CONNECTED,
    DISCONNECTED,
    UNAUTHENTICATED,
    Action,
    Decision,
    Limits,
    Memory,
    Observation,
    Round,
    Trigger,
    decide,
    heartbeat_stale,
    portal_warnings,
)
from watchdog.redis_io import REDIS_DOWN, WatchdogRedis
from watchdog.restart import CollectorRestart
from watchdog.schedule import eastern_text, round_delays_s
from watchdog.supervisor import SupervisorClient

log = logging.getLogger(__name__)

EVENT_BLOCK_MAX_S = 1.0  # a link-down event is seen within this long
ANSWER_MARGIN_S = 10.0  # the collector bounds a connect at connect timeout + 5 s
REDIS_BACKOFF_CAP_S = 5.0
TRIGGER_STATES = (DISCONNECTED, UNAUTHENTICATED)


def _system_clock() -> datetime:
    """shared.clock.utcnow, looked up at each call (tests may replace it)."""
    return shared_clock.utcnow()


class Stopping(Exception):
    """SIGTERM arrived while waiting: leave the round without reporting a failure."""


class Watchdog:
    def __init__(
        self,
        settings: Settings,
        client: aioredis.Redis,
        *,
        clock: Callable[[], datetime] | None = None,
        rand: Callable[[], float] = random.random,
        supervisor: SupervisorClient | None = None,
        answer_timeout_s: float | None = None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.keys = Keys(settings.redis_prefix)
        self.mode = settings.ib_api_mode
        # read through the module at call time, so tests that replace shared.clock.utcnow work
        self.clock = clock or _system_clock
        self.rand = rand
        self.supervisor = supervisor or SupervisorClient(
            settings.supervisor_url, settings.collector_process
        )
        self.answer_timeout_s = (
            answer_timeout_s
            if answer_timeout_s is not None
            else settings.ib_connect_timeout_s + ANSWER_MARGIN_S
        )
        self.limits = Limits(
            mode=self.mode,
            heartbeat_ttl_s=settings.heartbeat_ttl_s,
            restart_grace_s=settings.heartbeat_ttl_s + settings.ib_connect_timeout_s + 10.0,
        )
        self.memory = Memory(started_at=self.clock())
        self.round_number = 0
        self.io = WatchdogRedis(client, self.keys, self.mode, self.clock)
        self.restarter = CollectorRestart(
            self.supervisor, settings.collector_process, self.io, self.publish_state
        )
        self.stop = asyncio.Event()
        self._last_logged: tuple[Action, str] | None = None
        self._portal_warned: set[str] = set()
        self._redis_down_since: float | None = None

    # ---- output ------------------------------------------------------------------------------
    async def api_log(self, status: str, message: str) -> None:
        await self.io.api_log(status, message)

    async def publish_state(self, decision: str, reason: str, attempt: int = 0) -> None:
        pause_until = self.memory.pause_until
        await self.io.publish_state(
            {
                "decision": decision,
                "reason": reason,
                "updated": self.clock().isoformat(),
                "round": str(self.round_number),
                "attempt": str(attempt),
                "mode": self.mode,
                "pause_until": pause_until.isoformat() if pause_until else "",
            }
        )

    def _log_decision(self, decision: Decision, trigger: Trigger) -> None:
        key = (
            decision.action,
            decision.reason if decision.action != Action.WAIT else str(decision.until),
        )
        if key == self._last_logged:
            log.debug("watchdog_decision %s (%s): %s", decision.action, trigger, decision.reason)
            return
        self._last_logged = key
        log.info("watchdog_decision %s (trigger %s): %s", decision.action, trigger, decision.reason)

    # ---- the loop ----------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event | None = None) -> int:
        if stop is not None:
            self.stop = stop
        loop = asyncio.get_running_loop()
        s = self.settings
        log.info(
            "watchdog_started mode=%s interval=%gs retries=%d backoff=%g..%gs ttl=%gs "
            "supervisor=%s process=%s",
            self.mode,
            s.watchdog_interval_s,
            s.reconnect_retries,
            s.backoff_base_s,
            s.backoff_cap_s,
            s.heartbeat_ttl_s,
            self.supervisor.where(),
            s.collector_process,
        )
        await self.api_log(
            "INFO",
            f"watchdog started ({self.mode}, checks every "
            f"{s.watchdog_interval_s:g} s, {s.reconnect_retries} retries)",
        )
        next_check = loop.time()
        redis_backoff = 0.2
        while not self.stop.is_set():
            try:
                next_check = await self._step(next_check)
            except Stopping:
                break
            except REDIS_DOWN as exc:
                if self._redis_down_since is None:
                    self._redis_down_since = loop.time()
                    log.error("watchdog_redis_down %r: retrying with back-off", exc)
                try:
                    await self._sleep(redis_backoff)
                except Stopping:
                    break
                redis_backoff = min(redis_backoff * 2, REDIS_BACKOFF_CAP_S, s.watchdog_interval_s)
                continue
            if self._redis_down_since is not None:
                log.warning(
                    "watchdog_redis_back after %.1f s", loop.time() - self._redis_down_since
                )
                self._redis_down_since = None
            redis_backoff = 0.2
        log.info("watchdog_stopped")
        await self.publish_state("stopped", "watchdog stopped")
        return 0

    async def _step(self, next_check: float) -> float:
        """One turn: the periodic check if due, else wait for events (bounded); returns the
        loop time of the next periodic check."""
        loop = asyncio.get_running_loop()
        if loop.time() >= next_check or self._pause_over():
            self.memory = replace(self.memory, exhausted=False)
            await self.check(Trigger.CHECK)
            return loop.time() + self.settings.watchdog_interval_s
        wait_s = min(next_check - loop.time(), EVENT_BLOCK_MAX_S)
        if self.memory.pause_until is not None:
            left = (self.memory.pause_until - self.clock()).total_seconds()
            wait_s = min(wait_s, max(left, 0.0))
        events = await self.io.read_events(max(wait_s, 0.001))
        for event in events:
            if event.get("state") in TRIGGER_STATES and not event.get("cmd_id"):
                log.info("watchdog_link_event %s: %s", event.get("state"), event.get("reason"))
                await self.check(Trigger.EVENT)
                # that was a full check: the next periodic one comes a whole interval later
                return loop.time() + self.settings.watchdog_interval_s
        return next_check

    def _pause_over(self) -> bool:
        until = self.memory.pause_until
        return until is not None and self.clock() >= until

    async def check(self, trigger: Trigger) -> None:
        obs = await self.io.observe()
        now = self.clock()
        self._note_heartbeat(obs, now)
        decision = decide(obs, now, self.memory, self.limits, trigger)
        if self.memory.pause_until is not None and now >= self.memory.pause_until:
            log.info(
                "watchdog_pause_over it is %s, the pause ordered until %s is over",
                eastern_text(now),
                eastern_text(self.memory.pause_until),
            )
            self.memory = replace(self.memory, pause_until=None)
        self._log_decision(decision, trigger)
        if self.mode == "PORTAL":
            await self._portal_warnings(obs)
        match decision.action:
            case Action.NONE:
                if self.memory.exhausted or self.memory.pause_until is not None:
                    self.memory = replace(self.memory, exhausted=False, pause_until=None)
                await self.publish_state("healthy", decision.reason)
            case Action.WAIT:
                await self.publish_state("waiting", decision.reason)
            case Action.PAUSE:
                await self.pause(decision, obs, now)
            case Action.RESTART:
                await self.restart(decision, now)
            case Action.RECONNECT | Action.REAUTH:
                await self.run_round(decision)

    def _note_heartbeat(self, obs: Observation, now: datetime) -> None:
        if not heartbeat_stale(obs):
            if not self.memory.beat_seen or self.memory.beat_absent_since is not None:
                self.memory = replace(self.memory, beat_seen=True, beat_absent_since=None)
            self.restarter.beat_seen()
        elif self.memory.beat_absent_since is None:
            self.memory = replace(self.memory, beat_absent_since=now)

    async def _portal_warnings(self, obs: Observation) -> None:
        current = set(portal_warnings(obs))
        for text in sorted(current - self._portal_warned):
            await self.api_log("WARN", f"gateway session: {text}")
        self._portal_warned = current

    # ---- actions -----------------------------------------------------------------------------
    async def pause(self, decision: Decision, obs: Observation, now: datetime) -> None:
        until = decision.until
        assert until is not None
        await self.io.set_pause(until, now)
        await self.io.send_command("pause", decision.reason, until)
        self.memory = replace(self.memory, pause_until=until, exhausted=False)
        await self.publish_state("paused", decision.reason)
        since = f" (down since {eastern_text(obs.since)})" if obs.since else ""
        await self.api_log(
            "INFO",
            f"link {obs.state} at {eastern_text(now)}{since}, inside the nightly IB Gateway "
            f"restart window 23:40-23:59:59 ET: no reconnect attempt now; collector paused, "
            f"waiting until 00:05 ET ({eastern_text(until)}) to reconnect",
        )

    async def restart(self, decision: Decision, now: datetime) -> None:
        def restarted() -> None:
            self.memory = replace(self.memory, restarted_at=self.clock(), beat_seen=False)

        await self.restarter.run(decision.reason, restarted)

    async def run_round(self, decision: Decision) -> None:
        s = self.settings
        self.round_number += 1
        rnd = Round(
            self.round_number,
            decision.action,
            round_delays_s(s.reconnect_retries, s.backoff_base_s, s.backoff_cap_s, self.rand),
        )
        what = rnd.action.value
        await self.api_log(
            "INFO",
            f"{decision.reason}: {what} round {rnd.number} starts now "
            f"(at {eastern_text(self.clock())}; up to {rnd.total} attempts, back-off "
            + ", ".join(f"{d:.2f}" for d in rnd.delays_s[1:])
            + " s)",
        )
        try:
            while (delay := rnd.next_delay_s()) is not None:
                if delay > 0:
                    await self.publish_state(
                        "backoff", f"next {what} in {delay:.2f} s", rnd.attempts
                    )
                    await self._sleep(delay)
                    obs = await self.io.observe()
                    self._note_heartbeat(obs, self.clock())
                    again = decide(obs, self.clock(), self.memory, self.limits, Trigger.RETRY)
                    if again.action != rnd.action:
                        self._log_decision(again, Trigger.RETRY)
                        await self.api_log(
                            "INFO",
                            f"{what} round {rnd.number} ends after "
                            f"{rnd.attempts} attempt(s): {again.reason}",
                        )
                        if again.action == Action.PAUSE:
                            await self.pause(again, obs, self.clock())
                        return
                number = rnd.begin_attempt()
                await self.publish_state(what, decision.reason, number)
                ok, detail, took_s = await self.attempt(rnd.action, decision.reason)
                wait = f"after {delay:.2f} s back-off" if delay > 0 else "at once"
                if ok:
                    self.memory = replace(self.memory, exhausted=False, pause_until=None)
                    await self.api_log(
                        "INFO",
                        f"{what} {rnd.label()} ({wait}) succeeded in {took_s:.2f} s: {detail}",
                    )
                    await self.publish_state("healthy", f"{what} succeeded", number)
                    return
                rnd.last_error = detail
                await self.api_log(
                    "WARN", f"{what} {rnd.label()} ({wait}) failed after {took_s:.2f} s: {detail}"
                )
        except Stopping:
            log.info("watchdog_round_interrupted round %d: stopping", rnd.number)
            raise
        self.memory = replace(self.memory, exhausted=True)
        await self.api_log(
            "ERROR",
            f"{what} round {rnd.number} failed: all {rnd.total} attempts "
            f"({rnd.total - 1} retries) spent; last error: {rnd.last_error}; a new round "
            f"starts at the next check in {s.watchdog_interval_s:g} s",
        )
        await self.publish_state("retries_spent", rnd.last_error, rnd.attempts)

    async def attempt(self, action: Action, reason: str) -> tuple[bool, str, float]:
        """Send one command and wait (bounded) for the collector's answer with its id:
        (succeeded, what happened, seconds)."""
        loop = asyncio.get_running_loop()
        if self.io.cursor is None:
            await self.io.init_cursor()  # before the command, so its answer cannot be missed
        started = loop.time()
        cmd_id = await self.io.send_command(action.value, reason)
        deadline = started + self.answer_timeout_s
        while True:
            if self.stop.is_set():
                raise Stopping
            left = deadline - loop.time()
            if left <= 0:
                return (
                    False,
                    f"no answer from the collector within "
                    f"{self.answer_timeout_s:g} s (command {cmd_id})",
                    loop.time() - started,
                )
            for event in await self.io.read_events(min(left, EVENT_BLOCK_MAX_S)):
                if event.get("cmd_id") != cmd_id:
                    continue
                state = event.get("state", "")
                why = event.get("reason", "")
                took = loop.time() - started
                if state == CONNECTED:
                    return True, f"link {state} ({why})", took
                code = f" (code {event['code']})" if event.get("code") else ""
                return False, f"link {state}: {why}{code}", took

    async def _sleep(self, delay_s: float) -> None:
        try:
            await asyncio.wait_for(self.stop.wait(), timeout=delay_s)
        except TimeoutError:
            return
        raise Stopping

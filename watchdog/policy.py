"""What the watchdog does about what it observes: pure decisions, no I/O, `now` passed in.

Order of the rules (the first that applies wins):
1. the collector's heartbeat is stale -> restart the collector
   through supervisord, unless the collector was (re)started too recently to have beaten yet
   (no beat seen since the watchdog started or ordered the restart, within the grace), and
   only once the key has stayed absent for `stale_confirm_s` (a restarted Redis has lost it
   until the collector's next beat, within a second).
   Stale means the `heartbeat` key is absent: the collector sets it with a TTL at every beat, so
   Redis expires it TTL seconds after the last one. The value (the beat's time) is only shown,
   never compared with this process's clock: clocks of two processes may differ (and the test
   hook shifts the watchdog's), while the expiry is Redis's own;
2. the link is connected -> nothing to do;
3. a pause we ordered is still running (now < pause_until) -> wait until it ends;
4. SOCKET, link down, Eastern wall time in the nightly reset window -> pause until 00:05 ET;
5. link down right after a round of attempts failed, and the trigger is a link event rather than
   the periodic check -> wait for the next check (a new round starts there: never spins);
6. the collector has not reported a state yet, or is connecting -> wait;
7. PORTAL session unauthenticated -> `reauth`; any other down state -> `reconnect`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from shared.clock import parse_time
from shared.codec import as_text as _text
from watchdog.schedule import eastern_text, in_reset_window, resume_time

CONNECTED = "connected"
CONNECTING = "connecting"
DISCONNECTED = "disconnected"
UNAUTHENTICATED = "unauthenticated"
PAUSED = "paused"
DOWN_STATES = (DISCONNECTED, UNAUTHENTICATED, PAUSED)

KEEPALIVE_WARN_S = 300.0  # PORTAL: no successful /tickle for this long is worth a warning


class Action(enum.StrEnum):
    NONE = "none"  # healthy
    WAIT = "wait"  # nothing to do now (pause running, grace, next check)
    PAUSE = "pause"  # order the collector to pause until `until`
    RECONNECT = "reconnect"
    REAUTH = "reauth"
    RESTART = "restart"  # restart the collector process (supervisord)


class Trigger(enum.StrEnum):
    CHECK = "check"  # the periodic check (or the start)
    EVENT = "event"  # a link-down event from the collector
    RETRY = "retry"  # inside a round, before a retry


def _flag(text: str) -> bool | None:
    low = text.strip().lower()
    if low in ("true", "1", "yes"):
        return True
    if low in ("false", "0", "no"):
        return False
    return None


def _number(text: str) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Observation:
    """The collector as the watchdog sees it in Redis at one instant."""

    state: str | None  # None: no link hash (the collector never reported)
    heartbeat_at: datetime | None  # the beat's time (None: absent or unreadable)
    pause_until: datetime | None = None
    reason: str = ""
    since: datetime | None = None
    authenticated: bool | None = None  # PORTAL extras
    competing: bool | None = None
    keepalive_age_s: float | None = None

    @classmethod
    def from_redis(
        cls,
        link: Mapping[bytes, bytes] | Mapping[str, str],
        heartbeat: bytes | str | None,
        pause_until: bytes | str | None,
    ) -> Observation:
        f = {_text(k): _text(v) for k, v in link.items()}
        return cls(
            state=f.get("state") or None,
            heartbeat_at=parse_time(_text(heartbeat)),
            heartbeat_present=heartbeat is not None,
            pause_until=parse_time(_text(pause_until)),
            reason=f.get("reason", ""),
            since=parse_time(f.get("since", "")),
            authenticated=_flag(f.get("authenticated", "")),
            competing=_flag(f.get("competing", "")),
            keepalive_age_s=_number(f.get("keepalive_age_s", "")),
        )

    heartbeat_present: bool = True  # False: the key is absent (expired or never set)

    def heartbeat_age_s(self, now: datetime) -> float | None:
        if self.heartbeat_at is None:
            return None
        return (now - self.heartbeat_at).total_seconds()


@dataclass(frozen=True, slots=True)
class Limits:
    mode: str  # SOCKET or PORTAL
    heartbeat_ttl_s: float
    restart_grace_s: float  # after a (re)start, how long the collector may go without a beat
    stale_confirm_s: float = 2.0  # the key must stay absent this long (two beat periods)


@dataclass(frozen=True, slots=True)
class Memory:
    """What the watchdog remembers between decisions (the app keeps and updates it)."""

    started_at: datetime  # when the watchdog started watching
    restarted_at: datetime | None = None  # last restart of the collector it ordered
    pause_until: datetime | None = None  # the pause it ordered (also read back from Redis)
    exhausted: bool = False  # the last round spent its retries; cleared by the periodic check
    beat_seen: bool = False  # a fresh heartbeat was seen since the (re)start: no grace left
    beat_absent_since: datetime | None = None  # first observation of the key's absence


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: str
    until: datetime | None = None  # PAUSE / WAIT: until when


def heartbeat_stale(obs: Observation) -> bool:
    """The heartbeat key has expired (or was never set): no beat for its TTL."""
    return not obs.heartbeat_present


def decide(
    obs: Observation,
    now: datetime,
    memory: Memory,
    limits: Limits,
    trigger: Trigger = Trigger.CHECK,
) -> Decision:
    """The one decision for this observation at `now` (see the module docstring)."""
    if heartbeat_stale(obs):
        return _collector_silent(now, memory, limits)
    if obs.state == CONNECTED:
        return Decision(Action.NONE, "link connected")
    pause_until = _latest(memory.pause_until, obs.pause_until)
    if pause_until is not None and now < pause_until:
        return Decision(
            Action.WAIT,
            f"paused for the nightly gateway restart; waiting until {eastern_text(pause_until)}",
            pause_until,
        )
    return _link_not_connected(obs, now, memory, limits, trigger=trigger, pause_until=pause_until)


def _collector_silent(now: datetime, memory: Memory, limits: Limits) -> Decision:
    """No heartbeat: confirm, allow a start-up grace, then restart the collector."""
    absent_since = memory.beat_absent_since or now
    absent_s = (now - absent_since).total_seconds()
    if absent_s < limits.stale_confirm_s:
        # a Redis restart also loses the key until the collector's next beat (1 s)
        return Decision(
            Action.WAIT,
            f"collector heartbeat missing for {absent_s:.1f} s; "
            f"confirming for {limits.stale_confirm_s:g} s",
        )
    last_start = max(memory.started_at, memory.restarted_at or memory.started_at)
    quiet_s = (now - last_start).total_seconds()
    if not memory.beat_seen and quiet_s < limits.restart_grace_s:
        return Decision(
            Action.WAIT,
            f"no collector heartbeat yet; within the {limits.restart_grace_s:g} s start-up grace",
        )
    return Decision(
        Action.RESTART,
        "collector heartbeat stale (no beat for its "
        f"{limits.heartbeat_ttl_s:g} s TTL): collector hung or dead",
    )


def _link_not_connected(  # noqa: PLR0911  one answer per link state, in order of precedence
    obs: Observation,
    now: datetime,
    memory: Memory,
    limits: Limits,
    *,
    trigger: Trigger,
    pause_until: datetime | None,
) -> Decision:
    state = obs.state
    down = state in DOWN_STATES
    if down and limits.mode == "SOCKET" and in_reset_window(now):
        until = resume_time(now)
        return Decision(
            Action.PAUSE,
            f"link {state} at {eastern_text(now)}, inside the nightly reset window "
            f"(23:40:00-23:59:59 ET): no attempt before {eastern_text(until)}",
            until,
        )
    if down and memory.exhausted and trigger == Trigger.EVENT:
        return Decision(Action.WAIT, "retries spent: the next periodic check starts a new round")
    if state is None:
        return Decision(Action.WAIT, "the collector has not published its link state yet")
    if state == CONNECTING:
        return Decision(Action.WAIT, "the collector is connecting")
    if state == UNAUTHENTICATED and limits.mode == "PORTAL":
        why = obs.reason or "no reason"
        return Decision(Action.REAUTH, f"gateway session unauthenticated ({why})")
    if down:
        after_pause = f" (pause ended {eastern_text(pause_until)})" if pause_until else ""
        return Decision(Action.RECONNECT, f"link {state}{after_pause}: {obs.reason or 'no reason'}")
    return Decision(Action.WAIT, f"unknown link state {state!r}")


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def portal_warnings(obs: Observation) -> list[str]:
    """PORTAL session conditions worth one WARN each (when they start): competing session,
    keepalive gone quiet. They do not by themselves trigger a reauth."""
    out: list[str] = []
    if obs.competing:
        out.append("competing brokerage session: another login holds the session")
    if obs.keepalive_age_s is not None and obs.keepalive_age_s > KEEPALIVE_WARN_S:
        out.append(f"no successful keepalive (tickle) for {obs.keepalive_age_s:.0f} s")
    return out


@dataclass
class Round:
    """One round of attempts: the first at once, then `retries` retries with back-off.

    `delays_s[i]` is the pause before attempt i+1. After the last failure the round is spent:
    the caller logs an ERROR and waits for the next periodic check, which starts a new round.
    """

    number: int
    action: Action
    delays_s: list[float]
    attempts: int = 0  # attempts started so far
    last_error: str = ""

    @property
    def total(self) -> int:
        return len(self.delays_s)

    @property
    def spent(self) -> bool:
        return self.attempts >= self.total

    def next_delay_s(self) -> float | None:
        """The back-off before the next attempt, or None when the round is spent."""
        return None if self.spent else self.delays_s[self.attempts]

    def begin_attempt(self) -> int:
        """Count an attempt; its number (1-based)."""
        if self.spent:
            raise RuntimeError(f"round {self.number} is spent")
        self.attempts += 1
        return self.attempts

    def label(self) -> str:
        """`attempt 2/4 (retry 1 of 3) of round 5`."""
        retries = self.total - 1
        retry = f" (retry {self.attempts - 1} of {retries})" if self.attempts > 1 else ""
        return f"attempt {self.attempts}/{self.total}{retry} of round {self.number}"

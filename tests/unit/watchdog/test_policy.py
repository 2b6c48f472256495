"""The watchdog's decisions (pure: an observation, an injected `now`, the memory)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.clock import EASTERN
from watchdog.policy import (
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
from watchdog.schedule import round_delays_s

SOCKET = Limits(mode="SOCKET", heartbeat_ttl_s=20.0, restart_grace_s=40.0)
PORTAL = Limits(mode="PORTAL", heartbeat_ttl_s=20.0, restart_grace_s=40.0)
NOON = datetime(2026, 11, 25, 12, 0, tzinfo=EASTERN)


def et(y: int, mo: int, d: int, h: int, mi: int, s: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=EASTERN)


def obs(
    state: str | None,
    now: datetime,
    *,
    beat_age_s: float | None = 1.0,
    pause_until: datetime | None = None,
    reason: str = "peer closed",
) -> Observation:
    beat = None if beat_age_s is None else now - timedelta(seconds=beat_age_s)
    return Observation(
        state=state,
        heartbeat_at=beat,
        pause_until=pause_until,
        reason=reason,
        heartbeat_present=beat_age_s is not None,
    )


def mem(now: datetime, **kw: object) -> Memory:
    """An hour into watching; a heartbeat absence (if any) noticed 10 s ago."""
    kw.setdefault("beat_absent_since", now - timedelta(seconds=10))
    return Memory(started_at=now - timedelta(hours=1), **kw)  # type: ignore[arg-type]


def test_connected_is_healthy() -> None:
    assert decide(obs("connected", NOON), NOON, mem(NOON), SOCKET).action == Action.NONE


@pytest.mark.parametrize("state", ["disconnected", "paused"])
def test_down_outside_window_reconnects_at_once(state: str) -> None:
    d = decide(obs(state, NOON), NOON, mem(NOON), SOCKET, Trigger.EVENT)
    assert d.action == Action.RECONNECT
    assert "peer closed" in d.reason


@pytest.mark.parametrize(
    ("wall", "action"),
    [
        ((23, 39, 59), Action.RECONNECT),
        ((23, 40, 0), Action.PAUSE),
        ((23, 45, 0), Action.PAUSE),
        ((23, 59, 59), Action.PAUSE),
        ((0, 0, 0), Action.RECONNECT),
        ((0, 4, 59), Action.RECONNECT),
        ((0, 5, 0), Action.RECONNECT),
    ],
)
def test_window_edges_without_a_pause_in_force(wall: tuple[int, int, int], action: Action) -> None:
    now = et(2026, 11, 25, *wall)
    assert decide(obs("disconnected", now), now, mem(now), SOCKET).action == action


def test_drop_in_window_pauses_until_0005_next_day() -> None:
    now = et(2026, 11, 25, 23, 45)
    d = decide(obs("disconnected", now), now, mem(now), SOCKET, Trigger.EVENT)
    assert d.action == Action.PAUSE
    assert d.until == et(2026, 11, 26, 0, 5)
    assert "2026-11-26 00:05:00 EST" in d.reason
    assert "23:45:00" in d.reason


@pytest.mark.parametrize(
    ("start", "until"),
    [
        (et(2026, 3, 8, 23, 45), et(2026, 3, 9, 0, 5)),  # spring-forward day (EDT)
        (et(2026, 3, 7, 23, 45), et(2026, 3, 8, 0, 5)),  # its eve (EST)
        (et(2026, 11, 1, 23, 45), et(2026, 11, 2, 0, 5)),  # fall-back day (EST)
        (et(2026, 10, 31, 23, 45), et(2026, 11, 1, 0, 5)),  # its eve (EDT)
    ],
)
def test_pause_spanning_midnight_on_dst_days(start: datetime, until: datetime) -> None:
    first = decide(obs("disconnected", start), start, mem(start), SOCKET)
    assert first.action == Action.PAUSE
    assert first.until == until
    memory = mem(start, pause_until=first.until)
    for probe in (
        start + timedelta(minutes=5),
        until - timedelta(minutes=5),
        until - timedelta(seconds=1),
    ):
        d = decide(obs("paused", probe), probe, memory, SOCKET)
        assert d.action == Action.WAIT, probe
        assert d.until == until
    # 00:00:00 and 00:04:59 ET: still waiting; 00:05:00 ET: reconnect
    midnight = until.replace(minute=0)
    assert decide(obs("paused", midnight), midnight, memory, SOCKET).action == Action.WAIT
    d = decide(obs("paused", until), until, memory, SOCKET)
    assert d.action == Action.RECONNECT
    assert "pause ended" in d.reason


def test_pause_read_back_from_redis_after_a_watchdog_restart() -> None:
    until = et(2026, 11, 26, 0, 5)
    now = et(2026, 11, 26, 0, 1)  # outside the window, but a pause is in force
    o = obs("paused", now, pause_until=until)
    assert decide(o, now, mem(now), SOCKET).action == Action.WAIT
    o = obs("paused", until, pause_until=until)
    assert decide(o, until, mem(until), SOCKET).action == Action.RECONNECT


def test_connected_during_a_pause_is_healthy() -> None:
    now = et(2026, 11, 25, 23, 50)
    memory = mem(now, pause_until=et(2026, 11, 26, 0, 5))
    assert decide(obs("connected", now), now, memory, SOCKET).action == Action.NONE


def test_window_rule_is_socket_only() -> None:
    now = et(2026, 11, 25, 23, 45)
    assert decide(obs("disconnected", now), now, mem(now), PORTAL).action == Action.RECONNECT


def test_spent_round_waits_for_the_next_check_not_the_next_event() -> None:
    memory = mem(NOON, exhausted=True)
    d = decide(obs("disconnected", NOON), NOON, memory, SOCKET, Trigger.EVENT)
    assert d.action == Action.WAIT
    assert "next periodic check" in d.reason
    assert (
        decide(obs("disconnected", NOON), NOON, memory, SOCKET, Trigger.CHECK).action
        == Action.RECONNECT
    )


def test_spent_round_in_window_still_pauses() -> None:
    now = et(2026, 11, 25, 23, 41)
    memory = mem(now, exhausted=True)
    assert (
        decide(obs("disconnected", now), now, memory, SOCKET, Trigger.EVENT).action == Action.PAUSE
    )


def test_retry_that_crosses_into_the_window_turns_into_a_pause() -> None:
    now = et(2026, 11, 25, 23, 40, 3)  # the round started at 23:39:58
    assert (
        decide(obs("disconnected", now), now, mem(now), SOCKET, Trigger.RETRY).action
        == Action.PAUSE
    )


@pytest.mark.parametrize("state", ["connected", "disconnected", "paused", None])
def test_expired_heartbeat_restarts(state: str | None) -> None:
    d = decide(obs(state, NOON, beat_age_s=None), NOON, mem(NOON), SOCKET)
    assert d.action == Action.RESTART
    assert "stale" in d.reason


def test_present_heartbeat_is_fresh_whatever_its_value_says() -> None:
    # the key's TTL (Redis's clock) decides; the value is another process's clock: a skew of
    # hours (or libfaketime shifting the watchdog's clock) must not cause restarts
    for age in (0.5, 25.0, 7200.0, -3600.0):
        o = obs("connected", NOON, beat_age_s=age)
        assert not heartbeat_stale(o)
        assert decide(o, NOON, mem(NOON), SOCKET).action == Action.NONE
    unreadable = Observation.from_redis({"state": "connected"}, b"garbage", None)
    assert unreadable.heartbeat_at is None
    assert not heartbeat_stale(unreadable)
    absent = Observation.from_redis({"state": "connected"}, None, None)
    assert heartbeat_stale(absent)


def test_stale_heartbeat_takes_priority_over_the_window() -> None:
    now = et(2026, 11, 25, 23, 45)
    d = decide(obs("disconnected", now, beat_age_s=None), now, mem(now), SOCKET)
    assert d.action == Action.RESTART


def test_no_restart_within_grace_after_start_or_restart() -> None:
    just_started = Memory(
        started_at=NOON - timedelta(seconds=10), beat_absent_since=NOON - timedelta(seconds=10)
    )
    d = decide(obs(None, NOON, beat_age_s=None), NOON, just_started, SOCKET)
    assert d == Decision(Action.WAIT, d.reason)
    assert "grace" in d.reason
    restarted = mem(NOON, restarted_at=NOON - timedelta(seconds=39))
    assert decide(obs(None, NOON, beat_age_s=None), NOON, restarted, SOCKET).action == Action.WAIT
    restarted = mem(NOON, restarted_at=NOON - timedelta(seconds=41))
    assert (
        decide(obs(None, NOON, beat_age_s=None), NOON, restarted, SOCKET).action == Action.RESTART
    )


def test_grace_does_not_apply_once_a_beat_was_seen() -> None:
    just_started = Memory(
        started_at=NOON - timedelta(seconds=10),
        beat_seen=True,
        beat_absent_since=NOON - timedelta(seconds=3),
    )
    d = decide(obs("connected", NOON, beat_age_s=None), NOON, just_started, SOCKET)
    assert d.action == Action.RESTART


def test_no_link_state_or_connecting_waits() -> None:
    assert decide(obs(None, NOON), NOON, mem(NOON), SOCKET).action == Action.WAIT
    assert decide(obs("connecting", NOON), NOON, mem(NOON), SOCKET).action == Action.WAIT


def test_portal_unauthenticated_reauths() -> None:
    d = decide(obs("unauthenticated", NOON, reason="401 from /tickle"), NOON, mem(NOON), PORTAL)
    assert d.action == Action.REAUTH
    assert "401" in d.reason


def test_portal_disconnected_reconnects_and_socket_unauthenticated_reconnects() -> None:
    assert decide(obs("disconnected", NOON), NOON, mem(NOON), PORTAL).action == Action.RECONNECT
    assert decide(obs("unauthenticated", NOON), NOON, mem(NOON), SOCKET).action == Action.RECONNECT


def test_portal_reauth_follows_the_round_rules() -> None:
    memory = mem(NOON, exhausted=True)
    o = obs("unauthenticated", NOON)
    assert decide(o, NOON, memory, PORTAL, Trigger.EVENT).action == Action.WAIT
    assert decide(o, NOON, memory, PORTAL, Trigger.CHECK).action == Action.REAUTH


def test_portal_warnings() -> None:
    quiet = Observation.from_redis(
        {
            "state": "connected",
            "authenticated": "true",
            "competing": "false",
            "keepalive_age_s": "30",
        },
        NOON.isoformat(),
        None,
    )
    assert portal_warnings(quiet) == []
    assert quiet.authenticated is True
    bad = Observation.from_redis(
        {b"state": b"connected", b"competing": b"true", b"keepalive_age_s": b"400"}, None, None
    )
    warnings = portal_warnings(bad)
    assert len(warnings) == 2
    assert "competing" in warnings[0]
    assert "400 s" in warnings[1]


def test_observation_from_redis_tolerates_garbage() -> None:
    o = Observation.from_redis(
        {b"state": b"disconnected", b"since": b"not a time"}, b"2026-11-25T12:00:00", b"garbage"
    )  # naive heartbeat
    assert o.state == "disconnected"
    assert o.heartbeat_at is None
    assert o.pause_until is None
    assert o.since is None
    o = Observation.from_redis({}, b"2026-11-25T17:00:00+00:00", b"2026-11-26T05:05:00+00:00")
    assert o.state is None
    assert o.heartbeat_at == datetime(2026, 11, 25, 17, tzinfo=UTC)
    assert o.pause_until == datetime(2026, 11, 26, 5, 5, tzinfo=UTC)


def test_round_has_one_attempt_plus_three_retries_then_is_spent() -> None:
    r = Round(1, Action.RECONNECT, round_delays_s(3, 2.0, 30.0, lambda: 0.0))
    seen: list[tuple[int, float]] = []
    while (delay := r.next_delay_s()) is not None:
        seen.append((r.begin_attempt(), delay))
    assert seen == [(1, 0.0), (2, 2.0), (3, 4.0), (4, 8.0)]
    assert r.spent
    assert r.label() == "attempt 4/4 (retry 3 of 3) of round 1"
    with pytest.raises(RuntimeError):
        r.begin_attempt()


def test_round_label_first_attempt() -> None:
    r = Round(7, Action.REAUTH, [0.0, 0.0])
    r.begin_attempt()
    assert r.label() == "attempt 1/2 of round 7"


def test_new_round_after_a_spent_one_via_the_periodic_check() -> None:
    # round 1 spent -> memory.exhausted; an event does nothing; the check starts round 2
    r1 = Round(1, Action.RECONNECT, [0.0] * 4)
    while r1.next_delay_s() is not None:
        r1.begin_attempt()
    memory = mem(NOON, exhausted=r1.spent)
    o = obs("disconnected", NOON)
    assert decide(o, NOON, memory, SOCKET, Trigger.EVENT).action == Action.WAIT
    later = NOON + timedelta(seconds=30)
    d = decide(obs("disconnected", later), later, memory, SOCKET, Trigger.CHECK)
    assert d.action == Action.RECONNECT


def test_absence_is_confirmed_before_a_restart() -> None:
    # a restarted Redis has lost the key until the collector's next beat: not a hung collector
    o = obs("connected", NOON, beat_age_s=None)
    first = decide(o, NOON, mem(NOON, beat_absent_since=None), SOCKET)
    assert first.action == Action.WAIT
    assert "confirming" in first.reason
    noticed = NOON - timedelta(seconds=1.9)
    assert decide(o, NOON, mem(NOON, beat_absent_since=noticed), SOCKET).action == Action.WAIT
    noticed = NOON - timedelta(seconds=2.0)
    assert decide(o, NOON, mem(NOON, beat_absent_since=noticed), SOCKET).action == Action.RESTART

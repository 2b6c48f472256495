"""Reviving silent feeds (pure): who is due, and no revival loop for a legitimately quiet one."""

from __future__ import annotations

import itertools

from collector.lines.revival import MAX_BACKOFF, Revival


def test_a_feed_silent_past_the_threshold_is_due_once() -> None:
    r: Revival[int] = Revival(stall_s=30.0)
    r.requested(1, 0.0)
    for t in (1.0, 2.0, 3.0):
        r.updated(1, t)
    assert r.due([1], 32.0) == []
    assert r.due([1], 33.0) == [1]
    assert r.due([1], 34.0) == []  # marked revived: its clock restarted


def test_only_live_feeds_are_checked() -> None:
    r: Revival[int] = Revival(stall_s=10.0)
    r.requested(1, 0.0)
    r.requested(2, 0.0)
    assert r.due([2], 100.0) == [2]
    assert r.due([], 100.0) == []


def test_a_feed_that_moves_again_after_its_revival_keeps_the_short_threshold() -> None:
    r: Revival[int] = Revival(stall_s=10.0)
    r.requested(1, 0.0)
    r.updated(1, 0.1)
    r.updated(1, 0.2)
    assert r.due([1], 11.0) == [1]
    r.updated(1, 11.1)  # the answer to the new request
    r.updated(1, 12.0)  # and it moves by itself: alive
    assert r.due([1], 22.0) == [1]


def test_a_feed_quiet_after_its_revival_backs_off_instead_of_looping() -> None:
    r: Revival[int] = Revival(stall_s=10.0)
    r.requested(1, 0.0)
    r.updated(1, 0.1)
    r.updated(1, 0.2)
    times = []
    t = 0.0
    while t < 2000.0:
        if r.due([1], t):
            times.append(t)
            r.updated(1, t + 0.1)  # only the answer to the request, then nothing (market closed)
        t += 1.0
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps == sorted(gaps)
    assert len(times) <= 10  # 11, 22, 43, 84, ... then every 640 s
    assert max(gaps) <= 10.0 * MAX_BACKOFF + 1


def test_a_dropped_contract_is_forgotten() -> None:
    r: Revival[int] = Revival(stall_s=1.0)
    r.requested(1, 0.0)
    r.dropped(1)
    r.updated(1, 0.5)
    assert r.due([1], 100.0) == []

"""The nightly reset window and the back-off schedule (pure, injected `now`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.clock import EASTERN
from watchdog.schedule import (
    JITTER_FRACTION,
    backoff_delay_s,
    eastern_text,
    in_reset_window,
    resume_time,
    round_delays_s,
)


def et(y: int, mo: int, d: int, h: int, mi: int, s: int = 0, us: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, us, tzinfo=EASTERN)


@pytest.mark.parametrize(
    ("wall", "inside"),
    [
        ((23, 39, 59), False),
        ((23, 40, 0), True),
        ((23, 45, 0), True),
        ((23, 59, 59), True),
        ((0, 0, 0), False),
        ((0, 4, 59), False),
        ((0, 5, 0), False),
        ((12, 0, 0), False),
    ],
)
@pytest.mark.parametrize(
    "day", [(2026, 11, 25), (2026, 3, 8), (2026, 11, 1), (2026, 3, 7), (2026, 10, 31), (2026, 7, 1)]
)
def test_window_edges(day: tuple[int, int, int], wall: tuple[int, int, int], inside: bool) -> None:
    assert in_reset_window(et(*day, *wall)) is inside


def test_window_last_microsecond_and_first_after() -> None:
    assert in_reset_window(et(2026, 11, 25, 23, 59, 59, 999_999))
    assert not in_reset_window(et(2026, 11, 25, 23, 39, 59, 999_999))


def test_window_reads_eastern_wall_time_from_any_zone() -> None:
    # 23:45 EST (winter) is 04:45 UTC the next day; 23:45 EDT (summer) is 03:45 UTC
    assert in_reset_window(datetime(2026, 11, 26, 4, 45, tzinfo=UTC))
    assert not in_reset_window(datetime(2026, 11, 26, 3, 45, tzinfo=UTC))
    assert in_reset_window(datetime(2026, 7, 2, 3, 45, tzinfo=UTC))
    assert not in_reset_window(datetime(2026, 7, 2, 4, 45, tzinfo=UTC))


def test_dst_spring_forward_day_2026_03_08() -> None:
    # 02:00 EST -> 03:00 EDT on 2026-03-08; the window that evening is in EDT (UTC-4)
    assert in_reset_window(datetime(2026, 3, 9, 3, 40, tzinfo=UTC))  # 23:40 EDT
    assert not in_reset_window(datetime(2026, 3, 9, 3, 39, 59, tzinfo=UTC))
    # the evening before the change is still EST (UTC-5)
    assert in_reset_window(datetime(2026, 3, 8, 4, 40, tzinfo=UTC))  # 23:40 EST on 03-07
    assert not in_reset_window(datetime(2026, 3, 8, 3, 40, tzinfo=UTC))  # 22:40 EST


def test_dst_fall_back_day_2026_11_01() -> None:
    # 02:00 EDT -> 01:00 EST on 2026-11-01; the window that evening is in EST (UTC-5)
    assert in_reset_window(datetime(2026, 11, 2, 4, 40, tzinfo=UTC))  # 23:40 EST
    assert not in_reset_window(datetime(2026, 11, 2, 3, 40, tzinfo=UTC))  # 22:40 EST
    # the evening before (10-31) is still EDT
    assert in_reset_window(datetime(2026, 11, 1, 3, 40, tzinfo=UTC))
    # the repeated hour 01:00-02:00 is outside the window, both times round
    first = datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # 01:30 EDT
    second = datetime(2026, 11, 1, 6, 30, tzinfo=UTC)  # 01:30 EST
    assert not in_reset_window(first)
    assert not in_reset_window(second)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (et(2026, 11, 25, 23, 40), et(2026, 11, 26, 0, 5)),
        (et(2026, 11, 25, 23, 59, 59), et(2026, 11, 26, 0, 5)),
        (et(2026, 12, 31, 23, 45), et(2027, 1, 1, 0, 5)),  # year boundary
        (et(2026, 2, 28, 23, 45), et(2026, 3, 1, 0, 5)),  # month boundary
        (et(2026, 3, 7, 23, 45), et(2026, 3, 8, 0, 5)),  # eve of spring forward
        (et(2026, 3, 8, 23, 45), et(2026, 3, 9, 0, 5)),  # the spring-forward day
        (et(2026, 10, 31, 23, 45), et(2026, 11, 1, 0, 5)),  # eve of fall back
        (et(2026, 11, 1, 23, 45), et(2026, 11, 2, 0, 5)),  # the fall-back day
    ],
)
def test_resume_time_is_0005_et_next_day(now: datetime, expected: datetime) -> None:
    until = resume_time(now)
    assert until == expected
    wall = until.astimezone(EASTERN)
    assert (wall.hour, wall.minute, wall.second) == (0, 5, 0)
    # the wait is twenty minutes of real time for 23:45, on DST days too
    if now.astimezone(EASTERN).minute == 45:
        assert until - now == timedelta(minutes=20)


def test_resume_time_from_utc_input_after_utc_midnight() -> None:
    # 23:50 EST on 11-25 is 04:50 UTC on 11-26: the ET date, not the UTC date, counts
    now = datetime(2026, 11, 26, 4, 50, tzinfo=UTC)
    assert resume_time(now) == et(2026, 11, 26, 0, 5)
    assert (resume_time(now) - now).total_seconds() == 15 * 60


def test_resume_edges_after_midnight() -> None:
    until = resume_time(et(2026, 11, 25, 23, 45))
    assert et(2026, 11, 26, 0, 0) < until
    assert et(2026, 11, 26, 0, 4, 59) < until
    assert et(2026, 11, 26, 0, 5) == until


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        in_reset_window(datetime(2026, 11, 25, 23, 45))
    with pytest.raises(ValueError, match="aware"):
        resume_time(datetime(2026, 11, 25, 23, 45))


def test_eastern_text() -> None:
    assert eastern_text(datetime(2026, 11, 26, 5, 5, tzinfo=UTC)) == "2026-11-26 00:05:00 EST"
    assert eastern_text(datetime(2026, 7, 2, 4, 5, tzinfo=UTC)) == "2026-07-02 00:05:00 EDT"


def test_backoff_without_jitter_doubles_from_base() -> None:
    assert [backoff_delay_s(n, 2.0, 30.0, lambda: 0.0) for n in (1, 2, 3)] == [2.0, 4.0, 8.0]


def test_backoff_cap() -> None:
    assert [backoff_delay_s(n, 2.0, 5.0, lambda: 0.0) for n in (1, 2, 3, 4)] == [2.0, 4.0, 5.0, 5.0]
    assert backoff_delay_s(200, 2.0, 30.0, lambda: 0.0) == 30.0  # no overflow
    assert backoff_delay_s(3, 2.0, 5.0, lambda: 1.0) == pytest.approx(5.0 * (1 + JITTER_FRACTION))


@pytest.mark.parametrize("retry", [1, 2, 3])
def test_backoff_jitter_bounds(retry: int) -> None:
    base = 2.0 * 2 ** (retry - 1)
    low = backoff_delay_s(retry, 2.0, 30.0, lambda: 0.0)
    high = backoff_delay_s(retry, 2.0, 30.0, lambda: 0.999_999)
    assert low == base
    assert base < high < base * (1 + JITTER_FRACTION)
    for _ in range(200):  # the real random source stays within the bounds
        value = backoff_delay_s(retry, 2.0, 30.0)
        assert base <= value <= base * (1 + JITTER_FRACTION)


def test_backoff_retry_numbers_start_at_one() -> None:
    with pytest.raises(ValueError):
        backoff_delay_s(0, 2.0, 30.0)


def test_round_delays_first_attempt_at_once_then_growing() -> None:
    assert round_delays_s(3, 2.0, 30.0, lambda: 0.0) == [0.0, 2.0, 4.0, 8.0]
    assert round_delays_s(0, 2.0, 30.0) == [0.0]
    delays = round_delays_s(3, 0.1, 30.0)
    assert len(delays) == 4
    assert delays[0] == 0.0
    assert delays[1] < delays[2] < delays[3]  # 10 % jitter never overturns a doubling


def test_zero_delays_for_tests() -> None:
    assert round_delays_s(3, 0.0, 0.0) == [0.0, 0.0, 0.0, 0.0]

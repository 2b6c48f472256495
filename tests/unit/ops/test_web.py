"""The web console's pure parts: how a window is read, where lines break, the token rules, the
number format, and the status figures of /metrics."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest

from ops.status_report import Report
from ops.web import series as s
from ops.web.metrics import status_families
from ops.web.page import fmt
from ops.web.security import check_bind, is_loopback, presented_token, token_ok
from shared.config import ConfigError, load_settings

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


def test_a_window_is_read_whole_or_in_buckets_by_its_number_of_ticks() -> None:
    hour = s.plan("1h", NOW, 5.0)
    assert (hour.bucket_s, hour.start, hour.gap_s) == (None, NOW - timedelta(hours=1), 7.5)
    assert s.plan("1d", NOW, 5.0).bucket_s == 86400 / s.TARGET_BUCKETS
    assert s.plan("1d", NOW, 60.0).bucket_s is None  # 1440 ticks
    assert s.plan("1h", NOW, 0.5).bucket_s == 9.0  # 7200 ticks
    with pytest.raises(ValueError, match="window must be one of 1h, 1d, 1w"):
        s.plan("2h", NOW, 5.0)


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def test_a_gap_breaks_the_line_and_the_edges_without_rows_are_gaps() -> None:
    p = s.plan("1h", NOW, 5.0)
    points = [[s.ms(at(-60)), 1.0], [s.ms(at(-55)), 2.0], [s.ms(at(-20)), 3.0]]
    gaps = s.all_gaps([(at(-55), at(-20))], at(-60), at(-20), p)
    assert [(g.start, g.end) for g in gaps] == [
        (p.start, at(-60)),
        (at(-55), at(-20)),
        (at(-20), NOW),
    ]
    drawn = s.break_at_gaps(points, gaps)
    assert drawn == [points[0], points[1], [s.ms(at(-37.5)), None], points[2]]
    assert [(g.start, g.end) for g in s.all_gaps([], None, None, p)] == [(p.start, NOW)]


def test_a_bucket_gives_first_extremes_and_last_each_time_once() -> None:
    one = {"first_ts": at(0), "last_ts": at(0)}
    two = {"first_ts": at(10), "last_ts": at(30)}
    for g in s.GREEKS:
        one |= {f"{g}_first": 1.0, f"{g}_last": 1.0, f"{g}_min": 1.0, f"{g}_max": 1.0}
        one |= {f"{g}_min_ts": at(0), f"{g}_max_ts": at(0)}
        two |= {f"{g}_first": 5.0, f"{g}_last": 6.0, f"{g}_min": -1.0, f"{g}_max": 9.0}
        two |= {f"{g}_min_ts": at(20), f"{g}_max_ts": at(10)}
    got = s.bucket_points([one, two])["vega"]
    assert got == [
        [s.ms(at(0)), 1.0],
        [s.ms(at(10)), 5.0],
        [s.ms(at(20)), -1.0],
        [s.ms(at(30)), 6.0],
    ]


def test_the_default_account_is_the_combined_book() -> None:
    assert s.default_account(["ALL", "U1", "U2"]) == "ALL"
    assert s.default_account(["U1"]) == "U1"
    assert s.default_account([]) == ""


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.9.9.9", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("192.168.1.5", False),
        ("::", False),
        ("desk.example", False),
    ],
)
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_the_token_rules() -> None:
    token = "a-token-of-20-chars!"
    basic = "Basic " + base64.b64encode(f"me:{token}".encode()).decode()
    assert presented_token(f"Bearer {token}") == token.encode()
    assert presented_token(basic) == token.encode()
    assert token_ok(f"bearer  {token}", token) and token_ok(basic, token)
    for bad in ("", "Bearer", f"Bearer {token[:-1]}", f"Digest {token}", "Basic %%%", "Basic bWU="):
        assert not token_ok(bad, token), bad
    check_bind(load_settings({"BRIDGE_WEB_HOST": "127.0.0.1"}, dotenv=None))
    check_bind(
        load_settings({"BRIDGE_WEB_HOST": "0.0.0.0", "BRIDGE_WEB_TOKEN": token}, dotenv=None)
    )
    with pytest.raises(ConfigError, match="not a loopback address"):
        check_bind(load_settings({"BRIDGE_WEB_HOST": "0.0.0.0"}, dotenv=None))
    with pytest.raises(ConfigError, match="at least 16"):
        check_bind(load_settings({"BRIDGE_WEB_TOKEN": "too-short"}, dotenv=None))


def test_greeks_in_large_type() -> None:
    assert [fmt(v) for v in (12345.6, -1234.56, 12.345, -0.012345, 0.0, None)] == [
        "12,346",
        "-1,235",
        "12.35",
        "-0.0123",
        "0.0000",
        "–",
    ]


def test_status_figures_are_the_reports_and_unknown_ones_are_left_out() -> None:
    r = Report(mode="SOCKET", prefix="b:", now=NOW, stale_s=15.0, link="connected")
    r.pending_by_consumer = {"greeks": {"w": 2}}
    r.undelivered = {"greeks": 3}
    r.breaker, r.buffer_rows, r.dead_letters = "open", 4, 1
    r.last_row_age_s, r.heartbeat_age_s, r.last_tick_age_s, r.writer_alive = 2.0, 0.5, 1.0, True
    got = {f.name: f.samples[0].value for f in status_families(r)}
    assert got == {
        "bridge_status": 1.0,
        "bridge_redis_up": 1.0,
        "bridge_postgres_up": 1.0,
        "bridge_link_up": 1.0,
        "bridge_last_row_age_seconds": 2.0,
        "bridge_stream_backlog_entries": 5.0,
        "bridge_buffer_rows": 4.0,
        "bridge_breaker_open": 1.0,
        "bridge_dead_letters": 1.0,
    }
    down = Report(mode="SOCKET", prefix="b:", now=NOW, stale_s=15.0, redis_error="refused")
    got = {f.name: f.samples[0].value for f in status_families(down)}
    assert got["bridge_status"] == 2.0 and got["bridge_redis_up"] == 0.0
    assert "bridge_stream_backlog_entries" not in got and "bridge_dead_letters" not in got
    assert "bridge_last_row_age_seconds" not in got and "bridge_breaker_open" not in got

"""`bridge status`: classification (healthy / degraded / down) and rendering, pure."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from ops.status import (
    BACKLOG_LIMIT,
    DEGRADED,
    DOWN,
    EXIT_CODES,
    HEALTHY,
    Report,
    classify,
    render,
    stale_after_s,
    to_json,
)

NOW = datetime(2026, 11, 25, 14, 30, 7, tzinfo=UTC)


def healthy() -> Report:
    return Report(
        mode="SOCKET",
        prefix="bridge:",
        now=NOW,
        stale_s=15.0,
        link="connected",
        link_since="2026-11-25T14:00:00+00:00",
        link_reason="connected to IB Gateway",
        heartbeat_age_s=0.4,
        last_tick_age_s=2.0,
        streams={"greeks": 10, "api_logs": 3, "dead": 0},
        pending_by_consumer={"greeks": {"writer-1": 0}, "api_logs": {"writer-1": 0}},
        undelivered={"greeks": 0, "api_logs": 0},
        dead_letters=0,
        writer_alive=True,
        breaker="closed",
        buffer_rows=0,
        buffer_bytes=0,
        last_row_ts="2026-11-25T14:30:05+00:00",
        last_row_age_s=2.0,
        supervisor_url="unix:///x/supervisor.sock",
        processes={"bridge:writer": "RUNNING", "bridge:collector": "RUNNING"},
    )


def test_healthy_when_everything_flows() -> None:
    assert classify(healthy()) == (HEALTHY, [])
    assert EXIT_CODES[HEALTHY] == 0


def test_stale_threshold_is_three_ticks_but_at_least_15_s() -> None:
    assert stale_after_s(5) == 15.0
    assert stale_after_s(0.5) == 15.0
    assert stale_after_s(10) == 30.0


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"redis_error": "Connection refused"}, "Redis unreachable"),
        ({"heartbeat_age_s": None}, "collector heartbeat missing"),
        ({"last_tick_age_s": None}, "no tick"),
        ({"last_tick_age_s": 16.0}, "last tick 16 s ago"),
    ],
)
def test_down(change: dict[str, object], needle: str) -> None:
    level, reasons = classify(replace(healthy(), **change))  # type: ignore[arg-type]
    assert level == DOWN
    assert EXIT_CODES[level] == 2
    assert any(needle in r for r in reasons), reasons


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"writer_alive": False}, "writer heartbeat missing"),
        (
            {"processes": {"bridge:writer": "STOPPED", "bridge:collector": "RUNNING"}},
            "bridge:writer is STOPPED",
        ),
        ({"breaker": "open", "breaker_reason": "PostgreSQL unreachable"}, "breaker open"),
        ({"buffer_rows": 12}, "12 rows in the buffer"),
        ({"last_row_age_s": 40.0}, "newest PORTFOLIO row is 40 s old"),
        ({"last_row_age_s": None, "last_row_ts": None}, "no PORTFOLIO row"),
        ({"db_error": "refused"}, "PostgreSQL unreachable"),
        ({"supervisor_error": "no socket"}, "supervisord unreachable"),
        ({"link": "connecting"}, "link connecting"),
        ({"undelivered": {"greeks": BACKLOG_LIMIT + 1, "api_logs": 0}}, "entries wait"),
        ({"pending_by_consumer": {"greeks": {"writer-1": BACKLOG_LIMIT + 1}}}, "entries wait"),
    ],
)
def test_degraded(change: dict[str, object], needle: str) -> None:
    level, reasons = classify(replace(healthy(), **change))  # type: ignore[arg-type]
    assert level == DEGRADED
    assert EXIT_CODES[level] == 1
    assert any(needle in r for r in reasons), reasons


def test_paused_link_is_degraded_not_down_even_without_ticks() -> None:
    r = replace(
        healthy(),
        link="paused",
        link_reason="nightly reset until 00:05 ET",
        heartbeat_age_s=None,
        last_tick_age_s=300.0,
    )
    level, reasons = classify(r)
    assert level == DEGRADED
    assert any("link paused" in x for x in reasons)


def test_backlog_at_the_limit_is_still_healthy() -> None:
    r = replace(healthy(), undelivered={"greeks": BACKLOG_LIMIT, "api_logs": 0})
    assert classify(r)[0] == HEALTHY


def test_dead_letters_are_shown_but_do_not_degrade() -> None:
    r = replace(healthy(), dead_letters=3, streams={"greeks": 1, "api_logs": 1, "dead": 3})
    assert classify(r)[0] == HEALTHY
    assert "dead letters" in render(r)


def test_down_lists_the_degraded_reasons_too() -> None:
    r = replace(healthy(), heartbeat_age_s=None, writer_alive=False)
    level, reasons = classify(r)
    assert level == DOWN
    assert any("collector" in x for x in reasons)
    assert any("writer" in x for x in reasons)


def test_json_has_the_promised_keys_and_is_serialisable() -> None:
    body = to_json(replace(healthy(), pending_by_consumer={"greeks": {"writer-1": 2}}))
    for key in ("healthy", "mode", "link", "last_row_age_s", "pending", "buffer_rows", "breaker"):
        assert key in body
    assert body["healthy"] is True
    assert body["pending"] == 2
    assert body["status"] == "healthy"
    assert json.loads(json.dumps(body, default=str))["link"] == "connected"


def test_json_unhealthy() -> None:
    body = to_json(replace(healthy(), writer_alive=False))
    assert body["healthy"] is False
    assert body["status"] == "degraded"
    assert body["reasons"]


def test_render_one_screen() -> None:
    text = render(replace(healthy(), processes={"bridge:writer": "STOPPED"}))
    lines = text.splitlines()
    assert lines[0].startswith("bridge status: DEGRADED")
    assert any(line.split() == ["process", "bridge:writer", "STOPPED"] for line in lines)
    assert "why:" in text
    # labels are aligned: every value starts in the same column
    body = [line for line in lines[1:] if line.startswith("  ") and not line.startswith("  -")]
    columns = {
        len(line) - len(line[2:].split("  ", 1)[1].lstrip()) for line in body if "  " in line[2:]
    }
    assert len(columns) == 1, body
    assert len(lines) < 40


def test_render_redis_down() -> None:
    text = render(replace(healthy(), redis_error="Connection refused"))
    assert text.startswith("bridge status: DOWN")
    assert "UNREACHABLE: Connection refused" in text


def test_market_data_lines_are_shown_streaming_or_rotating() -> None:
    r = healthy()
    assert "market data" in render(r)
    r.market_data = {
        "lines_in_use": "9",
        "lines_working": "40",
        "lines_budget": "40",
        "lines_wanted": "9",
        "rotating": "0",
        "market_data": "LIVE",
    }
    assert "9/40 lines for 9 contracts, streaming; data LIVE" in render(r)
    r.market_data |= {
        "lines_in_use": "18",
        "lines_working": "18",
        "lines_wanted": "162",
        "rotating": "1",
        "rotation_s": "12.5",
        "market_data": "DELAYED,LIVE",
    }
    shown = render(r)
    assert "18/18 lines for 162 contracts (budget 40, lowered by the gateway's limit)" in shown
    assert "rotating: about 12.5 s per rotation; data DELAYED,LIVE" in shown


def test_each_accounts_newest_row_is_shown_and_a_stale_one_degrades() -> None:
    r = healthy()
    r.accounts = {"DU1": 2.0, "DU2": 3.0, "ALL": 2.0}
    assert classify(r)[0] == HEALTHY
    assert "newest row by account     ALL 2.0 s ago, DU1 2.0 s ago, DU2 3.0 s ago" in render(r)
    r.accounts["DU2"] = 95.0
    state, reasons = classify(r)
    assert state == DEGRADED
    assert reasons == ["newest PORTFOLIO row of account DU2 is 95 s old (limit 15 s)"]


def test_one_account_shows_no_account_line() -> None:
    r = healthy()
    r.accounts = {"DU1": 2.0}
    assert "by account" not in render(r)

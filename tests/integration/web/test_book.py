"""/api/exposure, /api/logs and /api/status over real PostgreSQL and Redis: the book is the
newest tick's rows of portfolio_exposure; a database from before several accounts and the
exposure table is read from its per-underlying rows; the status is `bridge status --json`'s."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import redis.asyncio as aioredis

from ops.web.series import ms
from shared.clock import grid_floor, utcnow
from tests.integration.web import tables
from tests.web_console import StartWeb, bridge_status_json


async def test_the_book_is_the_newest_tick_of_portfolio_exposure(
    pg_url: str, start_web: StartWeb
) -> None:
    await tables.execute(pg_url, tables.FINAL)
    now = grid_floor(utcnow(), 5)
    old, new = now - timedelta(seconds=10), now - timedelta(seconds=5)
    pnl = {"daily_pnl": 1234.5, "unrealized_pnl": -10.25, "realized_pnl": 99.0}
    rows = [tables.exposure_row(old, "DU1", "SPY", 9.0)]
    rows += [
        tables.exposure_row(new, "DU1", "PORTFOLIO", 3.0, **pnl),
        tables.exposure_row(new, "DU1", "SPY", 1.0),
        tables.exposure_row(new, "DU1", "QQQ", -2.0, legs_excluded=1, underlying_price=None),
        tables.exposure_row(new, "DU2", "SPY", 5.0),
    ]
    await tables.copy(pg_url, "portfolio_exposure", tables.EXPOSURE_COLUMNS, rows)
    await tables.greeks(pg_url, [(new, "PORTFOLIO", 1.0, 2.0, 3.0, 4.0, 5.0)], account="DU1")
    web = await start_web()

    status, body = await web.json("/api/exposure?account=DU1")
    assert status == 200, body
    assert body["source"] == "portfolio_exposure" and body["timestamp"] == new.isoformat()
    stored = await tables.fetch(
        pg_url,
        "SELECT * FROM portfolio_exposure WHERE account = 'DU1' AND timestamp = $1",
        new,
    )
    skip = ("id", "timestamp", "account")
    by_scope = {r["scope"]: {k: v for k, v in r.items() if k not in skip} for r in stored}
    assert body["portfolio"] == by_scope["PORTFOLIO"]
    assert body["portfolio"]["daily_pnl"] == 1234.5
    # by size of the dollar delta: QQQ (-12 601) before SPY (6 300.5)
    assert [r["scope"] for r in body["rows"]] == ["QQQ", "SPY"]
    assert body["rows"] == [by_scope["QQQ"], by_scope["SPY"]]


async def test_a_database_before_accounts_and_exposure_is_read_as_it_is(
    pg_url: str, start_web: StartWeb
) -> None:
    await tables.execute(pg_url, tables.OLD)
    t = grid_floor(utcnow(), 5) - timedelta(seconds=5)
    await tables.greeks(
        pg_url,
        [
            (t - timedelta(seconds=5), "PORTFOLIO", 0.5, 0.5, 0.5, 0.5, 1.0),
            (t, "PORTFOLIO", 150.25, 2.5, 40.0, -12.0, 600.0),
            (t, "SPY", 100.0, 2.0, 30.0, -10.0, 600.0),
            (t, "QQQ", -50.25, 0.5, 10.0, -2.0, 500.0),
            (t, "IWM", 7.0, 0.0, 0.0, 0.0, None),
        ],
    )
    web = await start_web()

    status, body = await web.json("/api/series")
    assert status == 200, body
    assert body["accounts"] == [""] and body["account"] == ""
    assert body["schema"] == {"account_column": False, "exposure_table": False}
    assert values_of(body) == [[ms(t - timedelta(seconds=5)), 0.5], [ms(t), 150.25]]
    assert body["completeness"].startswith("unknown") and body["marks"] == []

    status, body = await web.json("/api/exposure")
    assert status == 200, body
    assert body["source"] == "portfolio_greeks" and body["timestamp"] == t.isoformat()
    spy, qqq, iwm = body["rows"]
    assert (spy["scope"], qqq["scope"], iwm["scope"]) == ("SPY", "QQQ", "IWM")
    assert spy["delta_dollars"] == 100.0 * 600.0 and spy["gamma_dollars"] == 2.0 * 600 * 600 / 100
    assert qqq["delta_dollars"] == -50.25 * 500.0 and qqq["vega"] == 10.0
    assert iwm["delta_dollars"] is None  # no price: no dollars, never 0
    assert "legs" not in spy  # completeness is not known from these rows

    status, text = await web.text("/metrics")
    assert 'bridge_net_greek{account="",greek="delta"} 150.25' in text


def values_of(body: dict[str, Any]) -> list[list[Any]]:
    return [p for p in body["series"]["delta"] if p[1] is not None]


async def test_logs_are_the_newest_warnings_and_errors(pg_url: str, start_web: StartWeb) -> None:
    await tables.execute(pg_url, tables.FINAL)
    now = utcnow()
    await tables.logs(
        pg_url,
        [
            (now - timedelta(days=8), "ERROR", "too old to show"),
            (now - timedelta(minutes=3), "WARN", "link dropped"),
            (now - timedelta(minutes=2), "INFO", "reconnect attempt 1/4 succeeded"),
            (now - timedelta(minutes=1), "ERROR", "breaker open"),
        ],
    )
    web = await start_web()
    status, body = await web.json("/api/logs?limit=5")
    assert status == 200
    assert [(r["status"], r["message"]) for r in body["rows"]] == [
        ("ERROR", "breaker open"),
        ("WARN", "link dropped"),
    ]
    _, body = await web.json("/api/logs?limit=1")
    assert len(body["rows"]) == 1
    for bad in (
        "/api/logs?limit=0",
        "/api/logs?limit=x",
        "/api/series?window=2h",
        "/api/series?account=a;drop",
        "/api/exposure?account=%27",
    ):
        status, body = await web.json(bad)
        assert status == 400 and body["error"], bad


async def test_api_status_is_bridge_status_json(
    pg_url: str, redis: aioredis.Redis, prefix: str, start_web: StartWeb
) -> None:
    await tables.execute(pg_url, tables.FINAL)
    now = utcnow()
    await tables.greeks(pg_url, [(now, "PORTFOLIO", 1.0, 2.0, 3.0, 4.0, 5.0)], account="DU1")
    await tables.running_bridge(redis, prefix, now, breaker="open", buffer_rows=7)
    await tables.backlog(redis, prefix, delivered=2, waiting=3)
    web = await start_web()

    status, api = await web.json("/api/status")
    assert status == 200
    _, cli = bridge_status_json(web.settings)
    moving = {"now", "heartbeat_age_s", "last_tick_age_s", "last_row_age_s", "accounts"}
    assert set(api) == set(cli)
    assert {k: v for k, v in api.items() if k not in moving} == {
        k: v for k, v in cli.items() if k not in moving
    }
    for key in moving - {"now", "accounts"}:
        assert abs(api[key] - cli[key]) < 10, key
    assert set(api["accounts"]) == set(cli["accounts"]) == {"DU1"}  # ages: moving too
    assert abs(api["accounts"]["DU1"] - cli["accounts"]["DU1"]) < 10
    assert api["status"] == "degraded" and api["backlog"] == 5 and api["buffer_rows"] == 7

"""/metrics and /healthz over real PostgreSQL and Redis: the exposition parses with the
Prometheus client's own parser, its figures are `bridge status --json`'s, the net Greeks are
the newest rows, reconnect attempts are counted from api_logs; /healthz follows the status."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from shared.clock import grid_floor, utcnow
from shared.names import Keys
from tests.integration.web import tables
from tests.web_console import StartWeb, Web, bridge_status_json

LEVELS = {"healthy": 0, "degraded": 1, "down": 2}


async def scrape(web: Web) -> dict[str, list[tuple[dict[str, str], float]]]:
    status, headers, body = await web.get("/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def one(samples: dict[str, list[tuple[dict[str, str], float]]], name: str) -> float:
    (found,) = samples[name]
    return found[1]


async def test_metrics_are_the_status_and_the_newest_rows(
    pg_url: str, redis: aioredis.Redis, prefix: str, start_web: StartWeb
) -> None:
    await tables.execute(pg_url, tables.FINAL)
    now = grid_floor(utcnow(), 5)
    newest = {"DU1": (11.5, 0.25, -3.5, -1.75), "DU2": (-7.0, 0.5, 2.0, -0.5)}
    for account, greeks in newest.items():
        await tables.greeks(
            pg_url,
            [
                (now - timedelta(seconds=5), "PORTFOLIO", 1.0, 1.0, 1.0, 1.0, 600.0),
                (now, "PORTFOLIO", *greeks, 600.0),
                (now, "SPY", 99.0, 99.0, 99.0, 99.0, 600.0),
            ],
            account=account,
        )
    await tables.running_bridge(redis, prefix, utcnow(), breaker="open", buffer_rows=7)
    await tables.backlog(redis, prefix, delivered=2, waiting=3)
    for i in range(3):
        await redis.xadd(Keys(prefix).dead, {"reason": f"bad entry {i}"})
    await tables.logs(
        pg_url,
        [
            (now, "INFO", "link down: reconnect round 1 starts now (up to 4 attempts)"),
            (now, "WARN", "reconnect attempt 1/4 of round 1 (at once) failed after 0.10 s: x"),
            (
                now,
                "INFO",
                "reconnect attempt 2/4 (retry 1 of 3) of round 1 (after 2.00 s "
                "back-off) succeeded in 0.20 s: connected",
            ),
            (now, "INFO", "reauth attempt 1/4 of round 2 (at once) succeeded in 0.3 s: ok"),
            (now, "ERROR", "reconnect round 3 failed: all 4 attempts (3 retries) spent"),
        ],
    )
    web = await start_web()

    samples = await scrape(web)
    _, cli = bridge_status_json(web.settings)
    assert cli["status"] == "degraded"
    assert one(samples, "bridge_status") == LEVELS[cli["status"]]
    assert one(samples, "bridge_link_up") == (cli["link"] == "connected")
    assert one(samples, "bridge_stream_backlog_entries") == cli["backlog"] == 5
    assert one(samples, "bridge_buffer_rows") == cli["buffer_rows"] == 7
    assert one(samples, "bridge_breaker_open") == (cli["breaker"] == "open") == 1
    assert one(samples, "bridge_dead_letters_total") == cli["dead_letters"] == 3
    assert abs(one(samples, "bridge_last_row_age_seconds") - cli["last_row_age_s"]) < 10
    assert one(samples, "bridge_redis_up") == 1 and one(samples, "bridge_postgres_up") == 1
    assert one(samples, "bridge_reconnect_attempts_total") == 3
    shown = {(lab["account"], lab["greek"]): v for lab, v in samples["bridge_net_greek"]}
    want = {
        (account, greek): value
        for account, values in newest.items()
        for greek, value in zip(("delta", "gamma", "vega", "theta"), values, strict=True)
    }
    assert shown == want
    stamps = {lab["account"]: v for lab, v in samples["bridge_net_greek_timestamp_seconds"]}
    assert stamps == {"DU1": now.timestamp(), "DU2": now.timestamp()}

    # a new attempt is counted on top of what was read before
    await tables.logs(pg_url, [(now, "WARN", "reconnect attempt 1/4 of round 4 (at once) failed")])
    assert one(await scrape(web), "bridge_reconnect_attempts_total") == 4


async def healthz(web: Web) -> tuple[int, dict[str, Any]]:
    return await web.json("/healthz")


async def until_status(web: Web, level: str) -> tuple[int, dict[str, Any]]:
    """/healthz once it reports `level` (its report is cached for a second)."""
    for _ in range(100):
        code, body = await healthz(web)
        if body["status"] == level:
            return code, body
        await asyncio.sleep(0.1)
    raise AssertionError(f"/healthz never said {level}: {body}")


async def test_healthz_is_200_healthy_or_degraded_and_503_down(
    pg_url: str, redis: aioredis.Redis, prefix: str, start_web: StartWeb
) -> None:
    await tables.execute(pg_url, tables.FINAL)
    await tables.greeks(pg_url, [(utcnow(), "PORTFOLIO", 1.0, 2.0, 3.0, 4.0, 5.0)], account="DU1")
    await tables.running_bridge(redis, prefix, utcnow())
    web = await start_web()

    code, body = await until_status(web, "healthy")
    assert code == 200 and body["healthy"] is True and body["reasons"] == []
    await redis.hset(Keys(prefix).writer_state, "breaker", "open")
    code, body = await until_status(web, "degraded")
    assert code == 200 and any("breaker open" in r for r in body["reasons"])
    await redis.delete(Keys(prefix).heartbeat)
    code, body = await until_status(web, "down")
    assert code == 503 and any("collector heartbeat missing" in r for r in body["reasons"])
    status, _, raw = await web.get("/healthz", method="HEAD")
    assert status == 503 and raw == b""

"""A real `bridge web` through outages: PostgreSQL stopped (a private server) or nothing on its
port, Redis unreachable. The page and /healthz say which, what can be served still is, the
process stays up, and the console serves the rows again once PostgreSQL is back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from ops.embedded import PostgresServer, free_port
from ops.web.page import fmt
from shared.clock import grid_floor, utcnow
from tests.integration.web import tables
from tests.web_console import StartWebProcess, Web, web_env


async def eventually(
    web: Web, path: str, status: int, until: Callable[[Any], bool] = bool, timeout_s: float = 20
) -> Any:
    """The body of `path` once it answers `status` and `until(body)` holds."""
    for _ in range(int(timeout_s / 0.2)):
        code, body = await web.json(path)
        if code == status and until(body):
            return body
        await asyncio.sleep(0.2)
    raise AssertionError(f"{path} did not answer {status}: {code} {body}")


async def test_postgresql_stopped_page_and_healthz_say_so_and_it_recovers(
    private_pg: PostgresServer,
    redis: aioredis.Redis,
    redis_url: str,
    prefix: str,
    tmp_path: Path,
    start_web_process: StartWebProcess,
) -> None:
    dsn = private_pg.url()
    await tables.execute(dsn, tables.FINAL)
    ts = grid_floor(utcnow(), 5)
    await tables.greeks(
        dsn, [(ts, "PORTFOLIO", 1234.5, 0.0625, -88.25, -41.5, 600.0)], account="U1"
    )
    web = await start_web_process(web_env(dsn, redis_url, prefix, tmp_path))
    code, page = await web.text("/")
    assert code == 200 and fmt(1234.5) in page and fmt(0.0625) in page
    assert "PostgreSQL unreachable" not in page

    private_pg.stop()
    await tables.running_bridge(redis, prefix, utcnow())  # the rest of the bridge is alive
    health = await eventually(web, "/healthz", 200, until=lambda b: bool(b["db_error"]))
    assert health["status"] == "degraded"  # rows are kept safe meanwhile, not down
    assert any("PostgreSQL unreachable" in r for r in health["reasons"])
    code, page = await web.text("/")
    assert code == 200 and "PostgreSQL unreachable" in page and "DEGRADED" in page
    code, body = await web.json("/api/series")
    assert code == 503 and body["error"].startswith("PostgreSQL unreachable")
    code, body = await web.json("/api/exposure")
    assert code == 503 and body["source"] == "postgresql"
    code, metrics = await web.text("/metrics")
    assert code == 200 and "bridge_postgres_up 0.0" in metrics and "bridge_redis_up 1.0" in metrics
    assert web.proc is not None and web.proc.poll() is None

    private_pg.start()
    body = await eventually(web, "/api/series", 200)
    assert body["newest"]["delta"] == 1234.5
    assert web.proc.poll() is None


async def test_nothing_on_the_postgresql_port(
    redis_url: str, prefix: str, tmp_path: Path, start_web_process: StartWebProcess
) -> None:
    dsn = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    web = await start_web_process(web_env(dsn, redis_url, prefix, tmp_path))
    code, page = await web.text("/")
    assert code == 200 and "PostgreSQL unreachable" in page
    code, health = await web.json("/healthz")
    assert health["db_error"] and "no PORTFOLIO row" not in " ".join(health["reasons"])
    assert any("PostgreSQL unreachable" in r for r in health["reasons"])
    code, _ = await web.json("/api/logs")
    assert code == 503
    assert web.proc is not None and web.proc.poll() is None


async def test_redis_unreachable_the_rows_are_still_served(
    pg_url: str, prefix: str, tmp_path: Path, start_web_process: StartWebProcess
) -> None:
    await tables.execute(pg_url, tables.FINAL)
    ts = grid_floor(utcnow(), 5) - timedelta(seconds=5)
    await tables.greeks(pg_url, [(ts, "PORTFOLIO", 3.0, 0.5, 7.0, -2.0, 600.0)], account="U1")
    redis_url = f"redis://127.0.0.1:{free_port()}/0"
    web = await start_web_process(web_env(pg_url, redis_url, prefix, tmp_path))
    code, page = await web.text("/")
    assert code == 200 and "Redis unreachable" in page and "PostgreSQL unreachable" not in page
    code, health = await web.json("/healthz")
    assert code == 503 and health["status"] == "down" and health["redis_error"]
    code, body = await web.json("/api/series")
    assert code == 200 and body["newest"]["delta"] == 3.0
    code, metrics = await web.text("/metrics")
    assert code == 200 and "bridge_redis_up 0.0" in metrics
    assert 'bridge_net_greek{account="U1",greek="delta"} 3.0' in metrics
    assert web.proc is not None and web.proc.poll() is None

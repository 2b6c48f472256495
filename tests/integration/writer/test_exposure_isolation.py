"""Bad exposure entries on the greeks stream, through the writer process: one the codec refuses
(a count that is no count, an unknown table) and one PostgreSQL refuses (a CHECK constraint the
DBA added) are dead-lettered with their reason, like greeks rows; every other row of their
batches lands once, and nothing stays pending."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis

from database.db_manager import DBManager
from shared.names import Keys
from tests.helpers import wait_for
from tests.integration.writer.test_exposure_delivery import exposure_entry, greeks_entry, tick
from tests.integration.writer.test_resilience import all_acked, env, fetchval

Spawn = Callable[..., subprocess.Popen[bytes]]
CHECK = "ALTER TABLE portfolio_exposure ADD CONSTRAINT scope_known CHECK (scope <> 'REFUSED')"


async def test_bad_exposure_entries_are_dead_lettered_and_the_rest_lands(
    spawn: Spawn, pg_url: str, redis_url: str, redis: aioredis.Redis, prefix: str, tmp_path: Path
) -> None:
    async with DBManager(pg_url) as db:
        await db.migrate()
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(CHECK)
    finally:
        await conn.close()
    keys = Keys(prefix)
    entries = [*tick(0), *tick(1)]
    entries.append({**exposure_entry(2, "DU111"), "legs": "x"})
    entries.append({**exposure_entry(2, "DU111"), "scope": "REFUSED"})
    entries.append({**greeks_entry(2, "DU111"), "table": "positions"})
    entries += tick(3)
    for fields in entries:
        await redis.xadd(keys.greeks, fields)  # type: ignore[arg-type]
    spawn("writer", env(pg_url, redis_url, prefix, tmp_path / "buffer.jsonl"))
    await wait_for(lambda: all_acked(redis, keys.greeks), 60, "every entry acked")

    raw = await redis.xrange(keys.dead)
    dead = [{k.decode(): v.decode() for k, v in f.items()} for _, f in raw]
    reasons = sorted(d["reason"] for d in dead)
    assert len(dead) == 3, dead
    assert reasons[0].startswith("database refused the row: CheckViolationError")
    assert "scope_known" in reasons[0]
    assert reasons[1:] == ["legs 'x' is not a count", "unknown table 'positions'"]
    assert all(d["stream"] == keys.greeks and d["f.ts"] for d in dead)
    assert await fetchval(pg_url, "SELECT count(*) FROM portfolio_exposure") == 9
    assert await fetchval(pg_url, "SELECT count(*) FROM portfolio_greeks") == 6
    warns = "SELECT count(*) FROM api_logs WHERE status = 'WARN' AND message LIKE 'dead letter%'"
    await wait_for(lambda: _is(fetchval(pg_url, warns), 3), 20, "three WARN rows")


async def _is(value: object, n: int) -> bool:
    return await value == n  # type: ignore[misc]

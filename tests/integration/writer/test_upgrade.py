"""The upgrade, for real: a database made by the previous release (its schema verbatim, with
rows), two writer processes of this release started at the same moment while entries keep
arriving in the stream (replays of stored rows among them). The migrations are applied once,
by one of them, before either reads an entry; every old row is kept as it was (account ''),
none is stored twice, and the new rows land with their accounts, exposure rows too."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis

from shared.names import Keys
from tests.helpers import wait_for
from tests.integration.database.test_migrations import OLD_ROWS, T0, release_database
from tests.integration.writer.test_exposure_delivery import (
    ACCOUNTS,
    EXPOSURE_PER_TICK,
    GREEKS_PER_TICK,
    produce,
)
from tests.integration.writer.test_resilience import all_acked, env, fetchval

Spawn = Callable[..., subprocess.Popen[bytes]]
NEW_TICKS = 300


def replay(old: asyncpg.Record) -> dict[str, str]:
    """A stored row of the old release's writer, sent again as its entry (account '')."""
    und = old["underlying_price"]
    return {
        "v": "1",
        "ts": old["timestamp"].isoformat(timespec="microseconds"),
        "contract": old["contract"],
        "delta": repr(old["delta"]),
        "gamma": repr(old["gamma"]),
        "vega": repr(old["vega"]),
        "theta": repr(old["theta"]),
        "underlying_price": "" if und is None else repr(und),
        "account": "",
        "mode": "SOCKET",
    }


async def test_two_writers_migrate_a_release_database_while_entries_arrive(
    spawn: Spawn, pg_url: str, redis_url: str, redis: aioredis.Redis, prefix: str, tmp_path: Path
) -> None:
    before = await release_database(pg_url)
    keys = Keys(prefix)
    # entries waiting before the upgrade: the last old rows again, then new ticks
    for old in before[-20:]:
        await redis.xadd(keys.greeks, replay(old))  # type: ignore[arg-type]
    await produce(redis, keys.greeks, range(10_000, 10_050))
    producer = asyncio.create_task(produce(redis, keys.greeks, range(10_050, 10_000 + NEW_TICKS)))
    writers = [
        spawn(
            "writer",
            env(pg_url, redis_url, prefix, tmp_path / f"buffer-{n}.jsonl")
            | {"BRIDGE_WRITER_CONSUMER": f"writer-{n}"},
        )
        for n in (1, 2)
    ]
    await producer
    await wait_for(lambda: all_acked(redis, keys.greeks), 60, "every entry acked")

    conn = await asyncpg.connect(pg_url)
    try:
        after = await conn.fetch("SELECT * FROM portfolio_greeks ORDER BY id")
        versions = await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")
        new = await conn.fetch(
            "SELECT account, count(*) FROM portfolio_greeks WHERE id > $1 GROUP BY 1 ORDER BY 1",
            before[-1]["id"],
        )
    finally:
        await conn.close()
    assert [dict(r) for r in after[:OLD_ROWS]] == [{**dict(r), "account": ""} for r in before]
    assert len(after) == OLD_ROWS + GREEKS_PER_TICK * NEW_TICKS, "no row twice, none lost"
    assert [(r[0], r[1]) for r in new] == [(a, NEW_TICKS) for a in ACCOUNTS]
    assert min(r["timestamp"] for r in after[OLD_ROWS:]) > T0
    exposure = await fetchval(pg_url, "SELECT count(*) FROM portfolio_exposure")
    assert exposure == EXPOSURE_PER_TICK * NEW_TICKS
    assert [r[0] for r in versions] == [1, 2, 3], "each migration recorded once"
    logs = [w.log_path.read_text() for w in writers]  # type: ignore[attr-defined]
    for label in ("0001_initial", "0002_account_key", "0003_portfolio_exposure"):
        assert sum(log.count(f"schema_migration_applied {label}") for log in logs) == 1, logs
    assert all(w.poll() is None for w in writers), logs
    assert not any("Traceback" in log or "ERROR" in log for log in logs), logs
    assert await redis.xlen(keys.dead) == 0
    audit = "SELECT count(*) FROM api_logs WHERE message LIKE 'schema migration % applied in %'"
    await wait_for(lambda: _is(fetchval(pg_url, audit), 3), 20, "an INFO row per migration")


async def _is(value: object, n: int) -> bool:
    return await value == n  # type: ignore[misc]

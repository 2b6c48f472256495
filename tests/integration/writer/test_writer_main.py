"""`python -m writer` when PostgreSQL starts refusing it while it runs (its database dropped
during an outage): a configuration error met at the reconnect, the same exit code 2 and one
ERROR line as at start, and the rows it buffered meanwhile are kept."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis

from database.db_manager import DBManager
from shared.jsonl import JsonlFile
from shared.names import WRITER_GROUP, Keys
from tests.helpers import wait_for
from tests.integration.writer.test_writer_process import rows, writer_env, xadd_all

Spawn = Callable[..., subprocess.Popen[bytes]]


def log_of(proc: subprocess.Popen[bytes]) -> str:
    return Path(proc.log_path).read_text()  # type: ignore[attr-defined]


async def test_database_dropped_during_an_outage_exits_2_and_keeps_the_rows(
    spawn: Spawn,
    pg_server_url: str,
    pg_url: str,
    redis_url: str,
    redis: aioredis.Redis,
    prefix: str,
    tmp_path: Path,
) -> None:
    """The database takes no writes (a standby after a failover): the breaker opens and the
    rows go to the buffer. Then the database is gone: the writer's reconnect meets a
    configuration error, exit 2 with one ERROR line, the buffered rows kept for `bridge drain`."""
    async with DBManager(pg_url) as db:
        await db.migrate()
    name = pg_url.rsplit("/", 1)[-1]
    admin = await asyncpg.connect(pg_server_url)
    try:
        await admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        keys = Keys(prefix)
        env = writer_env(pg_url, redis_url, prefix, BRIDGE_FLUSH_RETRY_S="0.5")
        proc = spawn("writer", env)
        await xadd_all(redis, keys.greeks, rows(10))

        async def breaker_open() -> bool:
            return await redis.hget(keys.writer_state, "breaker") == b"open"

        await wait_for(breaker_open, 30, "the breaker open on the read-only database")
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()
    code = await asyncio.to_thread(proc.wait, 60)
    text = log_of(proc)
    assert code == 2, text
    errors = [line for line in text.splitlines() if " ERROR " in line and "db_config" in line]
    assert len(errors) == 1, text
    assert f'database "{name}" does not exist' in errors[0]
    assert "not retried" in errors[0]
    assert "Traceback" not in text
    records = list(JsonlFile(tmp_path / "buffer.jsonl").iter_chunks(1000))
    buffered = [r for c in records for r in c.records if r.get("stream") == "greeks"]
    assert len(buffered) == 10, "the rows taken during the outage are kept in the buffer"


async def test_a_schema_it_cannot_complete_is_no_config_error_and_nothing_is_read(
    spawn: Spawn, pg_url: str, redis_url: str, redis: aioredis.Redis, prefix: str
) -> None:
    """A pre-existing `portfolio_greeks` holding the same tick twice: the idempotency index
    cannot be built. Not a configuration error (exit 1, supervisord retries, the operator sees
    why), and no entry is read before the schema is right."""
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(
            "CREATE TABLE portfolio_greeks (id BIGSERIAL PRIMARY KEY, timestamp TIMESTAMPTZ "
            "NOT NULL, contract TEXT NOT NULL, delta DOUBLE PRECISION, gamma DOUBLE PRECISION, "
            "vega DOUBLE PRECISION, theta DOUBLE PRECISION, underlying_price DOUBLE PRECISION)"
        )
        await conn.execute(
            "INSERT INTO portfolio_greeks (timestamp, contract, delta) SELECT "
            "'2026-11-25 14:30+00', 'PORTFOLIO', 1 FROM generate_series(1, 2)"
        )
    finally:
        await conn.close()
    keys = Keys(prefix)
    await xadd_all(redis, keys.greeks, rows(5))
    proc = spawn("writer", writer_env(pg_url, redis_url, prefix))
    code = await asyncio.to_thread(proc.wait, 60)
    text = log_of(proc)
    assert code == 1, text
    assert "db_config_invalid" not in text
    assert "portfolio_greeks_timestamp_contract_key" in text, text
    groups = await redis.xinfo_groups(keys.greeks)
    assert groups == [], "the consumer group is created only once the schema is right"
    assert await redis.xlen(keys.greeks) == 5


async def test_database_dropped_while_it_runs_exits_2(
    spawn: Spawn,
    pg_server_url: str,
    pg_url: str,
    redis_url: str,
    redis: aioredis.Redis,
    prefix: str,
) -> None:
    """No outage first: the next write meets the missing database itself, the same exit 2."""
    async with DBManager(pg_url) as db:
        await db.migrate()
    name = pg_url.rsplit("/", 1)[-1]
    keys = Keys(prefix)
    proc = spawn("writer", writer_env(pg_url, redis_url, prefix))
    await xadd_all(redis, keys.greeks, rows(3))

    async def stored() -> bool:
        async with DBManager(pg_url) as db:
            found = await db.newest_portfolio_row()
        return found is not None

    await wait_for(stored, 30, "the first rows stored")
    admin = await asyncpg.connect(pg_server_url)
    try:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()
    await xadd_all(redis, keys.greeks, rows(3, start=3))
    code = await asyncio.to_thread(proc.wait, 60)
    text = log_of(proc)
    assert code == 2, text
    errors = [line for line in text.splitlines() if " ERROR " in line and "db_config" in line]
    assert len(errors) == 1, text
    assert f'database "{name}" does not exist' in errors[0]


async def test_a_refusal_that_is_no_outage_bad_row_or_configuration_exits_1(
    spawn: Spawn, pg_url: str, redis_url: str, redis: aioredis.Redis, prefix: str
) -> None:
    """A trigger refuses every insert (an error of no known kind): exit 1, so supervisord
    restarts it, not the configuration's exit 2; nothing is acked or dead-lettered."""
    async with DBManager(pg_url) as db:
        await db.migrate()
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'refused by a trigger'; END $$; "
            "CREATE TRIGGER refuse BEFORE INSERT ON portfolio_greeks "
            "FOR EACH ROW EXECUTE FUNCTION refuse()"
        )
    finally:
        await conn.close()
    keys = Keys(prefix)
    await xadd_all(redis, keys.greeks, rows(3))
    proc = spawn("writer", writer_env(pg_url, redis_url, prefix))
    code = await asyncio.to_thread(proc.wait, 60)
    text = log_of(proc)
    assert code == 1, text
    assert "process_failed task consume died: RaiseError" in text, text
    assert "db_config_invalid" not in text
    assert int((await redis.xpending(keys.greeks, WRITER_GROUP))["pending"]) == 3
    assert await redis.exists(keys.dead) == 0

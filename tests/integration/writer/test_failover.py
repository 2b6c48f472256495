"""PostgreSQL failover under a running writer, on real servers of this test: a primary and a
streaming standby made with pg_basebackup. The writer's DATABASE_URL lists both hosts with
`target_session_attrs=read-write`. A switchover (primary stopped, standby promoted) and a server
that turns read-only (SQLSTATE 25006) are outages: the breaker opens, rows go to the buffer and
drain into whichever server accepts writes; nothing is dead-lettered, every row lands once."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from database.db_manager import DBManager
from ops.embedded import PostgresServer
from shared.jsonl import JsonlFile
from shared.names import Keys
from tests.helpers import wait_for
from tests.integration.writer.test_writer_process import rows, writer_env, xadd_all

Spawn = Callable[..., subprocess.Popen[bytes]]
BATCH = 600  # entries added per phase


@pytest.fixture
def pg_pair() -> Iterator[tuple[PostgresServer, PostgresServer]]:
    """A primary and its streaming standby, each in a folder of its own; removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="bridge-test-pg-"))
    primary, standby = PostgresServer(folder / "primary"), PostgresServer(folder / "standby")
    try:
        primary.start()
        standby.init_standby(primary.port)
        standby.start()
        yield primary, standby
    finally:
        for server in (standby, primary):
            with contextlib.suppress(Exception):
                server.thaw()
                server.remove()
        shutil.rmtree(folder, ignore_errors=True)


def two_hosts(primary: PostgresServer, standby: PostgresServer) -> str:
    return (
        f"postgresql://postgres@127.0.0.1:{primary.port},127.0.0.1:{standby.port}/postgres"
        "?target_session_attrs=read-write"
    )


async def fetch(url: str, sql: str) -> object:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def landed(url: str) -> tuple[int, int]:
    """(rows, distinct timestamps) of portfolio_greeks on the server that accepts writes."""
    with contextlib.suppress(asyncpg.UndefinedTableError, OSError):
        total = await fetch(url, "SELECT count(*) FROM portfolio_greeks")
        distinct = await fetch(url, "SELECT count(DISTINCT timestamp) FROM portfolio_greeks")
        return int(total), int(distinct)  # type: ignore[call-overload]
    return 0, 0


async def breaker(redis: aioredis.Redis, keys: Keys) -> str:
    raw = await redis.hget(keys.writer_state_of("writer-1"), "breaker")
    return raw.decode() if isinstance(raw, bytes) else ""


async def buffered(redis: aioredis.Redis, keys: Keys) -> int:
    raw = await redis.hget(keys.writer_state_of("writer-1"), "buffer_rows")
    return int(raw or 0)


async def assert_clean_end(
    redis: aioredis.Redis, keys: Keys, buffer: Path, url: str, n: int
) -> None:
    """Every row once, the breaker closed, the buffer empty, no dead letter."""
    await wait_for(lambda: _is(landed(url), (n, n)), 90, f"{n} rows, each once")
    await wait_for(lambda: _is(breaker(redis, keys), "closed"), 30, "the breaker closed")
    assert JsonlFile(buffer).count() == (0, 0)
    assert await redis.xlen(keys.dead) == 0, "nothing dead-lettered"
    assert await landed(url) == (n, n)


async def _is(value: object, expected: object) -> bool:
    return await value == expected  # type: ignore[misc]


async def _above(value: object, floor: int) -> bool:
    return await value > floor  # type: ignore[misc,operator]


async def test_switchover_buffers_then_drains_every_row_once_into_the_new_primary(
    spawn: Spawn,
    pg_pair: tuple[PostgresServer, PostgresServer],
    redis_url: str,
    redis: aioredis.Redis,
    prefix: str,
    tmp_path: Path,
) -> None:
    primary, standby = pg_pair
    keys, url = Keys(prefix), two_hosts(primary, standby)
    spawn("writer", writer_env(url, redis_url, prefix, BRIDGE_FLUSH_RETRY_S="0.3"))
    await xadd_all(redis, keys.greeks, rows(BATCH))
    await wait_for(lambda: _is(landed(primary.url()), (BATCH, BATCH)), 60, "rows on the primary")

    primary.stop()  # a fast shutdown: the standby has received every committed row
    await xadd_all(redis, keys.greeks, rows(BATCH, start=BATCH))
    await wait_for(lambda: _is(breaker(redis, keys), "open"), 30, "the breaker open")
    await wait_for(lambda: _above(buffered(redis, keys), 0), 30, "rows in the buffer")
    assert await fetch(standby.url(), "SELECT pg_is_in_recovery()") is True

    assert await fetch(standby.url(), "SELECT pg_promote()") is True
    await xadd_all(redis, keys.greeks, rows(BATCH, start=2 * BATCH))
    await assert_clean_end(redis, keys, tmp_path / "buffer.jsonl", url, 3 * BATCH)
    assert await fetch(url, "SELECT inet_server_port()") == standby.port


async def test_a_server_turned_read_only_is_an_outage_not_a_bad_row(
    spawn: Spawn,
    private_pg: PostgresServer,
    redis_url: str,
    redis: aioredis.Redis,
    prefix: str,
    tmp_path: Path,
) -> None:
    """The primary demoted under the writer: its sessions get SQLSTATE 25006 on INSERT."""
    keys, url = Keys(prefix), private_pg.url()
    spawn("writer", writer_env(url, redis_url, prefix, BRIDGE_FLUSH_RETRY_S="0.3"))
    await xadd_all(redis, keys.greeks, rows(BATCH))
    await wait_for(lambda: _is(landed(url), (BATCH, BATCH)), 60, "rows stored")

    await fetch(url, "ALTER SYSTEM SET default_transaction_read_only = on")
    await fetch(url, "SELECT pg_reload_conf()")
    await xadd_all(redis, keys.greeks, rows(BATCH, start=BATCH))
    await wait_for(lambda: _is(breaker(redis, keys), "open"), 30, "the breaker open")
    await wait_for(lambda: _above(buffered(redis, keys), 0), 30, "rows in the buffer")
    reason = await redis.hget(keys.writer_state_of("writer-1"), "reason")
    assert b"ReadOnlySQLTransaction" in (reason or b""), reason
    assert await redis.xlen(keys.dead) == 0

    await fetch(url, "ALTER SYSTEM RESET default_transaction_read_only")
    await fetch(url, "SELECT pg_reload_conf()")
    await assert_clean_end(redis, keys, tmp_path / "buffer.jsonl", url, 2 * BATCH)


async def test_a_writer_pointed_at_a_standby_buffers_until_it_is_promoted(
    spawn: Spawn,
    pg_pair: tuple[PostgresServer, PostgresServer],
    redis_url: str,
    redis: aioredis.Redis,
    prefix: str,
    tmp_path: Path,
) -> None:
    """DATABASE_URL names the standby alone (no target_session_attrs): the connection works,
    every INSERT is refused as read-only; no row is dead-lettered, all land after promotion."""
    primary, standby = pg_pair
    keys = Keys(prefix)
    async with DBManager(primary.url()) as db:
        await db.migrate()
    await wait_for(lambda: _above(fetch(standby.url(), _TABLES), 0), 30, "the schema replicated")
    buffer = tmp_path / "buffer.jsonl"
    spawn("writer", writer_env(standby.url(), redis_url, prefix, BRIDGE_FLUSH_RETRY_S="0.3"))
    await xadd_all(redis, keys.greeks, rows(BATCH))
    await wait_for(lambda: _is(breaker(redis, keys), "open"), 60, "the breaker open")
    assert await redis.xlen(keys.dead) == 0
    primary.stop()
    assert await fetch(standby.url(), "SELECT pg_promote()") is True
    await assert_clean_end(redis, keys, buffer, standby.url(), BATCH)


_TABLES = "SELECT count(*) FROM pg_tables WHERE tablename = 'portfolio_greeks'"

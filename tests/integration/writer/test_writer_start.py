"""The writer's start: the schema is checked before any entry is read; PostgreSQL down at start
is an outage (breaker open, rows buffered); PostgreSQL refusing the writer (bad password, no
such database) is a configuration error: one ERROR line, exit code 2."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis.asyncio as aioredis

from ops.embedded import PostgresServer
from shared.names import Keys
from tests.helpers import wait_for
from tests.integration.writer.test_writer_process import count, pending, rows, writer_env, xadd_all

Spawn = Callable[..., subprocess.Popen[bytes]]
TABLES = {"portfolio_greeks", "api_logs", "greek_snapshots", "trades"}


async def tables(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        found = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
    finally:
        await conn.close()
    return {r["table_name"] for r in found}


def with_db(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


def log_of(proc: subprocess.Popen[bytes]) -> str:
    return Path(proc.log_path).read_text()  # type: ignore[attr-defined]


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if " ERROR " in line]


async def exit_code(proc: subprocess.Popen[bytes], within_s: float) -> int:
    return await asyncio.to_thread(proc.wait, within_s)


async def test_empty_database_gets_the_four_tables_before_any_row(
    spawn: Spawn, pg_url: str, redis_url: str, redis: aioredis.Redis, prefix: str
) -> None:
    assert await tables(pg_url) == set()
    proc = spawn("writer", writer_env(pg_url, redis_url, prefix))

    async def created() -> bool:
        return await tables(pg_url) >= TABLES

    await wait_for(created, 30, "the four tables")
    assert await redis.xlen(Keys(prefix).greeks) == 0, "no row was ever sent"
    assert proc.poll() is None
    assert await count(pg_url) == 0


async def test_wrong_password_exits_2_with_one_line(
    spawn: Spawn, private_pg: PostgresServer, redis_url: str, prefix: str
) -> None:
    right, wrong = secrets.token_hex(8), secrets.token_hex(8)
    admin = await asyncpg.connect(private_pg.url())
    try:
        await admin.execute(f"CREATE ROLE bridge LOGIN SUPERUSER PASSWORD '{right}'")
        # the cluster trusts every local client: ask this role for its password
        hba = private_pg.data_dir / "pg_hba.conf"
        hba.write_text(f"host all bridge 127.0.0.1/32 scram-sha-256\n{hba.read_text()}")
        assert await admin.fetchval("SELECT pg_reload_conf()")
    finally:
        await admin.close()
    url = f"postgresql://bridge:{wrong}@127.0.0.1:{private_pg.port}/postgres"
    good = await asyncpg.connect(url.replace(wrong, right))  # the role itself works
    await good.close()
    proc = spawn("writer", writer_env(url, redis_url, prefix))
    assert await exit_code(proc, 30) == 2
    text = log_of(proc)
    errors = error_lines(text)
    assert len(errors) == 1, text
    assert "password authentication failed" in errors[0]
    assert "bridge:***@" in errors[0]
    assert wrong not in text and right not in text
    assert "Traceback" not in text


async def test_database_that_does_not_exist_exits_2(
    spawn: Spawn, pg_server_url: str, redis_url: str, prefix: str
) -> None:
    missing = f"bridge_missing_{secrets.token_hex(4)}"
    proc = spawn("writer", writer_env(with_db(pg_server_url, missing), redis_url, prefix))
    assert await exit_code(proc, 30) == 2
    text = log_of(proc)
    errors = error_lines(text)
    assert len(errors) == 1, text
    assert f'database "{missing}" does not exist' in errors[0]
    assert "Traceback" not in text


async def test_postgresql_down_at_start_then_back(
    spawn: Spawn, private_pg: PostgresServer, redis_url: str, redis: aioredis.Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    url = private_pg.url()
    await asyncio.to_thread(private_pg.stop)
    proc = spawn("writer", writer_env(url, redis_url, prefix, BRIDGE_FLUSH_RETRY_S="1"))

    async def breaker() -> str:
        raw: Any = await redis.hget(keys.writer_state, "breaker")
        return raw.decode() if raw else ""

    async def is_open() -> bool:
        return await breaker() == "open"

    await wait_for(is_open, 30, "the breaker open while PostgreSQL is down")
    assert proc.poll() is None, log_of(proc)
    await xadd_all(redis, keys.greeks, rows(50))
    await wait_for(lambda: _zero(pending(redis, keys.greeks)), 30, "the rows buffered and acked")
    assert await breaker() == "open"
    await asyncio.to_thread(private_pg.start)
    await wait_for(lambda: _has(count(url), 50), 60, "the 50 rows in PostgreSQL")

    async def is_closed() -> bool:
        return await breaker() == "closed"

    await wait_for(is_closed, 30, "the breaker closed")
    assert await tables(url) >= TABLES
    assert await count(url) == 50
    assert proc.poll() is None
    assert "breaker_open" in log_of(proc)


async def _zero(value: Any) -> bool:
    return await value == 0  # type: ignore[no-any-return]


async def _has(value: Any, n: int) -> bool:
    return await value == n  # type: ignore[no-any-return]

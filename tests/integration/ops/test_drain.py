"""`bridge drain` run as the operator runs it (`python -m ops.cli --env-file F drain`) against a
real PostgreSQL, on a buffer in the writer's own line format: every row lands once, in order,
over several drain transactions; and "busy" (exit 3, nothing changed) while a writer holds the
buffer's lock."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis

from database.db_manager import DBManager
from ops.embedded import free_port
from shared.jsonl import JsonlFile
from shared.models import ApiLogRow, GreeksRow
from shared.names import Keys
from tests.helpers import bridge_env, wait_for
from writer.buffer_drain import DRAIN_CHUNK_ROWS
from writer.lines import encode_line

Spawn = Callable[..., subprocess.Popen[bytes]]
T0 = datetime(2026, 11, 25, 14, 30, tzinfo=UTC)
ROWS = 2 * DRAIN_CHUNK_ROWS + 5_000  # three drain transactions


def ts(i: int) -> datetime:
    return T0 + timedelta(seconds=5 * i)


def buffer_rows(buffer: Path, first: int, n: int) -> list[str]:
    """Append greeks rows first..first+n-1 to the buffer as the writer does, with an api_logs
    row after every 10,000th; returns the api_logs messages."""
    rows: list[GreeksRow | ApiLogRow] = []
    messages = []
    for i in range(first, first + n):
        rows.append(GreeksRow(ts(i), "PORTFOLIO", float(i), 0.1, -0.2, 0.3, 600.0 + i / 100))
        if i % 10_000 == 0:
            messages.append(f"buffered while PostgreSQL was down, row {i}")
            rows.append(ApiLogRow(ts(i), "SOCKET", "WARN", messages[-1], "writer"))
    JsonlFile(buffer).append([encode_line(r) for r in rows])
    return messages


def drain(env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", "--env-file", str(env_file), "drain", *args],
        env=bridge_env(),
        cwd=env_file.parent,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


async def stored(url: str) -> tuple[list[datetime], list[str]]:
    """The greeks timestamps in id order and the api_logs messages in id order."""
    conn = await asyncpg.connect(url)
    try:
        greeks = await conn.fetch("SELECT timestamp FROM portfolio_greeks ORDER BY id")
        logs = await conn.fetch("SELECT message FROM api_logs ORDER BY id")
        return [r[0] for r in greeks], [r[0] for r in logs]
    finally:
        await conn.close()


def write_env(tmp_path: Path, **values: str) -> Path:
    path = tmp_path / "bridge.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return path


async def test_drain_lands_every_row_once_and_empties_the_buffer(
    pg_url: str, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    buffer = tmp_path / "buffer.jsonl"
    env_file = write_env(
        tmp_path,
        DATABASE_URL=pg_url,
        REDIS_URL=redis_url,
        BRIDGE_REDIS_PREFIX=prefix,
        BRIDGE_BUFFER_PATH=str(buffer),
        BRIDGE_SPOOL_PATH=str(tmp_path / "spool.jsonl"),
    )
    messages = buffer_rows(buffer, 0, ROWS)
    done = drain(env_file)
    assert done.returncode == 0, done.stderr
    assert f"drained {ROWS + len(messages)} rows" in done.stdout
    greeks, logs = await stored(pg_url)
    assert greeks == [ts(i) for i in range(ROWS)], "each row once, in buffer order"
    assert [m for m in logs if m in messages] == messages
    assert JsonlFile(buffer).count() == (0, 0)
    again = drain(env_file)
    assert again.returncode == 0 and "buffer empty" in again.stdout
    assert (await stored(pg_url))[0] == greeks


async def test_drain_is_busy_while_a_writer_holds_the_buffer(
    spawn: Spawn,
    pg_url: str,
    redis_url: str,
    redis: aioredis.Redis,
    prefix: str,
    tmp_path: Path,
) -> None:
    """The writer cannot reach its PostgreSQL, so it keeps its buffer (and the lock); the
    operator's drain is refused until the writer is stopped."""
    buffer = tmp_path / "buffer.jsonl"
    common = {
        "REDIS_URL": redis_url,
        "BRIDGE_REDIS_PREFIX": prefix,
        "BRIDGE_BUFFER_PATH": str(buffer),
        "BRIDGE_SPOOL_PATH": str(tmp_path / "spool.jsonl"),
    }
    env_file = write_env(tmp_path, DATABASE_URL=pg_url, **common)
    async with DBManager(pg_url) as db:
        await db.migrate()
    buffer_rows(buffer, 0, 100)
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"  # nothing listens
    writer = spawn("writer", bridge_env(DATABASE_URL=nowhere, BRIDGE_FLUSH_RETRY_S="0.5", **common))
    keys = Keys(prefix)

    async def writer_open() -> bool:
        return await redis.hget(keys.writer_state, "breaker") == b"open"

    await wait_for(writer_open, 30, "the writer running with its breaker open")
    before = buffer.read_bytes()
    busy = drain(env_file)
    assert busy.returncode == 3, busy.stdout + busy.stderr
    assert "busy" in busy.stderr
    assert buffer.read_bytes()[: len(before)] == before, "the buffer is untouched"
    assert (await stored(pg_url))[0] == []
    writer.terminate()
    assert writer.wait(20) == 0
    done = drain(env_file)
    assert done.returncode == 0, done.stderr
    assert (await stored(pg_url))[0] == [ts(i) for i in range(100)]
    assert JsonlFile(buffer).count() == (0, 0)


async def test_drain_buffer_path_drains_the_file_a_dead_writer_left(
    pg_url: str, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    """Each writer has its own buffer: `--buffer PATH` drains another writer's file, and leaves
    this configuration's own buffer alone."""
    own, left = tmp_path / "own.jsonl", tmp_path / "writer-2.jsonl"
    env_file = write_env(
        tmp_path,
        DATABASE_URL=pg_url,
        REDIS_URL=redis_url,
        BRIDGE_REDIS_PREFIX=prefix,
        BRIDGE_BUFFER_PATH=str(own),
        BRIDGE_SPOOL_PATH=str(tmp_path / "spool.jsonl"),
    )
    buffer_rows(own, 0, 10)
    own_before = own.read_bytes()
    buffer_rows(left, 10, 200)
    done = drain(env_file, "--buffer", str(left))
    assert done.returncode == 0, done.stderr
    assert str(left) in done.stdout
    assert (await stored(pg_url))[0] == [ts(i) for i in range(10, 210)]
    assert JsonlFile(left).count() == (0, 0)
    assert own.read_bytes() == own_before, "the configured buffer is not touched"

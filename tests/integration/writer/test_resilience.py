"""Writer resilience against real faults: a private PostgreSQL stopped and started, the writer
killed with SIGKILL (during the outage, and in mid-drain while a lock of the test holds the
drain in its second transaction), a hand-made buffer with a torn last line and a garbage middle
line, an unwritable buffer path and a full disk.

The producer is independent of the bridge's codec: it writes the streams' field format by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import orjson
import redis.asyncio as aioredis

from ops.embedded import PostgresServer
from shared.names import WRITER_GROUP, Keys
from tests.helpers import bridge_env, wait_for

T0 = datetime(2026, 11, 25, 14, 30, tzinfo=UTC)
Spawn = Callable[..., subprocess.Popen[bytes]]
RETRY_S = "1"
DRAIN_CHUNK = 10_000  # rows per drain transaction (the writer's default)
DRAIN_ROWS = 25_000  # buffered during an outage: three drain transactions


def tick(i: int) -> dict[str, str]:
    """Row i as any producer following the stream contract writes it (not through shared.codec)."""
    return {
        "v": "1",
        "ts": (T0 + timedelta(seconds=5 * i)).isoformat(timespec="microseconds"),
        "contract": "PORTFOLIO",
        "delta": repr(float(i)),
        "gamma": repr(0.25),
        "vega": repr(-3.5),
        "theta": repr(12.0),
        "underlying_price": "" if i % 7 == 0 else repr(600.0 + i / 100),
        "account": "DU1234567",
        "mode": "SOCKET",
    }


async def produce(
    redis: aioredis.Redis,
    stream: str,
    start: int,
    stop: int,
    *,
    per_step: int = 25,
    step_s: float = 0.1,
) -> None:
    for i in range(start, stop, per_step):
        async with redis.pipeline(transaction=False) as pipe:
            for j in range(i, min(i + per_step, stop)):
                pipe.xadd(stream, tick(j))  # type: ignore[arg-type]
            await pipe.execute()
        await asyncio.sleep(step_s)


def env(pg_url: str, redis_url: str, prefix: str, buffer: Path, **extra: str) -> dict[str, str]:
    return bridge_env(
        **{
            "DATABASE_URL": pg_url,
            "REDIS_URL": redis_url,
            "BRIDGE_REDIS_PREFIX": prefix,
            "BRIDGE_BUFFER_PATH": str(buffer),
            "BRIDGE_FLUSH_RETRY_S": RETRY_S,
            "BRIDGE_CLAIM_IDLE_S": "1",
            "BRIDGE_WRITER_BATCH": "50",
            **extra,
        }
    )


async def fetchval(url: str, sql: str) -> int:
    try:
        conn = await asyncpg.connect(url, timeout=2)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
        return -1
    try:
        return int(await conn.fetchval(sql))
    except asyncpg.UndefinedTableError:
        return 0
    finally:
        await conn.close()


async def rows_in(url: str) -> int:
    return await fetchval(url, "SELECT count(*) FROM portfolio_greeks")


async def pending(redis: aioredis.Redis, stream: str) -> int:
    try:
        return int((await redis.xpending(stream, WRITER_GROUP))["pending"])
    except aioredis.ResponseError:
        return 0


async def all_acked(redis: aioredis.Redis, stream: str) -> bool:
    """Every entry of the stream handed to the writer and acknowledged."""
    groups = await redis.xinfo_groups(stream)
    last = await redis.xrevrange(stream, count=1)
    if not groups or not last:
        return False
    return bool(groups[0]["last-delivered-id"] == last[0][0] and groups[0]["pending"] == 0)


async def state(redis: aioredis.Redis, keys: Keys) -> dict[str, str]:
    raw = await redis.hgetall(keys.writer_state)
    return {k.decode(): v.decode() for k, v in raw.items()}


async def assert_all_landed(url: str, n: int) -> None:
    assert await rows_in(url) == n
    assert await fetchval(url, "SELECT count(DISTINCT timestamp) FROM portfolio_greeks") == n
    disorder = await fetchval(
        url,
        """
        SELECT count(*) FROM (SELECT timestamp, lag(timestamp) OVER (ORDER BY id) AS prev
        FROM portfolio_greeks) s WHERE prev >= timestamp""",
    )
    assert disorder == 0, "id order differs from timestamp order"
    nulls = await fetchval(
        url, "SELECT count(*) FROM portfolio_greeks WHERE underlying_price IS NULL"
    )
    assert nulls == len([i for i in range(n) if i % 7 == 0])


async def event_count(url: str, like: str) -> int:
    return await fetchval(url, f"SELECT count(*) FROM api_logs WHERE message LIKE '{like}'")


def buffer_empty(buffer: Path) -> bool:
    return not buffer.exists() or buffer.stat().st_size == 0


async def _eq(value: object, expected: int) -> bool:
    return await value == expected  # type: ignore[misc]


async def test_outage_1000_rows_exactly_once_in_order(
    spawn: Spawn,
    private_pg: PostgresServer,
    redis_url: str,
    redis: aioredis.Redis,
    prefix: str,
    *,
    tmp_path: Path,
) -> None:
    keys = Keys(prefix)
    url = private_pg.url()
    buffer = tmp_path / "buf" / "buffer.jsonl"
    proc = spawn("writer", env(url, redis_url, prefix, buffer))
    producer = asyncio.create_task(produce(redis, keys.greeks, 0, 1000, per_step=25, step_s=0.15))
    await wait_for(lambda: _gt(rows_in(url), 100), 30, "rows flowing into PostgreSQL")
    await asyncio.to_thread(private_pg.stop)
    outage_started = datetime.now(UTC)
    await wait_for(lambda: _state_is(redis, keys, "open"), 20, "the breaker to open")
    # a flush retry has been tried and has failed: the breaker stays open, rows keep buffering
    await wait_for(lambda: _log_has(proc, "flush_retry_failed #1"), 20, "a failed flush retry")
    assert (await state(redis, keys))["reason"].startswith("PostgreSQL unreachable")
    assert int((await state(redis, keys))["buffer_rows"]) > 0
    assert buffer.exists() and buffer.stat().st_size > 0
    assert oct(buffer.stat().st_mode & 0o777) == oct(0o600)
    await asyncio.to_thread(private_pg.start)
    await producer
    await wait_for(lambda: _eq(rows_in(url), 1000), 60, "1,000 rows")
    await wait_for(lambda: _state_is(redis, keys, "closed"), 20, "the breaker to close")
    await wait_for(lambda: _eq(pending(redis, keys.greeks), 0), 20, "nothing pending")
    await assert_all_landed(url, 1000)
    assert buffer_empty(buffer)
    status = await state(redis, keys)
    assert status["buffer_rows"] == "0" and status["buffer_bytes"] == "0"
    assert status["last_commit"]
    # the outage in api_logs, with the original timestamps
    await wait_for(lambda: _gt(event_count(url, "%circuit breaker closed%"), 0), 20, "close row")
    assert await event_count(url, "%circuit breaker opened: PostgreSQL unreachable%") == 1
    assert await event_count(url, "%flush retry % failed%") >= 1
    assert await event_count(url, "%buffer drained: % rows in %") >= 1
    opened_at = await fetchval(
        url,
        """SELECT extract(epoch FROM timestamp)::bigint FROM api_logs
                                       WHERE message LIKE '%breaker opened%'""",
    )
    closed_at = await fetchval(
        url,
        """SELECT extract(epoch FROM timestamp)::bigint FROM api_logs
                                       WHERE message LIKE '%breaker closed%'""",
    )
    assert opened_at <= outage_started.timestamp() + 10
    assert closed_at >= opened_at
    assert proc.poll() is None
    log = proc.log_path.read_text()  # type: ignore[attr-defined]
    assert "breaker_open" in log and "breaker_closed" in log


HOLD_KEY = 7_406_517  # the advisory lock the test holds to stop the drain at one row


async def drain_waiting_on_the_test(url: str) -> bool:
    """The writer's COPY waits for the test's advisory lock."""
    waiting = await fetchval(
        url,
        """SELECT count(*) FROM pg_stat_activity
           WHERE datname = current_database() AND wait_event = 'advisory'
             AND query LIKE 'COPY%'""",
    )
    return waiting > 0


async def hold_at_row(url: str, ts: datetime) -> None:
    """A trigger of the test: inserting the row at `ts` waits for the advisory lock HOLD_KEY."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"""
            CREATE FUNCTION test_hold_row() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_advisory_xact_lock({HOLD_KEY}); RETURN NEW; END $$;
            CREATE TRIGGER test_hold BEFORE INSERT ON portfolio_greeks FOR EACH ROW
            WHEN (NEW.timestamp = '{ts.isoformat()}'::timestamptz) EXECUTE FUNCTION test_hold_row();
            """)
    finally:
        await conn.close()


async def test_sigkill_during_outage_and_in_mid_drain(  # noqa: PLR0915  one fault story, step by step
    spawn: Spawn,
    private_pg: PostgresServer,
    redis_url: str,
    redis: aioredis.Redis,
    prefix: str,
    *,
    tmp_path: Path,
) -> None:
    keys = Keys(prefix)
    url = private_pg.url()
    buffer = tmp_path / "buffer.jsonl"
    checkpoint = buffer.with_name(buffer.name + ".offset")
    total = 100 + DRAIN_ROWS
    writer_env = env(url, redis_url, prefix, buffer, BRIDGE_WRITER_BATCH="500")
    first = spawn("writer", writer_env)
    await produce(redis, keys.greeks, 0, 100, per_step=50, step_s=0.05)
    await wait_for(lambda: _eq(rows_in(url), 100), 30, "the first 100 rows")
    # the drain will stop at a row in the middle of its second chunk while the test holds a lock
    await hold_at_row(url, T0 + timedelta(seconds=5 * (100 + DRAIN_CHUNK + DRAIN_CHUNK // 2)))
    await asyncio.to_thread(private_pg.stop)
    producer = asyncio.create_task(
        produce(redis, keys.greeks, 100, total, per_step=500, step_s=0.05)
    )
    await wait_for(lambda: buffer_lines(buffer) > 200, 30, "rows in the buffer")
    first.send_signal(signal.SIGKILL)  # during the outage
    first.wait(10)
    second = spawn("writer", writer_env)  # restarted while PostgreSQL is still down
    await producer
    await wait_for(lambda: all_acked(redis, keys.greeks), 60, "all entries buffered")
    assert buffer_lines(buffer) >= DRAIN_ROWS
    assert not checkpoint.exists(), "nothing drained yet"
    # the writer is frozen until the test holds its lock, so that it cannot drain past the row
    os.kill(second.pid, signal.SIGSTOP)
    try:
        await asyncio.to_thread(private_pg.start)
        holder = await asyncpg.connect(url)
        await holder.execute(f"SELECT pg_advisory_lock({HOLD_KEY})")
    finally:
        os.kill(second.pid, signal.SIGCONT)
    try:
        await wait_for(lambda: drain_waiting_on_the_test(url), 60, "the drain's second chunk")
        partial = await rows_in(url)
        assert 100 < partial < total, partial  # the first chunk committed, not the second
        assert checkpoint.exists(), "the first chunk's checkpoint"
        second.send_signal(signal.SIGKILL)  # in mid-drain
        second.wait(10)
        assert second.returncode == -signal.SIGKILL
    finally:
        await holder.close()  # releases the lock: the dead writer's transaction rolls back
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DROP TRIGGER test_hold ON portfolio_greeks")
    finally:
        await conn.close()
    # A crash between a chunk's COMMIT and its checkpoint (e.g. power lost before the checkpoint's
    # rename reached the disk) leaves the previous checkpoint: here, none. The next writer then
    # replays the committed first chunk, which must not duplicate a row.
    checkpoint.unlink()
    assert await rows_in(url) == partial
    third = spawn("writer", writer_env)
    await wait_for(lambda: _eq(rows_in(url), total), 60, f"{total} rows")
    await wait_for(lambda: _state_is(redis, keys, "closed"), 20, "the breaker closed")
    await wait_for(lambda: buffer_empty(buffer), 20, "an empty buffer")
    await wait_for(lambda: _eq(pending(redis, keys.greeks), 0), 20, "nothing pending")
    await assert_all_landed(url, total)
    await wait_for(lambda: _gt(event_count(url, "%circuit breaker closed%"), 0), 20, "close row")
    assert await event_count(url, "%circuit breaker opened: PostgreSQL unreachable%") >= 1
    assert await event_count(url, "%writer started with % rows %in its buffer%") >= 1
    assert "replay_skipped" in third.log_path.read_text()  # type: ignore[attr-defined]


async def test_torn_last_line_and_garbage_middle_line(
    spawn: Spawn,
    pg_url: str,
    redis_url: str,
    redis: aioredis.Redis,
    prefix: str,
    *,
    tmp_path: Path,
) -> None:
    keys = Keys(prefix)
    buffer = tmp_path / "hand" / "buffer.jsonl"
    buffer.parent.mkdir()
    lines = [orjson.dumps({"stream": "greeks", "fields": tick(i)}) for i in range(300)]
    bad_json = b'{"stream": "greeks", "fields": {"v": "1", "ts": GARBAGE \xff\xfe'
    torn = orjson.dumps({"stream": "greeks", "fields": tick(300)})[:40]
    buffer.write_bytes(b"\n".join([*lines[:150], bad_json, *lines[150:]]) + b"\n" + torn)
    # new rows in the stream go behind the buffered ones
    await produce(redis, keys.greeks, 301, 400, per_step=50, step_s=0)
    spawn("writer", env(pg_url, redis_url, prefix, buffer))
    await wait_for(lambda: _eq(rows_in(pg_url), 399), 60, "every good row")
    await wait_for(lambda: buffer_empty(buffer), 20, "an empty buffer")
    bad = buffer.with_name("buffer.jsonl.bad").read_bytes()
    assert bad_json in bad and torn in bad
    assert await rows_in(pg_url) == 399
    disorder = await fetchval(
        pg_url,
        """
        SELECT count(*) FROM (SELECT timestamp, lag(timestamp) OVER (ORDER BY id) AS prev
        FROM portfolio_greeks) s WHERE prev >= timestamp""",
    )
    assert disorder == 0
    await wait_for(lambda: _gt(_warns(pg_url, "%corrupt line%.bad%"), 0), 20, "a WARN")
    assert await _warns(pg_url, "%torn last line%.bad%") == 1


async def test_unwritable_buffer_path_acks_nothing_and_recovers(
    spawn: Spawn,
    private_pg: PostgresServer,
    redis_url: str,
    redis: aioredis.Redis,
    prefix: str,
    *,
    tmp_path: Path,
) -> None:
    keys = Keys(prefix)
    url = private_pg.url()
    blocker = tmp_path / "blocked"
    blocker.write_text("a regular file where the buffer's folder should be\n")
    buffer = blocker / "buffer.jsonl"  # root cannot create a folder where a file is
    await asyncio.to_thread(private_pg.stop)
    proc = spawn("writer", env(url, redis_url, prefix, buffer))
    await produce(redis, keys.greeks, 0, 200, per_step=50, step_s=0)
    await wait_for(lambda: _log_has(proc, "buffer_unwritable"), 30, "the ERROR line")
    # the writer has retried the batch and kept it unacked again
    await wait_for(lambda: _log_count(proc, "store_unavailable") >= 2, 20, "a second store try")
    delivered = await pending(redis, keys.greeks)
    assert delivered > 0, "the entries handed to the writer must stay unacknowledged"
    assert await redis.xlen(keys.greeks) == 200
    assert (await state(redis, keys))["breaker"] == "open"
    blocker.unlink()  # the path becomes writable again
    await wait_for(lambda: all_acked(redis, keys.greeks), 30, "entries buffered and acked")
    assert buffer_lines(buffer) >= 200
    await asyncio.to_thread(private_pg.start)
    await wait_for(lambda: _eq(rows_in(url), 200), 60, "200 rows")
    await wait_for(lambda: buffer_empty(buffer), 20, "an empty buffer")
    await assert_all_landed(url, 200)
    await wait_for(
        lambda: _gt(_warns(url, "%buffer % unwritable%", "ERROR"), 0),
        20,
        "the ERROR row in api_logs",
    )


async def test_full_disk_acks_nothing_and_resumes_when_space_returns(
    spawn: Spawn,
    private_pg: PostgresServer,
    redis_url: str,
    redis: aioredis.Redis,
    prefix: str,
    *,
    tmp_path: Path,
) -> None:
    keys = Keys(prefix)
    url = private_pg.url()
    buffer = tmp_path / "buffer.jsonl"
    buffer.symlink_to("/dev/full")  # every write: ENOSPC
    await asyncio.to_thread(private_pg.stop)
    proc = spawn("writer", env(url, redis_url, prefix, buffer))
    await produce(redis, keys.greeks, 0, 150, per_step=50, step_s=0)
    await wait_for(lambda: _log_has(proc, "No space left on device"), 30, "the ENOSPC ERROR")
    # the writer has retried the batch and kept it unacked again
    await wait_for(lambda: _log_count(proc, "store_unavailable") >= 2, 20, "a second store try")
    assert await pending(redis, keys.greeks) > 0
    buffer.unlink()  # space returns
    await wait_for(lambda: all_acked(redis, keys.greeks), 30, "entries buffered and acked")
    await asyncio.to_thread(private_pg.start)
    await wait_for(lambda: _eq(rows_in(url), 150), 60, "150 rows")
    await assert_all_landed(url, 150)
    assert proc.poll() is None


# ---- helpers ---------------------------------------------------------------------------------
async def _gt(value: object, floor: int) -> bool:
    return await value > floor  # type: ignore[misc,operator]


async def _state_is(redis: aioredis.Redis, keys: Keys, breaker: str) -> bool:
    return (await state(redis, keys)).get("breaker") == breaker


def buffer_lines(buffer: Path) -> int:
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        return buffer.read_bytes().count(b"\n")
    return 0


async def _warns(url: str, like: str, status: str = "WARN") -> int:
    return await fetchval(
        url,
        f"SELECT count(*) FROM api_logs WHERE status = '{status}' AND message LIKE '{like}'",
    )


def _log_has(proc: subprocess.Popen[bytes], text: str) -> bool:
    return _log_count(proc, text) > 0


def _log_count(proc: subprocess.Popen[bytes], text: str) -> int:
    path: Path = proc.log_path  # type: ignore[attr-defined]
    return path.read_text(errors="replace").count(text) if os.path.exists(path) else 0

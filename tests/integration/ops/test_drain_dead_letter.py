"""`bridge drain` over a buffer holding lines that cannot be stored: PostgreSQL refuses a row (a
CHECK constraint the DBA added) or the codec refuses a line (a non-finite value, an unknown
status). Each such row goes to the `dead` stream with its reason and leaves a WARN api_logs row;
every other row lands, once; the buffer ends empty. Without Redis the WARN row says the dead
letter was not recorded. A database that takes no writes leaves the buffer as it was."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import orjson
import redis.asyncio as aioredis

from database.db_manager import DBManager
from ops.embedded import free_port
from shared.jsonl import JsonlFile, Record
from shared.models import ApiLogRow, GreeksRow
from shared.names import Keys
from tests.integration.ops.test_drain import drain, write_env
from writer.lines import encode_line

T0 = datetime(2026, 11, 25, 14, 30, tzinfo=UTC)
DEAD_PREFIX = "dead letter from `bridge drain`: "


def ts(i: int) -> datetime:
    return T0 + timedelta(seconds=5 * i)


def greeks(i: int, delta: float = 0.5) -> Record:
    return encode_line(GreeksRow(ts(i), "PORTFOLIO", delta, 0.1, -0.2, 0.3, 600.0 + i))


def api_log(i: int, status: str = "INFO") -> Record:
    line = encode_line(ApiLogRow(ts(i), "SOCKET", "INFO", f"buffered note {i}", "writer"))
    line["fields"]["status"] = status
    return line


def setup(tmp_path: Path, lines: list[Record], **env: str) -> Path:
    """The buffer holding `lines`, and an env file for `bridge drain` with `env`."""
    buffer = tmp_path / "buffer.jsonl"
    JsonlFile(buffer).append(lines)
    values = {
        "BRIDGE_BUFFER_PATH": str(buffer),
        "BRIDGE_SPOOL_PATH": str(tmp_path / "spool.jsonl"),
        **env,
    }
    return write_env(tmp_path, **values)


async def sql(url: str, *statements: str) -> None:
    async with DBManager(url) as db:
        await db.migrate()
    conn = await asyncpg.connect(url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def stored(url: str) -> tuple[list[tuple[datetime, float]], list[tuple[str, str]]]:
    """(timestamp, delta) of the greeks rows and (status, message) of the api_logs rows."""
    conn = await asyncpg.connect(url)
    try:
        g = await conn.fetch("SELECT timestamp, delta FROM portfolio_greeks ORDER BY id")
        a = await conn.fetch("SELECT status, message FROM api_logs ORDER BY id")
        return [(r[0], r[1]) for r in g], [(r[0], r[1]) for r in a]
    finally:
        await conn.close()


def dead_warns(logs: list[tuple[str, str]]) -> list[str]:
    return [m for status, m in logs if m.startswith(DEAD_PREFIX) and status == "WARN"]


async def dead_letters(redis: aioredis.Redis, prefix: str) -> list[dict[str, str]]:
    entries: list[tuple[bytes, dict[bytes, bytes]]] = await redis.xrange(Keys(prefix).dead)  # type: ignore[assignment]
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]


CHECK = "ALTER TABLE portfolio_greeks ADD CONSTRAINT delta_sane CHECK (delta BETWEEN -1e6 AND 1e6)"


async def test_rows_postgresql_refuses_are_dead_lettered_and_the_rest_lands(
    pg_url: str, redis_url: str, redis: aioredis.Redis, prefix: str, tmp_path: Path
) -> None:
    await sql(pg_url, CHECK)
    lines = [greeks(0), greeks(1), greeks(2, delta=1e9), api_log(3, status="LOUD"), greeks(4)]
    lines.append(api_log(5))
    env_file = setup(
        tmp_path, lines, DATABASE_URL=pg_url, REDIS_URL=redis_url, BRIDGE_REDIS_PREFIX=prefix
    )
    done = drain(env_file)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "drained 6 rows" in done.stdout
    greeks_rows, logs = await stored(pg_url)
    assert greeks_rows == [(ts(0), 0.5), (ts(1), 0.5), (ts(4), 0.5)], "the refused row alone"
    assert ("INFO", "buffered note 5") in logs
    assert not any(m == "buffered note 3" for _, m in logs)

    dead = await dead_letters(redis, prefix)
    by_stream = {d["stream"]: d for d in dead}
    assert len(dead) == 2 and set(by_stream) == {"buffer:greeks", "buffer:api_logs"}, dead
    refused = by_stream["buffer:greeks"]
    assert refused["id"] == "buffer"
    assert "database refused the row" in refused["reason"]
    assert "delta_sane" in refused["reason"]
    assert float(refused["f.delta"]) == 1e9 and datetime.fromisoformat(refused["f.ts"]) == ts(2)
    bad_log = by_stream["buffer:api_logs"]
    assert bad_log["reason"].startswith("buffer line: status 'LOUD' is not one of")
    assert bad_log["f.message"] == "buffered note 3"

    warns = dead_warns(logs)
    where = f"moved to {Keys(prefix).dead}"
    assert len(warns) == 2, logs
    assert any(w.startswith(f"{DEAD_PREFIX}buffer:greeks {where}: ") for w in warns)
    assert any("delta_sane" in w for w in warns)
    assert any(w.startswith(f"{DEAD_PREFIX}buffer:api_logs {where}: buffer line:") for w in warns)
    assert JsonlFile(tmp_path / "buffer.jsonl").count() == (0, 0)


async def test_without_redis_the_warn_row_says_the_dead_letter_was_not_recorded(
    pg_url: str, tmp_path: Path
) -> None:
    """No REDIS_URL: a non-finite value (only the codec sees it: the chunk goes through the
    codec) is still refused, and its WARN row says where it did not go."""
    await sql(pg_url)
    lines = [greeks(0), greeks(1), greeks(2), greeks(3)]
    lines[1]["fields"]["gamma"] = "nan"
    lines[2]["fields"]["contract"] = "SPY\tOPT"  # an unusual but valid contract
    env_file = setup(tmp_path, lines, DATABASE_URL=pg_url)
    done = drain(env_file)
    assert done.returncode == 0, done.stdout + done.stderr
    greeks_rows, logs = await stored(pg_url)
    assert [t for t, _ in greeks_rows] == [ts(0), ts(2), ts(3)]
    assert dead_warns(logs) == [
        f"{DEAD_PREFIX}buffer:greeks not recorded (Redis unavailable): "
        "buffer line: gamma 'nan' is not finite"
    ]
    assert JsonlFile(tmp_path / "buffer.jsonl").count() == (0, 0)


async def test_redis_unreachable_the_row_is_still_taken_out_and_logged(
    pg_url: str, tmp_path: Path
) -> None:
    await sql(pg_url, CHECK)
    nowhere = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens
    env_file = setup(
        tmp_path, [greeks(0, delta=-5e6), greeks(1)], DATABASE_URL=pg_url, REDIS_URL=nowhere
    )
    done = drain(env_file)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "dead_letter_failed" in done.stdout + done.stderr
    greeks_rows, logs = await stored(pg_url)
    assert greeks_rows == [(ts(1), 0.5)]
    (warn,) = dead_warns(logs)
    assert warn.startswith(f"{DEAD_PREFIX}buffer:greeks not recorded (Redis unavailable): ")
    assert "delta_sane" in warn


async def test_a_database_taking_no_writes_leaves_the_buffer_for_the_next_drain(
    pg_url: str, tmp_path: Path
) -> None:
    """A read-only database (a standby after a failover) is an outage, not bad rows: nothing
    is dead-lettered, the drain says it is incomplete (exit 1), and the next drain lands every
    row once."""
    db_name = pg_url.rsplit("/", 1)[-1]
    await sql(pg_url, f'ALTER DATABASE "{db_name}" SET default_transaction_read_only = on')
    plain = [greeks(0), greeks(1)]
    unusual = [greeks(2), greeks(3)]
    unusual[0]["fields"]["contract"] = "SPY\\OPT"  # the codec's route, not COPY text
    for lines, name in ((plain, "plain"), (unusual, "unusual")):
        folder = tmp_path / name
        folder.mkdir()
        env_file = setup(folder, lines, DATABASE_URL=pg_url)
        buffer = folder / "buffer.jsonl"
        before = buffer.read_bytes()
        failed = drain(env_file)
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert "drain incomplete" in failed.stderr
        assert "ReadOnlySQLTransactionError" in failed.stderr
        # kept as it was (the drain's own audit rows about the failure come after it)
        assert buffer.read_bytes().startswith(before)
        assert [orjson.loads(x) for x in before.splitlines()] == lines
    assert await stored(pg_url) == ([], [])

    await sql(
        pg_url,
        "SET default_transaction_read_only = off",
        f'ALTER DATABASE "{db_name}" RESET default_transaction_read_only',
    )
    for name in ("plain", "unusual", "plain"):
        done = drain(tmp_path / name / "bridge.env")
        assert done.returncode == 0, done.stdout + done.stderr
    greeks_rows, logs = await stored(pg_url)
    assert [t for t, _ in greeks_rows] == [ts(0), ts(1), ts(2), ts(3)]
    assert dead_warns(logs) == []

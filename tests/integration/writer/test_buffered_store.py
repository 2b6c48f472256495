"""The writer's buffered store: the breaker's state machine, the drain's COPY-text shortcut
against the codec, and data errors (not outages) for stream rows and for buffered rows alike."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import orjson
import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st

from database.db_manager import DBManager
from shared.codec import decode_greeks, encode_greeks
from shared.models import ApiLogRow, GreeksRow
from shared.names import Keys
from tests.helpers import bridge_env, wait_for
from writer.breaker import Breaker, State
from writer.lines import copy_line, decode_line, encode_line, raw_line

Spawn = Callable[..., subprocess.Popen[bytes]]
T0 = datetime(2026, 11, 25, 14, 30, tzinfo=UTC)


def test_breaker_opens_retries_on_period_and_closes() -> None:
    b = Breaker(retry_s=60)
    assert not b.is_open and not b.retry_due(0)
    assert b.open("refused", now=T0, mono=100.0)
    assert not b.open("refused again", now=T0, mono=101.0)  # already open: no change
    assert b.state is State.OPEN and b.since == T0 and b.reason == "refused again"
    assert not b.retry_due(160.9)
    assert b.retry_due(161.0)
    b.retry_failed("still refused", mono=161.0)
    assert b.failed_retries == 1 and not b.retry_due(220.0) and b.retry_due(221.0)
    assert b.close(now=T0 + timedelta(minutes=2))
    assert not b.close(now=T0)
    assert b.state is State.CLOSED and b.reason == "" and b.failed_retries == 0


text = st.text(st.characters(codec="utf-8"), max_size=12)
plain = st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=70)
finite = st.floats(allow_nan=False, allow_infinity=False).map(repr)
number_text = st.one_of(  # mostly what producers write, then everything odd
    finite,
    finite,
    finite,
    finite,
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(
        [
            "1.",
            ".5",
            "+1.5",
            "1e400",
            "-1e-400",
            "1_000",
            " 1",
            "nan",
            "",
            "\\N",
            "0x10",
            "1e5",
            "-0.0",
            "1e308",
            "-1.7976931348623157e308",
        ]
    ),
    text,
)
good_ts = st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat())
ts_text = st.one_of(
    good_ts,
    good_ts,
    good_ts,
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.sampled_from(
        [
            "2026-11-25T24:00:00+00:00",
            "2026-11-25T14:30:60+00:00",
            "2026-11-25 14:30:00+00:00",
            "2026-11-25T14:30:00Z",
            "2026-11-25T14:30:00",
            "2026-02-30T00:00:00+00:00",
            "0000-01-01T00:00:00+00:00",
            "2026-11-25T14:30:00+24:00",
        ]
    ),
    text,
)
contract_text = st.one_of(plain, plain, st.just("PORTFOLIO"), text)


@settings(max_examples=400, deadline=None)
@given(
    st.fixed_dictionaries(
        {
            "v": st.sampled_from(["1", "2", ""]),
            "ts": ts_text,
            "contract": contract_text,
            "delta": number_text,
            "gamma": number_text,
            "vega": number_text,
            "theta": number_text,
        },
        optional={"underlying_price": number_text, "account": text, "mode": text},
    )
)
def test_copy_line_is_never_more_permissive_than_the_codec(fields: dict[str, str]) -> None:
    line = copy_line(fields)
    if line is None:
        return
    row = decode_greeks(fields)
    assert isinstance(row, GreeksRow), f"copy_line took what the codec refuses: {fields!r}"
    ts, contract, *numbers = line.split("\t")
    assert datetime.fromisoformat(ts) == row.ts and contract == row.contract
    assert [float(x) for x in numbers[:4]] == [row.delta, row.gamma, row.vega, row.theta]
    assert (numbers[4] == "\\N") == (row.underlying_price is None)


@settings(max_examples=400, deadline=None)
@given(
    st.fixed_dictionaries(
        {
            "v": st.sampled_from(["1", "2"]),
            "ts": ts_text,
            "contract": contract_text,
            "delta": number_text,
            "gamma": number_text,
            "vega": number_text,
            "theta": number_text,
            "underlying_price": number_text,
            "account": st.one_of(plain, text),
            "mode": st.one_of(plain, text),
        },
    )
)
def test_raw_line_is_never_more_permissive_than_the_codec(fields: dict[str, str]) -> None:
    line = orjson.dumps({"stream": "greeks", "fields": fields})
    fast = raw_line(line)
    if fast is None:
        return
    assert fast.line == line
    row = decode_greeks(fields)
    assert isinstance(row, GreeksRow), f"raw_line took what the codec refuses: {fields!r}"
    assert fast.copy.decode() == copy_line(fields)


def test_raw_line_takes_the_writers_own_lines() -> None:
    row = GreeksRow(T0, "PORTFOLIO", 1.25, -0.5, 3e-9, 12.0, 601.5, "DU1", "SOCKET")
    fast = raw_line(orjson.dumps(encode_line(row)))
    assert fast is not None
    assert (
        fast.copy
        == (
            f"{T0.isoformat(timespec='microseconds')}\tPORTFOLIO\t1.25\t-0.5\t3e-09\t12.0\t601.5"
            "\tDU1"
        ).encode()
    )
    assert (
        raw_line(orjson.dumps(encode_line(ApiLogRow(T0, "SOCKET", "INFO", "x", "writer")))) is None
    )
    assert raw_line(b'{"stream":"greeks"}') is None


def test_buffer_line_round_trip() -> None:
    row = GreeksRow(T0, "PORTFOLIO", 1.25, -0.5, 3e-9, 12.0, None, "DU1", "SOCKET")
    record = orjson.loads(orjson.dumps(encode_line(row)))
    assert decode_line(record) == row
    assert copy_line(record["fields"]) == (
        f"{T0.isoformat(timespec='microseconds')}\tPORTFOLIO\t1.25\t-0.5\t3e-09\t12.0\t\\N\tDU1"
    )
    assert decode_line({"stream": "nope", "fields": {}}) is not None
    assert not isinstance(decode_line({"stream": "greeks", "fields": [1]}), GreeksRow)


def _row(i: int, delta: float | None = None) -> dict[str, str]:
    return encode_greeks(
        GreeksRow(
            T0 + timedelta(seconds=5 * i),
            "PORTFOLIO",
            float(i) if delta is None else delta,
            0.1,
            0.2,
            0.3,
            600.0,
        )
    )


async def _schema_with_check(pg_url: str) -> None:
    """The real schema plus a CHECK the codec knows nothing about: a data error, not an outage."""
    db = DBManager(pg_url)
    async with db:
        await db.migrate()
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(
            "ALTER TABLE portfolio_greeks ADD CONSTRAINT delta_sane CHECK (delta > -1000000)"
        )
    finally:
        await conn.close()


async def _count(pg_url: str, sql: str) -> int:
    conn = await asyncpg.connect(pg_url)
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


async def _eq(value: object, expected: int) -> bool:
    return await value == expected  # type: ignore[misc]


def _env(pg_url: str, redis_url: str, prefix: str, buffer: Path) -> dict[str, str]:
    return bridge_env(
        DATABASE_URL=pg_url,
        REDIS_URL=redis_url,
        BRIDGE_REDIS_PREFIX=prefix,
        BRIDGE_BUFFER_PATH=str(buffer),
        BRIDGE_FLUSH_RETRY_S="0.5",
        BRIDGE_WRITER_BATCH="20",
    )


async def test_refused_rows_from_the_stream_and_from_the_buffer_are_dead_lettered(
    spawn: Spawn,
    pg_url: str,
    redis_url: str,
    redis: aioredis.Redis,
    prefix: str,
    *,
    tmp_path: Path,
) -> None:
    keys = Keys(prefix)
    await _schema_with_check(pg_url)
    buffer = tmp_path / "buffer.jsonl"
    buffered = [_row(i, -5e6 if i == 20 else None) for i in range(50)]  # row 20 refused
    buffer.write_bytes(
        b"".join(orjson.dumps({"stream": "greeks", "fields": f}) + b"\n" for f in buffered)
    )
    streamed = [_row(i, -5e6 if i == 70 else None) for i in range(50, 100)]  # row 70 refused
    async with redis.pipeline(transaction=False) as pipe:
        for f in streamed:
            pipe.xadd(keys.greeks, f)  # type: ignore[arg-type]
        await pipe.execute()
    proc = spawn("writer", _env(pg_url, redis_url, prefix, buffer))
    await wait_for(
        lambda: _eq(_count(pg_url, "SELECT count(*) FROM portfolio_greeks"), 98), 60, "98 good rows"
    )
    await wait_for(lambda: _eq(redis.xlen(keys.dead), 2), 20, "two dead letters")
    dead = [fields for _, fields in await redis.xrange(keys.dead)]
    assert {d[b"f.ts"] for d in dead} == {buffered[20]["ts"].encode(), streamed[20]["ts"].encode()}
    assert all(b"delta_sane" in d[b"reason"] for d in dead)
    assert {d[b"stream"] for d in dead} == {b"buffer:greeks", keys.greeks.encode()}
    disorder = await _count(
        pg_url,
        """
        SELECT count(*) FROM (SELECT timestamp, lag(timestamp) OVER (ORDER BY id) AS prev
        FROM portfolio_greeks) s WHERE prev >= timestamp""",
    )
    assert disorder == 0
    await wait_for(
        lambda: _eq(
            _count(
                pg_url,
                "SELECT count(*) FROM api_logs WHERE status = "
                "'WARN' AND message LIKE '%dead letter%'",
            ),
            2,
        ),
        20,
        "two WARN rows",
    )
    # a data error is no outage: the breaker never opened, nothing loops
    assert (
        await _count(pg_url, "SELECT count(*) FROM api_logs WHERE message LIKE '%breaker opened%'")
        == 0
    )
    # (the buffer found at start-up kept it open until drained: one close, no outage)
    await wait_for(
        lambda: _eq(
            _count(pg_url, "SELECT count(*) FROM api_logs WHERE message LIKE '%breaker closed%'"), 1
        ),
        20,
        "the close",
    )
    await asyncio.sleep(1.0)
    state = await redis.hgetall(keys.writer_state)
    assert state[b"breaker"] == b"closed" and state[b"buffer_rows"] == b"0"
    assert buffer.stat().st_size == 0
    assert await redis.xlen(keys.dead) == 2
    assert "breaker_open PostgreSQL" not in proc.log_path.read_text()  # type: ignore[attr-defined]


async def test_a_database_that_refuses_the_writer_dead_letters_nothing(
    spawn: Spawn,
    pg_url: str,
    redis_url: str,
    redis: aioredis.Redis,
    prefix: str,
    *,
    tmp_path: Path,
) -> None:
    """Not an outage and not a bad row (here: no such database): a configuration error, met at
    start before any entry is read; exit code 2 (supervisord ends it FATAL, no loop); no row is
    dead-lettered, every entry stays in the stream, unread."""
    keys = Keys(prefix)
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(30):
            pipe.xadd(keys.greeks, _row(i))  # type: ignore[arg-type]
        await pipe.execute()
    missing = pg_url.rsplit("/", 1)[0] + "/no_such_database"
    proc = spawn("writer", _env(missing, redis_url, prefix, tmp_path / "buffer.jsonl"))
    await wait_for(lambda: proc.poll() is not None, 30, "the writer to exit")
    assert proc.returncode == 2
    assert await redis.xlen(keys.dead) == 0
    assert await redis.xlen(keys.greeks) == 30
    assert await redis.xinfo_groups(keys.greeks) == [], "nothing was read"
    assert "PostgreSQL refused the writer" in proc.log_path.read_text()  # type: ignore[attr-defined]

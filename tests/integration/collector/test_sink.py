"""The collector's sink against a real Redis: the spool while Redis is unreachable (a closed
loopback port), its replay in order, and a replay that Redis refuses half way."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from collector.__main__ import REDIS_TIMEOUT_S, make_redis
from collector.sink import REPLAY_CHUNK_ROWS, Sink
from ops.embedded import free_port
from shared.codec import decode_data_entry
from shared.config import load_settings
from shared.jsonl import JsonlFile
from shared.models import ApiLogRow, ExposureRow, GreeksRow
from shared.names import Keys

T0 = datetime(2026, 11, 25, 14, 30, tzinfo=UTC)


def greeks(i: int) -> GreeksRow:
    ts = T0 + timedelta(seconds=5 * i)
    return GreeksRow(ts, "PORTFOLIO", float(i), 0.5, 1.5, -2.5, 600.0, "DU1", "SOCKET")


def api_log(i: int) -> ApiLogRow:
    return ApiLogRow(T0 + timedelta(seconds=i), "SOCKET", "INFO", f"log {i}", "collector")


@pytest.fixture
async def unreachable() -> AsyncIterator[aioredis.Redis]:
    """The collector's own client (no retries) for a loopback port nobody listens on."""
    settings = load_settings({"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}, dotenv=None)
    client = make_redis(settings)
    try:
        yield client
    finally:
        await client.aclose()


async def deltas(redis: aioredis.Redis, key: str) -> list[float]:
    out = []
    for _id, fields in await redis.xrange(key):
        row = decode_data_entry(fields)  # the tick's exposure rows ride the same stream
        assert isinstance(row, GreeksRow | ExposureRow)
        if isinstance(row, GreeksRow):
            out.append(row.delta)
    return out


async def test_an_empty_publish_neither_probes_redis_nor_writes_the_spool(
    unreachable: aioredis.Redis, prefix: str, tmp_path: Path
) -> None:
    spool = JsonlFile(tmp_path / "spool.jsonl")
    sink = Sink(unreachable, Keys(prefix), spool)
    assert await sink.publish([greeks(0)], []) == "spool"
    assert not sink.redis_up
    assert await sink.publish([], []) == "redis"  # nothing to hand off: nowhere to put it
    assert spool.count()[0] == 1 and sink.spooled_total == 1


async def test_redis_still_down_at_the_replay_is_warned_once(
    unreachable: aioredis.Redis, prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink = Sink(unreachable, Keys(prefix), JsonlFile(tmp_path / "spool.jsonl"))
    with caplog.at_level(logging.INFO, logger="collector.sink"):
        assert await sink.publish([greeks(0)], []) == "spool"
        assert await sink.replay() == 0  # the heartbeat's try: still refused
        assert await sink.publish([greeks(1)], []) == "spool"
    assert [r.getMessage().split()[0] for r in caplog.records] == ["redis_down"]
    assert sink.spool.count()[0] == 2 and sink.replayed_total == 0


async def test_a_spool_left_by_an_earlier_run_goes_to_redis_before_new_rows(
    unreachable: aioredis.Redis, redis: aioredis.Redis, prefix: str, tmp_path: Path
) -> None:
    keys = Keys(prefix)
    path = tmp_path / "spool.jsonl"
    earlier = Sink(unreachable, keys, JsonlFile(path))
    for i in range(3):
        assert await earlier.publish([greeks(i)], []) == "spool"
    # a restarted collector, Redis back: its first publish replays the spool first
    sink = Sink(redis, keys, JsonlFile(path))
    assert await sink.publish([greeks(3)], []) == "redis"
    assert await deltas(redis, keys.greeks) == [0.0, 1.0, 2.0, 3.0]
    assert sink.replayed_total == 3 and JsonlFile(path).is_empty()


async def test_spool_records_that_are_no_stream_entry_are_dropped_at_replay(
    redis: aioredis.Redis, prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keys = Keys(prefix)
    spool = JsonlFile(tmp_path / "spool.jsonl")
    spool.append(
        [
            {"stream": "orders", "fields": {"v": "1"}},
            {"stream": "greeks", "fields": "not a mapping"},
            {"fields": {"v": "1"}},
        ]
    )
    sink = Sink(redis, keys, spool)
    with caplog.at_level(logging.INFO, logger="collector.sink"):
        assert await sink.replay() == 0
    assert spool.is_empty() and sink.redis_up
    assert await redis.exists(keys.greeks, keys.api_logs, keys.collector_last) == 0
    assert "spool_replayed" not in caplog.text


async def test_a_replay_refused_half_way_resumes_after_the_last_chunk_sent(
    unreachable: aioredis.Redis,
    redis: aioredis.Redis,
    prefix: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis accepts the first chunk and refuses the second (here: the greeks key holds a
    string, so XADD answers WRONGTYPE): the first stays sent, the checkpoint keeps it from
    being sent again, and the next replay sends the rest in order."""
    keys = Keys(prefix)
    path = tmp_path / "spool.jsonl"
    logs = [api_log(i) for i in range(REPLAY_CHUNK_ROWS)]  # exactly the first chunk
    assert (
        await Sink(unreachable, keys, JsonlFile(path)).publish([greeks(i) for i in range(5)], logs)
        == "spool"
    )
    await redis.set(keys.greeks, "in the way")
    sink = Sink(redis, keys, JsonlFile(path))
    with caplog.at_level(logging.INFO, logger="collector.sink"):
        assert await sink.replay() == REPLAY_CHUNK_ROWS
    assert "spool_replay_partial 500 entries" in caplog.text
    assert not sink.redis_up and sink.replayed_total == REPLAY_CHUNK_ROWS
    assert await redis.xlen(keys.api_logs) == REPLAY_CHUNK_ROWS
    await redis.delete(keys.greeks)
    assert await sink.replay() == 5
    assert await redis.xlen(keys.api_logs) == REPLAY_CHUNK_ROWS  # nothing sent twice
    assert await deltas(redis, keys.greeks) == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert sink.redis_up and JsonlFile(path).is_empty()


async def test_a_redis_that_does_not_answer_costs_one_timeout_then_the_spool(
    prefix: str, tmp_path: Path
) -> None:
    """A frozen Redis (it accepts, never answers): the collector's client tries once, so the
    rows reach the spool after one socket timeout, not after redis-py's retries."""
    connections: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)  # and never a reply

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = load_settings({"REDIS_URL": f"redis://127.0.0.1:{port}/0"}, dotenv=None)
    client = make_redis(settings)
    try:
        sink = Sink(client, Keys(prefix), JsonlFile(tmp_path / "spool.jsonl"))
        started = time.monotonic()
        assert await sink.publish([greeks(0)], []) == "spool"
        assert time.monotonic() - started < 2 * REDIS_TIMEOUT_S
        assert len(connections) == 1
    finally:
        await client.aclose()
        for writer in connections:
            writer.close()
        server.close()
        await server.wait_closed()

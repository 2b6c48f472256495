"""The collector's side of the watchdog contract against a real Redis: `pause_until`, the
`control` stream read from where the collector started, and the link calls while Redis is
unreachable (best effort: logged, never raised)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from collector.__main__ import make_redis
from collector.link import Command, ControlReader, LinkPublisher
from collector.sink import REDIS_DOWN
from collector.transport import LinkEvent, LinkState
from ops.embedded import free_port
from shared.config import load_settings
from shared.names import Keys

NOW = datetime(2026, 11, 25, 14, 30, tzinfo=UTC)


@pytest.fixture
async def unreachable() -> AsyncIterator[aioredis.Redis]:
    settings = load_settings({"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}, dotenv=None)
    client = make_redis(settings)
    try:
        yield client
    finally:
        await client.aclose()


async def test_pause_until_counts_only_a_valid_time_in_the_future(
    redis: aioredis.Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    link = LinkPublisher(redis, keys, "SOCKET", 5.0)
    assert await link.pause_until(NOW) is None  # absent
    for stale in (NOW, NOW - timedelta(seconds=1), "tomorrow", "2026-11-25T15:00:00"):
        await redis.set(
            keys.pause_until, stale.isoformat() if isinstance(stale, datetime) else stale
        )
        assert await link.pause_until(NOW) is None, stale
    later = NOW + timedelta(minutes=5)
    await redis.set(keys.pause_until, later.isoformat())
    assert await link.pause_until(NOW) == later


async def test_control_is_read_from_the_newest_entry_at_start_on(
    redis: aioredis.Redis, prefix: str
) -> None:
    """A command left from before the collector started is not obeyed again; the ones added
    afterwards are, in order, each once."""
    keys = Keys(prefix)
    await redis.xadd(keys.control, {"cmd": "reconnect", "id": "old"})
    reader = ControlReader(redis, keys, block_ms=50)
    assert await reader.read() == []
    first = (await redis.xadd(keys.control, {"cmd": "reauth", "id": "c1"})).decode()
    second = (await redis.xadd(keys.control, {"cmd": "jump", "id": "c2"})).decode()
    assert await reader.read() == [
        (first, Command("reauth", "c1")),
        (second, "unknown command 'jump'"),
    ]
    assert await reader.read() == []


async def test_control_created_after_the_start_is_read_from_its_first_entry(
    redis: aioredis.Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    reader = ControlReader(redis, keys, block_ms=50)
    assert await reader.read() == []
    assert reader.last_id == "0-0"
    entry_id = (await redis.xadd(keys.control, {"cmd": "reconnect", "id": "c1"})).decode()
    assert await reader.read() == [(entry_id, Command("reconnect", "c1"))]


async def test_the_link_calls_survive_an_unreachable_redis(
    unreachable: aioredis.Redis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    link = LinkPublisher(unreachable, Keys(prefix), "SOCKET", 5.0)
    event = LinkEvent(LinkState.DISCONNECTED, NOW, "peer closed", code=1100)
    with caplog.at_level(logging.WARNING, logger="collector.link"):
        await link.publish_event(event, NOW)
        assert await link.beat(NOW) is False
        await link.last_beat(NOW)
        assert await link.pause_until(NOW) is None
    assert link.state is LinkState.DISCONNECTED and link.code == "1100"  # kept for the next write
    words = [r.getMessage().split()[0] for r in caplog.records]
    assert words == ["link_event_unpublished", "pause_until_unreadable"]
    with pytest.raises(REDIS_DOWN):
        await ControlReader(unreachable, Keys(prefix)).read()  # the caller backs off

"""Entries Redis loses in a crash are sent again, in order, by the checked XADD + journal."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from collector.journal import CheckedStreams, Entry, RecentJournal
from ops.embedded import RedisServer


def entry(i: int, stream: str = "greeks") -> dict[str, object]:
    return {"stream": stream, "fields": {"v": "1", "n": str(i)}}


def streams(prefix: str) -> dict[str, str]:
    return {"greeks": f"{prefix}greeks", "api_logs": f"{prefix}api_logs"}


async def numbers(client: aioredis.Redis, key: str) -> list[int]:
    return [int(f[b"n"]) for _, f in await client.xrange(key)]


def checked(client: aioredis.Redis, prefix: str, path: Path | None) -> CheckedStreams:
    return CheckedStreams(
        client, f"{prefix}collector_last", streams(prefix), RecentJournal(path, keep=50)
    )


async def test_adds_in_order_and_moves_the_marker(
    redis: aioredis.Redis, prefix: str, tmp_path: Path
) -> None:
    c = checked(redis, prefix, tmp_path / "j")
    await c.add([entry(0), entry(1, "api_logs"), entry(2)])
    await c.add([entry(3)])
    assert await numbers(redis, f"{prefix}greeks") == [0, 2, 3]
    assert await numbers(redis, f"{prefix}api_logs") == [1]
    assert (await redis.get(f"{prefix}collector_last")).decode() == c.expected
    assert len(RecentJournal(tmp_path / "j")) == 4


async def simulate_crash_losing_last(redis: aioredis.Redis, prefix: str, n: int) -> None:
    """What Redis looks like after a kill with AOF everysec: the last n XADDs and the marker
    SET made with them are gone (they were persisted, or lost, together)."""
    key = f"{prefix}greeks"
    items = await redis.xrange(key)
    lost = [i for i, _ in items[-n:]]
    await redis.xdel(key, *lost)
    await redis.set(f"{prefix}collector_last", items[-n - 1][0])


async def test_lost_tail_is_resent_before_new_entries(
    redis: aioredis.Redis, prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    c = checked(redis, prefix, tmp_path / "j")
    for i in range(10):
        await c.add([entry(i)])
    await simulate_crash_losing_last(redis, prefix, 3)
    with caplog.at_level(logging.WARNING):
        resent = await c.add([entry(10), entry(11)])
    assert resent == 3
    assert await numbers(redis, f"{prefix}greeks") == list(range(12))
    assert "redis_lost_entries" in caplog.text


async def test_restarted_collector_resends_from_its_journal(
    redis: aioredis.Redis, prefix: str, tmp_path: Path
) -> None:
    first = checked(redis, prefix, tmp_path / "j")
    for i in range(6):
        await first.add([entry(i)])
    await simulate_crash_losing_last(redis, prefix, 2)
    again = checked(redis, prefix, tmp_path / "j")  # a new process, same journal file
    assert await again.add([entry(6)]) == 2
    assert await numbers(redis, f"{prefix}greeks") == list(range(7))


async def test_redis_restarted_empty_resends_the_journal(
    private_redis: RedisServer, prefix: str, tmp_path: Path
) -> None:
    client = aioredis.Redis.from_url(private_redis.url())
    c = checked(client, prefix, tmp_path / "j")
    for i in range(5):
        await c.add([entry(i)])
    await client.aclose()
    private_redis.kill()
    private_redis.start()  # no persistence: everything is gone
    client = aioredis.Redis.from_url(private_redis.url())
    try:
        c.client = client
        c._script = client.register_script(c._script.script)
        assert await c.add([entry(5)]) == 5
        assert await numbers(client, f"{prefix}greeks") == list(range(6))
    finally:
        await client.aclose()


async def test_marker_ahead_means_another_writer_not_a_loss(
    redis: aioredis.Redis, prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ours = checked(redis, prefix, tmp_path / "a")
    other = checked(redis, prefix, tmp_path / "b")
    await ours.add([entry(0)])
    await other.add([entry(100)])
    with caplog.at_level(logging.ERROR):
        assert await ours.add([entry(1)]) == 0
    assert await numbers(redis, f"{prefix}greeks") == [0, 100, 1]
    assert "another collector" in caplog.text


def test_journal_is_bounded_and_survives_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "j"
    j = RecentJournal(path, keep=10)
    for i in range(35):
        j.record([f"{1000 + i}-0"], [entry(i)])  # type: ignore[list-item]
    assert len(j) == 10
    assert path.read_text().count("\n") <= 20
    with open(path, "ab") as fh:
        fh.write(b'1100-0\t{"stream": "gre')
    again = RecentJournal(path, keep=10)
    assert [e["fields"]["n"] for _, e in again.entries()] == [str(i) for i in range(25, 35)]
    assert again.after("1030-0") == [entry(i) for i in range(31, 35)]


def test_lines_that_are_no_journal_entry_are_skipped_at_load(tmp_path: Path) -> None:
    path = tmp_path / "j"
    path.write_bytes(
        b'1000-0\t{"stream": "greeks", "fields": {"n": "0"}}\n'
        b"a line without a tab\n"
        b'1001-0\t["json", "but no entry"]\n'
        b'1002-0\t{"stream": "greeks", "fields": "not a mapping"}\n'
        b'1003-0\t{"stream": "greeks", "fields": {"n": "3"}}\n'
    )
    j = RecentJournal(path, keep=10)
    assert [(i, e["fields"]["n"]) for i, e in j.entries()] == [("1000-0", "0"), ("1003-0", "3")]
    assert j.last_id == "1003-0"


async def test_redis_lost_more_than_the_journal_holds_resends_what_it_has(
    redis: aioredis.Redis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The marker Redis kept is older than the journal's oldest entry: the entries between
    them are gone for good (said once, as an ERROR); everything the journal holds is re-sent,
    in order, before the new entry."""
    c = CheckedStreams(
        redis, f"{prefix}collector_last", streams(prefix), RecentJournal(None, keep=3)
    )
    for i in range(6):
        await c.add([entry(i)])
    await simulate_crash_losing_last(redis, prefix, 5)  # only entry 0 and its marker survive
    with caplog.at_level(logging.WARNING):
        assert await c.add([entry(6)]) == 3
    assert await numbers(redis, f"{prefix}greeks") == [0, 3, 4, 5, 6]
    lost = [r for r in caplog.records if "redis_lost_beyond_journal" in r.getMessage()]
    assert len(lost) == 1 and lost[0].levelno == logging.ERROR
    # afresh with the re-sent entries under their new ids, bounded as always
    assert [e["fields"]["n"] for _, e in c.journal.entries()] == ["4", "5", "6"]
    assert c.expected == (await redis.get(f"{prefix}collector_last")).decode()


async def test_nothing_to_add_sends_nothing(redis: aioredis.Redis, prefix: str) -> None:
    c = checked(redis, prefix, None)
    assert await c.add([]) == 0
    assert await redis.exists(f"{prefix}collector_last", f"{prefix}greeks") == 0
    assert c.expected == ""


async def test_marker_moved_again_while_resending_is_an_error(
    redis: aioredis.Redis, prefix: str, tmp_path: Path
) -> None:
    """Between the refusal and the re-send another writer moved the marker: nothing is sent
    blindly; the error names the marker and the journal keeps the entries to re-send."""
    marker = f"{prefix}collector_last"

    class Raced(CheckedStreams):
        refusals = 0

        async def _run(self, entries: Sequence[Entry], expected: str) -> tuple[list[str], str]:
            ids, current = await super()._run(entries, expected)
            if not ids and self.refusals == 0:
                self.refusals += 1
                await redis.set(marker, "9999999999999-0")  # the other writer, right now
            return ids, current

    c = Raced(redis, marker, streams(prefix), RecentJournal(tmp_path / "j", keep=50))
    for i in range(4):
        await c.add([entry(i)])
    await simulate_crash_losing_last(redis, prefix, 2)
    with pytest.raises(RuntimeError, match=r"collector_last moved to '9999999999999-0'"):
        await c.add([entry(4)])
    assert await numbers(redis, f"{prefix}greeks") == [0, 1]
    assert len(RecentJournal(tmp_path / "j")) == 4  # still there for the next try

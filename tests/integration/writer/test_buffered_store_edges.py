"""The writer's buffered store (on a real PostgreSQL) at its edges: an empty batch, a flush with
nothing buffered, a buffer that cannot be locked at start, a drain paused by stop, and the
drain's audit rows refused right after the drain (PostgreSQL gone, or an error of no known
kind)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from database.db_manager import DBManager
from ops.embedded import PostgresServer
from shared.config import load_settings
from shared.jsonl import JsonlFile
from shared.models import ApiLogRow, GreeksRow
from writer.buffered_store import BufferedStore
from writer.consumer import Entry
from writer.lines import encode_line

T0 = datetime(2026, 11, 25, 14, 30, tzinfo=UTC)
MakeStore = Callable[..., Awaitable[BufferedStore]]


def greeks(i: int) -> GreeksRow:
    return GreeksRow(T0 + timedelta(seconds=5 * i), "PORTFOLIO", float(i), 0.1, 0.2, 0.3, 600.0)


async def no_dead_letters(rejected: list[tuple[Entry, str]]) -> list[ApiLogRow]:
    raise AssertionError(f"no row may be dead-lettered here: {rejected}")


@pytest.fixture
async def make_store(tmp_path: Path) -> AsyncIterator[MakeStore]:
    """A store as the writer starts it (database checked, buffer locked); closed afterwards.
    `buffered`: rows a previous run left in the buffer."""
    made: list[BufferedStore] = []

    async def make(
        dsn: str, *, buffered: int = 0, buffer: Path | None = None, **kwargs: object
    ) -> BufferedStore:
        path = buffer or tmp_path / "buffer.jsonl"
        if buffered:
            JsonlFile(path).append([encode_line(greeks(i)) for i in range(buffered)])
        settings = load_settings(
            {"DATABASE_URL": dsn, "BRIDGE_BUFFER_PATH": str(path), "BRIDGE_FLUSH_RETRY_S": "3600"},
            dotenv=None,
        )
        db = DBManager(dsn, min_size=0, connect_attempts=1)
        store = BufferedStore(settings, db, dead_letter=no_dead_letters, **kwargs)  # type: ignore[arg-type]
        made.append(store)
        await store.check_database()
        store.open_buffer()
        return store

    yield make
    for store in made:
        store.close()
        await store.db.close()


async def fetch(dsn: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


async def execute(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def count_greeks(dsn: str) -> int:
    return len(await fetch(dsn, "SELECT 1 FROM portfolio_greeks"))


async def test_an_empty_batch_tries_no_connection(
    make_store: MakeStore, private_pg: PostgresServer
) -> None:
    """Nothing to write: PostgreSQL gone meanwhile is not met (the breaker stays closed); the
    next real batch meets it and is buffered."""
    store = await make_store(private_pg.url())
    await store.store([], [])  # the start's own audit rows (migrations applied) go out first
    assert not store._audit
    await asyncio.to_thread(private_pg.stop)
    await store.store([], [])
    assert not store.breaker.is_open
    await store.store([greeks(0)], [])
    assert store.breaker.is_open
    assert store.status()["buffer_rows"] == "2"  # the row and the audit row of the opening


async def test_a_flush_with_nothing_buffered_is_done_at_once(
    make_store: MakeStore, pg_url: str
) -> None:
    store = await make_store(pg_url)
    assert await store.flush(force=True)
    assert await fetch(pg_url, "SELECT message FROM api_logs") == []  # no "drained 0 rows"


async def test_a_buffer_that_cannot_be_locked_at_start_is_told_in_api_logs(
    make_store: MakeStore, pg_url: str, tmp_path: Path
) -> None:
    (tmp_path / "not-a-folder").write_text("")
    store = await make_store(pg_url, buffer=tmp_path / "not-a-folder" / "buffer.jsonl")
    assert "; buffer: FileExistsError" in store.status()["reason"]
    await store.tick()  # the writer's loop, with nothing read: the audit row goes out
    rows = [
        r
        for r in await fetch(pg_url, "SELECT status, message FROM api_logs")
        if not r["message"].startswith("schema migration")  # the start's migrations
    ]
    assert [r["status"] for r in rows] == ["ERROR"]
    assert "not-a-folder/buffer.jsonl unwritable: FileExistsError" in rows[0]["message"]


async def test_a_drain_paused_by_stop_keeps_the_rest_for_the_next_flush(
    make_store: MakeStore, pg_url: str
) -> None:
    stop = asyncio.Event()

    async def on_progress() -> None:
        stop.set()  # SIGTERM during the first chunk

    store = await make_store(
        pg_url, buffered=5, stop=stop, on_progress=on_progress, drain_chunk_rows=2
    )
    assert not await store.flush(force=True)
    assert store.breaker.is_open and store.has_backlog
    assert await count_greeks(pg_url) == 2
    assert JsonlFile(store.buffer.path).count()[0] == 3  # after the checkpoint
    stop.clear()  # the next start
    store.on_progress = None
    assert await store.flush(force=True)
    assert await count_greeks(pg_url) == 5 and not store.breaker.is_open


async def test_postgres_gone_right_after_the_drain_reopens_and_keeps_the_audit_rows(
    make_store: MakeStore, private_pg: PostgresServer
) -> None:
    dsn = private_pg.url()

    async def on_progress() -> None:  # after the only chunk: PostgreSQL stops
        await asyncio.to_thread(private_pg.stop)

    store = await make_store(dsn, buffered=3, on_progress=on_progress)
    assert not await store.flush(force=True)
    assert store.breaker.is_open and store.status()["buffer_rows"] == "0"
    queued = [row.message for row in store._audit if not row.message.startswith("schema ")]
    assert [" ".join(m.split()[:3]) for m in queued] == [
        "writer started with",
        "writer buffer drained:",
        "writer circuit breaker",
        "writer circuit breaker",
    ]
    assert "breaker closed" in queued[2] and "breaker opened" in queued[3]
    await asyncio.to_thread(private_pg.start)
    store.on_progress = None
    assert await store.flush(force=True)
    messages = [
        r["message"]
        for r in await fetch(dsn, "SELECT message FROM api_logs")
        if not r["message"].startswith("schema ")
    ]
    assert messages[: len(queued)] == queued
    assert await count_greeks(dsn) == 3


async def test_audit_rows_refused_for_no_known_reason_after_the_drain_are_raised(
    make_store: MakeStore, pg_url: str
) -> None:
    """Not an outage: the breaker is not reopened over it; the writer exits (and restarts)."""

    async def on_progress() -> None:
        await execute(
            pg_url,
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'refused by a trigger'; END $$; "
            "CREATE TRIGGER refuse BEFORE INSERT ON api_logs "
            "FOR EACH ROW EXECUTE FUNCTION refuse()",
        )

    store = await make_store(pg_url, buffered=3, on_progress=on_progress)
    with pytest.raises(asyncpg.RaiseError, match="refused by a trigger"):
        await store.flush(force=True)
    assert await count_greeks(pg_url) == 3
    assert not store.breaker.is_open and store._audit  # kept for the next try

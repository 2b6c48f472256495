"""The buffer drain run by hand (`bridge drain`): the writer's own drain, outside the writer.

The same chunks, checkpoint and dead letters as the running writer, after taking the buffer's
lock: while a writer runs it holds that lock, and this raises `BufferBusy` and changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from database.db_manager import DBManager
from shared.clock import utcnow
from shared.config import Settings
from shared.jsonl import JsonlFile
from shared.models import ApiLogRow
from shared.names import Keys
from writer.buffered_store import BufferedStore
from writer.consumer import Entry, dead_fields

log = logging.getLogger("drain")


@dataclass(frozen=True)
class DrainResult:
    path: Path
    rows_before: int
    bytes_before: int
    rows_left: int
    complete: bool


async def drain_buffer(
    settings: Settings,
    on_start: Callable[[int, int, Path], None] = lambda *_: None,
    path: Path | None = None,
) -> DrainResult:
    """Drain the buffer (BRIDGE_BUFFER_PATH, or `path`: e.g. the file a dead writer left) into
    PostgreSQL; `on_start(rows, bytes, path)` once the lock is held."""
    buffer = JsonlFile(path or settings.buffer_path)
    rows, size = buffer.count()
    if rows == 0:
        return DrainResult(buffer.path, 0, 0, 0, complete=True)
    redis = (
        aioredis.Redis.from_url(settings.redis_url, socket_timeout=3, socket_connect_timeout=3)
        if settings.redis_url
        else None
    )
    dead = Keys(settings.redis_prefix).dead

    async def dead_letter(rejected: list[tuple[Entry, str]]) -> list[ApiLogRow]:
        warns: list[ApiLogRow] = []
        for entry, reason in rejected:
            fields = dead_fields(entry, reason)
            where = "not recorded (Redis unavailable)"
            if redis is not None:
                try:
                    await redis.xadd(dead, fields)
                    where = f"moved to {dead}"
                except (RedisError, OSError) as exc:
                    log.error("dead_letter_failed %r", exc)
            warns.append(
                ApiLogRow(
                    ts=utcnow(),
                    api_mode=settings.ib_api_mode,
                    status="WARN",
                    message=f"dead letter from `bridge drain`: {entry.stream} {where}: {reason}",
                    source="writer",
                )
            )
        return warns

    db = DBManager(settings.require_database(), connect_attempts=1)
    store = BufferedStore(settings, db, dead_letter=dead_letter, buffer=buffer)
    try:
        store.open_buffer()  # takes the lock: BufferBusy while a writer holds it
        on_start(rows, size, buffer.path)
        done = await store.flush(force=True)
    finally:
        store.close()
        await db.close()
        if redis is not None:
            await redis.aclose()
    left, _ = buffer.count()
    return DrainResult(buffer.path, rows, size, left, complete=done and not left)

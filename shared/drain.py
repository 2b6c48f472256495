"""`bridge drain`: drain the writer's JSON Lines buffer into PostgreSQL now.

It uses the writer's own drain (writer/outbox.py: the same chunks, checkpoint and dead letters),
after taking the buffer's lock: while a writer runs it holds that lock and drains by itself
every BRIDGE_FLUSH_RETRY_S, so the command says "busy" and changes nothing (exit 3). Use it when
the writer is stopped, e.g. `supervisorctl stop bridge:writer`, or on another machine that has
the buffer file.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from database.db_manager import DBManager
from shared.clock import utcnow
from shared.config import Settings
from shared.jsonl import BufferBusy, JsonlFile
from shared.logs import configure_logging
from shared.models import ApiLogRow
from shared.names import Keys

EXIT_OK, EXIT_FAIL, EXIT_BUSY = 0, 1, 3
log = logging.getLogger("drain")


async def _drain(settings: Settings) -> int:
    from writer.consumer import Entry
    from writer.outbox import Outbox

    buffer = JsonlFile(settings.buffer_path)
    rows, size = buffer.count()
    if rows == 0:
        print(f"buffer empty: {buffer.path}")
        return EXIT_OK
    redis = (
        aioredis.Redis.from_url(settings.redis_url, socket_timeout=3, socket_connect_timeout=3)
        if settings.redis_url
        else None
    )

    async def dead_letter(rejected: list[tuple[Entry, str]]) -> list[ApiLogRow]:
        warns: list[ApiLogRow] = []
        for entry, reason in rejected:
            fields: dict[Any, Any] = {"stream": entry.stream, "id": entry.id, "reason": reason}
            for k, v in entry.fields.items():
                fields[f"f.{k.decode(errors='backslashreplace')}"] = v
            where = "not recorded (Redis unavailable)"
            if redis is not None:
                try:
                    await redis.xadd(Keys(settings.redis_prefix).dead, fields)
                    where = f"moved to {Keys(settings.redis_prefix).dead}"
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
    outbox = Outbox(settings, db, dead_letter=dead_letter)
    try:
        outbox.open_buffer()  # takes the lock: BufferBusy while a writer holds it
        print(f"draining {rows} rows ({size} bytes) from {buffer.path} ...", flush=True)
        done = await outbox.flush(force=True)
    finally:
        outbox.close()
        await db.close()
        if redis is not None:
            await redis.aclose()
    left, _ = buffer.count()
    if not done or left:
        print(
            f"drain incomplete: {left} rows left in {buffer.path}; PostgreSQL unreachable? "
            "(see the log lines above)",
            file=sys.stderr,
        )
        return EXIT_FAIL
    print(f"drained {rows} rows into PostgreSQL; the buffer is empty")
    return EXIT_OK


def drain_now(settings: Settings) -> int:
    configure_logging("drain", settings.log_format, settings.log_level)
    try:
        return asyncio.run(_drain(settings))
    except BufferBusy:
        print(
            f"busy: the buffer {settings.buffer_path} is locked by a running writer, which "
            "drains it by itself every BRIDGE_FLUSH_RETRY_S; stop the writer first "
            "(supervisorctl stop bridge:writer) to drain it by hand",
            file=sys.stderr,
        )
        return EXIT_BUSY
    except ImportError as exc:
        print(f"drain unavailable: the writer's drain is missing ({exc})", file=sys.stderr)
        return EXIT_FAIL
    except OSError as exc:
        print(f"drain_failed {exc}", file=sys.stderr)
        return EXIT_FAIL

"""`python -m writer`: the only process that writes PostgreSQL."""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis

from database.db_manager import DBManager
from shared.config import Settings
from shared.process import install_stop_signals, run_main, supervise
from writer.app import Writer

log = logging.getLogger("writer")


async def main(settings: Settings) -> int:
    dsn = settings.require_database()
    redis_url = settings.require_redis()
    stop = asyncio.Event()
    install_stop_signals(stop)
    # PostgreSQL may be down at start: the buffered store connects (one attempt per try) when it
    # needs the database, and buffers behind the circuit breaker meanwhile.
    db = DBManager(dsn, min_size=0, connect_attempts=1)  # min_size=0: no connect in create_pool
    redis = aioredis.Redis.from_url(redis_url, socket_timeout=10, socket_connect_timeout=5)
    writer, store = Writer.buffered(settings, redis, db, stop=stop)
    try:
        store.open_buffer()
        await supervise({"consume": writer.run()}, stop, grace_s=settings.stop_grace_s)
    finally:
        store.close()
        await redis.aclose()
        await db.close()
    return 0


if __name__ == "__main__":
    run_main("writer", main)

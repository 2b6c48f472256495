"""`python -m writer`: the only process that writes PostgreSQL."""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis

from database.db_manager import DBManager
from shared.config import Settings
from shared.process import install_stop_signals, run_main, supervise
from writer.app import DatabaseStore, Writer

log = logging.getLogger("writer")


async def main(settings: Settings) -> int:
    dsn = settings.require_database()
    redis_url = settings.require_redis()
    stop = asyncio.Event()
    install_stop_signals(stop)
    db = DBManager(dsn)
    await db.connect()
    redis = aioredis.Redis.from_url(redis_url, socket_timeout=10, socket_connect_timeout=5)
    try:
        await db.ensure_schema()
        writer = Writer(settings, redis, DatabaseStore(db), stop=stop)
        await supervise({"consume": writer.run()}, stop, grace_s=settings.stop_grace_s)
    finally:
        await redis.aclose()
        await db.close()
    return 0


if __name__ == "__main__":
    run_main("writer", main)

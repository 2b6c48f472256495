"""`python -m writer`: the only process that writes PostgreSQL.

At start it connects and applies the pending migrations before it reads any entry. PostgreSQL
down: it starts anyway with the breaker open (rows go to the buffer). PostgreSQL refusing the
writer (bad password, no such database, no right to apply a pending migration): ERROR lines
saying why and exit code 2, which supervisord does not loop on.
"""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis

from database.db_manager import DBManager
from shared.config import Settings, mask_url
from shared.process import EXIT_CONFIG, TaskDied, install_stop_signals, run_main, supervise
from writer.app import Writer
from writer.errors import DatabaseSetupError, is_config_error

log = logging.getLogger("writer")


def _refused(dsn: str, exc: BaseException) -> int:
    log.error(
        "db_config_invalid %s (DATABASE_URL=%s): fix the configuration; not retried",
        exc,
        mask_url(dsn),
    )
    return EXIT_CONFIG


async def main(settings: Settings) -> int:
    dsn = settings.require_database()
    redis_url = settings.require_redis()
    stop = asyncio.Event()
    install_stop_signals(stop)
    # PostgreSQL may be down at start: the buffered store connects (one attempt per try) when it
    # needs the database, and buffers behind the circuit breaker meanwhile.
    db = DBManager(dsn, min_size=0, connect_attempts=1)  # min_size=0: no connect in create_pool
    redis = aioredis.Redis.from_url(redis_url, socket_timeout=10, socket_connect_timeout=5)
    writer = Writer(settings, redis, db, stop=stop)
    store = writer.store
    try:
        await store.check_database()
        store.open_buffer()
        await supervise({"consume": writer.run()}, stop, grace_s=settings.stop_grace_s)
    except DatabaseSetupError as exc:
        if not is_config_error(exc):
            raise
        return _refused(dsn, exc)
    except TaskDied as exc:
        # the credentials or the database changed while it ran (met at a reconnect or at a
        # write): the same exit code 2
        cause = exc.__cause__
        if cause is not None and is_config_error(cause):
            return _refused(dsn, cause)
        raise
    finally:
        store.close()
        await redis.aclose()
        await db.close()
    return 0


if __name__ == "__main__":
    run_main("writer", main)

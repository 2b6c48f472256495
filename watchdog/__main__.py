"""`python -m watchdog`: keeps the collector's broker link alive (docs/CONTRACTS.md).

Its clock is the system clock (`shared.clock.utcnow`); tests shift it for the whole process
with libfaketime.
"""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis

from shared import clock as shared_clock
from shared.config import Settings
from shared.process import install_stop_signals, run_main, supervise
from watchdog.app import Watchdog

log = logging.getLogger("watchdog")

REDIS_TIMEOUT_S = 5.0  # above the longest XREAD BLOCK (1 s)


async def main(settings: Settings) -> int:
    client = aioredis.Redis.from_url(
        settings.require_redis(),
        socket_timeout=REDIS_TIMEOUT_S,
        socket_connect_timeout=REDIS_TIMEOUT_S,
    )
    stop = asyncio.Event()
    install_stop_signals(stop)
    watchdog = Watchdog(settings, client, clock=shared_clock.utcnow)

    async def watch() -> None:
        await watchdog.run(stop)

    try:
        await supervise({"watchdog": watch()}, stop, grace_s=settings.stop_grace_s)
    finally:
        await client.aclose()
    return 0


if __name__ == "__main__":
    run_main("watchdog", main)

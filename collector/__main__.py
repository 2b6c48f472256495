"""`python -m collector`: the collector process (transport chosen by IB_API_MODE)."""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from collector.journal import RecentJournal
from collector.service import Collector
from collector.sink import Sink, TickLedger
from collector.transport import Transport
from shared.config import Settings
from shared.jsonl import BufferBusy, JsonlFile
from shared.names import Keys
from shared.process import install_stop_signals, run_main

log = logging.getLogger("collector")

REDIS_TIMEOUT_S = 2.0


def make_transport(settings: Settings) -> Transport:
    if settings.ib_api_mode == "PORTAL":
        from collector.portal.transport import PortalTransport

        return PortalTransport(settings)
    # SOCKET: imported lazily so PORTAL works without ib_async loaded
    from collector.socket.transport import SocketTransport

    transport: Transport = SocketTransport(settings)
    return transport


def make_redis(settings: Settings) -> aioredis.Redis:
    """No retries inside redis-py: a failed write goes to the spool at once."""
    return aioredis.Redis.from_url(
        settings.require_redis(),
        socket_timeout=REDIS_TIMEOUT_S,
        socket_connect_timeout=REDIS_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
    )


async def main(settings: Settings) -> int:
    client = make_redis(settings)
    transport = make_transport(settings)
    spool = JsonlFile(settings.spool_path)
    journal = RecentJournal(settings.spool_path.with_name(settings.spool_path.name + ".recent"))
    sink = Sink(
        client, Keys(settings.redis_prefix), spool, TickLedger(settings.tick_ledger), journal
    )
    collector = Collector(settings, transport, sink)
    stop = asyncio.Event()
    install_stop_signals(stop)
    try:
        return await collector.run(stop)
    except BufferBusy as exc:
        log.error("spool_busy %s: is another collector running?", exc)
        return 1
    finally:
        await transport.disconnect()
        await client.aclose()


if __name__ == "__main__":
    run_main("collector", main)

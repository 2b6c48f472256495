"""`python -m watchdog`: keeps the collector's broker link alive (issue 7, docs/CONTRACTS.md).

Test hook (never set in production; read here only): the watchdog's clock can be *shifted*,
never replaced, so that an end-to-end test can run it "at 23:45 US/Eastern" in a real process:
- `BRIDGE_TEST_FAKE_NOW=2026-11-25T23:45:00-05:00`: the clock reads this at start and runs on
  from there at the speed of the real clock (an offset computed once);
- `BRIDGE_TEST_CLOCK_OFFSET_S=3600.5`: a fixed offset in seconds added to the real clock.
Everything else (the window, the schedule, the decisions) is the production code path; with
neither variable set the clock is `shared.clock.utcnow`. A shifted clock is logged as a WARNING.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

import redis.asyncio as aioredis

from shared import clock as shared_clock
from shared.config import ConfigError, Settings
from shared.process import install_stop_signals, run_main, supervise
from watchdog.app import Watchdog

log = logging.getLogger("watchdog")

REDIS_TIMEOUT_S = 5.0  # above the longest XREAD BLOCK (1 s)
FAKE_NOW = "BRIDGE_TEST_FAKE_NOW"
CLOCK_OFFSET = "BRIDGE_TEST_CLOCK_OFFSET_S"


def clock_offset(env: Mapping[str, str], real_now: datetime) -> timedelta:
    """The test hook's shift of the clock (zero when unset); raises ConfigError."""
    fake = env.get(FAKE_NOW, "").strip()
    offset = env.get(CLOCK_OFFSET, "").strip()
    if fake and offset:
        raise ConfigError(FAKE_NOW, fake, f"set {FAKE_NOW} or {CLOCK_OFFSET}, not both")
    if fake:
        try:
            at = datetime.fromisoformat(fake)
        except ValueError:
            raise ConfigError(FAKE_NOW, fake, "an ISO-8601 time with its UTC offset") from None
        if at.tzinfo is None or at.utcoffset() is None:
            raise ConfigError(FAKE_NOW, fake, "an ISO-8601 time with its UTC offset")
        return at - real_now
    if offset:
        try:
            seconds = float(offset)
        except ValueError:
            raise ConfigError(CLOCK_OFFSET, offset, "a number of seconds") from None
        if not math.isfinite(seconds) or abs(seconds) > 10 * 366 * 86400:
            raise ConfigError(CLOCK_OFFSET, offset, "a number of seconds within 10 years")
        return timedelta(seconds=seconds)
    return timedelta(0)


def make_clock(offset: timedelta) -> Callable[[], datetime]:
    def shifted() -> datetime:
        return shared_clock.utcnow() + offset

    return shifted


async def main(settings: Settings) -> int:
    offset = clock_offset(os.environ, shared_clock.utcnow())
    if offset:
        log.warning(
            "watchdog_test_clock the clock is shifted by %.3f s (test hook %s/%s): it reads %s",
            offset.total_seconds(),
            FAKE_NOW,
            CLOCK_OFFSET,
            (shared_clock.utcnow() + offset).isoformat(),
        )
    client = aioredis.Redis.from_url(
        settings.require_redis(),
        socket_timeout=REDIS_TIMEOUT_S,
        socket_connect_timeout=REDIS_TIMEOUT_S,
    )
    stop = asyncio.Event()
    install_stop_signals(stop)
    watchdog = Watchdog(settings, client, clock=make_clock(offset))

    async def watch() -> None:
        await watchdog.run(stop)

    try:
        await supervise({"watchdog": watch()}, stop, grace_s=settings.stop_grace_s)
    finally:
        await client.aclose()
    return 0


if __name__ == "__main__":
    run_main("watchdog", main)

"""`python -m watchdog`: placeholder until the watchdog lands (issue 7).

It validates the configuration (exit 2 on a bad value) and then says plainly that it does not
supervise anything yet, and idles until stopped: it does not pretend to work.
"""

from __future__ import annotations

import asyncio
import logging

from shared.config import Settings
from shared.process import install_stop_signals, run_main

log = logging.getLogger("watchdog")


async def main(settings: Settings) -> int:
    stop = asyncio.Event()
    install_stop_signals(stop)
    log.warning("watchdog_not_implemented mode=%s: no link supervision yet; idling",
                settings.ib_api_mode)
    await stop.wait()
    return 0


if __name__ == "__main__":
    run_main("watchdog", main)

"""What the two simulator programs (`python -m simulator.gateway|portal`) share: the common
options, the log format, and running until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Coroutine, Sequence
from typing import Any


def add_common_args(
    ap: argparse.ArgumentParser, *, loopback: Sequence[str], port: int, port_help: str
) -> None:
    ap.add_argument("--host", default="127.0.0.1", choices=loopback, help="loopback only")
    ap.add_argument("--port", type=int, default=port, help=f"{port_help} (0: any free port)")
    ap.add_argument("--account", default="DU1234567")
    ap.add_argument(
        "--step-s",
        type=float,
        default=1.0,
        help="prices and Greeks change once per step; 0 freezes them",
    )
    ap.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT (handlers installed now, before anything starts)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def run_program(name: str, log_level: str, main: Coroutine[Any, Any, None]) -> int:
    """Log to stderr as `name`, run `main` to its end; the exit code."""
    logging.basicConfig(
        stream=sys.stderr,
        level=log_level,
        format=f"%(asctime)s %(levelname)s {name} %(name)s: %(message)s",
    )
    asyncio.run(main)
    return 0

"""Helpers for tests: a clean environment for bridge processes, and polling with a deadline."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable


def bridge_env(**overrides: str) -> dict[str, str]:
    """Environment for a bridge process under test: nothing inherited that could leak in."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("IB_", "IBKR_", "BRIDGE_"))}
    keep.pop("DATABASE_URL", None)
    keep.pop("REDIS_URL", None)
    keep.update({"BRIDGE_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"})
    keep.update(overrides)
    return keep


async def wait_for(predicate: Callable[[], object], timeout_s: float, what: str,
                   interval_s: float = 0.05) -> None:
    """Poll an async or sync predicate until true; fail with `what` after `timeout_s`."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if loop.time() > end:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(interval_s)

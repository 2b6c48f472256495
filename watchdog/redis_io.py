"""The watchdog's Redis side: what it reads (the link hash, heartbeat, `pause_until`, the
`link_events` stream) and what it writes (`api_logs` rows, its state hash, `control` commands)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from shared.codec import as_text as _text
from shared.codec import encode_api_log
from shared.config import scrub
from shared.models import ApiLogRow
from shared.names import Keys
from watchdog.policy import Observation

log = logging.getLogger(__name__)

SOURCE = "watchdog"
REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


class WatchdogRedis:
    def __init__(
        self, client: aioredis.Redis, keys: Keys, mode: str, clock: Callable[[], datetime]
    ) -> None:
        self.client = client
        self.keys = keys
        self.mode = mode
        self.clock = clock
        self.cursor: str | None = None  # last link_events id seen

    # ---- output ------------------------------------------------------------------------------
    async def api_log(self, status: str, message: str) -> None:
        """One `api_logs` row (and the same text in the process log)."""
        level = {"INFO": logging.INFO, "WARN": logging.WARNING}.get(status, logging.ERROR)
        log.log(level, "watchdog_api_log %s %s", status, message)
        row = ApiLogRow(
            ts=self.clock(), api_mode=self.mode, status=status, message=message, source=SOURCE
        )
        try:
            await self.client.xadd(self.keys.api_logs, encode_api_log(row))  # type: ignore[arg-type]
        except REDIS_DOWN as exc:
            log.error("watchdog_api_log_lost %s %s: Redis unreachable: %r", status, message, exc)

    async def publish_state(self, fields: dict[str, str]) -> None:
        try:
            await self.client.hset(
                self.keys.watchdog_state,
                mapping={k: scrub(v) for k, v in fields.items()},
            )
        except REDIS_DOWN as exc:
            log.debug("watchdog_state_unpublished %r", exc)

    async def send_command(self, cmd: str, reason: str, until: datetime | None = None) -> str:
        cmd_id = uuid.uuid4().hex
        fields = {"cmd": cmd, "id": cmd_id, "reason": reason, "issued": self.clock().isoformat()}
        if until is not None:
            fields["until"] = until.isoformat()
        await self.client.xadd(
            self.keys.control,
            fields,  # type: ignore[arg-type]
            maxlen=10_000,
            approximate=True,
        )
        log.info(
            "watchdog_command %s id=%s%s",
            cmd,
            cmd_id,
            f" until={until.isoformat()}" if until else "",
        )
        return cmd_id

    async def set_pause(self, until: datetime, now: datetime) -> None:
        ttl_ms = max(1, int((until - now).total_seconds() * 1000))
        await self.client.set(self.keys.pause_until, until.isoformat(), px=ttl_ms)

    # ---- input -------------------------------------------------------------------------------
    async def observe(self) -> Observation:
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.keys.link)
        pipe.get(self.keys.heartbeat)
        pipe.get(self.keys.pause_until)
        link, beat, pause = await pipe.execute()
        return Observation.from_redis(link or {}, beat, pause)

    async def init_cursor(self) -> None:
        newest: Any = await self.client.xrevrange(self.keys.link_events, count=1)
        self.cursor = _text(newest[0][0]) if newest else "0-0"

    async def read_events(self, block_s: float) -> list[dict[str, str]]:
        """link_events entries after the cursor (waits up to `block_s` for the first)."""
        if self.cursor is None:
            await self.init_cursor()
        assert self.cursor is not None
        reply: Any = await self.client.xread(
            {self.keys.link_events: self.cursor}, count=100, block=max(1, int(block_s * 1000))
        )
        out: list[dict[str, str]] = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                self.cursor = _text(entry_id)
                out.append({_text(k): _text(v) for k, v in fields.items()})
        return out

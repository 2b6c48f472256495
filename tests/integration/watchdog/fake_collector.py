"""A small scripted stand-in for the collector's side of docs/CONTRACTS.md, for watchdog tests.

It beats (`heartbeat` with a TTL, `link` hash), reads `control` (XREAD BLOCK from the newest
entry at start) and answers `reconnect` / `reauth` on `link_events` with the command's id, with
the outcome the test scripted; `pause` -> state `paused`. `drop()` publishes a link-down event as
the real collector does (empty cmd_id).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis

from shared.codec import as_text as text
from shared.names import Keys


@dataclass
class Received:
    at: float  # loop time
    fields: dict[str, str]

    @property
    def cmd(self) -> str:
        return self.fields.get("cmd", "")


@dataclass
class FakeCollector:
    client: aioredis.Redis
    keys: Keys
    clock: Callable[[], datetime]
    mode: str = "SOCKET"
    heartbeat_ttl_s: float = 1.0
    outcomes: list[str] = field(default_factory=list)  # "ok" or an error text, per attempt
    answer_delay_s: float = 0.0
    state: str = "connected"
    beating: bool = True
    received: list[Received] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _stopping: bool = False

    async def start(self) -> None:
        await self.publish_link()
        await self.beat()
        self._tasks = [
            asyncio.create_task(self._beat_loop(), name="fake-beat"),
            asyncio.create_task(self._control_loop(), name="fake-control"),
        ]

    async def stop(self) -> None:
        # its loops watch the flag (a cancelled redis-py call can hang: do not rely on cancel)
        self._stopping = True
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=3)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=2)

    def commands(self, cmd: str | None = None) -> list[Received]:
        return [r for r in self.received if cmd is None or r.cmd == cmd]

    async def publish_link(self, reason: str = "") -> None:
        fields: dict[Any, Any] = {
            "state": self.state,
            "since": self.clock().isoformat(),
            "reason": reason,
            "mode": self.mode,
            "updated": self.clock().isoformat(),
        }
        if self.mode == "PORTAL":
            fields.update(
                {
                    "authenticated": str(self.state == "connected").lower(),
                    "competing": "false",
                    "keepalive_age_s": "5",
                }
            )
        await self.client.hset(self.keys.link, mapping=fields)

    async def event(self, state: str, reason: str, cmd_id: str = "", code: str = "") -> None:
        self.state = state
        await self.publish_link(reason)
        await self.client.xadd(
            self.keys.link_events,
            {
                "state": state,
                "since": self.clock().isoformat(),
                "reason": reason,
                "mode": self.mode,
                "code": code,
                "cmd_id": cmd_id,
            },
        )

    async def drop(
        self, reason: str = "peer closed connection", state: str = "disconnected"
    ) -> None:
        await self.event(state, reason, code="1100")

    async def beat(self) -> None:
        await self.client.set(
            self.keys.heartbeat, self.clock().isoformat(), px=int(self.heartbeat_ttl_s * 1000)
        )

    async def _beat_loop(self) -> None:
        while not self._stopping:
            if self.beating:
                await self.beat()
            await asyncio.sleep(self.heartbeat_ttl_s / 5)

    async def _control_loop(self) -> None:
        newest: Any = await self.client.xrevrange(self.keys.control, count=1)
        last = text(newest[0][0]) if newest else "0-0"
        loop = asyncio.get_running_loop()
        while not self._stopping:
            reply: Any = await self.client.xread({self.keys.control: last}, block=200)
            for _stream, entries in reply or []:
                for entry_id, raw in entries:
                    last = text(entry_id)
                    fields = {text(k): text(v) for k, v in raw.items()}
                    self.received.append(Received(loop.time(), fields))
                    await self._obey(fields)

    async def _obey(self, fields: dict[str, str]) -> None:
        cmd, cmd_id = fields.get("cmd"), fields.get("id", "")
        if cmd == "pause":
            await self.event("paused", f"paused until {fields.get('until')}", cmd_id)
            return
        if self.answer_delay_s:
            await asyncio.sleep(self.answer_delay_s)
        outcome = self.outcomes.pop(0) if self.outcomes else "ok"
        if outcome == "silent":
            return
        if outcome == "ok":
            await self.event("connected", f"{cmd}: connected", cmd_id)
        else:
            down = "unauthenticated" if cmd == "reauth" else "disconnected"
            await self.event(down, f"{cmd} failed: {outcome}", cmd_id)

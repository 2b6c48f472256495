"""The collector's side of the watchdog contract (docs/CONTRACTS.md): the `link` hash, the
`heartbeat` key with a TTL, the `link_events` stream, `pause_until`, and the `control` stream.

Everything here is best effort: link state is not data. When Redis is down the calls log and
return; the hash is rewritten in full at the next successful write, so nothing stays stale.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from collector.sink import REDIS_DOWN, RedisClient
from collector.transport import LinkEvent, LinkState
from shared.clock import parse_time
from shared.codec import as_text as _text
from shared.config import scrub
from shared.names import Keys

log = logging.getLogger(__name__)

EVENTS_MAXLEN = 10_000
CONTROL_BLOCK_MS = 1000
COMMANDS = ("reconnect", "pause", "reauth")


@dataclass(frozen=True, slots=True)
class Command:
    cmd: str
    id: str
    until: datetime | None = None
    reason: str = ""
    issued: str = ""


def parse_command(fields: Mapping[bytes | str, bytes | str]) -> Command | str:
    """A control entry as a Command, or the reason it cannot be obeyed."""
    f = {_text(k): _text(v) for k, v in fields.items()}
    cmd = f.get("cmd", "")
    if cmd not in COMMANDS:
        return f"unknown command {cmd[:32]!r}"
    until = None
    if cmd == "pause":
        until = parse_time(f.get("until", ""))
        if until is None:
            return f"pause without a valid 'until' ({f.get('until', '')[:40]!r})"
    return Command(cmd, f.get("id", ""), until, f.get("reason", ""), f.get("issued", ""))


class LinkPublisher:
    def __init__(self, client: RedisClient, keys: Keys, mode: str, heartbeat_ttl_s: float) -> None:
        self.client = client
        self.keys = keys
        self.mode = mode
        self.heartbeat_ttl_s = heartbeat_ttl_s
        self.state = LinkState.CONNECTING
        self.since: datetime | None = None
        self.reason = ""
        self.code = ""
        self.account = ""
        self.last_tick = ""
        self.extras: dict[str, str] = {}

    def _fields(self, now: datetime) -> dict[Any, Any]:
        fields: dict[Any, Any] = {
            "state": str(self.state),
            "since": self.since.isoformat() if self.since else "",
            "reason": scrub(self.reason),
            "mode": self.mode,
            "account": self.account,
            "updated": now.isoformat(),
            "last_tick": self.last_tick,
            "code": self.code,
        }
        fields.update({k: v for k, v in self.extras.items() if k not in fields})
        return fields

    def set_state(self, event: LinkEvent) -> None:
        # `since` is when the state began: an event that keeps it (a data error, a farm
        # message) tells its reason without moving it
        if event.state != self.state or self.since is None:
            self.since = event.since
        self.state = event.state
        self.reason = event.reason
        self.code = "" if event.code is None else str(event.code)

    async def publish_event(self, event: LinkEvent, now: datetime, cmd_id: str = "") -> None:
        """Record the new state in the hash and append it to `link_events`."""
        self.set_state(event)
        entry: dict[Any, Any] = {
            "state": str(event.state),
            "since": event.since.isoformat(),
            "reason": scrub(event.reason),  # reasons quote exceptions, which may quote a URL
            "mode": self.mode,
            "code": self.code,
            "cmd_id": cmd_id,
        }
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.hset(self.keys.link, mapping=self._fields(now))
            pipe.xadd(self.keys.link_events, entry, maxlen=EVENTS_MAXLEN, approximate=True)
            await pipe.execute()
        except REDIS_DOWN as exc:
            log.warning(
                "link_event_unpublished %s (%s): Redis unreachable: %r",
                event.state,
                event.reason,
                exc,
            )

    async def last_beat(self, now: datetime) -> None:
        """A clean stop: the link hash says why, and the heartbeat goes at once, so that the
        watchdog sees a collector that is gone rather than a live one to reconnect."""
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.hset(self.keys.link, mapping=self._fields(now))
            pipe.delete(self.keys.heartbeat)
            await pipe.execute()
        except REDIS_DOWN as exc:
            log.debug("last_beat_failed %r", exc)

    async def beat(self, now: datetime) -> bool:
        """Heartbeat with its TTL and a refreshed link hash; False when Redis is unreachable."""
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.set(
                self.keys.heartbeat, now.isoformat(), px=max(1, int(self.heartbeat_ttl_s * 1000))
            )
            pipe.hset(self.keys.link, mapping=self._fields(now))
            await pipe.execute()
        except REDIS_DOWN as exc:
            log.debug("heartbeat_failed %r", exc)
            return False
        return True

    async def pause_until(self, now: datetime) -> datetime | None:
        """The watchdog's `pause_until` if it is in the future (None when absent or past)."""
        try:
            raw = await self.client.get(self.keys.pause_until)
        except REDIS_DOWN as exc:
            log.warning("pause_until_unreadable Redis unreachable: %r", exc)
            return None
        if raw is None:
            return None
        until = parse_time(_text(raw))
        if until is None or until <= now:
            return None
        return until


class ControlReader:
    """Reads `control` from the entries added after it first reached Redis (XREAD BLOCK)."""

    def __init__(self, client: RedisClient, keys: Keys, block_ms: int = CONTROL_BLOCK_MS) -> None:
        self.client = client
        self.keys = keys
        self.block_ms = block_ms
        self.last_id: str | None = None

    async def _start_id(self) -> str:
        newest = await self.client.xrevrange(self.keys.control, count=1)
        if newest:
            return _text(newest[0][0])
        return "0-0"

    async def read(self) -> list[tuple[str, Command | str]]:
        """Commands (or rejection reasons) that arrived since the last call; [] on timeout.

        Raises one of REDIS_DOWN when Redis is unreachable (the caller backs off).
        """
        if self.last_id is None:
            self.last_id = await self._start_id()
        reply: Any = await self.client.xread(
            {self.keys.control: self.last_id}, count=100, block=self.block_ms
        )
        out: list[tuple[str, Command | str]] = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                self.last_id = _text(entry_id)
                out.append((self.last_id, parse_command(fields)))
        return out


async def sleep_or_stop(delay_s: float, stop: asyncio.Event) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=delay_s)
    except TimeoutError:
        return

"""The writer's side of the streams: consumer group, pending-first reads, claims, acks, trims.

Delivery is at-least-once: an entry is acked only after its rows are committed (or fsynced to
the buffer). A restarted writer with the same consumer name re-reads its own pending entries
(`0`) before new ones (`>`); entries left idle by a dead consumer are claimed (XAUTOCLAIM).
NOGROUP (Redis restarted empty) recreates the group from `0` with MKSTREAM.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from shared.codec import as_text
from shared.config import scrub
from shared.names import WRITER_GROUP

log = logging.getLogger(__name__)

RETENTION_MS = 24 * 3600 * 1000  # acknowledged entries kept this long for `redis-cli XRANGE`


@dataclass(frozen=True, slots=True)
class Entry:
    stream: str
    id: str
    fields: dict[bytes, bytes]


def dead_fields(entry: Entry, reason: str) -> dict[Any, Any]:
    """The dead-letter stream's entry for `entry`: where it came from, why, and its fields
    prefixed `f.` (a key that is not UTF-8 is kept readable)."""
    fields: dict[Any, Any] = {"stream": entry.stream, "id": entry.id, "reason": scrub(reason)}
    for k, v in entry.fields.items():
        key = k.decode(errors="backslashreplace") if isinstance(k, bytes) else str(k)
        fields[f"f.{key}"] = _scrubbed(v)
    return fields


def _scrubbed(value: object) -> object:
    """A field as stored, unless it holds a secret: then as text, the secret hidden."""
    text = as_text(value)
    hidden = scrub(text)
    return value if hidden == text else hidden


def _is_nogroup(exc: ResponseError) -> bool:
    return str(exc).startswith("NOGROUP")


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class StreamConsumer:
    def __init__(
        self,
        redis: aioredis.Redis,
        streams: Sequence[str],
        consumer: str,
        *,
        group: str = WRITER_GROUP,
        batch: int = 500,
        block_ms: int = 500,
        claim_idle_ms: int = 60_000,
        retention_ms: int = RETENTION_MS,
    ) -> None:
        self.redis = redis
        self.streams = list(streams)
        self.consumer = consumer
        self.group = group
        self.batch = batch
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.retention_ms = retention_ms
        self._pending_first = {s: True for s in self.streams}
        self._last_claim = 0.0
        self._last_trim = 0.0

    async def ensure_groups(self) -> None:
        for stream in self.streams:
            await self._create_group(stream)

    async def _create_group(self, stream: str) -> None:
        try:
            await self.redis.xgroup_create(stream, self.group, id="0", mkstream=True)
            log.info("group_created %s on %s from 0", self.group, stream)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._pending_first[stream] = True

    async def read(self) -> list[Entry]:
        """The next batch: own pending entries first, then claimed ones, then new ones."""
        entries: list[Entry] = []
        for stream in self.streams:
            if self._pending_first[stream]:
                got = await self._read(stream, "0", block=None)
                if not got:
                    self._pending_first[stream] = False
                entries.extend(got)
        if entries:
            return entries
        if await self._claim_idle():
            return await self.read()
        streams: dict[bytes | str | memoryview, int | bytes | str | memoryview] = {
            s: ">" for s in self.streams
        }
        try:
            reply = await self.redis.xreadgroup(
                self.group, self.consumer, streams, count=self.batch, block=self.block_ms
            )
        except ResponseError as exc:
            if not _is_nogroup(exc):
                raise
            log.warning("group_missing %s (Redis restarted empty?): recreating from 0", self.group)
            await self.ensure_groups()
            return []
        return self._entries(reply)

    async def _read(self, stream: str, start: str, block: int | None) -> list[Entry]:
        try:
            reply = await self.redis.xreadgroup(
                self.group, self.consumer, {stream: start}, count=self.batch, block=block
            )
        except ResponseError as exc:
            if not _is_nogroup(exc):
                raise
            log.warning("group_missing %s on %s: recreating from 0", self.group, stream)
            await self._create_group(stream)
            return []
        return self._entries(reply)

    @staticmethod
    def _entries(reply: object) -> list[Entry]:
        out: list[Entry] = []
        for stream_name, items in reply or []:  # type: ignore[attr-defined]
            stream = as_text(stream_name)
            for entry_id, fields in items:
                eid = as_text(entry_id)
                out.append(Entry(stream, eid, dict(fields or {})))
        return out

    async def _claim_idle(self) -> bool:
        """XAUTOCLAIM entries idle longer than claim_idle_ms from other consumers."""
        now = time.monotonic()
        if now - self._last_claim < max(self.claim_idle_ms / 2000, 0.05):
            return False
        self._last_claim = now
        claimed_any = False
        for stream in self.streams:
            try:
                reply = await self.redis.xautoclaim(
                    stream,
                    self.group,
                    self.consumer,
                    self.claim_idle_ms,
                    "0-0",
                    count=self.batch,
                    justid=True,
                )
            except ResponseError as exc:
                if not _is_nogroup(exc):
                    raise
                await self._create_group(stream)
                continue
            ids = reply[1] if isinstance(reply, list | tuple) and len(reply) > 1 else reply
            deleted = reply[2] if isinstance(reply, list | tuple) and len(reply) > 2 else []
            if deleted:
                # entries claimed but already trimmed away: nothing left to store
                await self.redis.xack(stream, self.group, *deleted)
            if ids:
                log.info("claimed %d idle entries of %s", len(ids), stream)
                self._pending_first[stream] = True
                claimed_any = True
        return claimed_any

    async def ack(self, entries: Sequence[Entry]) -> None:
        by_stream: dict[str, list[str]] = {}
        for e in entries:
            by_stream.setdefault(e.stream, []).append(e.id)
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream, ids in by_stream.items():
                pipe.xack(stream, self.group, *ids)
            await pipe.execute()

    async def trim(self, every_s: float = 60.0) -> None:
        """Drop acknowledged entries older than `retention_ms`; never an unacknowledged one
        (pending in any group) nor one not yet delivered."""
        now = time.monotonic()
        if now - self._last_trim < every_s:
            return
        self._last_trim = now
        for stream in self.streams:
            floor = await self._safe_min_id(stream)
            if floor is None:
                continue
            retention_floor = (int(time.time() * 1000) - self.retention_ms, 0)
            minid = min(floor, retention_floor)
            await self.redis.xtrim(stream, minid=f"{minid[0]}-{minid[1]}", approximate=False)

    async def _safe_min_id(self, stream: str) -> tuple[int, int] | None:
        try:
            groups = await self.redis.xinfo_groups(stream)
        except ResponseError:
            return None
        floor: tuple[int, int] | None = None
        for group in groups:
            g = {as_text(k): v for k, v in group.items()}
            last = g.get("last-delivered-id")
            if last is None:
                return None
            last_s = as_text(last)
            ms, seq = _id_key(last_s)
            candidate = (ms, seq + 1)
            name = g.get("name")
            if name is None:
                return None
            summary = await self.redis.xpending(stream, name)
            lowest = summary.get("min") if isinstance(summary, dict) else None
            if lowest:
                low_s = as_text(lowest)
                candidate = min(candidate, _id_key(low_s))
            floor = candidate if floor is None else min(floor, candidate)
        return floor

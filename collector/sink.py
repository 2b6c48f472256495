"""Where produced rows go: XADD to Redis, or the local spool while Redis is unreachable.

Order is kept: while the spool holds anything, new rows are appended behind it, and the spool is
replayed oldest first (`replay`) as soon as Redis answers. Replay is crash-safe through the
spool's checkpoint (`JsonlFile.commit`): a crash re-sends at most one chunk, which the writer's
idempotent inserts absorb. The spool is on disk, so a collector restarted during an outage loses
nothing and replays at start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from collector.journal import CheckedStreams, RecentJournal
from shared.codec import encode_api_log, encode_exposure, encode_greeks
from shared.jsonl import JsonlFile
from shared.models import ApiLogRow, ExposureRow, GreeksRow
from shared.names import STREAM_API_LOGS, STREAM_GREEKS, Keys

log = logging.getLogger(__name__)

REPLAY_CHUNK_ROWS = 500

RedisClient = aioredis.Redis
REDIS_DOWN: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)


class TickLedger:
    """Optional `ts,contract` record of every row handed off (tests count produced vs landed)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def record(self, rows: Sequence[GreeksRow]) -> None:
        if self.path is None or not rows:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.writelines(f"{r.ts.isoformat(timespec='microseconds')},{r.contract}\n" for r in rows)
            fh.flush()


class Sink:
    def __init__(
        self,
        client: RedisClient,
        keys: Keys,
        spool: JsonlFile,
        ledger: TickLedger | None = None,
        journal: RecentJournal | None = None,
    ) -> None:
        self.client = client
        self.keys = keys
        self.spool = spool
        self.ledger = ledger or TickLedger(None)
        # every XADD is checked against what Redis still holds: entries it lost in a crash
        # are re-sent from the journal before new ones (collector/journal.py)
        self.streams = CheckedStreams(
            client,
            keys.collector_last,
            {STREAM_GREEKS: keys.greeks, STREAM_API_LOGS: keys.api_logs},
            journal or RecentJournal(None),
        )
        self._lock = asyncio.Lock()
        self.redis_up = True
        self.spooled_total = 0
        self.replayed_total = 0

    @staticmethod
    def _entries(
        greeks: Sequence[GreeksRow], logs: Sequence[ApiLogRow], exposure: Sequence[ExposureRow]
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [
            {"stream": STREAM_API_LOGS, "fields": encode_api_log(r)} for r in logs
        ]
        out.extend({"stream": STREAM_GREEKS, "fields": encode_greeks(r)} for r in greeks)
        # the tick's exposure rows ride the same stream: one hand-off, one journal, one marker
        out.extend({"stream": STREAM_GREEKS, "fields": encode_exposure(r)} for r in exposure)
        return out

    async def _xadd(self, entries: Sequence[dict[str, Any]]) -> None:
        await self.streams.add(entries)

    async def publish(
        self,
        greeks: Sequence[GreeksRow],
        logs: Sequence[ApiLogRow],
        exposure: Sequence[ExposureRow] = (),
    ) -> str:
        """Hand rows off durably: returns "redis" or "spool". Raises only if both fail."""
        entries = self._entries(greeks, logs, exposure)
        if not entries:
            return "redis"
        async with self._lock:
            where = await self._publish_locked(entries)
        self.ledger.record(greeks)
        return where

    async def _publish_locked(self, entries: list[dict[str, Any]]) -> str:
        # once Redis is known to be down, ticks go straight to the spool: only `replay`
        # (called by the heartbeat loop after Redis answered again) probes it, so a hung
        # Redis never makes a tick wait for a socket timeout
        if self.redis_up and not self.spool.is_empty():
            await self._replay_locked()
        if self.redis_up and self.spool.is_empty():
            try:
                await self._xadd(entries)
            except REDIS_DOWN as exc:
                self._mark_down(exc)
            else:
                self._mark_up()
                return "redis"
        await asyncio.to_thread(self.spool.append, entries)
        self.spooled_total += len(entries)
        return "spool"

    def _mark_down(self, exc: BaseException) -> None:
        if self.redis_up:
            log.warning("redis_down rows go to the spool %s: %r", self.spool.path, exc)
        self.redis_up = False

    def _mark_up(self) -> None:
        if not self.redis_up:
            log.info("redis_up again")
        self.redis_up = True

    async def replay(self) -> int:
        """Send the spool to Redis, oldest first; returns the entries sent (0 if Redis is down)."""
        if self.spool.is_empty():
            return 0
        async with self._lock:
            return await self._replay_locked()

    async def _replay_locked(self) -> int:
        sent = 0
        try:
            for chunk in self.spool.iter_chunks(REPLAY_CHUNK_ROWS, on_bad=self._on_bad):
                valid = [
                    e
                    for e in chunk.records
                    if isinstance(e.get("fields"), dict)
                    and e.get("stream") in (STREAM_GREEKS, STREAM_API_LOGS)
                ]
                if valid:
                    await self._xadd(valid)
                await asyncio.to_thread(self.spool.commit, chunk.end_offset)
                sent += len(valid)
        except REDIS_DOWN as exc:
            self._mark_down(exc)
            if sent:
                self.replayed_total += sent
                log.info("spool_replay_partial %d entries sent before Redis failed", sent)
            return sent
        await asyncio.to_thread(self.spool.clear)
        self._mark_up()
        if sent:
            self.replayed_total += sent
            log.info("spool_replayed %d entries from %s", sent, self.spool.path)
        return sent

    @staticmethod
    def _on_bad(count: int, reason: str) -> None:
        log.error("spool_lines_set_aside %d line(s): %s", count, reason)

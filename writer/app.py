"""The writer process: Redis streams -> PostgreSQL, acked only after COMMIT.

One loop: read a batch (pending first), decode it (malformed entries go to the dead-letter
stream with their reason and a WARN row), store it through the `BufferedStore` (one transaction,
or the buffer while PostgreSQL is down), then XACK. A row the database refuses (a data error,
not an outage) is isolated by bisection and dead-lettered, so one bad row never blocks the
stream nor loops forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from database.db_manager import DBManager
from shared.clock import utcnow
from shared.codec import Rejected, decode_api_log, decode_data_entry
from shared.config import Settings
from shared.models import ApiLogRow, ExposureRow, GreeksRow
from shared.names import Keys
from writer.buffered_store import BufferedStore, BufferUnavailable
from writer.consumer import Entry, StreamConsumer, dead_fields
from writer.errors import is_outage, is_row_error
from writer.isolate import Row, find_refused

log = logging.getLogger(__name__)

REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)
T = TypeVar("T")


@dataclass
class Batch:
    entries: list[Entry]
    greeks: list[GreeksRow] = field(default_factory=list)
    exposures: list[ExposureRow] = field(default_factory=list)
    logs: list[ApiLogRow] = field(default_factory=list)
    greeks_entries: list[Entry] = field(default_factory=list)
    exposures_entries: list[Entry] = field(default_factory=list)
    logs_entries: list[Entry] = field(default_factory=list)
    rejected: list[tuple[Entry, str]] = field(default_factory=list)


class Stopping(Exception):
    """Stop was requested while waiting out a Redis outage."""


def decode_batch(keys: Keys, entries: list[Entry]) -> Batch:
    batch = Batch(entries)
    for e in entries:
        if e.stream == keys.greeks:
            row = decode_data_entry(e.fields)  # a portfolio_greeks or a portfolio_exposure row
            if isinstance(row, ExposureRow):
                _sort(batch, e, row, batch.exposures, batch.exposures_entries)
            else:
                _sort(batch, e, row, batch.greeks, batch.greeks_entries)
        elif e.stream == keys.api_logs:
            _sort(batch, e, decode_api_log(e.fields), batch.logs, batch.logs_entries)
        else:
            batch.rejected.append((e, f"unexpected stream {e.stream}"))
    return batch


def _sort(batch: Batch, e: Entry, row: T | Rejected, rows: list[T], kept: list[Entry]) -> None:
    """A decoded entry joins `rows` (and its entry `kept`), a rejected one `batch.rejected`."""
    if isinstance(row, Rejected):
        batch.rejected.append((e, row.reason))
    else:
        rows.append(row)
        kept.append(e)


class Writer:
    def __init__(
        self,
        settings: Settings,
        redis: aioredis.Redis,
        db: DBManager,
        *,
        stop: asyncio.Event,
    ) -> None:
        self.settings = settings
        self.keys = Keys(settings.redis_prefix)
        self.redis = redis
        self.stop = stop
        # PostgreSQL behind the circuit breaker, the buffer behind it
        self.store = BufferedStore(
            settings, db, dead_letter=self.dead_letter, stop=stop, on_progress=self._beat
        )
        self.consumer = StreamConsumer(
            redis,
            self.keys.data_streams,
            settings.writer_consumer,
            batch=settings.writer_batch,
            claim_idle_ms=int(settings.claim_idle_s * 1000),
        )
        self.commits = 0

    async def run(self) -> None:
        try:
            await self._run()
        except Stopping:
            log.info("writer_stopped while Redis was unavailable; unacked entries stay pending")

    async def _run(self) -> None:
        await self._with_redis(self.consumer.ensure_groups)
        log.info(
            "writer_started consumer=%s streams=%s",
            self.consumer.consumer,
            ",".join(self.keys.data_streams),
        )
        while not self.stop.is_set():
            entries = await self._with_redis(self.consumer.read)
            await self._tick()
            await self._beat()
            if not entries:
                await self._with_redis(self.consumer.trim)
                continue
            # the batch in hand is finished even when SIGTERM arrives meanwhile
            await asyncio.shield(self.handle(entries))
        log.info("writer_stopped after %d commits", self.commits)

    async def _tick(self) -> None:
        """The store's periodic work (flush retry, drain); a full buffer is retried later."""
        with contextlib.suppress(BufferUnavailable):  # logged by the store; retried next tick
            await self.store.tick()

    async def _beat(self) -> None:
        try:
            ttl_ms = max(int(self.settings.heartbeat_ttl_s * 1000), 1000)
            now, state = utcnow().isoformat(), self.store.status()
            me = self.consumer.consumer
            async with self.redis.pipeline(transaction=False) as pipe:
                # a heartbeat and a state of its own; the single state hash too (the last
                # writer's), for its older readers. Not the single heartbeat: `bridge status`
                # reads that one as "a writer of an older version runs".
                pipe.set(self.keys.writer_heartbeat_of(me), now, px=ttl_ms)
                pipe.hset(self.keys.writer_state_of(me), mapping=state)  # type: ignore[arg-type]
                pipe.hset(self.keys.writer_state, mapping=state)  # type: ignore[arg-type]
                await pipe.execute()
        except REDIS_ERRORS:
            pass  # a Redis outage is reported by the read path

    async def _with_redis(self, op: Callable[[], Awaitable[T]]) -> T:
        """Run a Redis operation, waiting out a Redis outage with capped back-off."""
        delay = 0.1
        while True:
            try:
                return await op()
            except REDIS_ERRORS as exc:
                log.warning("redis_unavailable %r; retrying in %.1f s", exc, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), delay)
                if self.stop.is_set():
                    raise Stopping from exc
                delay = min(delay * 2, 5.0)

    async def handle(self, entries: list[Entry]) -> None:
        batch = decode_batch(self.keys, entries)
        warns = await self.dead_letter(batch.rejected)
        await self._store_until_done(batch.greeks, [*batch.logs, *warns], batch.exposures, batch)
        self.commits += 1
        await self._with_redis(lambda: self.consumer.ack(entries))

    async def _store_until_done(
        self,
        greeks: list[GreeksRow],
        logs: list[ApiLogRow],
        exposures: list[ExposureRow],
        batch: Batch,
    ) -> None:
        """Store the batch. The buffer unwritable (the store buffers a database outage itself):
        wait with capped back-off, nothing acked, until it works or stop is requested. A data
        error is isolated (bisection, dead letters)."""
        delay = 0.2
        while True:
            try:
                await self.store.store(greeks, logs, exposures)
                return
            except Exception as exc:
                if is_row_error(exc):
                    log.error("db_refused_batch %r: isolating the bad rows", exc)
                    await self._isolate([*greeks, *exposures, *logs], batch)
                    return
                if not (isinstance(exc, BufferUnavailable) or is_outage(exc)):
                    raise  # neither an outage nor a bad row: let the process restart
                log.warning(
                    "store_unavailable %r; batch kept unacked, retrying in %.1f s", exc, delay
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), delay)
                if self.stop.is_set():
                    raise Stopping from exc
                delay = min(delay * 2, 5.0, max(self.settings.flush_retry_s, 0.2))
                await self._beat()

    async def _isolate(self, rows: list[Row], batch: Batch) -> None:
        """Bisect until the rows the database refuses are found; dead-letter those."""
        by_row = dict(
            zip(
                map(id, [*batch.greeks, *batch.exposures, *batch.logs]),
                [*batch.greeks_entries, *batch.exposures_entries, *batch.logs_entries],
                strict=True,
            )
        )
        refused = await find_refused(rows, self.store.store)
        dead = [(by_row[id(r)], why) for r, why in refused if id(r) in by_row]
        warns = await self.dead_letter(dead)
        if warns:
            await self.store.store([], warns)

    async def dead_letter(self, rejected: list[tuple[Entry, str]]) -> list[ApiLogRow]:
        warns: list[ApiLogRow] = []
        for entry, reason in rejected:
            fields = dead_fields(entry, reason)
            await self._with_redis(partial(self.redis.xadd, self.keys.dead, fields))
            log.warning("dead_letter %s %s: %s", entry.stream, entry.id, reason)
            warns.append(
                ApiLogRow(
                    ts=utcnow(),
                    api_mode=self.settings.ib_api_mode,
                    status="WARN",
                    message=f"dead letter: entry {entry.id} of {entry.stream} moved to "
                    f"{self.keys.dead}: {reason}",
                    source="writer",
                )
            )
        return warns

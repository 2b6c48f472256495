"""The writer's `Store` with a circuit breaker in front of PostgreSQL and the JSON Lines buffer
behind it.

- Closed, buffer empty: a batch goes to PostgreSQL in one transaction.
- An outage (`writer.errors.is_outage`: refused, reset, timeout, shutting down, too many
  connections, a read-only server...) opens the breaker: that batch and every following one is
  appended to the buffer (one line per row, fsynced) and only then acked.
- While rows are buffered, new rows go behind them (also at start-up, for a buffer left by a
  previous run), so no row overtakes another.
- Every `flush_retry_s` a flush is tried: the buffer drains into PostgreSQL in file order, chunk
  by chunk (COPY; COMMIT; then the checkpoint; `writer.buffer_drain`), is emptied, and the
  breaker closes. A failed retry leaves it open until the next one.
- A data error is no outage: the refused rows are found by bisection and dead-lettered.
- The buffer unwritable (full disk, bad path): `BufferUnavailable`; the caller acks nothing.

Audit rows (open, failed retry, drain, close, buffer errors) are `api_logs` rows of source
`writer`; they travel with the next write, through the buffer while PostgreSQL is down, so the
outage shows in `api_logs` with its original timestamps.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

from database.db_manager import DBManager, WriteResult
from shared.clock import utcnow
from shared.config import Settings
from shared.jsonl import BufferBusy, JsonlFile
from shared.models import ApiLogRow, ExposureRow, GreeksRow
from writer.breaker import Breaker
from writer.buffer_drain import DRAIN_CHUNK_ROWS, BufferDrain, DeadLetter, audit_row
from writer.buffer_health import BufferHealth
from writer.errors import DatabaseSetupError, is_outage, reason_of
from writer.isolate import Row
from writer.lines import encode_line

log = logging.getLogger(__name__)


class BufferUnavailable(OSError):
    """The buffer cannot be written (full disk, unwritable path): nothing may be acked."""


class BufferedStore:
    """The writer's `Store`: PostgreSQL behind a circuit breaker, the buffer while it is open."""

    def __init__(
        self,
        settings: Settings,
        db: DBManager,
        *,
        dead_letter: DeadLetter,
        on_progress: Callable[[], Awaitable[None]] | None = None,
        stop: asyncio.Event | None = None,
        buffer: JsonlFile | None = None,
        drain_chunk_rows: int | None = None,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.db = db
        self.buffer = buffer or JsonlFile(settings.buffer_path)
        self.breaker = Breaker(settings.flush_retry_s, since=clock())
        self.on_progress = on_progress  # after each drained chunk (the operator view)
        self.dead_letter = dead_letter
        self.stop = stop or asyncio.Event()
        self.clock = clock
        self.monotonic = monotonic
        self.drain_chunk_rows = drain_chunk_rows or DRAIN_CHUNK_ROWS
        self._schema_ok = False
        self._audit: list[ApiLogRow] = []  # audit rows waiting for the next write
        self._rows = 0  # rows in the buffer not yet drained (an estimate between drains)
        self._bytes = 0
        self.health = BufferHealth(self.buffer.path, self._audit_row, monotonic)
        self.last_commit: datetime | None = None
        self.closed_by_flush = 0

    # ---- start-up ----------------------------------------------------------------------------
    def open_buffer(self) -> None:
        """Lock the buffer (one writer per file) and count what a previous run left in it."""
        self._lock_buffer()
        try:
            if self.buffer.is_empty():
                self.buffer.clear()  # drained but not yet truncated when the last run ended
            self._rows, self._bytes = self.buffer.count()
        except OSError as exc:
            self.health.failed(exc)
            return
        if self._rows:
            # rows go to the buffer until it is drained: that is the open state, due at once
            reason = "rows left in the buffer by a previous run"
            self.breaker.open(
                reason, now=self.clock(), mono=self.monotonic() - self.breaker.retry_s
            )
            log.warning(
                "breaker_open %s: %d rows (%d bytes) in %s are drained before new rows are stored",
                reason,
                self._rows,
                self._bytes,
                self.buffer.path,
            )
            self._audit_row(
                "WARN",
                f"writer started with {self._rows} rows ({self._bytes} "
                f"bytes) in its buffer {self.buffer.path}: drained first",
            )

    async def check_database(self) -> None:
        """At start, before any entry is read: connect and apply the pending migrations.
        PostgreSQL down: the breaker opens (rows go to the buffer; migrated when it is back).
        Raises DatabaseSetupError when PostgreSQL refuses the writer (bad password...)."""
        try:
            await self._ensure_db()
        except Exception as exc:
            if not is_outage(exc):
                raise
            await self._open(exc)

    def _lock_buffer(self) -> None:
        try:
            self.buffer.acquire()
        except BufferBusy:
            raise
        except OSError as exc:
            self.health.failed(exc)

    def close(self) -> None:
        """At stop: audit rows still queued go to the buffer (drained first at the next start)."""
        if self._audit:
            try:
                self._append(self._audit)
                self._audit.clear()
            except BufferUnavailable:
                log.error(
                    "audit_rows_lost %d audit rows could not be buffered at stop", len(self._audit)
                )
        self.buffer.release()

    # ---- the Store protocol ------------------------------------------------------------------
    async def store(
        self,
        greeks: Sequence[GreeksRow],
        logs: Sequence[ApiLogRow],
        exposures: Sequence[ExposureRow] = (),
    ) -> None:
        """Make the rows durable: committed, or fsynced to the buffer. Raises BufferUnavailable
        when neither is possible, and a database error for a data error (not an outage)."""
        if self.has_backlog:
            await self.flush()
        if not self.has_backlog:
            try:
                await self._write_direct(list(greeks), [*self._audit, *logs], list(exposures))
                self._audit.clear()
                return
            except Exception as exc:
                if not is_outage(exc):
                    raise
                await self._open(exc)
        self._append([*greeks, *exposures, *self._audit, *logs])
        self._audit.clear()

    async def tick(self) -> None:
        """Called by the writer's loop between reads: flush when due; write waiting audit rows."""
        if self.has_backlog:
            await self.flush()
        if self._audit and not self.has_backlog:
            await self.store([], [])

    @property
    def has_backlog(self) -> bool:
        """True while rows must go to the buffer: breaker open, or rows waiting in the file."""
        return self.breaker.is_open or self._rows > 0

    def status(self) -> dict[str, str]:
        """The operator view (the Keys.writer_state hash)."""
        b = self.breaker
        return {
            "breaker": b.state.value,
            "since": b.since.isoformat() if b.since else "",
            "reason": b.reason + (f"; buffer: {self.health.error}" if self.health.error else ""),
            "buffer_rows": str(self._rows),
            "buffer_bytes": str(self._bytes),
            "updated": self.clock().isoformat(),
            "last_commit": self.last_commit.isoformat() if self.last_commit else "",
        }

    # ---- PostgreSQL --------------------------------------------------------------------------
    async def _ensure_db(self) -> None:
        try:
            if not self.db.is_connected:
                await self.db.connect()
                self._schema_ok = False
            if not self._schema_ok:
                for m, took in await self.db.migrate():
                    self._audit_row("INFO", f"schema migration {m.label} applied in {took:.2f} s")
                self._schema_ok = True
        except Exception as exc:
            if is_outage(exc):
                raise
            raise DatabaseSetupError(f"PostgreSQL refused the writer: {reason_of(exc)}") from exc

    async def _write(
        self,
        greeks: list[GreeksRow],
        logs: list[ApiLogRow],
        bulk: bool,
        exposures: list[ExposureRow],
    ) -> None:
        if not greeks and not logs and not exposures:
            return
        await self._ensure_db()
        write = self.db.copy_batch if bulk else self.db.write_batch
        self._committed(await write(greeks, logs, exposures))

    async def _copy_text(
        self, text: bytes, logs: list[ApiLogRow], exposures: list[ExposureRow]
    ) -> None:
        await self._ensure_db()
        self._committed(await self.db.copy_greeks_text(text, logs, exposures))

    def _committed(self, result: WriteResult) -> None:
        self.last_commit = self.clock()
        if result.greeks_skipped or result.exposure_skipped or result.logs_skipped:
            log.info(
                "replay_skipped %d greeks, %d exposure and %d api_logs rows were already stored",
                result.greeks_skipped,
                result.exposure_skipped,
                result.logs_skipped,
            )

    async def _write_direct(
        self, greeks: list[GreeksRow], logs: list[ApiLogRow], exposures: list[ExposureRow]
    ) -> None:
        """A batch while closed; one quick second try on a fresh connection before opening (a
        connection of the pool may have died while idle: that is no outage)."""
        try:
            await self._write(greeks, logs, False, exposures)
        except Exception as exc:
            if not is_outage(exc):
                raise
            log.warning("db_write_failed %s; retrying once on a fresh connection", reason_of(exc))
            await self.db.expire_connections()
            await self._write(greeks, logs, False, exposures)

    # ---- the breaker ---------------------------------------------------------------------------
    async def _open(self, exc: BaseException) -> None:
        self._schema_ok = False  # re-checked when PostgreSQL is back (it may be a new cluster)
        reason = f"PostgreSQL unreachable: {reason_of(exc)}"
        if self.breaker.open(reason, now=self.clock(), mono=self.monotonic()):
            await self.db.expire_connections()
            log.error(
                "breaker_open %s; rows go to the buffer %s (%d rows, %d bytes); next flush "
                "in %.1f s",
                reason,
                self.buffer.path,
                self._rows,
                self._bytes,
                self.breaker.retry_s,
            )
            self._audit_opened(reason)

    async def flush(self, *, force: bool = False) -> bool:
        """Drain the buffer and close the breaker when a retry is due (or at once while closed,
        e.g. a buffer left by a previous run). True when the backlog is gone."""
        if not self.has_backlog:
            return True
        if self.breaker.is_open and not force and not self.breaker.retry_due(self.monotonic()):
            return False
        started = self.monotonic()
        try:
            await self._ensure_db()
            rows = await self._drain()
        except Exception as exc:
            if not is_outage(exc):
                raise
            # a session may keep what made it fail (a read-only default): retry on fresh ones
            await self.db.expire_connections()
            self._flush_failed(exc)
            return False
        if self.stop.is_set() and self._rows:
            return False  # stopped between chunks: the checkpoint keeps the progress
        seconds = self.monotonic() - started
        log.info(
            "buffer_drained %d rows in %.2f s (%.0f rows/s)",
            rows,
            seconds,
            rows / seconds if seconds > 0 else 0.0,
        )
        self._audit_row("INFO", f"writer buffer drained: {rows} rows in {seconds:.2f} s")
        if self.breaker.is_open:
            opened = self.breaker.since
            outage_s = (self.clock() - opened).total_seconds() if opened else 0.0
            self.breaker.close(now=self.clock())
            self.closed_by_flush += 1
            log.info("breaker_closed after %.1f s; buffer empty (0 rows, 0 bytes)", outage_s)
            self._audit_row(
                "INFO",
                f"writer circuit breaker closed after {outage_s:.1f} s: "
                "PostgreSQL is back, buffer drained",
            )
        try:
            await self._write([], self._audit, False, [])
            self._audit.clear()
        except Exception as exc:
            if not is_outage(exc):
                raise
            await self._open(exc)  # the audit rows stay queued for the next write
        return not self.has_backlog

    def _flush_failed(self, exc: BaseException) -> None:
        self._schema_ok = False
        reason = f"PostgreSQL unreachable: {reason_of(exc)}"
        if not self.breaker.is_open:
            # a buffer left by a previous run, and PostgreSQL down at start-up
            self.breaker.open(reason, now=self.clock(), mono=self.monotonic())
            log.error(
                "breaker_open %s; %d rows (%d bytes) wait in %s",
                reason,
                self._rows,
                self._bytes,
                self.buffer.path,
            )
            self._audit_opened(reason)
            return
        self.breaker.retry_failed(reason, mono=self.monotonic())
        n = self.breaker.failed_retries
        log.warning(
            "flush_retry_failed #%d %s; buffer holds %d rows (%d bytes); next in %.1f s",
            n,
            reason,
            self._rows,
            self._bytes,
            self.breaker.retry_s,
        )
        self._audit_row(
            "WARN",
            f"writer flush retry {n} failed: {reason}; {self._rows} rows "
            f"({self._bytes} bytes) buffered; next retry in "
            f"{self.breaker.retry_s:g} s",
        )

    def _audit_row(self, status: str, message: str) -> None:
        self._audit.append(audit_row(self.clock(), self.settings.ib_api_mode, status, message))

    def _audit_opened(self, reason: str) -> None:
        self._audit_row(
            "ERROR",
            f"writer circuit breaker opened: {reason}; rows are "
            f"buffered in {self.buffer.path} until PostgreSQL is back",
        )

    # ---- the buffer ----------------------------------------------------------------------------
    def _append(self, rows: Sequence[Row]) -> None:
        if not rows:
            return
        try:
            self._lock_buffer()
            self.buffer.append([encode_line(r) for r in rows])
            self._bytes = self.buffer.path.stat().st_size
        except BufferBusy as exc:
            log.error("buffer_busy %s: another process holds its lock; nothing is acked", exc)
            raise BufferUnavailable(0, str(exc)) from exc
        except OSError as exc:
            reason = self.health.failed(exc)
            message = f"buffer {self.buffer.path} unwritable: {reason}"
            raise BufferUnavailable(exc.errno, message) from exc
        self._rows += len(rows)
        self.health.written(self._rows, self._bytes)

    # ---- the drain -----------------------------------------------------------------------------
    async def _drain(self) -> int:
        """Everything in the buffer into PostgreSQL (`BufferDrain`). Returns the rows drained."""
        drain = BufferDrain(
            self.buffer,
            write=self._write,
            copy_text=self._copy_text,
            dead_letter=self.dead_letter,
            api_mode=self.settings.ib_api_mode,
            clock=self.clock,
            stop=self.stop,
            chunk_rows=self.drain_chunk_rows,
        )
        total, emptied = await drain.run(self._drained_chunk)
        if emptied:
            self._rows, self._bytes = 0, 0
        else:
            self._rows = max(self._rows, 1)  # paused by stop: still a backlog
        return total

    async def _drained_chunk(self, rows: int) -> None:
        self._rows = max(self._rows - rows, 0)
        if self.on_progress is not None:
            await self.on_progress()

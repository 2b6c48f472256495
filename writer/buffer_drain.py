"""The drain: the JSON Lines buffer into PostgreSQL, in file order, chunk by chunk.

Each chunk is committed (COPY; COMMIT), then checkpointed in the file; the file is emptied only
once all of it is committed. Pipelined: the next chunk is read and prepared in a thread while the
current one is written, so the CPU work overlaps the database's. A chunk of ordinary greeks lines
goes as COPY text (the server parses the values, `copy_line` checked their shape) with its
exposure rows decoded by the codec; anything unusual goes through the stream codec, and a chunk
PostgreSQL refuses is bisected down to the refused rows, which are dead-lettered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from shared.jsonl import JsonlFile
from shared.models import ApiLogRow, ExposureRow, GreeksRow
from writer.consumer import Entry
from writer.errors import is_row_error, reason_of
from writer.isolate import find_refused
from writer.lines import (
    Prepared,
    as_record,
    buffer_entry,
    decode_line,
    encode_line,
    prepare,
    raw_line,
)

log = logging.getLogger(__name__)

DeadLetter = Callable[[list[tuple[Entry, str]]], Awaitable[list[ApiLogRow]]]
# (greeks, api_logs, bulk, exposures): one transaction, COPY when bulk
WriteRows = Callable[[list[GreeksRow], list[ApiLogRow], bool, list[ExposureRow]], Awaitable[None]]
# (COPY text of greeks rows, api_logs, exposures): one transaction
CopyText = Callable[[bytes, list[ApiLogRow], list[ExposureRow]], Awaitable[None]]


DRAIN_CHUNK_ROWS = 10_000


def audit_row(ts: datetime, api_mode: str, status: str, message: str) -> ApiLogRow:
    """An `api_logs` row of the writer's own (source `writer`)."""
    return ApiLogRow(ts=ts, api_mode=api_mode, status=status, message=message, source="writer")


@dataclass
class BufferDrain:
    """One pass of the drain over `buffer`; `write` and `copy_text` commit into PostgreSQL."""

    buffer: JsonlFile
    write: WriteRows
    copy_text: CopyText
    dead_letter: DeadLetter
    api_mode: str
    clock: Callable[[], datetime]
    stop: asyncio.Event
    chunk_rows: int

    async def run(self, on_chunk: Callable[[int], Awaitable[None]]) -> tuple[int, bool]:
        """Drain the buffer; `on_chunk(rows)` after each checkpoint. Returns the rows drained
        and whether the buffer is now empty (False: paused by `stop` at a checkpoint)."""
        total = 0
        bad: list[tuple[int, str]] = []
        chunks = self.buffer.iter_chunks(
            self.chunk_rows, on_bad=lambda n, why: bad.append((n, why)), raw=raw_line
        )

        def read_ahead() -> Prepared | None:
            chunk = next(chunks, None)
            if chunk is None:
                return None
            prepared = prepare(chunk.records, chunk.end_offset)
            prepared.bad.extend(bad)
            bad.clear()
            return prepared

        ahead: asyncio.Future[Prepared | None] = asyncio.ensure_future(
            asyncio.to_thread(read_ahead)
        )
        try:
            while (chunk := await ahead) is not None:
                ahead = asyncio.ensure_future(asyncio.to_thread(read_ahead))
                warns = [self._bad_lines_warn(n, why) for n, why in chunk.bad]
                await self._write_prepared(chunk, warns)
                self.buffer.commit(chunk.end_offset)
                total += len(chunk.records)
                await on_chunk(len(chunk.records))
                if self.stop.is_set():
                    log.info(
                        "buffer_drain_paused by stop after %d rows; resumes at the checkpoint",
                        total,
                    )
                    return total, False
        finally:
            # the read-ahead thread must be done with the file before it is closed
            if not ahead.done():
                await asyncio.wait([ahead])
            if not ahead.cancelled() and ahead.exception() is not None:
                log.debug("buffer read-ahead discarded: %r", ahead.exception())
            chunks.close()
        self.buffer.clear()
        return total, True

    async def _write_prepared(self, chunk: Prepared, warns: list[ApiLogRow]) -> None:
        if chunk.rejected:
            warns = [*warns, *await self.dead_letter(chunk.rejected)]
        if chunk.text is not None:
            try:
                await self.copy_text(chunk.text, [*chunk.logs, *warns], chunk.exposures)
            except Exception as exc:
                if not is_row_error(exc):
                    raise
                log.warning(
                    "db_refused_text_chunk %s: the chunk goes through the codec", reason_of(exc)
                )
            else:
                return
        greeks: list[GreeksRow] = []
        exposures: list[ExposureRow] = []
        logs: list[ApiLogRow] = []
        rejected: list[tuple[Entry, str]] = []
        for item in chunk.records:
            if id(item) in chunk.rejected_ids:
                continue  # dead-lettered above
            record = as_record(item)
            row = decode_line(record)
            if isinstance(row, GreeksRow):
                greeks.append(row)
            elif isinstance(row, ExposureRow):
                exposures.append(row)
            elif isinstance(row, ApiLogRow):
                logs.append(row)
            else:
                rejected.append((buffer_entry(record), f"buffer line: {row.reason}"))
        if rejected:
            warns = [*warns, *await self.dead_letter(rejected)]
        await self._write_chunk(greeks, [*logs, *warns], exposures)

    def _bad_lines_warn(self, n: int, why: str) -> ApiLogRow:
        message = (
            f"writer buffer: {n} {why}(s) of {self.buffer.path} moved to {self.buffer.bad_path}"
        )
        log.warning("buffer_bad_lines %s", message)
        return audit_row(self.clock(), self.api_mode, "WARN", message)

    async def _write_chunk(
        self, greeks: list[GreeksRow], logs: list[ApiLogRow], exposures: list[ExposureRow]
    ) -> None:
        try:
            await self.write(greeks, logs, True, exposures)
        except Exception as exc:
            if not is_row_error(exc):
                raise
            log.error("db_refused_buffer_chunk %s: isolating the bad rows", reason_of(exc))
            refused = await find_refused(
                [*greeks, *exposures, *logs], lambda g, a, e: self.write(g, a, False, e)
            )
            dead = [(buffer_entry(encode_line(r)), why) for r, why in refused]
            warns = await self.dead_letter(dead)
            await self.write([], warns, False, [])

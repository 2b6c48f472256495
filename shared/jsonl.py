"""Durable JSON Lines file: the writer's offline buffer and the collector's spool.

- `append` writes complete lines with orjson and fsyncs before returning; a failed write
  (full disk, unwritable path) raises OSError and leaves the file as it was (the partial tail is
  cut off), so the caller acks nothing.
- `iter_chunks` streams the file in chunks (memory stays flat whatever its size). A line that is
  not a JSON object is moved to `<path>.bad` and reported through `on_bad`; a torn last line (no
  newline: a crash mid-write) is set aside the same way, unless it is itself a complete object.
- Draining is crash-safe: the caller commits a chunk, then calls `commit(offset)`, which records
  the progress in `<path>.offset`; the file itself is truncated only by `clear()` once everything
  is committed. After a crash the next drain resumes at the checkpoint, and at worst replays one
  chunk (idempotent inserts absorb it).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)

Record = dict[str, Any]
READ_BLOCK = 1 << 20
# No real line comes near this (a row is ~250 bytes, an api_logs message at most 10,000
# characters): longer runs without a newline are garbage, set aside in pieces, so memory stays
# flat whatever the file holds.
MAX_LINE_BYTES = 4 << 20


@dataclass(frozen=True, slots=True)
class Chunk:
    records: list[Any]  # Record (a JSON object), or what `raw` made of a line
    end_offset: int  # byte offset just after the chunk's last line


class BufferBusy(RuntimeError):
    """Another process holds the file's lock (e.g. `bridge drain` while the writer runs)."""


class JsonlFile:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(os.path.expanduser(str(path)))
        self.bad_path = self.path.with_name(self.path.name + ".bad")
        self.offset_path = self.path.with_name(self.path.name + ".offset")
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._lock_fd: int | None = None

    # ---- locking -------------------------------------------------------------------------
    def acquire(self) -> None:
        """Take the file's exclusive lock for this process (non-blocking)."""
        if self._lock_fd is not None:
            return
        self._ensure_parent()
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BufferBusy(f"{self.path} is in use by another process") from None
        self._lock_fd = fd

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @contextlib.contextmanager
    def locked(self) -> Iterator[JsonlFile]:
        self.acquire()
        try:
            yield self
        finally:
            self.release()

    # ---- writing -------------------------------------------------------------------------
    def _ensure_parent(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, records: list[Record]) -> int:
        """Append complete lines and fsync; returns bytes written. Raises OSError untouched."""
        if not records:
            return 0
        payload = b"".join(orjson.dumps(r) + b"\n" for r in records)
        self._ensure_parent()
        created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            if created:
                _fsync_dir(self.path.parent)  # the new file's name survives a power cut
            start = os.fstat(fd).st_size
            if start > 0 and not self._ends_with_newline(fd, start):
                start = self._cut_torn_tail(fd, start)
            try:
                view = memoryview(payload)
                while view:
                    view = view[_write_some(fd, view) :]
                os.fsync(fd)
            except OSError:
                # leave no partial line behind: the caller will retry the whole batch
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)
                raise
        finally:
            os.close(fd)
        return len(payload)

    @staticmethod
    def _ends_with_newline(fd: int, size: int) -> bool:
        return os.pread(fd, 1, size - 1) == b"\n"

    def _cut_torn_tail(self, fd: int, size: int) -> int:
        """A crash left a line without its newline: set it aside, keep every complete line."""
        keep = _after_last_newline(fd, size)
        if size - keep > MAX_LINE_BYTES:
            fragment = os.pread(fd, MAX_LINE_BYTES, keep)  # no line is that long: garbage
            record = None
        else:
            fragment = os.pread(fd, size - keep, keep)
            record = _parse(fragment)
        if record is not None:
            os.write(fd, b"\n")  # it was complete but for its newline: keep it
            os.fsync(fd)
            return size + 1
        self._set_aside([fragment], "torn last line")
        os.ftruncate(fd, keep)
        os.fsync(fd)
        if self.checkpoint() > keep:
            # a drain already went past the fragment: new lines start at `keep`
            self.commit(keep)
        return keep

    def _set_aside(self, lines: list[bytes], why: str) -> None:
        fd = os.open(self.bad_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, b"".join(line.rstrip(b"\n") + b"\n" for line in lines))
            os.fsync(fd)
        finally:
            os.close(fd)
        log.warning(
            "buffer_line_set_aside %d line(s) of %s moved to %s: %s",
            len(lines),
            self.path,
            self.bad_path,
            why,
        )

    # ---- reading -------------------------------------------------------------------------
    def checkpoint(self) -> int:
        try:
            return int(self.offset_path.read_text().strip() or 0)
        except (FileNotFoundError, NotADirectoryError, ValueError):
            return 0

    def commit(self, offset: int) -> None:
        """Record that everything before `offset` is safely stored elsewhere."""
        tmp = self.offset_path.with_name(self.offset_path.name + ".tmp")
        with open(tmp, "w") as fh:
            fh.write(str(offset))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.offset_path)
        _fsync_dir(self.offset_path.parent)

    def iter_chunks(
        self,
        chunk_rows: int = 1000,
        on_bad: Callable[[int, str], None] | None = None,
        *,
        raw: Callable[[bytes], Any] | None = None,
    ) -> Generator[Chunk, None, None]:
        """Complete records from the checkpoint on, `chunk_rows` at a time.

        `on_bad(count, reason)` is called for lines moved to `<path>.bad`.
        `raw(line)`, when given, may take a line as it is (without its newline) and return what
        goes into `records` in its place, skipping the JSON parse (a reader's shortcut for lines
        it recognises); for any other line it returns None and the line is parsed as usual.
        """
        try:
            fh = open(self.path, "rb")  # noqa: SIM115 - closed in finally, generator
        except (FileNotFoundError, NotADirectoryError):
            return
        try:
            size = os.fstat(fh.fileno()).st_size
            offset = self.checkpoint()
            if offset > size:
                offset = 0  # the file was replaced: start over
            fh.seek(offset)
            reader = _ChunkReader(self, offset, chunk_rows, on_bad, raw)
            while block := fh.read(READ_BLOCK):
                yield from reader.feed(block)
            last = reader.end()
            if last is not None:
                yield last
        finally:
            fh.close()

    def _report_bad(
        self, lines: list[bytes], on_bad: Callable[[int, str], None] | None, why: str
    ) -> None:
        if not lines:
            return
        self._set_aside(lines, why)
        if on_bad is not None:
            on_bad(len(lines), why)

    def count(self) -> tuple[int, int]:
        """(lines not yet drained, bytes of the file)."""
        try:
            size = self.path.stat().st_size
        except (FileNotFoundError, NotADirectoryError):
            return 0, 0
        offset = min(self.checkpoint(), size)
        rows = 0
        with open(self.path, "rb") as fh:
            fh.seek(offset)
            while block := fh.read(READ_BLOCK):
                rows += block.count(b"\n")
            if size > offset:
                fh.seek(size - 1)
                if fh.read(1) != b"\n":
                    rows += 1
        return rows, size

    def is_empty(self) -> bool:
        try:
            size = self.path.stat().st_size
        except (FileNotFoundError, NotADirectoryError):
            return True
        return size == 0 or self.checkpoint() >= size

    def clear(self) -> None:
        """Everything is committed: empty the file and forget the checkpoint."""
        # forget the checkpoint first: a crash in between then replays (idempotent) rather than
        # skipping lines appended after a truncation
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            self.offset_path.unlink()
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            fd = os.open(self.path, os.O_WRONLY)
            try:
                os.ftruncate(fd, 0)
                os.fsync(fd)
            finally:
                os.close(fd)


def _after_last_newline(fd: int, size: int) -> int:
    """Offset just after the file's last newline (0 when there is none), reading backwards
    block by block."""
    end = size
    while end > 0:
        start = max(end - READ_BLOCK, 0)
        cut = os.pread(fd, end - start, start).rfind(b"\n")
        if cut >= 0:
            return start + cut + 1
        end = start
    return 0


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_some(fd: int, view: memoryview) -> int:
    n = os.write(fd, view)
    if n <= 0:
        raise OSError(errno.EIO, "short write")
    return n


def _parse(line: bytes) -> Record | None:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


class _ChunkReader:
    """One pass of `JsonlFile.iter_chunks`: blocks of the file in, chunks of records out."""

    def __init__(
        self,
        file: JsonlFile,
        offset: int,
        chunk_rows: int,
        on_bad: Callable[[int, str], None] | None,
        raw: Callable[[bytes], Any] | None,
    ) -> None:
        self.file = file
        self.offset = offset
        self.chunk_rows = chunk_rows
        self.on_bad = on_bad
        self.raw = raw
        self.pending = b""  # the unfinished last line of the blocks read so far
        self.records: list[Any] = []
        self.bad: list[bytes] = []
        self.pos = offset  # the file offset just after the last line taken
        self.oversized = False  # inside a run of more than MAX_LINE_BYTES without a newline

    def feed(self, block: bytes) -> Iterator[Chunk]:
        lines = (self.pending + block).split(b"\n")
        self.pending = lines.pop()
        if self.oversized and lines:
            rest = lines.pop(0)  # the end of the oversized run, up to its newline
            self.pos += len(rest) + 1
            self._set_aside([rest], "oversized line (end)")
            self.oversized = False
        if len(self.pending) > MAX_LINE_BYTES:
            self.oversized = True
        for line in lines:
            self.pos += len(line) + 1
            if self._take(line) and len(self.records) >= self.chunk_rows:
                yield self._chunk()
        if self.oversized and len(self.pending) > MAX_LINE_BYTES:
            self.pos += len(self.pending)
            self._set_aside([self.pending[:MAX_LINE_BYTES]], "oversized line")
            self.pending = b""

    def end(self) -> Chunk | None:
        """The last chunk (with the last line, when it has no newline), if any."""
        if self.oversized and self.pending:
            self.pos += len(self.pending)
            self._set_aside([self.pending[:MAX_LINE_BYTES]], "oversized line (end)")
            self.pending = b""
        if self.pending:
            record = self.raw(self.pending) if self.raw is not None else None
            if record is None:
                record = _parse(self.pending)
            self.pos += len(self.pending)
            if record is not None:
                self.records.append(record)
            else:
                self._set_aside([self.pending], "torn last line")
        self._set_aside(self.bad, "corrupt line")
        if self.records or self.pos != self.offset:
            return Chunk(self.records, self.pos)
        return None

    def _take(self, line: bytes) -> bool:
        """Add the line's record; False for a blank or corrupt line."""
        record = self.raw(line) if self.raw is not None else None
        if record is None:
            if not line.strip():
                return False
            record = _parse(line)
            if record is None:
                self.bad.append(line)
                return False
        self.records.append(record)
        return True

    def _chunk(self) -> Chunk:
        self._set_aside(self.bad, "corrupt line")
        self.bad = []
        chunk = Chunk(self.records, self.pos)
        self.records = []
        return chunk

    def _set_aside(self, lines: list[bytes], why: str) -> None:
        self.file._report_bad(lines, self.on_bad, why)

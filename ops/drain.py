"""`bridge drain`: drain the writer's JSON Lines buffer into PostgreSQL now.

The drain itself is the writer's (`writer/drain.py`). While a writer runs it holds the buffer's
lock and drains by itself every BRIDGE_FLUSH_RETRY_S, so the command says "busy" and changes
nothing (exit 3). Use it when the writer is stopped, e.g. `supervisorctl stop bridge:writer`, or
on another machine that has the buffer file. `--buffer PATH` drains another file than
BRIDGE_BUFFER_PATH: the buffer a writer of another consumer name left when it died for good
(each writer has its own; its lock tells whether that writer still runs).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from shared.config import Settings, scrub
from shared.jsonl import BufferBusy
from shared.logs import configure_logging
from writer.drain import drain_buffer

EXIT_OK, EXIT_FAIL, EXIT_BUSY = 0, 1, 3


def _started(rows: int, size: int, path: Path) -> None:
    print(f"draining {rows} rows ({size} bytes) from {path} ...", flush=True)


def drain_now(settings: Settings, path: Path | None = None) -> int:
    """Drain BRIDGE_BUFFER_PATH, or `path` (`--buffer PATH`: a buffer another writer left)."""
    configure_logging("drain", settings.log_format, settings.log_level)
    try:
        result = asyncio.run(drain_buffer(settings, on_start=_started, path=path))
    except BufferBusy:
        print(
            f"busy: the buffer {path or settings.buffer_path} is locked by a running writer, which "
            "drains it by itself every BRIDGE_FLUSH_RETRY_S; stop the writer first "
            "(supervisorctl stop bridge:writer) to drain it by hand",
            file=sys.stderr,
        )
        return EXIT_BUSY
    except OSError as exc:
        print(scrub(f"drain_failed {exc}"), file=sys.stderr)
        return EXIT_FAIL
    if result.rows_before == 0:
        print(f"buffer empty: {result.path}")
        return EXIT_OK
    if not result.complete:
        print(
            f"drain incomplete: {result.rows_left} rows left in {result.path}; PostgreSQL "
            "unreachable? (see the log lines above)",
            file=sys.stderr,
        )
        return EXIT_FAIL
    print(f"drained {result.rows_before} rows into PostgreSQL; the buffer is empty")
    return EXIT_OK

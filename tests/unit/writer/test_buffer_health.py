"""The writer's buffer health as the operator sees it: one audit row per new reason, the log
repeated at most every minute while the reason stays, one INFO audit row once writable."""

from __future__ import annotations

import errno
import logging
from pathlib import Path

import pytest

from writer.buffer_health import LOG_EVERY_S, BufferHealth


def test_a_lasting_failure_is_logged_each_minute_and_audited_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    audits: list[tuple[str, str]] = []
    health = BufferHealth(
        Path("/b/buffer.jsonl"), lambda s, m: audits.append((s, m)), lambda: now[0]
    )
    full = OSError(errno.ENOSPC, "No space left on device")
    with caplog.at_level(logging.ERROR, logger="writer.buffer_health"):
        for step in (0.0, 1.0, LOG_EVERY_S - 1.0, 1.0, 1.0):  # at 0, 1, 60, 61, 62 s
            now[0] += step
            assert health.failed(full) == "OSError: [Errno 28] No space left on device"
    assert len(caplog.records) == 2  # at 0 s and at 60 s, a minute after the first
    assert [s for s, _ in audits] == ["ERROR"]
    health.failed(OSError(errno.EACCES, "Permission denied"))  # a new reason: said at once
    assert len(caplog.records) == 3 and [s for s, _ in audits] == ["ERROR", "ERROR"]
    health.written(rows=5, size=400)
    health.written(rows=6, size=480)
    assert [s for s, _ in audits] == ["ERROR", "ERROR", "INFO"]
    assert health.error == ""

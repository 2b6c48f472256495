"""Whether the writer's buffer can be written, as the operator sees it: one ERROR (log and
`api_logs`) per new reason, repeated in the log at most every minute, and one INFO when the
buffer is writable again."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from writer.errors import reason_of

log = logging.getLogger(__name__)

LOG_EVERY_S = 60.0

Audit = Callable[[str, str], None]  # (status, message) -> an api_logs row of the writer


class BufferHealth:
    def __init__(self, path: Path, audit: Audit, monotonic: Callable[[], float]) -> None:
        self.path = path
        self.audit = audit
        self.monotonic = monotonic
        self.error = ""  # the reason the last write failed; empty while writable
        self._logged = 0.0

    def failed(self, exc: OSError) -> str:
        """Report a failed write (without repeating itself); returns the reason."""
        reason = reason_of(exc)
        now = self.monotonic()
        if reason != self.error or now - self._logged >= LOG_EVERY_S:
            log.error(
                "buffer_unwritable %s: %s; nothing is acked, Redis keeps the entries",
                self.path,
                reason,
            )
            if reason != self.error:
                self.audit(
                    "ERROR",
                    f"writer buffer {self.path} unwritable: {reason}; "
                    "entries stay unacknowledged in Redis",
                )
            self._logged = now
        self.error = reason
        return reason

    def written(self, rows: int, size: int) -> None:
        """A write succeeded: say so once if it had failed before."""
        if not self.error:
            return
        log.warning("buffer_writable again %s (%d rows, %d bytes)", self.path, rows, size)
        self.audit("INFO", f"writer buffer {self.path} writable again after: {self.error}")
        self.error = ""

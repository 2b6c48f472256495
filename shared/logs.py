"""One function configures logging: plain text for people, JSON lines for log shippers.

Every line goes through `scrub` (URL passwords and the configured secrets hidden): an
exception's text, logged with %r or as a traceback, may quote a DSN. An uncaught exception's
traceback is written the same way.
"""

from __future__ import annotations

import logging
import sys
import traceback
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import orjson

from shared.config.redact import scrub, scrub_all

_STD = set(vars(logging.makeLogRecord({})))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STD and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        # scrubbed before encoding: a secret holding a quote would not match once escaped
        return orjson.dumps(scrub_all(payload), default=_scrubbed_text).decode()


def _scrubbed_text(value: object) -> str:
    return scrub(str(value))


class ScrubbingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


def _scrubbed_excepthook(
    kind: type[BaseException], value: BaseException, tb: TracebackType | None
) -> None:
    sys.stderr.write(scrub("".join(traceback.format_exception(kind, value, tb))))
    sys.stderr.flush()


def configure_logging(process: str, fmt: str = "text", level: str = "INFO") -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            ScrubbingFormatter(f"%(asctime)s %(levelname)s {process} %(name)s: %(message)s")
        )
    root.addHandler(handler)
    root.setLevel(level)
    sys.excepthook = _scrubbed_excepthook
    # ib_async is chatty at INFO about every request; keep its warnings and errors
    logging.getLogger("ib_async").setLevel(max(logging.WARNING, root.level))

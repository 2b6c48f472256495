"""supervisord event listener: FATAL and unexpected exits -> `api_logs` rows.

    [eventlistener:bridge_events]
    command=.venv/bin/python -m ops.supervisor_events
    events=PROCESS_STATE_FATAL,PROCESS_STATE_EXITED,TICK_5

For each PROCESS_STATE_FATAL, and each PROCESS_STATE_EXITED with `expected:0`, one row is XADDed
to the `api_logs` stream (codec v1, source `supervisor`), which the writer stores like any other.
FATAL is an ERROR row with the last error line of the process's log (for a bad configuration:
the `config_invalid` line naming the variable); an unexpected exit is a WARN row.

The configuration (`.env` in the working directory, then the environment) is read again for
each event, so a corrected `.env` is used without restarting the listener; when it is invalid,
REDIS_URL and BRIDGE_REDIS_PREFIX are used if they are valid by themselves. When Redis is
unreachable the row waits in memory and is sent at the next event or TICK_5 (every 5 s); the
event is acknowledged at once all the same (supervisord would otherwise hold every later event
back), and logged on stderr. stdout is the event protocol: nothing else is printed
there.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import IO, Any

import redis

from shared.clock import utcnow
from shared.codec import MAX_TEXT, encode_api_log
from shared.config import API_MODES, ConfigError, load_settings, read_dotenv, remember
from shared.logs import configure_logging
from shared.models import ApiLogRow
from shared.names import Keys
from shared.process import die_with_parent
from shared.supervisor_rpc import RPC_ERRORS, Supervisor

log = logging.getLogger("supervisor_events")

SOURCE = "supervisor"
MAX_MESSAGE = 1000
MAX_WAITING = 1000  # rows kept while Redis is unreachable
ERROR_MARKERS = ("config_invalid", "ERROR", "Traceback", "Error")


def parse_tokens(text: str) -> dict[str, str]:
    """`key:value key:value ...` (the header line and the PROCESS_STATE payload)."""
    out: dict[str, str] = {}
    for token in text.split():
        key, sep, value = token.partition(":")
        if sep:
            out[key] = value
    return out


def last_error_line(log_tail: str) -> str:
    """The most telling line of a process log's tail: the last one that looks like an error."""
    lines = [line.strip() for line in log_tail.splitlines() if line.strip()]
    for marker in ERROR_MARKERS:
        for line in reversed(lines):
            if marker in line:
                return line
    return lines[-1] if lines else ""


@dataclass(frozen=True, slots=True)
class ProcessEvent:
    name: str  # `group:process` (or `process` when the group has its name)
    event: str  # PROCESS_STATE_FATAL, PROCESS_STATE_EXITED
    from_state: str
    expected: bool
    pid: str


def parse_event(header: dict[str, str], payload: str) -> ProcessEvent | None:
    event = header.get("eventname", "")
    if event not in ("PROCESS_STATE_FATAL", "PROCESS_STATE_EXITED"):
        return None
    body = parse_tokens(payload.split("\n", 1)[0])
    group, process = body.get("groupname", ""), body.get("processname", "")
    name = process if not group or group == process else f"{group}:{process}"
    return ProcessEvent(
        name=name,
        event=event,
        from_state=body.get("from_state", ""),
        expected=body.get("expected", "0") == "1",
        pid=body.get("pid", ""),
    )


def describe(event: ProcessEvent, info: dict[str, Any] | None, reason: str) -> tuple[str, str]:
    """(status, message) of the api_logs row of an event."""
    detail = ""
    if info:
        exit_status = info.get("exitstatus")
        spawn_err = str(info.get("spawnerr") or "")
        if spawn_err:
            detail = f"spawn error: {spawn_err}"
        elif exit_status not in (None, 0):
            detail = f"exit status {exit_status}"
    if event.event == "PROCESS_STATE_FATAL":
        message = f"{event.name} is FATAL: it could not be started (from {event.from_state}"
        message += f", {detail})" if detail else ")"
        message += "; supervisord will not retry it: fix the cause, then "
        message += f"`supervisorctl start {event.name}`"
        status = "ERROR"
    else:
        message = f"{event.name} exited unexpectedly (from {event.from_state}"
        message += f", pid {event.pid}" if event.pid else ""
        message += f", {detail})" if detail else ")"
        message += "; supervisord restarts it"
        status = "WARN"
    if reason:
        message += f". Last log line: {reason}"
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 3] + "..."
    return status, message


def make_row(
    event: ProcessEvent,
    info: dict[str, Any] | None,
    reason: str,
    api_mode: str,
    now: datetime,
) -> ApiLogRow | None:
    """The api_logs row of an event, or None for an expected exit."""
    if event.event == "PROCESS_STATE_EXITED" and event.expected:
        return None
    status, message = describe(event, info, reason)
    assert len(message) <= MAX_TEXT
    return ApiLogRow(ts=now, api_mode=api_mode, status=status, message=message, source=SOURCE)


@dataclass(frozen=True, slots=True)
class Destination:
    """Where the rows go: the Redis, key prefix and api_mode of the bridge's configuration."""

    redis_url: str
    prefix: str
    api_mode: str


_PREFIX_RE = re.compile(r"[A-Za-z0-9_.:\-{}]{1,64}")


def destination(dotenv: Path = Path(".env")) -> Destination | None:
    """The bridge's Redis from its configuration. When the configuration is invalid (often the
    very cause of a FATAL), REDIS_URL and BRIDGE_REDIS_PREFIX are still used if they look
    right by themselves, so that the FATAL reaches api_logs all the same."""
    try:
        settings = load_settings(dotenv=dotenv)
    except ConfigError as exc:
        log.error("config_invalid %s (events are recorded with the raw REDIS_URL if usable)", exc)
        raw = {**read_dotenv(dotenv), **os.environ}
        url = raw.get("REDIS_URL", "").strip()
        remember([url, raw.get("DATABASE_URL", ""), raw.get("BRIDGE_SUPERVISOR_URL", "")])
        prefix = raw.get("BRIDGE_REDIS_PREFIX", "").strip() or "bridge:"
        mode = raw.get("IB_API_MODE", "").strip().upper()
        if not url.startswith(("redis://", "rediss://", "unix://")):
            return None
        if not _PREFIX_RE.fullmatch(prefix):
            return None
        return Destination(url, prefix, mode if mode in API_MODES else "UNKNOWN")
    remember(settings.secret_texts())
    if not settings.redis_url:
        return None
    return Destination(settings.redis_url, settings.redis_prefix, settings.ib_api_mode)


class Recorder:
    """What the listener does with an event: look it up in supervisord, XADD the row.

    A row that cannot be sent (Redis down: often the very event, e.g. redis-server killed) waits
    in memory, in order, and is sent at the next event or TICK_5, i.e. within 5 s of Redis
    being back. At most MAX_WAITING rows wait; beyond, the oldest is dropped with an ERROR line
    (every row is also on stderr, in the listener's log).
    """

    def __init__(
        self,
        supervisor_url: str | None,
        where: Callable[[], Destination | None] = destination,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.supervisor = Supervisor(supervisor_url, timeout_s=3.0) if supervisor_url else None
        self.where = where
        self.clock = clock
        self.waiting: deque[ApiLogRow] = deque()
        self._failing = False

    def _lookup(self, name: str) -> tuple[dict[str, Any] | None, str]:
        if self.supervisor is None:
            return None, ""
        try:
            info = self.supervisor.process_info(name)
            tail = self.supervisor.tail_stdout(name, 4000)
        except RPC_ERRORS as exc:
            log.warning("supervisor_unreachable %r", exc)
            return None, ""
        return info, last_error_line(tail)

    def handle(self, event: ProcessEvent) -> ApiLogRow | None:
        if event.event == "PROCESS_STATE_EXITED" and event.expected:
            log.info("process_exited_expected %s", event.name)
            return None
        info, reason = self._lookup(event.name)
        dest = self.where()
        row = make_row(event, info, reason, dest.api_mode if dest else "UNKNOWN", self.clock())
        if row is None:
            return None
        log.warning("process_event %s %s", row.status, row.message)
        if len(self.waiting) >= MAX_WAITING:
            lost = self.waiting.popleft()
            log.error(
                "api_log_dropped %d rows wait already; oldest dropped: %s %s",
                MAX_WAITING,
                lost.status,
                lost.message,
            )
        self.waiting.append(row)
        self.flush(dest)
        return row

    def flush(self, dest: Destination | None = None) -> int:
        """Send the waiting rows, oldest first; returns how many were sent."""
        if not self.waiting:
            return 0
        dest = dest or self.where()
        if dest is None:
            log.error(
                "api_log_not_recorded no usable REDIS_URL in the configuration; %d row(s) wait",
                len(self.waiting),
            )
            return 0
        try:
            client = redis.Redis.from_url(
                dest.redis_url, socket_timeout=3, socket_connect_timeout=3
            )
        except ValueError as exc:
            log.error("api_log_not_recorded REDIS_URL unusable: %s", exc)
            return 0
        sent = 0
        try:
            while self.waiting:
                fields: dict[Any, Any] = encode_api_log(self.waiting[0])
                client.xadd(Keys(dest.prefix).api_logs, fields)
                self.waiting.popleft()
                sent += 1
        except (redis.RedisError, OSError) as exc:
            if not self._failing:
                log.error(
                    "api_log_not_recorded Redis unreachable: %r; %d row(s) wait, retried every 5 s",
                    exc,
                    len(self.waiting),
                )
            self._failing = True
        else:
            if self._failing:
                log.info("api_log_recorded Redis back: %d waiting row(s) sent", sent)
            self._failing = False
        finally:
            client.close()
        return sent


def serve(stdin: IO[bytes], stdout: IO[bytes], recorder: Recorder) -> int:
    """The event listener protocol, until supervisord closes stdin; returns the event count."""
    handled = 0
    while True:
        stdout.write(b"READY\n")
        stdout.flush()
        line = stdin.readline()
        if not line:
            return handled
        header = parse_tokens(line.decode("utf-8", "replace"))
        size = int(header.get("len", "0") or 0)
        payload = stdin.read(size).decode("utf-8", "replace") if size else ""
        event = parse_event(header, payload)
        try:
            if event is not None:
                recorder.handle(event)
            elif header.get("eventname", "").startswith("TICK_"):
                recorder.flush()
        except Exception:
            # one event that cannot be recorded must not stop the listener: say so loudly
            log.exception("event_not_recorded %s", header.get("eventname"))
        handled += 1
        stdout.write(b"RESULT 2\nOK")
        stdout.flush()


def _exit_on_term(signum: int, _frame: FrameType | None) -> None:
    log.info("listener_stopped by signal %d", signum)
    sys.exit(0)


def main() -> int:
    configure_logging("supervisor_events")  # stderr only: stdout is the protocol
    signal.signal(signal.SIGTERM, _exit_on_term)
    die_with_parent(signal.SIGTERM)  # supervisord gone (even by kill -9): no orphan listener
    recorder = Recorder(os.environ.get("SUPERVISOR_SERVER_URL"))
    log.info("listener_started")
    serve(sys.stdin.buffer, sys.stdout.buffer, recorder)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The supervisord event listener: protocol, parsing, the api_logs rows it makes."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from ops import supervisor_events as ev
from shared.codec import decode_api_log
from shared.models import ApiLogRow

NOW = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)


def _message(eventname: str, payload: str, serial: int = 1) -> bytes:
    body = payload.encode()
    header = (
        f"ver:3.0 server:supervisor serial:{serial} pool:bridge_events poolserial:{serial} "
        f"eventname:{eventname} len:{len(body)}\n"
    )
    return header.encode() + body


FATAL = "processname:writer groupname:bridge from_state:BACKOFF"
EXITED = "processname:collector groupname:bridge from_state:RUNNING expected:0 pid:4242"
EXITED_OK = "processname:collector groupname:bridge from_state:STOPPING expected:1 pid:4242"


def test_parse_event() -> None:
    header = ev.parse_tokens("ver:3.0 eventname:PROCESS_STATE_FATAL len:10")
    e = ev.parse_event(header, FATAL)
    assert e == ev.ProcessEvent("bridge:writer", "PROCESS_STATE_FATAL", "BACKOFF", False, "")
    e = ev.parse_event({"eventname": "PROCESS_STATE_EXITED"}, EXITED)
    assert e is not None and e.name == "bridge:collector" and not e.expected and e.pid == "4242"
    same = "processname:bridge_events groupname:bridge_events from_state:RUNNING expected:0 pid:1"
    e = ev.parse_event({"eventname": "PROCESS_STATE_EXITED"}, same)
    assert e is not None and e.name == "bridge_events"
    assert ev.parse_event({"eventname": "TICK_5"}, "when:1") is None


def test_last_error_line_prefers_the_config_error() -> None:
    tail = (
        "2026 INFO writer: starting\n"
        "2026 ERROR writer writer: config_invalid IB_API_MODE='FIX' is invalid: allowed\n"
        "2026 INFO writer: bye\n"
    )
    assert "config_invalid IB_API_MODE" in ev.last_error_line(tail)
    assert ev.last_error_line("a\nb\n\n") == "b"
    assert ev.last_error_line("") == ""


def test_fatal_is_an_error_row_with_the_reason() -> None:
    e = ev.parse_event({"eventname": "PROCESS_STATE_FATAL"}, FATAL)
    assert e is not None
    row = ev.make_row(e, {"exitstatus": 2, "spawnerr": ""}, "config_invalid X", "SOCKET", NOW)
    assert row is not None
    assert row.status == "ERROR" and row.source == "supervisor" and row.api_mode == "SOCKET"
    assert "bridge:writer is FATAL" in row.message
    assert "exit status 2" in row.message
    assert "config_invalid X" in row.message
    assert "supervisorctl start bridge:writer" in row.message


def test_unexpected_exit_is_a_warn_row_expected_exit_none() -> None:
    e = ev.parse_event({"eventname": "PROCESS_STATE_EXITED"}, EXITED)
    assert e is not None
    row = ev.make_row(e, None, "", "PORTAL", NOW)
    assert row is not None and row.status == "WARN"
    assert "bridge:collector exited unexpectedly" in row.message and "pid 4242" in row.message
    ok = ev.parse_event({"eventname": "PROCESS_STATE_EXITED"}, EXITED_OK)
    assert ok is not None and ev.make_row(ok, None, "", "PORTAL", NOW) is None


def test_message_is_bounded() -> None:
    e = ev.parse_event({"eventname": "PROCESS_STATE_FATAL"}, FATAL)
    assert e is not None
    row = ev.make_row(e, None, "x" * 50_000, "SOCKET", NOW)
    assert row is not None and len(row.message) <= ev.MAX_MESSAGE


class _Recorder(ev.Recorder):
    def __init__(self) -> None:
        super().__init__(None, where=lambda: None, clock=lambda: NOW)
        self.rows: list[ApiLogRow] = []

    def handle(self, event: ev.ProcessEvent) -> ApiLogRow | None:
        row = super().handle(event)
        if row is not None:
            self.rows.append(row)
        return row


def test_protocol_ready_result_and_eof() -> None:
    stdin = io.BytesIO(
        _message("PROCESS_STATE_FATAL", FATAL, 1)
        + _message("PROCESS_STATE_EXITED", EXITED_OK, 2)
        + _message("TICK_5", "when:1764081000", 3)
        + _message("PROCESS_STATE_EXITED", EXITED, 4)
    )
    stdout = io.BytesIO()
    rec = _Recorder()
    assert ev.serve(stdin, stdout, rec) == 4
    assert stdout.getvalue() == b"READY\nRESULT 2\nOK" * 4 + b"READY\n"
    assert [r.status for r in rec.rows] == ["ERROR", "WARN"]


def test_a_failing_event_is_still_acknowledged() -> None:
    class Boom(ev.Recorder):
        def handle(self, event: ev.ProcessEvent) -> ApiLogRow | None:
            raise RuntimeError("boom")

    stdout = io.BytesIO()
    ev.serve(io.BytesIO(_message("PROCESS_STATE_FATAL", FATAL)), stdout, Boom(None))
    assert stdout.getvalue() == b"READY\nRESULT 2\nOK" + b"READY\n"


def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str) -> Path:
    import os

    for key in list(os.environ):
        if key.startswith(("IB_", "IBKR_", "BRIDGE_")) or key in ("DATABASE_URL", "REDIS_URL"):
            monkeypatch.delenv(key)
    path = tmp_path / ".env"
    path.write_text(text)
    return path


def test_destination_from_a_valid_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = _env(
        monkeypatch,
        tmp_path,
        "REDIS_URL=redis://127.0.0.1:1/0\nBRIDGE_REDIS_PREFIX=t:\nIB_API_MODE=PORTAL\n",
    )
    assert ev.destination(path) == ev.Destination("redis://127.0.0.1:1/0", "t:", "PORTAL")


def test_destination_survives_an_invalid_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = _env(monkeypatch, tmp_path, "REDIS_URL=redis://127.0.0.1:1/0\nIB_API_MODE=FIX\n")
    assert ev.destination(path) == ev.Destination("redis://127.0.0.1:1/0", "bridge:", "UNKNOWN")
    path = _env(monkeypatch, tmp_path, "REDIS_URL=nonsense\nIB_API_MODE=FIX\n")
    assert ev.destination(path) is None


def _fake_redis(monkeypatch: pytest.MonkeyPatch) -> fakeredis.FakeServer:
    server = fakeredis.FakeServer()

    def from_url(url: str, **kw: Any) -> fakeredis.FakeRedis:
        return fakeredis.FakeRedis(server=server)

    monkeypatch.setattr(ev.redis.Redis, "from_url", staticmethod(from_url))
    return server


def test_row_reaches_the_api_logs_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    server = _fake_redis(monkeypatch)
    rec = ev.Recorder(
        None, where=lambda: ev.Destination("redis://x/0", "p:", "SOCKET"), clock=lambda: NOW
    )
    e = ev.parse_event({"eventname": "PROCESS_STATE_FATAL"}, FATAL)
    assert e is not None
    rec.handle(e)
    entries = fakeredis.FakeRedis(server=server).xrange("p:api_logs")
    assert len(entries) == 1
    row = decode_api_log(entries[0][1])
    assert isinstance(row, ApiLogRow)
    assert row.source == "supervisor" and row.status == "ERROR" and row.ts == NOW


def test_rows_wait_while_redis_is_down_and_go_in_order_at_the_next_tick(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = _fake_redis(monkeypatch)
    server.connected = False
    rec = ev.Recorder(
        None, where=lambda: ev.Destination("redis://x/0", "p:", "SOCKET"), clock=lambda: NOW
    )
    fatal = ev.parse_event({"eventname": "PROCESS_STATE_FATAL"}, FATAL)
    exited = ev.parse_event({"eventname": "PROCESS_STATE_EXITED"}, EXITED)
    assert fatal is not None and exited is not None
    rec.handle(fatal)
    rec.handle(exited)
    assert len(rec.waiting) == 2
    assert rec.flush() == 0  # still down
    server.connected = True
    stdout = io.BytesIO()
    ev.serve(io.BytesIO(_message("TICK_5", "when:1")), stdout, rec)
    assert not rec.waiting
    entries = fakeredis.FakeRedis(server=server).xrange("p:api_logs")
    messages = [e[1][b"message"].decode() for e in entries]
    assert messages[0].startswith("bridge:writer is FATAL")
    assert messages[1].startswith("bridge:collector exited unexpectedly")


def test_waiting_rows_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    server = _fake_redis(monkeypatch)
    server.connected = False
    monkeypatch.setattr(ev, "MAX_WAITING", 3)
    rec = ev.Recorder(
        None, where=lambda: ev.Destination("redis://x/0", "p:", "SOCKET"), clock=lambda: NOW
    )
    for pid in range(5):
        e = ev.parse_event(
            {"eventname": "PROCESS_STATE_EXITED"}, EXITED.replace("pid:4242", f"pid:{pid}")
        )
        assert e is not None
        rec.handle(e)
    assert [r.message.split("pid ")[1][0] for r in rec.waiting] == ["2", "3", "4"]

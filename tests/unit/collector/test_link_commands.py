"""A `control` entry read as a command the collector obeys, or the reason it cannot."""

from __future__ import annotations

from datetime import UTC, datetime

from collector.link import Command, parse_command


def test_reconnect_and_reauth_carry_their_id_reason_and_issue_time() -> None:
    fields = {b"cmd": b"reconnect", b"id": b"c1", b"reason": b"stale", b"issued": b"t"}
    assert parse_command(fields) == Command("reconnect", "c1", None, "stale", "t")
    assert parse_command({"cmd": "reauth"}) == Command("reauth", "")


def test_a_pause_needs_an_until_with_its_utc_offset() -> None:
    until = "2026-11-25T15:00:00+00:00"
    assert parse_command({"cmd": "pause", "id": "c2", "until": until}) == Command(
        "pause", "c2", datetime(2026, 11, 25, 15, tzinfo=UTC)
    )
    assert parse_command({"cmd": "pause"}) == "pause without a valid 'until' ('')"
    naive = parse_command({"cmd": "pause", "until": "2026-11-25T15:00:00"})
    assert naive == "pause without a valid 'until' ('2026-11-25T15:00:00')"


def test_anything_else_is_refused_naming_it_shortly() -> None:
    assert parse_command({"cmd": "shutdown"}) == "unknown command 'shutdown'"
    assert parse_command({}) == "unknown command ''"
    assert parse_command({"cmd": "x" * 100}) == f"unknown command {'x' * 32!r}"


def test_an_event_that_keeps_the_state_does_not_move_its_since() -> None:
    from collector.link import LinkPublisher
    from collector.transport import LinkEvent, LinkState
    from shared.names import Keys

    link = LinkPublisher(None, Keys("t:"), "SOCKET", 10.0)
    t0, t1, t2 = (datetime(2026, 12, 2, h, tzinfo=UTC) for h in (9, 10, 11))
    link.set_state(LinkEvent(LinkState.CONNECTED, t0, "connected"))
    link.set_state(LinkEvent(LinkState.CONNECTED, t1, "354 no market-data subscription", "WARN"))
    assert link.since == t0 and link.reason.startswith("354")
    link.set_state(LinkEvent(LinkState.DISCONNECTED, t2, "socket closed", "ERROR"))
    assert link.since == t2

"""The gateway's market-data errors as audit rows: one per change of each code's contract set."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from collector import data_errors as de
from collector.lines.report import LineReport
from collector.lines.schedule import LineStats


def test_one_row_per_change_naming_the_contracts_and_the_consequence() -> None:
    errors = de.DataErrors()
    errors.set(354, 1, "SPY 20261218 600 C")
    errors.set(354, 2, "SPY 20261218 610 P")
    [audit] = errors.audits()
    assert (audit.status, audit.code) == ("WARN", 354)
    assert "2 contract(s): SPY 20261218 600 C, SPY 20261218 610 P" in audit.message
    assert "carried up to BRIDGE_GREEKS_MAX_AGE_S" in audit.message
    errors.set(354, 1, "SPY 20261218 600 C")  # the same state again: no row
    assert errors.audits() == []
    errors.clear(1)
    [fewer] = errors.audits()
    assert "1 contract(s): SPY 20261218 610 P" in fewer.message
    errors.clear(2)
    [back] = errors.audits()
    assert (back.status, back.code) == ("INFO", 354) and "flows again" in back.message


def test_each_code_has_its_own_row_and_meaning() -> None:
    errors = de.DataErrors()
    for code in (10090, 10167, 10197, 10168, 200):
        errors.set(code, code, f"C{code}")
    audits = {a.code: a.message for a in errors.audits()}
    assert set(audits) == {200, 10090, 10167, 10168, 10197}
    assert "computes no Greeks" in audits[10090]
    assert "delayed data delivered instead of live" in audits[10167]
    assert "row uses delayed values" in audits[10167]
    assert "competing live session" in audits[10197]
    assert "no longer exists" in audits[200] and "left out of the row" in audits[200]
    assert errors.codes_of(10090) == frozenset({10090})


def test_a_dropped_expired_contract_is_not_announced_as_flowing_again() -> None:
    errors = de.DataErrors()
    errors.set(200, 7, "OLD 20250101 100 C")
    errors.audits()
    errors.drop(7)
    assert errors.audits() == []


def test_reset_forgets_the_state_of_the_old_session() -> None:
    errors = de.DataErrors()
    errors.set(10197, 1, "X")
    errors.audits()
    errors.reset()
    assert [a.status for a in errors.audits()] == ["INFO"]


def stats(**kw: object) -> LineStats:
    base: dict[str, object] = {
        "wanted": 150,
        "in_use": 30,
        "budget": 30,
        "working": 30,
        "rotating": True,
        "rotation_s": 20.0,
        "oldest_s": 12.0,
    }
    return LineStats(**(base | kw))  # type: ignore[arg-type]


def test_line_report_says_once_when_a_rotation_cannot_fit_the_max_age() -> None:
    rows: list[tuple[str, str, int | None]] = []
    rep = LineReport(60.0, lambda *a: rows.append(a))
    t = datetime(2026, 12, 2, tzinfo=UTC)
    rep.tick(stats(), t)
    assert rows == []
    rep.tick(stats(rotation_s=75.0), t + timedelta(seconds=1))
    rep.tick(stats(rotation_s=80.0), t + timedelta(seconds=2))
    [(message, status, _)] = rows
    assert status == "ERROR"
    assert "150 contracts" in message and "IB_MARKET_DATA_LINES=30" in message
    assert "75 s" in message and "BRIDGE_GREEKS_MAX_AGE_S=60 s" in message
    assert rep.status()["rotation_s"] == "80.0" and rep.status()["lines_in_use"] == "30"


def test_line_report_one_row_per_revival_round_and_per_lowering() -> None:
    rows: list[tuple[str, str, int | None]] = []
    rep = LineReport(60.0, lambda *a: rows.append(a))
    rep.revived("SPY 20261218 600 C")
    rep.revived("AAPL STK")
    rep.tick(stats(rotating=False, rotation_s=0.0), datetime(2026, 12, 2, tzinfo=UTC))
    [(message, status, _)] = rows
    assert status == "WARN" and "revived 2 silent" in message and "AAPL STK" in message
    rep.lowered(30)
    rep.lowered(25)  # the same burst of refusals
    rep.tick(stats(in_use=20, working=20), datetime(2026, 12, 2, tzinfo=UTC))
    assert [r[1:] for r in rows[1:]] == [("WARN", 101)]
    assert "lowered from 30 to 20" in rows[-1][0]

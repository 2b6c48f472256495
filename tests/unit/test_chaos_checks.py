"""The chaos run's own checks (tests/chaos/checks.py) judge gaps, grid and api_logs rows right."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.chaos.checks import Excuse, grid, match

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
TICK = timedelta(seconds=0.5)


def at(k: int) -> datetime:
    return T0 + k * TICK


def rows(*ks: int) -> list[tuple[datetime, int]]:
    return [(at(k), 1) for k in ks]


def excuse(start: int, onset: int, until: int) -> Excuse:
    return Excuse(at(start), at(onset), at(until))


def test_a_full_grid_has_no_problem() -> None:
    g = grid(rows(*range(10)), 0.5, [])
    assert (g.rows, g.slots, g.first, g.last) == (10, 10, at(0), at(9))
    assert g.problems() == []


def test_an_empty_slot_without_a_fault_is_named() -> None:
    g = grid(rows(0, 1, 2, 4, 5), 0.5, [None])
    assert g.unexcused == [at(3)]
    assert g.problems() == [
        f"grid slot {at(3).isoformat(timespec='microseconds')} holds no PORTFOLIO row "
        "and no fault excuses it"
    ]


def test_a_gap_opened_during_a_fault_is_excused_up_to_its_bound() -> None:
    g = grid(rows(0, 1, 2, 9, 10), 0.5, [None, excuse(2, 4, 6)])
    assert g.excused == {1: [at(3), at(4), at(5), at(6)]}
    assert g.unexcused == [at(7), at(8)]


def test_a_gap_opened_after_the_fault_is_not_its_doing() -> None:
    g = grid(rows(0, 1, 2, 3, 4, 5, 7, 8), 0.5, [excuse(1, 3, 20)])
    assert g.excused == {}
    assert g.unexcused == [at(6)]


def test_a_gap_is_credited_to_the_fault_it_opened_in() -> None:
    g = grid(rows(0, 4, 5, 8), 0.5, [excuse(0, 2, 30), excuse(5, 6, 30)])
    assert g.excused == {0: [at(1), at(2), at(3)], 1: [at(6), at(7)]}


def test_rows_off_the_grid_and_doubled_slots_are_named() -> None:
    g = grid([(at(0), 1), (at(1) + timedelta(milliseconds=1), 1), (at(2), 2)], 0.5, [])
    assert g.off_grid == [at(1) + timedelta(milliseconds=1)]
    assert g.duplicated == [at(2)]
    assert g.unexcused == [at(1)]  # the off-grid row fills no slot


def test_a_microsecond_of_float_rounding_is_on_the_grid() -> None:
    g = grid([(at(0), 1), (at(1) + timedelta(microseconds=1), 1)], 0.5, [])
    assert g.problems() == []


def test_no_rows_no_slots() -> None:
    g = grid([], 0.5, [excuse(0, 1, 2)])
    assert (g.rows, g.slots, g.first) == (0, 0, None)


def test_each_fault_needs_its_own_row() -> None:
    # two faults of one pattern whose windows both hold row 7: only one of them may have it
    assert match([[7], [7]]) in ([7, None], [None, 7])
    assert match([[7], [7, 8]]) == [7, 8]


def test_a_row_claimed_first_is_moved_to_free_it_for_a_later_fault() -> None:
    assert match([[1, 2], [1]]) == [2, 1]
    assert match([[], [3]]) == [None, 3]

"""The migrations as files (database/migrate.py, pure part): their names and numbering, the
checksum, the states `bridge schema --status` shows, and that they ship with the package."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from database.migrate import Applied, Migration, available, migration, ordered, states

REPO = Path(__file__).resolve().parents[3]
AT = datetime(2026, 12, 1, tzinfo=UTC)


def test_the_release_ships_three_migrations_in_order() -> None:
    found = available()
    assert [m.label for m in found] == [
        "0001_initial",
        "0002_account_key",
        "0003_portfolio_exposure",
    ]
    folder = REPO / "database" / "migrations"
    for m in found:
        data = (folder / f"{m.label}.sql").read_bytes()
        assert m == migration(f"{m.label}.sql", data)
    assert all(len(m.checksum) == 64 for m in found)


def test_the_sql_files_are_package_data() -> None:
    """A wheel holds only what package-data names: the migrations must be in it."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "migrations/*.sql" in project["tool"]["setuptools"]["package-data"]["database"]
    assert not (REPO / "database" / "sql").exists(), "one source of truth for the schema"


def test_the_checksum_is_the_files_and_changes_with_it() -> None:
    one = migration("0001_x.sql", b"SELECT 1;\n")
    assert one.checksum == migration("0001_x.sql", b"SELECT 1;\n").checksum
    assert one.checksum != migration("0001_x.sql", b"SELECT 1; \n").checksum
    assert (one.version, one.name, one.sql) == (1, "x", "SELECT 1;\n")


@pytest.mark.parametrize("name", ["1_x.sql", "0001-x.sql", "0001_X.sql", "0001_x.SQL", "x.sql"])
def test_a_badly_named_file_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match=r"NNNN_name\.sql"):
        migration(name, b"")


@pytest.mark.parametrize("versions", [[2, 3], [1, 3], [1, 1, 2], [0, 1]])
def test_migrations_are_numbered_without_gaps_or_twins(versions: list[int]) -> None:
    found = [migration(f"{v:04d}_m{i}.sql", b"") for i, v in enumerate(versions)]
    with pytest.raises(ValueError, match="without gaps"):
        ordered(found)


def test_ordered_sorts_by_version() -> None:
    found = [migration(f"{v:04d}_m.sql", b"") for v in (3, 1, 2)]
    assert [m.version for m in ordered(found)] == [1, 2, 3]


def applied(m: Migration, checksum: str | None = None) -> Applied:
    return Applied(m.version, m.name, checksum or m.checksum, AT)


def test_states_applied_pending_changed_and_unknown() -> None:
    one, two, three = (migration(f"{v:04d}_m{v}.sql", f"-- {v}".encode()) for v in (1, 2, 3))
    recorded = {
        1: applied(one),
        2: applied(two, "another file"),
        7: Applied(7, "later", "c", AT),
    }
    got = [(s.label, s.state, s.applied_at) for s in states([one, two, three], recorded)]
    assert got == [
        ("0001_m1", "applied", AT),
        ("0002_m2", "changed", AT),
        ("0003_m3", "pending", None),
        ("0007_later", "unknown", AT),
    ]
    assert [s.state for s in states([one], {})] == ["pending"]

"""House rules no linter checks: module size, no test hooks, no references outside a clone."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PRODUCT = ("ops", "collector", "writer", "watchdog", "database", "shared", "simulator")
MAX_LINES = 400
SOURCES = sorted(p for pkg in PRODUCT for p in (REPO / pkg).rglob("*.py"))


def _name(path: Path) -> str:
    return str(path.relative_to(REPO))


def test_the_product_has_modules() -> None:
    assert len(SOURCES) > 50


@pytest.mark.parametrize("path", SOURCES, ids=_name)
def test_modules_stay_small(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{_name(path)} has {lines} lines: split it along its seams"


@pytest.mark.parametrize("path", SOURCES, ids=_name)
def test_no_test_hooks_in_the_product(path: Path) -> None:
    assert "BRIDGE_TEST_" not in path.read_text(encoding="utf-8")


# What a user's clone does not hold: the design notes beside the repository, issue numbers.
OUTSIDE = re.compile(r"DESIGN\.md|\.\./shared|\bissue #?\d+|\(#\d+\)", re.IGNORECASE)
TEXTS = [*SOURCES, *sorted((REPO / "docs").glob("*.md")), REPO / "README.md"]


@pytest.mark.parametrize("path", TEXTS, ids=_name)
def test_text_refers_only_to_what_a_clone_holds(path: Path) -> None:
    found = OUTSIDE.findall(path.read_text(encoding="utf-8"))
    assert not found, f"{_name(path)} refers to {found}"

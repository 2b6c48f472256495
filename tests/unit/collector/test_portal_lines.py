"""What a PORTAL snapshot row says about its line (pure): field 6509 and the row's error."""

from __future__ import annotations

import pytest

from collector.portal.lines import error_kind, kind_of


@pytest.mark.parametrize(
    ("field", "kind"),
    [
        ("RpB", "LIVE"),
        ("D", "DELAYED"),
        ("ZpB", "FROZEN"),
        ("Yp", "DELAYED_FROZEN"),
        ("N", "NOT_SUBSCRIBED"),
        ("Q", "UNKNOWN"),
        ("", ""),
    ],
)
def test_field_6509(field: str, kind: str) -> None:
    assert kind_of(field) == kind


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("Max number of tickers has been reached", "limit"),
        ("market data line limit exceeded", "limit"),
        ("Contract not found", "gone"),
        ("conid 12 expired", "gone"),
        ("Invalid conid", "gone"),
        ("something else went wrong", "other"),
    ],
)
def test_row_errors(text: str, kind: str) -> None:
    assert error_kind(text) == kind

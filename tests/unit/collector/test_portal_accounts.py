"""PORTAL's accounts (pure): which to read from IB_ACCOUNT and /portfolio/accounts, each
account's P&L read from /iserver/account/pnl/partitioned (unknown is None, never 0), and
unknown again once too old."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from collector.portal.accounts import (
    PNL_MAX_AGE_S,
    choose_accounts,
    current_pnl,
    parse_partitioned_pnl,
)
from collector.portal.session import AccountChoiceError
from collector.transport import Pnl

OFFERED = ["DU1", "DU2", "DU3"]


def test_one_a_list_or_all() -> None:
    assert choose_accounts("DU2", OFFERED) == ["DU2"]
    assert choose_accounts("DU3, DU1", OFFERED) == ["DU3", "DU1"]
    assert choose_accounts("all", OFFERED) == OFFERED
    assert choose_accounts("", ["DU1"]) == ["DU1"]


def test_an_account_not_offered_is_refused_by_name() -> None:
    with pytest.raises(AccountChoiceError, match=r"IB_ACCOUNT=DU9 is not .* \(DU1, DU2, DU3\)"):
        choose_accounts("DU1,DU9", OFFERED)
    with pytest.raises(AccountChoiceError, match="IB_ACCOUNT must name one"):
        choose_accounts("", OFFERED)


def test_without_the_list_of_accounts_ib_account_is_trusted_but_all_is_refused() -> None:
    assert choose_accounts("DU2,DU1", []) == ["DU2", "DU1"]
    for wanted in ("ALL", ""):
        with pytest.raises(AccountChoiceError, match="returned no account"):
            choose_accounts(wanted, [])


def test_partitioned_pnl_per_account() -> None:
    body = {
        "upnl": {
            "DU1.Core": {"rowType": 1, "dpl": 12.5, "nl": 1e6, "upl": "-300.25", "mv": 0},
            "DU2.Core": {"rowType": 1, "dpl": None, "upl": 40.0, "rpl": 7},
            "DU2.MODEL1": {"dpl": 999.0, "upl": 999.0},  # a model's share, not the account's
        }
    }
    got = parse_partitioned_pnl(body, ["DU1", "DU2", "DU3"])
    assert got == {
        "DU1": Pnl(12.5, -300.25, None),  # no realized figure: unknown, not 0
        "DU2": Pnl(None, 40.0, 7.0),
        "DU3": Pnl(),  # not in the answer
    }
    for bad in (None, [], {"upnl": []}, {"upnl": {"DU1.Core": "x"}}):
        assert parse_partitioned_pnl(bad, ["DU1"]) == {"DU1": Pnl()}


def test_old_pnl_is_unknown() -> None:
    at = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
    pnl = {"DU1": Pnl(1.0, 10.0, None), "DU2": Pnl(2.0, 20.0, None)}
    fresh = current_pnl(pnl, ["DU1", "DU2"], at, at + timedelta(seconds=PNL_MAX_AGE_S))
    assert fresh == {"DU1": pnl["DU1"], "DU2": pnl["DU2"]}
    late = at + timedelta(seconds=PNL_MAX_AGE_S + 1)
    assert current_pnl(pnl, ["DU1", "DU2"], at, late) == {"DU1": Pnl(), "DU2": Pnl()}
    assert current_pnl(pnl, ["DU1"], None, at) == {"DU1": Pnl()}  # never read

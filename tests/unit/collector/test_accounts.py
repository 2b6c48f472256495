"""IB_ACCOUNT: one account, a list, ALL, or empty for the login's only account."""

from __future__ import annotations

from collector.accounts import resolve_accounts


def test_one_a_list_or_all() -> None:
    managed = ["DU1", "DU2", "DU3"]
    assert resolve_accounts("DU2", managed) == (["DU2"], "")
    assert resolve_accounts("DU3,DU1,DU3", managed) == (["DU3", "DU1"], "")
    assert resolve_accounts("ALL", managed) == (managed, "")
    assert resolve_accounts("all", ["DU1", "All", ""]) == (["DU1"], "")


def test_empty_means_the_only_account() -> None:
    assert resolve_accounts("", ["DU1"]) == (["DU1"], "")
    accounts, why = resolve_accounts("", ["DU1", "DU2"])
    assert accounts == [] and "comma-separated list" in why and "DU1, DU2" in why


def test_unknown_accounts_are_named() -> None:
    accounts, why = resolve_accounts("DU1,DU9,DU8", ["DU1", "DU2"])
    assert accounts == []
    assert why == "IB_ACCOUNT=DU9,DU8 is not an account of this login (DU1, DU2)"
    assert resolve_accounts("ALL", []) == ([], "the login manages no account")

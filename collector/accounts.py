"""Which accounts of the login to read (pure): IB_ACCOUNT is one account, a comma-separated
list, or ALL (every account the login manages); empty means the login's only account."""

from __future__ import annotations

from collections.abc import Sequence

ALL = "ALL"


def resolve_accounts(setting: str, managed: Sequence[str]) -> tuple[list[str], str]:
    """The accounts to read, in order, and '' -- or no accounts and why not."""
    known = [a for a in dict.fromkeys(managed) if a and a.upper() != ALL]
    listed = ", ".join(known) or "none"
    if setting.upper() == ALL:
        return (known, "") if known else ([], "the login manages no account")
    if not setting:
        if len(known) == 1:
            return known, ""
        return [], (
            "IB_ACCOUNT must name one of the login's accounts, a comma-separated list of them, "
            f"or ALL: {listed}"
        )
    wanted = list(dict.fromkeys(a.strip() for a in setting.split(",") if a.strip()))
    missing = [a for a in wanted if a not in known]
    if missing:
        return [], f"IB_ACCOUNT={','.join(missing)} is not an account of this login ({listed})"
    return wanted, ""

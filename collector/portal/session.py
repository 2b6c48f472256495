"""The gateway session's set-up calls: the auth status, the accounts, and choosing the account.

`/iserver/auth/status` and `/tickle` are POST in the spec; some gateways answer 405 to that and
are asked with GET. `/portfolio/accounts` may be refused when IB_ACCOUNT names the account anyway;
`/iserver/accounts` (needed before market data) may be missing on a gateway: both are tolerated.
"""

from __future__ import annotations

import logging

from collector.portal.client import BadAnswer, PortalClient
from collector.portal.parsers import AuthStatus, parse_auth_status, parse_portfolio_accounts
from collector.transport import TransportError

log = logging.getLogger(__name__)


class AccountChoiceError(TransportError):
    """No account can be chosen (several and IB_ACCOUNT empty, or IB_ACCOUNT not offered)."""


async def post_or_get(client: PortalClient, path: str) -> object:
    """POST (the spec's method); a gateway that answers 405 to it is asked with GET."""
    try:
        return await client.post(path)
    except BadAnswer as exc:
        if exc.status != 405:
            raise
        return await client.get(path)


async def auth_status(client: PortalClient) -> AuthStatus:
    return parse_auth_status(await post_or_get(client, "/iserver/auth/status"))


async def portfolio_accounts(client: PortalClient, ib_account: str) -> list[str]:
    """The accounts offered; none (and a warning) when refused while IB_ACCOUNT is set."""
    try:
        return parse_portfolio_accounts(await client.get("/portfolio/accounts"))
    except BadAnswer as exc:
        if not ib_account:
            raise
        log.warning("portal_accounts_unavailable %s; using IB_ACCOUNT", exc)
        return []


async def iserver_accounts(client: PortalClient) -> object:
    """Required before market data; a gateway without it (4xx) is tolerated."""
    try:
        return await client.get("/iserver/accounts")
    except BadAnswer as exc:
        log.warning("portal_iserver_accounts_unavailable %s", exc)
        return None


def choose_account(wanted: str, accounts: list[str]) -> str:
    """IB_ACCOUNT (`wanted`) when offered, or the only account; AccountChoiceError otherwise."""
    if wanted.upper() == "ALL" or "," in wanted:
        raise AccountChoiceError(
            f"IB_ACCOUNT={wanted}: PORTAL mode reads one account; run one bridge per account "
            "(their rows share one database), or use SOCKET mode for several"
        )
    if wanted:
        if accounts and wanted not in accounts:
            raise AccountChoiceError(
                f"IB_ACCOUNT={wanted} is not among the gateway's accounts: " + ", ".join(accounts)
            )
        return wanted
    if len(accounts) == 1:
        return accounts[0]
    if not accounts:
        raise AccountChoiceError("/portfolio/accounts returned no account")
    raise AccountChoiceError(
        "several accounts (" + ", ".join(accounts) + "): set IB_ACCOUNT to one of them"
    )

"""The gateway session's set-up calls: the auth status and the accounts (which of them to read:
`collector.portal.accounts`).

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
    """No account can be chosen (several and IB_ACCOUNT empty, or an account not offered)."""


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

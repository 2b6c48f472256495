"""The accounts PORTAL reads, and what the gateway says of each beside its positions.

IB_ACCOUNT (one account, a comma-separated list, or ALL) is resolved against /portfolio/accounts
(`collector.accounts.resolve_accounts`); when the gateway refuses that call, an account or list
named in IB_ACCOUNT is taken as it is (ALL cannot be).

P&L: GET /iserver/account/pnl/partitioned, one call for every account (IBKR paces it at 1 per
5 s), whose `upnl` maps "{acct}.Core" to the account's figures: `dpl` daily, `upl` unrealized
and, where a gateway sends it, `rpl` realized. An account or a figure the answer lacks is
unknown (None), never 0, and so is every figure once the last answer is older than
`PNL_MAX_AGE_S` (a failing call must not leave an old P&L looking current).

Summary: /portfolio/{acct}/summary of each account; the link status shows the net liquidation
and available funds added up over the accounts, only when every account gave the figure.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime

from collector.accounts import ALL, resolve_accounts
from collector.books import combined_pnl
from collector.portal.client import BadAnswer, PortalClient
from collector.portal.parsers import parse_number, summary_amount
from collector.portal.session import AccountChoiceError
from collector.transport import Pnl
from shared.clock import age_s

log = logging.getLogger(__name__)

PNL_PATH = "/iserver/account/pnl/partitioned"
PNL_MAX_AGE_S = 60.0
CORE = ".Core"  # the account's own figures (a model of an advisor account has its own key)
SUMMARY_FIELDS = (("netliquidation", "net_liquidation"), ("availablefunds", "available_funds"))


def choose_accounts(wanted: str, offered: Sequence[str]) -> list[str]:
    """The accounts to read, in order; AccountChoiceError naming the offered ones otherwise."""
    if not offered:
        named = list(dict.fromkeys(a.strip() for a in wanted.split(",") if a.strip()))
        if wanted.upper() == ALL or not named:
            raise AccountChoiceError(
                "/portfolio/accounts returned no account"
                + (": IB_ACCOUNT=ALL needs the list" if named else "")
            )
        return named  # the gateway refused the list: IB_ACCOUNT is trusted
    accounts, why = resolve_accounts(wanted, offered)
    if why:
        raise AccountChoiceError(why)
    return accounts


def _number(raw: object) -> float | None:
    return parse_number(raw).value


def parse_partitioned_pnl(body: object, accounts: Sequence[str]) -> dict[str, Pnl]:
    """Each account's P&L from /iserver/account/pnl/partitioned; unknown figures are None."""
    upnl = body.get("upnl") if isinstance(body, Mapping) else None
    entries: Mapping[object, object] = upnl if isinstance(upnl, Mapping) else {}
    out: dict[str, Pnl] = {}
    for account in accounts:
        entry = entries.get(account + CORE)
        if not isinstance(entry, Mapping):
            out[account] = Pnl()
            continue
        out[account] = Pnl(_number(entry.get("dpl")), _number(entry.get("upl")),
                           _number(entry.get("rpl")))  # fmt: skip
    return out


def current_pnl(
    pnl: Mapping[str, Pnl], accounts: Sequence[str], read_at: datetime | None, now: datetime
) -> dict[str, Pnl]:
    """Each account's P&L at `now`, as read at `read_at` (None for what is unknown or too old)."""
    age = age_s(read_at, now)
    if age is None or age > PNL_MAX_AGE_S:
        return {a: Pnl() for a in accounts}
    return {a: pnl.get(a, Pnl()) for a in accounts}


def _fmt(value: float | None) -> str:
    return "" if value is None else repr(value)


class AccountFigures:
    """The accounts' P&L and summaries, as last read."""

    def __init__(self, client: PortalClient) -> None:
        self.client = client
        self._pnl: dict[str, Pnl] = {}
        self._pnl_at: datetime | None = None
        self._summary: dict[str, dict[str, float]] = {}

    async def refresh_pnl(self, accounts: Sequence[str], now: datetime) -> None:
        """One call for every account; a refused or unreadable answer leaves them unknown."""
        try:
            body = await self.client.get(PNL_PATH)
        except BadAnswer as exc:
            log.info("portal_pnl_unavailable %s", exc)
            body = None
        self._pnl = parse_partitioned_pnl(body, accounts)
        self._pnl_at = now

    def pnl(self, accounts: Sequence[str], now: datetime) -> dict[str, Pnl]:
        return current_pnl(self._pnl, accounts, self._pnl_at, now)

    async def refresh_summary(self, accounts: Sequence[str]) -> None:
        for account in accounts:
            self._summary[account] = await account_summary(self.client, account)

    def status(self, accounts: Sequence[str], now: datetime) -> dict[str, str]:
        """The accounts' P&L and summary figures added up (as SOCKET shows its P&L)."""
        pnl = combined_pnl(list(self.pnl(accounts, now).values()))
        out = {
            "pnl_daily": _fmt(pnl.daily),
            "pnl_unrealized": _fmt(pnl.unrealized),
            "pnl_realized": _fmt(pnl.realized),
        }
        for _, name in SUMMARY_FIELDS:
            values = [self._summary.get(a, {}).get(name) for a in accounts]
            known = [v for v in values if v is not None]
            if values and len(known) == len(values):
                out[name] = repr(sum(known))
        return out


async def account_summary(client: PortalClient, account: str) -> dict[str, float]:
    """Net liquidation and available funds of one account; {} if refused."""
    try:
        body = await client.get(f"/portfolio/{account}/summary")
    except BadAnswer as exc:
        log.info("portal_summary_unavailable %s", exc)
        return {}
    out: dict[str, float] = {}
    for key, name in SUMMARY_FIELDS:
        value = summary_amount(body, key)
        if value is not None:
            out[name] = value
    return out

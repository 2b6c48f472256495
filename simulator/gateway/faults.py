"""The market-data faults a real gateway shows, as switches: entitlement errors per contract,
expired contracts, a competing live session, and the market data type actually delivered.

Only state and rules here; `mktdata.py` applies them to the sessions' subscriptions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from simulator.gateway import protocol as p

MAX_TICKERS = 101
NO_SECDEF = 200
NOT_SUBSCRIBED = 354
PART_NOT_SUBSCRIBED = 10090  # prices still flow, option Greeks do not
DELAYED_INSTEAD = 10167  # delayed data served in place of live
NOT_SUBSCRIBED_NO_DELAYED = 10168
COMPETING = 10197

TEXTS = {
    MAX_TICKERS: "Max number of tickers has been reached",
    NOT_SUBSCRIBED: "Requested market data is not subscribed.",
    PART_NOT_SUBSCRIBED: "Part of requested market data is not subscribed. "
    "Subscription-independent ticks are still active. Delayed market data is not available.",
    DELAYED_INSTEAD: "Requested market data is not subscribed. Displaying delayed market data.",
    NOT_SUBSCRIBED_NO_DELAYED: "Requested market data is not subscribed. "
    "Delayed market data is not enabled.",
    COMPETING: "No market data during competing live session",
}
DATA_ERROR_CODES = (NOT_SUBSCRIBED, NOT_SUBSCRIBED_NO_DELAYED, PART_NOT_SUBSCRIBED, DELAYED_INSTEAD)
REFUSING_CODES = (NOT_SUBSCRIBED, NOT_SUBSCRIBED_NO_DELAYED)  # no data, no line kept


def delivered_type(asked: int, closed: bool, delayed_only: bool) -> int:
    """The marketDataType that describes what a subscription gets: delayed when the session
    asked for delayed (the simulated account then has no live entitlement) or when only delayed
    is allowed (10167); frozen when the market is closed and the session asked for a frozen
    type (FROZEN or DELAYED_FROZEN); otherwise live."""
    delayed = delayed_only or p.is_delayed(asked)
    frozen = closed and asked in (p.FROZEN, p.DELAYED_FROZEN)
    if delayed:
        return p.DELAYED_FROZEN if frozen else p.DELAYED
    return p.FROZEN if frozen else p.LIVE


@dataclass
class DataFaults:
    """Which contracts answer a market-data request with an entitlement error, which are
    expired (200), and whether a competing live session holds the account's data (10197)."""

    by_con: dict[int, int | None] = field(default_factory=dict)  # None: served normally
    all_code: int | None = None  # the code for every contract not named in `by_con`
    expired: set[int] = field(default_factory=set)
    competing: bool = False

    def code_for(self, con_id: int) -> int | None:
        return self.by_con.get(con_id, self.all_code)  # a stored None exempts it

    def set(self, code: int, con_ids: Iterable[int] | None) -> None:
        """`code` for `con_ids`, or for every contract (None: replaces the named ones)."""
        if code not in DATA_ERROR_CODES:
            raise ValueError(f"data error code must be one of {DATA_ERROR_CODES}")
        if con_ids is None:
            self.all_code = code
            self.by_con.clear()
        else:
            for con_id in con_ids:
                self.by_con[con_id] = code

    def clear(self, con_ids: Iterable[int] | None) -> None:
        """Serve `con_ids` normally again (None: every contract). A named contract is also
        exempted from an `all` code."""
        if con_ids is None:
            self.all_code = None
            self.by_con.clear()
            return
        for con_id in con_ids:
            if self.all_code is None:
                self.by_con.pop(con_id, None)
            else:
                self.by_con[con_id] = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "data_errors": {str(k): v for k, v in sorted(self.by_con.items())},
            "data_error_all": self.all_code,
            "expired": sorted(self.expired),
            "competing": self.competing,
        }

"""The gateway's market-data errors per contract, as audit lines: one per change of the set of
contracts a code applies to, naming them and saying what it means for the row (pure).

The row itself is decided by the Greeks policy (`collector.greeks`): a contract without data has
its last Greeks carried up to the maximum age, then is left out and named in a WARN.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

NO_SECURITY_DEFINITION = 200
TOO_MANY_TICKERS = 101
NOT_SUBSCRIBED = 354
PARTIAL_SUBSCRIPTION = 10090
DELAYED_INSTEAD = 10167
NOT_SUBSCRIBED_NO_DELAYED = 10168
COMPETING_SESSION = 10197

MEANING: dict[int, str] = {
    NOT_SUBSCRIBED: "no market-data subscription for",
    NOT_SUBSCRIBED_NO_DELAYED: "no market-data subscription (and delayed data not enabled) for",
    PARTIAL_SUBSCRIPTION: "partial subscription (the underlying's data is missing, so IB "
    "computes no Greeks) for",
    DELAYED_INSTEAD: "delayed data delivered instead of live for",
    COMPETING_SESSION: "no market data while the same user is logged in elsewhere (competing "
    "live session) for",
    NO_SECURITY_DEFINITION: "contract no longer exists (expired?), dropped from the requests:",
}
CONSEQUENCE: dict[int, str] = {
    DELAYED_INSTEAD: "the row uses delayed values",
    NO_SECURITY_DEFINITION: "its position gets no Greeks and is left out of the row after the "
    "grace period",
}
DEFAULT_CONSEQUENCE = (
    "their last Greeks are carried up to BRIDGE_GREEKS_MAX_AGE_S, then they are left out of the row"
)
CODES = frozenset(MEANING)
# a request answered by one of these holds no line and is not retried before RETRY_S
ENDS_REQUEST = frozenset({NOT_SUBSCRIBED, NOT_SUBSCRIBED_NO_DELAYED, NO_SECURITY_DEFINITION})
RETRY_S = 300.0


@dataclass(frozen=True, slots=True)
class Audit:
    status: str  # WARN or INFO
    code: int
    message: str


def _names(labels: Iterable[str], limit: int = 20) -> str:
    items = sorted(labels)
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


class DataErrors:
    """code -> {contract key: label}; `audits()` returns the changes since the last call."""

    def __init__(self) -> None:
        self._now: dict[int, dict[int, str]] = {}
        self._told: dict[int, frozenset[int]] = {}

    def set(self, code: int, key: int, label: str) -> None:
        self._now.setdefault(code, {})[key] = label

    def clear(self, key: int, codes: Iterable[int] = CODES) -> None:
        """Data flows again for `key`: the codes it was under no longer apply to it."""
        for code in codes:
            self._now.get(code, {}).pop(key, None)

    def drop(self, key: int) -> None:
        """`key` is no longer wanted (including under 200)."""
        for table in self._now.values():
            table.pop(key, None)

    def reset(self) -> None:
        """A new session: every request is made again and answered again."""
        self._now.clear()

    def codes_of(self, key: int) -> frozenset[int]:
        return frozenset(code for code, table in self._now.items() if key in table)

    def audits(self) -> list[Audit]:
        out: list[Audit] = []
        for code in sorted(set(self._now) | set(self._told)):
            table = self._now.get(code, {})
            keys = frozenset(table)
            if keys == self._told.get(code, frozenset()):
                continue
            self._told[code] = keys
            if keys:
                consequence = CONSEQUENCE.get(code, DEFAULT_CONSEQUENCE)
                out.append(
                    Audit(
                        "WARN",
                        code,
                        f"{code} {MEANING[code]} {len(keys)} contract(s): "
                        f"{_names(table.values())}; {consequence}",
                    )
                )
            elif code != NO_SECURITY_DEFINITION:
                out.append(Audit("INFO", code, f"{code} cleared: market data flows again"))
        return out

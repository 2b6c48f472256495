"""What an IB error code means for the SOCKET link: a new link state, an audit status, and
whether market data must be requested again.

Sources: IBKR's message codes (1100 lost, 1101 restored with data lost, 1102 restored with data
kept, 1300 socket port reset, 326 client id in use, 2103-2158 farm status). The farm "OK" codes
arrive after every connect; they are worth an audit line only after the same farm was reported
broken, which `FarmWatch` tracks.
"""

from __future__ import annotations

from dataclasses import dataclass

from collector.transport import LinkState

CONNECTIVITY_LOST = 1100
RESTORED_DATA_LOST = 1101
RESTORED_DATA_KEPT = 1102
SOCKET_PORT_RESET = 1300
CLIENT_ID_IN_USE = 326
NO_SECURITY_DEFINITION = 200
MARKET_FARM_BROKEN = 2103
MARKET_FARM_BACK = frozenset({2104, 2108})  # OK, or inactive but available on demand

# broken code -> (OK code, farm kind)
FARMS: dict[int, tuple[int, str]] = {
    2103: (2104, "market data farm"),
    2105: (2106, "HMDS data farm"),
    2157: (2158, "sec-def data farm"),
}
FARM_OK = {ok: broken for broken, (ok, _) in FARMS.items()}
QUIET_INFO = frozenset({2107, 2108, 2119, 2100, 2150})  # informational noise: log only


@dataclass(frozen=True, slots=True)
class ErrorAction:
    state: LinkState | None  # the new link state; None leaves it as it is
    status: str  # api_logs status: INFO, WARN, ERROR
    resubscribe: bool = False  # make every market data request again
    report: bool = True  # publish as a LinkEvent (False: log only)


def classify(code: int, req_id: int) -> ErrorAction:  # noqa: PLR0911  a table of IB codes
    """The action for one error message (before farm de-duplication)."""
    if code == CONNECTIVITY_LOST:
        return ErrorAction(LinkState.DISCONNECTED, "WARN")
    if code == RESTORED_DATA_LOST:
        return ErrorAction(LinkState.CONNECTED, "WARN", resubscribe=True)
    if code == RESTORED_DATA_KEPT:
        return ErrorAction(LinkState.CONNECTED, "INFO", resubscribe=True)
    if code in (SOCKET_PORT_RESET, CLIENT_ID_IN_USE):
        return ErrorAction(LinkState.DISCONNECTED, "ERROR")
    if code in FARMS or code == 2110:
        return ErrorAction(None, "WARN")
    if code in FARM_OK:
        return ErrorAction(None, "INFO")
    if code in QUIET_INFO or 2100 <= code < 2200:
        return ErrorAction(None, "INFO", report=False)
    if req_id > 0:  # one request failed (no security definition, no market data permission, ...)
        return ErrorAction(None, "WARN")
    return ErrorAction(None, "ERROR" if code < 2000 else "WARN")


class FarmWatch:
    """Reports a farm's recovery only when its breakage was seen (not the OKs of every connect)."""

    def __init__(self) -> None:
        self.broken: set[int] = set()

    def worth_reporting(self, code: int) -> bool:
        if code in FARMS:
            fresh = code not in self.broken
            self.broken.add(code)
            return fresh
        if code in FARM_OK:
            broken = FARM_OK[code]
            if broken in self.broken:
                self.broken.discard(broken)
                return True
            return False
        return True

    def clear(self) -> None:
        self.broken.clear()

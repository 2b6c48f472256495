"""The simulator's switches (settable in process and over HTTP: POST /sim/switches) and the
request statistics tests read back (GET /sim/stats)."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from datetime import time as dt_time
from typing import Any

from simulator.portfolio import EASTERN

LOGOUT_STYLES = ("401", "302", "no_bridge", "init_session_first")


@dataclass
class Switches:
    logged_out: bool = False
    logout_style: str = "401"  # how a logged-out gateway answers: one of LOGOUT_STYLES
    competing: bool = False
    enforce_pacing: bool = False  # 429 beyond 10 req/s and the per-endpoint limits
    penalty_s: float = 0.0  # after a 429, every request gets 429 for this long
    preflight: bool = True  # the first snapshot of a conid carries only conid/conidEx
    empty_preflight: bool = False  # ... or nothing at all (the conid is left out of the array)
    greeks_missing_calls: int = 0  # Greeks absent from the first N data snapshots of a conid
    greeks_missing_conids: list[int] = field(default_factory=list)  # never any Greeks
    no_secdef: int = 0  # the first N option rows come without secdef (unless waitForSecDef)
    no_secdef_always: bool = False  # ... even with waitForSecDef=true
    iserver_outage: bool = False  # the nightly reset: /iserver/* answers 503
    nightly_outage_et: str = ""  # "HH:MM-HH:MM" US/Eastern: /iserver/* answers 503 daily then
    slow_s: float = 0.0  # every answer is delayed this long
    frozen_at: float | None = None  # model time pinned (epoch seconds): values stop moving
    quirks: bool = False  # numbers as the gateway sometimes writes them (C prefix, 1,234, K)
    require_prerequisites: bool = True  # /portfolio/accounts and /iserver/accounts first
    ignore_page_id: bool = False  # every positions page is page 0 (as /portfolio2 does)
    auth_get_only: bool = False  # POST /iserver/auth/status and /tickle answer 405
    no_invalidate: bool = False  # /portfolio/{acct}/positions/invalidate answers 404
    extra_accounts: list[str] = field(default_factory=list)  # more ids in /portfolio/accounts
    missing_endpoints: list[str] = field(default_factory=list)  # API path prefixes -> 404
    # market-data lines and data errors (the assumed behaviour: simulator/portal/market.py)
    line_limit: int = 0  # most conids holding a stream at once (0: no limit); beyond: refused
    availability: dict[str, str] = field(default_factory=dict)  # conid -> 6509 letter (R D Z Y N)
    expired_conids: list[int] = field(default_factory=list)  # "Contract not found", no stream
    stall_at: float | None = None  # streams open at this time stop moving (true: now)

    def update(self, values: dict[str, Any]) -> list[str]:
        """Apply known keys; returns the unknown ones. `frozen_at` or `stall_at: true`: now."""
        known = {f.name for f in fields(self)}
        unknown = [k for k in values if k not in known]
        for key, raw in values.items():
            if key not in known:
                continue
            value = raw
            if key in ("frozen_at", "stall_at") and raw is True:
                value = time.time()
            if key in ("frozen_at", "stall_at") and raw is False:
                value = None
            if key == "availability":
                if not isinstance(raw, dict):
                    raise ValueError("availability must map conids to a letter of field 6509")
                value = {str(k): str(v).upper()[:1] for k, v in raw.items()}
            if key == "logout_style" and raw not in LOGOUT_STYLES:
                raise ValueError(f"logout_style must be one of {', '.join(LOGOUT_STYLES)}")
            setattr(self, key, value)
        return unknown

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def iserver_down(self, now: datetime) -> bool:
        """The switch, or `now` inside the daily window (IBKR: about 01:00 local time)."""
        if self.iserver_outage:
            return True
        window = self.nightly_outage_et.strip()
        if not window:
            return False
        try:
            start_text, end_text = window.split("-", 1)
            start = dt_time.fromisoformat(start_text.strip())
            end = dt_time.fromisoformat(end_text.strip())
        except ValueError:
            return False
        local = now.astimezone(EASTERN).time()
        if start <= end:
            return start <= local < end
        return local >= start or local < end


@dataclass(frozen=True)
class Rule:
    count: int
    window_s: float


LIMITS = {
    "global": Rule(10, 1.0),
    "/portfolio/accounts": Rule(1, 5.0),
    "/tickle": Rule(1, 1.0),
    "/iserver/marketdata/snapshot": Rule(10, 1.0),
    "/iserver/account/pnl/partitioned": Rule(1, 5.0),
}


def endpoint_class(path: str) -> str:
    for key in LIMITS:
        if key != "global" and path.startswith(key):
            return key
    parts = path.split("/")
    if len(parts) > 3 and parts[1] == "portfolio" and parts[2] not in ("accounts",):
        return "/portfolio/{acct}/" + parts[3]
    return path


class Stats:
    """Every request's arrival time by endpoint class; the busiest 1 s window ever seen."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.arrivals: deque[float] = deque()
        self.by_endpoint: dict[str, deque[float]] = {}
        self.counts: dict[str, int] = {}
        self.total = 0
        self.rate_limited = 0
        self.max_per_s = 0
        self.max_per_endpoint: dict[str, int] = {}
        self.penalty_until = 0.0
        self.min_gap_s: dict[str, float] = {}
        self.max_streams = 0  # the most market-data streams open at once
        self.line_refusals = 0  # conids refused a stream (line_limit reached)
        self.unsubscribed = 0  # streams closed by unsubscribe or unsubscribeall
        self.conid_requests: dict[int, int] = {}  # snapshot calls that named each conid

    def record(self, path: str, now: float) -> str:
        key = endpoint_class(path)
        self.total += 1
        self.counts[key] = self.counts.get(key, 0) + 1
        self.arrivals.append(now)
        while self.arrivals and now - self.arrivals[0] >= 1.0:
            self.arrivals.popleft()
        self.max_per_s = max(self.max_per_s, len(self.arrivals))
        q = self.by_endpoint.setdefault(key, deque())
        if q:
            gap = now - q[-1]
            self.min_gap_s[key] = min(self.min_gap_s.get(key, gap), gap)
        q.append(now)
        while q and now - q[0] >= 60.0:
            q.popleft()
        in_1s = sum(1 for t in q if now - t < 1.0)
        self.max_per_endpoint[key] = max(self.max_per_endpoint.get(key, 0), in_1s)
        return key

    def violates(self, key: str, now: float) -> str | None:
        """Which limit the request just recorded breaks, if any."""
        if now < self.penalty_until:
            return "penalty box"
        if len(self.arrivals) > LIMITS["global"].count:
            return "global 10 req/s"
        rule = LIMITS.get(key)
        if rule is not None:
            q = self.by_endpoint.get(key, deque())
            recent = sum(1 for t in q if now - t < rule.window_s)
            if recent > rule.count:
                return f"{key} {rule.count} per {rule.window_s:g} s"
        return None

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "counts": dict(self.counts),
            "rate_limited": self.rate_limited,
            "max_per_s": self.max_per_s,
            "max_per_endpoint_1s": dict(self.max_per_endpoint),
            "min_gap_s": {k: round(v, 4) for k, v in self.min_gap_s.items()},
            "max_streams": self.max_streams,
            "line_refusals": self.line_refusals,
            "unsubscribed": self.unsubscribed,
            "conid_requests": {str(k): v for k, v in self.conid_requests.items()},
        }

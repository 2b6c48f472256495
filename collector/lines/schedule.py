"""Which market-data requests to hold open at once, within the working line budget.

Pure: the wanted contracts and `now` go in, the requests to make and to cancel come out; the
transport applies them and reports back what each request did (`delivered`, `failed`,
`refused`). The rules are written once, in docs/LINES.md:

- The book fits the budget: every contract streams, as without a budget.
- It does not: the contracts take turns. A line is released as soon as its contract's data has
  arrived (or after `dwell_s` without any), and goes to the contract refreshed longest ago;
  nothing is refreshed more often than every `refresh_s`.
- Lines are opened no faster than the gateway proves it has them: at most `max_pending` requests
  beyond the most lines it has granted at once, and at most `rate_per_s` requests per second.
  A lower limit at the gateway costs a few refused requests, and its message pacing is never hit.
  A request counts as granted once its data arrived, a later request's data arrived (the gateway
  answers in order), or `grant_s` passed without a refusal (a refusal comes within a round trip).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from collector.lines.budget import WorkingBudget

K = TypeVar("K", bound=Hashable)

DWELL_S = 4.0  # the longest a rotating line waits for its contract's data
GRANT_S = 1.0
MAX_PENDING = 5
RATE_PER_S = 20.0  # a request and its cancel are two messages: within IB's 50 messages/s
LATENCY_S = 0.5  # first guess of a request's time to its first data, refined as answers come
NEVER = -math.inf


@dataclass(frozen=True, slots=True)
class Plan(Generic[K]):
    request: tuple[K, ...] = ()
    cancel: tuple[K, ...] = ()


@dataclass(frozen=True, slots=True)
class LineStats:
    wanted: int
    in_use: int
    budget: int  # as configured
    working: int  # as the gateway allows (lowered by error 101)
    rotating: bool
    rotation_s: float  # the estimated time one full rotation takes (0 while streaming)
    oldest_s: float | None  # age of the oldest data among the wanted contracts (None: not all)

    def fits(self, max_age_s: float) -> bool:
        return not self.rotating or self.rotation_s <= max_age_s


@dataclass(slots=True)
class _Line:
    requested_at: float
    seq: int
    answered: bool = False


class LineSchedule(Generic[K]):
    def __init__(
        self,
        budget: WorkingBudget,
        *,
        refresh_s: float,
        dwell_s: float = DWELL_S,
        grant_s: float = GRANT_S,
        max_pending: int = MAX_PENDING,
        rate_per_s: float = RATE_PER_S,
    ) -> None:
        self.budget = budget
        self.refresh_s = refresh_s
        self.dwell_s = dwell_s
        self.grant_s = grant_s
        self.max_pending = max_pending
        self.rate_per_s = rate_per_s
        self.held: dict[K, _Line] = {}
        self.refreshed: dict[K, float] = {}  # when each contract's data last arrived
        self._tried: dict[K, float] = {}  # when each contract was last requested
        self._blocked: dict[K, float] = {}  # not requested again before
        self._revive: set[K] = set()  # held lines to cancel and request again, first in line
        self._wanted = 0
        self._seq = 0
        self.proven = 0  # the most lines the gateway has granted at once
        self._tokens = rate_per_s
        self._tokens_at = NEVER
        self.latency_s = LATENCY_S
        self.rotating = False

    # ------------------------------------------------------------------ answers
    def delivered(self, key: K, now: float) -> None:
        """Data arrived for `key` (for an option: its Greeks; for an underlying: its price)."""
        line = self.held.get(key)
        if line is None:
            return
        if not line.answered:
            line.answered = True
            self.latency_s += 0.2 * (max(0.0, now - line.requested_at) - self.latency_s)
        self.refreshed[key] = now

    def failed(self, key: K, now: float, retry_s: float) -> None:
        """The request was answered by an error: no line is held, no retry before `retry_s`."""
        self.held.pop(key, None)
        self._blocked[key] = now + retry_s

    def refused(self, key: K, now: float) -> bool:
        """Error 101: the gateway's limit is lower. True when the working budget went down."""
        self.held.pop(key, None)
        self._tried[key] = now
        self.proven = min(self.proven, len(self.held))
        return self.budget.refused(len(self.held), now)

    def rerequested(self, key: K, now: float) -> None:
        """The transport itself released and opened `key` again (PORTAL: a new pre-flight)."""
        if key in self.held:
            self.held[key] = self._line(now)
            self._tried[key] = now

    def revive(self, key: K) -> None:
        """A held feed went silent: the next plans cancel it and request it again, first."""
        if key in self.held:
            self._revive.add(key)

    def _line(self, now: float) -> _Line:
        self._seq += 1
        return _Line(now, self._seq)

    def forget(self) -> None:
        """A new session: the gateway holds nothing of ours."""
        self.held.clear()
        self._blocked.clear()
        self._revive.clear()
        self.proven = 0

    # ------------------------------------------------------------------ the plan
    def plan(self, wanted: Iterable[K], now: float) -> Plan[K]:
        order = dict.fromkeys(wanted)
        self._wanted = len(order)
        cancel = [k for k in self.held if k not in order]
        for key in cancel:
            del self.held[key]
        for table in (self.refreshed, self._tried, self._blocked):
            for key in [k for k in table if k not in order]:
                del table[key]
        self._revive &= order.keys()
        self.budget.probe(now)
        eligible = [k for k in order if self._blocked.get(k, NEVER) <= now]
        self.rotating = len(eligible) > self.budget.value
        self._prove(now)
        cancel += self._release(now)
        request = self._choose(eligible, now)
        for key in request:
            self.held[key] = self._line(now)
            self._tried[key] = now
        return Plan(tuple(request), tuple(cancel))

    def _release(self, now: float) -> list[K]:
        """Lines to give back: answered or timed-out ones when rotating, and any above budget."""
        out = [k for k in self.held if k in self._revive]
        if self.rotating:
            out += [
                k
                for k, line in self.held.items()
                if k not in self._revive
                and (line.answered or now - line.requested_at >= self.dwell_s)
            ]
        keep = [k for k in self.held if k not in set(out)]
        out += keep[self.budget.value :]  # the newest requests above a lowered budget
        for key in out:
            del self.held[key]
        return out

    def _prove(self, now: float) -> None:
        last = max((line.seq for line in self.held.values() if line.answered), default=0)
        granted = sum(
            1
            for line in self.held.values()
            if line.seq <= last or now - line.requested_at >= self.grant_s
        )
        self.proven = max(self.proven, granted)

    def _choose(self, eligible: list[K], now: float) -> list[K]:
        self._tokens = min(
            self.rate_per_s, self._tokens + (now - self._tokens_at) * self.rate_per_s
        )
        self._tokens_at = now
        room = min(self.budget.value, self.proven + self.max_pending) - len(self.held)
        slots = min(room, int(self._tokens))
        if slots <= 0:
            return []
        candidates = [k for k in eligible if k not in self.held]
        if self.rotating:
            candidates = [
                k
                for k in candidates
                if k in self._revive or now - self.refreshed.get(k, NEVER) >= self.refresh_s
            ]
            candidates.sort(key=lambda k: self._tried.get(k, NEVER))  # stable: book order
        candidates.sort(key=lambda k: k not in self._revive)  # revivals first
        chosen = candidates[:slots]
        self._revive.difference_update(chosen)
        self._tokens -= len(chosen)
        return chosen

    # ------------------------------------------------------------------ what the operator sees
    def stats(self, now: float) -> LineStats:
        n = self._wanted
        rotation_s = 0.0
        if self.rotating:
            parallel = self.budget.value
            rotation_s = max(self.refresh_s, n * self.latency_s / parallel, n / self.rate_per_s)
        oldest: float | None = None
        if n and len(self.refreshed) >= n:
            oldest = now - min(self.refreshed.values())
        return LineStats(
            wanted=n,
            in_use=len(self.held),
            budget=self.budget.budget,
            working=self.budget.value,
            rotating=self.rotating,
            rotation_s=rotation_s,
            oldest_s=oldest,
        )

"""The working line budget: the configured budget, lowered when the gateway refuses a request
with error 101 (its real limit is lower: the account's other sessions use lines too), and raised
back one line at a time by probing, with the probe interval doubling after each refusal so that
a limit that stays low costs a handful of refused requests, never a storm."""

from __future__ import annotations

PROBE_S = 60.0  # first wait before trying one more line after a refusal
PROBE_MAX_S = 960.0


class WorkingBudget:
    def __init__(self, budget: int, *, probe_s: float = PROBE_S, probe_max_s: float = PROBE_MAX_S):
        if budget < 1:
            raise ValueError("the line budget is at least 1")
        self.budget = budget
        self.value = budget
        self.refusals = 0
        self._probe_s = probe_s
        self._probe_max_s = probe_max_s
        self._interval_s = probe_s
        self._next_probe: float | None = None
        self._probed = False  # a line was added by probing since the last refusal

    @property
    def lowered(self) -> bool:
        return self.value < self.budget

    def refused(self, holding: int, now: float) -> bool:
        """A request was refused while `holding` lines were held: True when this lowered it."""
        self.refusals += 1
        new = max(1, min(self.value, holding))
        if self._probed:  # the probe found the limit again: probe more slowly
            self._interval_s = min(self._interval_s * 2, self._probe_max_s)
            self._probed = False
        self._next_probe = now + self._interval_s
        lowered = new < self.value
        self.value = new
        return lowered

    def probe(self, now: float) -> bool:
        """One more line when the probe interval has passed without a refusal: True if raised."""
        if self._next_probe is None or self.value >= self.budget or now < self._next_probe:
            return False
        self.value += 1
        self._probed = True
        self._next_probe = now + self._interval_s if self.value < self.budget else None
        return True

"""One tick's rows for every account read: each account's book through its own Greeks policy,
and with several accounts also the combined book under the account 'ALL'. One account: the rows
of that account only, exactly as before there were several."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from collector.exposure import exposure_rows
from collector.greeks import Evaluation, GreeksPolicy, Report
from collector.transport import Pnl, Snapshot
from shared.config import Settings
from shared.models import ExposureRow, GreeksRow

ALL_ACCOUNTS = "ALL"


@dataclass
class TickRows:
    greeks: list[GreeksRow] = field(default_factory=list)
    exposure: list[ExposureRow] = field(default_factory=list)
    reports: list[Report] = field(default_factory=list)


def combined_pnl(pnls: list[Pnl]) -> Pnl:
    """The sum per figure, unknown (None) when any account's figure is unknown."""

    def total(values: list[float | None]) -> float | None:
        return (
            None if not values or any(v is None for v in values) else sum(v or 0.0 for v in values)
        )

    return Pnl(
        total([p.daily for p in pnls]),
        total([p.unrealized for p in pnls]),
        total([p.realized for p in pnls]),
    )


class Books:
    def __init__(self, settings: Settings, mode: str) -> None:
        self.settings = settings
        self.mode = mode
        self._policies: dict[str, GreeksPolicy] = {}

    def _policy(self, account: str) -> GreeksPolicy:
        policy = self._policies.get(account)
        if policy is None:
            s = self.settings
            policy = GreeksPolicy(
                s.greeks_grace_s,
                s.greeks_max_age_s,
                underlying=s.underlying,
                per_underlying=s.per_underlying,
            )
            self._policies[account] = policy
        return policy

    def evaluate(self, snap: Snapshot, ts: datetime) -> TickRows:
        accounts = snap.accounts or (snap.account,)
        out = TickRows()
        if len(accounts) == 1:
            self._add(out, snap, accounts[0], snap.pnl.get(accounts[0]), ts, prefix="")
            return out
        for account in accounts:
            mine = replace(snap, positions=tuple(p for p in snap.positions if p.account == account))
            self._add(out, mine, account, snap.pnl.get(account), ts, prefix=f"[{account}] ")
        pnl = combined_pnl([snap.pnl.get(a, Pnl()) for a in accounts])
        self._add(out, snap, ALL_ACCOUNTS, pnl, ts, prefix=f"[{ALL_ACCOUNTS}] ")
        return out

    def _add(
        self,
        out: TickRows,
        snap: Snapshot,
        account: str,
        pnl: Pnl | None,
        ts: datetime,
        *,
        prefix: str,
    ) -> None:
        ev: Evaluation = self._policy(account).evaluate(snap, ts)
        out.reports.extend(Report(r.status, prefix + r.message) for r in ev.reports)
        out.greeks.extend(
            GreeksRow(
                ts=ts,
                contract=r.contract,
                delta=r.delta,
                gamma=r.gamma,
                vega=r.vega,
                theta=r.theta,
                underlying_price=r.underlying_price,
                account=account,
                mode=self.mode,
            )
            for r in ev.rows
        )
        out.exposure.extend(
            exposure_rows(
                ev,
                snap.prices,
                ts,
                account=account,
                poll_s=self.settings.poll_interval_s,
                kinds=snap.market_data,
                pnl=pnl,
                mode=self.mode,
            )
        )

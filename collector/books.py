"""One tick's rows for every account read: each account's book through its own Greeks policy,
and with several accounts also the combined book under the account 'ALL', summed from what the
accounts' evaluations used (so ALL is their sum by construction, and costs no second pass). A
tick where an account's Greeks are pending holds back that account's rows and ALL's. One
account: the rows of that account only, exactly as before there were several."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from collector.exposure import exposure_rows
from collector.greeks import Evaluation, GreeksPolicy, Report, net_rows
from collector.transport import Pnl, PositionData, Snapshot
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
            ev = self._policy(accounts[0]).evaluate(snap, ts)
            self._add(out, ev, snap, account=accounts[0], pnl=snap.pnl.get(accounts[0]), ts=ts)
            return out
        held_by: dict[str, list[PositionData]] = {a: [] for a in accounts}
        for position in snap.positions:
            held_by.setdefault(position.account, []).append(position)
        evaluations = []
        for account in accounts:
            mine = replace(snap, positions=tuple(held_by[account]))
            ev = self._policy(account).evaluate(mine, ts)
            evaluations.append(ev)
            self._add(
                out, ev, mine, account=account, pnl=snap.pnl.get(account), ts=ts, prefix=account
            )
        if not any(ev.pending for ev in evaluations):
            pnl = combined_pnl([snap.pnl.get(a, Pnl()) for a in accounts])
            whole = self._combined(evaluations, snap)
            self._add(out, whole, snap, account=ALL_ACCOUNTS, pnl=pnl, ts=ts)
        return out

    def _combined(self, evaluations: list[Evaluation], snap: Snapshot) -> Evaluation:
        """The combined book from what each account's evaluation used and left out."""
        exposures = tuple(e for ev in evaluations for e in ev.exposures)
        excluded = tuple(x for ev in evaluations for x in ev.excluded)
        # the policy's rule for one book: every option left out means no row (a stock-only row
        # would be a wrong number)
        scope_rows = []
        if not excluded or any(e.greeks is not None for e in exposures):
            scope_rows = net_rows(
                exposures, snap.prices, underlying=self.settings.underlying, per_underlying=True
            )
        return Evaluation(
            rows=scope_rows if self.settings.per_underlying else scope_rows[:1],
            held=not scope_rows,
            excluded=excluded,
            scope_rows=tuple(scope_rows),
            exposures=exposures,
            excluded_symbols=tuple(x for ev in evaluations for x in ev.excluded_symbols),
        )

    def _add(
        self,
        out: TickRows,
        ev: Evaluation,
        snap: Snapshot,
        *,
        account: str,
        pnl: Pnl | None,
        ts: datetime,
        prefix: str = "",
    ) -> None:
        """`prefix`: the account named in front of the policy's api_logs rows (several)."""
        tag = f"[{prefix}] " if prefix else ""
        out.reports.extend(Report(r.status, tag + r.message) for r in ev.reports)
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

"""CPU time of one tick for many accounts: every account's book through its Greeks policy, the
combined book ('ALL'), the portfolio_exposure rows (dollar Greeks, completeness), and every row
encoded for the stream, as the collector does per tick (`collector.books.Books`).

    .venv/bin/python benchmarks/bench_accounts_tick.py [--accounts 20] [--positions 100]
                                                       [--repeat 300]

Prints figures (process time, p50/p99/max); asserts nothing about speed. Target < 15 ms for
20 accounts x 100 positions.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from collector.books import Books
from collector.transport import Pnl, PositionData, Snapshot
from shared.codec import encode_exposure, encode_greeks
from shared.config import load_settings

T0 = datetime(2026, 12, 2, 15, 0, tzinfo=UTC)
SYMBOLS = ("SPY", "QQQ", "AAPL", "MSFT", "IWM", "NVDA", "TSLA", "AMZN", "META", "GOOG")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def book(accounts: int, per_account: int, rng: random.Random) -> list[PositionData]:
    out = []
    for a in range(accounts):
        account = f"DU{a:07d}"
        for i in range(per_account):
            sym = SYMBOLS[i % len(SYMBOLS)]
            con_id = 1000 + i + (a % 3) * per_account  # accounts share some contracts
            if i % 10 == 0:
                out.append(PositionData(con_id, sym, "STK", 100.0, 1.0, account=account))
                continue
            out.append(
                PositionData(
                    con_id,
                    sym,
                    "OPT",
                    float(rng.choice((-5, -3, -1, 1, 2, 4))),
                    rng.choice((100.0, 100.0, 10.0)),
                    rng.uniform(-1, 1),
                    rng.uniform(0, 0.05),
                    rng.uniform(0, 1),
                    rng.uniform(-1, 0),
                    T0,
                    T0,
                    None,
                    f"{sym} option {con_id}",
                    account,
                )
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=20)
    ap.add_argument("--positions", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=300)
    args = ap.parse_args()
    rng = random.Random(1)
    positions = book(args.accounts, args.positions, rng)
    accounts = tuple(sorted({p.account for p in positions}))
    prices = {s: 100.0 + 10 * i for i, s in enumerate(SYMBOLS)}
    books = Books(load_settings({}, dotenv=None), "SOCKET")
    samples: list[float] = []
    rows = 0
    for k in range(args.repeat):
        ts = T0 + timedelta(seconds=5 * k)
        snap = Snapshot(
            ts,
            ",".join(accounts),
            tuple(replace(p, greeks_at=ts) if p.greeks_at else p for p in positions),
            prices,
            ("LIVE",),
            accounts,
            {a: Pnl(1.0, 2.0, 0.0) for a in accounts},
        )
        start = time.process_time()
        tick = books.evaluate(snap, ts)
        for g in tick.greeks:
            encode_greeks(g)
        for e in tick.exposure:
            encode_exposure(e)
        samples.append((time.process_time() - start) * 1000)
        rows = len(tick.greeks) + len(tick.exposure)
    print(
        f"one tick, {args.accounts} accounts x {args.positions} positions "
        f"({rows} rows encoded): p50 {pct(samples, 0.5):.2f} ms  p99 {pct(samples, 0.99):.2f} ms"
        f"  max {max(samples):.2f} ms  (n={len(samples)})"
    )


if __name__ == "__main__":
    main()

"""CPU time of one tick's Greeks computation, and tick jitter against the portal simulator.

    .venv/bin/python benchmarks/bench_tick_cpu.py [--positions 2000] [--repeat 300]
    .venv/bin/python benchmarks/bench_tick_cpu.py --jitter [--ticks 720] [--interval-s 0.25]

1. CPU time (process time) of one tick for N positions: the Greeks policy and sum
   (`GreeksPolicy.evaluate`, per-underlying rows on) plus building and encoding the rows; and,
   separately, the PORTAL parsing of N position rows and N snapshot rows. Target < 10 ms.
2. `--jitter`: the simulator in its own process (`python -m simulator.portal`), the real PORTAL
   transport and the grid ticker; for each tick, how late it started after its grid instant
   (jitter) and how long snapshot + Greeks took: p50 / p99 / max.

Prints figures; asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

from collector.greeks import GreeksPolicy
from collector.portal.parsers import parse_position, parse_snapshot_row
from collector.transport import PositionData, Snapshot
from shared.codec import encode_greeks
from shared.models import GreeksRow

T0 = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
SYMBOLS = ("SPY", "QQQ", "AAPL", "MSFT", "IWM", "NVDA", "TSLA", "AMZN", "META", "GOOG")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def summary(label: str, values_ms: list[float]) -> str:
    return (
        f"{label}: p50 {statistics.median(values_ms):.3f} ms  p99 {pct(values_ms, 0.99):.3f} ms"
        f"  max {max(values_ms):.3f} ms  (n={len(values_ms)})"
    )


def positions(n: int, rng: random.Random, at: datetime) -> tuple[PositionData, ...]:
    out = []
    for i in range(n):
        sym = SYMBOLS[i % len(SYMBOLS)]
        if i % 10 == 0:
            out.append(PositionData(1000 + i, sym, "STK", float(rng.randint(-500, 500)), 0.0))
            continue
        out.append(
            PositionData(
                1000 + i,
                sym,
                "OPT",
                float(rng.choice((-5, -3, -1, 1, 2, 4))),
                100.0,
                rng.uniform(-1, 1),
                rng.uniform(0, 0.05),
                rng.uniform(0, 1),
                rng.uniform(-1, 0),
                at,
                at,
                None,
                f"{sym} option {i}",
            )
        )
    return tuple(out)


def cpu_bench(n: int, repeat: int) -> None:
    rng = random.Random(1)
    policy = GreeksPolicy(10, 60, per_underlying=True)
    prices = {s: 100.0 + 10 * i for i, s in enumerate(SYMBOLS)}
    samples: list[float] = []
    for k in range(repeat):
        ts = T0 + timedelta(seconds=5 * k)
        snap = Snapshot(ts, "DU1", positions(n, rng, ts), prices)
        start = time.process_time()
        ev = policy.evaluate(snap, ts)
        rows = [
            GreeksRow(
                ts,
                r.contract,
                r.delta,
                r.gamma,
                r.vega,
                r.theta,
                r.underlying_price,
                "DU1",
                "PORTAL",
            )
            for r in ev.rows
        ]
        for row in rows:
            encode_greeks(row)
        samples.append((time.process_time() - start) * 1000)
    print(summary(f"tick CPU, {n} positions (policy + sum + {len(rows)} rows encoded)", samples))

    raw_rows = [
        {
            "conid": 1000 + i,
            "position": "1,200" if i % 10 == 0 else -3.0,
            "assetClass": "STK" if i % 10 == 0 else "OPT",
            "multiplier": 0.0 if i % 10 == 0 else 100.0,
            "undConid": 756733,
            "undSym": "SPY",
            "ticker": "SPY",
            "putOrCall": "C",
            "contractDesc": f"SPY JAN2027 {500 + i} C [SPY   270115C00500000 100]",
            "mktPrice": 1.5,
        }
        for i in range(n)
    ]
    snap_rows = [
        {
            "conid": 1000 + i,
            "conidEx": str(1000 + i),
            "31": "C12.50",
            "7635": "12.49",
            "7308": "0.5123",
            "7309": "0.0123",
            "7310": "-0.0456",
            "7311": "0.3012",
            "7633": "18.2%",
            "_updated": 1712596911593,
        }
        for i in range(n)
    ]
    parse_samples: list[float] = []
    for _ in range(max(10, repeat // 10)):
        start = time.process_time()
        for row in raw_rows:
            parse_position(row)
        for snap_row in snap_rows:
            parse_snapshot_row(snap_row)
        parse_samples.append((time.process_time() - start) * 1000)
    print(summary(f"PORTAL parsing, {n} position rows + {n} snapshot rows", parse_samples))


async def jitter_bench(ticks: int, interval_s: float, extra_options: int) -> None:
    from collector.portal.transport import PortalTransport
    from collector.ticker import GridTicker
    from shared.config import load_settings

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulator.portal",
            "--port",
            "0",
            "--extra-options",
            str(extra_options),
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=os.environ.copy(),
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.to_thread(proc.stdout.readline)).decode()
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        settings = load_settings(
            {
                "IB_API_MODE": "PORTAL",
                "IBKR_GATEWAY_URL": fields["url"],
                "IBKR_CA_FILE": fields["ca_file"],
                "BRIDGE_POLL_INTERVAL_S": str(interval_s),
            },
            dotenv=None,
        )
        transport = PortalTransport(settings)
        policy = GreeksPolicy(settings.greeks_grace_s, settings.greeks_max_age_s)
        lateness: list[float] = []
        durations: list[float] = []
        held = 0
        try:
            await transport.connect()

            async def on_tick(ts: datetime) -> None:
                nonlocal held
                late = (datetime.now(UTC) - ts).total_seconds() * 1000
                start = time.perf_counter()
                snap = await transport.snapshot(ts)
                ev = policy.evaluate(snap, ts)
                held += ev.held
                durations.append((time.perf_counter() - start) * 1000)
                lateness.append(late)

            ticker = GridTicker(interval_s, max_ticks=ticks)
            await ticker.run(on_tick, asyncio.Event())
        finally:
            await transport.disconnect()
        n_pos = extra_options + 8
        print(
            f"jitter against the simulator ({n_pos} positions, {ticks} ticks of "
            f"{interval_s:g} s; missed {ticker.missed}, overruns {ticker.overruns}, "
            f"held {held})"
        )
        print(summary("  tick start after its grid instant", lateness))
        print(summary("  snapshot + Greeks duration", durations))
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--positions", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=300)
    ap.add_argument("--jitter", action="store_true")
    ap.add_argument("--ticks", type=int, default=720)
    ap.add_argument("--interval-s", type=float, default=0.25)
    ap.add_argument("--extra-options", type=int, default=120)
    args = ap.parse_args()
    if args.jitter:
        asyncio.run(jitter_bench(args.ticks, args.interval_s, args.extra_options))
    else:
        cpu_bench(args.positions, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A book larger than the line budget, rotating: how old the Greeks in each row are, and the CPU
one tick costs. SOCKET: the real ib_async client against the IB Gateway simulator; PORTAL
(`--mode portal`): real HTTPS to the Client Portal simulator with its 10 requests/s pacing
enforced (a 429 beyond it). Both on loopback.

    .venv/bin/python benchmarks/bench_lines.py [--mode socket|portal] [--legs 500]
        [--underlyings 20] [--budget 40] [--minutes 10] [--sim-lines N]

Every `--tick-s` (default 5 s, the bridge's poll interval) the benchmark takes the transport's
snapshot and evaluates it with the Greeks policy, as the collector does, and records: the oldest
Greeks a row used (now - greeks_at over the option legs), whether any leg was excluded, the CPU
time of snapshot + evaluation (process time), and the transport's rotation estimate. At the end
it prints p50/p99/max of the oldest age, the CPU per tick, the simulator's open-line high-water
mark and its count of refused requests (101). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collector.greeks import GreeksPolicy
from collector.portal.transport import PortalTransport
from collector.socket.transport import SocketTransport
from collector.transport import Transport
from shared.clock import utcnow
from shared.config import Settings, load_settings
from simulator.book import generate_book
from simulator.gateway import GatewaySimulator
from simulator.portal.server import PortalSimulator

ACCOUNT = "DU1234567"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def env(args: argparse.Namespace) -> dict[str, str]:
    return {
        "IB_ACCOUNT": ACCOUNT,
        "IB_MARKET_DATA_LINES": str(args.budget),
        "BRIDGE_POLL_INTERVAL_S": str(args.tick_s),
    }


async def run(args: argparse.Namespace) -> None:
    book = generate_book(args.legs, args.underlyings, seed=1, account=ACCOUNT, step_s=1.0)
    if args.mode == "portal":
        async with PortalSimulator(book) as psim:
            psim.switches.update({"enforce_pacing": True, "line_limit": args.sim_lines or 0})
            settings = load_settings(
                {
                    **env(args),
                    "IB_API_MODE": "PORTAL",
                    "IBKR_GATEWAY_URL": psim.url,
                    "IBKR_CA_FILE": str(psim.ca_file),
                },
                dotenv=None,
            )
            await measure(args, settings, PortalTransport(settings))
            st = psim.stats
            print(
                f"simulator: max open streams {st.max_streams}, refused {st.line_refusals}, "
                f"429s {st.rate_limited}, requests {st.total}, busiest second {st.max_per_s}"
            )
        return
    async with GatewaySimulator(book, lines=args.sim_lines) as sim:
        settings = load_settings(
            {
                **env(args),
                "IB_HOST": "127.0.0.1",
                "IB_PORT": str(sim.port),
                "IB_CLIENT_ID": "9",
                "IB_MARKET_DATA_TYPE": "LIVE",
            },
            dotenv=None,
        )
        await measure(args, settings, SocketTransport(settings))
        lines = sim.status()["lines"]
    print(
        f"simulator: max open lines {lines['max_open']}, refused (101) {lines['refused']}, "
        f"requests {lines['requests']}, cancels {lines['cancels']}"
    )


async def measure(args: argparse.Namespace, settings: Settings, t: Transport) -> None:
    policy = GreeksPolicy(settings.greeks_grace_s, settings.greeks_max_age_s)
    await t.connect()
    ages: list[float] = []
    cpu_ms: list[float] = []
    rotation: list[float] = []
    excluded_ticks = held_ticks = 0
    loop = asyncio.get_running_loop()
    end = loop.time() + 60 * args.minutes
    try:
        while loop.time() < end:
            await asyncio.sleep(args.tick_s - (loop.time() % args.tick_s))
            now = utcnow()
            c0 = time.process_time()
            snap = await t.snapshot(now)
            ev = policy.evaluate(snap, now)
            cpu_ms.append(1000 * (time.process_time() - c0))
            if not ev.rows:
                held_ticks += 1
                continue
            excluded_ticks += bool(ev.excluded)
            ages.append(
                max((now - p.greeks_at).total_seconds() for p in snap.positions if p.greeks_at)
            )
            rotation.append(float(t.status().get("rotation_s", "0")))
    finally:
        await t.disconnect()
    print(f"book: {args.legs} legs over {args.underlyings} underlyings, budget {args.budget}")
    print(
        f"ticks with a row: {len(ages)}, held (pending): {held_ticks}, "
        f"with a leg excluded: {excluded_ticks}"
    )
    if ages:
        print(
            f"oldest Greeks in a row (s): p50 {pct(ages, 0.5):.1f}  p99 {pct(ages, 0.99):.1f}  "
            f"max {max(ages):.1f}  (max age allowed {settings.greeks_max_age_s:g})"
        )
        print(f"rotation estimate (s): median {statistics.median(rotation):.1f}")
    # SOCKET's snapshot never awaits: the figure is the tick's own CPU. PORTAL's awaits HTTP to
    # the simulator, which runs in this process: its figure includes the simulator's work.
    print(
        f"CPU per tick (ms): p50 {pct(cpu_ms, 0.5):.2f}  p99 {pct(cpu_ms, 0.99):.2f}  "
        f"max {max(cpu_ms):.2f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("socket", "portal"), default="socket")
    ap.add_argument("--legs", type=int, default=500)
    ap.add_argument("--underlyings", type=int, default=20)
    ap.add_argument("--budget", type=int, default=40)
    ap.add_argument("--sim-lines", type=int, default=None, help="the gateway's own limit")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--tick-s", type=float, default=5.0)
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()

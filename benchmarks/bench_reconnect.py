"""Time from the IB Gateway coming back after a drop to the first new PORTFOLIO row in PostgreSQL.

    .venv/bin/python benchmarks/bench_reconnect.py [--trials 5] [--refuse-s 3] [--interval-s 5]

The demo profile under supervisord (private PostgreSQL and Redis, the IB Gateway simulator,
collector, writer and watchdog with their production settings except the tick interval). Each
trial drops every connection and refuses new ones for `--refuse-s` (a gateway restart), then
measures, polling PostgreSQL every 20 ms, how long after the gateway accepts again the first
PORTFOLIO row of a later tick is committed. A second series drops without refusing (the
gateway is back at once). Prints figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from ops.demo import render
from shared.supervisor_rpc import RPC_ERRORS, Supervisor, full_name
from simulator.gateway.control import send_command_sync


async def newest(conn: asyncpg.Connection) -> datetime | None:
    value: datetime | None = await conn.fetchval(
        "SELECT max(timestamp) FROM portfolio_greeks WHERE contract = 'PORTFOLIO'"
    )
    return value


async def first_row_after(dsn: str, moment: datetime, timeout_s: float) -> float:
    """Seconds from `moment` until a row with a later tick time is in PostgreSQL."""
    conn = await asyncpg.connect(dsn)
    try:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            ts = await newest(conn)
            if ts is not None and ts > moment:
                return (datetime.now(UTC) - moment).total_seconds()
            await asyncio.sleep(0.02)
    finally:
        await conn.close()
    raise TimeoutError(f"no row after {moment} within {timeout_s} s")


def main(args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench-reconnect-"))
    demo = render(
        folder,
        overrides={"BRIDGE_POLL_INTERVAL_S": str(args.interval_s), "BRIDGE_LOG_LEVEL": "WARNING"},
    )
    sup = subprocess.Popen(
        [sys.executable, "-m", "supervisor.supervisord", "-n", "-c", str(demo.conf)],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rpc = Supervisor(f"unix://{demo.socket}", timeout_s=10)
    control = demo.ports["gateway_control_port"]
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                infos = {full_name(i): i["statename"] for i in rpc.all_process_info()}
                if all(v == "RUNNING" for k, v in infos.items() if k.startswith("bridge:")):
                    break
            except RPC_ERRORS:
                pass
            time.sleep(0.5)
        asyncio.run(first_row_after(demo.database_url, datetime(2000, 1, 1, tzinfo=UTC), 90))
        series: dict[str, list[float]] = {f"refused {args.refuse_s:g} s": [], "drop only": []}
        for name, refuse in ((f"refused {args.refuse_s:g} s", args.refuse_s), ("drop only", 0)):
            for _ in range(args.trials):
                if refuse:
                    send_command_sync(control, f"refuse {refuse} drop")
                    time.sleep(refuse)
                else:
                    send_command_sync(control, "drop")
                back = datetime.now(UTC)
                series[name].append(asyncio.run(first_row_after(demo.database_url, back, 120)))
                time.sleep(args.interval_s + 1)
        print(
            f"machine: {os.cpu_count()} cores; ticks every {args.interval_s:g} s; watchdog "
            "and back-off at their defaults (30 s checks, 3 retries, 2 s base)"
        )
        for name, values in series.items():
            print(
                f"gateway back -> first new PORTFOLIO row ({name}, n={len(values)}): "
                f"p50 {statistics.median(values):.2f} s, max {max(values):.2f} s  "
                f"[{', '.join(f'{v:.2f}' for v in values)}]"
            )
    finally:
        sup.send_signal(signal.SIGTERM)
        try:
            sup.wait(90)
        except subprocess.TimeoutExpired:
            sup.kill()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--refuse-s", type=float, default=3.0)
    parser.add_argument("--interval-s", type=float, default=5.0)
    main(parser.parse_args())

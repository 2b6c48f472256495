"""Soak: the whole demo pipeline under supervisord for an hour; RSS of each process over time.

    .venv/bin/python benchmarks/soak_rss.py [--minutes 60] [--interval-s 1] [--sample-s 60]

Runs the demo profile (private PostgreSQL and Redis, IB Gateway simulator, collector, writer,
watchdog) in a temporary folder with ticks every `--interval-s` (1 s = five times the
production cadence), samples VmRSS of each bridge process every `--sample-s`, and prints a
table plus the growth from the first sample after warm-up to the last. Prints figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

from ops.demo import render
from shared.supervisor_rpc import RPC_ERRORS, Supervisor, full_name

PROGRAMS = ("bridge:collector", "bridge:writer", "bridge:watchdog")


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


async def count_rows(dsn: str) -> int:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM portfolio_greeks WHERE contract = 'PORTFOLIO'"
            )
        )
    finally:
        await conn.close()


def main(args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="soak-"))
    demo = render(
        folder,
        overrides={"BRIDGE_POLL_INTERVAL_S": str(args.interval_s), "BRIDGE_LOG_LEVEL": "WARNING"},
    )
    sup_proc = subprocess.Popen(
        [sys.executable, "-m", "supervisor.supervisord", "-n", "-c", str(demo.conf)],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rpc = Supervisor(f"unix://{demo.socket}", timeout_s=10)
    samples: list[tuple[float, dict[str, float], int]] = []
    started = time.monotonic()
    try:
        while time.monotonic() - started < 60:
            try:
                infos = {full_name(i): i for i in rpc.all_process_info()}
                if all(infos.get(p, {}).get("statename") == "RUNNING" for p in PROGRAMS):
                    break
            except RPC_ERRORS:
                pass
            time.sleep(1)
        end = started + args.minutes * 60
        while True:
            infos = {full_name(i): i for i in rpc.all_process_info()}
            rss = {p: rss_mb(int(infos[p]["pid"])) for p in PROGRAMS}
            rows = asyncio.run(count_rows(demo.database_url))
            elapsed = (time.monotonic() - started) / 60
            samples.append((elapsed, rss, rows))
            print(
                f"{elapsed:6.1f} min  rows {rows:7d}  "
                + "  ".join(f"{p.split(':')[1]} {v:6.1f} MB" for p, v in rss.items()),
                flush=True,
            )
            if time.monotonic() >= end:
                break
            time.sleep(min(args.sample_s, max(end - time.monotonic(), 0)))
        first = samples[min(2, len(samples) - 1)][1]
        last = samples[-1][1]
        print(
            f"\nmachine: {os.cpu_count()} cores; ticks every {args.interval_s:g} s for "
            f"{samples[-1][0]:.0f} min; {samples[-1][2]} PORTFOLIO rows"
        )
        for p in PROGRAMS:
            peak = max(s[1][p] for s in samples)
            print(
                f"{p:18s} RSS last {last[p]:6.1f} MB  peak {peak:6.1f} MB  growth since "
                f"warm-up {last[p] - first[p]:+.1f} MB"
            )
    finally:
        sup_proc.send_signal(signal.SIGTERM)
        try:
            sup_proc.wait(90)
        except subprocess.TimeoutExpired:
            sup_proc.kill()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--interval-s", type=float, default=1.0)
    parser.add_argument("--sample-s", type=float, default=60)
    main(parser.parse_args())

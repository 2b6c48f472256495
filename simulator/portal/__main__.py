"""`python -m simulator.portal --port N [--extra-options 120] [--step-s 1] [--freeze]`

Runs the Client Portal gateway simulator on 127.0.0.1 (HTTPS, a self-signed certificate made at
start) until SIGTERM or SIGINT. Prints one line once listening:
`portal-sim listening url=https://127.0.0.1:N ca_file=/tmp/.../cert.pem account=DU1234567`
(with `--port 0` the kernel picks the port: read it from that line). Switches: POST /sim/switches.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from pathlib import Path

from simulator.portal.server import LOOPBACK, PortalSimulator
from simulator.portfolio import default_portfolio


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m simulator.portal",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--host", default="127.0.0.1", choices=LOOPBACK, help="loopback only")
    ap.add_argument("--port", type=int, default=5000, help="HTTPS port (0: any free port)")
    ap.add_argument("--account", default="DU1234567")
    ap.add_argument(
        "--extra-options",
        type=int,
        default=120,
        help="more SPY option positions (default 120: more than one page)",
    )
    ap.add_argument(
        "--step-s",
        type=float,
        default=1.0,
        help="prices and Greeks change once per step; 0 freezes them",
    )
    ap.add_argument(
        "--cert-dir",
        type=Path,
        default=None,
        help="where to write cert.pem/key.pem (default: a temporary directory)",
    )
    ap.add_argument("--switches", default="", help='initial switches as JSON, e.g. {"quirks":true}')
    ap.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return ap.parse_args(argv)


async def run(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    portfolio = default_portfolio(args.account, args.extra_options, args.step_s)
    sim = PortalSimulator(portfolio, host=args.host, port=args.port, cert_dir=args.cert_dir)
    if args.switches:
        sim.switches.update(json.loads(args.switches))
    await sim.start()
    try:
        print(
            f"portal-sim listening url={sim.url} ca_file={sim.ca_file} account={portfolio.account}",
            flush=True,
        )
        await stop.wait()
    finally:
        await sim.stop()
        logging.getLogger(__name__).info("portal_sim stopped")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level,
        format="%(asctime)s %(levelname)s portal-sim %(name)s: %(message)s",
    )
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

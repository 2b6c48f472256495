"""`python -m simulator.portal --port N [--extra-options 120 | --book LEGS:UNDERLYINGS:SEED]
[--lines N] [--step-s 1] [--account2 ID] [--book2 LEGS:UNDERLYINGS:SEED]`

Runs the Client Portal gateway simulator on 127.0.0.1 (HTTPS, a self-signed certificate made at
start) until SIGTERM or SIGINT. Prints one line once listening:
`portal-sim listening url=https://127.0.0.1:N ca_file=/tmp/.../cert.pem account=A accounts=A[,B]`
(with `--port 0` the kernel picks the port: read it from that line). Switches: POST /sim/switches.

A second account under the same login: `--account2 ID` and/or `--book2 LEGS:UNDERLYINGS:SEED`
(either one is enough; the other defaults to DU7654321 and 6:3:1). Its book is
`simulator.book.linked_book` of the first account's book (the same market, some of the same
contracts). /portfolio/accounts and /iserver/accounts then list both, first account first.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from simulator.portal.server import LOOPBACK, PortalSimulator
from simulator.program import (
    add_book_args,
    add_common_args,
    check_book_args,
    make_more,
    make_portfolio,
    run_program,
    stop_on_signals,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m simulator.portal",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_args(ap, loopback=LOOPBACK, port=5000, port_help="HTTPS port")
    add_book_args(
        ap,
        extra_options=120,
        extra_help="more SPY option positions (default 120: more than one page)",
    )
    ap.add_argument(
        "--lines",
        type=int,
        default=0,
        help="the market-data streams this session may hold (switch line_limit; 0: no limit)",
    )
    ap.add_argument(
        "--cert-dir",
        type=Path,
        default=None,
        help="where to write cert.pem/key.pem (default: a temporary directory)",
    )
    ap.add_argument("--switches", default="", help='initial switches as JSON, e.g. {"quirks":true}')
    args = ap.parse_args(argv)
    check_book_args(ap, args)
    return args


async def run(args: argparse.Namespace) -> None:
    stop = stop_on_signals()
    portfolio = make_portfolio(args)
    sim = PortalSimulator(
        portfolio,
        more=make_more(args, portfolio),
        host=args.host,
        port=args.port,
        cert_dir=args.cert_dir,
    )
    sim.switches.update({"line_limit": args.lines})
    if args.switches:
        sim.switches.update(json.loads(args.switches))
    await sim.start()
    try:
        print(
            f"portal-sim listening url={sim.url} ca_file={sim.ca_file} account={portfolio.account} "
            f"accounts={','.join(sim.accounts)}",
            flush=True,
        )
        await stop.wait()
    finally:
        await sim.stop()
        logging.getLogger(__name__).info("portal_sim stopped")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_program("portal-sim", args.log_level, run(args))


if __name__ == "__main__":
    sys.exit(main())

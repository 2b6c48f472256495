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

from simulator.book import generate_book, linked_book, parse_book_spec
from simulator.portal.server import LOOPBACK, PortalSimulator
from simulator.portfolio import SimPortfolio, default_portfolio
from simulator.program import add_common_args, run_program, stop_on_signals

ACCOUNT2 = "DU7654321"
BOOK2 = "6:3:1"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m simulator.portal",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_args(ap, loopback=LOOPBACK, port=5000, port_help="HTTPS port")
    book = ap.add_mutually_exclusive_group()
    book.add_argument(
        "--extra-options",
        type=int,
        default=120,
        help="more SPY option positions (default 120: more than one page)",
    )
    book.add_argument(
        "--book",
        type=_book_spec,
        default=None,
        metavar="LEGS:UNDERLYINGS:SEED",
        help="serve a generated book instead of the default account (simulator.book)",
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
    ap.add_argument(
        "--account2",
        default=None,
        metavar="ID",
        help=f"a second account of the login (default with --book2: {ACCOUNT2})",
    )
    ap.add_argument(
        "--book2",
        type=_book_spec,
        default=None,
        metavar="LEGS:UNDERLYINGS:SEED",
        help="the second account's book, linked to the first one's (simulator.book.linked_book;"
        f" default with --account2: {BOOK2})",
    )
    args = ap.parse_args(argv)
    if args.account2 is None and args.book2 is not None:
        args.account2 = ACCOUNT2
    if args.account2 is not None and args.account2 == args.account:
        ap.error(f"the second account must differ from the first ({args.account})")
    return args


def _book_spec(text: str) -> tuple[int, int, int]:
    try:
        return parse_book_spec(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def make_portfolio(args: argparse.Namespace) -> SimPortfolio:
    if args.book is not None:
        legs, underlyings, seed = args.book
        return generate_book(legs, underlyings, seed, account=args.account, step_s=args.step_s)
    return default_portfolio(args.account, args.extra_options, args.step_s)


def make_more(args: argparse.Namespace, first: SimPortfolio) -> list[SimPortfolio]:
    """The other accounts of the login: none, or the second one `--account2`/`--book2` ask."""
    if args.account2 is None:
        return []
    legs, underlyings, seed = args.book2 if args.book2 is not None else parse_book_spec(BOOK2)
    return [linked_book(first, legs, underlyings, seed, account=args.account2)]


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

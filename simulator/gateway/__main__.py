"""`python -m simulator.gateway --port N [--control-port M] [--account DU1234567] [--step-s 1]
[--book LEGS:UNDERLYINGS:SEED] [--lines N] [--account2 ID] [--book2 LEGS:UNDERLYINGS:SEED]`

Runs the IB Gateway simulator on 127.0.0.1 until SIGTERM or SIGINT. Prints one line
`gateway-sim listening port=N control_port=M account=A accounts=A[,B]` on stdout once both
ports are open (with `--port 0` / `--control-port 0` the kernel picks them: read them from that
line).

A second account under the same login: `--account2 ID` and/or `--book2 LEGS:UNDERLYINGS:SEED`
(either one is enough; the other defaults to DU7654321 and 6:3:1). Its book is
`simulator.book.linked_book` of the first account's book: LEGS options on the first UNDERLYINGS
of the first account's underlyings (the same prices), some on the first account's own contracts
(the same conId in both accounts: one instrument, one market-data line), drawn from SEED, and a
stock position. managedAccounts then lists both, first account first.
"""

from __future__ import annotations

import argparse
import logging
import sys

from simulator.gateway import control as control_mod
from simulator.gateway.control import ControlServer
from simulator.gateway.server import LOOPBACK, GatewaySimulator
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
        prog="python -m simulator.gateway",
        description=__doc__,
        epilog=control_mod.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_args(ap, loopback=LOOPBACK, port=4001, port_help="TWS API port")
    ap.add_argument(
        "--control-port",
        type=int,
        default=None,
        help="line-based control port on the same host (0: any free port)",
    )
    ap.add_argument(
        "--push-interval-s",
        type=float,
        default=0.5,
        help="how often market data and P&L are pushed to subscribers",
    )
    add_book_args(ap, extra_options=0, extra_help="more SPY option positions")
    ap.add_argument(
        "--lines",
        type=int,
        default=None,
        help="the account's market-data line limit (default: unlimited)",
    )
    args = ap.parse_args(argv)
    check_book_args(ap, args)
    return args


async def run(args: argparse.Namespace) -> None:
    stop = stop_on_signals()
    first = make_portfolio(args)
    sim = GatewaySimulator(
        first,
        more=make_more(args, first),
        host=args.host,
        port=args.port,
        push_interval_s=args.push_interval_s,
        lines=args.lines,
    )
    control = (
        ControlServer(sim, args.host, args.control_port) if args.control_port is not None else None
    )
    await sim.start()
    try:
        if control is not None:
            await control.start()
        print(
            f"gateway-sim listening port={sim.port} "
            f"control_port={control.port if control else ''} account={sim.account} "
            f"accounts={','.join(sim.accounts)}",
            flush=True,
        )
        await stop.wait()
    finally:
        if control is not None:
            await control.stop()
        await sim.stop()
        logging.getLogger(__name__).info("gateway.stopped")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_program("gateway-sim", args.log_level, run(args))


if __name__ == "__main__":
    sys.exit(main())

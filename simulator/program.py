"""What the two simulator programs (`python -m simulator.gateway|portal`) share: the common
options, the book and second-account options and the portfolios they make, the log format, and
running until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from simulator.book import generate_book, linked_book, parse_book_spec
from simulator.portfolio import SimPortfolio, default_portfolio

ACCOUNT2 = "DU7654321"
BOOK2 = "6:3:1"


def add_common_args(
    ap: argparse.ArgumentParser, *, loopback: Sequence[str], port: int, port_help: str
) -> None:
    ap.add_argument("--host", default="127.0.0.1", choices=loopback, help="loopback only")
    ap.add_argument("--port", type=int, default=port, help=f"{port_help} (0: any free port)")
    ap.add_argument("--account", default="DU1234567")
    ap.add_argument(
        "--step-s",
        type=float,
        default=1.0,
        help="prices and Greeks change once per step; 0 freezes them",
    )
    ap.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))


def add_book_args(ap: argparse.ArgumentParser, *, extra_options: int, extra_help: str) -> None:
    """`--extra-options` or `--book`, and a second account (`--account2`, `--book2`)."""
    book = ap.add_mutually_exclusive_group()
    book.add_argument("--extra-options", type=int, default=extra_options, help=extra_help)
    book.add_argument(
        "--book",
        type=_book_spec,
        default=None,
        metavar="LEGS:UNDERLYINGS:SEED",
        help="serve a generated book instead of the default account (simulator.book)",
    )
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


def check_book_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """`--book2` alone means the default second account, which must differ from the first."""
    if args.account2 is None and args.book2 is not None:
        args.account2 = ACCOUNT2
    if args.account2 is not None and args.account2 == args.account:
        ap.error(f"the second account must differ from the first ({args.account})")


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


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT (handlers installed now, before anything starts)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def run_program(name: str, log_level: str, main: Coroutine[Any, Any, None]) -> int:
    """Log to stderr as `name`, run `main` to its end; the exit code."""
    logging.basicConfig(
        stream=sys.stderr,
        level=log_level,
        format=f"%(asctime)s %(levelname)s {name} %(name)s: %(message)s",
    )
    asyncio.run(main)
    return 0

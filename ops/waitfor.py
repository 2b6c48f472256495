"""`python -m ops.waitfor HOST:PORT [HOST:PORT ...] [--timeout S] -- COMMAND ...`

Wait (bounded) until every TCP port accepts a connection, then exec COMMAND in this process
(same PID, so supervisord's signals reach it). The demo profile starts the bridge this way, so
that a first run's slow PostgreSQL initdb or a late simulator costs no failed start. Exit code 1
when the time is up (supervisord then retries). SIGTERM when the parent (supervisord) ends,
also while waiting: the request survives the exec, so COMMAND is never left as an orphan.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
import time

from shared.process import die_with_parent


def _ready(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), 0.5):
        return True
    return False


def wait_ports(targets: list[tuple[str, int]], timeout_s: float) -> list[tuple[str, int]]:
    """The targets still closed when `timeout_s` ran out (empty: all open)."""
    end = time.monotonic() + timeout_s
    waiting = list(targets)
    while waiting:
        waiting = [(h, p) for h, p in waiting if not _ready(h, p)]
        if not waiting or time.monotonic() > end:
            break
        time.sleep(0.2)
    return waiting


def parse_target(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> int:
    die_with_parent()
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print(
            "usage: python -m ops.waitfor HOST:PORT ... [--timeout S] -- COMMAND ...",
            file=sys.stderr,
        )
        return 2
    cut = argv.index("--")
    ap = argparse.ArgumentParser(prog="python -m ops.waitfor")
    ap.add_argument("targets", nargs="+", type=parse_target)
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args(argv[:cut])
    command = argv[cut + 1 :]
    if not command:
        print("waitfor: no command after --", file=sys.stderr)
        return 2
    closed = wait_ports(args.targets, args.timeout)
    if closed:
        shown = ", ".join(f"{h}:{p}" for h, p in closed)
        print(
            f"waitfor_timeout nothing listening on {shown} after {args.timeout:g} s",
            file=sys.stderr,
            flush=True,
        )
        return 1
    sys.stdout.flush()
    os.execvp(command[0], command)


if __name__ == "__main__":
    sys.exit(main())

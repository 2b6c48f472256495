"""`python -m ops.embedded postgres|redis --data DIR --port N [--aof]`: one server in the
foreground, for supervisord (the demo profile)."""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from ops.embedded.postgres_server import PostgresServer
from ops.embedded.redis_server import RedisServer
from shared.process import die_with_parent


def _run_foreground(server: PostgresServer | RedisServer) -> int:
    """Run a server in the foreground (for supervisord): exec-like, forwarding signals.

    Both this wrapper and its server end with their parent: supervisord gone (even by kill -9)
    -> SIGTERM here -> the server's orderly stop; this wrapper gone -> the server stops itself.
    """
    # installed before the parent-death request, so that its signal is already a clean stop
    stop_requested: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _f: stop_requested.append(signum))
    signal.signal(signal.SIGINT, lambda signum, _f: stop_requested.append(signum))
    die_with_parent(signal.SIGTERM)
    if isinstance(server, PostgresServer):
        server.init()
    else:
        server.data_dir.mkdir(parents=True, exist_ok=True)
    # postgres: SIGINT = fast shutdown; redis: SIGTERM = save-less shutdown
    stop_sig = signal.SIGINT if isinstance(server, PostgresServer) else signal.SIGTERM
    kwargs = server._popen_kwargs() if isinstance(server, PostgresServer) else {}
    if stop_requested:
        return 0
    proc = subprocess.Popen(  # type: ignore[call-overload]
        server.command(),
        preexec_fn=functools.partial(die_with_parent, stop_sig, os.getpid()),  # noqa: PLW1509 - one thread
        **kwargs,
    )

    def forward(_signum: int, _frame: object) -> None:
        proc.send_signal(stop_sig)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    if stop_requested:
        forward(stop_requested[0], None)
    return int(proc.wait())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.embedded")
    parser.add_argument("kind", choices=["postgres", "redis"])
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--aof", action="store_true", help="redis: appendonly yes, everysec")
    args = parser.parse_args(argv)
    server: PostgresServer | RedisServer
    if args.kind == "postgres":
        server = PostgresServer(args.data, args.port)
        try:
            return _run_foreground(server)
        finally:  # also when it could not start (a failed initdb)
            shutil.rmtree(server.socket_dir, ignore_errors=True)
    server = RedisServer(args.data, args.port, aof=args.aof)
    return _run_foreground(server)


if __name__ == "__main__":
    sys.exit(main())

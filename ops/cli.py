"""`bridge`: the operator's command.

    bridge status [--json]          one screen; exit 0 healthy, 1 degraded, 2 down
    bridge check-config [--example] effective configuration, secrets masked; exit 2 if invalid
    bridge schema [--status]        apply the pending migrations; --status: list them
    bridge drain [--buffer PATH]    drain the writer's buffer (or PATH) into PostgreSQL now
    bridge tail [--count N]         follow new portfolio_greeks rows as a table
    bridge web                      the read-only web console, /metrics and /healthz
    bridge demo [--dir DIR]         the demo profile in the foreground (what `make demo` runs)
    bridge demo --stop              stop the running demo, wait until nothing of it runs

The configuration comes from the environment over a `.env` file: `--env-file PATH`, else
`.env` in the current directory, else the demo's `.demo/.env` when `make demo` made one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ops.config_docs import env_example
from shared.config import (
    VARIABLES,
    ConfigError,
    Settings,
    load_settings,
    read_dotenv,
    remember,
    scrub,
)

EXIT_OK, EXIT_FAIL, EXIT_CONFIG = 0, 1, 2
DEMO_ENV = Path(".demo") / ".env"
REPO = Path(__file__).resolve().parent.parent


def env_file(given: str | None) -> Path | None:
    """The `.env` file to read: --env-file, ./.env, else the demo's (None: no file)."""
    if given:
        return Path(given)
    if Path(".env").is_file():
        return Path(".env")
    if DEMO_ENV.is_file():
        return DEMO_ENV
    return None


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(dotenv=env_file(args.env_file))
    remember(settings.secret_texts())  # every text printed below goes through `scrub`
    return settings


def _config_error(exc: ConfigError) -> int:
    print(f"config_invalid {exc.variable}={exc.value!r} is invalid: {exc.allowed}", file=sys.stderr)
    return EXIT_CONFIG


def supervisor_url(settings: Settings) -> str:
    """BRIDGE_SUPERVISOR_URL, else deploy/supervisord.conf's socket when it exists."""
    if settings.supervisor_url:
        return settings.supervisor_url
    sock = REPO / "deploy" / "run" / "supervisor.sock"
    return f"unix://{sock}" if sock.exists() else ""


# ---- commands ----------------------------------------------------------------------------------
def cmd_status(args: argparse.Namespace) -> int:
    from ops.status import EXIT_CODES, classify, gather, render, to_json

    try:
        settings = _settings(args)
        settings.require_redis()
        settings.require_database()
    except ConfigError as exc:
        return _config_error(exc)
    report = asyncio.run(gather(settings, supervisor_url(settings)))
    level, _ = classify(report)
    if args.json:
        print(json.dumps(to_json(report), default=str, sort_keys=True))
    else:
        print(render(report))
    return EXIT_CODES[level]


def cmd_check_config(args: argparse.Namespace) -> int:
    if args.example:
        sys.stdout.write(env_example())
        return EXIT_OK
    path = env_file(args.env_file)
    try:
        settings = load_settings(dotenv=path)
        settings.require_database()
        settings.require_redis()
    except ConfigError as exc:
        return _config_error(exc)
    for line in config_lines(settings, path):
        print(line)
    print("# valid")
    return EXIT_OK


def config_lines(settings: Settings, path: Path | None) -> list[str]:
    """`VARIABLE  value  (source)` per variable, secrets masked; source: env, .env or default."""
    dotenv = read_dotenv(path) if path is not None else {}
    shown = settings.as_env()
    width = max(len(v.name) for v in VARIABLES)
    lines = [f"# configuration: the environment over {path or 'no .env file'}"]
    for var in VARIABLES:
        if os.environ.get(var.name, "").strip():
            source = "env"
        elif dotenv.get(var.name, "").strip():
            source = ".env"
        else:
            source = "default"
        lines.append(f"{var.name.ljust(width)}  {shown[var.name]}  ({source})")
    return lines


def cmd_schema(args: argparse.Namespace) -> int:
    from ops.schema import schema_command

    try:
        dsn = _settings(args).require_database()
    except ConfigError as exc:
        return _config_error(exc)
    return schema_command(dsn, status_only=args.status)


def cmd_drain(args: argparse.Namespace) -> int:
    from ops.drain import drain_now

    try:
        settings = _settings(args)
        settings.require_database()
    except ConfigError as exc:
        return _config_error(exc)
    return drain_now(settings, Path(args.buffer).expanduser() if args.buffer else None)


def cmd_tail(args: argparse.Namespace) -> int:
    from database.reads import READ_ERRORS
    from ops.tail import tail

    try:
        dsn = _settings(args).require_database()
    except ConfigError as exc:
        return _config_error(exc)
    try:
        asyncio.run(
            tail(dsn, sys.stdout, count=args.count, last=args.last, interval_s=args.interval)
        )
    except KeyboardInterrupt:
        return EXIT_OK
    except READ_ERRORS as exc:
        # unreachable, or refusing us (no such database, wrong password): one line, no traceback
        print(scrub(f"tail_failed PostgreSQL: {type(exc).__name__}: {exc}"), file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK


def cmd_web(args: argparse.Namespace) -> int:
    from ops.web.server import serve
    from shared.logs import configure_logging

    try:
        settings = _settings(args)
        configure_logging("web", settings.log_format, settings.log_level)
        return asyncio.run(serve(settings, supervisor_url(settings)))
    except ConfigError as exc:
        return _config_error(exc)


def cmd_demo(args: argparse.Namespace) -> int:
    from ops.demo_run import run_demo, stop_demo

    if args.stop:
        return stop_demo(Path(args.dir))
    return run_demo(Path(args.dir), render_only=args.render_only)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="bridge", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--env-file", help="the .env file to read (default: ./.env, else .demo/.env)")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("status", help="health at a glance; exit 0 healthy, 1 degraded, 2 down")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("check-config", help="effective configuration, secrets masked")
    p.add_argument("--example", action="store_true", help="print deploy/.env.example")
    p.set_defaults(func=cmd_check_config)
    p = sub.add_parser("schema", help="apply the pending schema migrations")
    p.add_argument(
        "--status", action="store_true", help="list applied and pending migrations, change nothing"
    )
    p.set_defaults(func=cmd_schema)
    p = sub.add_parser("drain", help="drain the writer's buffer into PostgreSQL now")
    p.add_argument(
        "--buffer", metavar="PATH", help="this buffer file instead of BRIDGE_BUFFER_PATH"
    )
    p.set_defaults(func=cmd_drain)
    p = sub.add_parser("tail", help="follow new portfolio_greeks rows")
    p.add_argument("--count", type=int, default=None, help="stop after N rows")
    p.add_argument("--last", type=int, default=5, help="start with the N newest rows")
    p.add_argument("--interval", type=float, default=1.0, help="poll period, seconds")
    p.set_defaults(func=cmd_tail)
    p = sub.add_parser("web", help="the read-only web console (BRIDGE_WEB_HOST:BRIDGE_WEB_PORT)")
    p.set_defaults(func=cmd_web)
    p = sub.add_parser("demo", help="run the demo profile in the foreground")
    p.add_argument("--dir", default=str(REPO / ".demo"), help="data, logs and config")
    p.add_argument(
        "--render-only",
        action="store_true",
        help="write the config and .env, print the supervisord config's path",
    )
    p.add_argument(
        "--stop",
        action="store_true",
        help="stop the folder's running demo (and its leftovers); wait until they are gone",
    )
    p.set_defaults(func=cmd_demo)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args: Any = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        # `bridge status | head`: the reader left; say nothing more (not even at exit)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

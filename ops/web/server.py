"""`bridge web` (supervisord: `python -m ops.web`): the read-only web console.

Start: the configuration is checked first (a host that is not loopback without
BRIDGE_WEB_TOKEN, a token shorter than 16 characters, no DATABASE_URL or REDIS_URL: one
`config_invalid` line, exit 2); then it listens on BRIDGE_WEB_HOST:BRIDGE_WEB_PORT (a port in
use: one line, exit 1, supervisord retries). It needs neither PostgreSQL nor Redis to start and
stays up without them. SIGTERM/SIGINT: stops listening, ends the open requests, exits 0.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from ops.web.console import Console
from ops.web.page import load_static
from ops.web.routes import CONSOLE, STATIC, add_routes
from ops.web.security import add_headers, check_bind, make_middlewares
from shared.config import Settings
from shared.process import install_stop_signals

log = logging.getLogger("web")
SHUTDOWN_S = 3.0


def build_app(console: Console) -> web.Application:
    app = web.Application(middlewares=make_middlewares(console.settings.web_token))
    app[CONSOLE] = console
    app[STATIC] = load_static()
    add_routes(app)
    app.on_response_prepare.append(add_headers)
    return app


def url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}/"


async def serve(settings: Settings, supervisor_url: str = "") -> int:
    """Run until SIGTERM/SIGINT; raises ConfigError before listening (exit 2 for the caller)."""
    check_bind(settings)
    settings.require_database()
    settings.require_redis()
    stop = asyncio.Event()
    install_stop_signals(stop)
    console = Console(settings, supervisor_url)
    runner = web.AppRunner(build_app(console), access_log=None, shutdown_timeout=SHUTDOWN_S)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.web_host, settings.web_port)
        try:
            await site.start()
        except OSError as exc:
            log.error(
                "web_listen_failed %s:%d: %s", settings.web_host, settings.web_port, exc.strerror
            )
            return 1
        token = "required" if settings.web_token else "none (loopback only)"
        log.info("web_listening %s token=%s", url(settings.web_host, settings.web_port), token)
        await stop.wait()
        log.info("web_stopping")
    finally:
        await runner.cleanup()
        await console.close()
    return 0

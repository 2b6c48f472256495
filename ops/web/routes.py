"""The endpoints of `bridge web` (all GET/HEAD; docs/WEB.md describes each):

    /                 the page
    /api/series       scope, account, window: the net Greeks over the window (+ gaps, marks)
    /api/exposure     account: the newest book by underlying, in dollars
    /api/status       the same object as `bridge status --json`
    /api/logs         limit: the newest WARN/ERROR rows of api_logs
    /metrics          Prometheus text format
    /healthz          200 healthy or degraded, 503 down; the status JSON
    /static/{name}    the page's script, style and icon

PostgreSQL unreachable: the /api/ reads of it answer 503 with the reason, the page and the
status say so; Redis unreachable: the status says so. Nothing here raises out of a handler.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from aiohttp import web

from database.web_reads import READ_ERRORS
from ops.status import DOWN, to_json
from ops.web import data, metrics, page
from ops.web.console import Console
from ops.web.series import DEFAULT_WINDOW, WINDOWS, newest_json
from shared.config import scrub, scrub_all

CONSOLE = web.AppKey("console", Console)
STATIC = web.AppKey("static", dict[str, tuple[bytes, str]])

SCOPE = re.compile(r"[A-Za-z0-9._/ \-]{1,64}")
ACCOUNT = re.compile(r"[A-Za-z0-9]{0,32}")
LOGS_DEFAULT, LOGS_MAX = 20, 200


class BadRequest(ValueError):
    pass


def _dumps(body: object) -> str:
    return orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS).decode()


def json_response(body: Any, status: int = 200) -> web.Response:
    # texts read from PostgreSQL and Redis were written by other processes: no secret out
    return web.json_response(scrub_all(body), status=status, dumps=_dumps)


def short(exc: BaseException) -> str:
    text = scrub(str(exc) or type(exc).__name__)
    return text if len(text) <= 200 else text[:197] + "..."


def db_unreachable(exc: BaseException) -> web.Response:
    return json_response(
        {"error": f"PostgreSQL unreachable: {short(exc)}", "source": "postgresql"}, status=503
    )


def _param(request: web.Request, name: str, pattern: re.Pattern[str], default: str | None) -> Any:
    value = request.query.get(name)
    if value is None:
        return default
    if not pattern.fullmatch(value):
        raise BadRequest(f"{name}: not a valid value")
    return value


def _window(request: web.Request) -> str:
    window = request.query.get("window", DEFAULT_WINDOW)
    if window not in WINDOWS:
        raise BadRequest(f"window: one of {', '.join(WINDOWS)}")
    return window


async def series(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    try:
        scope = _param(request, "scope", SCOPE, "PORTFOLIO")
        account = _param(request, "account", ACCOUNT, None)
        window = _window(request)
    except BadRequest as exc:
        return json_response({"error": str(exc)}, status=400)
    try:
        body = await data.series_body(console, scope, account, window, console.clock())
    except READ_ERRORS as exc:
        return db_unreachable(exc)
    return json_response(body)


async def exposure(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    try:
        account = _param(request, "account", ACCOUNT, None)
    except BadRequest as exc:
        return json_response({"error": str(exc)}, status=400)
    try:
        body = await data.exposure_body(console, account, console.clock())
    except READ_ERRORS as exc:
        return db_unreachable(exc)
    return json_response(body)


async def logs(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    text = request.query.get("limit", str(LOGS_DEFAULT))
    if not text.isdigit() or not 1 <= int(text) <= LOGS_MAX:
        return json_response({"error": f"limit: 1 to {LOGS_MAX}"}, status=400)
    try:
        body = await data.logs_body(console, int(text), console.clock())
    except READ_ERRORS as exc:
        return db_unreachable(exc)
    return json_response(body)


async def status(request: web.Request) -> web.Response:
    return json_response(to_json(await request.app[CONSOLE].report()))


async def healthz(request: web.Request) -> web.Response:
    body = to_json(await request.app[CONSOLE].report())
    return json_response(body, status=503 if body["status"] == DOWN else 200)


async def metrics_text(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    families: list[Any] = list(metrics.status_families(await console.report()))
    try:
        schema, accounts = await console.context()
        if schema.greeks_table:
            rows = await console.reader.newest_per_account(schema, accounts)
            families += [metrics.greek_family(rows), metrics.newest_time_family(rows)]
        total = await console.reconnect_attempts()
    except READ_ERRORS:
        total = console.reconnects_known  # the last count stays; the rest is left out
    counter = metrics.reconnect_family(total)
    if counter is not None:
        families.append(counter)
    return web.Response(
        body=metrics.exposition(families), headers={"Content-Type": metrics.CONTENT_TYPE}
    )


async def index(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    now = console.clock()
    window = request.query.get("window", DEFAULT_WINDOW)
    window = window if window in WINDOWS else DEFAULT_WINDOW
    account = request.query.get("account")
    if account is not None and not ACCOUNT.fullmatch(account):
        account = None
    body = to_json(await console.report())
    db_error = None
    newest, chosen = None, account or ""
    accounts: list[str] = []
    try:
        schema, accounts, chosen = await data.resolve_account(console, account)
        if schema.greeks_table:
            row = await console.reader.newest(schema, data.PORTFOLIO, chosen)
            newest = newest_json(row, now)
    except READ_ERRORS as exc:
        db_error = short(exc)
    html = page.render(
        status=body,
        db_error=db_error,
        newest=newest,
        accounts=accounts,
        account=chosen,
        window=window,
        refresh_ms=refresh_ms(console.poll_s),
    )
    return web.Response(text=scrub(html), content_type="text/html")


def refresh_ms(poll_s: float) -> int:
    """The page polls once per tick, at most every second and at least every 10 s."""
    return int(min(max(poll_s, 1.0), 10.0) * 1000)


async def static(request: web.Request) -> web.Response:
    found = request.app[STATIC].get(request.match_info["name"])
    if found is None:
        raise web.HTTPNotFound()
    body, kind = found
    return web.Response(body=body, headers={"Content-Type": kind})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", index)
    app.router.add_get("/api/series", series)
    app.router.add_get("/api/exposure", exposure)
    app.router.add_get("/api/status", status)
    app.router.add_get("/api/logs", logs)
    app.router.add_get("/metrics", metrics_text)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/static/{name}", static)

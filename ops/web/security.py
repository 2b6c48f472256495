"""What every request and response of `bridge web` goes through.

- The token (BRIDGE_WEB_TOKEN), when set: `Authorization: Bearer <token>` (Prometheus, curl), or
  HTTP Basic with the token as the password (a browser asks for it once and sends it with every
  request of the page, the polling included). Compared in constant time; anything else is 401.
- Read-only: GET and HEAD only, anything else is 405 (nothing here changes anything anyway).
- Headers on every response, errors included: a Content-Security-Policy that allows only this
  origin's own script, style and images (no inline script, no framing, no form target),
  nosniff, no referrer, no caching.
- An unexpected error is one log line and a 500 whose body says nothing of the inside.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import logging

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from shared.config import ConfigError, Settings

log = logging.getLogger("web")

TOKEN_MIN_LEN = 16
ALLOWED_METHODS = ("GET", "HEAD")
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}
CHALLENGE = 'Basic realm="bridge web", charset="UTF-8"'


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost: may resolve to anything


def check_bind(settings: Settings) -> None:
    """Raise ConfigError when the console would be open to others without a token, or the
    token is too short to be one."""
    token = settings.web_token or ""
    if token and len(token) < TOKEN_MIN_LEN:
        raise ConfigError(
            "BRIDGE_WEB_TOKEN", "***", f"at least {TOKEN_MIN_LEN} characters (or empty)"
        )
    if not token and not is_loopback(settings.web_host):
        raise ConfigError(
            "BRIDGE_WEB_TOKEN",
            "",
            f"required when BRIDGE_WEB_HOST={settings.web_host} is not a loopback address: "
            "whoever reaches the port would read the book",
        )


def presented_token(header: str) -> bytes | None:
    """The token of an Authorization header (Bearer, or Basic's password), else None."""
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value.encode()
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return None
        _user, sep, password = decoded.partition(b":")
        return password if sep else None
    return None


def token_ok(header: str, token: str) -> bool:
    given = presented_token(header)
    # compare_digest on equal-length inputs is constant-time; a wrong length fails anyway
    return given is not None and hmac.compare_digest(given, token.encode())


def make_middlewares(token: str | None) -> list[Middleware]:
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if token and not token_ok(request.headers.get("Authorization", ""), token):
            return web.json_response(
                {"error": "a valid token is required (Authorization: Bearer)"},
                status=401,
                headers={"WWW-Authenticate": CHALLENGE},
            )
        if request.method not in ALLOWED_METHODS:
            return web.json_response(
                {"error": "read-only: GET and HEAD only"},
                status=405,
                headers={"Allow": ", ".join(ALLOWED_METHODS)},
            )
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except Exception:
            log.exception("web_request_failed %s %s", request.method, request.path)
            return web.json_response({"error": "internal error (see the web log)"}, status=500)

    return [guard]


async def add_headers(_request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every response, whichever path made it."""
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)

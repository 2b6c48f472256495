"""HTTP to the Client Portal gateway: one aiohttp session (pooled), TLS, pacing, error mapping.

TLS: the gateway serves a self-signed certificate. Default (`IBKR_TLS_VERIFY=1`): verify it,
against `IBKR_CA_FILE` when given (put the gateway's own certificate there), else against the
system CAs. `IBKR_TLS_VERIFY=0` skips verification: anyone who can intercept the connection can
then read the session and the account; acceptable only for a gateway on loopback.

Errors are mapped to exceptions the transport turns into link states:
- `AuthProblem`: 401, a redirect (302 to the login page), 400 "no bridge" / "Init session first";
- `RateLimited`: 429 (the pacer backs off before any further request);
- `GatewayDown`: connection refused/reset, timeout, TLS failure, 5xx (the nightly /iserver reset);
- `BadAnswer`: other 4xx, or a body that is not JSON.
"""

from __future__ import annotations

import contextvars
import logging
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from collector.portal.pacing import Pacer
from collector.portal.parsers import error_text
from collector.transport import TransportError

log = logging.getLogger(__name__)

API_PREFIX = "/v1/api"
# set inside background jobs (positions, summary, tickle): their requests leave room for ticks
BACKGROUND: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "portal_background", default=False
)
REQUEST_TIMEOUT_S = 10.0
POOL_SIZE = 4
AUTH_ERRORS = ("no bridge", "init session first", "not authenticated", "no session")


class PortalError(TransportError):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AuthProblem(PortalError):
    pass


class RateLimited(PortalError):
    pass


class GatewayDown(PortalError):
    pass


class BadAnswer(PortalError):
    pass


def ssl_setting(verify: bool, ca_file: Path | None) -> ssl.SSLContext | bool:
    if not verify:
        return False
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    return context


class PortalClient:
    def __init__(
        self,
        base_url: str,
        *,
        verify: bool = True,
        ca_file: Path | None = None,
        pacer: Pacer | None = None,
        timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        if not self.base_url.endswith(API_PREFIX):
            self.base_url += API_PREFIX
        self.verify = verify
        self.ca_file = ca_file
        self.pacer = pacer or Pacer()
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None
        self.requests = 0

    @property
    def is_open(self) -> bool:
        return self._session is not None and not self._session.closed

    def open(self) -> None:
        if self.is_open:
            return
        connector = aiohttp.TCPConnector(
            limit=POOL_SIZE, ssl=ssl_setting(self.verify, self.ca_file)
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            headers={"User-Agent": "ibkr-greeks-bridge/0.1", "Accept": "application/json"},
        )

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    async def get(self, path: str, params: dict[str, str] | None = None) -> Any:
        return await self.request("GET", path, params=params)

    async def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        # the gateway wants a body (Content-Length) on POST: send {} when there is nothing
        return await self.request("POST", path, body=body if body is not None else {})

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> Any:
        if not self.is_open:
            raise GatewayDown("portal client is closed")
        assert self._session is not None
        await self.pacer.acquire(path, background=BACKGROUND.get())
        self.requests += 1
        url = self.base_url + path
        data = orjson.dumps(body) if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else None
        try:
            async with self._session.request(
                method, url, params=params, data=data, headers=headers, allow_redirects=False
            ) as resp:
                raw = await resp.read()
                status = resp.status
                location = resp.headers.get("Location", "")
                retry_after = resp.headers.get("Retry-After")
        except aiohttp.ClientConnectorCertificateError as exc:
            raise GatewayDown(
                f"TLS certificate of the gateway not trusted ({exc.certificate_error}); set "
                "IBKR_CA_FILE to its certificate (or IBKR_TLS_VERIFY=0 on loopback only)"
            ) from exc
        except aiohttp.ClientSSLError as exc:
            raise GatewayDown(f"TLS error talking to the gateway: {exc}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise GatewayDown(f"gateway unreachable: {type(exc).__name__}: {exc}") from exc
        except TimeoutError as exc:
            raise GatewayDown(f"gateway timed out after {self.timeout_s:g} s on {path}") from exc
        return self._interpret(path, status, raw, location, retry_after)

    def _interpret(
        self, path: str, status: int, raw: bytes, location: str, retry_after: str | None
    ) -> Any:
        body: Any
        try:
            body = orjson.loads(raw) if raw.strip() else None
        except orjson.JSONDecodeError:
            body = raw.decode("utf-8", "replace")
        text = error_text(body)
        if status in (301, 302, 303, 307, 308):
            raise AuthProblem(f"redirected to the login page ({location or 'no Location'})", status)
        if status == 401:
            raise AuthProblem(f"HTTP 401{': ' + text if text else ''}", status)
        if status == 429:
            wait = None
            if retry_after and retry_after.strip().isascii() and retry_after.strip().isdigit():
                wait = float(retry_after.strip())
            delay = self.pacer.throttled(wait)
            log.warning("portal_rate_limited %s: 429, backing off %.1f s", path, delay)
            raise RateLimited(f"rate limited (429) on {path}; backing off {delay:.1f} s", status)
        if status == 400 and any(e in text.lower() for e in AUTH_ERRORS):
            raise AuthProblem(f"HTTP 400: {text}", status)
        if status >= 500:
            raise GatewayDown(
                f"gateway error {status} on {path}{': ' + text if text else ''}", status
            )
        if status >= 400:
            raise BadAnswer(f"{status} on {path}{': ' + text if text else ''}", status)
        if isinstance(body, str):
            raise BadAnswer(f"{path} answered {status} with a body that is not JSON", status)
        self.pacer.succeeded()
        return body

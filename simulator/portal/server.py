"""The Client Portal gateway simulator: an aiohttp HTTPS server on loopback.

Serves the accounts of one login (`simulator.portfolio.SimPortfolio` each, sharing one market:
a conid two accounts hold is one instrument, one price, one stream) under /v1/api with the
shapes of IBKR's examples: /tickle, /iserver/auth/status, /iserver/auth/ssodh/init,
/iserver/reauthenticate, /logout, /portfolio/accounts, /portfolio/{acct}/positions/{page} (100 a
page, [] past the end), /portfolio/{acct}/positions/invalidate, /portfolio/{acct}/summary,
/portfolio2/{acct}/positions, /iserver/accounts, /iserver/account/pnl/partitioned,
/iserver/marketdata/snapshot (pre-flight first, values as strings),
/iserver/marketdata/unsubscribe and /iserver/marketdata/unsubscribeall (market.py: the streams,
the line limit and the data errors).

The endpoints are in `api.py` (their bodies in `shapes.py`); here: the server's lifecycle, the
session model (login, logout, a new session after a login), the faults applied before an
endpoint runs, and the control endpoints. Switches (`state.Switches`) are set in process
(`sim.switches.update({...})`) or from another process: POST /sim/switches with a JSON object;
GET /sim/switches, GET /sim/stats, POST /sim/stats/reset, POST /sim/login, POST /sim/logout.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

from simulator.portal.api import API, PortalApi, error
from simulator.portal.certs import CertPair, generate
from simulator.portal.market import Streams, market_view
from simulator.portal.state import Stats, Switches
from simulator.portfolio import SimPortfolio, shared_market

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "::1", "localhost")
LOGIN_PAGE = "/sso/Login?forwardTo=22&RL=1&ip2loc=on"
AUTH_PATHS = frozenset(
    {
        "/iserver/auth/status",
        "/tickle",
        "/iserver/auth/ssodh/init",
        "/iserver/reauthenticate",
        "/logout",
    }
)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class PortalSession:
    """What the gateway remembers for one login."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.portfolio_accounts = False
        self.iserver_accounts = False
        self.streams = Streams()  # its market-data streams
        self.started = time.time()


class PortalSimulator:
    def __init__(
        self,
        portfolio: SimPortfolio,
        *,
        more: Sequence[SimPortfolio] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        cert_dir: Path | None = None,
        switches: Switches | None = None,
    ) -> None:
        """`portfolio`: the primary account (listed first, the one selected); `more`: the other
        accounts of the login (ValueError if two share an id or disagree on the market)."""
        if host not in LOOPBACK:
            raise ValueError("the simulator listens on loopback only")
        self.portfolio = portfolio
        self.books: dict[str, SimPortfolio] = {}
        for book in (portfolio, *more):
            if book.account in self.books:
                raise ValueError(f"account {book.account} given twice")
            self.books[book.account] = book
        shared_market(list(self.books.values()))  # one market, or ValueError now
        self.host = host
        self.port = port
        self.switches = switches or Switches()
        self.stats = Stats()
        self._cert_dir = cert_dir
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.certs: CertPair | None = None
        self._runner: web.AppRunner | None = None
        self._epoch = 1
        self.session = PortalSession(self._epoch)
        self._was_logged_out = False
        self.api = PortalApi(self)

    # ---- lifecycle -----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"https://{'localhost' if self.host == 'localhost' else self.host}:{self.port}"

    @property
    def ca_file(self) -> Path:
        assert self.certs is not None, "start() first"
        return self.certs.cert

    async def __aenter__(self) -> PortalSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        if self._cert_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="portal-sim-")
            cert_dir = Path(self._tmp.name)
        else:
            cert_dir = self._cert_dir
        self.certs = await asyncio.to_thread(generate, cert_dir)
        app = self.make_app()
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, self.host, self.port, ssl_context=self.certs.server_context()
        )
        await site.start()
        sockets = getattr(site._server, "sockets", None)  # the bound port when port=0
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        log.info("portal_sim listening %s", self.url)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # ---- model -------------------------------------------------------------------------------
    @property
    def accounts(self) -> list[str]:
        """Every account of the login, the primary one first."""
        return list(self.books)

    def market(self) -> SimPortfolio:
        """What the snapshot endpoint prices: every contract any account holds now."""
        return market_view(list(self.books.values()))

    def model_time(self) -> float:
        frozen = self.switches.frozen_at
        return float(frozen) if frozen is not None else time.time()

    def login(self) -> None:
        self.switches.logged_out = False
        self._new_session_if_needed()

    def logout(self) -> None:
        self.switches.logged_out = True
        self._was_logged_out = True

    def _new_session_if_needed(self) -> None:
        if self.switches.logged_out:
            self._was_logged_out = True
        elif self._was_logged_out:
            self._was_logged_out = False
            self._epoch += 1
            self.session = PortalSession(self._epoch)

    # ---- app ---------------------------------------------------------------------------------
    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        self.api.add_routes(app.router)
        r = app.router
        r.add_get("/sim/switches", self.sim_switches)
        r.add_post("/sim/switches", self.sim_switches)
        r.add_get("/sim/stats", self.sim_stats)
        r.add_post("/sim/stats/reset", self.sim_stats_reset)
        r.add_post("/sim/login", self.sim_login)
        r.add_post("/sim/logout", self.sim_logout)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The gateway's faults, in the order a real one shows them: pacing (429), slowness,
        refused requests, then the session's state."""
        path = request.path
        if path.startswith("/sim/") or path.startswith("/sso/"):
            return await handler(request)
        now = time.monotonic()
        api_path = path.removeprefix(API)
        key = self.stats.record(api_path, now)
        self._new_session_if_needed()
        if self.switches.enforce_pacing and self._rate_limited(key, api_path, now):
            return web.Response(status=429, text="Too Many Requests")
        if self.switches.slow_s > 0:
            await asyncio.sleep(self.switches.slow_s)
        refused = self._refused(request, api_path) or self._session_check(api_path)
        if refused is not None:
            return refused
        return await handler(request)

    def _rate_limited(self, key: str, api_path: str, now: float) -> bool:
        broken = self.stats.violates(key, now)
        if broken is None:
            return False
        self.stats.rate_limited += 1
        if self.switches.penalty_s > 0 and broken != "penalty box":
            self.stats.penalty_until = now + self.switches.penalty_s
        log.info("portal_sim_429 %s (%s)", api_path, broken)
        return True

    def _refused(self, request: web.Request, api_path: str) -> web.Response | None:
        """A request the gateway turns down whatever the session (a switch, or no length)."""
        sw = self.switches
        if (
            request.method == "POST"
            and request.content_length is None
            and "chunked" not in request.headers.get("Transfer-Encoding", "")
        ):
            return web.Response(status=411, text="Length Required")
        if (
            sw.auth_get_only
            and request.method == "POST"
            and api_path in ("/iserver/auth/status", "/tickle")
        ):
            return web.Response(status=405, text="Method Not Allowed")
        missing = sw.no_invalidate and api_path.endswith("/positions/invalidate")
        if missing or any(api_path.startswith(p) for p in sw.missing_endpoints):
            return web.Response(status=404, text="Not Found")
        return None

    def _session_check(self, api_path: str) -> web.Response | None:
        is_iserver = api_path.startswith("/iserver/")
        auth_path = api_path in AUTH_PATHS
        if self.switches.logged_out:
            return self._logged_out(api_path, is_iserver=is_iserver, auth_path=auth_path)
        if is_iserver and not auth_path:
            if self.switches.iserver_down(datetime.now(UTC)):
                return error(503, "Service Unavailable")
            if self.switches.competing and api_path != "/iserver/accounts":
                return error(400, "no bridge")
        return None

    def _logged_out(
        self, api_path: str, *, is_iserver: bool, auth_path: bool
    ) -> web.Response | None:
        """What a logged-out gateway answers, by `logout_style` (a redirect raises)."""
        style = self.switches.logout_style
        if style == "302" and api_path != "/tickle":
            raise web.HTTPFound(LOGIN_PAGE)
        if auth_path:
            return None
        if style == "401":
            return error(401, "not authenticated")
        if style == "no_bridge" and is_iserver:
            return error(400, "no bridge")
        if style == "init_session_first" and is_iserver:
            return error(400, "Init session first")
        if style == "302":
            raise web.HTTPFound(LOGIN_PAGE)
        return None

    # ---- control -------------------------------------------------------------------------------
    async def sim_switches(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            try:
                body = await request.json()
            except ValueError:
                return error(400, "a JSON object is required")
            if not isinstance(body, dict):
                return error(400, "a JSON object is required")
            was_logged_out = self.switches.logged_out
            try:
                unknown = self.switches.update(body)
            except ValueError as exc:
                return error(400, str(exc))
            if was_logged_out and not self.switches.logged_out:
                self.login()
            elif self.switches.logged_out:
                self.logout()
            if unknown:
                return error(400, "unknown switches: " + ", ".join(unknown))
        return web.json_response(self.switches.as_dict())

    async def sim_stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                **self.stats.as_dict(),
                "session": self.session.epoch,
                "model_time": self.model_time(),
                "streams": len(self.session.streams.open),
            }
        )

    async def sim_stats_reset(self, request: web.Request) -> web.Response:
        self.stats.reset()
        return web.json_response({"ok": True})

    async def sim_login(self, request: web.Request) -> web.Response:
        self.login()
        return web.json_response(self.switches.as_dict())

    async def sim_logout(self, request: web.Request) -> web.Response:
        self.logout()
        return web.json_response(self.switches.as_dict())

"""The Client Portal gateway simulator: an aiohttp HTTPS server on loopback.

Serves `simulator.portfolio.SimPortfolio` under /v1/api with the shapes of IBKR's examples:
/tickle, /iserver/auth/status, /iserver/auth/ssodh/init, /iserver/reauthenticate, /logout,
/portfolio/accounts, /portfolio/{acct}/positions/{page} (100 a page, [] past the end),
/portfolio/{acct}/positions/invalidate, /portfolio/{acct}/summary, /portfolio2/{acct}/positions,
/iserver/accounts, /iserver/marketdata/snapshot (pre-flight first, values as strings).

Switches (`state.Switches`) are set in process (`sim.switches.update({...})`) or from another
process: POST /sim/switches with a JSON object; GET /sim/switches, GET /sim/stats,
POST /sim/stats/reset, POST /sim/login, POST /sim/logout.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from simulator.portal.certs import CertPair, generate
from simulator.portal.state import Stats, Switches
from simulator.portfolio import SimPortfolio, SimPosition

log = logging.getLogger(__name__)

API = "/v1/api"
PAGE_SIZE = 100
LOOPBACK = ("127.0.0.1", "::1", "localhost")
GREEK_FIELDS = ("7308", "7309", "7310", "7311")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _err(status: int, message: str) -> web.Response:
    return web.json_response({"error": message, "statusCode": status}, status=status)


class PortalSession:
    """What the gateway remembers for one login."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.portfolio_accounts = False
        self.iserver_accounts = False
        self.snapshot_calls: dict[int, int] = {}
        self.started = time.time()


class PortalSimulator:
    def __init__(
        self,
        portfolio: SimPortfolio,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        cert_dir: Path | None = None,
        switches: Switches | None = None,
    ) -> None:
        if host not in LOOPBACK:
            raise ValueError("the simulator listens on loopback only")
        self.portfolio = portfolio
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
        r = app.router
        for method in ("GET", "POST"):
            r.add_route(method, API + "/tickle", self.tickle)
            r.add_route(method, API + "/iserver/auth/status", self.auth_status)
            r.add_route(method, API + "/iserver/reauthenticate", self.reauthenticate)
        r.add_post(API + "/iserver/auth/ssodh/init", self.ssodh_init)
        r.add_post(API + "/logout", self.api_logout)
        r.add_get(API + "/portfolio/accounts", self.portfolio_accounts)
        r.add_get(API + "/portfolio/subaccounts", self.portfolio_accounts)
        r.add_get(API + "/portfolio/{acct}/positions/{page}", self.positions)
        r.add_post(API + "/portfolio/{acct}/positions/invalidate", self.invalidate)
        r.add_get(API + "/portfolio/{acct}/summary", self.summary)
        r.add_get(API + "/portfolio2/{acct}/positions", self.positions2)
        r.add_get(API + "/iserver/accounts", self.iserver_accounts)
        r.add_get(API + "/iserver/marketdata/snapshot", self.snapshot)
        r.add_get("/sim/switches", self.sim_switches)
        r.add_post("/sim/switches", self.sim_switches)
        r.add_get("/sim/stats", self.sim_stats)
        r.add_post("/sim/stats/reset", self.sim_stats_reset)
        r.add_post("/sim/login", self.sim_login)
        r.add_post("/sim/logout", self.sim_logout)
        r.add_get("/sso/Login", self.sso_login)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path.startswith("/sim/") or path.startswith("/sso/"):
            return await handler(request)
        now = time.monotonic()
        api_path = path.removeprefix(API)
        key = self.stats.record(api_path, now)
        self._new_session_if_needed()
        if self.switches.enforce_pacing:
            broken = self.stats.violates(key, now)
            if broken is not None:
                self.stats.rate_limited += 1
                if self.switches.penalty_s > 0 and broken != "penalty box":
                    self.stats.penalty_until = now + self.switches.penalty_s
                log.info("portal_sim_429 %s (%s)", api_path, broken)
                return web.Response(status=429, text="Too Many Requests")
        if self.switches.slow_s > 0:
            await asyncio.sleep(self.switches.slow_s)
        if (
            request.method == "POST"
            and request.content_length is None
            and "chunked" not in request.headers.get("Transfer-Encoding", "")
        ):
            return web.Response(status=411, text="Length Required")
        if (
            self.switches.auth_get_only
            and request.method == "POST"
            and api_path in ("/iserver/auth/status", "/tickle")
        ):
            return web.Response(status=405, text="Method Not Allowed")
        if self.switches.no_invalidate and api_path.endswith("/positions/invalidate"):
            return web.Response(status=404, text="Not Found")
        if any(api_path.startswith(p) for p in self.switches.missing_endpoints):
            return web.Response(status=404, text="Not Found")
        denied = self._session_check(api_path)
        if denied is not None:
            return denied
        return await handler(request)

    def _session_check(self, api_path: str) -> web.Response | None:
        sw = self.switches
        is_iserver = api_path.startswith("/iserver/")
        auth_path = api_path in (
            "/iserver/auth/status",
            "/tickle",
            "/iserver/auth/ssodh/init",
            "/iserver/reauthenticate",
            "/logout",
        )
        if sw.logged_out:
            style = sw.logout_style
            if style == "302" and api_path != "/tickle":
                raise web.HTTPFound("/sso/Login?forwardTo=22&RL=1&ip2loc=on")
            if auth_path:
                return None
            if style == "401":
                return _err(401, "not authenticated")
            if style == "no_bridge" and is_iserver:
                return _err(400, "no bridge")
            if style == "init_session_first" and is_iserver:
                return _err(400, "Init session first")
            if style == "302":
                raise web.HTTPFound("/sso/Login?forwardTo=22&RL=1&ip2loc=on")
        if is_iserver and not auth_path:
            if sw.iserver_down(datetime.now(UTC)):
                return _err(503, "Service Unavailable")
            if sw.competing and api_path != "/iserver/accounts":
                return _err(400, "no bridge")
        return None

    # ---- session endpoints ---------------------------------------------------------------------
    def _auth_body(self) -> dict[str, Any]:
        sw = self.switches
        authenticated = not sw.logged_out
        return {
            "authenticated": authenticated,
            "competing": sw.competing and authenticated,
            "connected": True,
            "established": authenticated,
            "fail": "",
            "message": "" if authenticated else "not authenticated",
            "MAC": "02:00:00:00:00:01",
            "hardware_info": "00000000|02:00:00:00:00:01",
            "serverInfo": {"serverName": "SimPortal1", "serverVersion": "Build 10.25.0p (sim)"},
        }

    async def auth_status(self, request: web.Request) -> web.Response:
        return web.json_response(self._auth_body())

    async def tickle(self, request: web.Request) -> web.Response:
        if self.switches.logged_out:
            if self.switches.logout_style == "401":
                return _err(401, "not authenticated")
            return web.json_response({"error": "no session"})
        return web.json_response(
            {
                "session": f"sim{self.session.epoch:029d}"[:32],
                "ssoExpires": 460311,
                "collission": False,
                "userId": 123456789,
                "hmds": {"error": "no bridge"},
                "iserver": {"authStatus": self._auth_body()},
            }
        )

    async def ssodh_init(self, request: web.Request) -> web.Response:
        if self.switches.logged_out:
            return _err(401, "not authenticated")
        self.switches.competing = False
        return web.json_response(self._auth_body())

    async def reauthenticate(self, request: web.Request) -> web.Response:
        return web.json_response({"message": "triggered"})

    async def api_logout(self, request: web.Request) -> web.Response:
        self.logout()
        return web.json_response({"status": True})

    async def sso_login(self, request: web.Request) -> web.Response:
        return web.Response(
            text="<html><body>Client Portal login (simulated)</body></html>",
            content_type="text/html",
        )

    # ---- portfolio -----------------------------------------------------------------------------
    def _account_obj(self, acct: str) -> dict[str, Any]:
        return {
            "id": acct,
            "PrepaidCrypto-Z": False,
            "PrepaidCrypto-P": False,
            "brokerageAccess": True,
            "accountId": acct,
            "accountVan": acct,
            "accountTitle": "Simulated Account",
            "displayName": "Simulated Account",
            "accountAlias": None,
            "accountStatus": 1590724800000,
            "currency": "USD",
            "type": "DEMO",
            "tradingType": "STKNOPT",
            "businessType": "IB_SALES",
            "ibEntity": "IBLLC-US",
            "faclient": False,
            "clearingStatus": "O",
            "covestor": False,
            "noClientTrading": False,
            "trackVirtualFXPortfolio": True,
            "acctCustType": "INDIVIDUAL",
            "parent": {
                "mmc": [],
                "accountId": "",
                "isMParent": False,
                "isMChild": False,
                "isMultiplex": False,
            },
            "desc": acct,
        }

    async def portfolio_accounts(self, request: web.Request) -> web.Response:
        self.session.portfolio_accounts = True
        ids = [self.portfolio.account, *self.switches.extra_accounts]
        return web.json_response([self._account_obj(acct) for acct in ids])

    def _check_account(self, request: web.Request) -> web.Response | None:
        if request.match_info["acct"] != self.portfolio.account:
            return _err(400, f"account {request.match_info['acct']} not found")
        if self.switches.require_prerequisites and not self.session.portfolio_accounts:
            return _err(400, "call /portfolio/accounts first")
        return None

    def _option_price(self, pos: SimPosition, t: float) -> float:
        return (
            self.portfolio.quote(pos, t).price
            if pos.is_option
            else self.portfolio.price(pos.symbol, t)
        )

    def _position_row(self, pos: SimPosition, t: float, with_secdef: bool) -> dict[str, Any]:
        acct = self.portfolio.account
        und = self.portfolio.underlyings[pos.symbol]
        price = self._option_price(pos, t)
        mult = pos.multiplier if pos.is_option else 1
        mkt_value = round(pos.quantity * price * mult, 2)
        avg_price = pos.avg_cost / mult if pos.is_option else pos.avg_cost
        avg_cost = pos.avg_cost
        row: dict[str, Any] = {
            "acctId": acct,
            "conid": pos.con_id,
            "contractDesc": self._desc(pos),
            "position": float(pos.quantity),
            "mktPrice": price,
            "mktValue": mkt_value,
            "currency": "USD",
            "avgCost": avg_cost,
            "avgPrice": avg_price,
            "realizedPnl": 0.0,
            "unrealizedPnl": round(mkt_value - pos.quantity * avg_cost, 2),
            "exchs": None,
            "expiry": None,
            "putOrCall": None,
            "multiplier": None,
            "strike": 0.0,
            "exerciseStyle": None,
            "conExchMap": [],
            "assetClass": pos.sec_type,
            "undConid": 0,
            "model": "",
        }
        if not with_secdef:
            return row
        if pos.is_option:
            strike = f"{pos.strike:g}"
            row.update(
                {
                    "expiry": pos.expiry,
                    "putOrCall": pos.right,
                    "multiplier": float(mult),
                    "strike": strike,
                    "undConid": und.con_id,
                    "undSym": pos.symbol,
                    "undComp": f"{pos.symbol} (simulated)",
                    "crossCurrency": False,
                    "ticker": pos.symbol,
                    "type": "",
                    "hasOptions": False,
                    "fullName": f"{pos.symbol} {pos.expiry} {strike} "
                    f"{'Call' if pos.right == 'C' else 'Put'}",
                    "lastTradingDay": pos.expiry,
                }
            )
        else:
            row.update(
                {
                    "multiplier": 0.0,
                    "strike": "0",
                    "undConid": 0,
                    "ticker": pos.symbol,
                    "type": "ETF",
                    "hasOptions": True,
                    "fullName": pos.symbol,
                    "group": "Equity",
                    "sector": "Broad",
                    "sectorGroup": "Index",
                }
            )
        row.update(
            {
                "incrementRules": [{"lowerEdge": 0.0, "increment": 0.01}],
                "displayRule": {
                    "magnification": 0,
                    "displayRuleStep": [{"decimalDigits": 2, "lowerEdge": 0.0, "wholeDigits": 4}],
                },
                "time": 26,
                "chineseName": None,
                "allExchanges": und.exchange,
                "listingExchange": und.exchange,
                "countryCode": "US",
                "name": pos.symbol,
                "isUS": True,
                "isEventContract": False,
                "pageSize": PAGE_SIZE,
            }
        )
        return row

    @staticmethod
    def _desc(pos: SimPosition) -> str:
        if not pos.is_option:
            return pos.symbol
        months = "JANFEBMARAPRMAYJUNJULAUGSEPOCTNOVDEC"
        month = months[(int(pos.expiry[4:6]) - 1) * 3 :][:3]
        return (
            f"{pos.symbol:<6} {month}{pos.expiry[:4]} {pos.strike:g} {pos.right} "
            f"[{pos.local_symbol} {pos.multiplier}]"
        )

    async def positions(self, request: web.Request) -> web.Response:
        bad = self._check_account(request)
        if bad is not None:
            return bad
        try:
            page = int(request.match_info["page"])
        except ValueError:
            return _err(400, "pageId must be an integer")
        if self.switches.ignore_page_id:
            page = 0
        wait = request.query.get("waitForSecDef", "").lower() == "true"
        t = self.model_time()
        rows = (
            self.portfolio.positions[page * PAGE_SIZE : (page + 1) * PAGE_SIZE] if page >= 0 else []
        )
        options_before = sum(1 for p in self.portfolio.positions[: page * PAGE_SIZE] if p.is_option)
        out = []
        for pos in rows:
            with_secdef = True
            if pos.is_option:
                if options_before < self.switches.no_secdef and (
                    not wait or self.switches.no_secdef_always
                ):
                    with_secdef = False
                options_before += 1
            out.append(self._position_row(pos, t, with_secdef))
        return web.json_response(out)

    async def positions2(self, request: web.Request) -> web.Response:
        bad = self._check_account(request)
        if bad is not None:
            return bad
        t = self.model_time()
        out = []
        for pos in self.portfolio.positions:
            price = self._option_price(pos, t)
            mult = pos.multiplier if pos.is_option else 1
            out.append(
                {
                    "assetClass": pos.sec_type,
                    "avgCost": pos.avg_cost,
                    "avgPrice": pos.avg_cost,
                    "conid": str(pos.con_id),
                    "currency": "USD",
                    "description": self._desc(pos),
                    "isLastToLoq": False,
                    "marketPrice": price,
                    "marketValue": pos.quantity * price * mult,
                    "model": "",
                    "position": float(pos.quantity),
                    "realizedPnl": 0.0,
                    "secType": pos.sec_type,
                    "timestamp": int(time.time()),
                    "unrealizedPnl": 0.0,
                }
            )
        return web.json_response(out)

    async def invalidate(self, request: web.Request) -> web.Response:
        bad = self._check_account(request)
        if bad is not None:
            return bad
        return web.json_response({"message": "success"})

    async def summary(self, request: web.Request) -> web.Response:
        bad = self._check_account(request)
        if bad is not None:
            return bad
        t = self.model_time()
        ms = int(time.time() * 1000)
        gross = sum(
            abs(p.quantity * self._option_price(p, t) * (p.multiplier if p.is_option else 1))
            for p in self.portfolio.positions
        )

        def money(amount: float) -> dict[str, Any]:
            return {
                "amount": round(amount, 2),
                "currency": "USD",
                "isNull": False,
                "timestamp": ms,
                "value": None,
                "severity": 0,
            }

        def text(value: str) -> dict[str, Any]:
            return {
                "amount": 0.0,
                "currency": None,
                "isNull": False,
                "timestamp": ms,
                "value": value,
                "severity": 0,
            }

        net_liq = 1_000_000.0 + 0.01 * gross
        return web.json_response(
            {
                "accountcode": text(self.portfolio.account),
                "accountready": text("true"),
                "accounttype": text("INDIVIDUAL"),
                "netliquidation": money(net_liq),
                "netliquidation-s": money(net_liq),
                "availablefunds": money(net_liq * 0.6),
                "availablefunds-s": money(net_liq * 0.6),
                "grosspositionvalue": money(gross),
                "cushion": text("0.62"),
                "highestseverity": text("null"),
                "segmenttitle-s": text("US Securities"),
            }
        )

    # ---- iserver -------------------------------------------------------------------------------
    async def iserver_accounts(self, request: web.Request) -> web.Response:
        if self.switches.competing:
            return web.json_response({})
        self.session.iserver_accounts = True
        acct = self.portfolio.account
        return web.json_response(
            {
                "accounts": [acct],
                "acctProps": {
                    acct: {
                        "hasChildAccounts": False,
                        "supportsCashQty": True,
                        "supportsFractions": True,
                    }
                },
                "aliases": {acct: acct},
                "allowFeatures": {"snapshotRefreshTimeout": 30},
                "chartPeriods": {},
                "groups": ["All"],
                "profiles": [],
                "selectedAccount": acct,
                "serverInfo": {"serverName": "SimPortal1", "serverVersion": "Build 10.25.0p (sim)"},
                "sessionId": f"sim.{self.session.epoch:08x}",
                "isFT": False,
                "isPaper": True,
            }
        )

    def _fmt(self, value: float, digits: int | None = None) -> str:
        if self.switches.quirks and abs(value) >= 1000 and digits is not None:
            return f"{value:,.{digits}f}"
        return repr(float(value)) if digits is None else f"{value:.{digits}f}"

    async def snapshot(self, request: web.Request) -> web.Response:
        if self.switches.require_prerequisites and not self.session.iserver_accounts:
            return _err(400, "Please query /accounts first")
        raw = request.query.get("conids", "")
        try:
            conids = [int(c) for c in raw.split(",") if c.strip()]
        except ValueError:
            return _err(400, "conids must be integers")
        if not conids:
            return _err(400, "conids required")
        t = self.model_time()
        by_con = self.portfolio.by_con_id()
        und_by_con = {u.con_id: u for u in self.portfolio.underlyings.values()}
        sw = self.switches
        out: list[dict[str, Any]] = []
        now_ms = int(time.time() * 1000)
        for con_id in conids:
            calls = self.session.snapshot_calls.get(con_id, 0) + 1
            self.session.snapshot_calls[con_id] = calls
            base: dict[str, Any] = {"conid": con_id, "conidEx": str(con_id)}
            known = con_id in by_con or con_id in und_by_con
            if sw.preflight and calls == 1:
                if not sw.empty_preflight:
                    out.append(base)
                continue
            if not known:
                out.append(base)
                continue
            row = dict(base)
            row.update(
                {
                    "_updated": now_ms,
                    "server_id": f"q{len(out)}",
                    "6119": f"q{len(out)}",
                    "6509": "RpB",
                }
            )
            pos = by_con.get(con_id)
            if pos is not None and pos.is_option:
                quote = self.portfolio.quote(pos, t)
                row["31"] = ("C" if sw.quirks else "") + self._fmt(quote.price, 2)
                row["7635"] = self._fmt(quote.price, 2)
                data_calls = calls - (1 if sw.preflight else 0)
                if data_calls > sw.greeks_missing_calls and con_id not in sw.greeks_missing_conids:
                    row["7308"] = self._fmt(quote.delta)
                    row["7309"] = self._fmt(quote.gamma)
                    row["7310"] = self._fmt(quote.theta)
                    row["7311"] = self._fmt(quote.vega)
                    row["7633"] = f"{quote.iv * 100:.1f}%"
            else:
                symbol = (
                    und_by_con[con_id].symbol if con_id in und_by_con else by_con[con_id].symbol
                )
                price = self.portfolio.price(symbol, t)
                row["31"] = self._fmt(price, 2)
                row["7635"] = self._fmt(price, 2)
            out.append(row)
        return web.json_response(out)

    # ---- control -------------------------------------------------------------------------------
    async def sim_switches(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            try:
                body = await request.json()
            except ValueError:
                return _err(400, "a JSON object is required")
            if not isinstance(body, dict):
                return _err(400, "a JSON object is required")
            was_logged_out = self.switches.logged_out
            try:
                unknown = self.switches.update(body)
            except ValueError as exc:
                return _err(400, str(exc))
            if was_logged_out and not self.switches.logged_out:
                self.login()
            elif self.switches.logged_out:
                self.logout()
            if unknown:
                return _err(400, "unknown switches: " + ", ".join(unknown))
        return web.json_response(self.switches.as_dict())

    async def sim_stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {**self.stats.as_dict(), "session": self.session.epoch, "model_time": self.model_time()}
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

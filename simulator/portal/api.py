"""The simulated gateway's API endpoints under /v1/api: session, portfolio, iserver, market data.

The login may manage several accounts (a `SimPortfolio` each): the portfolio endpoints serve the
account their path names, /iserver/accounts and /portfolio/accounts list every one, and
/iserver/account/pnl/partitioned gives each account's P&L under "{acct}.Core".

The session's faults (logged out, competing, /iserver down) are decided before these run, in the
server's middleware; here are the answers of a gateway that lets the call through.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from aiohttp import web

from simulator.portal.market import SnapshotMaker
from simulator.portal.shapes import (
    PAGE_SIZE,
    account_obj,
    auth_body,
    desc,
    gross_value,
    iserver_accounts_body,
    option_price,
    pnl_entry,
    position_row,
    summary_body,
)
from simulator.portal.state import Switches
from simulator.portfolio import SimPortfolio

if TYPE_CHECKING:
    from simulator.portal.server import PortalSimulator

API = "/v1/api"


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message, "statusCode": status}, status=status)


class PortalApi:
    """The endpoints' handlers, over the simulator's accounts, switches and session."""

    def __init__(self, sim: PortalSimulator) -> None:
        self.sim = sim

    @property
    def switches(self) -> Switches:
        return self.sim.switches

    def add_routes(self, r: web.UrlDispatcher) -> None:
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
        r.add_get(API + "/iserver/account/pnl/partitioned", self.pnl_partitioned)
        r.add_get(API + "/iserver/marketdata/snapshot", self.snapshot)
        r.add_post(API + "/iserver/marketdata/unsubscribe", self.unsubscribe)
        r.add_get(API + "/iserver/marketdata/unsubscribeall", self.unsubscribe_all)
        r.add_get("/sso/Login", self.sso_login)

    # ---- session endpoints ---------------------------------------------------------------------
    async def auth_status(self, request: web.Request) -> web.Response:
        return web.json_response(auth_body(self.switches))

    async def tickle(self, request: web.Request) -> web.Response:
        if self.switches.logged_out:
            if self.switches.logout_style == "401":
                return error(401, "not authenticated")
            return web.json_response({"error": "no session"})
        return web.json_response(
            {
                "session": f"sim{self.sim.session.epoch:029d}"[:32],
                "ssoExpires": 460311,
                "collission": False,
                "userId": 123456789,
                "hmds": {"error": "no bridge"},
                "iserver": {"authStatus": auth_body(self.switches)},
            }
        )

    async def ssodh_init(self, request: web.Request) -> web.Response:
        if self.switches.logged_out:
            return error(401, "not authenticated")
        self.switches.competing = False
        return web.json_response(auth_body(self.switches))

    async def reauthenticate(self, request: web.Request) -> web.Response:
        return web.json_response({"message": "triggered"})

    async def api_logout(self, request: web.Request) -> web.Response:
        self.sim.logout()
        return web.json_response({"status": True})

    async def sso_login(self, request: web.Request) -> web.Response:
        return web.Response(
            text="<html><body>Client Portal login (simulated)</body></html>",
            content_type="text/html",
        )

    async def portfolio_accounts(self, request: web.Request) -> web.Response:
        self.sim.session.portfolio_accounts = True
        ids = dict.fromkeys([*self.sim.accounts, *self.switches.extra_accounts])
        return web.json_response([account_obj(acct) for acct in ids])

    def _book(self, request: web.Request) -> SimPortfolio | web.Response:
        """The book of the account the path names, or the gateway's refusal."""
        book = self.sim.books.get(request.match_info["acct"])
        if book is None:
            return error(400, f"account {request.match_info['acct']} not found")
        if self.switches.require_prerequisites and not self.sim.session.portfolio_accounts:
            return error(400, "call /portfolio/accounts first")
        return book

    async def positions(self, request: web.Request) -> web.Response:
        book = self._book(request)
        if isinstance(book, web.Response):
            return book
        try:
            page = int(request.match_info["page"])
        except ValueError:
            return error(400, "pageId must be an integer")
        if self.switches.ignore_page_id:
            page = 0
        wait = request.query.get("waitForSecDef", "").lower() == "true"
        t = self.sim.model_time()
        rows = book.positions[page * PAGE_SIZE : (page + 1) * PAGE_SIZE] if page >= 0 else []
        options_before = sum(1 for p in book.positions[: page * PAGE_SIZE] if p.is_option)
        out = []
        for pos in rows:
            with_secdef = True
            if pos.is_option:
                if options_before < self.switches.no_secdef and (
                    not wait or self.switches.no_secdef_always
                ):
                    with_secdef = False
                options_before += 1
            out.append(position_row(book, pos, t, with_secdef))
        return web.json_response(out)

    async def positions2(self, request: web.Request) -> web.Response:
        book = self._book(request)
        if isinstance(book, web.Response):
            return book
        t = self.sim.model_time()
        out = []
        for pos in book.positions:
            price = option_price(book, pos, t)
            mult = pos.multiplier if pos.is_option else 1
            out.append(
                {
                    "assetClass": pos.sec_type,
                    "avgCost": pos.avg_cost,
                    "avgPrice": pos.avg_cost,
                    "conid": str(pos.con_id),
                    "currency": "USD",
                    "description": desc(pos),
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
        book = self._book(request)
        if isinstance(book, web.Response):
            return book
        return web.json_response({"message": "success"})

    async def summary(self, request: web.Request) -> web.Response:
        book = self._book(request)
        if isinstance(book, web.Response):
            return book
        gross = gross_value(book, self.sim.model_time())
        return web.json_response(summary_body(book.account, gross, int(time.time() * 1000)))

    # ---- iserver -------------------------------------------------------------------------------
    async def iserver_accounts(self, request: web.Request) -> web.Response:
        if self.switches.competing:
            return web.json_response({})
        self.sim.session.iserver_accounts = True
        return web.json_response(iserver_accounts_body(self.sim.accounts, self.sim.session.epoch))

    async def pnl_partitioned(self, request: web.Request) -> web.Response:
        """Each account's P&L under "{acct}.Core" (`shapes.pnl_entry`)."""
        if self.switches.require_prerequisites and not self.sim.session.iserver_accounts:
            return error(400, "Please query /accounts first")
        t = self.sim.model_time()
        upnl = {f"{acct}.Core": pnl_entry(book, t) for acct, book in self.sim.books.items()}
        return web.json_response({"upnl": upnl})

    async def snapshot(self, request: web.Request) -> web.Response:
        if self.switches.require_prerequisites and not self.sim.session.iserver_accounts:
            return error(400, "Please query /accounts first")
        raw = request.query.get("conids", "")
        try:
            conids = [int(c) for c in raw.split(",") if c.strip()]
        except ValueError:
            return error(400, "conids must be integers")
        if not conids:
            return error(400, "conids required")
        session = self.sim.session
        maker = SnapshotMaker(self.sim.market(), self.switches, session.streams, self.sim.stats)
        return web.json_response(maker.rows(conids, self.sim.model_time()))

    async def unsubscribe(self, request: web.Request) -> web.Response:
        """POST {"conid": N}: 404 when no stream of N is open (as the gateway answers)."""
        try:
            body = await request.json()
            con_id = int(body["conid"])
        except (ValueError, KeyError, TypeError):
            return error(400, "a JSON body with an integer conid is required")
        if not self.sim.session.streams.unsubscribe(con_id):
            return error(404, f"no market data subscription for conid {con_id}")
        self.sim.stats.unsubscribed += 1
        return web.json_response({"success": True})

    async def unsubscribe_all(self, request: web.Request) -> web.Response:
        self.sim.stats.unsubscribed += self.sim.session.streams.unsubscribe_all()
        return web.json_response({"unsubscribed": True})

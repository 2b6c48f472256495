"""The PORTAL transport: positions and Greeks from the Client Portal Web API gateway.

Session set-up (`connect`, and again whenever the session comes back): POST
/iserver/auth/status; GET /portfolio/accounts (once per session: its pacing is 1 per 5 s) and the
accounts to read (IB_ACCOUNT: one, a list or ALL; or the only one: `accounts.choose_accounts`);
GET /iserver/accounts (needed before market data); then a pre-flight snapshot of every contract
(the first snapshot of a conid opens its stream and carries no values).

Each tick (`snapshot`): /tickle about every 60 s; every account's positions
(`positions.PositionBook`) refreshed every `POSITIONS_REFRESH_S`; each account's summary every
`SUMMARY_REFRESH_S` and their P&L every `PNL_REFRESH_S` (`accounts.AccountFigures`); the market
data of the options and their underlyings (`market_data.MarketData`), one stream per conid
however many accounts hold it, within the line budget (`lines.PortalLines`: one round per tick,
or rounds in a background job while rotating).

The link in PORTAL mode is the gateway session, and HTTP has no connection to keep: when a call
says the session is gone (401, a redirect to the login page, 400 "no bridge" / "Init session
first", `competing: true`) the state becomes UNAUTHENTICATED with the reason (one event), the
tick raises TransportError (no row), and each later tick probes /iserver/auth/status once: rows
resume by themselves when the session is back. An unreachable gateway is DISCONNECTED and probed
the same way. Only a deliberate `disconnect()` stops the probing until the next `connect()`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import datetime

from collector.portal.accounts import AccountFigures, choose_accounts
from collector.portal.client import (
    BACKGROUND,
    AuthProblem,
    BadAnswer,
    GatewayDown,
    PortalClient,
    PortalError,
    RateLimited,
)
from collector.portal.jobs import Jobs
from collector.portal.lines import PortalLines
from collector.portal.market_data import MarketData
from collector.portal.pacing import Pacer
from collector.portal.parsers import parse_auth_status
from collector.portal.positions import PositionBook
from collector.portal.session import (
    AccountChoiceError,
    auth_status,
    iserver_accounts,
    portfolio_accounts,
    post_or_get,
)
from collector.transport import LinkEvent, LinkState, Snapshot, TransportError
from shared.clock import age_s, utcnow
from shared.config import Settings

log = logging.getLogger(__name__)

TICKLE_EVERY_S = 60.0
POSITIONS_REFRESH_S = 5.0
SUMMARY_REFRESH_S = 60.0
PNL_REFRESH_S = 6.0  # IBKR allows the P&L call once per 5 s


class PortalTransport:
    mode = "PORTAL"

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = utcnow,
        pacer: Pacer | None = None,
        client: PortalClient | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.client = client or PortalClient(
            settings.ibkr_gateway_url,
            verify=settings.ibkr_tls_verify,
            ca_file=settings.ibkr_ca_file,
            pacer=pacer,
            timeout_s=max(2.0, min(settings.ib_connect_timeout_s, 30.0)),
        )
        self.events: asyncio.Queue[LinkEvent] = asyncio.Queue()
        self._state = LinkState.DISCONNECTED
        self._reason = ""
        self.accounts: list[str] = []
        self.account = ""  # the accounts, comma-joined
        self._session_ready = False
        self._portfolio_accounts_done = False
        self._last_tickle: datetime | None = None
        self.book = PositionBook(self.client)
        self.market = MarketData(self.client)
        self.lines = PortalLines(self.client, self.market, self.book, settings, self._data_event)
        self._positions_at: datetime | None = None
        self._summary_at: datetime | None = None
        self._pnl_at: datetime | None = None
        self._jobs = Jobs()
        self.figures = AccountFigures(self.client)
        self.authenticated = False
        self.competing = False
        self._wanted = False  # connect() called and not disconnect()

    # ---- Transport protocol ----------------------------------------------------------------
    @property
    def state(self) -> LinkState:
        return self._state

    def status(self) -> Mapping[str, str]:
        now = self.clock()
        keepalive = age_s(self._last_tickle, now)
        out = {
            "authenticated": str(self.authenticated).lower(),
            "competing": str(self.competing).lower(),
            "keepalive_age_s": "" if keepalive is None else f"{keepalive:.0f}",
            "requests": str(self.client.requests),
            "rate_limited": str(self.client.pacer.rate_limited),
            **self.lines.status(),
            **self.figures.status(self.accounts, now),
        }
        return out

    async def connect(self) -> None:
        """Open the HTTP session and set up the gateway session (one bounded attempt).

        Raises TransportError when the gateway cannot be reached or no account can be chosen;
        a gateway that answers but is not logged in leaves the state UNAUTHENTICATED instead
        (and later ticks notice when it is).
        """
        self._wanted = True
        if not self.settings.ibkr_tls_verify and not self.client.is_open:
            log.warning(
                "portal_tls_unverified IBKR_TLS_VERIFY=0: the gateway's certificate is "
                "not checked; use it only for a gateway on loopback"
            )
        self.client.open()
        self._set_state(LinkState.CONNECTING, "connecting to the Client Portal gateway")
        try:
            await self._establish()
        except GatewayDown as exc:
            self._set_state(LinkState.DISCONNECTED, str(exc), "ERROR")
            raise
        except AccountChoiceError as exc:
            # a configuration error: no probing until the watchdog (or an operator) reconnects
            self._wanted = False
            self._set_state(LinkState.DISCONNECTED, str(exc), "ERROR")
            raise
        except PortalError as exc:  # an answer we cannot use: later ticks probe again
            self._set_state(LinkState.DISCONNECTED, str(exc), "ERROR")
            raise

    async def disconnect(self) -> None:
        """Deliberate: close the HTTP session; not reported as a drop."""
        self._wanted = False
        self._session_ready = False
        self._state = LinkState.DISCONNECTED
        self._reason = "disconnected on request"
        await self._jobs.stop()
        await self.client.close()

    async def reauthenticate(self) -> None:
        """The watchdog's `reauth`: POST /iserver/auth/ssodh/init, then /iserver/accounts."""
        self._wanted = True
        self.client.open()
        try:
            await self.client.post("/iserver/auth/ssodh/init", {"publish": True, "compete": True})
        except AuthProblem as exc:
            self._auth_lost(str(exc))
            raise
        except GatewayDown as exc:
            self._set_state(LinkState.DISCONNECTED, str(exc), "ERROR")
            raise
        self._session_ready = False
        await self._establish()

    async def snapshot(self, now: datetime) -> Snapshot:
        if not self._wanted or not self.client.is_open:
            raise TransportError("not connected (waiting for a reconnect command)")
        try:
            if not self._session_ready:
                await self._establish()
                if not self._session_ready:
                    raise TransportError(self._reason or "session not ready")
            self._background(now)
            if not self.book.rows:
                # nothing to price without positions: wait for the refresh (shielded, so a
                # tick cut at its deadline does not throw the pages already read away)
                task = self._jobs.get("positions")
                if task is not None:
                    await asyncio.shield(task)
            self._jobs.reap()
            await self._market_data(now)
            if not self.lines.rotating:
                await self.market.late_greeks(
                    self.book,
                    now,
                    lambda: self.lines.round(now),
                    poll_interval_s=self.settings.poll_interval_s,
                    grace_s=self.settings.greeks_grace_s,
                )
            self._jobs.reap()
        except AuthProblem as exc:
            self._auth_lost(await self._diagnose(str(exc)))
            raise TransportError(self._reason) from exc
        except GatewayDown as exc:
            self._session_ready = False
            self._set_state(LinkState.DISCONNECTED, str(exc), "ERROR")
            raise TransportError(str(exc)) from exc
        except (RateLimited, BadAnswer) as exc:
            raise TransportError(str(exc)) from exc
        except AccountChoiceError as exc:
            self._wanted = False
            self._set_state(LinkState.DISCONNECTED, str(exc), "ERROR")
            raise
        self.lines.stamp_waiting(now)
        return self.market.build(
            self.book.rows,
            self.accounts,
            now,
            max_age_s=self.settings.greeks_max_age_s,
            pnl=self.figures.pnl(self.accounts, now),
        )

    # ---- state -------------------------------------------------------------------------------
    def _set_state(self, state: LinkState, reason: str, status: str = "INFO") -> None:
        if state == self._state:
            # one event per change of state; the reason of a lasting state may drift
            # (401, then "not authenticated" from the probe) without a new api_logs row
            if state != LinkState.CONNECTING:
                self._reason = reason
            return
        self._state = state
        self._reason = reason
        code = None
        if state == LinkState.UNAUTHENTICATED:
            status = "WARN" if status == "INFO" else status
        log.info("portal_link %s: %s", state, reason)
        self.events.put_nowait(
            LinkEvent(state, self.clock(), reason, status, code, dict(self.status()))
        )

    def _data_event(self, status: str, reason: str) -> None:
        """Something about the market data the audit trail must hear (the state is unchanged)."""
        log.log(logging.INFO if status == "INFO" else logging.WARNING, "portal_lines %s", reason)
        self.events.put_nowait(
            LinkEvent(self._state, self.clock(), reason, status, None, dict(self.status()))
        )

    def _auth_lost(self, reason: str) -> None:
        self._session_ready = False
        self._portfolio_accounts_done = False
        self.authenticated = False
        self._set_state(LinkState.UNAUTHENTICATED, reason, "WARN")

    # ---- session -----------------------------------------------------------------------------
    async def _establish(self) -> None:
        try:
            status = await auth_status(self.client)
        except AuthProblem as exc:
            self._auth_lost(str(exc))
            return
        self.authenticated = status.authenticated
        self.competing = status.competing
        if not status.usable:
            self._auth_lost(status.reason())
            return
        try:
            if not self._portfolio_accounts_done:
                offered = await portfolio_accounts(self.client, self.settings.ib_account)
                self.accounts = choose_accounts(self.settings.ib_account, offered)
                self.account = ",".join(self.accounts)
                self._portfolio_accounts_done = True
            iserver = await iserver_accounts(self.client)
        except AuthProblem as exc:
            self._auth_lost(str(exc))
            return
        if isinstance(iserver, Mapping) and not iserver:
            # what the gateway answers while another session holds the brokerage session
            self._auth_lost(
                "brokerage session not ready (/iserver/accounts returned {}; "
                "another session may be competing)"
            )
            return
        await self._jobs.stop()  # jobs of the previous session may still fail late
        self._session_ready = True
        self.market.subscribed.clear()  # a new brokerage session: every stream is opened again
        self.lines.forget()
        self._positions_at = None
        which = "accounts" if len(self.accounts) > 1 else "account"
        self._set_state(LinkState.CONNECTED, f"session ready, {which} {self.account}")
        now = self.clock()
        self._last_tickle = self._last_tickle or now
        # the positions are read by a background job (shielded: if this call is cut by a
        # timeout or a tick deadline, the job goes on and the next tick waits for the same
        # one instead of starting over: a large account still comes up)
        self._background(now)
        task = self._jobs.get("positions")
        token = BACKGROUND.set(True)  # leave room in the request window for the next tick
        try:
            if task is not None:
                await asyncio.shield(task)
            self._jobs.reap()
            await self._market_data(now)  # the pre-flight call
        except (RateLimited, BadAnswer) as exc:
            log.warning("portal_preflight_failed %s", exc)
        except AuthProblem as exc:
            self._auth_lost(str(exc))
        finally:
            BACKGROUND.reset(token)

    async def _diagnose(self, symptom: str) -> str:
        """Why a data call was refused: the auth status says more than "no bridge"."""
        if self._state == LinkState.UNAUTHENTICATED:
            return symptom
        try:
            status = await auth_status(self.client)
        except PortalError:
            return symptom
        self.authenticated = status.authenticated
        self.competing = status.competing
        if status.usable:
            return symptom
        return f"{status.reason()} ({symptom})"

    # ---- background work (`jobs.Jobs`) --------------------------------------------------
    def _background(self, now: datetime) -> None:
        """Start what is due and not running: /tickle, the positions, the summary, the P&L."""
        self._jobs.start_due(
            now,
            {
                "tickle": (self._last_tickle, TICKLE_EVERY_S, self._keepalive),
                "positions": (self._positions_at, POSITIONS_REFRESH_S, self._refresh_positions),
                "summary": (self._summary_at, SUMMARY_REFRESH_S, self._refresh_summary),
                "pnl": (self._pnl_at, PNL_REFRESH_S, self._refresh_pnl),
            },
        )

    async def _keepalive(self, now: datetime) -> None:
        body = await post_or_get(self.client, "/tickle")
        self._last_tickle = now
        if isinstance(body, Mapping) and isinstance(body.get("iserver"), Mapping):
            status = parse_auth_status(body)
            self.authenticated = status.authenticated
            self.competing = status.competing
            if not status.usable:
                raise AuthProblem(status.reason())

    # ---- the jobs' data --------------------------------------------------------------------
    async def _refresh_positions(self, now: datetime) -> None:
        await self.book.refresh(self.accounts, now)
        self._positions_at = now
        self.market.forget_except(set(self.book.wanted_conids()))

    async def _refresh_summary(self, now: datetime) -> None:
        self._summary_at = now
        await self.figures.refresh_summary(self.accounts)

    async def _refresh_pnl(self, now: datetime) -> None:
        self._pnl_at = now
        await self.figures.refresh_pnl(self.accounts, now)

    async def _market_data(self, now: datetime) -> None:
        """The tick's round while the book fits the lines; else the rounds' background job."""
        if not self.lines.rotating:
            await self.lines.round(now)
        if self.lines.rotating and "lines" not in self._jobs:
            self._jobs.start("lines", lambda _: self.lines.run(self.clock), now)

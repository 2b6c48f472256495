"""The PORTAL transport: positions and Greeks from the Client Portal Web API gateway.

Session set-up (`connect`, and again whenever the session comes back): POST
/iserver/auth/status; GET /portfolio/accounts (once per session: its pacing is 1 per 5 s) and the
account (IB_ACCOUNT, or the only one); GET /iserver/accounts (needed before market data); then a
pre-flight snapshot of every contract (the first snapshot of a conid opens its stream and carries
no values).

Each tick (`snapshot`): /tickle about every 60 s; the positions, paged from page 0 until an empty
page, refreshed every `POSITIONS_REFRESH_S`; /portfolio/{acct}/summary every `SUMMARY_REFRESH_S`;
one snapshot call per 100 conids with fields 31, 7635, 7308-7311, 7633, for the options and for
their underlyings (the underlying price comes from the underlying's own conid).

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
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from collector.portal.client import (
    BACKGROUND,
    AuthProblem,
    BadAnswer,
    GatewayDown,
    PortalClient,
    PortalError,
    RateLimited,
)
from collector.portal.pacing import Pacer
from collector.portal.parsers import (
    SNAPSHOT_FIELDS,
    PortalPosition,
    SnapshotRow,
    Unreadable,
    parse_auth_status,
    parse_portfolio_accounts,
    parse_position,
    parse_snapshot_row,
    summary_amount,
)
from collector.transport import LinkEvent, LinkState, PositionData, Snapshot, TransportError
from shared.clock import age_s, utcnow
from shared.config import Settings
from shared.names import OPTION_TYPES, STOCK_TYPES

log = logging.getLogger(__name__)

TICKLE_EVERY_S = 60.0
POSITIONS_REFRESH_S = 5.0
SUMMARY_REFRESH_S = 60.0
SECDEF_RETRY_S = 60.0
SNAPSHOT_CHUNK = 100
MAX_PAGES = 200
PAGE_SIZE = 100
LATE_GREEKS_SHARE = 0.4
LATE_GREEKS_MAX_S = 2.0
LATE_GREEKS_PAUSE_S = 0.25


class AccountChoiceError(TransportError):
    """No account can be chosen (several and IB_ACCOUNT empty, or IB_ACCOUNT not offered)."""


@dataclass(slots=True)
class _Field:
    value: float
    at: datetime


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
        self.account = ""
        self._session_ready = False
        self._portfolio_accounts_done = False
        self._last_tickle: datetime | None = None
        self._positions: list[PortalPosition] = []
        self._positions_at: datetime | None = None
        self._secdef: dict[int, PortalPosition] = {}
        self._secdef_retry_at: datetime | None = None
        self._summary_at: datetime | None = None
        self._subscribed: dict[int, datetime] = {}
        self._fields: dict[int, dict[str, _Field]] = {}
        self._prices: dict[int, float] = {}
        self._problems: frozenset[str] = frozenset()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.extras: dict[str, str] = {}
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
        }
        out.update(self.extras)
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
        await self._stop_background()
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
            if not self._positions:
                # nothing to price without positions: wait for the refresh (shielded, so a
                # tick cut at its deadline does not throw the pages already read away)
                task = self._tasks.get("positions")
                if task is not None:
                    await asyncio.shield(task)
            self._reap()
            await self._market_data(now)
            await self._late_greeks(now)
            self._reap()
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
        return self._build(now)

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

    def _auth_lost(self, reason: str) -> None:
        self._session_ready = False
        self._portfolio_accounts_done = False
        self.authenticated = False
        self._set_state(LinkState.UNAUTHENTICATED, reason, "WARN")

    # ---- session -----------------------------------------------------------------------------
    async def _establish(self) -> None:
        try:
            status = parse_auth_status(await self._post_or_get("/iserver/auth/status"))
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
                self.account = self._choose_account(await self._portfolio_accounts())
                self._portfolio_accounts_done = True
            iserver = await self._iserver_accounts()
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
        await self._stop_background()  # jobs of the previous session may still fail late
        self._session_ready = True
        self._subscribed.clear()  # a new brokerage session: every stream is opened again
        self._positions_at = None
        self._set_state(LinkState.CONNECTED, f"session ready, account {self.account}")
        now = self.clock()
        self._last_tickle = self._last_tickle or now
        # the positions are read by a background job (shielded: if this call is cut by a
        # timeout or a tick deadline, the job goes on and the next tick waits for the same
        # one instead of starting over: a large account still comes up)
        self._background(now)
        task = self._tasks.get("positions")
        token = BACKGROUND.set(True)  # leave room in the request window for the next tick
        try:
            if task is not None:
                await asyncio.shield(task)
            self._reap()
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
            status = parse_auth_status(await self._post_or_get("/iserver/auth/status"))
        except PortalError:
            return symptom
        self.authenticated = status.authenticated
        self.competing = status.competing
        if status.usable:
            return symptom
        return f"{status.reason()} ({symptom})"

    async def _portfolio_accounts(self) -> list[str]:
        try:
            return parse_portfolio_accounts(await self.client.get("/portfolio/accounts"))
        except BadAnswer as exc:
            if not self.settings.ib_account:
                raise
            log.warning("portal_accounts_unavailable %s; using IB_ACCOUNT", exc)
            return []

    async def _iserver_accounts(self) -> object:
        """Required before market data; a gateway without it (4xx) is tolerated."""
        try:
            return await self.client.get("/iserver/accounts")
        except BadAnswer as exc:
            log.warning("portal_iserver_accounts_unavailable %s", exc)
            return None

    def _choose_account(self, accounts: list[str]) -> str:
        wanted = self.settings.ib_account
        if wanted:
            if accounts and wanted not in accounts:
                raise AccountChoiceError(
                    f"IB_ACCOUNT={wanted} is not among the gateway's accounts: "
                    + ", ".join(accounts)
                )
            return wanted
        if len(accounts) == 1:
            return accounts[0]
        if not accounts:
            raise AccountChoiceError("/portfolio/accounts returned no account")
        raise AccountChoiceError(
            "several accounts (" + ", ".join(accounts) + "): set IB_ACCOUNT to one of them"
        )

    async def _post_or_get(self, path: str) -> object:
        """POST (the spec's method); a gateway that answers 405 to it is asked with GET."""
        try:
            return await self.client.post(path)
        except BadAnswer as exc:
            if exc.status != 405:
                raise
            return await self.client.get(path)

    # ---- background work -----------------------------------------------------------------
    def _background(self, now: datetime) -> None:
        """Start what is due and not running: /tickle, the positions, the summary.

        They run beside the ticks, so a slow gateway delays only them, and a tick cut at its
        deadline does not restart them from scratch; their failures surface in `_reap`.
        """
        due = {
            "tickle": (self._last_tickle, TICKLE_EVERY_S, self._keepalive),
            "positions": (self._positions_at, POSITIONS_REFRESH_S, self._refresh_positions),
            "summary": (self._summary_at, SUMMARY_REFRESH_S, self._refresh_summary),
        }
        for name, (last, every_s, job) in due.items():
            age = age_s(last, now)
            if name in self._tasks or (age is not None and age < every_s):
                continue
            self._tasks[name] = asyncio.create_task(_in_background(job(now)), name=f"portal-{name}")

    def _reap(self) -> None:
        """Forget finished background jobs; raise the first that lost the session or link."""
        failure: BaseException | None = None
        for name, task in list(self._tasks.items()):
            if not task.done():
                continue
            del self._tasks[name]
            if task.cancelled():
                continue
            exc = task.exception()
            if isinstance(exc, RateLimited | BadAnswer):
                # passing trouble: the job runs again when next due, the tick goes on
                log.warning("portal_background_failed %s: %s", name, exc)
            elif exc is not None and failure is None:
                failure = exc  # session lost or gateway down: the link state must change
            elif exc is not None:
                log.info("portal_background_failed %s: %r", name, exc)
        if failure is not None:
            raise failure

    async def _stop_background(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _keepalive(self, now: datetime) -> None:
        body = await self._post_or_get("/tickle")
        self._last_tickle = now
        if isinstance(body, Mapping) and isinstance(body.get("iserver"), Mapping):
            status = parse_auth_status(body)
            self.authenticated = status.authenticated
            self.competing = status.competing
            if not status.usable:
                raise AuthProblem(status.reason())

    # ---- positions ---------------------------------------------------------------------------
    async def _fetch_positions(self, wait_secdef: bool) -> list[PortalPosition]:
        params = {"waitForSecDef": "true"} if wait_secdef else None
        rows: list[PortalPosition] = []
        unreadable: list[str] = []
        seen: set[int] = set()
        for page in range(MAX_PAGES):
            body = await self.client.get(f"/portfolio/{self.account}/positions/{page}", params)
            if not isinstance(body, list):
                raise BadAnswer(f"positions page {page} is not a list")
            if not body:
                break
            fresh = 0
            for raw in body:
                parsed = parse_position(raw)
                if isinstance(parsed, Unreadable):
                    unreadable.append(parsed.reason)
                elif parsed.con_id not in seen:
                    seen.add(parsed.con_id)
                    rows.append(parsed)
                    fresh += 1
            if fresh == 0 and page > 0:
                # a gateway that ignores pageId serves page 0 again: stop, do not count twice
                log.warning("portal_paging_repeats page %d repeats earlier rows: stopped", page)
                break
        self._report_problems(unreadable, rows)
        return rows

    def _report_problems(self, unreadable: list[str], rows: list[PortalPosition]) -> None:
        problems = set(unreadable)
        for row in rows:
            problems.update(f"{row.description}: {p}" for p in row.problems)
        frozen = frozenset(problems)
        if frozen != self._problems and frozen:
            log.warning("portal_position_problems %s", "; ".join(sorted(frozen))[:2000])
        self._problems = frozen

    async def _refresh_positions(self, now: datetime) -> None:
        rows = await self._fetch_positions(wait_secdef=False)
        if any(not r.has_secdef and r.con_id not in self._secdef for r in rows):
            retry_age = age_s(self._secdef_retry_at, now)
            if retry_age is None or retry_age >= SECDEF_RETRY_S:
                self._secdef_retry_at = now
                log.info("portal_secdef_missing asking again with waitForSecDef=true")
                try:
                    await self.client.post(f"/portfolio/{self.account}/positions/invalidate")
                    rows = await self._fetch_positions(wait_secdef=True)
                except BadAnswer as exc:  # a gateway without these: keep what we have
                    log.warning("portal_secdef_retry_failed %s", exc)
        merged = []
        for row in rows:
            if row.has_secdef:
                self._secdef[row.con_id] = row
                merged.append(row)
            elif row.con_id in self._secdef:
                known = self._secdef[row.con_id]
                merged.append(
                    PortalPosition(
                        row.con_id,
                        known.symbol,
                        known.sec_type or row.sec_type,
                        row.quantity,
                        known.multiplier,
                        known.und_con_id,
                        known.description,
                        True,
                        row.mkt_price,
                    )
                )
            else:
                merged.append(row)
        self._positions = merged
        self._positions_at = now
        # forget the market data of contracts no longer held (no growth over months)
        wanted = set(self._wanted_conids())
        for table in (self._fields, self._prices, self._subscribed):
            for con_id in [c for c in table if c not in wanted]:
                del table[con_id]
        for con_id in [c for c in self._secdef if c not in wanted]:
            del self._secdef[con_id]

    async def _refresh_summary(self, now: datetime) -> None:
        self._summary_at = now
        try:
            body = await self.client.get(f"/portfolio/{self.account}/summary")
        except BadAnswer as exc:
            log.info("portal_summary_unavailable %s", exc)
            return
        for key, name in (
            ("netliquidation", "net_liquidation"),
            ("availablefunds", "available_funds"),
        ):
            value = summary_amount(body, key)
            if value is not None:
                self.extras[name] = repr(value)

    # ---- market data -------------------------------------------------------------------------
    def _wanted_conids(self) -> list[int]:
        conids: dict[int, None] = {}
        for pos in self._positions:
            if pos.quantity == 0:
                continue
            if pos.sec_type in OPTION_TYPES:
                conids[pos.con_id] = None
            if pos.und_con_id:
                conids[pos.und_con_id] = None
        return list(conids)

    async def _market_data(self, now: datetime) -> None:
        """One snapshot call per SNAPSHOT_CHUNK conids, the calls side by side."""
        conids = self._wanted_conids()
        chunks = [conids[i : i + SNAPSHOT_CHUNK] for i in range(0, len(conids), SNAPSHOT_CHUNK)]
        for con_id in conids:
            self._subscribed.setdefault(con_id, now)
        results = await asyncio.gather(
            *(self._snapshot_chunk(c) for c in chunks), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
            for row in result:
                self._remember(row, now)

    async def _snapshot_chunk(self, chunk: list[int]) -> list[SnapshotRow]:
        body = await self.client.get(
            "/iserver/marketdata/snapshot",
            {"conids": ",".join(map(str, chunk)), "fields": ",".join(SNAPSHOT_FIELDS)},
        )
        if not isinstance(body, list):
            raise BadAnswer("snapshot answer is not a list")
        rows = []
        for raw in body:
            parsed = parse_snapshot_row(raw)
            if isinstance(parsed, Unreadable):
                log.debug("portal_snapshot_row_unreadable %s", parsed.reason)
                continue
            rows.append(parsed)
        return rows

    async def _late_greeks(self, now: datetime) -> None:
        """Greeks arrive late after a pre-flight: ask again within this tick, briefly.

        Only while some option without any Greeks yet is inside its grace period, and for at
        most `LATE_GREEKS_SHARE` of the tick interval (bounded by LATE_GREEKS_MAX_S).
        """
        budget_s = min(LATE_GREEKS_MAX_S, LATE_GREEKS_SHARE * self.settings.poll_interval_s)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget_s
        for _ in range(20):
            waiting = [
                p.con_id
                for p in self._positions
                if p.quantity != 0
                and p.sec_type in OPTION_TYPES
                and len(self._fields.get(p.con_id, {})) < 4
                and (age_s(self._subscribed.get(p.con_id), now) or 0.0)
                < self.settings.greeks_grace_s
            ]
            if not waiting or loop.time() + LATE_GREEKS_PAUSE_S > deadline:
                return
            await asyncio.sleep(LATE_GREEKS_PAUSE_S)
            await self._market_data(now)

    def _remember(self, row: SnapshotRow, now: datetime) -> None:
        if row.preflight:
            return
        fields = self._fields.setdefault(row.con_id, {})
        for name, value in (
            ("delta", row.delta),
            ("gamma", row.gamma),
            ("vega", row.vega),
            ("theta", row.theta),
        ):
            if value.value is not None:
                fields[name] = _Field(value.value, now)
        problems = row.problems()
        if problems:
            log.debug("portal_snapshot_values_unreadable conid %s: %s", row.con_id, problems)
        price = row.price
        if price is not None and price > 0:
            self._prices[row.con_id] = price

    # ---- the Snapshot ----------------------------------------------------------------------
    def _build(self, now: datetime) -> Snapshot:
        prices: dict[str, float] = {}
        for pos in self._positions:
            if pos.und_con_id and pos.und_con_id in self._prices and pos.symbol:
                prices.setdefault(pos.symbol, self._prices[pos.und_con_id])
        for pos in self._positions:  # fallback: the stock position's own market price
            if pos.sec_type in STOCK_TYPES and pos.symbol and pos.mkt_price and pos.mkt_price > 0:
                prices.setdefault(pos.symbol, pos.mkt_price)
        out: list[PositionData] = []
        for pos in self._positions:
            fields = self._fields.get(pos.con_id, {})
            values = {
                name: fields[name] for name in ("delta", "gamma", "vega", "theta") if name in fields
            }
            greeks_at = min((f.at for f in values.values()), default=None)
            if len(values) < 4:
                greeks_at = None
            out.append(
                PositionData(
                    con_id=pos.con_id,
                    symbol=pos.symbol,
                    sec_type=pos.sec_type,
                    quantity=pos.quantity,
                    multiplier=pos.multiplier,
                    delta=_val(values.get("delta")),
                    gamma=_val(values.get("gamma")),
                    vega=_val(values.get("vega")),
                    theta=_val(values.get("theta")),
                    greeks_at=greeks_at,
                    subscribed_at=self._subscribed.get(pos.con_id),
                    und_price=prices.get(pos.symbol),
                    description=pos.description,
                )
            )
        return Snapshot(taken_at=now, account=self.account, positions=tuple(out), prices=prices)


async def _in_background(job: Coroutine[Any, Any, None]) -> None:
    BACKGROUND.set(True)  # this task's own context: its requests yield to the ticks'
    await job


def _val(field: _Field | None) -> float | None:
    return None if field is None else field.value

"""The collector process: ticks -> Greeks -> rows -> Redis (or spool), plus the link contract.

Tasks (supervised; one dying stops the process non-zero so supervisord restarts it):
- `ticker`: the wall-clock grid; each tick takes the transport's snapshot, applies the Greeks
  policy and hands the rows to the sink (shielded: a row being handed off is never cut);
- `events`: the transport's link events -> `link` hash, `link_events`, `api_logs`;
- `control`: the watchdog's commands (reconnect, pause until T, reauth);
- `heartbeat`: the heartbeat key every second, and spool replay when Redis is back.

The collector connects once at start (unless `pause_until` is in the future) and never
reconnects by itself afterwards: drops are reported at once and reconnection is the watchdog's
decision (docs/CONTRACTS.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from collector.books import Books
from collector.link import Command, ControlReader, LinkPublisher, sleep_or_stop
from collector.sink import REDIS_DOWN, Sink
from collector.ticker import GridTicker
from collector.transport import LinkEvent, LinkState, Transport, TransportError
from shared.clock import utcnow
from shared.config import Settings
from shared.models import ApiLogRow
from shared.names import Keys
from shared.process import supervise

log = logging.getLogger(__name__)

HEARTBEAT_EVERY_S = 1.0
CONTROL_BACKOFF_CAP_S = 5.0
SOURCE = "collector"


class Collector:
    def __init__(
        self,
        settings: Settings,
        transport: Transport,
        sink: Sink,
        *,
        clock: Callable[[], datetime] = utcnow,
        ticker: GridTicker | None = None,
    ) -> None:
        self.settings = settings
        self.transport = transport
        self.mode = transport.mode
        self.clock = clock
        self.keys = Keys(settings.redis_prefix)
        self.sink = sink
        self.link = LinkPublisher(self.sink.client, self.keys, self.mode, settings.heartbeat_ttl_s)
        self.control = ControlReader(self.sink.client, self.keys)
        self.books = Books(settings, self.mode)
        self.ticker = ticker or GridTicker(settings.poll_interval_s, clock=clock)
        self.paused_until: datetime | None = None
        self.paused = False
        self._no_data_reason: str | None = None
        self._no_data_key = ""
        self._busy = asyncio.Lock()  # a command and a tick never use the transport at once
        self.rows_produced = 0

    # ---- api_logs --------------------------------------------------------------------------
    def _row(self, status: str, message: str, ts: datetime | None = None) -> ApiLogRow:
        return ApiLogRow(
            ts=ts or self.clock(), api_mode=self.mode, status=status, message=message, source=SOURCE
        )

    async def api_log(self, status: str, message: str) -> None:
        log_fn = log.warning if status != "INFO" else log.info
        log_fn("api_log %s %s", status, message)
        try:
            await asyncio.shield(self.sink.publish([], [self._row(status, message)]))
        except OSError as exc:  # Redis down and the spool unwritable: nothing more to do
            log.error("api_log_lost %s %s: %r", status, message, exc)

    # ---- startup -----------------------------------------------------------------------------
    async def start(self) -> None:
        now = self.clock()
        await self.sink.replay()
        until = await self.link.pause_until(now)
        if until is not None:
            await self._enter_pause(until, "", f"pause_until {until.isoformat()} found at start")
            return
        await self._connect("")

    async def _connect(self, cmd_id: str) -> None:
        now = self.clock()
        self.paused = False
        self.paused_until = None
        try:
            async with asyncio.timeout(self.settings.ib_connect_timeout_s + 5.0):
                await self.transport.connect()
        except (TransportError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            event = LinkEvent(LinkState.DISCONNECTED, now, f"connect failed: {reason}", "ERROR")
            await self.link.publish_event(event, self.clock(), cmd_id)
            await self.api_log("ERROR", f"{self.mode} connect failed: {reason}")
            return
        state = self.transport.state
        event = LinkEvent(state, self.clock(), f"connect: {state}")
        if cmd_id or state != LinkState.CONNECTED:
            # the transport's own events say "connected"; answer the command explicitly
            await self.link.publish_event(event, self.clock(), cmd_id)
        self._update_extras()

    async def _enter_pause(self, until: datetime, cmd_id: str, why: str) -> None:
        self.paused = True
        self.paused_until = until
        if self.transport.state not in (LinkState.DISCONNECTED, LinkState.PAUSED):
            await self.transport.disconnect()
        reason = f"paused until {until.isoformat()}: {why}"
        event = LinkEvent(LinkState.PAUSED, self.clock(), reason)
        await self.link.publish_event(event, self.clock(), cmd_id)
        await self.api_log("INFO", f"collector paused until {until.isoformat()} ({why})")

    # ---- commands ----------------------------------------------------------------------------
    async def obey(self, cmd: Command) -> None:
        log.info("control_command %s id=%s reason=%s", cmd.cmd, cmd.id, cmd.reason)
        async with self._busy:
            if cmd.cmd == "pause" and cmd.until is not None:
                await self._enter_pause(cmd.until, cmd.id, cmd.reason or "watchdog")
                return
            await self.api_log("INFO", f"{cmd.cmd} command {cmd.id} from watchdog: {cmd.reason}")
            if cmd.cmd == "reauth":
                reauth = getattr(self.transport, "reauthenticate", None)
                if reauth is not None:
                    await self._reauth(reauth, cmd.id)
                    return
            await self.transport.disconnect()
            await self._connect(cmd.id)

    async def _reauth(self, reauth: Callable[[], Awaitable[None]], cmd_id: str) -> None:
        try:
            async with asyncio.timeout(self.settings.ib_connect_timeout_s + 5.0):
                await reauth()
        except (TransportError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            event = LinkEvent(
                self.transport.state, self.clock(), f"reauth failed: {reason}", "ERROR"
            )
            await self.link.publish_event(event, self.clock(), cmd_id)
            await self.api_log("ERROR", f"reauth failed: {reason}")
            return
        self.paused = False
        event = LinkEvent(self.transport.state, self.clock(), "reauth done")
        await self.link.publish_event(event, self.clock(), cmd_id)

    async def run_control(self, stop: asyncio.Event) -> None:
        backoff = 0.2
        while not stop.is_set():
            try:
                commands = await self.control.read()
            except REDIS_DOWN as exc:
                log.debug("control_unreadable %r", exc)
                await sleep_or_stop(backoff, stop)
                backoff = min(backoff * 2, CONTROL_BACKOFF_CAP_S)
                continue
            backoff = 0.2
            for entry_id, cmd in commands:
                if isinstance(cmd, str):
                    log.warning("control_rejected %s: %s", entry_id, cmd)
                    await self.api_log("WARN", f"control entry {entry_id} ignored: {cmd}")
                    continue
                await self.obey(cmd)

    # ---- link events -------------------------------------------------------------------------
    async def run_events(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            event = await _get_or_stop(self.transport.events, stop)
            if event is None:
                return
            await self.link.publish_event(event, self.clock())
            text = f"link {event.state}: {event.reason}"
            if event.code is not None:
                text += f" (code {event.code})"
            await self.api_log(event.status, text)
            self._update_extras()

    def _update_extras(self) -> None:
        try:
            self.link.extras = {str(k): str(v) for k, v in self.transport.status().items()}
        except (TypeError, ValueError) as exc:
            log.debug("status_unavailable %r", exc)

    # ---- heartbeat ---------------------------------------------------------------------------
    async def run_heartbeat(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if await self.link.beat(self.clock()) and not self.sink.spool.is_empty():
                await self.sink.replay()
            await sleep_or_stop(HEARTBEAT_EVERY_S, stop)

    # ---- ticks -------------------------------------------------------------------------------
    async def tick(self, ts: datetime) -> None:
        if self.paused:
            return
        async with self._busy:
            try:
                snap = await self.transport.snapshot(ts)
            except TransportError as exc:
                await self._no_data(str(exc) or type(exc).__name__)
                return
        tick = self.books.evaluate(snap, ts)
        logs = [self._row(r.status, r.message, ts) for r in tick.reports]
        for report in tick.reports:
            log.info("greeks_policy %s %s", report.status, report.message)
        if self._no_data_reason is not None and tick.greeks:
            logs.append(self._row("INFO", f"rows resumed after: {self._no_data_reason}", ts))
            self._no_data_reason = None
        rows = tick.greeks
        self.link.account = snap.account
        await asyncio.shield(self.sink.publish(rows, logs, tick.exposure))
        if rows:
            self.rows_produced += len(rows)
            self.link.last_tick = ts.isoformat()
        self._update_extras()

    async def _no_data(self, reason: str) -> None:
        """One WARN when rows stop, and one more only if the link state changes meanwhile."""
        key = f"{self.transport.state}"
        if self._no_data_reason is not None and self._no_data_key == key:
            return
        first = self._no_data_reason is None
        self._no_data_reason = reason
        self._no_data_key = key
        await self.api_log("WARN", ("no rows: " if first else "still no rows: ") + reason)

    async def _on_missed(self, missed: list[datetime]) -> None:
        await self.api_log(
            "WARN",
            f"{len(missed)} tick(s) missed from {missed[0].isoformat()} to "
            f"{missed[-1].isoformat()}: the previous tick overran",
        )

    async def _on_overrun(self, ts: datetime) -> None:
        await self.api_log(
            "WARN", f"tick {ts.isoformat()} overran {self.settings.poll_interval_s:g} s: skipped"
        )

    async def run_ticks(self, stop: asyncio.Event) -> None:
        await self.ticker.run(
            self.tick, stop, on_missed=self._on_missed, on_overrun=self._on_overrun
        )
        await stop.wait()  # a bounded ticker (tests) ends early: keep the task alive

    # ---- the process -------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> int:
        self.sink.spool.acquire()
        try:
            await self.api_log("INFO", f"collector started ({self.mode})")
            # beat while starting too (spool replay, connect): a slow start is not a hang
            starting = asyncio.create_task(self.run_heartbeat(stop), name="heartbeat-start")
            try:
                await self.start()
            finally:
                starting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await starting
            await supervise(
                {
                    "ticker": self.run_ticks(stop),
                    "events": self.run_events(stop),
                    "control": self.run_control(stop),
                    "heartbeat": self.run_heartbeat(stop),
                },
                stop,
                grace_s=self.settings.stop_grace_s,
                on_stop=self._on_stop,
            )
        finally:
            self.sink.spool.release()
        return 0

    async def _on_stop(self) -> None:
        await self.transport.disconnect()
        self.link.state = LinkState.DISCONNECTED
        self.link.reason = "collector stopped"
        self.link.since = self.clock()
        await self.link.last_beat(self.clock())
        await self.api_log("INFO", "collector stopped")


async def _get_or_stop(queue: asyncio.Queue[LinkEvent], stop: asyncio.Event) -> LinkEvent | None:
    if not queue.empty():
        return queue.get_nowait()
    getter = asyncio.create_task(queue.get())
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not getter.done():
            getter.cancel()
    if getter.done() and not getter.cancelled():
        return getter.result()
    return None

"""The simulator's control port: one command per line over TCP on 127.0.0.1, one JSON reply line.

Commands (case-insensitive):

    status                      connected client ids, subscriptions, modes, accounts
    drop                        abort every client socket (the nightly gateway restart)
    refuse SECONDS [drop]       stop listening for SECONDS (then listen again on the same port)
    reset [DELAY_S] [1101|1102] 1100 + farms broken, DELAY_S later 1102 (default) or 1101
    hold CLIENT_ID              treat the client id as in use (326 then close)
    release CLIENT_ID
    greeks MODE [CONID ...]     MODE: normal, sentinel, max (Double.MAX), absent, or last
                                (Greeks as tick 12/82 instead of the model's 13/83)
    market open|closed          closed: bid/ask -1 size 0, no last, close present
    freeze on|off               pin the model time (values stop moving)
    position CONID QTY [ACCOUNT]  change a known position of ACCOUNT (default: the first
                                account; 0 closes it)
    error CODE [TEXT]           send a system error (reqId -1) to every client
    ping

Market data (the replies of `lines` and `others` carry the `lines` object of `status`):

    lines [N|off|reset]         the account's market-data line limit (off: unlimited), shared
                                by all sessions; a reqMktData (streaming or snapshot) when the
                                open lines reach it gets error 101 and nothing is subscribed.
                                reset: zero max_open/refused/requests/cancels (max_open
                                restarts from the lines open now); no argument: just show
    others N                    lines the account's other sessions use (the trader's screens)
    data-error CODE CONID...|all  reqMktData for these contracts gets CODE on its reqId:
                                354, 10168: no data, no line (open subscriptions get it and end)
                                10090: prices but no option Greeks (tick 13/83)
                                10167: delayed data, marketDataType 3 (4 if closed and frozen)
    data-error clear [CONID...] serve these (all) normally again; open subscriptions keep what
                                they were granted until requested again
    expire CONID                an expired contract: reqMktData and contract details get 200,
                                its subscriptions get 200 and end; the position stays listed
    unexpire CONID
    compete on|off              a competing live session: every subscription and new request
                                gets 10197 and no data (they stay registered, lines held); off:
                                each gets its current values at once
    stall on [farm]|off         the subscriptions open now stop getting ticks (registered, lines
                                held, socket healthy); later requests are served. farm: 2103
                                now and 2104 a second later. off: they resume

Their replies: lines/others `{"ok": true, "lines": {...}}`; data-error `{"ok": true, "code": C,
"con_ids": [..] or "all", "hit": N}` (N: open subscriptions it reached); data-error clear
`{"ok": true, "cleared": [..] or "all"}`; expire/unexpire `{"ok": true, "con_id": C, "ended": N}`;
compete `{"ok": true, "competing": B, "subscriptions": N}`; stall `{"ok": true, "stalled": N}`
(N: subscriptions stalled or resumed by it).

Status (`status`): `account` (the first account) and `positions` (its position count),
`accounts` [{"account": ID, "positions": N}, ...] every account of the login in
managedAccounts order, `clients` (per session, `account_updates_account`: the account whose
values stream to it), and `lines` {limit (null: unlimited), others, open, max_open, refused,
requests, cancels}, `data_errors` {CONID: CODE or null}, `data_error_all`, `expired`,
`competing`, `stalled` (subscriptions stalled now).

Replies: `{"ok": true, ...}` or `{"ok": false, "error": "..."}`. `send_command` is a client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from simulator.gateway.server import LOOPBACK, GatewaySimulator

log = logging.getLogger(__name__)
MAX_LINE = 4096


class ControlError(Exception):
    pass


Reply = dict[str, Any]


async def execute(sim: GatewaySimulator, line: str) -> Reply:
    """Run one command line against `sim`; the reply as a dict."""
    words = line.split()
    if not words:
        raise ControlError("empty command")
    cmd, args = words[0].lower(), words[1:]
    command = _COMMANDS.get(cmd)
    if command is None:
        raise ControlError(f"unknown command {cmd!r}")
    try:
        reply = command(sim, args)
        return await reply if isinstance(reply, Awaitable) else reply
    except IndexError:
        raise ControlError(f"missing argument for {cmd!r}") from None
    except (ValueError, KeyError) as exc:
        raise ControlError(f"{cmd}: {exc}") from None


async def _refuse(sim: GatewaySimulator, args: list[str]) -> Reply:
    seconds = float(args[0])
    await sim.refuse(seconds, drop=len(args) > 1 and args[1].lower() == "drop")
    return {"ok": True, "seconds": seconds}


def _reset(sim: GatewaySimulator, args: list[str]) -> Reply:
    delay = float(args[0]) if args else 1.0
    code = int(args[1]) if len(args) > 1 else 1102
    if code not in (1101, 1102):
        raise ControlError("reset code must be 1101 or 1102")
    sim.start_reset(delay, code)
    return {"ok": True, "delay_s": delay, "code": code}


def _greeks(sim: GatewaySimulator, args: list[str]) -> Reply:
    sim.set_greeks_mode(args[0].lower(), [int(a) for a in args[1:]] or None)
    return {"ok": True}


def _market(sim: GatewaySimulator, args: list[str]) -> Reply:
    if args[0].lower() not in ("open", "closed"):
        raise ControlError("market open|closed")
    sim.set_market_closed(args[0].lower() == "closed")
    return {"ok": True}


def _freeze(sim: GatewaySimulator, args: list[str]) -> Reply:
    if args[0].lower() not in ("on", "off"):
        raise ControlError("freeze on|off")
    return {"ok": True, "model_time": sim.freeze(args[0].lower() == "on")}


def _lines(sim: GatewaySimulator, args: list[str]) -> Reply:
    desk = sim.market_data
    word = args[0].lower() if args else ""
    if word == "reset":
        desk.reset_counters()
    elif word == "off":
        desk.set_limit(None)
    elif word:
        desk.set_limit(int(word))
    return {"ok": True, "lines": desk.lines_status()}


def _others(sim: GatewaySimulator, args: list[str]) -> Reply:
    sim.market_data.set_others(int(args[0]))
    return {"ok": True, "lines": sim.market_data.lines_status()}


def _con_ids(args: list[str]) -> list[int] | None:
    """`all` -> None (every contract), else the conIds (at least one)."""
    if not args:
        raise IndexError
    if len(args) == 1 and args[0].lower() == "all":
        return None
    return [int(a) for a in args]


def _data_error(sim: GatewaySimulator, args: list[str]) -> Reply:
    desk = sim.market_data
    if args[0].lower() == "clear":
        ids = [int(a) for a in args[1:]] or None
        desk.clear_data_errors(ids)
        return {"ok": True, "cleared": "all" if ids is None else ids}
    code, ids = int(args[0]), _con_ids(args[1:])
    hit = desk.data_error(code, ids)
    return {"ok": True, "code": code, "con_ids": "all" if ids is None else ids, "hit": hit}


def _expire(expired: bool) -> Command:
    def run(sim: GatewaySimulator, args: list[str]) -> Reply:
        con_id = int(args[0])
        return {"ok": True, "con_id": con_id, "ended": sim.market_data.expire(con_id, expired)}

    return run


def _on_off(word: str, usage: str) -> bool:
    if word.lower() not in ("on", "off"):
        raise ControlError(usage)
    return word.lower() == "on"


def _compete(sim: GatewaySimulator, args: list[str]) -> Reply:
    on = _on_off(args[0], "compete on|off")
    return {"ok": True, "competing": on, "subscriptions": sim.market_data.compete(on)}


def _stall(sim: GatewaySimulator, args: list[str]) -> Reply:
    on = _on_off(args[0], "stall on [farm]|off")
    farm = [a.lower() for a in args[1:]]
    if farm not in ([], ["farm"]) or (farm and not on):
        raise ControlError("stall on [farm]|off")
    return {"ok": True, "stalled": sim.market_data.stall(on, farm=bool(farm))}


def _done(action: Callable[[GatewaySimulator, list[str]], object]) -> Command:
    """A command whose reply is a bare ok."""

    def run(sim: GatewaySimulator, args: list[str]) -> Reply:
        action(sim, args)
        return {"ok": True}

    return run


Command = Callable[[GatewaySimulator, list[str]], Reply | Awaitable[Reply]]
_COMMANDS: dict[str, Command] = {
    "ping": lambda sim, args: {"ok": True},
    "status": lambda sim, args: {"ok": True, **sim.status()},
    "drop": lambda sim, args: {"ok": True, "dropped": sim.drop_all()},
    "refuse": _refuse,
    "reset": _reset,
    "hold": _done(lambda sim, args: sim.hold_client_id(int(args[0]))),
    "release": _done(lambda sim, args: sim.release_client_id(int(args[0]))),
    "greeks": _greeks,
    "market": _market,
    "freeze": _freeze,
    "position": _done(lambda sim, args: sim.set_position(int(args[0]), float(args[1]), *args[2:3])),
    "error": _done(lambda sim, args: sim.inject_error(int(args[0]), " ".join(args[1:]) or None)),
    "lines": _lines,
    "others": _others,
    "data-error": _data_error,
    "expire": _expire(True),
    "unexpire": _expire(False),
    "compete": _compete,
    "stall": _stall,
}


class ControlServer:
    """Line-based control listener for a `GatewaySimulator` (loopback only)."""

    def __init__(self, sim: GatewaySimulator, host: str = "127.0.0.1", port: int = 0) -> None:
        if host not in LOOPBACK:
            raise ValueError(f"the control port listens on loopback only, not {host!r}")
        self.sim = sim
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._on_client, self.host, self.port, reuse_address=True, limit=MAX_LINE
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("gateway.control_listening port=%s", self.port)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                try:
                    raw = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    break
                if not raw:
                    break
                line = raw.decode(errors="replace").strip()
                if not line:
                    continue
                try:
                    reply = await execute(self.sim, line)
                except ControlError as exc:
                    reply = {"ok": False, "error": str(exc)}
                log.info("gateway.control cmd=%r ok=%s", line, reply.get("ok"))
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
                await writer.wait_closed()
            self._tasks.discard(task)


async def send_command(
    port: int, line: str, host: str = "127.0.0.1", timeout_s: float = 5.0
) -> dict[str, Any]:
    """Send one command to a control port and return the decoded reply."""
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(line.strip().encode() + b"\n")
            await writer.drain()
            raw = await reader.readline()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
    if not raw:
        raise ConnectionError("control port closed without a reply")
    reply: dict[str, Any] = json.loads(raw)
    return reply


def send_command_sync(
    port: int, line: str, host: str = "127.0.0.1", timeout_s: float = 5.0
) -> dict[str, Any]:
    """Blocking variant for scripts and tests outside an event loop."""
    import socket

    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.sendall(line.strip().encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
    if not buf:
        raise ConnectionError("control port closed without a reply")
    reply: dict[str, Any] = json.loads(buf)
    return reply

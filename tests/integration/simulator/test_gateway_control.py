"""The gateway simulator's control port: every command over TCP, bad commands answered with
`ok: false` (the connection stays usable), misbehaving clients, and the clients' own errors."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator

import pytest

from simulator.gateway import ControlServer, GatewaySimulator, send_command
from simulator.gateway.control import ControlError, execute, send_command_sync
from tests.integration.simulator.conftest import wait_until


@pytest.fixture
async def control(sim: GatewaySimulator) -> AsyncIterator[ControlServer]:
    async with ControlServer(sim) as server:
        yield server


async def test_commands_change_the_simulator(sim: GatewaySimulator, control: ControlServer) -> None:
    async def cmd(line: str) -> dict[str, object]:
        reply = await send_command(control.port, line)
        assert reply["ok"] is True, (line, reply)
        return reply

    assert await cmd("PING") == {"ok": True}
    assert (await cmd("greeks max 600000001 600000002"))["ok"]
    assert sim.greeks_mode == "normal"
    assert sim.greeks_mode_by_con == {600000001: "max", 600000002: "max"}
    await cmd("hold 41")
    assert 41 in sim.held_client_ids
    await cmd("release 41")
    assert 41 not in sim.held_client_ids
    frozen = await cmd("freeze on")
    assert sim.model_time() == frozen["model_time"]
    await cmd("freeze off")
    await cmd("market closed")
    assert sim.market_closed
    await cmd("market OPEN")
    assert not sim.market_closed
    await cmd("position 600000001 0")
    status = await cmd("status")
    assert status["market_closed"] is False and status["greeks_mode_by_con"]["600000002"] == "max"
    await cmd("error 2103 Market data farm connection is broken")
    assert await cmd("reset 0.05 1101") == {"ok": True, "delay_s": 0.05, "code": 1101}
    assert sim.feeds_down
    assert await wait_until(lambda: not sim.feeds_down)
    assert await cmd("reset") == {"ok": True, "delay_s": 1.0, "code": 1102}


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("launch", "unknown command 'launch'"),
        ("hold", "missing argument for 'hold'"),
        ("position 600000001", "missing argument for 'position'"),
        ("hold seven", "hold: invalid literal"),
        ("position 42 1", "position: 'unknown conId 42'"),
        ("greeks purple", "greeks: greeks mode must be one of"),
        ("reset 1 1100", "reset code must be 1101 or 1102"),
        ("reset soon", "reset: could not convert"),
        ("market maybe", "market open|closed"),
        ("freeze later", "freeze on|off"),
        ("refuse", "missing argument for 'refuse'"),
        ("data-error 999 600000001", "data error code must be one of"),
        ("data-error 354 42", "data-error: 'unknown conId 42'"),
        ("data-error 354", "missing argument for 'data-error'"),
        ("data-error clear 42", "data-error: 'unknown conId 42'"),
        ("expire 42", "expire: 'unknown conId 42'"),
        ("unexpire", "missing argument for 'unexpire'"),
        ("compete maybe", "compete on|off"),
        ("stall sideways", "stall on [farm]|off"),
        ("stall off farm", "stall on [farm]|off"),
        ("stall on farms", "stall on [farm]|off"),
    ],
)
async def test_bad_commands_are_answered_not_fatal(
    sim: GatewaySimulator, control: ControlServer, line: str, error: str
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", control.port)
    try:
        writer.write(line.encode() + b"\n\n   \n" + b"ping\n")  # blank lines get no reply
        await writer.drain()
        reply = await asyncio.wait_for(reader.readline(), 5)
        assert b'"ok": false' in reply and error.encode() in reply, reply
        # the same connection still takes commands
        assert await asyncio.wait_for(reader.readline(), 5) == b'{"ok": true}\n'
    finally:
        writer.close()
        await writer.wait_closed()
    assert sim.held_client_ids == set() and sim.greeks_mode == "normal"


async def test_empty_command_line(sim: GatewaySimulator) -> None:
    with pytest.raises(ControlError, match="empty command"):
        await execute(sim, "   ")


def test_control_port_is_loopback_only(sim: GatewaySimulator) -> None:
    with pytest.raises(ValueError, match="loopback only"):
        ControlServer(sim, host="0.0.0.0")


async def test_an_overlong_line_closes_only_that_connection(control: ControlServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", control.port)
    try:
        writer.write(b"status " + b"x" * 10_000 + b"\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed without a reply
    finally:
        writer.close()
        await writer.wait_closed()
    assert await send_command(control.port, "ping") == {"ok": True}


async def test_a_reset_connection_does_not_harm_the_port(control: ControlServer) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", control.port)
    assert await wait_until(lambda: len(control._tasks) == 1)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST on close
    writer.close()
    assert await wait_until(lambda: not control._tasks)
    assert await send_command(control.port, "ping") == {"ok": True}


async def test_stop_ends_connected_clients(sim: GatewaySimulator) -> None:
    control = ControlServer(sim)
    await control.stop()  # never started: nothing to do
    await control.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", control.port)
    try:
        writer.write(b"ping\n")
        assert await asyncio.wait_for(reader.readline(), 5) == b'{"ok": true}\n'
        await control.stop()
        assert control._tasks == set()
        assert await asyncio.wait_for(reader.read(), 5) == b""
    finally:
        writer.close()
        await writer.wait_closed()
    with pytest.raises(OSError):
        await send_command(control.port, "ping", timeout_s=2)


async def test_clients_report_a_port_that_closes_without_a_reply() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(ConnectionError, match="without a reply"):
            await send_command(port, "ping")
        with pytest.raises(ConnectionError, match="without a reply"):
            await asyncio.to_thread(send_command_sync, port, "ping")
    finally:
        server.close()
        await server.wait_closed()


async def test_sync_client_gets_the_reply(control: ControlServer) -> None:
    reply = await asyncio.to_thread(send_command_sync, control.port, "hold 12")
    assert reply == {"ok": True}
    assert 12 in control.sim.held_client_ids

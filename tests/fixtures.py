"""The IB Gateway simulator as test fixtures: in this process, or as its own program.

Registered for every test by tests/conftest.py; tests/conftest.py also holds the PostgreSQL
and Redis fixtures.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from simulator.gateway import GatewaySimulator, send_command
from simulator.portfolio import default_portfolio

ACCOUNT = "DU1234567"  # the simulator's account, in process and as a program


@pytest.fixture
async def gateway_sim() -> AsyncIterator[GatewaySimulator]:
    """The IB Gateway simulator in this process, on a free port; prices and Greeks move every
    0.2 s and are pushed every 0.1 s."""
    gateway = GatewaySimulator(default_portfolio(ACCOUNT, step_s=0.2), push_interval_s=0.1)
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.stop()


@dataclass
class Gateway:
    """`python -m simulator.gateway` running on free ports."""

    proc: asyncio.subprocess.Process
    port: int
    control_port: int

    async def cmd(self, line: str) -> dict[str, Any]:
        reply = await send_command(self.control_port, line)
        assert reply["ok"], reply
        return reply


StartGateway = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def start_gateway() -> AsyncIterator[StartGateway]:
    """Start the simulator program: `await start_gateway(step_s=0, push_interval_s=0.2)` once
    it listens (its control port too); each one still running is ended afterwards."""
    started: list[asyncio.subprocess.Process] = []

    async def start(
        step_s: float = 0.0, push_interval_s: float = 0.2, extra: Sequence[str] = ()
    ) -> Gateway:
        """`extra`: more command-line arguments (`--account2 ID`, ...)."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "simulator.gateway",
            "--port",
            "0",
            "--control-port",
            "0",
            "--account",
            ACCOUNT,
            "--step-s",
            str(step_s),
            "--push-interval-s",
            str(push_interval_s),
            "--log-level",
            "WARNING",
            *extra,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        started.append(proc)
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode()
        fields = dict(w.split("=", 1) for w in line.split() if "=" in w)
        return Gateway(proc, int(fields["port"]), int(fields["control_port"]))

    try:
        yield start
    finally:
        for proc in started:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


@pytest.fixture
async def gateway(start_gateway: StartGateway) -> Gateway:
    """The simulator program with its prices frozen (step 0), pushing every 0.2 s."""
    return await start_gateway(step_s=0.0, push_interval_s=0.2)

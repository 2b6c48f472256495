"""Fixtures of the end-to-end tests: the IB Gateway simulator as a real process."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from simulator.gateway import send_command

ACCOUNT = "DU1234567"


@dataclass
class Gateway:
    proc: asyncio.subprocess.Process
    port: int
    control_port: int

    async def cmd(self, line: str) -> dict[str, Any]:
        reply = await send_command(self.control_port, line)
        assert reply["ok"], reply
        return reply


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
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
        "0",
        "--push-interval-s",
        "0.2",
        "--log-level",
        "WARNING",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode()
        fields = dict(w.split("=", 1) for w in line.split() if "=" in w)
        yield Gateway(proc, int(fields["port"]), int(fields["control_port"]))
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()

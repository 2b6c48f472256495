"""Fixtures for the IB Gateway simulator tests: a private simulator per test, real ib_async."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from ib_async import IB

from simulator.gateway import GatewaySimulator
from tests.fixtures import ACCOUNT


@pytest.fixture
def sim(gateway_sim: GatewaySimulator) -> GatewaySimulator:
    return gateway_sim


async def close_ib(ib: IB) -> None:
    ib.disconnect()
    # let the client's transport finish closing inside this loop (no unclosed-transport warning)
    for _ in range(20):
        if ib.client.conn.transport is None:
            break
        await asyncio.sleep(0.01)


@pytest.fixture
async def make_ib() -> AsyncIterator[Callable[[], IB]]:
    made: list[IB] = []

    def factory() -> IB:
        ib = IB()
        made.append(ib)
        return ib

    try:
        yield factory
    finally:
        for ib in made:
            await close_ib(ib)


async def wait_until(
    cond: Callable[[], bool], timeout_s: float = 3.0, step_s: float = 0.02
) -> bool:
    """Poll `cond` until true or the bounded time is up; returns the final value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if cond():
            return True
        await asyncio.sleep(step_s)
    return cond()


async def connect(ib: IB, port: int, client_id: int = 7, connect_timeout_s: float = 3.0) -> IB:
    await ib.connectAsync(
        "127.0.0.1", port, client_id, timeout=connect_timeout_s, readonly=True, account=ACCOUNT
    )
    return ib


Connector = Callable[..., Awaitable[IB]]

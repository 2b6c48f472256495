"""The web console under test: in this process on a free loopback port (`start_web`), or as its
own program, `python -m ops.web` (`start_web_process`); both over real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from ops.embedded import free_port
from ops.web.console import Console
from ops.web.server import build_app
from shared.config import Settings, load_settings, remember
from tests.helpers import bridge_env


@dataclass
class Web:
    url: str
    settings: Settings
    session: aiohttp.ClientSession
    console: Console | None = None
    proc: subprocess.Popen[bytes] | None = None

    async def get(
        self, path: str, *, method: str = "GET", headers: dict[str, str] | None = None
    ) -> tuple[int, Any, bytes]:
        async with self.session.request(method, self.url + path, headers=headers) as r:
            return r.status, r.headers, await r.read()

    async def json(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        async with self.session.get(self.url + path, headers=headers) as r:
            return r.status, await r.json()

    async def text(self, path: str) -> tuple[int, str]:
        async with self.session.get(self.url + path) as r:
            return r.status, await r.text()


def web_env(pg_url: str, redis_url: str, prefix: str, tmp: Path, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": pg_url,
        "REDIS_URL": redis_url,
        "BRIDGE_REDIS_PREFIX": prefix,
        "BRIDGE_BUFFER_PATH": str(tmp / "buffer.jsonl"),
        "BRIDGE_SPOOL_PATH": str(tmp / "spool.jsonl"),
        "BRIDGE_WEB_PORT": str(free_port()),
        **extra,
    }


StartWeb = Callable[..., Awaitable[Web]]
BIN = Path(sys.executable).parent


def bridge_status_json(settings: Settings) -> tuple[int, dict[str, Any]]:
    """`bridge status --json` run as the operator would, with the console's configuration."""
    env = {k: v for k, v in settings.as_env().items() if v}
    env["DATABASE_URL"], env["REDIS_URL"] = settings.database_url, settings.redis_url
    done = subprocess.run(
        [str(BIN / "bridge"), "status", "--json"],
        env=bridge_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


@pytest.fixture
async def start_web(
    pg_url: str, redis_url: str, prefix: str, tmp_path: Path
) -> AsyncIterator[StartWeb]:
    """`await start_web(BRIDGE_POLL_INTERVAL_S="30", ...)`: the app in this process."""
    runners: list[tuple[web.AppRunner, Console]] = []
    session = aiohttp.ClientSession()

    async def start(**extra: str) -> Web:
        env = web_env(pg_url, redis_url, prefix, tmp_path, **extra)
        settings = load_settings(env, dotenv=None)
        remember(settings.secret_texts())
        console = Console(settings)
        runner = web.AppRunner(build_app(console), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", settings.web_port).start()
        runners.append((runner, console))
        return Web(f"http://127.0.0.1:{settings.web_port}", settings, session, console=console)

    try:
        yield start
    finally:
        await session.close()
        for runner, console in runners:
            await runner.cleanup()
            await console.close()


StartWebProcess = Callable[..., Awaitable[Web]]


async def wait_listening(proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 30) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while "web_listening" not in (text := await asyncio.to_thread(log.read_text)):
        assert proc.poll() is None, text
        assert loop.time() < end, "bridge web did not start listening"
        await asyncio.sleep(0.05)


@pytest.fixture
async def start_web_process(
    spawn: Callable[..., subprocess.Popen[bytes]], tmp_path: Path
) -> AsyncIterator[StartWebProcess]:
    """`await start_web_process(env)`: `python -m ops.web` with exactly `env` (+ a clean base),
    once it listens; ended by its PID afterwards (the `spawn` fixture)."""
    session = aiohttp.ClientSession()

    async def start(env: dict[str, str]) -> Web:
        proc = spawn("ops.web", bridge_env(**env), log_name="web")
        log: Path = proc.log_path  # type: ignore[attr-defined]
        await wait_listening(proc, log)
        settings = load_settings(env, dotenv=None)
        return Web(f"http://127.0.0.1:{settings.web_port}", settings, session, proc=proc)

    try:
        yield start
    finally:
        await session.close()

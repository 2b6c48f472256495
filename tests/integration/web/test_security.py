"""The console's guards, on a real `bridge web` process: off loopback without a token it does not
start (exit 2, one line saying why); with a token every request without it is 401; only GET
and HEAD; the security headers on every response; no secret in any page or JSON."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from shared.clock import utcnow
from shared.names import Keys
from tests.helpers import bridge_env
from tests.integration.web import tables
from tests.web_console import StartWeb, StartWebProcess, Web, web_env

BIN = Path(sys.executable).parent
TOKEN = "t0ken-for-the-console-42"
PATHS = (
    "/",
    "/?window=1w&account=DU1",
    "/api/series",
    "/api/series?window=1d",
    "/api/exposure",
    "/api/status",
    "/api/logs",
    "/metrics",
    "/healthz",
    "/static/app.js",
    "/static/chart.js",
    "/static/style.css",
    "/static/icon.svg",
)


@pytest.mark.parametrize(
    ("command", "extra"),
    [
        ([sys.executable, "-m", "ops.web"], {"BRIDGE_WEB_HOST": "0.0.0.0"}),
        ([str(BIN / "bridge"), "web"], {"BRIDGE_WEB_HOST": "192.0.2.10"}),
        ([sys.executable, "-m", "ops.web"], {"BRIDGE_WEB_HOST": "localhost.example"}),
        ([str(BIN / "bridge"), "web"], {"BRIDGE_WEB_TOKEN": "short"}),
    ],
)
def test_off_loopback_without_a_token_it_does_not_start(
    command: list[str], extra: dict[str, str], tmp_path: Path
) -> None:
    env = web_env("postgresql://postgres@127.0.0.1:1/x", "redis://127.0.0.1:1/0", "t:", tmp_path)
    done = subprocess.run(
        command,
        env=bridge_env(**{**env, **extra}),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert "config_invalid BRIDGE_WEB_TOKEN=" in lines[0]
    if "BRIDGE_WEB_HOST" in extra:
        assert f"BRIDGE_WEB_HOST={extra['BRIDGE_WEB_HOST']} is not a loopback address" in lines[0]
    else:
        assert "at least 16 characters" in lines[0] and "short" not in lines[0]
    assert "web_listening" not in done.stdout + done.stderr


def expected(path: str) -> tuple[int, ...]:
    """The answers to an allowed request: nothing running here, so /healthz says down."""
    if path == "/nowhere" or ".." in path:
        return (404,)
    return (503,) if path == "/healthz" else (200,)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def test_with_a_token_every_request_without_it_is_401(
    pg_url: str, redis_url: str, prefix: str, tmp_path: Path, start_web_process: StartWebProcess
) -> None:
    await tables.execute(pg_url, tables.FINAL)
    web = await start_web_process(
        web_env(pg_url, redis_url, prefix, tmp_path, BRIDGE_WEB_TOKEN=TOKEN)
    )
    refused = [
        None,
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        "Bearer ",
        basic("risk", "wrong-token-of-some-length"),
        f"Token {TOKEN}",
        "Basic !!notbase64",
    ]
    for path in (*PATHS, "/nowhere"):
        for header in refused:
            status, headers, body = await web.get(
                path, headers={"Authorization": header} if header else None
            )
            assert status == 401, (path, header)
            assert headers["WWW-Authenticate"].startswith("Basic realm=")
            assert TOKEN.encode() not in body
        for header in (f"Bearer {TOKEN}", basic("anyone", TOKEN)):
            status, _, body = await web.get(path, headers={"Authorization": header})
            assert status in expected(path), (path, status, body[:300])
            assert TOKEN.encode() not in body
    # the token first: a write without it is refused as unauthorised, with it as not allowed
    status, _, _ = await web.get("/api/status", method="POST")
    assert status == 401
    status, _, _ = await web.get(
        "/api/status", method="POST", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert status == 405
    assert web.proc is not None and web.proc.poll() is None


def check_headers(headers: dict[str, str], where: str) -> None:
    csp = headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, where
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, where
    assert "script-src 'self'" in csp, where
    assert headers["X-Content-Type-Options"] == "nosniff", where
    assert headers["Referrer-Policy"] == "no-referrer", where
    assert headers["X-Frame-Options"] == "DENY", where


async def test_read_only_and_guarded_headers_on_every_response(
    pg_url: str, start_web: StartWeb
) -> None:
    await tables.execute(pg_url, tables.FINAL)
    web = await start_web()
    for path in (*PATHS, "/nowhere", "/static/../server.py"):
        for method in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
            status, headers, body = await web.get(path, method=method)
            where = f"{method} {path}"
            check_headers(headers, where)
            if method in ("GET", "HEAD"):
                assert status in expected(path), where
                if method == "HEAD":
                    assert body == b"", where
            else:
                assert status == 405 and headers["Allow"] == "GET, HEAD", where
    _, page = await web.text("/")
    # no script but the page's own files, no inline handler or style
    assert re.findall(r"<script[^>]*>", page) == [
        '<script src="/static/chart.js" defer>',
        '<script src="/static/app.js" defer>',
    ]
    assert not re.search(r"\son[a-z]+=|\sstyle=|javascript:", page)


async def test_no_secret_in_any_page_or_json(
    pg_url: str,
    redis: aioredis.Redis,
    prefix: str,
    start_web: StartWeb,
) -> None:
    await tables.execute(pg_url, tables.FINAL)
    password = "pw-s3cret-in-the-url"  # trust authentication lets it in all the same
    with_password = pg_url.replace("postgres@", f"postgres:{password}@")
    await tables.greeks(pg_url, [(utcnow(), "PORTFOLIO", 1.0, 2.0, 3.0, 4.0, 5.0)], account="DU1")
    # another process wrote the DSN into a text the console shows
    await tables.logs(pg_url, [(utcnow(), "ERROR", f"connect to {with_password} failed")])
    await tables.running_bridge(redis, prefix, utcnow(), link="disconnected")
    await redis.hset(Keys(prefix).link, "reason", f"lost {with_password} ({TOKEN})")
    web = await start_web(DATABASE_URL=with_password, BRIDGE_WEB_TOKEN=TOKEN)
    seen = 0
    for path in PATHS:
        status, _, body = await web.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
        assert status == 200, path
        assert password.encode() not in body and TOKEN.encode() not in body, path
        seen += b"***" in body
    assert seen >= 3  # the page, /api/status, /healthz, /api/logs showed them hidden


async def test_the_process_stays_up_and_stops_cleanly(
    pg_url: str, redis_url: str, prefix: str, tmp_path: Path, start_web_process: StartWebProcess
) -> None:
    web: Web = await start_web_process(web_env(pg_url, redis_url, prefix, tmp_path))
    status, _, _ = await web.get("/")
    assert status == 200  # no tables at all yet: it says so, it does not fail
    _, body = await web.json("/api/series")
    assert body["note"] == "no portfolio_greeks table yet"
    assert web.proc is not None
    web.proc.terminate()
    assert web.proc.wait(10) == 0

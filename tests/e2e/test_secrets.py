"""Secrets stay secret: a whole run with known passwords, outages and wrong passwords, then every
output is searched for them.

PostgreSQL: a private server whose role `bridge` must give its password (scram-sha-256 on the
loopback TCP address; the fixture's own superuser keeps trust). Redis: a private server with an
ACL user limited to the run's keys (and a password for the default user). The pipeline (writer,
collector against the IB Gateway simulator, watchdog) runs
with those passwords in DATABASE_URL and REDIS_URL, and a supervisord URL with a password. Then
PostgreSQL is stopped for a few seconds (the writer logs connection errors, buffers, drains),
an entry the writer cannot decode becomes a dead letter, and processes are started with wrong
passwords (a writer refused by PostgreSQL, a watchdog refused by Redis, `bridge status` with
both). Searched: each process's output and command line, every file the run left in its folder
(buffer, spool, journal), every api_logs row, every Redis key of the run (streams including
`dead`), and `bridge status` in both forms.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis

from ops.embedded import PostgresServer, RedisServer
from ops.embedded.common import free_port
from shared.names import Keys
from tests.fixtures import ACCOUNT, Gateway
from tests.helpers import bridge_env, wait_for

Spawn = Callable[..., subprocess.Popen[bytes]]

ROLE = "bridge"
PG_PW = f"pw-{secrets.token_hex(6)}"
PG_WRONG_PW = f"pw-{secrets.token_hex(6)}"
REDIS_PW = f"pw-{secrets.token_hex(6)}"
REDIS_WRONG_PW = f"pw-{secrets.token_hex(6)}"
SUPERVISOR_PW = f"pw-{secrets.token_hex(6)}"
PASSWORDS = (PG_PW, PG_WRONG_PW, REDIS_PW, REDIS_WRONG_PW, SUPERVISOR_PW)


async def _password_protected_database(pg: PostgresServer) -> str:
    """Create role `bridge` (with a password) and its database; make TCP logins of that role
    check the password. Returns the bridge's DATABASE_URL."""
    admin = await asyncpg.connect(pg.url())
    try:
        await admin.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PG_PW}'")
        await admin.execute(f"CREATE DATABASE {ROLE} OWNER {ROLE}")
        await asyncio.to_thread(_require_password, Path(await admin.fetchval("SHOW hba_file")))
        await admin.execute("SELECT pg_reload_conf()")
    finally:
        await admin.close()
    url = f"postgresql://{ROLE}:{PG_PW}@127.0.0.1:{pg.port}/{ROLE}"
    wrong = url.replace(PG_PW, PG_WRONG_PW)

    async def refused() -> bool:  # the reload is asynchronous
        try:
            await (await asyncpg.connect(wrong)).close()
        except asyncpg.InvalidPasswordError:
            return True
        return False

    await wait_for(refused, 10, "PostgreSQL refusing a wrong password")
    await (await asyncpg.connect(url)).close()
    return url


def _require_password(hba: Path) -> None:
    """The first matching line wins: TCP logins of the role must give its password."""
    hba.write_text(f"host all {ROLE} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())


async def _password_protected_redis(server: RedisServer, prefix: str) -> str:
    """The set-up README recommends: an ACL user limited to the bridge's keys, without the
    dangerous commands; the default user needs a password too."""
    client = aioredis.Redis.from_url(server.url())
    try:
        await client.execute_command(
            "ACL", "SETUSER", ROLE, "on", f">{REDIS_PW}", f"~{prefix}*", "+@all", "-@dangerous"
        )
        await client.config_set("requirepass", f"{REDIS_PW}-default")
    finally:
        await client.aclose()
    return f"redis://{ROLE}:{REDIS_PW}@127.0.0.1:{server.port}/0"


def _admin_db_url(pg: PostgresServer) -> str:
    return pg.url(ROLE)  # the superuser (trust): reads what the bridge wrote


async def _portfolio_rows(pg: PostgresServer) -> int:
    try:
        conn = await asyncpg.connect(_admin_db_url(pg), timeout=3)
    except (OSError, asyncpg.PostgresError):
        return 0
    try:
        return int(
            await conn.fetchval("SELECT count(*) FROM portfolio_greeks WHERE contract='PORTFOLIO'")
        )
    except asyncpg.UndefinedTableError:
        return 0
    finally:
        await conn.close()


def _bridge(env: dict[str, str], *args: str, cwd: Path) -> str:
    """`bridge ARGS` (its exit code is the health: not checked); stdout and stderr."""
    proc = subprocess.run(
        [sys.executable, "-c", "from ops.cli import main; main()", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return f"[exit {proc.returncode}]\n{proc.stdout}\n{proc.stderr}"


def _cmdline(proc: subprocess.Popen[bytes]) -> str:
    try:
        return Path(f"/proc/{proc.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


async def _redis_dump(client: aioredis.Redis, prefix: str) -> dict[str, str]:
    """Every key of the run, as text, whatever its type."""
    out: dict[str, str] = {}
    async for raw in client.scan_iter(match=f"{prefix}*", count=1000):
        key = raw.decode()
        kind = (await client.type(key)).decode()
        if kind == "stream":
            value: object = await client.xrange(key, "-", "+")
        elif kind == "hash":
            value = await client.hgetall(key)
        elif kind == "string":
            value = await client.get(key)
        elif kind == "list":
            value = await client.lrange(key, 0, -1)
        elif kind == "set":
            value = await client.smembers(key)
        elif kind == "zset":
            value = await client.zrange(key, 0, -1, withscores=True)
        else:
            value = kind
        out[f"redis {key}"] = repr(value)
    return out


async def _api_log_rows(pg: PostgresServer) -> str:
    conn = await asyncpg.connect(_admin_db_url(pg))
    try:
        rows = await conn.fetch("SELECT row_to_json(a)::text AS row FROM api_logs a ORDER BY id")
    finally:
        await conn.close()
    return "\n".join(r["row"] for r in rows)


def _files(folder: Path) -> dict[str, str]:
    return {
        f"file {p.relative_to(folder)}": p.read_bytes().decode(errors="replace")
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _leaks(outputs: dict[str, str]) -> list[str]:
    found = []
    for where, text in outputs.items():
        for pw in PASSWORDS:
            at = text.find(pw)
            if at >= 0:
                found.append(f"{where}: ...{text[max(0, at - 120) : at + 40]!r}...")
    return found


async def test_no_password_in_any_output_of_a_run_with_outages_and_wrong_passwords(
    spawn: Spawn,
    private_pg: PostgresServer,
    make_redis: Callable[..., RedisServer],
    gateway: Gateway,
    prefix: str,
    tmp_path: Path,
) -> None:
    pg = private_pg
    db_url = await _password_protected_database(pg)
    redis_server = make_redis()
    redis_url = await _password_protected_redis(redis_server, prefix)
    env = bridge_env(
        DATABASE_URL=db_url,
        REDIS_URL=redis_url,
        BRIDGE_REDIS_PREFIX=prefix,
        BRIDGE_BUFFER_PATH="buffer.jsonl",
        BRIDGE_SPOOL_PATH="spool.jsonl",
        IB_API_MODE="SOCKET",
        IB_PORT=str(gateway.port),
        IB_ACCOUNT=ACCOUNT,
        IB_CONNECT_TIMEOUT_S="3",
        BRIDGE_POLL_INTERVAL_S="0.5",
        BRIDGE_GREEKS_GRACE_S="3",
        BRIDGE_FLUSH_RETRY_S="0.5",
        BRIDGE_WATCHDOG_INTERVAL_S="0.5",
        BRIDGE_CLAIM_IDLE_S="1",
        # nothing listens there: the watchdog's supervisord calls fail, with this URL at hand
        BRIDGE_SUPERVISOR_URL=f"http://watch:{SUPERVISOR_PW}@127.0.0.1:{free_port()}",
    )
    outputs: dict[str, str] = {}
    client = aioredis.Redis.from_url(redis_url)
    keys = Keys(prefix)
    try:
        procs = {name: spawn(name, env) for name in ("writer", "collector", "watchdog")}
        await wait_for(lambda: _has_rows(pg, 2), 60, "two PORTFOLIO rows")

        # an entry the writer cannot decode: a dead letter with its reason
        await client.xadd(keys.greeks, {"v": "1", "ts": "not a time", "contract": "PORTFOLIO"})
        await wait_for(lambda: _xlen_at_least(client, keys.dead, 1), 20, "a dead letter")

        # PostgreSQL down for a few seconds: connection errors, the breaker, the buffer
        pg.stop()
        await wait_for(lambda: _breaker_is(client, keys, "open"), 30, "the breaker open")
        await asyncio.sleep(2)
        outputs["status while PostgreSQL is down"] = _bridge(env, "status", cwd=tmp_path)
        outputs["status --json while PostgreSQL is down"] = _bridge(
            env, "status", "--json", cwd=tmp_path
        )
        pg.start()
        n = await _portfolio_rows(pg)
        await wait_for(lambda: _breaker_is(client, keys, "closed"), 30, "the breaker closed")
        await wait_for(lambda: _has_rows(pg, n + 2), 30, "rows after the outage")

        # wrong passwords: a writer PostgreSQL refuses, a watchdog Redis refuses, status; the
        # writer's given as a query parameter, which libpq and asyncpg accept as well
        wrong_db_url = f"postgresql://{ROLE}@127.0.0.1:{pg.port}/{ROLE}?password={PG_WRONG_PW}"
        wrong_pg = spawn(
            "writer",
            {
                **env,
                "DATABASE_URL": wrong_db_url,
                "BRIDGE_WRITER_CONSUMER": "writer-2",
                "BRIDGE_BUFFER_PATH": "buffer-2.jsonl",
            },
        )
        wrong_redis = spawn(
            "watchdog", {**env, "REDIS_URL": redis_url.replace(REDIS_PW, REDIS_WRONG_PW)}
        )
        await wait_for(lambda: wrong_pg.poll() is not None, 30, "the refused writer's exit")
        assert wrong_pg.returncode == 2
        await wait_for(
            lambda: "AuthenticationError" in Path(wrong_redis.log_path).read_text(),  # type: ignore[attr-defined]
            30,
            "the refused watchdog's error",
        )
        wrong = {
            **env,
            "DATABASE_URL": wrong_db_url,
            "REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/0?username={ROLE}"
            f"&password={REDIS_WRONG_PW}",
        }
        outputs["status, wrong passwords"] = _bridge(wrong, "status", cwd=tmp_path)
        outputs["status --json, wrong passwords"] = _bridge(wrong, "status", "--json", cwd=tmp_path)
        outputs["check-config, wrong passwords"] = _bridge(wrong, "check-config", cwd=tmp_path)
        outputs["status"] = _bridge(env, "status", cwd=tmp_path)
        outputs["status --json"] = _bridge(env, "status", "--json", cwd=tmp_path)
        outputs["check-config"] = _bridge(env, "check-config", cwd=tmp_path)

        all_procs = [*procs.values(), wrong_pg, wrong_redis]
        for i, proc in enumerate(all_procs):
            outputs[f"command line {i}"] = _cmdline(proc)
        for proc in all_procs:  # an orderly stop: the last lines are written too
            if proc.poll() is None:
                proc.terminate()
        for proc in all_procs:
            await asyncio.to_thread(proc.wait, 30)

        outputs["api_logs rows"] = await _api_log_rows(pg)
        outputs.update(await _redis_dump(client, prefix))
        outputs.update(_files(tmp_path))
    finally:
        await client.aclose()

    assert outputs["api_logs rows"] and outputs[f"redis {keys.dead}"] != "[]"
    assert any("buffer.jsonl" in where for where in outputs)  # the outage reached the buffer
    leaks = _leaks(outputs)
    assert not leaks, "passwords found:\n" + "\n".join(leaks)


async def _has_rows(pg: PostgresServer, n: int) -> bool:
    return await _portfolio_rows(pg) >= n


async def _xlen_at_least(client: aioredis.Redis, key: str, n: int) -> bool:
    return int(await client.xlen(key)) >= n


async def _breaker_is(client: aioredis.Redis, keys: Keys, state: str) -> bool:
    return (await client.hget(keys.writer_state, "breaker")) == state.encode()

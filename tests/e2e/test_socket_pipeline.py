"""End to end over real processes: IB Gateway simulator -> collector (SOCKET, real ib_async)
-> Redis -> writer -> PostgreSQL. The expected net Greeks are computed here, independently,
from the simulator's portfolio model (frozen: `--step-s 0`)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
import pytest
import redis.asyncio as aioredis

from shared.names import Keys
from simulator.portfolio import SimPortfolio, default_portfolio
from tests.fixtures import ACCOUNT, Gateway
from tests.helpers import bridge_env, wait_for

Spawn = Callable[..., subprocess.Popen[bytes]]


@dataclass
class Pipeline:
    pg_url: str
    prefix: str
    gateway: Gateway
    env: dict[str, str]


@pytest.fixture
async def pipeline(
    spawn: Spawn, pg_url: str, redis_url: str, prefix: str, gateway: Gateway
) -> Pipeline:
    """Writer and collector (SOCKET) running against the simulator, first rows written."""
    env = bridge_envs(pg_url, redis_url, prefix, gateway.port)
    await start_bridge(spawn, env, pg_url)
    return Pipeline(pg_url, prefix, gateway, env)


def bridge_envs(pg_url: str, redis_url: str, prefix: str, port: int) -> dict[str, str]:
    # buffer and spool relative to the processes' working directory: the test's tmp_path
    return bridge_env(
        DATABASE_URL=pg_url,
        REDIS_URL=redis_url,
        BRIDGE_REDIS_PREFIX=prefix,
        BRIDGE_BUFFER_PATH="buffer.jsonl",
        BRIDGE_SPOOL_PATH="spool.jsonl",
        IB_API_MODE="SOCKET",
        IB_HOST="127.0.0.1",
        IB_PORT=str(port),
        IB_CLIENT_ID="17",
        IB_ACCOUNT=ACCOUNT,
        IB_CONNECT_TIMEOUT_S="3",
        IB_MARKET_DATA_TYPE="FROZEN",
        BRIDGE_POLL_INTERVAL_S="0.5",
        BRIDGE_GREEKS_GRACE_S="3",
        BRIDGE_GREEKS_MAX_AGE_S="2",
        BRIDGE_CLAIM_IDLE_S="1",
    )


def expected_row(
    portfolio: SimPortfolio, skip: frozenset[int] = frozenset()
) -> tuple[float, float, float, float, float]:
    """Net delta/gamma/vega/theta at step 0, and the price of the underlying with the largest
    absolute dollar delta: computed from the model, not by the bridge's code."""
    net = [0.0, 0.0, 0.0, 0.0]
    delta_by_symbol: dict[str, float] = {}
    for pos in portfolio.positions:
        if pos.con_id in skip:
            continue
        if pos.is_option:
            q = portfolio.quote_at_step(pos, 0)
            k = pos.quantity * pos.multiplier
            greeks = (k * q.delta, k * q.gamma, k * q.vega, k * q.theta)
        else:
            greeks = (pos.quantity, 0.0, 0.0, 0.0)
        for i, g in enumerate(greeks):
            net[i] += g
        delta_by_symbol[pos.symbol] = delta_by_symbol.get(pos.symbol, 0.0) + greeks[0]
    top = max(
        delta_by_symbol, key=lambda s: abs(delta_by_symbol[s] * portfolio.price_at_step(s, 0))
    )
    return net[0], net[1], net[2], net[3], portfolio.price_at_step(top, 0)


async def portfolio_rows(pg_url: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(pg_url)
    try:
        return list(
            await conn.fetch(
                "SELECT timestamp, delta, gamma, vega, theta, underlying_price"
                " FROM portfolio_greeks WHERE contract = 'PORTFOLIO' ORDER BY timestamp"
            )
        )
    except asyncpg.UndefinedTableError:
        return []
    finally:
        await conn.close()


async def api_logs(pg_url: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(pg_url)
    try:
        return list(await conn.fetch("SELECT status, message FROM api_logs ORDER BY id"))
    except asyncpg.UndefinedTableError:
        return []
    finally:
        await conn.close()


def as_tuple(row: asyncpg.Record) -> tuple[float, ...]:
    return (row["delta"], row["gamma"], row["vega"], row["theta"], row["underlying_price"])


async def link_state(redis: aioredis.Redis, prefix: str) -> str:
    raw = await redis.hget(Keys(prefix).link, "state")
    return raw.decode() if raw else ""


async def start_bridge(spawn: Spawn, env: dict[str, str], pg_url: str) -> None:
    spawn("writer", env)
    spawn("collector", env)
    await wait_for(lambda: _count_at_least(pg_url, 2), 30, "two PORTFOLIO rows")


async def _count_at_least(pg_url: str, n: int) -> bool:
    return len(await portfolio_rows(pg_url)) >= n


async def _has_log(pg_url: str, needle: str) -> bool:
    return any(needle in r["message"] for r in await api_logs(pg_url))


async def _rows_after(pg_url: str, n: int) -> bool:
    return len(await portfolio_rows(pg_url)) > n


async def test_rows_equal_the_model_drop_is_seen_at_once_and_reconnect_resumes(
    pipeline: Pipeline, redis: aioredis.Redis
) -> None:
    pg_url, prefix, gateway = pipeline.pg_url, pipeline.prefix, pipeline.gateway
    want = expected_row(default_portfolio(ACCOUNT, step_s=0))
    for row in await portfolio_rows(pg_url):
        assert as_tuple(row) == pytest.approx(want, rel=1e-9)
    assert await link_state(redis, prefix) == "connected"

    # the nightly gateway restart: every socket dropped
    loop = asyncio.get_running_loop()
    started = loop.time()
    await gateway.cmd("drop")
    await wait_for(lambda: _state_is(redis, prefix, "disconnected"), 2, "link disconnected")
    assert loop.time() - started < 1.0
    await wait_for(lambda: _has_log(pg_url, "lost"), 10, "an api_logs row about the drop")
    n_before = len(await portfolio_rows(pg_url))

    # the watchdog's reconnect command
    await redis.xadd(Keys(prefix).control, {"cmd": "reconnect", "id": "e2e-1", "reason": "test"})
    await wait_for(lambda: _state_is(redis, prefix, "connected"), 10, "link connected again")
    await wait_for(lambda: _rows_after(pg_url, n_before + 1), 20, "rows resume")
    rows = await portfolio_rows(pg_url)
    assert as_tuple(rows[-1]) == pytest.approx(want, rel=1e-9)
    stamps = [r["timestamp"] for r in rows]
    assert stamps == sorted(set(stamps))  # no duplicates, in order


async def _state_is(redis: aioredis.Redis, prefix: str, state: str) -> bool:
    return await link_state(redis, prefix) == state


async def test_server_reset_resubscribes_without_reconnect(pipeline: Pipeline) -> None:
    pg_url, gateway = pipeline.pg_url, pipeline.gateway
    before = (await gateway.cmd("status"))["clients"]
    assert len(before) == 1
    await gateway.cmd("reset 0.5 1102")
    await wait_for(lambda: _has_log(pg_url, "restored"), 15, "1102 in api_logs")

    async def all_made_again() -> bool:  # requests go out paced: wait for all of them
        clients = (await gateway.cmd("status"))["clients"]
        return bool(clients) and clients[0]["mkt_requests"] >= 2 * before[0]["mkt_requests"]

    await wait_for(all_made_again, 10, "every market-data request made again")
    after = (await gateway.cmd("status"))["clients"]
    assert [c["peer"] for c in after] == [before[0]["peer"]]  # same socket: no reconnect
    n = len(await portfolio_rows(pg_url))
    await wait_for(lambda: _rows_after(pg_url, n + 2), 20, "rows continue")
    want = expected_row(default_portfolio(ACCOUNT, step_s=0))
    assert as_tuple((await portfolio_rows(pg_url))[-1]) == pytest.approx(want, rel=1e-9)
    messages = [r["message"] for r in await api_logs(pg_url)]
    assert any("1100" in m for m in messages) and any("1102" in m for m in messages)


async def test_sentinel_greeks_and_closed_market_are_never_summed_as_zero(
    pipeline: Pipeline,
) -> None:
    pg_url, gateway = pipeline.pg_url, pipeline.gateway
    await gateway.cmd("market closed")
    await gateway.cmd("greeks sentinel 600000011")
    # after the max age the QQQ call is left out (and named), never counted as zero Greeks
    await wait_for(lambda: _has_log(pg_url, "QQQ 20270115 520 C"), 20, "exclusion named")
    n = len(await portfolio_rows(pg_url))
    await wait_for(lambda: _rows_after(pg_url, n + 1), 20, "rows after the exclusion")
    want = expected_row(default_portfolio(ACCOUNT, step_s=0), frozenset({600000011}))
    last = as_tuple((await portfolio_rows(pg_url))[-1])
    assert last == pytest.approx(want, rel=1e-9)


async def test_clean_stop_removes_the_heartbeat_and_says_why(
    spawn: Spawn,
    pg_url: str,
    redis_url: str,
    prefix: str,
    gateway: Gateway,
    redis: aioredis.Redis,
) -> None:
    """SIGTERM: exit 0, the heartbeat key goes at once (the watchdog sees a collector that is
    gone, not a live one to reconnect), and the link hash says the collector stopped."""
    env = bridge_envs(pg_url, redis_url, prefix, gateway.port)
    spawn("writer", env)
    collector = spawn("collector", env)
    keys = Keys(prefix)
    await wait_for(lambda: _count_at_least(pg_url, 2), 30, "two PORTFOLIO rows")
    assert await redis.exists(keys.heartbeat) == 1
    collector.send_signal(signal.SIGTERM)
    await wait_for(lambda: collector.poll() is not None, 15, "the collector's exit")
    assert collector.returncode == 0
    assert await redis.exists(keys.heartbeat) == 0
    assert (await redis.hget(keys.link, "reason")) == b"collector stopped"
    await wait_for(lambda: _has_log(pg_url, "collector stopped"), 15, "the api_logs row")

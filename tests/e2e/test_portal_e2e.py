"""End to end with real processes: collector (PORTAL) -> Redis -> writer -> PostgreSQL, against
the Client Portal simulator (HTTPS, run in the test's event loop), with a 0.5 s tick.

The expected values are computed independently from the simulator's portfolio
(`SimPortfolio.net_greeks`), never from the bridge's code.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from ops.embedded import RedisServer
from shared.names import Keys
from simulator.portal.server import PortalSimulator
from simulator.portfolio import default_portfolio
from tests.helpers import bridge_env, wait_for

Spawn = Callable[..., subprocess.Popen[bytes]]
FROZEN = 1_795_600_000.0
INTERVAL_S = 0.5


@pytest.fixture
async def sim() -> AsyncIterator[PortalSimulator]:
    async with PortalSimulator(default_portfolio(extra_options=120)) as server:
        server.switches.update({"frozen_at": FROZEN})
        yield server


def env_for(
    sim: PortalSimulator, pg_url: str, redis_url: str, prefix: str, tmp: Path, **extra: str
) -> dict[str, str]:
    env = {
        "IB_API_MODE": "PORTAL",
        "IBKR_GATEWAY_URL": sim.url,
        "IBKR_CA_FILE": str(sim.ca_file),
        "DATABASE_URL": pg_url,
        "REDIS_URL": redis_url,
        "BRIDGE_REDIS_PREFIX": prefix,
        "BRIDGE_POLL_INTERVAL_S": str(INTERVAL_S),
        "BRIDGE_GREEKS_GRACE_S": "3",
        "BRIDGE_SPOOL_PATH": str(tmp / "spool.jsonl"),
        "BRIDGE_BUFFER_PATH": str(tmp / "buffer.jsonl"),
        "BRIDGE_TICK_LEDGER": str(tmp / "ledger.csv"),
        "BRIDGE_HEARTBEAT_TTL_S": "5",
        "BRIDGE_CLAIM_IDLE_S": "1",
        "BRIDGE_FLUSH_RETRY_S": "1",
    }
    env.update(extra)
    return bridge_env(**env)


async def fetch(pg_url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(pg_url)
    try:
        return list(await conn.fetch(sql, *args))
    except asyncpg.UndefinedTableError:
        return []
    finally:
        await conn.close()


async def portfolio_rows(pg_url: str) -> list[asyncpg.Record]:
    return await fetch(
        pg_url, "SELECT * FROM portfolio_greeks WHERE contract = 'PORTFOLIO' ORDER BY timestamp"
    )


async def api_logs(pg_url: str) -> list[str]:
    rows = await fetch(pg_url, "SELECT status, message FROM api_logs ORDER BY timestamp")
    return [f"{r['status']} {r['message']}" for r in rows]


def ledger(tmp: Path) -> set[tuple[datetime, str]]:
    path = tmp / "ledger.csv"
    if not path.exists():
        return set()
    out = set()
    for line in path.read_text().splitlines():
        ts, contract = line.rsplit(",", 1)
        out.add((datetime.fromisoformat(ts), contract))
    return out


def stop_process(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(15)


async def test_portfolio_rows_equal_the_simulated_net_greeks(
    pg_url: str,
    redis_url: str,
    prefix: str,
    *,
    tmp_path: Path,
    sim: PortalSimulator,
    spawn: Spawn,
) -> None:
    env = env_for(sim, pg_url, redis_url, prefix, tmp_path, BRIDGE_PER_UNDERLYING="1")
    spawn("writer", env)
    collector = spawn("collector", env)
    await wait_for(lambda: _at_least(portfolio_rows(pg_url), 8), 60, "8 PORTFOLIO rows")
    # 129 conids and the default 40 lines: the contracts took turns, the gateway held <= 40
    link = await _link(redis_url, prefix)
    assert link["rotating"] == "true" and link["lines_budget"] == "40"
    assert int(link["lines_in_use"]) <= 40 and sim.stats.max_streams <= 40
    assert link["market_data"] == "LIVE"
    assert stop_process(collector) == 0
    assert any("market data rotating" in m for m in await api_logs(pg_url))
    expected = sim.portfolio.net_greeks(FROZEN)
    rows = await portfolio_rows(pg_url)
    for row in rows:
        assert row["delta"] == pytest.approx(expected.delta, rel=1e-9)
        assert row["gamma"] == pytest.approx(expected.gamma, rel=1e-9)
        assert row["vega"] == pytest.approx(expected.vega, rel=1e-9)
        assert row["theta"] == pytest.approx(expected.theta, rel=1e-9)
    # underlying price: the symbol carrying the largest absolute dollar delta
    dollar = {
        s: abs(sim.portfolio.net_greeks(FROZEN, s).delta * sim.portfolio.price(s, FROZEN))
        for s in sim.portfolio.underlyings
    }
    top = max(dollar, key=lambda s: dollar[s])
    assert {r["underlying_price"] for r in rows} == {sim.portfolio.price(top, FROZEN)}
    # on the grid, no tick lost
    stamps = [r["timestamp"] for r in rows]
    assert all(round(t.timestamp() / INTERVAL_S, 6).is_integer() for t in stamps)
    spy = await fetch(pg_url, "SELECT * FROM portfolio_greeks WHERE contract = 'SPY'")
    assert spy and spy[0]["delta"] == pytest.approx(
        sim.portfolio.net_greeks(FROZEN, "SPY").delta, rel=1e-9
    )
    # every row the collector produced landed
    await wait_for(lambda: _landed(pg_url, tmp_path), 30, "every produced row in PostgreSQL")


async def test_logged_out_mid_run_rows_stop_and_resume(
    pg_url: str,
    redis_url: str,
    prefix: str,
    *,
    tmp_path: Path,
    sim: PortalSimulator,
    spawn: Spawn,
) -> None:
    env = env_for(sim, pg_url, redis_url, prefix, tmp_path)
    spawn("writer", env)
    collector = spawn("collector", env)
    await wait_for(lambda: _at_least(portfolio_rows(pg_url), 3), 60, "first rows")
    sim.logout()
    await wait_for(lambda: _log_says(pg_url, "unauthenticated"), 30, "api_logs: unauthenticated")
    produced = ledger(tmp_path)  # the collector's own record of every row it produced
    probes = _probes(sim)
    # four ticks have run while logged out: each probed the session and decided on no row
    await wait_for(lambda: _probes(sim) >= probes + 4, 30, "four ticks probing the session")
    assert ledger(tmp_path) == produced  # no row while logged out
    await wait_for(lambda: _landed(pg_url, tmp_path), 30, "the rows before the logout landed")
    during = await portfolio_rows(pg_url)
    assert len(during) == _ticks(tmp_path)
    logs = await api_logs(pg_url)
    unauth = [m for m in logs if "unauthenticated" in m]
    assert len(unauth) == 1, unauth  # said once, with the reason
    assert "not authenticated" in unauth[0]
    sim.login()
    await wait_for(
        lambda: _at_least(portfolio_rows(pg_url), len(during) + 3),
        60,
        "rows after the session returned",
    )
    assert any("rows resumed" in m for m in await api_logs(pg_url))
    assert stop_process(collector) == 0


async def test_redis_stopped_for_several_ticks_loses_nothing(
    pg_url: str,
    prefix: str,
    tmp_path: Path,
    *,
    sim: PortalSimulator,
    spawn: Spawn,
    make_redis: Callable[..., RedisServer],
) -> None:
    redis_server = make_redis(aof=True)  # keeps its streams over a restart
    env = env_for(sim, pg_url, redis_server.url(), prefix, tmp_path)
    spawn("writer", env)
    collector = spawn("collector", env)
    await wait_for(lambda: _at_least(portfolio_rows(pg_url), 3), 60, "first rows")
    redis_server.stop()
    ticks = _ticks(tmp_path)
    spool = tmp_path / "spool.jsonl"
    # six ticks produced rows with Redis down; they went to the spool
    await wait_for(lambda: _ticks(tmp_path) >= ticks + 6, 30, "six ticks with Redis down")
    assert spool.stat().st_size > 0
    redis_server.start()
    log: Path = collector.log_path  # type: ignore[attr-defined]
    await wait_for(lambda: "spool_replayed" in log.read_text(errors="replace"), 30, "the replay")
    assert stop_process(collector) == 0
    await wait_for(lambda: _landed(pg_url, tmp_path), 60, "every produced row landed")
    stamps = [r["timestamp"] for r in await portfolio_rows(pg_url)]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(stamps)]
    assert max(gaps) == pytest.approx(INTERVAL_S), "a tick is missing"
    assert len(stamps) >= 3 + 6  # the first rows, and the six ticks made while Redis was down


async def test_pacing_enforced_collector_stays_under_the_limits(
    pg_url: str,
    redis_url: str,
    prefix: str,
    *,
    tmp_path: Path,
    sim: PortalSimulator,
    spawn: Spawn,
) -> None:
    sim.switches.update({"enforce_pacing": True, "penalty_s": 5.0})
    env = env_for(sim, pg_url, redis_url, prefix, tmp_path)
    spawn("writer", env)
    collector = spawn("collector", env)
    await wait_for(lambda: _at_least(portfolio_rows(pg_url), 12), 60, "12 rows")
    assert stop_process(collector) == 0
    stats = sim.stats.as_dict()
    assert stats["rate_limited"] == 0, stats
    assert stats["max_per_s"] <= 10
    assert stats["counts"]["/portfolio/accounts"] == 1


async def _link(redis_url: str, prefix: str) -> dict[str, str]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        raw = await client.hgetall(Keys(prefix).link)
        return {str(k): str(v) for k, v in raw.items()}
    finally:
        await client.aclose()


def _ticks(tmp: Path) -> int:
    """PORTFOLIO rows the collector produced, by its tick ledger."""
    return sum(contract == "PORTFOLIO" for _ts, contract in ledger(tmp))


def _probes(sim: PortalSimulator) -> int:
    return sim.stats.counts.get("/iserver/auth/status", 0)


async def _at_least(rows: object, n: int) -> bool:
    return len(await rows) >= n  # type: ignore[misc]


async def _log_says(pg_url: str, text: str) -> bool:
    return any(text in m for m in await api_logs(pg_url))


async def _landed(pg_url: str, tmp: Path) -> bool:
    produced = ledger(tmp)
    rows = await fetch(pg_url, "SELECT timestamp, contract FROM portfolio_greeks")
    stored = {(r["timestamp"], r["contract"]) for r in rows}
    return bool(produced) and produced <= stored and len(rows) == len(stored)

"""Fault injection: the whole pipeline under supervisord, a seeded schedule of real faults, and
the proof that every tick the collector produced landed in PostgreSQL exactly once.

    make test                                       # the short run: every fault kind once
    .venv/bin/pytest tests/chaos -m long -s        # the long run (CHAOS_ROUNDS=5, CHAOS_SEED)

The pipeline is the demo profile (deploy/demo.conf.in) in a temporary folder: a private
PostgreSQL, a private Redis with AOF `everysec`, the IB Gateway simulator, and the collector,
writer and watchdog, with a fast tick interval and the collector's tick ledger switched on.
Faults are real: kill -9 of a process, PostgreSQL stopped and started, redis-server killed -9
and restarted by supervisord from its AOF, the gateway dropping every connection, refusing
connections, or sending 1100 -> 1102. After the schedule, with everything back, the suite prints
one table and asserts: 0 lost, 0 duplicated, nothing pending, buffer and spool empty, and an
api_logs event for each fault.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis

from ops.demo import Demo, render
from ops.embedded import RedisServer, pg_private
from shared.jsonl import JsonlFile
from shared.names import WRITER_GROUP, Keys
from simulator.gateway.control import send_command_sync
from tests.e2e.test_supervisord import Supervised, pg, wait_until
from tests.helpers import bridge_env

POLL_S = 0.5
FLUSH_RETRY_S = 2.0


@dataclass
class Fault:
    kind: str
    started: datetime
    ended: datetime
    log_pattern: str  # an api_logs message LIKE pattern that must appear after `started`


@dataclass
class Pipeline:
    demo: Demo
    sup: Supervised
    faults: list[Fault] = field(default_factory=list)

    @property
    def dsn(self) -> str:
        return self.demo.database_url

    def pid(self, name: str) -> int:
        return int(self.sup.info()[name]["pid"])

    def running(self, name: str) -> bool:
        return self.sup.state(name) == "RUNNING"

    def kill9(self, name: str) -> None:
        """kill -9 the process, then wait until supervisord has a new one RUNNING."""
        old = self.pid(name)
        os.kill(old, signal.SIGKILL)
        wait_until(
            lambda: self.pid(name) not in (0, old) and self.running(name),
            60,
            f"{name} restarted by supervisord",
        )

    def wait_running(self, *names: str, timeout_s: float = 60) -> None:
        wait_until(lambda: all(self.running(n) for n in names), timeout_s, f"{names} RUNNING")

    def gateway(self, command: str) -> dict[str, Any]:
        return send_command_sync(self.demo.ports["gateway_control_port"], command)

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.demo.env["REDIS_URL"], socket_timeout=5)

    def newest_tick(self) -> datetime | None:
        rows = _pg_quiet(
            self.dsn,
            "SELECT max(timestamp) AS t FROM portfolio_greeks WHERE contract = 'PORTFOLIO'",
        )
        return rows[0]["t"] if rows else None

    def rows_after(self, moment: datetime, timeout_s: float = 90) -> None:
        wait_until(
            lambda: (self.newest_tick() or moment) > moment,
            timeout_s,
            f"PORTFOLIO rows after {moment:%H:%M:%S}",
        )


def _pg_quiet(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record] | None:
    try:
        return pg(dsn, sql, *args)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
        return None


def now() -> datetime:
    return datetime.now(UTC)


# ---- the faults ----------------------------------------------------------------------------------
def kill9(program: str) -> Callable[[Pipeline, random.Random], str]:
    def inject(p: Pipeline, rng: random.Random) -> str:
        time.sleep(rng.uniform(0, POLL_S))  # a random moment within the tick
        p.kill9(f"bridge:{program}")
        return f"bridge:{program} exited unexpectedly%"

    return inject


def pg_down(hold_s: float) -> Callable[[Pipeline, random.Random], str]:
    def inject(p: Pipeline, rng: random.Random) -> str:
        assert p.sup.ctl("stop", "services:postgres").returncode == 0
        time.sleep(hold_s)
        assert p.sup.ctl("start", "services:postgres").returncode == 0
        return "writer circuit breaker opened%"

    return inject


def redis_kill(p: Pipeline, rng: random.Random) -> str:
    pid = RedisServer.server_pid(p.demo.dir / "redis")
    assert pid, "no redis-server pidfile"
    os.kill(pid, signal.SIGKILL)
    wait_until(
        lambda: RedisServer.server_pid(p.demo.dir / "redis") not in (None, pid),
        60,
        "redis-server restarted by supervisord",
    )
    p.wait_running("services:redis")
    return "services:redis exited unexpectedly%"


def gateway_drop(p: Pipeline, rng: random.Random) -> str:
    assert p.gateway("drop")["ok"]
    return "%disconnect%"


def gateway_refuse(p: Pipeline, rng: random.Random) -> str:
    assert p.gateway("refuse 3 drop")["ok"]
    time.sleep(3.5)
    return "%reconnect attempt%"


def gateway_reset(p: Pipeline, rng: random.Random) -> str:
    assert p.gateway("reset 1.5 1102")["ok"]
    time.sleep(2.0)
    return "%1100%"


def pg_down_writer_killed(p: Pipeline, rng: random.Random) -> str:
    assert p.sup.ctl("stop", "services:postgres").returncode == 0
    time.sleep(1.0)
    p.kill9("bridge:writer")
    time.sleep(FLUSH_RETRY_S + 0.5)
    assert p.sup.ctl("start", "services:postgres").returncode == 0
    return "writer circuit breaker opened%"


def redis_down_collector_restart(p: Pipeline, rng: random.Random) -> str:
    assert p.sup.ctl("stop", "services:redis").returncode == 0
    time.sleep(1.0)
    p.kill9("bridge:collector")
    time.sleep(2.0)  # the restarted collector ticks into its spool
    assert p.sup.ctl("start", "services:redis").returncode == 0
    return "bridge:collector exited unexpectedly%"


FAULTS: dict[str, Callable[[Pipeline, random.Random], str]] = {
    "kill -9 writer": kill9("writer"),
    "kill -9 collector": kill9("collector"),
    "kill -9 watchdog": kill9("watchdog"),
    "PostgreSQL down < retry": pg_down(FLUSH_RETRY_S / 2),
    "PostgreSQL down > retry": pg_down(FLUSH_RETRY_S * 2.5),
    "Redis kill -9 (AOF)": redis_kill,
    "gateway drops all": gateway_drop,
    "gateway refuses": gateway_refuse,
    "gateway 1100 -> 1102": gateway_reset,
    "DB down + writer killed": pg_down_writer_killed,
    "Redis down + collector restart": redis_down_collector_restart,
}


# ---- the pipeline ------------------------------------------------------------------------------
@pytest.fixture
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    folder = tmp_path_factory.mktemp("chaos")
    demo = render(
        folder,
        overrides={
            "BRIDGE_POLL_INTERVAL_S": str(POLL_S),
            "BRIDGE_FLUSH_RETRY_S": str(FLUSH_RETRY_S),
            "BRIDGE_WATCHDOG_INTERVAL_S": "1",
            "BRIDGE_HEARTBEAT_TTL_S": "5",
            "BRIDGE_BACKOFF_BASE_S": "0.2",
            "BRIDGE_BACKOFF_CAP_S": "1",
            "BRIDGE_CLAIM_IDLE_S": "3",
            "IB_CONNECT_TIMEOUT_S": "3",
            "BRIDGE_TICK_LEDGER": str(folder / "ledger.csv"),
        },
    )
    sup = Supervised(demo.conf, f"unix://{demo.socket}", bridge_env(), cwd=folder)
    try:
        yield Pipeline(demo, sup)
    finally:
        sup.close()
        pg_private.remove(folder / "pg" / "data")  # as root: the cluster's private folder


def ledger(demo: Demo) -> list[tuple[datetime, str]]:
    out = []
    path = demo.dir / "ledger.csv"
    for line in path.read_text().splitlines() if path.exists() else []:
        ts, _, contract = line.partition(",")
        out.append((datetime.fromisoformat(ts), contract.split(",")[0]))
    return out


def run_schedule(p: Pipeline, rounds: int, seed: int) -> None:
    rng = random.Random(seed)
    p.wait_running(
        "services:postgres",
        "services:redis",
        "services:gateway",
        "bridge:writer",
        "bridge:collector",
        "bridge:watchdog",
    )
    p.rows_after(now())
    for _ in range(rounds):
        kinds = list(FAULTS)
        rng.shuffle(kinds)
        for kind in kinds:
            started = now()
            pattern = FAULTS[kind](p, rng)
            ended = now()
            p.faults.append(Fault(kind, started, ended, pattern))
            p.rows_after(ended)  # recovered before the next fault
            time.sleep(rng.uniform(0.5, 2.0))


def settle(p: Pipeline) -> None:
    """Freeze production, then wait for the writer to store everything produced."""
    assert p.sup.ctl("stop", "bridge:collector").returncode == 0
    keys = Keys(p.demo.env["BRIDGE_REDIS_PREFIX"])
    client = p.redis()
    buffer = JsonlFile(Path(p.demo.env["BRIDGE_BUFFER_PATH"]))
    spool = JsonlFile(Path(p.demo.env["BRIDGE_SPOOL_PATH"]))

    def quiet() -> bool:
        pending = sum(int(client.xpending(s, WRITER_GROUP)["pending"]) for s in keys.data_streams)
        lag = [
            g
            for s in keys.data_streams
            for g in client.xinfo_groups(s)
            if g["last-delivered-id"] != client.xinfo_stream(s)["last-generated-id"]
        ]
        return pending == 0 and not lag and buffer.is_empty() and spool.is_empty()

    try:
        wait_until(quiet, 120, "no pending entries, empty buffer and spool")
    finally:
        client.close()


def report(p: Pipeline) -> dict[str, int]:
    produced = ledger(p.demo)
    stored = pg(
        p.dsn,
        "SELECT timestamp, contract, count(*) AS n FROM portfolio_greeks "
        "GROUP BY timestamp, contract",
    )
    counts = {(r["timestamp"], r["contract"]): int(r["n"]) for r in stored}
    lost = [k for k in set(produced) if counts.get(k, 0) == 0]
    duplicated = [k for k, n in counts.items() if n > 1]
    recovery: list[float] = []
    for f in p.faults:
        first = pg(
            p.dsn,
            "SELECT min(timestamp) AS t FROM portfolio_greeks "
            "WHERE contract = 'PORTFOLIO' AND timestamp > $1",
            f.ended,
        )[0]["t"]
        recovery.append((first - f.ended).total_seconds() if first else float("inf"))
    by_kind: dict[str, int] = {}
    for f in p.faults:
        by_kind[f.kind] = by_kind.get(f.kind, 0) + 1
    width = max(len(k) for k in [*by_kind, "longest fault end -> first new row, s"])
    lines = ["", "fault injection summary", "-" * (width + 12)]
    lines += [f"{kind:<{width}}  {n:>8}" for kind, n in sorted(by_kind.items())]
    lines += [
        "-" * (width + 12),
        f"{'faults injected':<{width}}  {len(p.faults):>8}",
        f"{'rows produced (ledger)':<{width}}  {len(set(produced)):>8}",
        f"{'rows landed':<{width}}  {sum(counts.values()):>8}",
        f"{'lost':<{width}}  {len(lost):>8}",
        f"{'duplicated':<{width}}  {len(duplicated):>8}",
        f"{'longest fault end -> first new row, s':<{width}}  {max(recovery):>8.1f}",
    ]
    print("\n".join(lines))
    return {"lost": len(lost), "duplicated": len(duplicated), "produced": len(set(produced))}


def check(p: Pipeline) -> None:
    settle(p)
    figures = report(p)
    assert figures["produced"] > 0
    assert figures["lost"] == 0
    assert figures["duplicated"] == 0

    # rows about a fault of Redis itself reach Redis (and then PostgreSQL) once it is back
    def missing() -> list[str]:
        return [
            f"{f.kind}: no api_logs row like {f.log_pattern!r}"
            for f in p.faults
            if not pg(
                p.dsn,
                "SELECT 1 FROM api_logs WHERE timestamp >= $1 AND message LIKE $2 LIMIT 1",
                f.started,
                f.log_pattern,
            )
        ]

    try:
        wait_until(lambda: not missing(), 30, "an api_logs event for each fault")
    except AssertionError:
        raise AssertionError(missing()) from None


@pytest.mark.timeout(600)
def test_chaos_short(pipeline: Pipeline) -> None:
    """Every fault kind once (what CI runs)."""
    run_schedule(pipeline, rounds=1, seed=int(os.environ.get("CHAOS_SEED", "7")))
    check(pipeline)


@pytest.mark.long
@pytest.mark.timeout(3600)
def test_chaos_long(pipeline: Pipeline) -> None:
    run_schedule(
        pipeline,
        rounds=int(os.environ.get("CHAOS_ROUNDS", "5")),
        seed=int(os.environ.get("CHAOS_SEED", "11")),
    )
    check(pipeline)

"""The chaos run's pipeline handle and its faults: each one real, injected from outside."""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import redis

from ops.demo import Demo
from ops.embedded import RedisServer
from simulator.gateway.control import send_command_sync
from tests.chaos.checks import Excuse
from tests.e2e.test_supervisord import Supervised, pg, wait_until

POLL_S = 0.5
FLUSH_RETRY_S = 2.0


# How long after a fault's injection ends its effects may last: the gateway back (the watchdog
# notices within a heartbeat TTL of 5 s and reconnects, connect timeout 3 s, back-off <= 1 s) or
# the collector restarted (startsecs, start, connect), then the Greeks again after subscribing.
RECOVERY_S = 20.0
# How long after the injection returns a fault may first stop a row: the collector sees the
# gateway's closed socket at once, and the tick in hand ends within a tick.
ONSET_S = 2 * POLL_S
# An api_logs row about a fault is written while it lasts or shortly after (the watchdog's and
# the event listener's reaction time, the writer's retry).
LOG_WITHIN_S = 5.0

# The faults during which the collector cannot produce a row: it is dead, or the gateway is gone
# (no snapshot). Every other kind must leave no grid slot empty: with Redis down the collector
# spools, with PostgreSQL down or the writer dead the rows wait in Redis or the writer's
# buffer, during 1100 the last values are carried forward, and the watchdog produces nothing.
STOPS_ROWS = frozenset(
    {
        "kill -9 collector",
        "Redis down + collector restart",
        "gateway drops all",
        "gateway refuses",
    }
)


@dataclass
class Fault:
    """One injected fault, timed by the test itself: wall clock UTC to compare with PostgreSQL's
    timestamps, monotonic for its length (the wall clock may step meanwhile)."""

    kind: str
    started: datetime
    started_mono: float
    ended_mono: float
    log_pattern: str  # an api_logs message LIKE pattern: one row of it within the fault's window

    @property
    def ended(self) -> datetime:
        return self.started + timedelta(seconds=self.ended_mono - self.started_mono)

    def excuse(self, tick_s: float) -> Excuse | None:
        """The gaps in the grid this fault explains, if it stops production."""
        if self.kind not in STOPS_ROWS:
            return None
        return Excuse(
            self.started - timedelta(seconds=tick_s),
            self.ended + timedelta(seconds=ONSET_S),
            self.ended + timedelta(seconds=RECOVERY_S),
        )

    def log_window(self) -> tuple[datetime, datetime]:
        return self.started, self.ended + timedelta(seconds=LOG_WITHIN_S)


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
